//! Capability changes that take no global lock: copy, mint, move, mutate and delete
//! of endpoint, notification, thread and unmapped frame capabilities, when nothing
//! is destroyed ([`is_light`]).
//!
//! Those are the changes a server makes all day (a badged capability minted for each
//! client, deleted when the client goes; a frame shared and taken back). Everything they touch is a handful of
//! slots: the capability's own, the destination, and its neighbours in the derivation
//! list. So instead of the kernel's global write lock they lock exactly those slots
//! ([`SlotLocks`]: the kernel keeps a lock word beside each slot) and run inside the
//! kernel's read section, which already keeps every heavier change (anything that
//! destroys an object, changes a CNode capability, walks the tree or touches an
//! untyped) out while they run.
//!
//! Which slots, and why they are enough:
//! - The *subject* (the source of a copy, mint, move or mutate; the slot a delete
//!   empties) is locked first. While it is locked its `next` and `prev` links cannot
//!   change: every change that rewrites a slot's link locks that slot (inserting after
//!   `s` locks `s` and `s.next`; unlinking or moving `s` locks `s`, `s.prev` and
//!   `s.next`).
//! - Then the destination, which must be empty (an empty slot is on no list).
//! - Then the neighbours the change rewrites: `next` (every change), `prev` (move,
//!   mutate, delete). Neighbours are linked, so never empty, so never the destination.
//! - A delete that would remove an object's last capability is left to the locked path
//!   (it destroys the object); with both neighbours locked, whether it is the last is
//!   settled (all capabilities to an object are contiguous, and the neighbours cannot
//!   change).
//!
//! Every lock is a try: a change that finds one of its slots held releases what it
//! holds and reports [`Outcome::Busy`] (the caller retries, and after a few tries takes
//! the global lock). A change never waits for a slot while holding one, so two of them
//! cannot wait for each other. The operations themselves are [`crate::cnode`]'s own,
//! run on the locked slots only (the host tests check that every slot read or written
//! was locked first), so they decode before they write and fail with nothing changed.
//!
//! Errors are not this path's business: anything a change would refuse for a reason
//! other than its own checks (an empty source, an occupied destination, a capability of
//! another kind) goes to the locked path, which reports it, so the error codes are the
//! same whichever path runs.

use ramen_abi::Error;

use crate::cap::{Cap, CapData, Rights};
use crate::cdt;
use crate::cnode;
use crate::object::{CapType, ObjectStore, SlotRef};
use crate::untyped::RetypeRequest;

/// Locks on single slots, held by one change.
pub trait SlotLocks {
    /// Locks `at` for this change unless another holds it; true if it now holds it
    /// (also if it held it already).
    fn try_lock(&mut self, at: SlotRef) -> bool;

    /// Releases every slot this change holds, publishing what it wrote to them.
    fn unlock_all(&mut self);
}

/// A capability change, as the CNode invocation names it (the destination, or the
/// slot a delete empties, is passed beside it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Change {
    /// Copy the capability in `src`.
    Copy {
        /// Where the capability is.
        src: SlotRef,
    },
    /// Copy with fewer rights and maybe a badge (`badge` 0: keep it).
    Mint {
        /// Where the capability is.
        src: SlotRef,
        /// The rights the copy keeps.
        rights: Rights,
        /// The badge to give an unbadged capability; 0 keeps the badge.
        badge: u64,
    },
    /// Move the capability in `src`.
    Move {
        /// Where the capability is.
        src: SlotRef,
    },
    /// Move with fewer rights and maybe a badge.
    Mutate {
        /// Where the capability is.
        src: SlotRef,
        /// The rights it keeps.
        rights: Rights,
        /// The badge to give an unbadged capability; 0 keeps the badge.
        badge: u64,
    },
    /// Delete the capability in the slot.
    Delete,
    /// Retype from the untyped capability in `untyped` into slots `offset..` of the
    /// CNode whose capability is in the slot (see [`crate::untyped::retype`]); at most
    /// [`RETYPE_MAX_COUNT`] objects of [`RETYPE_MAX_BYTES`] in all.
    Retype {
        /// Where the untyped capability is.
        untyped: SlotRef,
        /// What to make.
        request: RetypeRequest,
        /// The first destination slot's index.
        offset: u64,
    },
}

