//! Host doubles for the object store, a small CSpace fixture and the invariant
//! checks the unit and property tests share.

extern crate std;

use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

use proptest::prelude::*;
use proptest::test_runner::Config;
use ramen_abi::Error;

use crate::cap::{Cap, CapData, Rights};
use crate::cdt::Slot;
use crate::cnode::{self, Step};
use crate::cspace::resolve;
use crate::lookup_cache::LookupCache;
use crate::object::{CapType, Destroyed, ObjRef, ObjectStore, PhysAddr, SLOT_BYTES, SlotRef};
use crate::untyped::{RetypeRequest, retype};

/// Proptest cases: 256 unless `PROPTEST_CASES` says otherwise (the machine is shared).
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    // CI runs a fixed seed so a red run is reproducible; set PROPTEST_RNG_SEED to
    // explore other sequences.
    let rng_seed = match std::env::var("PROPTEST_RNG_SEED") {
        Ok(_) => Config::default().rng_seed,
        Err(_) => proptest::test_runner::RngSeed::Fixed(0x5eed_ca95),
    };
    Config { cases, rng_seed, ..Config::default() }
}

/// Physical memory as a map from slot address to slot; absent means zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStore {
    pub slots: BTreeMap<SlotRef, Slot>,
    pub generation: u64,
    pub initialised: Vec<ObjRef>,
    /// Objects whose capabilities `may_delete` refuses (as the kernel does for
    /// memory a lease pins).
    pub pinned: Vec<PhysAddr>,
    /// Mappings `remove_mapping` was asked to remove, in order.
    pub unmapped: Vec<(PhysAddr, u64)>,
}

/// Where a simulated thread object keeps its CSpace-root slot (as the kernel's TCB
/// does, at an offset inside the object).
pub const SIM_THREAD_SLOT_OFFSET: u64 = 0x100;

impl ObjectStore for SimStore {
    fn may_delete(&self, cap: &Cap, _is_final: bool) -> Result<(), ramen_abi::Error> {
        if self.pinned.contains(&cap.addr()) { Err(ramen_abi::Error::Busy) } else { Ok(()) }
    }

    fn remove_mapping(&mut self, cap: &Cap) {
        if let Some(mapping) = cap.mapping() {
            self.unmapped.push(mapping);
        }
    }

    fn slot(&self, at: SlotRef) -> Slot {
        self.slots.get(&at).copied().unwrap_or_default()
    }

    /// The capability's hash: changes when the capability does, and (as the
    /// kernel's version) not when only the links do; a memo's check needs no more.
    /// Derived from the contents so two stores with the same slots stay equal.
    fn version(&self, at: SlotRef) -> u64 {
        use core::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.slot(at).cap().hash(&mut hasher);
        hasher.finish()
    }

    fn thread_slot(&self, thread: PhysAddr) -> Option<SlotRef> {
        SlotRef::new(thread.0 + SIM_THREAD_SLOT_OFFSET)
    }

    fn set_slot(&mut self, at: SlotRef, slot: Slot) {
        if slot == Slot::default() {
            self.slots.remove(&at);
        } else {
            self.slots.insert(at, slot);
        }
    }

    fn init_object(&mut self, obj: ObjRef) {
        let end = obj.addr.0 + (1 << obj.size_bits);
        self.slots.retain(|at, _| !(obj.addr.0..end).contains(&at.addr().0));
        self.initialised.push(obj);
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn bump_generation(&mut self) {
        self.generation += 1;
    }
}

/// Where the fixture's thread keeps its CSpace root capability.
pub const ROOT_HOLDER: u64 = 0x1000;
/// The root CNode: 16 slots, no guard, so a 4-bit cptr names a root slot.
pub const ROOT_CNODE: u64 = 0x10_0000;
pub const ROOT_RADIX: u8 = 4;
/// The untyped memory the fixture starts with: 1 MiB, in root slot 1.
pub const UNTYPED_BASE: u64 = 0x100_0000;
pub const UNTYPED_BITS: u8 = 20;

pub fn slot_ref(addr: u64) -> SlotRef {
    SlotRef::new(addr).unwrap()
}

/// A thread's CSpace: the root CNode (its capability in `ROOT_HOLDER` and in root
/// slot 0) and an untyped capability in root slot 1.
pub struct Fixture {
    pub store: SimStore,
}

impl Fixture {
    pub fn new() -> Self {
        let mut store = SimStore::default();
        let root = Cap::try_cnode(PhysAddr(ROOT_CNODE), ROOT_RADIX, 0, 0).unwrap();
        cnode::insert_initial(&mut store, slot_ref(ROOT_HOLDER), root).unwrap();
        cnode::copy(&mut store, slot_ref(ROOT_HOLDER), slot_ref(ROOT_CNODE)).unwrap();
        let untyped = Cap::try_untyped(PhysAddr(UNTYPED_BASE), UNTYPED_BITS, false).unwrap();
        cnode::insert_initial(&mut store, slot_ref(ROOT_CNODE + SLOT_BYTES), untyped).unwrap();
        Self { store }
    }

