//! Untyped memory and retype: the only way kernel objects come into being.
//!
//! An untyped capability covers `[base, base + 2^size_bits)` and carries a watermark:
//! the bytes from `base` already handed out. Retype places `count` objects of one
//! type at the first address at or above the watermark aligned to the object size,
//! puts a capability to each into consecutive empty slots of a CNode, and moves the
//! watermark past them. Each new capability is a child of the untyped in the
//! derivation tree, so revoking the untyped deletes every capability to anything made
//! from it, wherever it was copied.
//!
//! Invariants:
//! - Objects made from one untyped never overlap: the watermark only moves up, except
//!   when the untyped has no children left, which means every object made from it is
//!   gone (each capability to one is a descendant); then retype starts from `base`.
//! - Device untyped memory holds only frames and device untyped, never kernel state,
//!   and is never zeroed.
//! - Nothing here allocates: the objects' memory is the untyped's, and the slots are
//!   in a CNode the caller holds.

use ramen_abi::Error;

use crate::cap::{Cap, Rights};
use crate::cdt;
use crate::object::{CapType, MAX_RETYPE_COUNT, ObjRef, ObjectStore, PhysAddr, SlotRef};

/// What to make.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RetypeRequest {
    /// The object type.
    pub kind: CapType,
    /// Untyped: the child's size as a power of two; CNode: the radix; otherwise
    /// ignored.
    pub size_bits: u8,
    /// How many objects, 1 to [`MAX_RETYPE_COUNT`].
    pub count: u64,
}

/// Where the decoded retype will put its objects and capabilities.
struct Plan {
    untyped: Cap,
    first: u64,
    end: u64,
    object_bits: u8,
    cap_size_bits: u8,
    dest_cnode: PhysAddr,
}

/// Makes `request.count` objects from the untyped capability in `untyped`, with
/// capabilities in slots `offset..offset + count` of the CNode whose capability is
/// in `dest_cnode`.
///
/// Errors, with nothing changed:
/// - `SlotEmpty`: `untyped` or `dest_cnode` holds no capability.
/// - `WrongType`: `untyped` is not untyped memory, or `dest_cnode` not a CNode.
/// - `InsufficientRights`: the untyped capability lacks `WRITE`.
/// - `InvalidArgument`: a type retype cannot make, or a non-frame in device memory.
/// - `RangeError`: a size outside the type's limits, a count of 0 or above
///   [`MAX_RETYPE_COUNT`], or slots past the end of the CNode.
/// - `SlotOccupied`: a destination slot holds a capability.
/// - `NotEnoughMemory`: the objects do not fit above the watermark (including an
///   object larger than the whole untyped).
pub fn retype<S: ObjectStore>(
    store: &mut S,
    untyped: SlotRef,
    request: RetypeRequest,
    dest_cnode: SlotRef,
    offset: u64,
) -> Result<(), Error> {
    let plan = decode(store, untyped, request, dest_cnode, offset)?;
    for i in 0..request.count {
        // Decode proved every address and slot below exists; `continue` is unreachable.
        let Some(addr) = (i << plan.object_bits).checked_add(plan.first) else { continue };
        let Some(dest) = offset.checked_add(i).and_then(|index| SlotRef::in_cnode(plan.dest_cnode, index))
        else {
            continue;
        };
        let addr = PhysAddr(addr);
        if !plan.untyped.is_device() {
            store.init_object(ObjRef { addr, kind: request.kind, size_bits: plan.object_bits });
        }
        let cap = Cap::new_object(request.kind, addr, plan.cap_size_bits, plan.untyped.is_device());
        cdt::insert_after(store, untyped, dest, cap, true, false);
    }
    let used = plan.end.saturating_sub(plan.untyped.addr().0);
    cdt::set_cap(store, untyped, plan.untyped.with_watermark(used));
    Ok(())
}