/// Most objects one lock-free retype makes (each needs its slot held).
pub const RETYPE_MAX_COUNT: u64 = 4;
/// Most memory one lock-free retype hands out (and zeroes, inside a read section,
/// during which writers wait): more goes to the write lock.
pub const RETYPE_MAX_BYTES: u64 = 64 << 10;

impl Change {
    fn src(self) -> Option<SlotRef> {
        match self {
            Self::Copy { src } | Self::Mint { src, .. } | Self::Move { src } | Self::Mutate { src, .. } => {
                Some(src)
            }
            Self::Delete | Self::Retype { .. } => None,
        }
    }

    /// Whether the subject leaves its place in the list (so its `prev` changes too).
    fn moves(self) -> bool {
        matches!(self, Self::Move { .. } | Self::Mutate { .. } | Self::Delete)
    }
}

/// What [`change`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Done, or refused by the operation's own checks with nothing changed.
    Done(Result<(), Error>),
    /// Another change holds a slot this one needs: nothing changed; try again.
    Busy,
    /// Not a change this path makes (another kind of capability, an object's last
    /// capability, an error the locked path reports): nothing changed; take the
    /// global lock.
    Locked,
}

/// The capabilities whose changes this path makes: an endpoint's, a notification's,
/// a thread's, or an unmapped frame's. They carry no CSpace shape (a CNode's would
/// change what lookups resolve to), no watermark (an untyped's), no mapping (a mapped
/// frame's or a table's: deleting one unmaps, and the pins of a lease live there),
/// and a copy, a move or a delete that leaves the object another capability touches
/// nothing but slots. (Reply capabilities and IRQ control are never copied; IRQ
/// handlers, I/O ports and the rest are rare enough to leave to the write lock.)
pub const fn is_light(cap: &Cap) -> bool {
    match cap.kind() {
        CapType::Endpoint | CapType::Notification | CapType::Thread => true,
        CapType::Frame4K | CapType::Frame2M => cap.mapping().is_none(),
        _ => false,
    }
}

/// Makes `change` (on the slot `dest`) holding only the slots it touches; see the
/// module doc. Every lock it took is released before it returns.
pub fn change<S: ObjectStore + SlotLocks>(store: &mut S, dest: SlotRef, change: Change) -> Outcome {
    let outcome = locked(store, dest, change);
    store.unlock_all();
    outcome
}

