//! IRQ control and IRQ handlers: which lines have a handler capability.
//!
//! The root task's IRQ control capability issues at most one handler capability per
//! line; the handler can be copied, and the line is free again once the last copy is
//! deleted (the delete reports `Destroyed::IrqHandler`, and the kernel masks the line
//! and calls [`IrqTable::release`]).
//!
//! Invariant: bit `n` of the table is set exactly while a handler capability for line
//! `n` exists.

use ramen_abi::Error;

use crate::cap::Cap;
use crate::cdt;
use crate::object::{CapType, ObjectStore, SlotRef};

/// IRQ lines a handler can be issued for (the IDT vectors left for devices).
pub const IRQ_LINES: u64 = 224;
const WORDS: usize = (IRQ_LINES as usize).div_ceil(64);

/// Which IRQ lines have a handler capability. One per kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IrqTable {
    issued: [u64; WORDS],
}

impl IrqTable {
    /// No line issued.
    pub const fn new() -> Self {
        Self { issued: [0; WORDS] }
    }

    /// True if `irq` has a handler capability.
    pub fn is_issued(&self, irq: u64) -> bool {
        let (word, bit) = Self::position(irq);
        self.issued.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Frees `irq` after its last handler capability was deleted.
    pub fn release(&mut self, irq: u64) {
        let (word, bit) = Self::position(irq);
        if let Some(w) = self.issued.get_mut(word) {
            *w &= !bit;
        }
    }

    fn position(irq: u64) -> (usize, u64) {
        (usize::try_from(irq / 64).unwrap_or(usize::MAX), 1 << (irq % 64))
    }
}

/// Puts a handler capability for `irq` into the empty slot `dest`, as a child of the
/// IRQ control capability in `control`.
///
/// Errors: `SlotEmpty` (control), `WrongType` (not IRQ control), `RangeError` (no
/// such line), `Busy` (the line already has a handler), `SlotOccupied` (dest).
pub fn issue_handler<S: ObjectStore>(
    store: &mut S,
    table: &mut IrqTable,
    control: SlotRef,
    irq: u64,
    dest: SlotRef,
) -> Result<(), Error> {
    match store.slot(control).cap().kind() {
        CapType::Null => return Err(Error::SlotEmpty),
        CapType::IrqControl => {}
        _ => return Err(Error::WrongType),
    }
    if irq >= IRQ_LINES {
        return Err(Error::RangeError);
    }
    if table.is_issued(irq) {
        return Err(Error::Busy);
    }
    if !store.slot(dest).is_empty() {
        return Err(Error::SlotOccupied);
    }
    let (word, bit) = IrqTable::position(irq);
    if let Some(w) = table.issued.get_mut(word) {
        *w |= bit;
    }
    cdt::insert_after(store, control, dest, Cap::irq_handler(irq), true, false);
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::cnode::{copy, insert_initial};
    use crate::object::Destroyed;
    use crate::testing::{Fixture, check_invariants, delete};

    #[test]
    fn one_handler_per_line_until_its_last_copy_goes() {
        let mut fx = Fixture::new();
        let mut table = IrqTable::new();
        let [control, handler, copied, other] = [2, 3, 4, 5].map(|i| fx.root_slot(i));
        insert_initial(&mut fx.store, control, Cap::irq_control()).unwrap();
        issue_handler(&mut fx.store, &mut table, control, 33, handler).unwrap();
        assert!(table.is_issued(33));
        copy(&mut fx.store, handler, copied).unwrap();

        let before = (fx.store.clone(), table.clone());
        let mut rejects = |error, control, irq, dest| {
            assert_eq!(issue_handler(&mut fx.store, &mut table, control, irq, dest), Err(error));
            assert_eq!((fx.store.clone(), table.clone()), before);
        };
        rejects(Error::Busy, control, 33, other);
        rejects(Error::RangeError, control, IRQ_LINES, other);
        rejects(Error::SlotOccupied, control, 34, handler);
        rejects(Error::WrongType, handler, 34, other);
        rejects(Error::SlotEmpty, other, 34, other);

        assert_eq!(delete(&mut fx.store, handler), Ok(std::vec![]));
        assert_eq!(delete(&mut fx.store, copied), Ok(std::vec![Destroyed::IrqHandler(33)]));
        table.release(33);
        issue_handler(&mut fx.store, &mut table, control, 33, other).unwrap();
        check_invariants(&fx.store);
        let revoked = crate::testing::revoke(&mut fx.store, control);
        assert_eq!(revoked, Ok(std::vec![Destroyed::IrqHandler(33)]), "revoking control takes every handler");
    }
}
