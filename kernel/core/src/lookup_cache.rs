//! The per-core capability lookup cache: remembered CSpace walks.
//!
//! Each core owns one [`LookupCache`], a small direct-mapped table from
//! `(root CNode capability, cptr, depth)` to the slot the walk reached. It caches the
//! slot, not the capability in it, so a walk's result can change only when a CNode
//! capability on the path changes: the walk reads nothing else. Every such change
//! goes through one write helper in [`crate::cdt`], which advances the store's
//! generation after the write. An entry is used only if it was filled at the current
//! generation, so after any CNode capability anywhere is created, moved, mutated,
//! deleted, revoked or turned into a zombie, every core's entries are dead at once,
//! with no message to any core.
//!
//! A hit reads the generation (one shared cache line that is written only when a
//! CSpace changes shape, so it stays shared in every core's cache) and writes nothing
//! shared. A fill reads the generation before walking; a change that races with the
//! walk advances it after its write, so the entry is stored already stale.
//!
//! Invariant: a hit returns exactly what [`resolve`] would return now; errors are
//! never cached.
//!
//! In front of it, a [`LookupMemo`] remembers one walk for one thread (the IPC
//! fastpath keeps one in each TCB). Its root is implied, not compared: it is the
//! capability in the thread's CSpace-root slot, which within one generation either
//! holds the same CNode capability throughout or holds no CNode capability (and then
//! every walk fails and nothing is remembered). So a hit compares the generation,
//! the capability pointer and the depth: three words instead of a root capability.

use ramen_abi::Error;

use crate::cap::Cap;
use crate::cspace::resolve;
use crate::object::{ObjectStore, SlotRef};

/// Entries per core.
pub const LOOKUP_CACHE_ENTRIES: usize = 64;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// `None`: never filled.
    slot: Option<SlotRef>,
    generation: u64,
    root: Cap,
    cptr: u64,
    depth: u8,
}

/// One core's cache of capability-pointer resolutions.
#[derive(Clone, Debug)]
pub struct LookupCache {
    entries: [Entry; LOOKUP_CACHE_ENTRIES],
    hits: u64,
    misses: u64,
}

impl Default for LookupCache {
    fn default() -> Self {
        Self::new()
    }
}

impl LookupCache {
    /// An empty cache.
    pub const fn new() -> Self {
        const EMPTY: Entry = Entry { slot: None, generation: 0, root: Cap::NULL, cptr: 0, depth: 0 };
        Self { entries: [EMPTY; LOOKUP_CACHE_ENTRIES], hits: 0, misses: 0 }
    }

    /// Resolves `cptr` in the CSpace rooted at `root`, as [`resolve`] does (same
    /// result, same errors), from the cache when it can.
    ///
    /// Inlined: a hit is a handful of compares, which the IPC fastpath makes against
    /// the root capability where it lies, without copying it; a miss calls out.
    #[inline]
    pub fn lookup<S: ObjectStore>(
        &mut self,
        store: &S,
        root: &Cap,
        cptr: u64,
        depth: u8,
    ) -> Result<SlotRef, Error> {
        let generation = store.generation();
        let index = Self::index(root, cptr, depth);
        if let Some(entry) = self.entries.get(index)
            && entry.generation == generation
            && entry.cptr == cptr
            && entry.depth == depth
            && entry.root == *root
            && let Some(slot) = entry.slot
        {
            self.hits = self.hits.wrapping_add(1);
            return Ok(slot);
        }
        self.fill(store, root, cptr, depth, index, generation)
    }

    /// A miss: walks, and remembers the result at `index` if the walk succeeded.
    #[inline(never)]
    fn fill<S: ObjectStore>(
        &mut self,
        store: &S,
        root: &Cap,
        cptr: u64,
        depth: u8,
        index: usize,
        generation: u64,
    ) -> Result<SlotRef, Error> {
        self.misses = self.misses.wrapping_add(1);
        let slot = resolve(store, root, cptr, depth)?;
        if let Some(entry) = self.entries.get_mut(index) {
            *entry = Entry { slot: Some(slot), generation, root: *root, cptr, depth };
        }
        Ok(slot)
    }

    /// Forgets everything (not needed for correctness).
    pub fn flush(&mut self) {
        *self = Self::new();
    }

