//! The boot-information pages the kernel maps into the root task at
//! [`crate::syscall::BOOT_INFO_VADDR`]: what the machine has and which capability
//! slots hold what.
//!
//! Plain `repr(C)` data with fixed-size arrays, so both sides read it without
//! parsing; [`BootInfo::MAGIC`] and `version` guard against a mismatch.

/// Most CPUs described.
pub const MAX_CPUS: usize = 256;
/// Most untyped regions described.
pub const MAX_UNTYPED: usize = 512;
/// Most boot-module files described.
pub const MAX_FILES: usize = 64;
/// Bytes of a file name.
pub const NAME_BYTES: usize = 32;
/// Bytes of the kernel command line passed on.
pub const CMDLINE_BYTES: usize = 256;

/// One CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// Dense index (the scheduling-control capability's CPU).
    pub index: u32,
    /// Local APIC id.
    pub apic_id: u32,
    /// Package (socket).
    pub package: u32,
    /// NUMA node.
    pub node: u32,
}

/// One untyped region the root task holds a capability to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UntypedInfo {
    /// Physical base.
    pub paddr: u64,
    /// Size as a power of two.
    pub size_bits: u8,
    /// Device memory (MMIO): frames only, never zeroed.
    pub device: u8,
    /// Padding.
    pub reserved: [u8; 2],
    /// NUMA node of the memory.
    pub node: u32,
}

/// One file of the boot archive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileInfo {
    /// Name, NUL-padded UTF-8.
    pub name: [u8; NAME_BYTES],
    /// Offset of the file in the archive (a multiple of 4096).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Everything the root task is told at start.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// [`BootInfo::MAGIC`].
    pub magic: u64,
    /// [`BootInfo::VERSION`].
    pub version: u64,
    /// TSC ticks per second.
    pub tsc_hz: u64,
    /// CPUs online.
    pub cpu_count: u32,
    /// Sockets among them.
    pub socket_count: u32,
    /// NUMA nodes.
    pub node_count: u32,
    /// Untyped regions: capabilities in slots `untyped_first..untyped_first + count`.
    pub untyped_count: u32,
    /// First untyped slot.
    pub untyped_first: u64,
    /// Frame capabilities covering the whole boot archive (read-only), in order, in
    /// slots `archive_first..archive_first + archive_frames`.
    pub archive_first: u64,
    /// Number of archive frames.
    pub archive_frames: u64,
    /// Archive length in bytes.
    pub archive_bytes: u64,
    /// First slot of the root CNode that is free.
    pub first_free_slot: u64,
    /// Root CNode radix (it has `1 << radix` slots).
    pub cnode_radix: u64,
    /// Files in the archive.
    pub file_count: u64,
    /// The kernel command line (NUL-padded).
    pub cmdline: [u8; CMDLINE_BYTES],
    /// CPUs, by index.
    pub cpus: [CpuInfo; MAX_CPUS],
    /// Untyped regions, in slot order.
    pub untyped: [UntypedInfo; MAX_UNTYPED],
    /// Files of the boot archive.
    pub files: [FileInfo; MAX_FILES],
}

impl BootInfo {
    /// Identifies a boot-info block.
    pub const MAGIC: u64 = 0x4f464e49_544f4f42; // "BOOTINFO"
    /// Layout version.
    pub const VERSION: u64 = 1;
    /// Bytes the block occupies, rounded up to whole pages.
    pub const PAGES: usize = core::mem::size_of::<BootInfo>().div_ceil(4096);
}

impl FileInfo {
    /// The name as text.
    pub fn name(&self) -> &str {
        let len = self.name.iter().position(|b| *b == 0).unwrap_or(NAME_BYTES);
        core::str::from_utf8(self.name.get(..len).unwrap_or(&[])).unwrap_or("")
    }
}
