//! CNode operations: copy, mint, move, mutate, delete and revoke.
//!
//! Every operation decodes first (reads only, returns the error with nothing
//! changed) and then commits in a step that cannot fail. Delete and revoke can be
//! long, so they are steps: each call does bounded work and says whether it is done;
//! the kernel loops, checking for pending interrupts between steps, and returns
//! `Preempted` to user space if it must stop (the call is restartable because all of
//! its progress lives in the slots).
//!
//! Deleting the last capability to a CNode must first empty the CNode. The capability
//! becomes a *zombie* (seL4's name), which keeps its place in the derivation tree and
//! counts the slots still to clear, from the top down, one per step. A slot that
//! holds the last capability to another CNode is not recursed into: that capability
//! becomes a zombie too and is swapped into slot 0 of its own CNode, where it stays,
//! still a descendant of its untyped, until that untyped is revoked (revoke clears it
//! like any zombie). Recursion depth is therefore one, whatever the CSpace shape, and
//! cycles (a CNode holding the last capability to itself, directly or not) end.
//!
//! Invariants:
//! - A CNode with a non-empty slot has a CNode or zombie capability somewhere (so its
//!   memory is not reused while it holds capabilities): a zombie only releases its
//!   CNode once every slot but its own is empty.
//! - A zombie is the only capability to its CNode, cannot be copied, minted, moved or
//!   mutated, and is not a CNode to the CSpace walk.

use ramen_abi::Error;

use crate::cap::{Cap, CapData, Rights};
use crate::cdt;
use crate::object::{CapType, Destroyed, ObjectStore, PhysAddr, SlotRef};

/// What one step of a long operation did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use = "a destroyed object must be torn down by the kernel"]
pub struct Step {
    /// The operation is complete; calling it again would fail or do nothing.
    pub done: bool,
    /// An object whose last capability this step removed.
    pub destroyed: Option<Destroyed>,
}

impl Step {
    const fn more(destroyed: Option<Destroyed>) -> Self {
        Self { done: false, destroyed }
    }

    const fn done(destroyed: Option<Destroyed>) -> Self {
        Self { done: true, destroyed }
    }
}

/// Places a capability made at boot (untyped, IRQ control, the root CNode, ...) in an
/// empty slot, as the root of its own derivation tree.
///
/// Errors: `InvalidArgument` for the null capability or a zombie; `SlotOccupied`.
pub fn insert_initial<S: ObjectStore>(store: &mut S, dest: SlotRef, cap: Cap) -> Result<(), Error> {
    if matches!(cap.kind(), CapType::Null | CapType::Zombie) {
        return Err(Error::InvalidArgument);
    }
    if !store.slot(dest).is_empty() {
        return Err(Error::SlotOccupied);
    }
    cdt::insert_root(store, dest, cap);
    Ok(())
}

/// The capability in `src`, if it may be copied. Untyped capabilities are never
/// copied (their watermark lives in the capability, so two copies could hand out the
/// same memory); retype makes child untypeds instead. IRQ control and reply
/// capabilities are unique by design.
fn derivable<S: ObjectStore>(store: &S, src: SlotRef) -> Result<Cap, Error> {
    let cap = store.slot(src).cap();
    match cap.kind() {
        CapType::Null => Err(Error::SlotEmpty),
        CapType::Untyped | CapType::Zombie | CapType::IrqControl | CapType::Reply => {
            Err(Error::IllegalOperation)
        }
        _ => Ok(cap),
    }
}

/// The capability in `src`, if it may be moved to the slot `dest`.
fn movable<S: ObjectStore>(store: &S, src: SlotRef, dest: SlotRef) -> Result<Cap, Error> {
    let cap = store.slot(src).cap();
    match cap.kind() {
        CapType::Null => return Err(Error::SlotEmpty),
        // A mapped frame's capability stays where it is until unmapped: emptying a
        // slot that held one is how the kernel knows to tear the mapping down.
        CapType::Zombie => return Err(Error::IllegalOperation),
        _ if cap.mapping().is_some() => return Err(Error::IllegalOperation),
        _ => {}
    }
    if !store.slot(dest).is_empty() {
        return Err(Error::SlotOccupied);
    }
    Ok(cap)
}

/// Records where the frame capability in `at` is mapped, or the page-table
/// capability installed (`None`: unmapped).
///
/// Errors: `SlotEmpty`; `WrongType` (not a frame or a table below the top level);
/// `IllegalOperation` (recording a mapping on a capability that already has one).
pub fn record_mapping<S: ObjectStore>(
    store: &mut S,
    at: SlotRef,
    mapping: Option<(PhysAddr, u64)>,
) -> Result<(), Error> {
    let cap = store.slot(at).cap();
    match cap.kind() {
        CapType::Null => return Err(Error::SlotEmpty),
        _ if cap.records_mapping() => {}
        _ => return Err(Error::WrongType),
    }
    if mapping.is_some() && cap.mapping().is_some() {
        return Err(Error::IllegalOperation);
    }
    cdt::set_cap(store, at, cap.with_mapping(mapping));
    Ok(())
}

/// Copies the capability in `src` into the empty slot `dest`, as its child.
///
/// Errors: `SlotEmpty` (src), `IllegalOperation` (untyped, zombie, IRQ control,
/// reply), `SlotOccupied` (dest).
pub fn copy<S: ObjectStore>(store: &mut S, src: SlotRef, dest: SlotRef) -> Result<(), Error> {
    let rights = store.slot(src).cap().rights();
    mint(store, src, dest, rights, CapData::Keep)
}

