//! The capability derivation tree (CDT), stored in the slots themselves.
//!
//! As in seL4's mapping database, the tree is kept as a doubly-linked list of slots
//! in pre-order (each capability follows the one it was derived from), and who is
//! whose parent is computed from the capabilities rather than stored:
//!
//! - An untyped capability is the parent of every later capability whose memory lies
//!   inside its region (the objects retyped from it, and their copies); IRQ control
//!   likewise of the IRQ handler capabilities it issued.
//! - A revocable capability to an object (the one retype made, or a mint that added a
//!   badge) is the parent of every later capability to the same object; a badged one
//!   only of capabilities with the same badge that did not start a badge of their own.
//! - Copies are not revocable: they have no children.
//!
//! Descendants of a slot are the run of slots after it that it is a parent of. Because
//! parenthood is computed, deleting a capability just unlinks it: its children stay
//! descendants of its parent without being touched.
//!
//! Invariants:
//! - A slot is linked if and only if it holds a capability; `prev`/`next` of linked
//!   slots are mutual.
//! - All capabilities to one object are contiguous in their list, so a capability is
//!   the last one to its object exactly when neither neighbour refers to it.
//! - Every capability to an object in an untyped region follows that untyped's
//!   capability, within the run of its descendants.
//! - Every write that puts a CNode (or zombie) capability into a slot or takes one out
//!   advances the store's generation, after the write.

use crate::cap::Cap;
use crate::object::{CapType, ObjectStore, SlotRef};

/// One capability slot: the capability and its place in the derivation tree.
/// All zero (`Default`) is the empty slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Slot {
    cap: Cap,
    prev: Option<SlotRef>,
    next: Option<SlotRef>,
    /// May have children (see the module doc).
    revocable: bool,
    /// A mint that gave an endpoint or notification its badge: the root of that
    /// badge's subtree.
    first_badged: bool,
}

impl Slot {
    /// The capability held.
    pub const fn cap(&self) -> Cap {
        self.cap
    }

    /// True if the slot holds no capability.
    pub const fn is_empty(&self) -> bool {
        self.cap.is_null()
    }

    /// The previous slot in derivation order.
    pub const fn prev(&self) -> Option<SlotRef> {
        self.prev
    }

    /// The next slot in derivation order.
    pub const fn next(&self) -> Option<SlotRef> {
        self.next
    }

    /// The same capability and flags, linked to nothing: what a reader that must not
    /// rely on the links gets (the kernel's read sections: `ReadStore`).
    pub const fn without_links(self) -> Self {
        Self { prev: None, next: None, ..self }
    }

    /// True if this capability can have children.
    pub const fn is_revocable(&self) -> bool {
        self.revocable
    }

    /// True if `self` is the parent of `child`, which follows it in the list.
    pub fn is_parent_of(&self, child: &Slot) -> bool {
        if !self.revocable || child.is_empty() {
            return false;
        }
        if self.cap.kind() == CapType::IrqControl {
            return child.cap.kind() == CapType::IrqHandler;
        }
        if self.cap.kind() == CapType::Untyped {
            return match (self.cap.memory(), child.cap.memory()) {
                (Some((start, end)), Some((child_start, child_end))) => {
                    start <= child_start && child_end <= end
                }
                _ => false,
            };
        }
        let badged =
            matches!(self.cap.kind(), CapType::Endpoint | CapType::Notification) && self.cap.badge() != 0;
        self.cap.same_object(&child.cap)
            && (!badged || (self.cap.badge() == child.cap.badge() && !child.first_badged))
    }
}

fn changes_cspace(cap: &Cap) -> bool {
    matches!(cap.kind(), CapType::CNode | CapType::Zombie)
}

/// Writes a slot, advancing the generation if a CNode capability came or went.
fn write<S: ObjectStore>(store: &mut S, at: SlotRef, slot: Slot) {
    let old = store.slot(at).cap;
    store.set_slot(at, slot);
    if old != slot.cap && (changes_cspace(&old) || changes_cspace(&slot.cap)) {
        store.bump_generation();
    }
}

fn set_next<S: ObjectStore>(store: &mut S, at: Option<SlotRef>, next: Option<SlotRef>) {
    if let Some(at) = at {
        let slot = Slot { next, ..store.slot(at) };
        store.set_links(at, slot);
    }
}

