//! Kernel object types, their sizes, and the store through which object memory is
//! reached.
//!
//! Every kernel object lives in physical memory that a capability to untyped memory
//! paid for (see [`crate::untyped`]); after boot the kernel has no heap. This crate
//! never touches that memory itself: it reads and writes capability slots through
//! [`ObjectStore`], which the kernel implements over its direct map (the `unsafe`
//! stays in the arch layer) and host tests implement over a `BTreeMap`.
//!
//! Invariants:
//! - Every object is naturally aligned: its address is a multiple of its size.
//! - Physical address zero is never inside an object (untyped memory never covers the
//!   first byte of memory), so the all-zero slot means "empty, unlinked".

use core::num::NonZeroU64;

use crate::cdt::Slot;

/// A physical address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct PhysAddr(pub u64);

/// Size of one capability slot in a CNode, as a power of two.
pub const SLOT_BITS: u8 = 6;
/// Size of one capability slot in bytes (a [`Slot`] must fit).
pub const SLOT_BYTES: u64 = 1 << SLOT_BITS;
/// Where a slot's lock word lies in it (its last 8 bytes, after the [`Slot`]): the
/// kernel's lock and version for the changes that take no global lock
/// ([`crate::light`]). Zero (a freshly retyped CNode) is unlocked.
pub const SLOT_LOCK_OFFSET: u64 = SLOT_BYTES - 8;
/// Thread control block: registers, an XSAVE area large enough for AVX-512 state
/// (2.7 KiB) and the scheduler and IPC fields.
pub const TCB_BITS: u8 = 12;
/// Endpoint: the head and tail of its queue of blocked threads and a lock word, in
/// one cache line of its own (two endpoints never share a line the IPC fastpath
/// writes).
pub const ENDPOINT_BITS: u8 = 6;
/// Notification: the signalled word, a waiter queue, a bound thread and a lock word,
/// in one cache line of its own (as an endpoint).
pub const NOTIFICATION_BITS: u8 = 6;
/// Reply object: the caller it will answer and its state.
pub const REPLY_BITS: u8 = 5;
/// A small page.
pub const FRAME_4K_BITS: u8 = 12;
/// A large page.
pub const FRAME_2M_BITS: u8 = 21;
/// Every page-table level (PML4, PDPT, page directory, page table) is one page.
pub const PAGE_TABLE_BITS: u8 = 12;
/// Smallest and largest CNode, in slots as a power of two (the radix).
pub const MIN_CNODE_RADIX: u8 = 1;
/// Largest CNode radix: 2^20 slots, 64 MiB.
pub const MAX_CNODE_RADIX: u8 = 20;
/// Smallest untyped region, as a power of two (one endpoint).
pub const MIN_UNTYPED_BITS: u8 = 4;
/// Largest untyped region, as a power of two (128 TiB).
pub const MAX_UNTYPED_BITS: u8 = 47;
/// Most objects one retype creates: its commit step is not preemptible, so its
/// work is bounded here (seL4's `RETYPE_FAN_OUT_LIMIT`).
pub const MAX_RETYPE_COUNT: u64 = 256;

/// What a capability refers to. The codes are the ones user space passes to retype.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[repr(u8)]
pub enum CapType {
    /// An empty slot.
    #[default]
    Null = 0,
    /// Untyped memory, from which every other object is retyped.
    Untyped = 1,
    /// A table of capability slots; CSpaces are trees of CNodes.
    CNode = 2,
    /// A thread control block.
    Thread = 3,
    /// A synchronous IPC rendezvous point.
    Endpoint = 4,
    /// A word of asynchronous signal bits.
    Notification = 5,
    /// The right to answer one call.
    Reply = 6,
    /// A 4 KiB page of memory.
    Frame4K = 7,
    /// A 2 MiB page of memory.
    Frame2M = 8,
    /// A top-level page table (PML4): an address space.
    VSpace = 9,
    /// A page-directory-pointer table.
    Pdpt = 10,
    /// A page directory.
    PageDirectory = 11,
    /// A last-level page table.
    PageTable = 12,
    /// Authority to create IRQ handler capabilities.
    IrqControl = 13,
    /// Authority to receive and acknowledge one IRQ.
    IrqHandler = 14,
    /// A range of I/O ports.
    IoPort = 15,
    /// Authority over one core's time (scheduling parameters, budgets).
    SchedControl = 16,
    /// A CNode whose last capability is being deleted; see [`crate::cnode`].
    Zombie = 17,
    /// The kernel debug console (write-only).
    DebugConsole = 18,
    /// Authority over kernel tracing: start (with categories), stop, dump.
    TraceControl = 19,
}