    /// `(hits, misses)` since creation.
    pub const fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    #[inline]
    fn index(root: &Cap, cptr: u64, depth: u8) -> usize {
        let key = cptr ^ root.addr().0.rotate_left(29) ^ u64::from(depth) << 56;
        // Fibonacci hashing: the top bits of the product are well mixed.
        let hash = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - LOOKUP_CACHE_ENTRIES.trailing_zeros());
        hash as usize
    }
}

/// One remembered walk from a fixed root slot (see the module doc): the last
/// successful lookup of a thread's own CSpace.
///
/// Sound only where the root slot's CNode capability can change only through the
/// derivation-tree write helper (which advances the generation), and where the memo
/// is created afresh with the slot it belongs to: a TCB's CSpace-root slot and a memo
/// in the same TCB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupMemo {
    /// The slot found; meaningless while nothing is remembered (`depth` is then
    /// [`NO_DEPTH`], which no lookup asks for, so `slot` is never read).
    slot: SlotRef,
    generation: u64,
    cptr: u64,
    depth: u8,
    /// The slot's version ([`ObjectStore::version`]) when `cap` was read from it.
    version: u64,
    /// The capability the slot held then.
    cap: Cap,
}

/// The depth of a memo that remembers nothing: deeper than any walk
/// ([`crate::cspace::MAX_DEPTH`]), so a hit is never asked for it.
const NO_DEPTH: u8 = u8::MAX;

impl Default for LookupMemo {
    fn default() -> Self {
        Self::new()
    }
}

impl LookupMemo {
    /// Remembers nothing.
    pub const fn new() -> Self {
        let slot = match SlotRef::new(crate::object::SLOT_BYTES) {
            Some(slot) => slot,
            None => unreachable!(),
        };
        Self { slot, generation: 0, cptr: 0, depth: NO_DEPTH, version: 0, cap: Cap::NULL }
    }

    /// The capability in the slot `cptr` resolves to at `depth` bits in the memo's
    /// CSpace (the one rooted in its root slot), as [`resolve`] and a read of that
    /// slot would give it. `walk` does a miss: [`resolve`] from the capability in the
    /// root slot, or a [`LookupCache`] lookup with it, the same `cptr` and `depth`.
    /// A hit reads nothing but `store`'s generation and the slot's version.
    #[inline]
    pub fn lookup<S: ObjectStore>(
        &mut self,
        store: &S,
        cptr: u64,
        depth: u8,
        walk: impl FnOnce() -> Result<SlotRef, Error>,
    ) -> Result<Cap, Error> {
        if let Some(cap) = self.hit(store, cptr, depth) {
            return Ok(*cap);
        }
        let generation = store.generation();
        let slot = walk()?;
        Ok(*self.remember(store, generation, cptr, depth, slot))
    }

    /// The hit half of [`Self::lookup`]: the capability remembered for `cptr` and
    /// `depth` if nothing changed since: no CSpace changed shape (the generation) and
    /// the slot was not written (its version). The IPC fastpath calls this inline and
    /// its miss out of line, so a hit keeps every value in registers (five compares;
    /// the capability comes from the memo, beside the compared words, and the slot's
    /// own line is read for its version only).
    #[inline(always)]
    pub fn hit<S: ObjectStore>(&self, store: &S, cptr: u64, depth: u8) -> Option<&Cap> {
        let same = self.generation == store.generation() && self.cptr == cptr && self.depth == depth;
        // A memo holding nothing has `NO_DEPTH`, so `same` is false for it and its
        // dummy slot is never read.
        (same && depth != NO_DEPTH && store.version(self.slot) == self.version).then_some(&self.cap)
    }

    /// The capability remembered (the null capability if nothing is): what the last
    /// [`Self::hit`] or [`Self::remember`] returned.
    #[inline(always)]
    pub const fn cap(&self) -> &Cap {
        &self.cap
    }

