//! RamenOS kernel logic, hardware-free and tested on the host.
//!
//! Everything here is plain `no_std` Rust with no `unsafe`: the kernel binary wires it
//! to real memory and registers through `ramen-arch`. Code in this crate must not
//! panic on anything user space or firmware controls (use `get()`, checked
//! arithmetic), and should not pull in `core::fmt` number formatting: the kernel
//! image is checked to contain no SIMD instruction.
#![no_std]
#![forbid(unsafe_code)]

pub mod cap;
pub mod cdt;
pub mod cmdline;
pub mod cnode;
pub mod cspace;
pub mod inbox;
pub mod irq;
pub mod light;
pub mod lookup_cache;
pub mod mcs;
pub mod memory;
pub mod object;
pub mod pcid;
pub mod runqueue;
pub mod slotlock;
pub mod topology;
pub mod tsc;
pub mod untyped;
pub mod wake;

#[cfg(test)]
mod testing;
