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
