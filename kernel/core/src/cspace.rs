//! CSpace addressing: resolving a capability pointer to a slot by a guarded walk
//! through CNodes, as in seL4.
//!
//! A capability pointer (`cptr`) is read as a `depth`-bit number, most significant
//! bit first. At each CNode the walk consumes `guard_bits` bits that must equal the
//! CNode capability's guard, then `radix` bits that index a slot. If bits remain, the
//! slot must hold the next CNode capability. A two-level CSpace (a root CNode whose
//! guard soaks up the unused high bits, leaf CNodes below it) is the common shape.
//!
//! Invariants: every level consumes at least one bit (the radix is at least 1), so a
//! walk reads at most 64 slots; the index is the cptr masked to the radix, so it is
//! in bounds by construction (no branch to mispredict, no Spectre v1 gadget).

use ramen_abi::Error;

use crate::cap::Cap;
use crate::object::{CapType, ObjectStore, SlotRef};

/// Longest capability pointer, in bits.
pub const MAX_DEPTH: u8 = 64;

/// `width` bits of `word` starting at bit `shift`.
fn bits(word: u64, shift: u32, width: u32) -> u64 {
    let mask = 64u32.checked_sub(width).and_then(|unused| u64::MAX.checked_shr(unused)).unwrap_or(0);
    word.checked_shr(shift).unwrap_or(0) & mask
}

/// Resolves `cptr`, read as a `depth`-bit number, in the CSpace rooted at `root`:
/// the slot it names, which may be empty. This is the uncached walk; hot paths go
/// through [`crate::lookup_cache::LookupCache`].
///
/// Errors: `RangeError` for a depth of 0 or more than [`MAX_DEPTH`];
/// `InvalidCapability` if a guard does not match, the bits left do not cover a
/// CNode's guard and radix, or a capability on the way is not a CNode.
pub fn resolve<S: ObjectStore>(store: &S, root: &Cap, cptr: u64, depth: u8) -> Result<SlotRef, Error> {
    if depth == 0 || depth > MAX_DEPTH {
        return Err(Error::RangeError);
    }
    let mut node = *root;
    let mut remaining = u32::from(depth);
    loop {
        if node.kind() != CapType::CNode {
            return Err(Error::InvalidCapability);
        }
        let radix = u32::from(node.size_bits());
        let (guard, guard_bits) = node.guard();
        let guard_bits = u32::from(guard_bits);
        let level = radix + guard_bits;
        if level == 0 {
            return Err(Error::InvalidCapability);
        }
        let Some(below) = remaining.checked_sub(level) else {
            return Err(Error::InvalidCapability);
        };
        if bits(cptr, below + radix, guard_bits) != guard {
            return Err(Error::InvalidCapability);
        }
        let index = bits(cptr, below, radix);
        let slot = SlotRef::in_cnode(node.addr(), index).ok_or(Error::InvalidCapability)?;
        if below == 0 {
            return Ok(slot);
        }
        remaining = below;
        node = store.slot(slot).cap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{PhysAddr, SLOT_BYTES};
    use crate::testing::{Fixture, ROOT_CNODE, SimStore, slot_ref};

    #[test]
    fn one_level_names_root_slots() {
        let fx = Fixture::new();
        assert_eq!(fx.resolve(5, 4), Ok(slot_ref(ROOT_CNODE + 5 * SLOT_BYTES)));
        // Bits above the depth are ignored.
        assert_eq!(fx.resolve(0xF0 | 5, 4), Ok(slot_ref(ROOT_CNODE + 5 * SLOT_BYTES)));
    }

    #[test]
    fn bad_pointers_are_invalid_capability() {
        let fx = Fixture::new();
        assert_eq!(fx.resolve(1, 0), Err(Error::RangeError));
        assert_eq!(fx.resolve(1, 65), Err(Error::RangeError));
        assert_eq!(fx.resolve(1, 3), Err(Error::InvalidCapability), "depth shorter than the radix");
        assert_eq!(fx.resolve(1 << 4, 8), Err(Error::InvalidCapability), "an untyped is not a CNode");
        assert_eq!(fx.resolve(5 << 4, 8), Err(Error::InvalidCapability), "an empty slot is not a CNode");
        // Root slot 0 holds the root CNode itself, so depth 8 goes round once.
        assert_eq!(fx.resolve(5, 8), fx.resolve(5, 4));
        assert_eq!(fx.resolve(0, 6), Err(Error::InvalidCapability), "2 bits left, radix 4");
    }

    #[test]
    fn guards_must_match() {
        let store = SimStore::default();
        // A root that soaks up 60 bits of guard: a full 64-bit pointer names a slot.
        let root = Cap::try_cnode(PhysAddr(0x4000), 4, 0xABC, 60).unwrap();
        assert_eq!(resolve(&store, &root, 0xABC << 4 | 7, 64), Ok(slot_ref(0x4000 + 7 * SLOT_BYTES)));
        assert_eq!(resolve(&store, &root, 0xABD << 4 | 7, 64), Err(Error::InvalidCapability));
        assert_eq!(resolve(&store, &root, 0xABC << 4 | 7, 63), Err(Error::InvalidCapability));
        assert_eq!(resolve(&store, &Cap::NULL, 0, 64), Err(Error::InvalidCapability));
    }
}