impl CapType {
    /// The type with this user-visible code.
    pub const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Self::Null,
            1 => Self::Untyped,
            2 => Self::CNode,
            3 => Self::Thread,
            4 => Self::Endpoint,
            5 => Self::Notification,
            6 => Self::Reply,
            7 => Self::Frame4K,
            8 => Self::Frame2M,
            9 => Self::VSpace,
            10 => Self::Pdpt,
            11 => Self::PageDirectory,
            12 => Self::PageTable,
            13 => Self::IrqControl,
            14 => Self::IrqHandler,
            15 => Self::IoPort,
            16 => Self::SchedControl,
            17 => Self::Zombie,
            18 => Self::DebugConsole,
            19 => Self::TraceControl,
            _ => return None,
        })
    }

    /// Size of one object of this type as a power of two, for the types retype can
    /// create. `size_bits` is the caller's size argument: the region size for
    /// `Untyped`, the radix for `CNode`; other types ignore it.
    ///
    /// Errors: `InvalidArgument` for a type retype cannot create, `RangeError` for a
    /// size argument outside the type's limits.
    pub const fn object_bits(self, size_bits: u8) -> Result<u8, ramen_abi::Error> {
        use ramen_abi::Error;
        Ok(match self {
            Self::Untyped if size_bits >= MIN_UNTYPED_BITS && size_bits <= MAX_UNTYPED_BITS => size_bits,
            Self::CNode if size_bits >= MIN_CNODE_RADIX && size_bits <= MAX_CNODE_RADIX => {
                size_bits + SLOT_BITS
            }
            Self::Untyped | Self::CNode => return Err(Error::RangeError),
            Self::Thread => TCB_BITS,
            Self::Endpoint => ENDPOINT_BITS,
            Self::Notification => NOTIFICATION_BITS,
            Self::Reply => REPLY_BITS,
            Self::Frame4K => FRAME_4K_BITS,
            Self::Frame2M => FRAME_2M_BITS,
            Self::VSpace | Self::Pdpt | Self::PageDirectory | Self::PageTable => PAGE_TABLE_BITS,
            Self::Null
            | Self::IrqControl
            | Self::IrqHandler
            | Self::IoPort
            | Self::SchedControl
            | Self::Zombie
            | Self::DebugConsole
            | Self::TraceControl => return Err(Error::InvalidArgument),
        })
    }

    /// True for objects the kernel may place in device (MMIO) memory: only frames
    /// and further device untyped, since the kernel never keeps its own state there.
    pub const fn fits_device_memory(self) -> bool {
        matches!(self, Self::Untyped | Self::Frame4K | Self::Frame2M)
    }
}

/// The physical address of one capability slot (a CNode's address plus
/// `index * SLOT_BYTES`). One word rather than `(cnode, index)`: it is what the CDT
/// links store, and zero is free to mean "none".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SlotRef(NonZeroU64);

impl SlotRef {
    /// The slot at this physical address, or `None` for zero.
    pub const fn new(addr: u64) -> Option<Self> {
        match NonZeroU64::new(addr) {
            Some(addr) => Some(Self(addr)),
            None => None,
        }
    }

    /// Slot `index` of the CNode at `cnode`, or `None` on overflow. The caller has
    /// checked `index` against the CNode's radix.
    pub const fn in_cnode(cnode: PhysAddr, index: u64) -> Option<Self> {
        match index.checked_mul(SLOT_BYTES) {
            Some(offset) => match cnode.0.checked_add(offset) {
                Some(addr) => Self::new(addr),
                None => None,
            },
            None => None,
        }
    }

