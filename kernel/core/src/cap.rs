//! Capabilities: an object reference, its type, rights and a badge, as a small
//! `Copy` value.
//!
//! Invariants (every constructor enforces them, and fields are private so nothing
//! else can break them):
//! - A memory object's address is aligned to its size and is not zero.
//! - A CNode capability's `radix + guard_bits <= 64` and its guard fits `guard_bits`.
//! - Only endpoint and notification capabilities carry a badge; zero means unbadged.
//! - An untyped capability's watermark never exceeds its size.

use bitflags::bitflags;
use ramen_abi::Error;

use crate::object::{
    CapType, MAX_CNODE_RADIX, MAX_UNTYPED_BITS, MIN_CNODE_RADIX, MIN_UNTYPED_BITS, PhysAddr, SLOT_BITS,
};

bitflags! {
    /// What a capability allows on its object.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct Rights: u8 {
        /// Receive, wait, read memory.
        const READ = 1 << 0;
        /// Send, signal, write memory, retype.
        const WRITE = 1 << 1;
        /// Transfer capabilities with a message.
        const GRANT = 1 << 2;
        /// Transfer only a reply capability (call without full grant).
        const GRANT_REPLY = 1 << 3;
    }
}

/// How mint or mutate changes the data word of a capability.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CapData {
    /// Leave it as it is.
    Keep,
    /// Badge an unbadged endpoint or notification capability (mint only); nonzero.
    Badge(u64),
    /// Give a CNode capability a new guard.
    Guard {
        /// The value the guard bits of a capability pointer must have.
        guard: u64,
        /// How many bits the guard is.
        guard_bits: u8,
    },
}

/// A capability. `Default` is the null capability.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Cap {
    kind: CapType,
    rights: Rights,
    /// Untyped: region size; CNode and Zombie: radix; frames and tables: object size.
    size_bits: u8,
    /// CNode: guard width.
    guard_bits: u8,
    /// Untyped: the memory is device memory (MMIO), never zeroed, frames only.
    device: bool,
    /// The object's physical address; zero for objects that are not memory.
    addr: u64,
    /// Endpoint and notification: the badge delivered with each message; 0 = none.
    badge: u64,
    /// CNode: guard value. Untyped: watermark, bytes used from the start. Zombie:
    /// slots still to clear. IrqHandler: the IRQ. IoPort: `first | last << 16`.
    /// SchedControl: the core.
    arg: u64,
}

impl Cap {
    /// The null capability (an empty slot).
    pub const NULL: Self = Self {
        kind: CapType::Null,
        rights: Rights::empty(),
        size_bits: 0,
        guard_bits: 0,
        device: false,
        addr: 0,
        badge: 0,
        arg: 0,
    };

    const fn with(kind: CapType, addr: u64, size_bits: u8) -> Self {
        Self { kind, rights: Rights::all(), size_bits, addr, ..Self::NULL }
    }

    /// A capability to untyped memory `[base, base + 2^size_bits)`, as boot code
    /// hands them out.
    ///
    /// Errors: `RangeError` for a size outside the untyped limits, a region that
    /// wraps, or one that covers address zero; `AlignmentError` if `base` is not a
    /// multiple of the size.
    pub fn try_untyped(base: PhysAddr, size_bits: u8, device: bool) -> Result<Self, Error> {
        if !(MIN_UNTYPED_BITS..=MAX_UNTYPED_BITS).contains(&size_bits) || base.0 == 0 {
            return Err(Error::RangeError);
        }
        check_aligned(base.0, size_bits)?;
        base.0.checked_add(1 << size_bits).ok_or(Error::RangeError)?;
        Ok(Self { device, ..Self::with(CapType::Untyped, base.0, size_bits) })
    }

    /// A capability to the CNode at `addr` with `2^radix` slots and the given guard.
    ///
    /// Errors: `RangeError` for a radix outside the CNode limits or a guard that does
    /// not fit; `AlignmentError` for a misaligned or zero address.
    pub fn try_cnode(addr: PhysAddr, radix: u8, guard: u64, guard_bits: u8) -> Result<Self, Error> {
        if !(MIN_CNODE_RADIX..=MAX_CNODE_RADIX).contains(&radix) {
            return Err(Error::RangeError);
        }
        check_guard(radix, guard, guard_bits)?;
        if addr.0 == 0 {
            return Err(Error::AlignmentError);
        }
        check_aligned(addr.0, radix + SLOT_BITS)?;
        Ok(Self { guard_bits, arg: guard, ..Self::with(CapType::CNode, addr.0, radix) })
    }