/// Copies the capability in `src` into `dest` with `rights` (a subset of its own)
/// and `data`: a badge for an unbadged endpoint or notification (the copy then
/// starts a badge subtree that can be revoked on its own), or a guard for a CNode.
///
/// Errors: as [`copy`], and `InsufficientRights` (rights the source lacks),
/// `InvalidArgument` (a zero badge, a badge on a badged or non-badgeable capability, a
/// guard on a non-CNode), `RangeError` (a guard that does not fit).
pub fn mint<S: ObjectStore>(
    store: &mut S,
    src: SlotRef,
    dest: SlotRef,
    rights: Rights,
    data: CapData,
) -> Result<(), Error> {
    let cap = derivable(store, src)?;
    if !store.slot(dest).is_empty() {
        return Err(Error::SlotOccupied);
    }
    cap.check_derive(rights, data)?;
    let badged = matches!(data, CapData::Badge(_));
    cdt::insert_after(store, src, dest, cap.derive(rights, data), badged, badged);
    Ok(())
}

/// Moves the capability in `src` to the empty slot `dest`; it keeps its place in the
/// derivation tree.
///
/// Errors: `SlotEmpty` (src), `IllegalOperation` (zombie), `SlotOccupied` (dest,
/// including `dest == src`).
pub fn move_cap<S: ObjectStore>(store: &mut S, src: SlotRef, dest: SlotRef) -> Result<(), Error> {
    let cap = movable(store, src, dest)?;
    cdt::relocate(store, src, dest, cap, false);
    Ok(())
}

/// Moves the capability in `src` to `dest` with `rights` (a subset of its own) and
/// `data`: a badge for an unbadged endpoint or notification, or a guard for a CNode.
/// A capability badged this way keeps its place in the tree but starts a badge of its
/// own (revoking another capability with the same badge does not reach it);
/// capabilities copied from it before are no longer its children.
///
/// Errors: as [`move_cap`], and `InsufficientRights`, `InvalidArgument` (a zero
/// badge, a badge on a badged or non-badgeable capability, a guard on a non-CNode),
/// `RangeError` (a guard that does not fit).
pub fn mutate<S: ObjectStore>(
    store: &mut S,
    src: SlotRef,
    dest: SlotRef,
    rights: Rights,
    data: CapData,
) -> Result<(), Error> {
    let cap = movable(store, src, dest)?;
    cap.check_derive(rights, data)?;
    let badged = matches!(data, CapData::Badge(_));
    cdt::relocate(store, src, dest, cap.derive(rights, data), badged);
    Ok(())
}

/// One step of deleting the capability in `at`. Call until `done`.
///
/// Deleting the last capability to an object destroys it: the step reports it in
/// [`Step::destroyed`]. Deleting a capability with children leaves them in place
/// (they become descendants of its parent).
///
/// Errors: `SlotEmpty` (nothing to delete, which is what a second delete returns).
pub fn delete_step<S: ObjectStore>(store: &mut S, at: SlotRef) -> Result<Step, Error> {
    delete_step_keeping(store, at, None)
}

/// [`delete_step`], where `revoking` is the slot a revoke works from: clearing a CNode
/// never moves that capability out of its slot (see [`clear_zombie_slot`]).
fn delete_step_keeping<S: ObjectStore>(
    store: &mut S,
    at: SlotRef,
    revoking: Option<SlotRef>,
) -> Result<Step, Error> {
    let cap = store.slot(at).cap();
    if !cap.is_null() {
        store.may_delete(&cap, cdt::is_final(store, at))?;
    }
    Ok(match cap.kind() {
        CapType::Null => return Err(Error::SlotEmpty),
        CapType::CNode if cdt::is_final(store, at) => {
            cdt::set_cap(store, at, cap.into_zombie());
            Step::more(None)
        }
        CapType::Zombie => clear_zombie_slot(store, at, cap, revoking),
        CapType::Thread if cdt::is_final(store, at) => clear_thread_slot(store, at, cap),
        _ => Step::done(remove(store, at)),
    })
}

/// One step of deleting a thread's last capability, in `at`: the capability in the
/// thread's own CSpace-root slot leaves the tree first. A copy is simply removed; the
/// last capability to its object trades places with the thread's (each keeping its
/// place in the tree) and the thread goes from its own slot, so that capability
/// continues the delete from `at` (a CNode there becomes a zombie like any other).
/// Nothing recurses, whatever the slots hold. (Regression: the thread's memory was
/// freed with its CSpace-root slot still linked to its neighbours.)
fn clear_thread_slot<S: ObjectStore>(store: &mut S, at: SlotRef, cap: Cap) -> Step {
    let Some(inner) = store.thread_slot(cap.addr()).filter(|inner| *inner != at) else {
        return Step::done(remove(store, at));
    };
    if store.slot(inner).is_empty() {
        return Step::done(remove(store, at));
    }
    if !cdt::is_final(store, inner) {
        return Step::more(remove(store, inner));
    }
    cdt::swap(store, at, inner);
    Step::more(remove(store, inner))
}

/// One step of revoking the capability in `at`: deleting its descendants, most
/// recently derived first. Call until `done`. The capability itself stays, unless it
/// sat in a CNode made from its own untyped memory: then the revoke deletes it and
/// stops there. Revoking an untyped capability lets its memory be retyped from the
/// start again.
///
/// Errors: `SlotEmpty`.
pub fn revoke_step<S: ObjectStore>(store: &mut S, at: SlotRef) -> Result<Step, Error> {
    let slot = store.slot(at);
    if slot.is_empty() {
        return Err(Error::SlotEmpty);
    }
    match slot.next() {
        Some(child) if slot.is_parent_of(&store.slot(child)) => {
            let step = delete_step_keeping(store, child, Some(at))?;
            // If `at` lay in a CNode the step destroyed, there is nothing left to
            // revoke from (seL4 behaves the same): done, not an error next time.
            let done = store.slot(at).is_empty();
            Ok(Step { done, destroyed: step.destroyed })
        }
        _ => Ok(Step::done(None)),
    }
}