fn decode<S: ObjectStore>(
    store: &S,
    untyped: SlotRef,
    request: RetypeRequest,
    dest_cnode: SlotRef,
    offset: u64,
) -> Result<Plan, Error> {
    let cap = store.slot(untyped).cap();
    match cap.kind() {
        CapType::Null => return Err(Error::SlotEmpty),
        CapType::Untyped => {}
        _ => return Err(Error::WrongType),
    }
    cap.require(Rights::WRITE)?;
    let object_bits = request.kind.object_bits(request.size_bits)?;
    if cap.is_device() && !request.kind.fits_device_memory() {
        return Err(Error::InvalidArgument);
    }
    if request.count == 0 || request.count > MAX_RETYPE_COUNT {
        return Err(Error::RangeError);
    }

    let cnode = store.slot(dest_cnode).cap();
    match cnode.kind() {
        // A capability argument naming an empty slot, as for every other invocation's
        // (`SlotEmpty` is for the slots an operation acts on).
        CapType::Null => return Err(Error::InvalidCapability),
        CapType::CNode => {}
        _ => return Err(Error::WrongType),
    }
    // Placing capabilities in a CNode writes it, as COPY or MINT into it does.
    cnode.require(Rights::WRITE)?;
    let end_slot = offset.checked_add(request.count).ok_or(Error::RangeError)?;
    if end_slot > 1u64.checked_shl(cnode.size_bits().into()).unwrap_or(0) {
        return Err(Error::RangeError);
    }
    for index in offset..end_slot {
        let slot = SlotRef::in_cnode(cnode.addr(), index).ok_or(Error::RangeError)?;
        if !store.slot(slot).is_empty() {
            return Err(Error::SlotOccupied);
        }
    }

    let base = cap.addr().0;
    let watermark = if cdt::has_children(store, untyped) { cap.watermark() } else { 0 };
    let align = 1u64.checked_shl(object_bits.into()).ok_or(Error::NotEnoughMemory)?;
    let first = base
        .checked_add(watermark)
        .and_then(|free| free.checked_next_multiple_of(align))
        .ok_or(Error::NotEnoughMemory)?;
    let end = align
        .checked_mul(request.count)
        .and_then(|bytes| first.checked_add(bytes))
        .ok_or(Error::NotEnoughMemory)?;
    let limit = 1u64.checked_shl(cap.size_bits().into()).and_then(|size| base.checked_add(size));
    if limit.is_none_or(|limit| end > limit) {
        return Err(Error::NotEnoughMemory);
    }
    let cap_size_bits = match request.kind {
        CapType::CNode | CapType::Untyped => request.size_bits,
        _ => object_bits,
    };
    Ok(Plan { untyped: cap, first, end, object_bits, cap_size_bits, dest_cnode: cnode.addr() })
}

#[cfg(test)]
mod tests {
    extern crate std;

    use proptest::prelude::Strategy;

    use super::*;
    use crate::cap::CapData;
    use crate::cnode::{delete_step, mutate};
    use crate::object::{ENDPOINT_BITS, FRAME_4K_BITS, SLOT_BYTES};
    use crate::testing::{Fixture, SimStore, UNTYPED_BASE, check_invariants, delete, revoke};

    fn request(kind: CapType, size_bits: u8, count: u64) -> RetypeRequest {
        RetypeRequest { kind, size_bits, count }
    }

    /// Retypes from the fixture's untyped into root slots `offset..`.
    fn make(fx: &mut Fixture, req: RetypeRequest, offset: u64) -> Result<(), Error> {
        let (untyped, root) = (fx.root_slot(1), fx.root_slot(0));
        retype(&mut fx.store, untyped, req, root, offset)
    }

    fn rejects(fx: &mut Fixture, error: Error, op: impl FnOnce(&mut SimStore) -> Result<(), Error>) {
        let before = fx.store.clone();
        assert_eq!(op(&mut fx.store), Err(error));
        assert_eq!(fx.store, before, "a failed retype changed state");
    }

    #[test]
    fn objects_are_aligned_consecutive_and_initialised() {
        let mut fx = Fixture::new();
        make(&mut fx, request(CapType::Endpoint, 0, 3), 2).unwrap();
        make(&mut fx, request(CapType::Frame4K, 0, 1), 5).unwrap();
        let addrs: std::vec::Vec<u64> = (2..6).map(|i| fx.cap(fx.root_slot(i)).addr().0).collect();
        let ep = 1 << ENDPOINT_BITS;
        assert_eq!(addrs, [UNTYPED_BASE, UNTYPED_BASE + ep, UNTYPED_BASE + 2 * ep, UNTYPED_BASE + 0x1000]);
        assert_eq!(fx.cap(fx.root_slot(1)).watermark(), 0x2000);
        assert_eq!(fx.store.initialised.len(), 4);
        assert_eq!(
            fx.store.initialised[3],
            ObjRef {
                addr: PhysAddr(UNTYPED_BASE + 0x1000),
                kind: CapType::Frame4K,
                size_bits: FRAME_4K_BITS
            }
        );
        check_invariants(&fx.store);
    }