    /// A capability to a fixed-size object (thread, endpoint, frame, table, ...).
    ///
    /// Errors: `InvalidArgument` for untyped, CNode and non-memory types (they have
    /// their own constructors); `AlignmentError` for a misaligned or zero address.
    pub fn try_object(kind: CapType, addr: PhysAddr) -> Result<Self, Error> {
        if matches!(kind, CapType::Untyped | CapType::CNode) {
            return Err(Error::InvalidArgument);
        }
        let bits = kind.object_bits(0)?;
        if addr.0 == 0 {
            return Err(Error::AlignmentError);
        }
        check_aligned(addr.0, bits)?;
        Ok(Self::with(kind, addr.0, bits))
    }

    /// The kernel debug console capability (boot only).
    pub const fn debug_console() -> Self {
        Self::with(CapType::DebugConsole, 0, 0)
    }

    /// The trace control capability (boot only).
    pub const fn trace_control() -> Self {
        Self::with(CapType::TraceControl, 0, 0)
    }

    /// The IRQ control capability (boot only).
    pub const fn irq_control() -> Self {
        Self::with(CapType::IrqControl, 0, 0)
    }

    /// The handler capability for `irq`.
    pub const fn irq_handler(irq: u64) -> Self {
        Self { arg: irq, ..Self::with(CapType::IrqHandler, 0, 0) }
    }

    /// The I/O ports `first..=last`, or `None` if the range is empty.
    pub const fn io_port(first: u16, last: u16) -> Option<Self> {
        if first > last {
            return None;
        }
        Some(Self { arg: first as u64 | (last as u64) << 16, ..Self::with(CapType::IoPort, 0, 0) })
    }

    /// Authority over `core`'s time.
    pub const fn sched_control(core: u32) -> Self {
        Self { arg: core as u64, ..Self::with(CapType::SchedControl, 0, 0) }
    }

    /// The type.
    pub const fn kind(&self) -> CapType {
        self.kind
    }

    /// True for the null capability.
    pub const fn is_null(&self) -> bool {
        matches!(self.kind, CapType::Null)
    }

    /// The rights.
    pub const fn rights(&self) -> Rights {
        self.rights
    }

    /// The badge (zero: none).
    pub const fn badge(&self) -> u64 {
        self.badge
    }

    /// The object's address (zero for objects that are not memory).
    pub const fn addr(&self) -> PhysAddr {
        PhysAddr(self.addr)
    }

    /// Untyped: region size; CNode and Zombie: radix; other memory objects: size.
    pub const fn size_bits(&self) -> u8 {
        self.size_bits
    }

    /// CNode: the guard value and its width.
    pub const fn guard(&self) -> (u64, u8) {
        (self.arg, self.guard_bits)
    }

    /// Untyped: bytes used from the start of the region.
    pub const fn watermark(&self) -> u64 {
        self.arg
    }

    /// Untyped: device memory.
    pub const fn is_device(&self) -> bool {
        self.device
    }

    /// IrqHandler: the IRQ; IoPort: `first | last << 16`; SchedControl: the core;
    /// Zombie: slots still to clear.
    pub const fn arg(&self) -> u64 {
        self.arg
    }

    /// `InsufficientRights` unless the capability has every right in `needed`.
    pub fn require(&self, needed: Rights) -> Result<(), Error> {
        if self.rights.contains(needed) { Ok(()) } else { Err(Error::InsufficientRights) }
    }

    /// The memory the object occupies, `[start, end)`, for memory objects.
    pub fn memory(&self) -> Option<(u64, u64)> {
        match self.kind {
            CapType::Null
            | CapType::IrqControl
            | CapType::IrqHandler
            | CapType::IoPort
            | CapType::SchedControl
            | CapType::DebugConsole
            | CapType::TraceControl => None,
            CapType::CNode | CapType::Zombie => {
                let bytes = 1u64.checked_shl(u32::from(self.size_bits) + u32::from(SLOT_BITS))?;
                Some((self.addr, self.addr.checked_add(bytes)?))
            }
            _ => Some((self.addr, self.addr.checked_add(1u64.checked_shl(self.size_bits.into())?)?)),
        }
    }

    /// True if both capabilities refer to the same object (untyped capabilities
    /// refer to memory, not an object, and never match).
    pub fn same_object(&self, other: &Self) -> bool {
        let class = |kind| match kind {
            CapType::Zombie => CapType::CNode,
            other => other,
        };
        !matches!(self.kind, CapType::Null | CapType::Untyped)
            && class(self.kind) == class(other.kind)
            && self.addr == other.addr
            && (self.addr != 0 || self.arg == other.arg)
    }

