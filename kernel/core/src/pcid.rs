//! PCID slots: which address spaces a CPU's TLB may still hold, under which
//! process-context identifier, and whether switching to a space may keep them.
//!
//! With CR4.PCIDE set, TLB entries (and paging-structure caches) are tagged with the
//! PCID in CR3's low 12 bits, and a CR3 write with bit 63 ([`NO_FLUSH`]) keeps the
//! new PCID's entries instead of dropping them. Each CPU hands out its own [`SLOTS`]
//! PCIDs (1 to `SLOTS`; PCID 0 is the kernel's tables) round-robin to the address
//! spaces it runs.
//!
//! An address space is named by its root and its *TLB generation*: a number from one
//! global counter, new when the space is made and again every time a translation in
//! it is removed (the kernel's `tlb::shoot_down`, before it looks for CPUs that have
//! the space loaded). Every generation is used once, so a root reused by a later
//! space never matches an earlier generation. A switch keeps a slot's entries only
//! when both root and generation match the slot's: nothing was removed from that
//! space since this CPU last loaded it under that PCID. Otherwise the write flushes
//! the slot. A CPU that has the space loaded when a translation goes is interrupted
//! and flushes at once; the others flush when they next switch to it.
//!
//! Generation 0 is never a space's (the counter starts at 1), and root 0 is never
//! loaded through here (the kernel's tables are loaded with PCID 0), so an unused
//! slot matches nothing.

/// PCIDs per CPU for user address spaces.
pub const SLOTS: usize = 8;

/// CR3 bit 63: keep the TLB entries of the PCID being loaded.
pub const NO_FLUSH: u64 = 1 << 63;

/// One PCID's tenant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    root: u64,
    generation: u64,
}

/// A CPU's PCIDs and the address space (root and generation) whose translations each
/// may hold. Owned by its CPU.
#[derive(Clone, Debug, Default)]
pub struct PcidSlots {
    slots: [Slot; SLOTS],
    /// The slot the next newcomer takes.
    next: usize,
}

impl PcidSlots {
    /// No space cached.
    pub const fn new() -> Self {
        Self { slots: [Slot { root: 0, generation: 0 }; SLOTS], next: 0 }
    }

    /// The CR3 value that loads the space at `root` (4 KiB aligned), now at
    /// `generation`: the PCID of its slot, with [`NO_FLUSH`] if that slot last held
    /// this space at this same generation; otherwise the slot (its own, or the next
    /// one round-robin, evicting its tenant) now holds it and the write flushes it.
    #[inline]
    pub fn cr3(&mut self, root: u64, generation: u64) -> u64 {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.root == root {
                let keep = slot.generation == generation;
                slot.generation = generation;
                return root | (i as u64 + 1) | if keep { NO_FLUSH } else { 0 };
            }
        }
        let i = self.next % SLOTS;
        self.next = (i + 1) % SLOTS;
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Slot { root, generation };
        }
        root | (i as u64 + 1)
    }
}

/// The PCID field of a CR3 value.
pub const fn pcid_of(cr3: u64) -> u64 {
    cr3 & 0xfff
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::HashMap;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_space_keeps_its_pcid_and_its_entries_until_its_generation_changes() {
        let mut slots = PcidSlots::new();
        let a = 0x10_0000;
        let first = slots.cr3(a, 5);
        assert_eq!(first, a | 1, "a newcomer is flushed");
        assert_eq!(slots.cr3(a, 5), a | 1 | NO_FLUSH, "same generation: kept");
        assert_eq!(slots.cr3(a, 6), a | 1, "a translation went: flushed");
        assert_eq!(slots.cr3(a, 6), a | 1 | NO_FLUSH);
    }

    #[test]
    fn slots_are_reused_round_robin_and_an_evicted_space_starts_flushed() {
        let mut slots = PcidSlots::new();
        let roots: Vec<u64> = (1..=SLOTS as u64 + 1).map(|i| i << 12).collect();
        for (i, root) in roots.iter().take(SLOTS).enumerate() {
            assert_eq!(pcid_of(slots.cr3(*root, 1)), i as u64 + 1);
        }
        // One more space evicts the first slot's tenant.
        let extra = roots[SLOTS];
        assert_eq!(slots.cr3(extra, 1), extra | 1);
        // The evicted space comes back flushed, in the next slot round-robin.
        assert_eq!(slots.cr3(roots[0], 1), roots[0] | 2);
    }

    #[test]
    fn a_root_reused_by_a_new_space_is_flushed() {
        let mut slots = PcidSlots::new();
        let root = 0x20_0000;
        slots.cr3(root, 3);
        // The space died; another was made at the same root with a fresh generation.
        assert_eq!(slots.cr3(root, 9), root | 1);
    }

    /// One step of the model: switch to a space, remove a translation from one, or
    /// replace one by a new space at the same root.
    #[derive(Clone, Debug)]
    enum Op {
        Switch(u64),
        Unmap(u64),
        Recreate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let root = (1u64..=12).prop_map(|r| r << 12);
        prop_oneof![
            6 => root.clone().prop_map(Op::Switch),
            2 => root.clone().prop_map(Op::Unmap),
            1 => root.prop_map(Op::Recreate),
        ]
    }

    proptest! {
        /// A model TLB (per PCID: the space and generation its entries were filled
        /// under) never keeps entries of a space older than the space's current
        /// generation, or of another space, across any switch: the kernel's
        /// shootdown-plus-generation rule as one CPU sees it. A loaded space whose
        /// translation goes is flushed at once (the shootdown's local flush or IPI).
        #[test]
        fn no_switch_keeps_stale_entries(ops in prop::collection::vec(op(), 1..200)) {
            let mut counter = 1u64;
            let mut generation: HashMap<u64, u64> = HashMap::new();
            let mut slots = PcidSlots::new();
            // PCID -> (root, generation) of the entries it holds.
            let mut tlb: HashMap<u64, (u64, u64)> = HashMap::new();
            let mut loaded: Option<(u64, u64)> = None; // (root, pcid)
            for op in ops {
                match op {
                    Op::Switch(root) => {
                        let g = *generation.entry(root).or_insert_with(|| { counter += 1; counter });
                        let cr3 = slots.cr3(root, g);
                        prop_assert_eq!(cr3 & 0x000f_ffff_ffff_f000, root);
                        let pcid = pcid_of(cr3);
                        prop_assert!((1..=SLOTS as u64).contains(&pcid));
                        if cr3 & NO_FLUSH != 0 {
                            prop_assert_eq!(tlb.get(&pcid).copied(), Some((root, g)), "kept stale entries");
                        }
                        // Running fills the PCID with the space's current translations.
                        tlb.insert(pcid, (root, g));
                        loaded = Some((root, pcid));
                    }
                    Op::Unmap(root) => {
                        counter += 1;
                        generation.insert(root, counter);
                        if let Some((r, pcid)) = loaded && r == root {
                            // Flushed at once, and refilled as it runs on.
                            tlb.insert(pcid, (root, counter));
                        }
                    }
                    Op::Recreate(root) => {
                        if loaded.is_some_and(|(r, _)| r == root) {
                            // The kernel leaves a dying space first (PCID 0).
                            loaded = None;
                        }
                        counter += 1;
                        generation.insert(root, counter);
                    }
                }
            }
        }
    }
}