    pub fn root(&self) -> Cap {
        self.store.slot(slot_ref(ROOT_HOLDER)).cap()
    }

    pub fn resolve(&self, cptr: u64, depth: u8) -> Result<SlotRef, Error> {
        resolve(&self.store, &self.root(), cptr, depth)
    }

    /// Root slot `index`.
    pub fn root_slot(&self, index: u64) -> SlotRef {
        self.resolve(index, ROOT_RADIX).unwrap()
    }

    pub fn cap(&self, at: SlotRef) -> Cap {
        self.store.slot(at).cap()
    }
}

/// Runs a stepped operation to the end, collecting what it destroyed.
pub fn run_steps(
    store: &mut SimStore,
    mut step: impl FnMut(&mut SimStore) -> Result<Step, Error>,
) -> Result<Vec<Destroyed>, Error> {
    let mut destroyed = Vec::new();
    for _ in 0..1_000_000 {
        let outcome = step(store)?;
        destroyed.extend(outcome.destroyed);
        if outcome.done {
            return Ok(destroyed);
        }
    }
    panic!("a stepped operation did not finish");
}

pub fn delete(store: &mut SimStore, at: SlotRef) -> Result<Vec<Destroyed>, Error> {
    run_steps(store, |s| cnode::delete_step(s, at))
}

pub fn revoke(store: &mut SimStore, at: SlotRef) -> Result<Vec<Destroyed>, Error> {
    run_steps(store, |s| cnode::revoke_step(s, at))
}

/// Checks the derivation-tree and memory invariants of every slot in `store`.
pub fn check_invariants(store: &SimStore) {
    let linked: Vec<(SlotRef, Slot)> = store.slots.iter().map(|(a, s)| (*a, *s)).collect();
    for (at, slot) in &linked {
        assert!(!slot.is_empty(), "{at:?} is linked but empty");
        if let Some(next) = slot.next() {
            assert_eq!(store.slot(next).prev(), Some(*at), "broken next link at {at:?}");
        }
        if let Some(prev) = slot.prev() {
            assert_eq!(store.slot(prev).next(), Some(*at), "broken prev link at {at:?}");
        }
    }
    // Walk every list from its head: together they cover each slot exactly once, and
    // all capabilities to one object are contiguous.
    let mut seen = 0;
    for (head, _) in linked.iter().filter(|(_, s)| s.prev().is_none()) {
        let mut run: Vec<Cap> = Vec::new();
        let mut at = Some(*head);
        while let Some(here) = at {
            seen += 1;
            assert!(seen <= linked.len(), "cycle in the derivation list");
            let cap = store.slot(here).cap();
            if let Some(last) = run.last()
                && !last.same_object(&cap)
            {
                assert!(
                    !run.iter().any(|earlier| earlier.same_object(&cap)),
                    "capabilities to one object are not contiguous: {cap:?}"
                );
            }
            run.push(cap);
            at = store.slot(here).next();
        }
    }
    assert_eq!(seen, linked.len(), "a linked slot is on no list");

    let caps: Vec<Cap> = linked.iter().map(|(_, s)| s.cap()).collect();
    // Every slot but the thread's root holder lies in a CNode that still has a
    // capability: no capability survives in a destroyed CNode's memory.
    for (at, _) in &linked {
        if at.addr().0 == ROOT_HOLDER {
            continue;
        }
        let inside = caps.iter().any(|c| {
            matches!(c.kind(), CapType::CNode | CapType::Zombie)
                && c.memory().is_some_and(|(start, end)| (start..end).contains(&at.addr().0))
        });
        assert!(inside, "{at:?} holds a capability outside every live CNode");
    }
    // Distinct objects never overlap (untyped regions nest around what they hold).
    for (i, a) in caps.iter().enumerate() {
        for b in caps.iter().skip(i + 1) {
            let (Some((a_start, a_end)), Some((b_start, b_end))) = (a.memory(), b.memory()) else {
                continue;
            };
            let overlap = a_start < b_end && b_start < a_end;
            let nested = (a_start <= b_start && b_end <= a_end) || (b_start <= a_start && a_end <= b_end);
            let untyped = a.kind() == CapType::Untyped || b.kind() == CapType::Untyped;
            assert!(!overlap || a.same_object(b) || (untyped && nested), "{a:?} overlaps {b:?}");
        }
    }
    // A zombie is the only capability to its CNode.
    for (i, a) in caps.iter().enumerate() {
        if a.kind() == CapType::Zombie {
            let others = caps.iter().enumerate().filter(|(j, b)| *j != i && a.same_object(b)).count();
            assert_eq!(others, 0, "zombie {a:?} is not the last capability to its CNode");
        }
    }
}

/// Checks that `destroyed` really had no capability left (that a destroyed CNode's
/// memory holds none is part of [`check_invariants`]).
pub fn check_destroyed(store: &SimStore, destroyed: &Destroyed) {
    let addr = match *destroyed {
        Destroyed::Thread(a)
        | Destroyed::Endpoint(a)
        | Destroyed::Notification(a)
        | Destroyed::Reply(a)
        | Destroyed::CNode(a)
        | Destroyed::Frame { addr: a, .. }
        | Destroyed::PageTable { addr: a, .. } => a.0,
        Destroyed::IrqHandler(_) | Destroyed::IoPort { .. } => return,
    };
    for (at, slot) in &store.slots {
        let cap = slot.cap();
        assert!(
            cap.kind() == CapType::Untyped || cap.addr().0 != addr,
            "{destroyed:?} reported destroyed but {at:?} still holds {cap:?}"
        );
    }
}

/// A capability pointer and its depth, as a test names a slot.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Addr {
    pub cptr: u64,
    pub depth: u8,
}

