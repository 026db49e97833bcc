//! RamenOS trace records: one format for the kernel, user space and host tools.
//!
//! Every event is a fixed 32-byte [`Record`] (TSC timestamp, event kind, CPU, thread,
//! two argument words). The kernel writes records into one [`TraceRing`] per core;
//! drivers and servers write them into a per-thread buffer shared with the kernel
//! ([`user_buffer`]); the whole capture leaves the machine as a versioned,
//! checksummed dump ([`dump`]) that the host decoder (`ramen-perf-export`) reads.
//!
//! Everything here is plain safe `no_std` code without allocation so the same
//! definitions compile into the kernel, the user runtime and the host tools.
#![no_std]
#![forbid(unsafe_code)]

pub mod dump;
mod kind;
mod name;
mod record;
mod ring;
pub mod user_buffer;

pub use kind::{Categories, EventKind, IpcInfo, IpcPath, Phase};
pub use name::{ThreadName, inline_label};
pub use record::{IDLE_THREAD, RECORD_SIZE_BYTES, Record};
pub use ring::{Batch, DEFAULT_RING_RECORDS, FullPolicy, TraceRing};
