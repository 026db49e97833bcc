//! Typed access to physical memory through the direct map.
//!
//! Kernel objects (capability slots, TCBs, page tables) live in physical memory that
//! retyping handed to them. These functions are the one door to that memory; their
//! callers (the kernel's object layer) state in a `SAFETY` comment why the address
//! holds what they say it does, which the capability model guarantees.
//!
//! They reach memory through the direct map at its fixed base ([`direct_map`], a
//! constant the compiler folds into each access), so they are for use once the
//! kernel runs on its own tables (`paging::KernelSpace::build_and_switch`, the first
//! thing the boot CPU does after finding free memory): every caller's object is
//! made after that.

/// Where physical address `phys` is in the direct map.
#[inline(always)]
pub const fn direct_map(phys: u64) -> u64 {
    phys + DIRECT_MAP_BASE
}

/// The direct map's base: the kernel's, or in a hosted test process (feature
/// `hosted`) where its "physical" memory is mapped (`hosted::PHYS_BASE`).
#[cfg(not(feature = "hosted"))]
const DIRECT_MAP_BASE: u64 = crate::PHYS_MAP_BASE;
#[cfg(feature = "hosted")]
const DIRECT_MAP_BASE: u64 = crate::hosted::PHYS_BASE;

use direct_map as phys_to_virt;

/// Reads a `T` at physical address `phys`.
///
/// # Safety
/// `phys` must be the address of a properly aligned, initialised `T` that no other
/// CPU writes concurrently.
pub unsafe fn read<T: Copy>(phys: u64) -> T {
    // SAFETY: guaranteed by the caller; the direct map covers all RAM.
    unsafe { (phys_to_virt(phys) as *const T).read() }
}

/// Writes a `T` at physical address `phys`.
///
/// # Safety
/// `phys` must be properly aligned for `T` and lie in memory the caller owns as a `T`
/// (or as raw bytes it is turning into one), with no other access in flight.
pub unsafe fn write<T>(phys: u64, value: T) {
    // SAFETY: guaranteed by the caller.
    unsafe { (phys_to_virt(phys) as *mut T).write(value) }
}

/// Zeroes `len` bytes at `phys`.
///
/// # Safety
/// The range must be memory the caller owns and that holds nothing still referenced.
pub unsafe fn zero(phys: u64, len: u64) {
    // SAFETY: guaranteed by the caller; memset is the kernel's own (arch::mem).
    unsafe { core::ptr::write_bytes(phys_to_virt(phys) as *mut u8, 0, len as usize) }
}

/// Copies `bytes` to physical address `phys`.
///
/// # Safety
/// The destination range must be memory the caller owns, not overlapping `bytes`.
pub unsafe fn copy_to(phys: u64, bytes: &[u8]) {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), phys_to_virt(phys) as *mut u8, bytes.len()) }
}

/// Copies `out.len()` bytes at physical address `phys` into `out`, one volatile byte
/// read at a time: for memory that user space may write at the same moment (a trace
/// buffer it shares with the kernel). The copy may then mix old and new bytes; the
/// caller treats it as untrusted.
///
/// # Safety
/// The range must be RAM the direct map covers (a frame that a capability names).
pub unsafe fn copy_from_shared(phys: u64, out: &mut [u8]) {
    let base = phys_to_virt(phys) as *const u8;
    for (i, byte) in out.iter_mut().enumerate() {
        // SAFETY: the byte lies in the range the caller vouches for; a volatile byte
        // read is never torn.
        *byte = unsafe { base.add(i).read_volatile() };
    }
}

/// A `&'static mut T` for the object at `phys`.
///
/// # Safety
/// `phys` must hold an initialised, aligned `T`, and the caller must guarantee that no
/// other reference to it exists for as long as the returned one is used (the kernel
/// touches a TCB only on the CPU that owns it, or under the lock that protects it).
pub unsafe fn object_mut<T>(phys: u64) -> &'static mut T {
    // SAFETY: guaranteed by the caller.
    unsafe { &mut *(phys_to_virt(phys) as *mut T) }
}

/// A byte slice view of `len` bytes at `phys` (for boot modules).
///
/// # Safety
/// The range must be initialised memory that nothing writes while the slice lives.
pub unsafe fn bytes(phys: u64, len: u64) -> &'static [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(phys_to_virt(phys) as *const u8, len as usize) }
}