/// Empties `at`, reporting the object destroyed if this was its last capability.
fn remove<S: ObjectStore>(store: &mut S, at: SlotRef) -> Option<Destroyed> {
    let cap = store.slot(at).cap();
    if cap.mapping().is_some() {
        store.remove_mapping(&cap);
    }
    let destroyed = if cdt::is_final(store, at) { teardown(&cap) } else { None };
    cdt::unlink(store, at);
    destroyed
}

/// What destroying the object of `cap` requires of the kernel.
fn teardown(cap: &Cap) -> Option<Destroyed> {
    let addr = cap.addr();
    Some(match cap.kind() {
        CapType::Thread => Destroyed::Thread(addr),
        CapType::Endpoint => Destroyed::Endpoint(addr),
        CapType::Notification => Destroyed::Notification(addr),
        CapType::Reply => Destroyed::Reply(addr),
        CapType::Frame4K | CapType::Frame2M => Destroyed::Frame { addr, size_bits: cap.size_bits() },
        kind @ (CapType::VSpace | CapType::Pdpt | CapType::PageDirectory | CapType::PageTable) => {
            Destroyed::PageTable { addr, kind }
        }
        CapType::CNode | CapType::Zombie => Destroyed::CNode(addr),
        CapType::IrqHandler => Destroyed::IrqHandler(cap.arg()),
        CapType::IoPort => {
            let [first_lo, first_hi, last_lo, last_hi, ..] = cap.arg().to_le_bytes();
            Destroyed::IoPort {
                first: u16::from_le_bytes([first_lo, first_hi]),
                last: u16::from_le_bytes([last_lo, last_hi]),
            }
        }
        CapType::Null
        | CapType::Untyped
        | CapType::IrqControl
        | CapType::SchedControl
        | CapType::DebugConsole
        | CapType::TraceControl => return None,
    })
}

/// One step of a zombie in `at`: clear the highest slot of its CNode still to clear.
///
/// `revoking` is the slot a revoke works from, if this step is part of one. Parking
/// a CNode swaps whatever is in its slot 0 out to be cleared; when that is the very
/// capability being revoked (an untyped kept in a CNode made from itself), it is
/// deleted in place instead, which ends the revoke as documented on [`revoke_step`].
/// (Regression: the swap moved the untyped away mid-revoke, the revoke then finished
/// on the parked zombie and the untyped kept its children.)
fn clear_zombie_slot<S: ObjectStore>(
    store: &mut S,
    at: SlotRef,
    zombie: Cap,
    revoking: Option<SlotRef>,
) -> Step {
    let Some(index) = zombie.arg().checked_sub(1) else {
        // Every other slot is empty: the CNode goes with its last capability.
        return Step::done(remove(store, at));
    };
    let Some(target) = SlotRef::in_cnode(zombie.addr(), index) else {
        return Step::done(remove(store, at));
    };
    let cap = store.slot(target).cap();
    let parked_home = SlotRef::in_cnode(cap.addr(), 0);
    let destroyed = if target == at || cap.is_null() {
        None
    } else if (cap.kind() == CapType::Zombie && cap.arg() > 0
        || cap.kind() == CapType::CNode && cdt::is_final(store, target))
        && parked_home.is_some_and(|home| home != target)
    {
        if revoking.is_some() && parked_home == revoking {
            return Step::done(revoking.and_then(|home| remove(store, home)));
        }
        park(store, target, cap);
        // `target` now holds what was in slot 0 of the parked CNode: clear it next.
        return Step::more(None);
    } else {
        remove(store, target)
    };
    cdt::set_cap(store, at, zombie.with_remaining(index));
    Step::more(destroyed)
}