    #[test]
    fn retype_rejects_bad_input_without_changing_state() {
        let mut fx = Fixture::new();
        make(&mut fx, request(CapType::Endpoint, 0, 1), 2).unwrap();
        let (untyped, root, ep, empty) = (fx.root_slot(1), fx.root_slot(0), fx.root_slot(2), fx.root_slot(3));
        let one = |kind| request(kind, 0, 1);
        rejects(&mut fx, Error::SlotEmpty, |s| retype(s, empty, one(CapType::Endpoint), root, 4));
        rejects(&mut fx, Error::WrongType, |s| retype(s, ep, one(CapType::Endpoint), root, 4));
        rejects(&mut fx, Error::InvalidArgument, |s| retype(s, untyped, one(CapType::Zombie), root, 4));
        rejects(&mut fx, Error::InvalidArgument, |s| retype(s, untyped, one(CapType::IrqHandler), root, 4));
        rejects(&mut fx, Error::RangeError, |s| retype(s, untyped, request(CapType::CNode, 0, 1), root, 4));
        rejects(&mut fx, Error::RangeError, |s| {
            retype(s, untyped, request(CapType::Untyped, 48, 1), root, 4)
        });
        rejects(&mut fx, Error::RangeError, |s| {
            retype(s, untyped, request(CapType::Endpoint, 0, 0), root, 4)
        });
        let too_many = request(CapType::Endpoint, 0, MAX_RETYPE_COUNT + 1);
        rejects(&mut fx, Error::RangeError, |s| retype(s, untyped, too_many, root, 0));
        rejects(&mut fx, Error::RangeError, |s| {
            retype(s, untyped, request(CapType::Endpoint, 0, 2), root, 15)
        });
        rejects(&mut fx, Error::RangeError, |s| retype(s, untyped, one(CapType::Endpoint), root, u64::MAX));
        rejects(&mut fx, Error::InvalidCapability, |s| retype(s, untyped, one(CapType::Endpoint), empty, 0));
        rejects(&mut fx, Error::WrongType, |s| retype(s, untyped, one(CapType::Endpoint), ep, 0));
        rejects(&mut fx, Error::SlotOccupied, |s| {
            retype(s, untyped, request(CapType::Endpoint, 0, 2), root, 1)
        });
        // Oversized: bigger than the whole untyped.
        rejects(&mut fx, Error::NotEnoughMemory, |s| {
            retype(s, untyped, request(CapType::Untyped, 21, 1), root, 4)
        });
    }

    #[test]
    fn retype_needs_write_rights() {
        let mut fx = Fixture::new();
        let (untyped, weak, root) = (fx.root_slot(1), fx.root_slot(2), fx.root_slot(0));
        mutate(&mut fx.store, untyped, weak, Rights::READ, CapData::Keep).unwrap();
        let one = request(CapType::Endpoint, 0, 1);
        rejects(&mut fx, Error::InsufficientRights, |s| retype(s, weak, one, root, 4));
    }

    /// Regression (found by a hostile user program): a retype into a CNode through a
    /// capability without the write right succeeded and created the object, where
    /// COPY, MINT, MOVE, DELETE and REVOKE through the same capability are refused.
    #[test]
    fn retype_needs_the_destination_cnodes_write_right() {
        let mut fx = Fixture::new();
        let (untyped, root, read_only) = (fx.root_slot(1), fx.root_slot(0), fx.root_slot(2));
        crate::cnode::mint(&mut fx.store, root, read_only, Rights::READ, CapData::Keep).unwrap();
        let one = request(CapType::Endpoint, 0, 1);
        rejects(&mut fx, Error::InsufficientRights, |s| retype(s, untyped, one, read_only, 4));
        // The same capability with the write right works.
        let writable = fx.root_slot(3);
        crate::cnode::mint(&mut fx.store, root, writable, Rights::READ | Rights::WRITE, CapData::Keep)
            .unwrap();
        retype(&mut fx.store, untyped, one, writable, 4).unwrap();
    }

    #[test]
    fn an_exhausted_untyped_says_so() {
        let mut fx = Fixture::new();
        make(&mut fx, request(CapType::Endpoint, 0, 1), 2).unwrap();
        // The next 512 KiB child must align to 512 KiB, which leaves room for one.
        make(&mut fx, request(CapType::Untyped, 19, 1), 3).unwrap();
        assert_eq!(fx.cap(fx.root_slot(3)).addr().0, UNTYPED_BASE + (1 << 19));
        let (untyped, root) = (fx.root_slot(1), fx.root_slot(0));
        rejects(&mut fx, Error::NotEnoughMemory, |s| {
            retype(s, untyped, request(CapType::Endpoint, 0, 1), root, 4)
        });
        check_invariants(&fx.store);
    }

    #[test]
    fn revoke_resets_the_watermark() {
        let mut fx = Fixture::new();
        make(&mut fx, request(CapType::Thread, 0, 2), 2).unwrap();
        let untyped = fx.root_slot(1);
        assert_eq!(revoke(&mut fx.store, untyped).map(|d| d.len()), Ok(2));
        make(&mut fx, request(CapType::Frame4K, 0, 1), 2).unwrap();
        assert_eq!(fx.cap(fx.root_slot(2)).addr().0, UNTYPED_BASE);
        check_invariants(&fx.store);
    }

