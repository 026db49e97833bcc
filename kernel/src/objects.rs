//! Kernel objects in physical memory: the `ObjectStore` over the direct map, and the
//! thread control block.
//!
//! This is the kernel binary's one module with `unsafe`: it turns physical addresses
//! that capabilities name into typed references, through `arch::phys`. Why that is
//! sound: an address reaches here only from a capability (whose object retype created
//! and initialised) or from a kernel structure that a capability operation filled in;
//! capability slots are read and written only under [`CAP_LOCK`]; a TCB's scheduling
//! and register state is touched only by the CPU that owns the thread (`Tcb::cpu`),
//! with interrupts off, and other CPUs ask that CPU through its inbox instead.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use ramen_arch::fpu::FpuArea;
use ramen_arch::phys;
use ramen_arch::user::UserContext;
use ramen_core::cdt::Slot;
use ramen_core::lookup_cache::LookupMemo;
use ramen_core::object::{CapType, ObjRef, ObjectStore, PhysAddr, SlotRef, TCB_BITS};
use ramen_core::runqueue::{RunLinks, ThreadLinks, ThreadRef};
use spin::Mutex;

/// The CSpace generation (see `ramen_core::lookup_cache`): read by every CPU's lookup
/// cache, written only by capability operations, which are rare.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Capability slots in physical memory. Zero-sized: the lock around it is the access
/// right.
pub struct Store;

/// Serialises capability-space changes (copy, move, delete, revoke, retype, map).
/// Not taken on the scheduling path; see `docs/concurrency.md`.
pub static CAP_LOCK: Mutex<Store> = Mutex::new(Store);

impl ObjectStore for Store {
    fn slot(&self, at: SlotRef) -> Slot {
        // SAFETY: slot addresses come from CNode capabilities (inside a live CNode,
        // which retype zeroed: zero is the empty slot) or a TCB's CSpace-root slot;
        // writers hold CAP_LOCK, as the `&self` borrow of the store proves here.
        unsafe { phys::read::<Slot>(at.addr().0) }
    }

    fn set_slot(&mut self, at: SlotRef, slot: Slot) {
        // SAFETY: as above; `&mut self` proves we hold CAP_LOCK.
        unsafe { phys::write::<Slot>(at.addr().0, slot) }
    }

    fn init_object(&mut self, obj: ObjRef) {
        let bytes = 1u64 << obj.size_bits;
        // SAFETY: retype hands us memory it just carved out of an untyped region:
        // owned by the new object, referenced by nothing yet.
        unsafe { phys::zero(obj.addr.0, bytes) };
        match obj.kind {
            CapType::Thread => {
                // SAFETY: the TCB's memory, just zeroed, 4 KiB-aligned (TCB_BITS).
                unsafe { phys::write(obj.addr.0, Tcb::new()) };
            }
            CapType::VSpace => install_kernel_half(obj.addr.0),
            _ => {}
        }
    }

    fn generation(&self) -> u64 {
        GENERATION.load(Ordering::Acquire)
    }

    fn bump_generation(&mut self) {
        GENERATION.fetch_add(1, Ordering::AcqRel);
    }
}

/// Where a thread is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum ThreadState {
    /// Created or suspended: never scheduled until resumed.
    #[default]
    Inactive = 0,
    /// In its CPU's run queue, or running.
    Runnable = 1,
    /// Waiting for IPC or a signal.
    Blocked = 2,
    /// Stopped by a fault it had no handler for.
    Faulted = 3,
}

/// Where a thread is in an IPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IpcState {
    /// Not in an IPC.
    #[default]
    None,
    /// Queued to send on the endpoint at this address.
    Sending(u64),
    /// Queued to call (send, then wait for the reply) on this endpoint.
    Calling(u64),
    /// Queued to receive on this endpoint.
    Receiving(u64),
    /// Queued waiting on this notification.
    Waiting(u64),
    /// Its call was received; waiting for the reply.
    WaitingReply,
}