fn set_prev<S: ObjectStore>(store: &mut S, at: Option<SlotRef>, prev: Option<SlotRef>) {
    if let Some(at) = at {
        let slot = Slot { prev, ..store.slot(at) };
        store.set_links(at, slot);
    }
}

/// Replaces the capability in a linked slot, keeping its place in the tree.
pub(crate) fn set_cap<S: ObjectStore>(store: &mut S, at: SlotRef, cap: Cap) {
    let slot = store.slot(at);
    write(store, at, Slot { cap, ..slot });
}

/// Puts `cap` into the empty slot `dest` as a root of its own tree (boot only).
pub(crate) fn insert_root<S: ObjectStore>(store: &mut S, dest: SlotRef, cap: Cap) {
    let slot = Slot { cap, prev: None, next: None, revocable: true, first_badged: false };
    write(store, dest, slot);
}

/// Puts `cap` into the empty slot `dest`, right after `parent` in the list.
pub(crate) fn insert_after<S: ObjectStore>(
    store: &mut S,
    parent: SlotRef,
    dest: SlotRef,
    cap: Cap,
    revocable: bool,
    first_badged: bool,
) {
    let next = store.slot(parent).next;
    write(store, dest, Slot { cap, prev: Some(parent), next, revocable, first_badged });
    set_prev(store, next, Some(dest));
    set_next(store, Some(parent), Some(dest));
}

/// Empties a slot and takes it out of its list.
pub(crate) fn unlink<S: ObjectStore>(store: &mut S, at: SlotRef) {
    let slot = store.slot(at);
    set_next(store, slot.prev, slot.next);
    set_prev(store, slot.next, slot.prev);
    write(store, at, Slot::default());
}

/// Moves the capability in `from` to the empty slot `to`, keeping its place in the
/// tree, with `cap` in place of the old capability; `badged` marks it as starting a
/// badge of its own.
pub(crate) fn relocate<S: ObjectStore>(store: &mut S, from: SlotRef, to: SlotRef, cap: Cap, badged: bool) {
    let slot = store.slot(from);
    let first_badged = slot.first_badged || badged;
    write(store, to, Slot { cap, first_badged, ..slot });
    set_next(store, slot.prev, Some(to));
    set_prev(store, slot.next, Some(to));
    write(store, from, Slot::default());
}

/// Exchanges the contents of two slots, each capability keeping its place in the
/// tree (so the list order of capabilities is unchanged). Either may be empty.
pub(crate) fn swap<S: ObjectStore>(store: &mut S, a: SlotRef, b: SlotRef) {
    if a == b {
        return;
    }
    let renamed = |link: Option<SlotRef>| match link {
        Some(x) if x == a => Some(b),
        Some(x) if x == b => Some(a),
        other => other,
    };
    let (slot_a, slot_b) = (store.slot(a), store.slot(b));
    // Each neighbour outside {a, b} is fixed once, even if it borders both.
    let neighbours = [slot_a.prev, slot_a.next, slot_b.prev, slot_b.next];
    for (i, link) in neighbours.iter().enumerate() {
        let Some(n) = *link else { continue };
        let seen = neighbours.iter().take(i).any(|earlier| *earlier == Some(n));
        if n == a || n == b || seen {
            continue;
        }
        let slot = store.slot(n);
        store.set_links(n, Slot { prev: renamed(slot.prev), next: renamed(slot.next), ..slot });
    }
    let moved = |slot: Slot| Slot { prev: renamed(slot.prev), next: renamed(slot.next), ..slot };
    write(store, a, moved(slot_b));
    write(store, b, moved(slot_a));
}

/// True if the capability in `at` has at least one child.
pub fn has_children<S: ObjectStore>(store: &S, at: SlotRef) -> bool {
    let slot = store.slot(at);
    slot.next.is_some_and(|next| slot.is_parent_of(&store.slot(next)))
}

/// True if the capability in `at` is the only one left to its object.
pub fn is_final<S: ObjectStore>(store: &S, at: SlotRef) -> bool {
    let slot = store.slot(at);
    let shares = |link: Option<SlotRef>| link.is_some_and(|n| store.slot(n).cap.same_object(&slot.cap));
    !shares(slot.prev) && !shares(slot.next)
}