    #[test]
    fn memory_is_reused_only_once_every_child_is_gone() {
        let mut fx = Fixture::new();
        make(&mut fx, request(CapType::Notification, 0, 2), 2).unwrap();
        let first = fx.root_slot(2);
        delete(&mut fx.store, first).unwrap();
        make(&mut fx, request(CapType::Notification, 0, 1), 2).unwrap();
        let two = 2u64 << crate::object::NOTIFICATION_BITS;
        assert_eq!(fx.cap(fx.root_slot(2)).addr().0, UNTYPED_BASE + two, "one child left: no reuse");
        for slot in [2, 3] {
            let at = fx.root_slot(slot);
            delete(&mut fx.store, at).unwrap();
        }
        make(&mut fx, request(CapType::Notification, 0, 1), 2).unwrap();
        assert_eq!(fx.cap(fx.root_slot(2)).addr().0, UNTYPED_BASE, "no children: start again");
        check_invariants(&fx.store);
    }

    #[test]
    fn a_parked_cnode_keeps_its_memory_from_reuse() {
        let mut fx = Fixture::new();
        make(&mut fx, request(CapType::CNode, 2, 1), 3).unwrap();
        let leaf = fx.root_slot(3);
        let inner = fx.resolve(3 << 2 | 1, 6).unwrap();
        copy_into(&mut fx, leaf, inner);
        delete(&mut fx.store, leaf).unwrap();
        make(&mut fx, request(CapType::Endpoint, 0, 1), 3).unwrap();
        assert!(fx.cap(fx.root_slot(3)).addr().0 >= UNTYPED_BASE + (4 * SLOT_BYTES));
        check_invariants(&fx.store);
    }

    fn copy_into(fx: &mut Fixture, src: SlotRef, dest: SlotRef) {
        crate::cnode::copy(&mut fx.store, src, dest).unwrap();
    }

    #[test]
    fn device_memory_holds_frames_only_and_is_not_zeroed() {
        let mut fx = Fixture::new();
        let device = Cap::try_untyped(PhysAddr(0xFE00_0000), 21, true).unwrap();
        let (slot, root) = (fx.root_slot(2), fx.root_slot(0));
        crate::cnode::insert_initial(&mut fx.store, slot, device).unwrap();
        rejects(&mut fx, Error::InvalidArgument, |s| {
            retype(s, slot, request(CapType::Endpoint, 0, 1), root, 3)
        });
        retype(&mut fx.store, slot, request(CapType::Frame2M, 0, 1), root, 3).unwrap();
        assert!(fx.store.initialised.is_empty());
        let frame = fx.root_slot(3);
        assert!(delete_step(&mut fx.store, frame).unwrap().done);
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::config())]

        /// Retype against a model of the watermark: objects land at the next aligned
        /// address, inside the region, never overlapping, and `NotEnoughMemory` comes
        /// exactly when they would not fit.
        #[test]
        fn retype_follows_the_watermark_model(
            requests in proptest::collection::vec(
                (proptest::prop_oneof![
                    proptest::prelude::Just((CapType::Endpoint, 0u8)),
                    proptest::prelude::Just((CapType::Thread, 0)),
                    proptest::prelude::Just((CapType::Frame4K, 0)),
                    (1u8..9).prop_map(|radix| (CapType::CNode, radix)),
                    (4u8..20).prop_map(|bits| (CapType::Untyped, bits)),
                ], 1u64..5),
                1..24,
            ),
        ) {
            let mut fx = Fixture::new();
            let mut watermark = 0u64;
            let mut next_slot = 2u64;
            for ((kind, size_bits), count) in requests {
                if next_slot + count > 16 {
                    break;
                }
                let req = request(kind, size_bits, count);
                let bits = kind.object_bits(size_bits).unwrap();
                let first = watermark.next_multiple_of(1 << bits);
                let end = first + (count << bits);
                let result = make(&mut fx, req, next_slot);
                if end > 1 << crate::testing::UNTYPED_BITS {
                    proptest::prop_assert_eq!(result, Err(Error::NotEnoughMemory));
                    continue;
                }
                proptest::prop_assert_eq!(result, Ok(()));
                for i in 0..count {
                    let cap = fx.cap(fx.root_slot(next_slot + i));
                    proptest::prop_assert_eq!(cap.addr().0, UNTYPED_BASE + first + (i << bits));
                }
                watermark = end;
                next_slot += count;
                proptest::prop_assert_eq!(fx.cap(fx.root_slot(1)).watermark(), watermark);
            }
            check_invariants(&fx.store);
        }
    }
}
