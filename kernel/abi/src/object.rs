//! Object-type codes user space passes to `untyped::RETYPE` (the kernel's
//! `ramen_core::object::CapType` uses the same numbers; a test there checks).

/// Untyped memory (size bits = region size).
pub const UNTYPED: u64 = 1;
/// A CNode (size bits = radix).
pub const CNODE: u64 = 2;
/// A thread control block.
pub const THREAD: u64 = 3;
/// An IPC endpoint.
pub const ENDPOINT: u64 = 4;
/// A notification.
pub const NOTIFICATION: u64 = 5;
/// A reply object.
pub const REPLY: u64 = 6;
/// A 4 KiB frame.
pub const FRAME_4K: u64 = 7;
/// A 2 MiB frame.
pub const FRAME_2M: u64 = 8;
/// An address space (top-level page table).
pub const VSPACE: u64 = 9;
/// A page-directory-pointer table.
pub const PDPT: u64 = 10;
/// A page directory.
pub const PAGE_DIRECTORY: u64 = 11;
/// A page table.
pub const PAGE_TABLE: u64 = 12;

/// Rights bits in mint and mutate (MR3): read, write, grant, grant-reply.
pub mod rights {
    /// Receive, read memory.
    pub const READ: u64 = 1;
    /// Send, write memory, retype.
    pub const WRITE: u64 = 2;
    /// Transfer capabilities.
    pub const GRANT: u64 = 4;
    /// Transfer a reply capability (call).
    pub const GRANT_REPLY: u64 = 8;
    /// Everything.
    pub const ALL: u64 = 15;
}

/// The data word of mint and mutate (MR4) for a CNode capability: a guard of
/// `bits` bits with value `value`.
pub const fn guard(value: u64, bits: u64) -> u64 {
    (value << 8) | (bits & 0xff)
}