/// What a random operation names: a raw pointer (often invalid), or the `n`th of the
/// pointers that currently resolve to a slot of some kind, so that most operations
/// get past decoding.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Raw(Addr),
    Full(u16),
    Empty(u16),
    Untyped(u16),
    CNode(u16),
}

/// One random CSpace operation.
#[derive(Clone, Debug)]
pub enum Op {
    Copy(Target, Target),
    Mint(Target, Target, u8, CapData),
    Move(Target, Target),
    Mutate(Target, Target, u8, CapData),
    /// Delete, stopping after at most this many steps (a preempted delete).
    Delete(Target, u16),
    /// Revoke, stopping after at most this many steps.
    Revoke(Target, u16),
    Retype {
        untyped: Target,
        request: RetypeRequest,
        dest: Target,
        offset: u64,
    },
    /// Look a pointer up on one core.
    Lookup(usize, Target),
}

/// Every pointer that names a slot of the root CNode or of a CNode in one of its
/// slots (the shapes the random operations build).
pub fn reachable(fx: &Fixture) -> Vec<Addr> {
    let mut out = Vec::new();
    let radix = u32::from(ROOT_RADIX);
    for root_index in 0..1u64 << radix {
        out.push(Addr { cptr: root_index, depth: ROOT_RADIX });
        let cap = fx.cap(fx.root_slot(root_index));
        if cap.kind() != CapType::CNode {
            continue;
        }
        let (guard, guard_bits) = cap.guard();
        let (radix_bits, level) = (cap.size_bits(), u32::from(cap.size_bits()) + u32::from(guard_bits));
        if radix + level > 64 {
            continue;
        }
        for index in 0..1u64 << radix_bits {
            let cptr = root_index << level | guard << radix_bits | index;
            out.push(Addr { cptr, depth: (radix + level) as u8 });
        }
    }
    out
}

