//! Volatile word access to a thread's IPC buffer.

/// Reads word `index` of the IPC buffer at `base`.
///
/// `base` is one of the addresses [`crate::msgbuf`] hands out (the root task's buffer
/// from the ABI, or a program thread's from the loader convention), and `index` is
/// checked against the buffer's size by the caller.
pub fn read(base: u64, index: usize) -> u64 {
    // SAFETY: the kernel (root task) or the root task's loader (programs) maps a
    // writable 4 KiB page at every such `base` before the thread starts, and nothing
    // in the runtime unmaps it; `index` < WORDS keeps the access inside that page.
    // Volatile: the kernel writes the page behind the compiler's back.
    unsafe { core::ptr::read_volatile((base as *const u64).add(index)) }
}

/// Writes word `index` of the IPC buffer at `base` (same rules as [`read`]).
pub fn write(base: u64, index: usize, value: u64) {
    // SAFETY: as for `read`; the page is mapped writable.
    unsafe { core::ptr::write_volatile((base as *mut u64).add(index), value) }
}

/// Reads the byte at `addr` of a lease the kernel mapped for the call being served.
///
/// `addr` lies inside a lease the kernel described in this thread's IPC buffer
/// (checked by the caller against the lease's bounds); the kernel keeps it mapped
/// until the reply. Volatile: the lender may be another address space's memory.
pub fn lease_read(addr: u64) -> u8 {
    // SAFETY: see above; a read after the reply faults the thread (the kernel
    // unmapped the page), it never reads someone else's memory.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// Writes the byte at `addr` of a read-write lease (same rules as [`lease_read`]).
pub fn lease_write(addr: u64, value: u8) {
    // SAFETY: as for `lease_read`; the caller checked the lease is read-write, which
    // the kernel mapped writable.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}