    /// This capability with `rights`, `data` applied. The caller has validated both
    /// with [`Cap::check_derive`].
    pub(crate) fn derive(self, rights: Rights, data: CapData) -> Self {
        // A copy of a frame capability starts unmapped: each capability maps its
        // frame at most once, and the mapping is torn down with that capability.
        let cap = self.with_mapping(None);
        match data {
            CapData::Keep => Self { rights, ..cap },
            CapData::Badge(badge) => Self { rights, badge, ..cap },
            CapData::Guard { guard, guard_bits } => Self { rights, arg: guard, guard_bits, ..cap },
        }
    }

    /// Checks that `derive(rights, data)` is allowed: rights only shrink, a badge goes
    /// only on an unbadged endpoint or notification, a guard only on a CNode.
    ///
    /// Errors: `InsufficientRights`, `InvalidArgument`, `RangeError` (guard too wide).
    pub(crate) fn check_derive(&self, rights: Rights, data: CapData) -> Result<(), Error> {
        self.require(rights)?;
        match data {
            CapData::Keep => Ok(()),
            CapData::Badge(badge) => {
                let badgeable = matches!(self.kind, CapType::Endpoint | CapType::Notification);
                if badge == 0 || !badgeable || self.badge != 0 {
                    return Err(Error::InvalidArgument);
                }
                Ok(())
            }
            CapData::Guard { guard, guard_bits } => {
                if self.kind != CapType::CNode {
                    return Err(Error::InvalidArgument);
                }
                check_guard(self.size_bits, guard, guard_bits)
            }
        }
    }

    /// Frames and page tables below the top level: where this capability maps its
    /// frame or installed its table, as (VSpace root, address word); `None` while
    /// unmapped. (These capabilities have no badge, so the badge field holds the
    /// VSpace root and the type-specific word the address.)
    pub const fn mapping(&self) -> Option<(PhysAddr, u64)> {
        match self.kind {
            CapType::Frame4K
            | CapType::Frame2M
            | CapType::Pdpt
            | CapType::PageDirectory
            | CapType::PageTable
                if self.badge != 0 =>
            {
                Some((PhysAddr(self.badge), self.arg))
            }
            _ => None,
        }
    }

    /// Whether this kind of capability records a mapping ([`Self::mapping`]).
    pub const fn records_mapping(&self) -> bool {
        matches!(
            self.kind,
            CapType::Frame4K | CapType::Frame2M | CapType::Pdpt | CapType::PageDirectory | CapType::PageTable
        )
    }

    /// A frame or table capability recording `mapping` (other capabilities are
    /// returned as they are).
    pub const fn with_mapping(self, mapping: Option<(PhysAddr, u64)>) -> Self {
        if !self.records_mapping() {
            return self;
        }
        match mapping {
            Some((root, vaddr)) => Self { badge: root.0, arg: vaddr, ..self },
            None => Self { badge: 0, arg: 0, ..self },
        }
    }

    /// An untyped capability with its watermark moved to `watermark`.
    pub(crate) const fn with_watermark(self, watermark: u64) -> Self {
        Self { arg: watermark, ..self }
    }

    /// A capability to a fresh object made by retype.
    pub(crate) const fn new_object(kind: CapType, addr: PhysAddr, size_bits: u8, device: bool) -> Self {
        match kind {
            CapType::CNode => Self::with(kind, addr.0, size_bits),
            CapType::Untyped => Self { device, ..Self::with(kind, addr.0, size_bits) },
            _ => Self::with(kind, addr.0, size_bits),
        }
    }

    /// The zombie a final CNode capability becomes while its slots are cleared.
    pub(crate) const fn into_zombie(self) -> Self {
        Self {
            kind: CapType::Zombie,
            rights: Rights::empty(),
            guard_bits: 0,
            badge: 0,
            arg: 1 << self.size_bits,
            ..self
        }
    }

    /// A zombie with `remaining` slots left to clear.
    pub(crate) const fn with_remaining(self, remaining: u64) -> Self {
        Self { arg: remaining, ..self }
    }
}

fn check_aligned(addr: u64, bits: u8) -> Result<(), Error> {
    let mask = 1u64.checked_shl(bits.into()).ok_or(Error::RangeError)? - 1;
    if addr & mask == 0 { Ok(()) } else { Err(Error::AlignmentError) }
}

