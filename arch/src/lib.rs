//! x86_64 hardware layer for RamenOS: the only kernel crate with `unsafe` code.
//!
//! Everything that touches a register, a port, a page table or raw physical memory
//! lives here behind a safe interface; kernel logic (`ramen-core`) and the kernel
//! binary build on those interfaces. Each module owns one piece of hardware:
//! `boot` (PVH entry), `serial` (COM1 console), `cpu` (CPUID features, control
//! registers), `paging` (page tables and the direct map), `gdt` and `trap` (descriptor
//! tables, exception stubs, the fault reporter), `apic` (local APIC and timer), `tsc`,
//! `acpi` (firmware tables), `smp` (AP start-up), `percpu` (GS-based per-CPU block).
#![no_std]

pub mod acpi;
pub mod apic;
pub mod boot;
pub mod cpu;
pub mod entry;
pub mod exit;
pub mod fpu;
pub mod gdt;
#[cfg(feature = "hosted")]
pub mod hosted;
// The memory intrinsics and panic stubs exist for the freestanding kernel only; a
// host test binary gets them from `std` and libc.
#[cfg(not(any(test, feature = "hosted")))]
pub mod mem;
pub mod paging;
#[cfg(not(any(test, feature = "hosted")))]
pub mod panic_paths;
pub mod percpu;
pub mod phys;
pub mod pvh;
pub mod serial;
pub mod smp;
pub mod trap;
pub mod tsc;
pub mod user;

pub use x86_64::{PhysAddr, VirtAddr};

/// Where the kernel image is linked: the top 2 GiB (`-C code-model=kernel`).
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;

/// Base of the direct map of all physical memory (PML4 slot 256 onwards).
pub const PHYS_MAP_BASE: u64 = 0xffff_8000_0000_0000;

/// The 4 KiB page size.
pub const PAGE_SIZE: u64 = 4096;