/// Turns the last capability to a CNode, found inside another CNode being cleared,
/// into a zombie in slot 0 of its own CNode.
fn park<S: ObjectStore>(store: &mut S, at: SlotRef, cap: Cap) {
    let zombie = if cap.kind() == CapType::Zombie { cap } else { cap.into_zombie() };
    cdt::set_cap(store, at, zombie);
    if let Some(home) = SlotRef::in_cnode(zombie.addr(), 0) {
        cdt::swap(store, at, home);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec;

    use super::*;
    use crate::object::PhysAddr;
    use crate::testing::{Fixture, SimStore, check_invariants, delete, revoke, slot_ref};
    use crate::untyped::{RetypeRequest, retype};

    /// Makes one object from the fixture's untyped into root slot `index`.
    fn make(fx: &mut Fixture, kind: CapType, size_bits: u8, index: u64) -> SlotRef {
        let (untyped, root) = (fx.root_slot(1), fx.root_slot(0));
        retype(&mut fx.store, untyped, RetypeRequest { kind, size_bits, count: 1 }, root, index).unwrap();
        fx.root_slot(index)
    }

    /// Asserts that `op` fails with `error` and changes nothing.
    fn rejects(fx: &mut Fixture, error: Error, op: impl FnOnce(&mut SimStore) -> Result<(), Error>) {
        let before = fx.store.clone();
        assert_eq!(op(&mut fx.store), Err(error));
        assert_eq!(fx.store, before, "a failed operation changed state");
    }

    /// Slot `index` of the radix-2 leaf CNode whose capability is in root slot `leaf`.
    fn leaf_slot(fx: &Fixture, leaf: u64, index: u64) -> SlotRef {
        fx.resolve(leaf << 2 | index, 6).unwrap()
    }

    #[test]
    fn a_mapped_frame_capability_stays_put_and_copies_start_unmapped() {
        let mut fx = Fixture::new();
        let frame = make(&mut fx, CapType::Frame4K, 0, 2);
        let mapping = Some((PhysAddr(0x20_0000), 0x40_0000));
        record_mapping(&mut fx.store, frame, mapping).unwrap();
        assert_eq!(fx.cap(frame).mapping(), mapping);
        rejects(&mut fx, Error::IllegalOperation, |s| record_mapping(s, frame, mapping));
        rejects(&mut fx, Error::IllegalOperation, |s| move_cap(s, frame, slot_ref(0x10_0000 + 5 * 64)));
        let copy_slot = fx.root_slot(3);
        copy(&mut fx.store, frame, copy_slot).unwrap();
        assert_eq!(fx.cap(copy_slot).mapping(), None, "a copy must not inherit the mapping");
        assert!(cdt::has_children(&fx.store, frame), "recording a mapping must not break derivation");
        let untyped = fx.root_slot(1);
        rejects(&mut fx, Error::WrongType, |s| record_mapping(s, untyped, None));
        record_mapping(&mut fx.store, frame, None).unwrap();
        let dest = fx.root_slot(4);
        move_cap(&mut fx.store, frame, dest).unwrap();
        check_invariants(&fx.store);
    }

    #[test]
    fn deleting_or_revoking_a_mapped_frame_removes_its_mapping() {
        let mut fx = Fixture::new();
        let frame = make(&mut fx, CapType::Frame4K, 0, 2);
        let other = make(&mut fx, CapType::Frame4K, 0, 3);
        let mapping = Some((PhysAddr(0x20_0000), 0x40_0000));
        record_mapping(&mut fx.store, frame, mapping).unwrap();
        record_mapping(&mut fx.store, other, Some((PhysAddr(0x20_0000), 0x40_1000))).unwrap();
        let copy_slot = fx.root_slot(4);
        copy(&mut fx.store, frame, copy_slot).unwrap();
        // An unmapped copy going away removes nothing.
        delete(&mut fx.store, copy_slot).unwrap();
        assert!(fx.store.unmapped.is_empty());
        delete(&mut fx.store, frame).unwrap();
        assert_eq!(fx.store.unmapped, vec![(PhysAddr(0x20_0000), 0x40_0000)]);
        // A revoke of the untyped reaches the other one.
        let untyped = fx.root_slot(1);
        revoke(&mut fx.store, untyped).unwrap();
        assert_eq!(fx.store.unmapped.len(), 2);
        check_invariants(&fx.store);
    }

    #[test]
    fn an_installed_table_records_where_and_is_unlinked_when_deleted() {
        let mut fx = Fixture::new();
        let table = make(&mut fx, CapType::PageTable, 0, 2);
        let installed = Some((PhysAddr(0x20_0000), 0x40_0000));
        record_mapping(&mut fx.store, table, installed).unwrap();
        assert_eq!(fx.cap(table).mapping(), installed);
        rejects(&mut fx, Error::IllegalOperation, |s| move_cap(s, table, slot_ref(0x10_0000 + 5 * 64)));
        let ep = make(&mut fx, CapType::Endpoint, 0, 3);
        rejects(&mut fx, Error::WrongType, |s| record_mapping(s, ep, installed));
        delete(&mut fx.store, table).unwrap();
        assert_eq!(fx.store.unmapped, vec![(PhysAddr(0x20_0000), 0x40_0000)]);
        check_invariants(&fx.store);
    }

    #[test]
    fn pinned_memory_refuses_delete_and_revoke_until_released() {
        let mut fx = Fixture::new();
        let frame = make(&mut fx, CapType::Frame4K, 0, 2);
        let addr = fx.cap(frame).addr();
        fx.store.pinned.push(addr);
        rejects(&mut fx, Error::Busy, |s| delete_step(s, frame).map(drop));
        // Revoking the untyped reaches the frame and stops there, the frame intact.
        let untyped = fx.root_slot(1);
        assert_eq!(revoke(&mut fx.store, untyped), Err(Error::Busy));
        assert!(!fx.cap(frame).is_null());
        check_invariants(&fx.store);
        fx.store.pinned.clear();
        assert!(revoke(&mut fx.store, untyped).is_ok());
        assert!(fx.cap(frame).is_null());
        check_invariants(&fx.store);
    }

    #[test]
    fn copy_makes_a_child_and_revoke_removes_it() {
        let mut fx = Fixture::new();
        let ep = make(&mut fx, CapType::Endpoint, 0, 2);
        let target = fx.root_slot(3);
        copy(&mut fx.store, ep, target).unwrap();
        assert!(fx.cap(ep).same_object(&fx.cap(fx.root_slot(3))));
        assert!(cdt::has_children(&fx.store, ep));
        assert_eq!(revoke(&mut fx.store, ep), Ok(vec![]));
        assert!(fx.cap(fx.root_slot(3)).is_null());
        assert!(!fx.cap(ep).is_null());
        check_invariants(&fx.store);
    }

    #[test]
    fn copy_rejects_bad_input_without_changing_state() {
        let mut fx = Fixture::new();
        let ep = make(&mut fx, CapType::Endpoint, 0, 2);
        let (empty, untyped) = (fx.root_slot(5), fx.root_slot(1));
        rejects(&mut fx, Error::SlotEmpty, |s| copy(s, empty, slot_ref(0x10_0100)));
        rejects(&mut fx, Error::SlotOccupied, |s| copy(s, ep, untyped));
        rejects(&mut fx, Error::SlotOccupied, |s| copy(s, ep, ep));
        rejects(&mut fx, Error::IllegalOperation, |s| copy(s, untyped, empty));
        let reply = make(&mut fx, CapType::Reply, 0, 6);
        rejects(&mut fx, Error::IllegalOperation, |s| copy(s, reply, empty));
        let target = fx.root_slot(7);
        insert_initial(&mut fx.store, target, Cap::irq_control()).unwrap();
        let irq_control = fx.root_slot(7);
        rejects(&mut fx, Error::IllegalOperation, |s| copy(s, irq_control, empty));
    }

    #[test]
    fn mint_reduces_rights_and_badges_once() {
        let mut fx = Fixture::new();
        let ep = make(&mut fx, CapType::Endpoint, 0, 2);
        let badged = fx.root_slot(3);
        mint(&mut fx.store, ep, badged, Rights::WRITE, CapData::Badge(5)).unwrap();
        assert_eq!((fx.cap(badged).badge(), fx.cap(badged).rights()), (5, Rights::WRITE));
        let (empty, frame) = (fx.root_slot(4), make(&mut fx, CapType::Frame4K, 0, 5));
        rejects(&mut fx, Error::InsufficientRights, |s| mint(s, badged, empty, Rights::READ, CapData::Keep));
        rejects(&mut fx, Error::InvalidArgument, |s| {
            mint(s, badged, empty, Rights::WRITE, CapData::Badge(6))
        });
        rejects(&mut fx, Error::InvalidArgument, |s| mint(s, ep, empty, Rights::WRITE, CapData::Badge(0)));
        rejects(&mut fx, Error::InvalidArgument, |s| mint(s, frame, empty, Rights::READ, CapData::Badge(1)));
        let guard = CapData::Guard { guard: 1, guard_bits: 1 };
        rejects(&mut fx, Error::InvalidArgument, |s| mint(s, frame, empty, Rights::READ, guard));
        let root = fx.root_slot(0);
        let wide = CapData::Guard { guard: 0, guard_bits: 61 };
        rejects(&mut fx, Error::RangeError, |s| mint(s, root, empty, Rights::all(), wide));
        rejects(&mut fx, Error::SlotOccupied, |s| mint(s, ep, frame, Rights::READ, CapData::Keep));
        rejects(&mut fx, Error::SlotEmpty, |s| mint(s, empty, frame, Rights::READ, CapData::Keep));
        check_invariants(&fx.store);
    }

    #[test]
    fn revoking_a_badge_removes_only_that_badge() {
        let mut fx = Fixture::new();
        let ep = make(&mut fx, CapType::Endpoint, 0, 2);
        let [badge5, badge5_copy, badge6, plain_copy] = [3, 4, 5, 6].map(|i| fx.root_slot(i));
        mint(&mut fx.store, ep, badge5, Rights::all(), CapData::Badge(5)).unwrap();
        copy(&mut fx.store, badge5, badge5_copy).unwrap();
        mint(&mut fx.store, ep, badge6, Rights::all(), CapData::Badge(6)).unwrap();
        copy(&mut fx.store, ep, plain_copy).unwrap();
        assert_eq!(revoke(&mut fx.store, badge5_copy), Ok(vec![]), "copies have no children");
        assert_eq!(revoke(&mut fx.store, badge5), Ok(vec![]));
        assert!(fx.cap(badge5_copy).is_null());
        assert!(!fx.cap(badge6).is_null() && !fx.cap(plain_copy).is_null());
        assert_eq!(revoke(&mut fx.store, ep), Ok(vec![]));
        assert!([badge5, badge6, plain_copy].iter().all(|at| fx.cap(*at).is_null()));
        assert!(!fx.cap(ep).is_null());
        check_invariants(&fx.store);
    }

    #[test]
    fn move_keeps_the_place_in_the_tree() {
        let mut fx = Fixture::new();
        let ep = make(&mut fx, CapType::Endpoint, 0, 2);
        let (copied, moved) = (fx.root_slot(3), fx.root_slot(4));
        copy(&mut fx.store, ep, copied).unwrap();
        move_cap(&mut fx.store, copied, moved).unwrap();
        assert!(fx.cap(copied).is_null());
        revoke(&mut fx.store, ep).unwrap();
        assert!(fx.cap(moved).is_null(), "the moved copy is still a child");
        let empty = fx.root_slot(5);
        rejects(&mut fx, Error::SlotEmpty, |s| move_cap(s, empty, moved));
        rejects(&mut fx, Error::SlotOccupied, |s| move_cap(s, ep, ep));
        check_invariants(&fx.store);
    }

    #[test]
    fn mutate_sets_a_guard_and_only_shrinks_rights() {
        let mut fx = Fixture::new();
        let leaf = make(&mut fx, CapType::CNode, 2, 3);
        let moved = fx.root_slot(4);
        mutate(&mut fx.store, leaf, moved, Rights::all(), CapData::Guard { guard: 1, guard_bits: 1 })
            .unwrap();
        assert_eq!(fx.cap(moved).guard(), (1, 1));
        assert!(fx.resolve(4 << 3 | 1 << 2 | 3, 7).is_ok());
        let ep = make(&mut fx, CapType::Endpoint, 0, 2);
        let weak = fx.root_slot(5);
        mutate(&mut fx.store, ep, weak, Rights::READ, CapData::Keep).unwrap();
        let empty = fx.root_slot(2);
        rejects(&mut fx, Error::InsufficientRights, |s| mutate(s, weak, empty, Rights::all(), CapData::Keep));
        rejects(&mut fx, Error::InvalidArgument, |s| mutate(s, weak, empty, Rights::READ, CapData::Badge(0)));
        let guard = CapData::Guard { guard: 0, guard_bits: 1 };
        rejects(&mut fx, Error::InvalidArgument, |s| mutate(s, weak, empty, Rights::READ, guard));
        rejects(&mut fx, Error::SlotOccupied, |s| mutate(s, weak, moved, Rights::READ, CapData::Keep));
        check_invariants(&fx.store);
    }

    #[test]
    fn a_badge_given_by_mutate_starts_its_own_subtree() {
        let mut fx = Fixture::new();
        let ep = make(&mut fx, CapType::Endpoint, 0, 2);
        let [copied, badged, minted, minted_copy] = [3, 4, 5, 6].map(|i| fx.root_slot(i));
        copy(&mut fx.store, ep, copied).unwrap();
        mutate(&mut fx.store, copied, badged, Rights::all(), CapData::Badge(7)).unwrap();
        assert_eq!(fx.cap(badged).badge(), 7);
        rejects(&mut fx, Error::InvalidArgument, |s| {
            mutate(s, badged, copied, Rights::all(), CapData::Badge(8))
        });
        mint(&mut fx.store, ep, minted, Rights::all(), CapData::Badge(7)).unwrap();
        copy(&mut fx.store, minted, minted_copy).unwrap();
        revoke(&mut fx.store, minted).unwrap();
        assert!(fx.cap(minted_copy).is_null());
        assert_eq!(fx.cap(badged).badge(), 7, "a badge of its own: not reached");
        revoke(&mut fx.store, ep).unwrap();
        assert!(fx.cap(badged).is_null());
        check_invariants(&fx.store);
    }

    #[test]
    fn deleting_the_last_capability_destroys_the_object() {
        let mut fx = Fixture::new();
        let ep = make(&mut fx, CapType::Endpoint, 0, 2);
        let addr = fx.cap(ep).addr();
        let target = fx.root_slot(3);
        copy(&mut fx.store, ep, target).unwrap();
        assert_eq!(delete(&mut fx.store, ep), Ok(vec![]));
        assert_eq!(delete(&mut fx.store, target), Ok(vec![Destroyed::Endpoint(addr)]));
        check_invariants(&fx.store);
    }

    #[test]
    fn a_second_delete_is_slot_empty() {
        let mut fx = Fixture::new();
        let ep = make(&mut fx, CapType::Notification, 0, 2);
        delete(&mut fx.store, ep).unwrap();
        rejects(&mut fx, Error::SlotEmpty, |s| delete_step(s, ep).map(|_| ()));
        rejects(&mut fx, Error::SlotEmpty, |s| revoke_step(s, ep).map(|_| ()));
    }

    #[test]
    fn deleting_a_parent_leaves_its_children_to_the_grandparent() {
        let mut fx = Fixture::new();
        let ep = make(&mut fx, CapType::Endpoint, 0, 2);
        let (badged, copied) = (fx.root_slot(3), fx.root_slot(4));
        mint(&mut fx.store, ep, badged, Rights::all(), CapData::Badge(9)).unwrap();
        copy(&mut fx.store, badged, copied).unwrap();
        assert_eq!(delete(&mut fx.store, badged), Ok(vec![]));
        assert!(!fx.cap(copied).is_null());
        assert_eq!(revoke(&mut fx.store, ep), Ok(vec![]));
        assert!(fx.cap(copied).is_null());
        check_invariants(&fx.store);
    }

    #[test]
    fn special_capabilities_report_their_teardown() {
        let mut fx = Fixture::new();
        let (irq, ports, sched) = (fx.root_slot(2), fx.root_slot(3), fx.root_slot(4));
        insert_initial(&mut fx.store, irq, Cap::irq_handler(11)).unwrap();
        insert_initial(&mut fx.store, ports, Cap::io_port(0x60, 0x64).unwrap()).unwrap();
        insert_initial(&mut fx.store, sched, Cap::sched_control(1)).unwrap();
        rejects(&mut fx, Error::SlotOccupied, |s| insert_initial(s, irq, Cap::irq_handler(12)));
        rejects(&mut fx, Error::InvalidArgument, |s| insert_initial(s, slot_ref(0x10_0300), Cap::NULL));
        assert_eq!(delete(&mut fx.store, irq), Ok(vec![Destroyed::IrqHandler(11)]));
        assert_eq!(delete(&mut fx.store, ports), Ok(vec![Destroyed::IoPort { first: 0x60, last: 0x64 }]));
        assert_eq!(delete(&mut fx.store, sched), Ok(vec![]));
        let console = fx.root_slot(5);
        insert_initial(&mut fx.store, console, Cap::debug_console()).unwrap();
        copy(&mut fx.store, console, irq).unwrap();
        assert_eq!(delete(&mut fx.store, console), Ok(vec![]));
    }

    #[test]
    fn deleting_a_cnode_first_clears_it_step_by_step() {
        let mut fx = Fixture::new();
        let leaf = make(&mut fx, CapType::CNode, 2, 3);
        let leaf_addr = fx.cap(leaf).addr();
        let (untyped, request) =
            (fx.root_slot(1), RetypeRequest { kind: CapType::Endpoint, size_bits: 0, count: 2 });
        retype(&mut fx.store, untyped, request, leaf, 1).unwrap();
        let eps = [1, 2].map(|i| fx.cap(leaf_slot(&fx, 3, i)).addr());
        // A zombie cannot be used: not copied, moved, or walked through.
        let first = delete_step(&mut fx.store, leaf).unwrap();
        assert_eq!(first, Step::more(None));
        assert_eq!(fx.cap(leaf).kind(), CapType::Zombie);
        let empty = fx.root_slot(4);
        rejects(&mut fx, Error::IllegalOperation, |s| copy(s, leaf, empty));
        rejects(&mut fx, Error::IllegalOperation, |s| move_cap(s, leaf, empty));
        assert_eq!(fx.resolve(3 << 2 | 1, 6), Err(Error::InvalidCapability));
        let destroyed = delete(&mut fx.store, leaf).unwrap();
        assert_eq!(
            destroyed,
            vec![Destroyed::Endpoint(eps[1]), Destroyed::Endpoint(eps[0]), Destroyed::CNode(leaf_addr)]
        );
        check_invariants(&fx.store);
    }

    #[test]
    fn a_cnode_holding_its_only_capability_is_reclaimed_by_revoke() {
        let mut fx = Fixture::new();
        let leaf = make(&mut fx, CapType::CNode, 2, 3);
        let leaf_addr = fx.cap(leaf).addr();
        let inner = leaf_slot(&fx, 3, 2);
        copy(&mut fx.store, leaf, inner).unwrap();
        let ep = make(&mut fx, CapType::Endpoint, 0, 4);
        let target = leaf_slot(&fx, 3, 0);
        move_cap(&mut fx.store, ep, target).unwrap();
        delete(&mut fx.store, leaf).unwrap();
        // Now unreachable: only its own slot 2 refers to the CNode.
        check_invariants(&fx.store);
        let target = fx.root_slot(1);
        let destroyed = revoke(&mut fx.store, target).unwrap();
        assert!(destroyed.contains(&Destroyed::CNode(leaf_addr)));
        assert_eq!(destroyed.iter().filter(|d| matches!(d, Destroyed::Endpoint(_))).count(), 1);
        assert!(!fx.store.slots.keys().any(|at| at.addr() >= leaf_addr && at.addr().0 < leaf_addr.0 + 256));
        check_invariants(&fx.store);
    }

    #[test]
    fn a_nested_last_cnode_is_parked_not_recursed_into() {
        let mut fx = Fixture::new();
        let outer = make(&mut fx, CapType::CNode, 2, 3);
        let untyped = fx.root_slot(1);
        let request = |kind, size_bits| RetypeRequest { kind, size_bits, count: 1 };
        retype(&mut fx.store, untyped, request(CapType::CNode, 2), outer, 1).unwrap();
        let inner_cap = leaf_slot(&fx, 3, 1);
        let inner_addr = fx.cap(inner_cap).addr();
        retype(&mut fx.store, untyped, request(CapType::Endpoint, 0), inner_cap, 3).unwrap();
        let ep = fx.cap(fx.resolve(3 << 4 | 1 << 2 | 3, 8).unwrap()).addr();

        assert_eq!(delete(&mut fx.store, outer).map(|d| d.len()), Ok(1), "only the outer CNode goes now");
        let parked = fx.store.slot(SlotRef::in_cnode(inner_addr, 0).unwrap()).cap();
        assert_eq!((parked.kind(), parked.addr()), (CapType::Zombie, inner_addr));
        check_invariants(&fx.store);

        let destroyed = revoke(&mut fx.store, untyped).unwrap();
        assert!(destroyed.contains(&Destroyed::Endpoint(ep)));
        assert!(destroyed.contains(&Destroyed::CNode(inner_addr)));
        check_invariants(&fx.store);
    }

    /// A thread's CSpace-root slot leaves the tree with the thread, whether it holds a
    /// copy (unlinked), the CNode's last capability (the CNode goes too), or the
    /// last capability to a CNode that holds the thread's last capability (a cycle).
    #[test]
    fn deleting_a_thread_empties_its_cspace_root_slot() {
        use crate::testing::SIM_THREAD_SLOT_OFFSET;
        for case in 0..3 {
            let mut fx = Fixture::new();
            let cnode = make(&mut fx, CapType::CNode, 2, 3);
            let cnode_addr = fx.cap(cnode).addr();
            let tcb = make(&mut fx, CapType::Thread, 0, 4);
            let tcb_addr = fx.cap(tcb).addr();
            let inner = SlotRef::new(tcb_addr.0 + SIM_THREAD_SLOT_OFFSET).unwrap();
            copy(&mut fx.store, cnode, inner).unwrap();
            let mut thread_cap = tcb;
            if case >= 1 {
                // The thread now holds the CNode's last capability.
                delete(&mut fx.store, cnode).unwrap();
            }
            if case == 2 {
                // ... and the CNode the thread's last capability.
                let in_cnode = SlotRef::in_cnode(cnode_addr, 2).unwrap();
                move_cap(&mut fx.store, tcb, in_cnode).unwrap();
                thread_cap = in_cnode;
                // Unreachable now but for the revoke of their untyped.
                let untyped = fx.root_slot(1);
                let destroyed = revoke(&mut fx.store, untyped).unwrap();
                assert!(destroyed.contains(&Destroyed::Thread(tcb_addr)), "case {case}");
                assert!(destroyed.contains(&Destroyed::CNode(cnode_addr)), "case {case}");
            } else {
                let destroyed = delete(&mut fx.store, thread_cap).unwrap();
                assert!(destroyed.contains(&Destroyed::Thread(tcb_addr)), "case {case}");
                assert_eq!(destroyed.contains(&Destroyed::CNode(cnode_addr)), case == 1, "case {case}");
            }
            assert!(
                fx.store.slot(inner).is_empty(),
                "case {case}: the thread's slot still holds a capability"
            );
            assert!(fx.store.slot(thread_cap).is_empty(), "case {case}");
            check_invariants(&fx.store);
        }
    }

    #[test]
    fn revoke_of_the_untyped_reaches_copies_anywhere() {
        let mut fx = Fixture::new();
        make(&mut fx, CapType::CNode, 2, 3);
        let tcb = make(&mut fx, CapType::Thread, 0, 4);
        let tcb_addr = fx.cap(tcb).addr();
        let target = leaf_slot(&fx, 3, 3);
        copy(&mut fx.store, tcb, target).unwrap();
        delete(&mut fx.store, tcb).unwrap();
        let target = fx.root_slot(1);
        let destroyed = revoke(&mut fx.store, target).unwrap();
        assert!(destroyed.contains(&Destroyed::Thread(tcb_addr)));
        assert!(fx.store.slots.keys().all(|at| at.addr() < PhysAddr(0x100_0000)));
        check_invariants(&fx.store);
    }

    /// Regression, found by `revoking_the_untyped_reclaims_everything` (this is its
    /// shrunk case): an untyped capability in slot 0 of a CNode made from its own
    /// memory, whose last capability is a zombie cleared during the untyped's revoke.
    /// `park` used to swap the untyped out of the slot the revoke works on.
    #[test]
    fn revoke_with_the_untyped_parked_away() {
        use crate::cap::CapData::Keep;
        use crate::testing::{Addr, Op, Target::*};
        let retype = |untyped, kind, size_bits, count, dest, offset| Op::Retype {
            untyped,
            request: RetypeRequest { kind, size_bits, count },
            dest,
            offset,
        };
        let ops = [
            retype(Untyped(0), CapType::Endpoint, 0, 1, CNode(0), 10),
            Op::Move(Full(3138), Empty(41726)),
            Op::Move(Full(23745), Empty(18676)),
            Op::Mutate(Full(32191), Empty(2404), 15, Keep),
            retype(Untyped(0), CapType::CNode, 2, 2, CNode(0), 0),
            Op::Move(Full(31288), Empty(31260)),
            retype(Untyped(0), CapType::Endpoint, 0, 3, CNode(29649), 1),
            Op::Revoke(Full(15193), 2),
            retype(Untyped(0), CapType::CNode, 1, 2, CNode(34402), 1),
            Op::Mint(Raw(Addr { cptr: 0, depth: 4 }), Empty(26266), 15, Keep),
            Op::Copy(Full(10145), Empty(17339)),
            Op::Mutate(Full(44440), Empty(37867), 15, Keep),
            Op::Move(Full(29111), Empty(272)),
            Op::Copy(Full(8238), Empty(256)),
            Op::Copy(Full(8013), Empty(3238)),
            Op::Delete(Full(32557), 65535),
        ];
        let mut fx = Fixture::new();
        let mut caches = [crate::lookup_cache::LookupCache::new(), crate::lookup_cache::LookupCache::new()];
        for op in &ops {
            let _ = crate::testing::apply(&mut fx, &mut caches, op);
        }
        let untyped = fx
            .store
            .slots
            .iter()
            .find(|(_, s)| s.cap().kind() == CapType::Untyped)
            .map(|(at, _)| *at)
            .unwrap();
        revoke(&mut fx.store, untyped).unwrap();
        check_invariants(&fx.store);
        // The revoke ended with the untyped itself deleted, as documented.
        assert!(fx.cap(untyped).is_null(), "the untyped was moved away instead of deleted");
    }

    const CORES: usize = 2;

    proptest::proptest! {
        #![proptest_config(crate::testing::config())]

        /// After random operations, revoking the untyped leaves no capability to any of
        /// its memory anywhere, and every failed operation on the way changed nothing.
        #[test]
        fn revoking_the_untyped_reclaims_everything(
            ops in proptest::collection::vec(crate::testing::op(CORES), 1..48),
        ) {
            let mut fx = Fixture::new();
            let mut caches = [crate::lookup_cache::LookupCache::new(), crate::lookup_cache::LookupCache::new()];
            for op in &ops {
                let before = fx.store.clone();
                if crate::testing::apply(&mut fx, &mut caches, op).is_err() {
                    proptest::prop_assert_eq!(&fx.store, &before);
                }
            }
            check_invariants(&fx.store);
            // The original untyped may have been moved; find it by its base.
            let untyped = fx.store.slots.iter().find(|(_, s)| {
                s.cap().kind() == CapType::Untyped && s.cap().addr() == PhysAddr(crate::testing::UNTYPED_BASE)
                    && s.cap().size_bits() == crate::testing::UNTYPED_BITS
            }).map(|(at, _)| *at);
            let Some(untyped) = untyped else { return Ok(()) };
            let destroyed = revoke(&mut fx.store, untyped).unwrap();
            check_invariants(&fx.store);
            for d in &destroyed {
                crate::testing::check_destroyed(&fx.store, d);
            }
            if fx.cap(untyped).is_null() {
                // It lived in a CNode made from itself, and went with it.
                return Ok(());
            }
            let region = crate::testing::UNTYPED_BASE..crate::testing::UNTYPED_BASE + (1 << crate::testing::UNTYPED_BITS);
            for (at, slot) in &fx.store.slots {
                let inside = slot.cap().memory().is_some_and(|(start, _)| region.contains(&start));
                proptest::prop_assert!(!inside || *at == untyped, "{:?} survived the revoke in {:?}", slot.cap(), at);
                proptest::prop_assert!(!region.contains(&at.addr().0), "a slot in reclaimed memory is in use");
            }
            proptest::prop_assert!(!cdt::has_children(&fx.store, untyped));
        }

        /// Revoking the capability retype made for an object leaves no other
        /// capability to that object.
        #[test]
        fn revoking_an_original_leaves_it_the_only_one(
            ops in proptest::collection::vec(crate::testing::op(CORES), 1..48),
            pick in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut fx = Fixture::new();
            let mut caches = [crate::lookup_cache::LookupCache::new(), crate::lookup_cache::LookupCache::new()];
            for op in &ops {
                let _ = crate::testing::apply(&mut fx, &mut caches, op);
            }
            let originals: std::vec::Vec<SlotRef> = fx.store.slots.iter()
                .filter(|(_, s)| s.is_revocable() && s.cap().badge() == 0
                    && !matches!(s.cap().kind(), CapType::Untyped | CapType::CNode | CapType::Zombie))
                .map(|(at, _)| *at)
                .collect();
            if originals.is_empty() {
                return Ok(());
            }
            let at = *pick.get(&originals);
            let cap = fx.cap(at);
            revoke(&mut fx.store, at).unwrap();
            check_invariants(&fx.store);
            let others = fx.store.slots.iter().filter(|(other, s)| **other != at && s.cap().same_object(&cap)).count();
            proptest::prop_assert_eq!(others, 0);
        }
    }
}
