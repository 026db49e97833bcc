//! The RamenOS kernel: wires `ramen-core` logic to the hardware `ramen-arch` exposes.
//!
//! The boot CPU enters at the image's entry (`main.rs`), which runs
//! [`boot::bsp_main`]: memory, its own page tables, per-CPU block, firmware tables,
//! topology, local APIC, then every other CPU. Other CPUs enter at `boot::ap_main`.
//! Nothing here uses `unsafe`.
//!
//! A library so that its logic also runs in host tests (`cargo test -p ramen-kernel`,
//! `hosted_tests`), on `ramen-arch`'s hosted feature: the same code on "physical"
//! memory mapped in the test process.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

mod log;

mod asid;
pub mod boot;
mod console;
mod cpus;
mod fastpath;
mod interrupts;
mod invoke;
mod ipc;
mod lease;
mod objects;
mod roottask;
mod sched;
mod selftest;
mod syscall;
mod tlb;
mod trace;

#[cfg(test)]
mod hosted_tests;