fn raw_addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        (0u64..16).prop_map(|cptr| Addr { cptr, depth: 4 }),
        (0u64..64).prop_map(|cptr| Addr { cptr, depth: 6 }),
        (0u64..256, 1u8..10).prop_map(|(cptr, depth)| Addr { cptr, depth }),
    ]
}

fn full() -> impl Strategy<Value = Target> {
    prop_oneof![6 => any::<u16>().prop_map(Target::Full), 1 => raw_addr().prop_map(Target::Raw)]
}

fn empty() -> impl Strategy<Value = Target> {
    prop_oneof![6 => any::<u16>().prop_map(Target::Empty), 1 => raw_addr().prop_map(Target::Raw)]
}

fn cap_data() -> impl Strategy<Value = CapData> {
    prop_oneof![
        4 => Just(CapData::Keep),
        1 => (1u64..4).prop_map(CapData::Badge),
        1 => (0u8..3, 0u64..4).prop_map(|(guard_bits, guard)| CapData::Guard { guard, guard_bits }),
    ]
}

/// Rights, mostly all of them so that derivations succeed.
fn rights() -> impl Strategy<Value = u8> {
    prop_oneof![2 => Just(0xF), 1 => 0u8..16]
}

fn request() -> impl Strategy<Value = RetypeRequest> {
    let kind_and_size = prop_oneof![
        3 => (1u8..4).prop_map(|radix| (CapType::CNode, radix)),
        2 => Just((CapType::Endpoint, 0)),
        1 => Just((CapType::Notification, 0)),
        1 => Just((CapType::Thread, 0)),
        1 => Just((CapType::Frame4K, 0)),
        1 => Just((CapType::Reply, 0)),
        1 => (12u8..17).prop_map(|bits| (CapType::Untyped, bits)),
    ];
    (kind_and_size, 1u64..4).prop_map(|((kind, size_bits), count)| RetypeRequest { kind, size_bits, count })
}

pub fn op(cores: usize) -> impl Strategy<Value = Op> {
    let steps = || prop_oneof![2 => Just(u16::MAX), 1 => 1u16..4];
    let untyped = prop_oneof![6 => any::<u16>().prop_map(Target::Untyped), 1 => full()];
    let dest_cnode = prop_oneof![6 => any::<u16>().prop_map(Target::CNode), 1 => full()];
    let offset = prop_oneof![0u64..4, 0u64..16];
    prop_oneof![
        3 => (full(), empty()).prop_map(|(a, b)| Op::Copy(a, b)),
        2 => (full(), empty(), rights(), cap_data()).prop_map(|(a, b, r, d)| Op::Mint(a, b, r, d)),
        2 => (full(), empty()).prop_map(|(a, b)| Op::Move(a, b)),
        2 => (full(), empty(), rights(), cap_data()).prop_map(|(a, b, r, d)| Op::Mutate(a, b, r, d)),
        2 => (full(), steps()).prop_map(|(a, n)| Op::Delete(a, n)),
        1 => (full(), steps()).prop_map(|(a, n)| Op::Revoke(a, n)),
        4 => (untyped, request(), dest_cnode, offset)
            .prop_map(|(untyped, request, dest, offset)| Op::Retype { untyped, request, dest, offset }),
        2 => (0..cores, full()).prop_map(|(core, a)| Op::Lookup(core, a)),
    ]
}

/// The slot `target` names now, or why it names none.
fn pick(fx: &Fixture, target: &Target) -> Result<(Addr, SlotRef), Error> {
    let (n, wanted): (u16, fn(&Cap) -> bool) = match *target {
        Target::Raw(a) => return fx.resolve(a.cptr, a.depth).map(|at| (a, at)),
        Target::Full(n) => (n, |c| !c.is_null()),
        Target::Empty(n) => (n, |c| c.is_null()),
        Target::Untyped(n) => (n, |c| c.kind() == CapType::Untyped),
        Target::CNode(n) => (n, |c| c.kind() == CapType::CNode),
    };
    let matching: Vec<(Addr, SlotRef)> = reachable(fx)
        .into_iter()
        .filter_map(|a| fx.resolve(a.cptr, a.depth).ok().map(|at| (a, at)))
        .filter(|(_, at)| wanted(&fx.cap(*at)))
        .collect();
    let len = matching.len().max(1);
    matching.get(usize::from(n) % len).copied().ok_or(Error::InvalidCapability)
}