/// The thread control block: one 4 KiB object.
#[repr(C)]
pub struct Tcb {
    /// User FPU/SSE/AVX state (first: XSAVE wants 64-byte alignment).
    pub fpu: FpuArea,
    /// User registers, saved on every entry to the kernel.
    pub context: UserContext,
    /// The CSpace root capability, in a slot of its own so the derivation tree
    /// tracks it like any other copy.
    pub cspace_root: Slot,
    /// Scheduling state; written only by the owning CPU.
    pub state: ThreadState,
    /// Priority, 0 (lowest) to 255.
    pub priority: u8,
    /// The CPU that owns and runs the thread.
    pub cpu: u32,
    /// Run-queue links.
    pub links: RunLinks,
    /// In its CPU's run queue (only the owner CPU changes it).
    pub queued: bool,
    /// The address space's top-level table (physical), 0 for none.
    pub vspace: u64,
    /// The IPC buffer's user address, 0 for none.
    pub ipc_buffer: u64,
    /// Capability pointer of the fault-handler endpoint, 0 for none.
    pub fault_endpoint: u64,
    /// IPC state.
    pub ipc: IpcState,
    /// Next thread in the endpoint queue this thread waits in.
    pub ipc_next: Option<ThreadRef>,
    /// Badge of the capability a queued sender sent through.
    pub ipc_badge: u64,
    /// The thread this one owes a reply to.
    pub caller: Option<ThreadRef>,
    /// The thread that owes this one a reply (the other end of `caller`), so either
    /// side's death can clear the other's reference.
    pub replier: Option<ThreadRef>,
    /// A fault message waiting for the handler to receive it (vector, error, RIP,
    /// address, RSP), with the badge of the handler's endpoint capability.
    pub pending_fault: Option<([u64; 5], u64)>,
    /// TSC value at which the current time slice ends; 0 when none is running.
    pub slice_end_tsc: u64,
    /// The notification bound to this thread (physical address), 0 for none.
    pub bound_notification: u64,
    /// Faults this thread took (for tests and diagnostics).
    pub faults: u64,
    /// The last fault: vector, error code and address.
    pub last_fault: [u64; 3],
    /// What tracing records when the thread next runs.
    pub trace: crate::trace::ThreadTrace,
    /// The fastpath's last lookup in this thread's CSpace (rooted in `cspace_root`,
    /// whose CNode capability changes only with the generation; created afresh with
    /// the TCB, so a TCB reborn at the same address remembers nothing).
    pub lookup_memo: LookupMemo,
}

const _: () = assert!(core::mem::size_of::<Tcb>() <= 1 << TCB_BITS);

/// Offset of the CSpace-root slot inside a TCB.
pub const TCB_CSPACE_SLOT_OFFSET: u64 = core::mem::offset_of!(Tcb, cspace_root) as u64;

impl Tcb {
    fn new() -> Self {
        Self {
            fpu: FpuArea::initial(),
            context: UserContext::default(),
            cspace_root: Slot::default(),
            state: ThreadState::Inactive,
            priority: 0,
            cpu: 0,
            links: RunLinks::default(),
            queued: false,
            vspace: 0,
            ipc_buffer: 0,
            fault_endpoint: 0,
            ipc: IpcState::None,
            ipc_next: None,
            ipc_badge: 0,
            caller: None,
            replier: None,
            pending_fault: None,
            slice_end_tsc: 0,
            bound_notification: 0,
            faults: 0,
            last_fault: [0; 3],
            trace: crate::trace::ThreadTrace::new(),
            lookup_memo: LookupMemo::new(),
        }
    }
}

/// The TCB of `thread`.
///
/// The kernel's ownership rule makes this sound (module doc): only the owning CPU,
/// with interrupts off, or a capability operation under `CAP_LOCK` on an inactive
/// thread, touches a TCB; no caller keeps the reference across a point where another
/// could be made.
#[inline]
pub fn tcb(thread: ThreadRef) -> &'static mut Tcb {
    // SAFETY: ThreadRefs are built only from Thread capabilities (retype wrote a
    // `Tcb` there) or from run queues and endpoint queues that hold such threads; see
    // the ownership rule above.
    unsafe { phys::object_mut::<Tcb>(thread.addr()) }
}

/// The slot inside a TCB that holds its CSpace root.
pub fn cspace_slot(thread: ThreadRef) -> Option<SlotRef> {
    SlotRef::new(thread.addr() + TCB_CSPACE_SLOT_OFFSET)
}

/// Run-queue links live in TCBs.
pub struct TcbLinks;

impl ThreadLinks for TcbLinks {
    fn links(&self, thread: ThreadRef) -> RunLinks {
        tcb(thread).links
    }

    fn set_links(&mut self, thread: ThreadRef, links: RunLinks) {
        tcb(thread).links = links;
    }
}

/// Copies bytes into a frame (for loading programs and the boot-info page).
pub fn copy_to_frame(frame: PhysAddr, offset: u64, bytes: &[u8]) {
    if offset + bytes.len() as u64 > 4096 {
        return;
    }
    // SAFETY: `frame` is a 4 KiB frame the caller owns (boot memory given to the root
    // task, not yet mapped anywhere else), and the range was checked to lie inside it.
    unsafe { phys::copy_to(frame.0 + offset, bytes) }
}

/// Zeroes a frame the caller owns.
pub fn zero_frame(frame: PhysAddr, bytes: u64) {
    // SAFETY: as for `copy_to_frame`.
    unsafe { phys::zero(frame.0, bytes) }
}