    /// The slot's physical address.
    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0.get())
    }
}

/// A freshly retyped object, handed to [`ObjectStore::init_object`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ObjRef {
    /// Where it starts.
    pub addr: PhysAddr,
    /// What it is.
    pub kind: CapType,
    /// Its size as a power of two.
    pub size_bits: u8,
}

/// An object whose last capability was just deleted: what the kernel must tear
/// down before the step that returned it is complete. Nothing here does hardware
/// work; the kernel does it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Destroyed {
    /// Dequeue the thread everywhere (run queue, endpoint queues) and stop it; a
    /// thread running on another core needs an IPI.
    Thread(PhysAddr),
    /// Wake every thread blocked on it with `InvalidCapability`.
    Endpoint(PhysAddr),
    /// Wake every waiter with `InvalidCapability` and unbind its bound thread.
    Notification(PhysAddr),
    /// Unlink it from the caller it would have answered.
    Reply(PhysAddr),
    /// Unmap it everywhere and shoot down TLBs before its memory is reused.
    Frame {
        /// Where it starts.
        addr: PhysAddr,
        /// `FRAME_4K_BITS` or `FRAME_2M_BITS`.
        size_bits: u8,
    },
    /// Unhook it from its parent table (or its address space from every core).
    PageTable {
        /// Where it starts.
        addr: PhysAddr,
        /// Which level.
        kind: CapType,
    },
    /// Nothing to do: a CNode is destroyed only once it is empty.
    CNode(PhysAddr),
    /// Mask the IRQ and unbind its notification.
    IrqHandler(u64),
    /// Remove the ports from every I/O permission bitmap that grants them.
    IoPort {
        /// First port.
        first: u16,
        /// Last port, inclusive.
        last: u16,
    },
}

/// The memory that holds capability slots, as the kernel sees it.
///
/// The kernel implements this over its direct map; host tests over a map. Values,
/// not references: a [`Slot`] is a small `Copy` struct, so no borrow of object
/// memory escapes and the implementation decides how to make accesses atomic.
pub trait ObjectStore {
    /// The slot at `at`. Only called for slots inside a live CNode (or a TCB's
    /// CSpace root slot); zeroed memory reads as the empty slot.
    fn slot(&self, at: SlotRef) -> Slot;

    /// Overwrites the slot at `at` (and changes its [`Self::version`]).
    fn set_slot(&mut self, at: SlotRef, slot: Slot);

    /// Overwrites the slot at `at` with `slot`, which differs from it in its
    /// derivation links only: its capability stays, and so may its
    /// [`Self::version`] (the kernel keeps it: what read sections and lookup memos
    /// see of a slot is its capability).
    fn set_links(&mut self, at: SlotRef, slot: Slot) {
        self.set_slot(at, slot);
    }

    /// The slot's version: differs from every earlier value the slot had while it held
    /// other contents since it was last created (the kernel counts writes, in the
    /// slot's lock word; a CNode made afresh starts again from 0, which a
    /// [`crate::lookup_cache::LookupMemo`] cannot see, since the generation changed).
    fn version(&self, at: SlotRef) -> u64;

    /// The slot and its version, read together (the kernel's read sections read them
    /// as a seqlock).
    fn read_versioned(&self, at: SlotRef) -> (Slot, u64) {
        (self.slot(at), self.version(at))
    }

    /// Prepares the memory of a freshly retyped object: zero it (every slot of a new
    /// CNode must read as empty) and set up any state the type needs. Not called for
    /// objects in device memory.
    fn init_object(&mut self, obj: ObjRef);

    /// The CSpace generation: changes whenever a slot that holds or held a CNode
    /// capability changes (see [`crate::lookup_cache`]).
    fn generation(&self) -> u64;

    /// Advances the generation. Called after the slot write it announces.
    fn bump_generation(&mut self);

