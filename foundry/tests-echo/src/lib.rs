//! Foundry end to end: every shipped contract compiled by `build.rs` into `no_std` code without
//! allocation, and called through the loopback transport by this crate's tests.
//!
//! The crate is `no_std` itself, so compiling it proves the generated code needs
//! neither `std` nor `alloc`.
#![no_std]
#![forbid(unsafe_code)]

/// The benchmark echo service (`contracts/bench/echo.ridl`).
pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.rs"));
}

/// A test contract that uses every kind of type (`contracts/all_types.ridl`).
pub mod all_types {
    include!(concat!(env!("OUT_DIR"), "/all_types.rs"));
}

/// The persistent store (`contracts/store/store.ridl`).
pub mod store {
    include!(concat!(env!("OUT_DIR"), "/store.rs"));
}

/// Block devices (`contracts/drivers/block.ridl`).
pub mod block {
    include!(concat!(env!("OUT_DIR"), "/block.rs"));
}

/// Serial ports (`contracts/drivers/serial.ridl`).
pub mod serial {
    include!(concat!(env!("OUT_DIR"), "/serial.rs"));
}