/// The slot `target` names now.
pub fn pick_slot(fx: &Fixture, target: &Target) -> Result<SlotRef, Error> {
    pick(fx, target).map(|(_, at)| at)
}

/// Runs up to `limit` steps of a stepped operation.
fn steps(
    store: &mut SimStore,
    limit: u16,
    mut step: impl FnMut(&mut SimStore) -> Result<Step, Error>,
) -> Result<Vec<Destroyed>, Error> {
    let mut destroyed = Vec::new();
    for _ in 0..limit {
        let outcome = step(store)?;
        destroyed.extend(outcome.destroyed);
        if outcome.done {
            break;
        }
    }
    Ok(destroyed)
}

/// Applies `op` as the kernel would after resolving its pointers (uncached).
pub fn apply(fx: &mut Fixture, caches: &mut [LookupCache], op: &Op) -> Result<Vec<Destroyed>, Error> {
    let at = |fx: &Fixture, t: &Target| pick(fx, t).map(|(_, at)| at);
    let rights = |bits: &u8| Rights::from_bits_truncate(*bits);
    let none = |r: Result<(), Error>| r.map(|()| Vec::new());
    match op {
        Op::Copy(a, b) => {
            let (a, b) = (at(fx, a)?, at(fx, b)?);
            none(cnode::copy(&mut fx.store, a, b))
        }
        Op::Mint(a, b, r, data) => {
            let (a, b) = (at(fx, a)?, at(fx, b)?);
            none(cnode::mint(&mut fx.store, a, b, rights(r), *data))
        }
        Op::Move(a, b) => {
            let (a, b) = (at(fx, a)?, at(fx, b)?);
            none(cnode::move_cap(&mut fx.store, a, b))
        }
        Op::Mutate(a, b, r, data) => {
            let (a, b) = (at(fx, a)?, at(fx, b)?);
            none(cnode::mutate(&mut fx.store, a, b, rights(r), *data))
        }
        Op::Delete(a, limit) => {
            let a = at(fx, a)?;
            steps(&mut fx.store, *limit, |s| cnode::delete_step(s, a))
        }
        Op::Revoke(a, limit) => {
            let a = at(fx, a)?;
            steps(&mut fx.store, *limit, |s| cnode::revoke_step(s, a))
        }
        Op::Retype { untyped, request, dest, offset } => {
            let (untyped, dest) = (at(fx, untyped)?, at(fx, dest)?);
            none(retype(&mut fx.store, untyped, *request, dest, *offset))
        }
        Op::Lookup(core, target) => {
            let (a, _) = pick(fx, target)?;
            let root = fx.root();
            let cache = caches.get_mut(*core).expect("core index in range");
            let cached = cache.lookup(&fx.store, &root, a.cptr, a.depth);
            assert_eq!(cached, fx.resolve(a.cptr, a.depth), "cached lookup disagrees");
            cached.map(|_| Vec::new())
        }
    }
}

/// Checks that every core's cache agrees with a fresh walk on every pointer in
/// `seen` (pointers that resolved at some point of the run, so also ones that stopped
/// resolving), after adding the ones that resolve now.
pub fn check_caches(fx: &Fixture, caches: &mut [LookupCache], seen: &mut BTreeSet<Addr>) {
    seen.extend(reachable(fx));
    let root = fx.root();
    for (core, cache) in caches.iter_mut().enumerate() {
        for a in seen.iter() {
            let cached = cache.lookup(&fx.store, &root, a.cptr, a.depth);
            assert_eq!(cached, fx.resolve(a.cptr, a.depth), "core {core}: stale lookup of {a:?}");
        }
    }
}