/// A boot module's bytes.
pub fn module_bytes(addr: u64, len: u64) -> &'static [u8] {
    // SAFETY: boot modules lie in memory the frame allocator reserved for them at
    // boot, which nothing writes.
    unsafe { phys::bytes(addr, len) }
}

/// Switches this CPU to the address space `root` (a VSpace object, whose kernel half
/// `init_object` installed), or back to the kernel's own for 0.
#[inline]
pub fn activate_vspace(root: u64) {
    let root = if root == 0 { crate::cpus::machine().kernel_root } else { root };
    // SAFETY: every VSpace shares the kernel's upper half (install_kernel_half), so
    // the code and data in use stay mapped across the switch.
    unsafe { ramen_arch::paging::switch_to(root) };
}

/// Makes `thread`'s saved context the one this CPU returns to user mode with.
pub fn install_context(thread: ThreadRef) {
    let context: *mut UserContext = &mut tcb(thread).context;
    // SAFETY: the context lives in the TCB, which stays valid while the thread is
    // current here: deleting a thread first takes it off its CPU (`sched::forget`).
    unsafe { ramen_arch::user::set_current_context(context) };
}

/// Copies the kernel's half into a new VSpace.
pub fn install_kernel_half(root: u64) {
    let kernel_root = crate::cpus::machine().kernel_root;
    // SAFETY: `root` is the zeroed frame of a VSpace object retype just created.
    unsafe { ramen_arch::paging::copy_kernel_half(root, kernel_root) };
}

/// The page tables of the VSpace at `root`, for mapping.
pub fn address_space(root: u64) -> ramen_arch::paging::AddressSpace {
    // SAFETY: `root` comes from a VSpace capability (a PML4 object) or the root task
    // set-up, and capability operations that edit tables run under CAP_LOCK.
    unsafe { ramen_arch::paging::AddressSpace::from_root(root) }
}

/// Drops this CPU's TLB entry for a user address (after an unmap).
pub fn flush_tlb(vaddr: u64) {
    ramen_arch::paging::flush_local(vaddr);
}

/// The boot-information block the kernel fills for the root task.
pub fn boot_info(phys: u64) -> &'static mut ramen_abi::bootinfo::BootInfo {
    // SAFETY: `phys` is the start of `BootInfo::PAGES` zeroed, contiguous boot frames
    // reserved for this block (all-zero is a valid BootInfo: it holds only integers),
    // and the kernel writes it once, before the root task runs.
    unsafe { phys::object_mut(phys) }
}

/// Port I/O on behalf of an I/O-port capability: `width` is 1, 2 or 4 bytes.
pub fn port_out(port: u16, width: u8, value: u32) {
    use x86_64::instructions::port::Port;
    // SAFETY: the caller checked that the invoking capability covers the ports;
    // holding that capability is the authority to drive them.
    unsafe {
        match width {
            1 => Port::<u8>::new(port).write(value as u8),
            2 => Port::<u16>::new(port).write(value as u16),
            _ => Port::<u32>::new(port).write(value),
        }
    }
}

/// Port input on behalf of an I/O-port capability.
pub fn port_in(port: u16, width: u8) -> u32 {
    use x86_64::instructions::port::Port;
    // SAFETY: as for `port_out`.
    unsafe {
        match width {
            1 => u32::from(Port::<u8>::new(port).read()),
            2 => u32::from(Port::<u16>::new(port).read()),
            _ => Port::<u32>::new(port).read(),
        }
    }
}

/// The two words of a small object (an endpoint's queue).
pub fn phys_words(addr: u64) -> [u64; 2] {
    // SAFETY: `addr` comes from an endpoint capability: a 16-byte object retype zeroed,
    // read and written only under CAP_LOCK (IPC runs under it).
    unsafe { phys::read::<[u64; 2]>(addr) }
}

/// Writes the two words of a small object.
pub fn set_phys_words(addr: u64, words: [u64; 2]) {
    // SAFETY: as for `phys_words`.
    unsafe { phys::write::<[u64; 2]>(addr, words) }
}

/// The four words of a notification: signalled bits, waiter queue head and tail, and
/// the bound thread.
pub fn notification_words(addr: u64) -> [u64; 4] {
    // SAFETY: `addr` comes from a notification capability: a 32-byte object retype
    // zeroed, read and written only under CAP_LOCK.
    unsafe { phys::read::<[u64; 4]>(addr) }
}

/// Writes the four words of a notification.
pub fn set_notification_words(addr: u64, words: [u64; 4]) {
    // SAFETY: as for `notification_words`.
    unsafe { phys::write::<[u64; 4]>(addr, words) }
}