fn check_guard(radix: u8, guard: u64, guard_bits: u8) -> Result<(), Error> {
    if u32::from(radix) + u32::from(guard_bits) > 64 {
        return Err(Error::RangeError);
    }
    match 1u64.checked_shl(guard_bits.into()) {
        Some(limit) if guard >= limit => Err(Error::RangeError),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untyped_constructor_rejects_bad_regions() {
        assert_eq!(Cap::try_untyped(PhysAddr(0x1000), 12, false).map(|c| c.size_bits()), Ok(12));
        assert_eq!(Cap::try_untyped(PhysAddr(0x1800), 12, false), Err(Error::AlignmentError));
        assert_eq!(Cap::try_untyped(PhysAddr(0x1000), 3, false), Err(Error::RangeError));
        assert_eq!(Cap::try_untyped(PhysAddr(0x1000), 48, false), Err(Error::RangeError));
        assert_eq!(Cap::try_untyped(PhysAddr(0), 12, false), Err(Error::RangeError));
        assert_eq!(Cap::try_untyped(PhysAddr(0xFFFF_8000_0000_0000), 47, false), Err(Error::RangeError));
    }

    #[test]
    fn cnode_constructor_checks_radix_guard_and_alignment() {
        assert!(Cap::try_cnode(PhysAddr(0x4000), 4, 0, 60).is_ok());
        assert_eq!(Cap::try_cnode(PhysAddr(0x4000), 4, 0, 61), Err(Error::RangeError));
        assert_eq!(Cap::try_cnode(PhysAddr(0x4000), 4, 4, 2), Err(Error::RangeError));
        assert_eq!(Cap::try_cnode(PhysAddr(0x4000), 0, 0, 0), Err(Error::RangeError));
        assert_eq!(Cap::try_cnode(PhysAddr(0x4200), 4, 0, 0), Err(Error::AlignmentError));
        assert_eq!(Cap::try_cnode(PhysAddr(0), 4, 0, 0), Err(Error::AlignmentError));
    }

    #[test]
    fn object_constructor_checks_type_and_alignment() {
        assert!(Cap::try_object(CapType::Frame2M, PhysAddr(0x20_0000)).is_ok());
        assert_eq!(Cap::try_object(CapType::Frame2M, PhysAddr(0x1000)), Err(Error::AlignmentError));
        assert_eq!(Cap::try_object(CapType::CNode, PhysAddr(0x1000)), Err(Error::InvalidArgument));
        assert_eq!(Cap::try_object(CapType::IrqHandler, PhysAddr(0x1000)), Err(Error::InvalidArgument));
        assert_eq!(Cap::io_port(5, 4), None);
    }

    #[test]
    fn derive_only_shrinks_rights_and_badges_once() {
        let ep = Cap::try_object(CapType::Endpoint, PhysAddr(0x40)).unwrap();
        assert_eq!(ep.check_derive(Rights::READ, CapData::Badge(7)), Ok(()));
        let badged = ep.derive(Rights::READ, CapData::Badge(7));
        assert_eq!((badged.badge(), badged.rights()), (7, Rights::READ));
        assert_eq!(badged.check_derive(Rights::READ, CapData::Badge(8)), Err(Error::InvalidArgument));
        assert_eq!(badged.check_derive(Rights::WRITE, CapData::Keep), Err(Error::InsufficientRights));
        assert_eq!(ep.check_derive(Rights::all(), CapData::Badge(0)), Err(Error::InvalidArgument));
        let frame = Cap::try_object(CapType::Frame4K, PhysAddr(0x1000)).unwrap();
        assert_eq!(frame.check_derive(Rights::READ, CapData::Badge(1)), Err(Error::InvalidArgument));
        let guard = CapData::Guard { guard: 1, guard_bits: 1 };
        assert_eq!(frame.check_derive(Rights::READ, guard), Err(Error::InvalidArgument));
        let cnode = Cap::try_cnode(PhysAddr(0x4000), 4, 0, 0).unwrap();
        assert_eq!(cnode.derive(Rights::all(), guard).guard(), (1, 1));
        let wide = CapData::Guard { guard: 0, guard_bits: 61 };
        assert_eq!(cnode.check_derive(Rights::all(), wide), Err(Error::RangeError));
    }

    #[test]
    fn same_object_compares_identity_not_rights() {
        let ep = Cap::try_object(CapType::Endpoint, PhysAddr(0x40)).unwrap();
        assert!(ep.same_object(&ep.derive(Rights::READ, CapData::Badge(3))));
        assert!(!ep.same_object(&Cap::try_object(CapType::Endpoint, PhysAddr(0x80)).unwrap()));
        assert!(Cap::irq_handler(3).same_object(&Cap::irq_handler(3)));
        assert!(!Cap::irq_handler(3).same_object(&Cap::irq_handler(4)));
        let untyped = Cap::try_untyped(PhysAddr(0x1000), 12, false).unwrap();
        assert!(!untyped.same_object(&untyped));
        let cnode = Cap::try_cnode(PhysAddr(0x4000), 4, 0, 0).unwrap();
        assert!(cnode.into_zombie().same_object(&cnode));
        assert_eq!(cnode.memory(), Some((0x4000, 0x4400)));
    }
}