    /// The miss half: remembers `slot`, which a walk of this memo's CSpace found for
    /// `cptr` and `depth` at `generation` (read before the walk), with the capability
    /// in it now, which it returns.
    pub fn remember<S: ObjectStore>(
        &mut self,
        store: &S,
        generation: u64,
        cptr: u64,
        depth: u8,
        slot: SlotRef,
    ) -> &Cap {
        let (contents, version) = store.read_versioned(slot);
        *self = Self { slot, generation, cptr, depth, version, cap: contents.cap() };
        &self.cap
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::cnode::{copy, move_cap};
    use crate::object::CapType;
    use crate::testing::{self, Fixture, check_caches, check_destroyed, check_invariants, delete};
    use crate::untyped::{RetypeRequest, retype};

    /// A fixture with a radix-2 CNode in root slot 3 and an endpoint in its slot 1.
    fn two_levels() -> Fixture {
        let mut fx = Fixture::new();
        let (untyped, root) = (fx.root_slot(1), fx.root_slot(0));
        let cnode = RetypeRequest { kind: CapType::CNode, size_bits: 2, count: 1 };
        retype(&mut fx.store, untyped, cnode, root, 3).unwrap();
        let leaf = fx.root_slot(3);
        let ep = RetypeRequest { kind: CapType::Endpoint, size_bits: 0, count: 1 };
        retype(&mut fx.store, untyped, ep, leaf, 1).unwrap();
        fx
    }

    #[test]
    fn a_second_lookup_hits() {
        let fx = two_levels();
        let mut cache = LookupCache::new();
        let first = cache.lookup(&fx.store, &fx.root(), 3 << 2 | 1, 6);
        assert_eq!(cache.lookup(&fx.store, &fx.root(), 3 << 2 | 1, 6), first);
        assert_eq!(cache.stats(), (1, 1));
        assert!(cache.lookup(&fx.store, &fx.root(), 7 << 2, 6).is_err());
        assert!(cache.lookup(&fx.store, &fx.root(), 7 << 2, 6).is_err());
        assert_eq!(cache.stats(), (1, 3), "errors are not cached");
    }

    #[test]
    fn moving_a_cnode_on_one_core_invalidates_every_core() {
        let mut fx = two_levels();
        let mut cores = [LookupCache::new(), LookupCache::new()];
        for cache in &mut cores {
            assert!(cache.lookup(&fx.store, &fx.root(), 3 << 2 | 1, 6).is_ok());
        }
        let (from, to) = (fx.root_slot(3), fx.root_slot(4));
        move_cap(&mut fx.store, from, to).unwrap();
        for cache in &mut cores {
            assert_eq!(cache.lookup(&fx.store, &fx.root(), 3 << 2 | 1, 6), Err(Error::InvalidCapability));
        }
    }

    #[test]
    fn copying_an_endpoint_keeps_the_cache_warm() {
        let mut fx = two_levels();
        let mut cache = LookupCache::new();
        let ep = cache.lookup(&fx.store, &fx.root(), 3 << 2 | 1, 6).unwrap();
        let generation = fx.store.generation;
        let dest = fx.root_slot(5);
        copy(&mut fx.store, ep, dest).unwrap();
        delete(&mut fx.store, dest).unwrap();
        assert_eq!(fx.store.generation, generation, "only CNode changes invalidate");
        assert_eq!(cache.lookup(&fx.store, &fx.root(), 3 << 2 | 1, 6), Ok(ep));
        assert_eq!(cache.stats(), (1, 1));
    }

    /// Regression guard for the classic revocation race shape: a CNode deleted and
    /// its memory retyped into a new CNode at the same address must not resurrect
    /// old entries.
    #[test]
    fn a_cnode_reborn_at_the_same_address_is_not_confused_with_the_old_one() {
        let mut fx = two_levels();
        let mut cache = LookupCache::new();
        let before = cache.lookup(&fx.store, &fx.root(), 3 << 2 | 1, 6).unwrap();
        let untyped = fx.root_slot(1);
        testing::revoke(&mut fx.store, untyped).unwrap();
        let (root, cnode) = (fx.root_slot(0), RetypeRequest { kind: CapType::CNode, size_bits: 2, count: 1 });
        retype(&mut fx.store, untyped, cnode, root, 3).unwrap();
        let after = cache.lookup(&fx.store, &fx.root(), 3 << 2 | 1, 6).unwrap();
        assert_eq!(after, before, "same address, but found by a fresh walk");
        assert_eq!(cache.stats(), (0, 2));
    }

    #[test]
    fn a_memo_hits_until_a_cnode_changes() {
        let mut fx = two_levels();
        let mut memo = LookupMemo::new();
        let walks = core::cell::Cell::new(0);
        let look = |fx: &Fixture, memo: &mut LookupMemo| {
            memo.lookup(&fx.store, 3 << 2 | 1, 6, || {
                walks.set(walks.get() + 1);
                fx.resolve(3 << 2 | 1, 6)
            })
        };
        let first = look(&fx, &mut memo).unwrap();
        assert_eq!(first.kind(), CapType::Endpoint);
        assert_eq!(look(&fx, &mut memo), Ok(first));
        assert_eq!(walks.get(), 1, "the second lookup is a hit");
        // A copy made from the slot changes only its links: still a hit.
        let endpoint = fx.resolve(3 << 2 | 1, 6).unwrap();
        let spare = fx.root_slot(5);
        copy(&mut fx.store, endpoint, spare).unwrap();
        assert_eq!(look(&fx, &mut memo), Ok(first));
        assert_eq!(walks.get(), 1, "links are not what a memo remembers");
        // Its capability deleted (no CSpace changed shape): a miss, and the slot read
        // again.
        let step = crate::cnode::delete_step(&mut fx.store, endpoint).unwrap();
        assert_eq!(step.destroyed, None, "a copy is left");
        assert_eq!(look(&fx, &mut memo).map(|c| c.kind()), Ok(CapType::Null), "not the deleted capability");
        assert_eq!(walks.get(), 2);
        let (from, to) = (fx.root_slot(3), fx.root_slot(4));
        move_cap(&mut fx.store, from, to).unwrap();
        assert_eq!(look(&fx, &mut memo), Err(Error::InvalidCapability));
        assert_eq!(look(&fx, &mut memo), Err(Error::InvalidCapability));
        assert_eq!(walks.get(), 4, "errors are not remembered");
    }

    const CORES: usize = 3;

    proptest! {
        #![proptest_config(testing::config())]

        /// Random operations on simulated cores: every core's cached lookups agree with
        /// uncached walks after every step; failed operations change nothing; the
        /// derivation-tree and memory invariants hold; destroyed objects are gone.
        #[test]
        fn cached_lookups_always_agree_with_the_walk(
            ops in proptest::collection::vec(testing::op(CORES), 1..64)
        ) {
            let mut fx = Fixture::new();
            let mut caches: Vec<LookupCache> = (0..CORES).map(|_| LookupCache::new()).collect();
            let mut seen = std::collections::BTreeSet::new();
            for op in &ops {
                let before = fx.store.clone();
                match testing::apply(&mut fx, &mut caches, op) {
                    Ok(destroyed) => {
                        for d in &destroyed {
                            check_destroyed(&fx.store, d);
                        }
                    }
                    Err(_) => prop_assert_eq!(&fx.store, &before, "{:?} failed but changed state", op),
                }
                check_invariants(&fx.store);
                check_caches(&fx, &mut caches, &mut seen);
            }
        }

        /// The same random operations against one memo per address, kept across
        /// steps: a memo never returns anything but the capability in the slot the
        /// walk finds now.
        #[test]
        fn memos_always_agree_with_the_walk(
            ops in proptest::collection::vec(testing::op(CORES), 1..64)
        ) {
            let mut fx = Fixture::new();
            let mut caches: Vec<LookupCache> = (0..CORES).map(|_| LookupCache::new()).collect();
            let mut memos = std::collections::BTreeMap::new();
            for op in &ops {
                let _ = testing::apply(&mut fx, &mut caches, op);
                for a in testing::reachable(&fx) {
                    memos.entry((a.cptr, a.depth)).or_insert_with(LookupMemo::new);
                }
                for (&(cptr, depth), memo) in memos.iter_mut() {
                    let got = memo.lookup(&fx.store, cptr, depth, || fx.resolve(cptr, depth));
                    let now = fx.resolve(cptr, depth).map(|at| fx.cap(at));
                    prop_assert_eq!(got, now, "stale memo of {:#x}/{}", cptr, depth);
                }
            }
        }
    }
}