fn locked<S: ObjectStore + SlotLocks>(store: &mut S, dest: SlotRef, change: Change) -> Outcome {
    if let Change::Retype { untyped, request, offset } = change {
        return retype(store, untyped, request, dest, offset);
    }
    let subject = change.src().unwrap_or(dest);
    if !store.try_lock(subject) {
        return Outcome::Busy;
    }
    let slot = store.slot(subject);
    if !is_light(&slot.cap()) {
        return Outcome::Locked;
    }
    if change.src().is_some() {
        if dest == subject {
            return Outcome::Locked;
        }
        if !store.try_lock(dest) {
            return Outcome::Busy;
        }
        if !store.slot(dest).is_empty() {
            return Outcome::Locked;
        }
    }
    let prev = if change.moves() { slot.prev() } else { None };
    for neighbour in [slot.next(), prev].into_iter().flatten() {
        if !store.try_lock(neighbour) {
            return Outcome::Busy;
        }
    }
    let badge = |badge: u64| if badge == 0 { CapData::Keep } else { CapData::Badge(badge) };
    Outcome::Done(match change {
        Change::Copy { src } => cnode::copy(store, src, dest),
        Change::Mint { src, rights, badge: b } => cnode::mint(store, src, dest, rights, badge(b)),
        Change::Move { src } => cnode::move_cap(store, src, dest),
        Change::Mutate { src, rights, badge: b } => cnode::mutate(store, src, dest, rights, badge(b)),
        Change::Retype { .. } => return Outcome::Locked,
        Change::Delete => {
            if cdt::is_final(store, dest) {
                return Outcome::Locked;
            }
            match cnode::delete_step(store, dest) {
                // One step: a capability that is not the last to its object is simply
                // taken out of its list.
                Ok(step) => {
                    debug_assert!(step.done && step.destroyed.is_none());
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    })
}

/// A retype holding the untyped's slot (its watermark, and whether it has children:
/// its `next`), that slot's `next` (each new capability goes in after it), the
/// destination CNode's slot (so its capability stays while the slots are found) and
/// every destination slot. Two retypes from one untyped exclude each other on its
/// slot; from different untypeds they run at once.
fn retype<S: ObjectStore + SlotLocks>(
    store: &mut S,
    untyped: SlotRef,
    request: RetypeRequest,
    dest_cnode: SlotRef,
    offset: u64,
) -> Outcome {
    if !store.try_lock(untyped) {
        return Outcome::Busy;
    }
    let region = store.slot(untyped);
    if region.cap().kind() != CapType::Untyped {
        return Outcome::Locked;
    }
    let small =
        request.kind.object_bits(request.size_bits).ok().and_then(|bits| {
            1u64.checked_shl(bits.into()).and_then(|bytes| bytes.checked_mul(request.count))
        });
    if request.count == 0 || request.count > RETYPE_MAX_COUNT || small.is_none_or(|b| b > RETYPE_MAX_BYTES) {
        return Outcome::Locked;
    }
    if !store.try_lock(dest_cnode) {
        return Outcome::Busy;
    }
    let cnode = store.slot(dest_cnode).cap();
    if cnode.kind() != CapType::CNode {
        return Outcome::Locked;
    }
    for i in 0..request.count {
        let radix = 1u64.checked_shl(cnode.size_bits().into()).unwrap_or(0);
        let Some(index) = offset.checked_add(i).filter(|index| *index < radix) else {
            return Outcome::Locked;
        };
        let Some(slot) = SlotRef::in_cnode(cnode.addr(), index) else {
            return Outcome::Locked;
        };
        if !store.try_lock(slot) {
            return Outcome::Busy;
        }
    }
    if let Some(next) = region.next()
        && !store.try_lock(next)
    {
        return Outcome::Busy;
    }
    Outcome::Done(crate::untyped::retype(store, untyped, request, dest_cnode, offset))
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::BTreeSet;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::cdt::Slot;
    use crate::object::ObjRef;
    use crate::testing::{self, Fixture, Op, SimStore, Target, check_invariants, config};
    use crate::untyped::{RetypeRequest, retype};

    /// A store whose every slot access must be to a slot the change locked; some
    /// slots are held by "another CPU" from the start.
    struct Locking {
        store: SimStore,
        held: BTreeSet<SlotRef>,
        foreign: BTreeSet<SlotRef>,
    }

    impl Locking {
        fn new(store: SimStore, foreign: BTreeSet<SlotRef>) -> Self {
            Self { store, held: BTreeSet::new(), foreign }
        }
    }

    impl SlotLocks for Locking {
        fn try_lock(&mut self, at: SlotRef) -> bool {
            if self.held.contains(&at) {
                return true;
            }
            if self.foreign.contains(&at) {
                return false;
            }
            self.held.insert(at);
            true
        }

        fn unlock_all(&mut self) {
            self.held.clear();
        }
    }

    impl ObjectStore for Locking {
        fn slot(&self, at: SlotRef) -> Slot {
            assert!(self.held.contains(&at), "slot {at:?} read without its lock");
            self.store.slot(at)
        }

        fn set_slot(&mut self, at: SlotRef, slot: Slot) {
            assert!(self.held.contains(&at), "slot {at:?} written without its lock");
            self.store.set_slot(at, slot);
        }

        fn init_object(&mut self, obj: ObjRef) {
            self.store.init_object(obj);
        }

        fn generation(&self) -> u64 {
            self.store.generation
        }

        fn version(&self, at: SlotRef) -> u64 {
            assert!(self.held.contains(&at), "slot {at:?} read without its lock");
            self.store.version(at)
        }

        fn bump_generation(&mut self) {
            self.store.bump_generation();
        }

        fn may_delete(&self, cap: &Cap, is_final: bool) -> Result<(), Error> {
            self.store.may_delete(cap, is_final)
        }

        fn remove_mapping(&mut self, _cap: &Cap) {
            panic!("a light change removed a mapping");
        }

        fn thread_slot(&self, thread: crate::object::PhysAddr) -> Option<SlotRef> {
            self.store.thread_slot(thread)
        }
    }

    /// The fixture with an endpoint in root slot 2, a notification in 3, a thread in
    /// 10 and a frame in 11.
    fn fixture() -> Fixture {
        let mut fx = Fixture::new();
        for (kind, index) in [
            (CapType::Endpoint, 2),
            (CapType::Notification, 3),
            (CapType::Thread, 10),
            (CapType::Frame4K, 11),
        ] {
            let (untyped, root) = (fx.root_slot(1), fx.root_slot(0));
            retype(&mut fx.store, untyped, RetypeRequest { kind, size_bits: 0, count: 1 }, root, index)
                .unwrap();
        }
        fx
    }

    fn light(store: &SimStore, dest: SlotRef, c: Change, foreign: &[SlotRef]) -> (Outcome, Locking) {
        let mut locking = Locking::new(store.clone(), foreign.iter().copied().collect());
        let outcome = change(&mut locking, dest, c);
        assert!(locking.held.is_empty(), "a change returned holding locks");
        (outcome, locking)
    }

    #[test]
    fn copies_mints_and_deletes_match_the_locked_operations() {
        let mut fx = fixture();
        let (ep, copy, badged) = (fx.root_slot(2), fx.root_slot(4), fx.root_slot(5));

        let (outcome, after) = light(&fx.store, copy, Change::Copy { src: ep }, &[]);
        assert_eq!(outcome, Outcome::Done(Ok(())));
        cnode::copy(&mut fx.store, ep, copy).unwrap();
        assert_eq!(after.store, fx.store);

        let mint = Change::Mint { src: ep, rights: Rights::WRITE, badge: 7 };
        let (outcome, after) = light(&fx.store, badged, mint, &[]);
        assert_eq!(outcome, Outcome::Done(Ok(())));
        cnode::mint(&mut fx.store, ep, badged, Rights::WRITE, CapData::Badge(7)).unwrap();
        assert_eq!(after.store, fx.store);
        assert_eq!(fx.cap(badged).badge(), 7);

        let (outcome, after) = light(&fx.store, copy, Change::Delete, &[]);
        assert_eq!(outcome, Outcome::Done(Ok(())));
        testing::delete(&mut fx.store, copy).unwrap();
        assert_eq!(after.store, fx.store);
        check_invariants(&fx.store);
    }

    #[test]
    fn moves_and_mutates_keep_the_place_in_the_tree() {
        let mut fx = fixture();
        let (ep, a, b) = (fx.root_slot(2), fx.root_slot(4), fx.root_slot(5));
        cnode::copy(&mut fx.store, ep, a).unwrap();

        let (outcome, after) = light(&fx.store, b, Change::Move { src: a }, &[]);
        assert_eq!(outcome, Outcome::Done(Ok(())));
        cnode::move_cap(&mut fx.store, a, b).unwrap();
        assert_eq!(after.store, fx.store);

        let mutate = Change::Mutate { src: b, rights: Rights::READ, badge: 3 };
        let (outcome, after) = light(&fx.store, a, mutate, &[]);
        assert_eq!(outcome, Outcome::Done(Ok(())));
        cnode::mutate(&mut fx.store, b, a, Rights::READ, CapData::Badge(3)).unwrap();
        assert_eq!(after.store, fx.store);
        check_invariants(&fx.store);
    }

    #[test]
    fn the_last_capability_other_kinds_and_bad_input_go_to_the_locked_path() {
        let fx = fixture();
        let (cnode, untyped, ep, empty) =
            (fx.root_slot(0), fx.root_slot(1), fx.root_slot(2), fx.root_slot(9));
        for (dest, c) in [
            // The endpoint's only capability: deleting it destroys the endpoint.
            (ep, Change::Delete),
            (empty, Change::Copy { src: cnode }),
            (empty, Change::Move { src: untyped }),
            (cnode, Change::Delete),
            // Errors the locked path reports: an empty source or slot, an occupied
            // destination, moving onto itself.
            (empty, Change::Delete),
            (ep, Change::Copy { src: empty }),
            (untyped, Change::Copy { src: ep }),
            (ep, Change::Move { src: ep }),
        ] {
            let (outcome, after) = light(&fx.store, dest, c, &[]);
            assert_eq!(outcome, Outcome::Locked, "{c:?} on {dest:?}");
            assert_eq!(after.store, fx.store, "{c:?} changed state");
        }
    }

    #[test]
    fn threads_and_unmapped_frames_are_light_a_mapped_frame_is_not() {
        let mut fx = fixture();
        let (thread, frame, a, b) = (fx.root_slot(10), fx.root_slot(11), fx.root_slot(4), fx.root_slot(5));
        for src in [thread, frame] {
            let (outcome, after) = light(&fx.store, a, Change::Copy { src }, &[]);
            assert_eq!(outcome, Outcome::Done(Ok(())));
            cnode::copy(&mut fx.store, src, a).unwrap();
            assert_eq!(after.store, fx.store);
            let (outcome, after) = light(&fx.store, a, Change::Delete, &[]);
            assert_eq!(outcome, Outcome::Done(Ok(())));
            testing::delete(&mut fx.store, a).unwrap();
            assert_eq!(after.store, fx.store);
        }
        // Mapped: its delete unmaps and its pins live in the page tables; a copy of
        // it (which starts unmapped) is light again.
        cnode::record_mapping(&mut fx.store, frame, Some((crate::object::PhysAddr(0x20_0000), 0x40_0000)))
            .unwrap();
        cnode::copy(&mut fx.store, frame, a).unwrap();
        for (dest, c) in
            [(b, Change::Copy { src: frame }), (frame, Change::Delete), (b, Change::Move { src: frame })]
        {
            let (outcome, after) = light(&fx.store, dest, c, &[]);
            assert_eq!(outcome, Outcome::Locked, "{c:?}");
            assert_eq!(after.store, fx.store);
        }
        let (outcome, _) = light(&fx.store, b, Change::Copy { src: a }, &[]);
        assert_eq!(outcome, Outcome::Done(Ok(())));
        check_invariants(&fx.store);
    }

    #[test]
    fn an_operation_s_own_checks_refuse_with_nothing_changed() {
        let mut fx = fixture();
        let (ep, a, b) = (fx.root_slot(2), fx.root_slot(4), fx.root_slot(5));
        cnode::mint(&mut fx.store, ep, a, Rights::all(), CapData::Badge(1)).unwrap();
        for (c, error) in [
            // Badging a badged capability.
            (Change::Mint { src: a, rights: Rights::all(), badge: 2 }, Error::InvalidArgument),
            (Change::Mutate { src: a, rights: Rights::all(), badge: 2 }, Error::InvalidArgument),
        ] {
            let (outcome, after) = light(&fx.store, b, c, &[]);
            assert_eq!(outcome, Outcome::Done(Err(error)), "{c:?}");
            assert_eq!(after.store, fx.store, "{c:?} changed state");
        }
    }

    #[test]
    fn a_slot_held_elsewhere_makes_it_busy_with_nothing_changed() {
        let mut fx = fixture();
        let (ep, a, b) = (fx.root_slot(2), fx.root_slot(4), fx.root_slot(5));
        cnode::copy(&mut fx.store, ep, a).unwrap();
        // a's neighbours: ep before it, nothing after. Each slot the move needs, held
        // by someone else, stops it.
        for held in [a, b, ep] {
            let (outcome, after) = light(&fx.store, b, Change::Move { src: a }, &[held]);
            assert_eq!(outcome, Outcome::Busy, "with {held:?} held");
            assert_eq!(after.store, fx.store);
        }
        // A copy from `a` does not touch `ep` (only what follows `a`).
        let (outcome, _) = light(&fx.store, b, Change::Copy { src: a }, &[ep]);
        assert_eq!(outcome, Outcome::Done(Ok(())));
    }

    #[test]
    fn small_retypes_match_the_locked_retype_and_exclude_each_other_per_untyped() {
        let mut fx = fixture();
        let (untyped, root) = (fx.root_slot(1), fx.root_slot(0));
        let two_endpoints = RetypeRequest { kind: CapType::Endpoint, size_bits: 0, count: 2 };
        let c = Change::Retype { untyped, request: two_endpoints, offset: 12 };
        let (outcome, after) = light(&fx.store, root, c, &[]);
        assert_eq!(outcome, Outcome::Done(Ok(())));
        retype(&mut fx.store, untyped, two_endpoints, root, 12).unwrap();
        assert_eq!(after.store, fx.store);
        assert_eq!(fx.cap(fx.root_slot(13)).kind(), CapType::Endpoint);
        // A CNode too (a new CSpace shape: the generation moves, as under the lock).
        let cnode = RetypeRequest { kind: CapType::CNode, size_bits: 2, count: 1 };
        let (outcome, after) =
            light(&fx.store, root, Change::Retype { untyped, request: cnode, offset: 14 }, &[]);
        assert_eq!(outcome, Outcome::Done(Ok(())));
        retype(&mut fx.store, untyped, cnode, root, 14).unwrap();
        assert_eq!(after.store, fx.store);
        check_invariants(&fx.store);
        // The untyped's slot held by another retype: busy, nothing changed.
        let one = RetypeRequest { count: 1, ..two_endpoints };
        let (outcome, after) =
            light(&fx.store, root, Change::Retype { untyped, request: one, offset: 15 }, &[untyped]);
        assert_eq!(outcome, Outcome::Busy);
        assert_eq!(after.store, fx.store);
        // Too many objects, or too much memory to zero in a read section: the lock.
        for request in [
            RetypeRequest { count: RETYPE_MAX_COUNT + 1, ..two_endpoints },
            RetypeRequest { kind: CapType::Untyped, size_bits: 17, count: 1 },
        ] {
            let (outcome, _) = light(&fx.store, root, Change::Retype { untyped, request, offset: 15 }, &[]);
            assert_eq!(outcome, Outcome::Locked, "{request:?}");
        }
        // Retype's own errors (it decodes before it writes), with nothing changed.
        let c = Change::Retype { untyped, request: one, offset: 13 };
        let (outcome, after) = light(&fx.store, root, c, &[]);
        assert_eq!(outcome, Outcome::Done(Err(Error::SlotOccupied)));
        assert_eq!(after.store, fx.store);
    }

    /// The light change `op` stands for, if it is one of the five.
    fn as_change(fx: &Fixture, op: &Op) -> Option<(SlotRef, Change)> {
        let at = |t: &Target| testing::pick_slot(fx, t).ok();
        let rights = |bits: u8| Rights::from_bits_truncate(bits);
        let badge = |data: &CapData| match *data {
            CapData::Keep => Some(0),
            CapData::Badge(b) => Some(b),
            CapData::Guard { .. } => None,
        };
        Some(match op {
            Op::Copy(a, b) => (at(b)?, Change::Copy { src: at(a)? }),
            Op::Mint(a, b, r, d) => {
                (at(b)?, Change::Mint { src: at(a)?, rights: rights(*r), badge: badge(d)? })
            }
            Op::Move(a, b) => (at(b)?, Change::Move { src: at(a)? }),
            Op::Mutate(a, b, r, d) => {
                (at(b)?, Change::Mutate { src: at(a)?, rights: rights(*r), badge: badge(d)? })
            }
            Op::Delete(a, _) => (at(a)?, Change::Delete),
            Op::Retype { untyped, request, dest, offset } => {
                (at(dest)?, Change::Retype { untyped: at(untyped)?, request: *request, offset: *offset })
            }
            _ => return None,
        })
    }

    proptest! {
        #![proptest_config(config())]

        /// Random operation sequences (retypes make endpoints and notifications, and
        /// CNodes to put their copies in): before each capability change, the light
        /// path runs on a copy of the state, with random slots held elsewhere. It
        /// touches only slots it locked, releases them all, and either leaves the state
        /// untouched (busy, or the locked path's case) or leaves exactly the state and
        /// result of the locked operation.
        #[test]
        fn light_changes_equal_the_locked_ones(
            ops in prop::collection::vec(testing::op(1), 1..60),
            held in prop::collection::vec(any::<u16>(), 0..3),
        ) {
            let mut fx = fixture();
            let mut caches = [crate::lookup_cache::LookupCache::new()];
            for op in &ops {
                if let Some((dest, c)) = as_change(&fx, op) {
                    let linked: Vec<SlotRef> = fx.store.slots.keys().copied().collect();
                    let foreign: Vec<SlotRef> = held
                        .iter()
                        .filter_map(|n| linked.get(usize::from(*n) % linked.len().max(1)).copied())
                        .collect();
                    let (outcome, after) = light(&fx.store, dest, c, &foreign);
                    let before = fx.store.clone();
                    let truth = testing::apply(&mut fx, &mut caches, op);
                    match outcome {
                        Outcome::Done(result) => {
                            prop_assert_eq!(result, truth.map(|d| { assert!(d.is_empty()); }));
                            prop_assert_eq!(&after.store, &fx.store);
                        }
                        Outcome::Busy | Outcome::Locked => prop_assert_eq!(&after.store, &before),
                    }
                } else {
                    let _ = testing::apply(&mut fx, &mut caches, op);
                }
                check_invariants(&fx.store);
            }
        }
    }
}