    /// Whether the capability may be deleted now (`is_final`: it is the object's
    /// last capability). The kernel refuses (`Busy`) while a lease of an IPC call
    /// pins memory the deletion would pull away: a mapped frame a lease pins, a
    /// page table holding pinned entries.
    fn may_delete(&self, cap: &crate::cap::Cap, is_final: bool) -> Result<(), ramen_abi::Error> {
        let _ = (cap, is_final);
        Ok(())
    }

    /// A capability that recorded a mapping (`Cap::mapping`: a mapped frame) is
    /// leaving its slot: the kernel removes the mapping it recorded, if that address
    /// space still exists and still maps this frame there.
    fn remove_mapping(&mut self, cap: &crate::cap::Cap) {
        let _ = cap;
    }

    /// The slot inside the thread object at `thread` that holds its CSpace root (a
    /// capability like any other, linked in the derivation tree), if threads have
    /// one. Deleting a thread's last capability empties it first
    /// ([`crate::cnode::delete_step`]), so no link into the thread's memory outlives it.
    fn thread_slot(&self, thread: PhysAddr) -> Option<SlotRef> {
        let _ = thread;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramen_abi::Error;

    #[test]
    fn type_codes_match_the_abi() {
        use ramen_abi::object as abi;
        let pairs = [
            (CapType::Untyped, abi::UNTYPED),
            (CapType::CNode, abi::CNODE),
            (CapType::Thread, abi::THREAD),
            (CapType::Endpoint, abi::ENDPOINT),
            (CapType::Notification, abi::NOTIFICATION),
            (CapType::Reply, abi::REPLY),
            (CapType::Frame4K, abi::FRAME_4K),
            (CapType::Frame2M, abi::FRAME_2M),
            (CapType::VSpace, abi::VSPACE),
            (CapType::Pdpt, abi::PDPT),
            (CapType::PageDirectory, abi::PAGE_DIRECTORY),
            (CapType::PageTable, abi::PAGE_TABLE),
        ];
        for (kind, code) in pairs {
            assert_eq!(kind as u64, code);
        }
    }

    #[test]
    fn type_codes_round_trip() {
        for code in 0..=19 {
            assert_eq!(CapType::from_code(code).map(|t| t as u64), Some(code));
        }
        assert_eq!(CapType::from_code(20), None);
        // Boot-only authority: retype never makes one.
        assert_eq!(CapType::TraceControl.object_bits(0), Err(Error::InvalidArgument));
    }

    #[test]
    fn object_sizes_come_from_one_table() {
        assert_eq!(CapType::Thread.object_bits(0), Ok(TCB_BITS));
        assert_eq!(CapType::CNode.object_bits(4), Ok(4 + SLOT_BITS));
        assert_eq!(CapType::CNode.object_bits(0), Err(Error::RangeError));
        assert_eq!(CapType::CNode.object_bits(MAX_CNODE_RADIX + 1), Err(Error::RangeError));
        assert_eq!(CapType::Untyped.object_bits(MIN_UNTYPED_BITS - 1), Err(Error::RangeError));
        assert_eq!(CapType::Untyped.object_bits(MAX_UNTYPED_BITS + 1), Err(Error::RangeError));
        assert_eq!(CapType::Zombie.object_bits(0), Err(Error::InvalidArgument));
        assert_eq!(CapType::IrqHandler.object_bits(0), Err(Error::InvalidArgument));
    }

    #[test]
    fn a_slot_fits_its_slot_size() {
        assert!(core::mem::size_of::<Slot>() as u64 <= SLOT_LOCK_OFFSET);
        assert_eq!(core::mem::size_of::<Option<SlotRef>>(), 8);
    }

    #[test]
    fn slot_refs_never_overflow() {
        assert_eq!(SlotRef::in_cnode(PhysAddr(0x1000), 2).map(SlotRef::addr), Some(PhysAddr(0x1080)));
        assert_eq!(SlotRef::in_cnode(PhysAddr(u64::MAX - 8), 1), None);
        assert_eq!(SlotRef::in_cnode(PhysAddr(0), 0), None);
    }
}
