//! Address-space identifiers: whether a VSpace a frame capability recorded is still
//! the same VSpace.
//!
//! A frame capability records where it is mapped (VSpace root, address), so that
//! deleting it can remove the mapping. But the VSpace may have been destroyed since
//! and its memory retyped into something else, even a frame user space writes:
//! walking it as page tables would let user space steer a kernel write. So the
//! record also carries the VSpace's ASID, and this table, which only the kernel
//! writes, says which root each live ASID belongs to. A VSpace gets an ASID the
//! first time something is mapped into it; destroying it frees the ASID; a record
//! whose ASID no longer names its root is stale and is ignored.
//!
//! The VSpace keeps its own ASID in a non-present entry of its top-level table
//! (index [`TAG_INDEX`], in the kernel half the kernel never uses: kernel memory
//! user space cannot write), and beside it, from bit 32, how many threads are
//! configured to run in it: the last capability of a VSpace that threads still use
//! cannot be deleted (`Busy`), so no thread ever runs on a freed top-level table. The table is static: [`MAX_ASIDS`] - 1 address spaces
//! at once (ASID 0 means none); mapping into one more returns `NotEnoughMemory`.
//! Every access is under `CAP_LOCK`.

use ramen_abi::Error;

use crate::objects::Store;

/// Bits of the tag below the thread count: the ASID, shifted past the present bit.
const ASID_MASK: u64 = (1 << 32) - 1;
/// Where the thread count starts in the tag.
const THREADS_SHIFT: u32 = 32;

/// Address spaces that can have mappings at once, plus one (ASID 0 is "none").
pub const MAX_ASIDS: usize = 1 << 14;
/// The top-level table entry that holds a VSpace's ASID (not present to the MMU).
pub const TAG_INDEX: usize = 510;
/// Bits of a mapping record's address word that hold the ASID (above the 48-bit
/// user address).
const ASID_SHIFT: u32 = 48;

/// Which root each ASID belongs to (0: free). Written only under `CAP_LOCK`; the
/// `&Store` / `&mut Store` arguments prove it is held.
static ROOTS: spin::Mutex<[u64; MAX_ASIDS]> = spin::Mutex::new([0; MAX_ASIDS]);

/// The ASID of the VSpace at `root`, giving it one if it has none.
pub fn of(_: &mut Store, root: u64) -> Result<u64, Error> {
    let tag = crate::objects::vspace_tag(root);
    if tag & ASID_MASK != 0 {
        return Ok((tag & ASID_MASK) >> 1);
    }
    let mut roots = ROOTS.lock();
    let asid = roots.iter().skip(1).position(|r| *r == 0).map(|i| i + 1).ok_or(Error::NotEnoughMemory)?;
    roots[asid] = root;
    // Bit 0 (present) stays clear: the MMU never follows this entry.
    crate::objects::set_vspace_tag(root, (tag & !ASID_MASK) | (asid as u64) << 1);
    Ok(asid as u64)
}

/// A thread was configured to run in the VSpace at `root` (0: none).
pub fn thread_added(_: &mut Store, root: u64) {
    if root != 0 {
        let tag = crate::objects::vspace_tag(root);
        crate::objects::set_vspace_tag(root, tag + (1 << THREADS_SHIFT));
    }
}

/// A thread stopped using the VSpace at `root` (reconfigured or destroyed).
pub fn thread_removed(_: &mut Store, root: u64) {
    if root != 0 {
        let tag = crate::objects::vspace_tag(root);
        if tag >> THREADS_SHIFT != 0 {
            crate::objects::set_vspace_tag(root, tag - (1 << THREADS_SHIFT));
        }
    }
}

/// Threads configured to run in the VSpace at `root`.
pub fn threads(_: &Store, root: u64) -> u64 {
    crate::objects::vspace_tag(root) >> THREADS_SHIFT
}

/// Frees the ASID of a VSpace being destroyed.
pub fn release(_: &mut Store, root: u64) {
    let tag = crate::objects::vspace_tag(root);
    if tag & ASID_MASK != 0
        && let Some(slot) = ROOTS.lock().get_mut(((tag & ASID_MASK) >> 1) as usize)
    {
        *slot = 0;
    }
    crate::objects::set_vspace_tag(root, 0);
}

/// The roots of the VSpaces in `[base, end)` that hold an ASID. Host tests lay each
/// world out in the same memory: a world's VSpaces are given up with it (`release`),
/// as destroying them would, or the next world's would find their ASIDs taken.
#[cfg(test)]
pub fn roots_within(base: u64, end: u64) -> Vec<u64> {
    ROOTS.lock().iter().copied().filter(|&root| root >= base && root < end).collect()
}

/// The address word of a mapping record: `vaddr` with the ASID above it.
pub fn pack(vaddr: u64, asid: u64) -> u64 {
    vaddr | (asid << ASID_SHIFT)
}

/// The live VSpace root and address a mapping record names, or `None` if that
/// VSpace is gone (the record is stale).
pub fn resolve(_: &Store, root: u64, packed: u64) -> Option<(u64, u64)> {
    let asid = (packed >> ASID_SHIFT) as usize;
    let vaddr = packed & ((1 << ASID_SHIFT) - 1);
    (asid != 0 && ROOTS.lock().get(asid) == Some(&root)).then_some((root, vaddr))
}
