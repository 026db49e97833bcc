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
use ramen_core::cap::Cap;
use ramen_core::cdt::Slot;
use ramen_core::lookup_cache::LookupMemo;
use ramen_core::mcs::McsLock;
use ramen_core::object::{CapType, ObjRef, ObjectStore, PhysAddr, SLOT_LOCK_OFFSET, SlotRef, TCB_BITS};
use ramen_core::runqueue::{RunLinks, ThreadLinks, ThreadRef};

/// The CSpace generation (see `ramen_core::lookup_cache`): read by every CPU's lookup
/// cache, written only by capability operations, which are rare.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Capability slots in physical memory. Zero-sized: the lock around it is the access
/// right.
pub struct Store;

/// Serialises capability-space changes (copy, move, delete, revoke, retype, map).
/// Not taken on the scheduling path; see `docs/concurrency.md`.
pub static CAP_LOCK: CapLock = CapLock(McsLock::new());

/// The lock around the capability store, in two modes.
///
/// - **Write** ([`CapLock::lock`]): capability changes, the IPC slow path, everything
///   but the fastpath. Writers exclude each other (a queue lock: `ramen_core::mcs`,
///   FIFO, each waiter spinning on its own CPU's cache line) and, once they hold it,
///   wait until no CPU is in a fastpath read section.
/// - **Read** ([`CapLock::read_fast`]): the IPC fastpath. A CPU raises its own
///   `reading` flag (its own cache line: readers never write a shared line), fences,
///   and proceeds only if no writer holds the mutex; otherwise it lowers the flag,
///   waits for the writer and tries again. The two fences make this the
///   store-buffering pattern: a writer either sees the flag and waits, or the reader
///   sees the writer and backs off. Readers exclude each other only per endpoint or
///   notification ([`EndpointLock`], [`NotificationLock`]; at most one of each, the
///   notification's first): the threads in IPC that two readers could both touch are
///   the ones queued on, or bound to, such an object.
///
/// Spinning for the write lock services TLB flush requests (`tlb`): the holder may be
/// waiting for this CPU's flush.
pub struct CapLock(McsLock<{ ramen_core::topology::MAX_CPUS }>);

/// The write side of [`CAP_LOCK`], held by the CPU that took it: the capability store,
/// mutably. Released when dropped.
pub struct CapGuard<'a> {
    lock: &'a CapLock,
    cpu: usize,
    store: Store,
    /// Released by the CPU that took it (its node in the queue lock).
    _here: core::marker::PhantomData<*const ()>,
}

impl core::ops::Deref for CapGuard<'_> {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl core::ops::DerefMut for CapGuard<'_> {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

impl Drop for CapGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.lock.0.unlock(self.cpu, core::hint::spin_loop);
    }
}

/// A fastpath read section (see [`CapLock`]); ends when dropped.
pub struct ReadGuard<'a> {
    flag: &'a core::sync::atomic::AtomicBool,
}

impl core::ops::Deref for ReadGuard<'_> {
    type Target = ReadStore;

    fn deref(&self) -> &ReadStore {
        &ReadStore
    }
}

impl Drop for ReadGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.flag.store(false, Ordering::Release);
    }
}

impl CapLock {
    /// Takes the lock for writing: one swap when it is free; otherwise this CPU
    /// queues and spins on its own line, serving what other CPUs may wait for
    /// meanwhile; then waits out fastpath readers.
    #[inline(always)]
    pub fn lock(&self) -> CapGuard<'_> {
        let cpu = ramen_arch::percpu::index_fast() as usize;
        let taken = self.0.lock(cpu, || {
            // The holder may be waiting for this CPU's TLB flush or held requests.
            crate::sched::service_while_waiting();
            core::hint::spin_loop();
        });
        // CPU indices are below `MAX_CPUS` by construction (`cpus::register`).
        assert!(taken, "a CPU index beyond MAX_CPUS");
        let guard = CapGuard { lock: self, cpu, store: Store, _here: core::marker::PhantomData };
        if let Some(cpu) = registered_cpu() {
            // Only this CPU writes its count: a plain load and store.
            let writes = &cpu.cap_writes;
            writes.store(writes.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        wait_for_readers();
        guard
    }

    /// Enters a fastpath read section on `cpu` (the running CPU). While a writer
    /// holds the lock it waits (flag down) and tries again: falling back to the slow
    /// path instead would make every fastpath a writer while any writer is about,
    /// which measured as a convoy (throughput collapsing from 6 pairs on 16 CPUs).
    #[inline(always)]
    pub fn read_fast<'a>(&self, cpu: &'a crate::cpus::Cpu) -> ReadGuard<'a> {
        // A swap, not a store and a fence: on x86 an `xchg` is a full barrier by
        // itself (one instruction for the pair).
        cpu.reading.swap(true, Ordering::SeqCst);
        if self.0.is_locked() {
            self.read_contended(cpu);
        }
        ReadGuard { flag: &cpu.reading }
    }

    #[cold]
    #[inline(never)]
    fn read_contended(&self, cpu: &crate::cpus::Cpu) {
        loop {
            cpu.reading.store(false, Ordering::Release);
            while self.0.is_locked() {
                // The writer may be waiting for this CPU's TLB flush.
                crate::sched::service_while_waiting();
                core::hint::spin_loop();
            }
            cpu.reading.store(true, Ordering::Relaxed);
            core::sync::atomic::fence(Ordering::SeqCst);
            if !self.0.is_locked() {
                return;
            }
        }
    }
}

/// The lock word of the slot `at` (its last 8 bytes, `SLOT_LOCK_OFFSET`), for the
/// capability changes that take no global lock (`ramen_core::light`): even when
/// free, odd while one such change holds the slot, and 2 more after each, so it is
/// also the slot's version: a read that finds the same even value before and after
/// it read a slot no such change was writing.
#[inline(always)]
fn slot_lock(at: SlotRef) -> &'static AtomicU64 {
    let virt = phys::direct_map(at.addr().0 + SLOT_LOCK_OFFSET);
    // SAFETY: slot addresses come from CNode capabilities (a live CNode's 64-byte
    // slots, which retype zeroed) or a TCB's CSpace-root slot (`Tcb::cspace_root_lock`
    // follows it); the last 8 bytes of a slot are this word, used only atomically.
    unsafe { &*(virt as *const AtomicU64) }
}

/// The slots one lock-free capability change holds (`ramen_core::light`): made in a
/// read section, which keeps every change that takes the write lock out meanwhile
/// (so the CNodes holding the slots, and the objects the capabilities name, stay
/// alive), and writes only the slots whose lock words it holds.
pub struct SlotChange<'a> {
    _section: &'a ReadGuard<'a>,
    /// Each held slot's address, the even value its word had when taken, and whether
    /// its capability was written (only then does its version move on: a neighbour
    /// whose links alone changed keeps it, and the lookup memos that trust it); at
    /// most four for a copy, move or delete (the capability's slot, the destination
    /// and two neighbours), seven for a retype (the untyped's slot and its `next`, the
    /// destination CNode's and `light::RETYPE_MAX_COUNT` destinations).
    held: [(u64, u64, bool); 8],
    count: usize,
}

impl<'a> SlotChange<'a> {
    /// A change made in the read section `section`, holding nothing yet.
    pub fn new(section: &'a ReadGuard<'a>) -> Self {
        Self { _section: section, held: [(0, 0, false); 8], count: 0 }
    }

    fn held(&mut self, at: SlotRef) -> Option<&mut (u64, u64, bool)> {
        self.held[..self.count].iter_mut().find(|(addr, ..)| *addr == at.addr().0)
    }

    fn holds(&self, at: SlotRef) -> bool {
        self.held[..self.count].iter().any(|(addr, ..)| *addr == at.addr().0)
    }
}

impl ramen_core::light::SlotLocks for SlotChange<'_> {
    fn try_lock(&mut self, at: SlotRef) -> bool {
        if self.holds(at) {
            return true;
        }
        if self.count == self.held.len() {
            return false;
        }
        let Some(now) = ramen_core::slotlock::try_take(slot_lock(at)) else {
            return false;
        };
        self.held[self.count] = (at.addr().0, now, false);
        self.count += 1;
        true
    }

    fn unlock_all(&mut self) {
        for &(addr, taken, written) in &self.held[..self.count] {
            if let Some(at) = SlotRef::new(addr) {
                // A slot whose capability did not change gets its old version back: a
                // read of the capability that straddled the hold read it whole (the
                // links it may have torn are not part of what a read section sees:
                // `ReadStore`).
                ramen_core::slotlock::release(slot_lock(at), taken, written);
            }
        }
        self.count = 0;
    }
}

impl ObjectStore for SlotChange<'_> {
    fn slot(&self, at: SlotRef) -> Slot {
        if self.holds(at) {
            // SAFETY: as in `Store::slot`; held, so nothing else writes it (and its
            // odd word would make the seqlock read wait for ever).
            unsafe { phys::read::<Slot>(at.addr().0) }
        } else {
            ReadStore.slot(at)
        }
    }

    fn set_slot(&mut self, at: SlotRef, slot: Slot) {
        // `ramen_core::light` writes only slots it locked (its host tests check every
        // access); anything else would race with other changes.
        let Some(held) = self.held(at) else {
            panic!("a lock-free capability change wrote a slot it does not hold");
        };
        held.2 = true;
        // SAFETY: as in `Store::slot`; this change holds the slot's lock word.
        unsafe { phys::write::<Slot>(at.addr().0, slot) }
    }

    fn set_links(&mut self, at: SlotRef, slot: Slot) {
        // Its version stays (see `unlock_all`).
        assert!(self.holds(at), "a lock-free capability change wrote a slot it does not hold");
        // SAFETY: as in `Store::slot`; this change holds the slot's lock word.
        unsafe { phys::write::<Slot>(at.addr().0, slot) }
    }

    fn version(&self, at: SlotRef) -> u64 {
        slot_lock(at).load(Ordering::Acquire)
    }

    fn init_object(&mut self, obj: ObjRef) {
        // A lock-free retype's new object: memory above the untyped's watermark,
        // which nothing references (no capability, so no read section reaches it).
        init_object_memory(obj);
    }

    fn generation(&self) -> u64 {
        GENERATION.load(Ordering::Acquire)
    }

    fn bump_generation(&mut self) {
        // A lock-free retype made a CNode: lookups cached before it are dropped (the
        // slot write came first, as `cdt` orders it).
        GENERATION.fetch_add(1, Ordering::AcqRel);
    }

    fn may_delete(&self, cap: &Cap, _is_final: bool) -> Result<(), ramen_abi::Error> {
        // Nothing pins an endpoint, a notification, a thread or an unmapped frame (the
        // write lock's `Store` asks the page tables about mapped frames and tables).
        debug_assert!(ramen_core::light::is_light(cap));
        Ok(())
    }

    fn remove_mapping(&mut self, _cap: &Cap) {
        unreachable!("a lock-free capability change moves no mapped capability");
    }

    fn thread_slot(&self, thread: PhysAddr) -> Option<SlotRef> {
        ThreadRef::new(thread.0).and_then(cspace_slot)
    }
}

/// Prepares a freshly retyped object's memory (`ObjectStore::init_object`), for the
/// write lock's retype and a lock-free one alike.
fn init_object_memory(obj: ObjRef) {
    let bytes = 1u64 << obj.size_bits;
    // SAFETY: retype hands us memory it just carved out of an untyped region: owned by
    // the new object, referenced by nothing yet.
    unsafe { phys::zero(obj.addr.0, bytes) };
    match obj.kind {
        CapType::Thread => {
            // SAFETY: the TCB's memory, just zeroed, 4 KiB-aligned (TCB_BITS).
            unsafe { phys::write(obj.addr.0, Tcb::new()) };
        }
        CapType::VSpace => {
            install_kernel_half(obj.addr.0);
            vspace_generation(obj.addr.0).store(crate::tlb::new_generation(), Ordering::SeqCst);
        }
        _ => {}
    }
}

/// Capability slots as a `CAP_LOCK` read section sees them: read-only, and read as
/// a seqlock, since the lock-free capability changes (`ramen_core::light`, through
/// [`SlotChange`]) write slots while read sections run. The write lock's [`Store`]
/// reads plainly: no such change runs while a writer holds it.
pub struct ReadStore;

impl ObjectStore for ReadStore {
    /// The slot's capability; its derivation links read as none (a lock-free change
    /// may be rewriting a neighbour's links without a new version: nothing in a read
    /// section may rely on them).
    #[inline(always)]
    fn slot(&self, at: SlotRef) -> Slot {
        self.read_versioned(at).0
    }

    #[inline(always)]
    fn version(&self, at: SlotRef) -> u64 {
        slot_lock(at).load(Ordering::Acquire)
    }

    /// A seqlock read: in a read section a slot may be changing (a change that holds
    /// its lock word, `ramen_core::light`). The version returned is even and was the
    /// slot's throughout the read.
    #[inline(always)]
    fn read_versioned(&self, at: SlotRef) -> (Slot, u64) {
        let (slot, version) = ramen_core::slotlock::read(
            slot_lock(at),
            // SAFETY: slot addresses come from CNode capabilities (inside a live
            // CNode, which retype zeroed: zero is the empty slot) or a TCB's
            // CSpace-root slot; the CNode (or TCB) stays alive while the read section
            // lasts (no writer runs). The read may race with a light change of the
            // slot; the version check discards it then (every field is valid whatever
            // it mixes: no field is torn below a byte, an enum's or a bool's, or an
            // 8-byte-aligned word).
            || unsafe { phys::read::<Slot>(at.addr().0) },
            core::hint::spin_loop,
        );
        (slot.without_links(), version)
    }

    fn set_slot(&mut self, _at: SlotRef, _slot: Slot) {
        unreachable!("a read section writes no slot through its store");
    }

    fn init_object(&mut self, _obj: ObjRef) {
        unreachable!("a read section makes no object");
    }

    fn generation(&self) -> u64 {
        GENERATION.load(Ordering::Acquire)
    }

    fn bump_generation(&mut self) {
        unreachable!("a read section changes no CSpace");
    }
}

impl ObjectStore for Store {
    fn slot(&self, at: SlotRef) -> Slot {
        // SAFETY: slot addresses come from CNode capabilities (inside a live CNode,
        // which retype zeroed: zero is the empty slot) or a TCB's CSpace-root slot;
        // writers hold CAP_LOCK, as the `&self` borrow of the store proves here, and
        // no lock-free change (`ReadStore`) runs while a writer holds it.
        unsafe { phys::read::<Slot>(at.addr().0) }
    }

    fn set_slot(&mut self, at: SlotRef, slot: Slot) {
        // SAFETY: as above; `&mut self` proves we hold CAP_LOCK.
        unsafe { phys::write::<Slot>(at.addr().0, slot) }
        // A new version (even: no lock-free change holds a slot while a writer holds
        // CAP_LOCK), so that a thread's lookup memo stops trusting its copy.
        let version = slot_lock(at);
        version.store(version.load(Ordering::Relaxed) + 2, Ordering::Release);
    }

    fn set_links(&mut self, at: SlotRef, slot: Slot) {
        // The same version: links are not part of what a read section sees.
        // SAFETY: as above.
        unsafe { phys::write::<Slot>(at.addr().0, slot) }
    }

    fn version(&self, at: SlotRef) -> u64 {
        slot_lock(at).load(Ordering::Acquire)
    }

    fn init_object(&mut self, obj: ObjRef) {
        init_object_memory(obj);
    }

    fn may_delete(&self, cap: &Cap, is_final: bool) -> Result<(), ramen_abi::Error> {
        let pinned = match cap.kind() {
            CapType::Frame4K | CapType::Frame2M => cap
                .mapping()
                .and_then(|(root, packed)| crate::asid::resolve(self, root.0, packed))
                .is_some_and(|(root, vaddr)| address_space(root).is_pinned(vaddr)),
            // The last capability, or the one whose deletion unlinks the table.
            // Threads still configured to run in it keep it (they must be deleted or
            // reconfigured first), like pinned entries do.
            CapType::VSpace if is_final => {
                crate::asid::threads(self, cap.addr().0) != 0
                    || ramen_arch::paging::table_has_pins(cap.addr().0, 4)
            }
            kind @ (CapType::Pdpt | CapType::PageDirectory | CapType::PageTable)
                if is_final || cap.mapping().is_some() =>
            {
                ramen_arch::paging::table_has_pins(cap.addr().0, table_level(kind))
            }
            _ => false,
        };
        if pinned { Err(ramen_abi::Error::Busy) } else { Ok(()) }
    }

    fn thread_slot(&self, thread: PhysAddr) -> Option<SlotRef> {
        ThreadRef::new(thread.0).and_then(cspace_slot)
    }

    fn remove_mapping(&mut self, cap: &Cap) {
        use ramen_arch::paging::PageSize;
        let Some((root, vaddr)) =
            cap.mapping().and_then(|(root, packed)| crate::asid::resolve(self, root.0, packed))
        else {
            // The address space is gone: so is the mapping.
            return;
        };
        if !matches!(cap.kind(), CapType::Frame4K | CapType::Frame2M) {
            // A table: unlink it from its parent if it is still there. Whatever it
            // mapped becomes unreachable at once, so every CPU with the space loaded
            // flushes everything.
            if address_space(root).uninstall_table(vaddr, table_level(cap.kind()), cap.addr().0) {
                crate::tlb::shoot_down_all(root);
            }
            return;
        }
        let size = if cap.kind() == CapType::Frame2M { PageSize::Size2M } else { PageSize::Size4K };
        let mut space = address_space(root);
        // Only if the entry still maps this frame (`may_delete` refused pinned ones).
        let frame = cap.addr().0;
        if space.translate(vaddr).is_some_and(|(phys, _)| phys & !(size.bytes() - 1) == frame)
            && space.unmap(vaddr, size).is_ok()
        {
            crate::tlb::shoot_down(root, core::iter::once(vaddr));
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
    /// Destroyed and forgotten by its CPU (`sched::forget`); its memory waits to be
    /// reused. A request about it still on its way (one another CPU forwards from
    /// its inbox) finds this and is dropped (`sched::handle`); the memory waits for
    /// those too (`Tcb::requests`).
    Dead = 4,
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
    /// The lock word of that slot, where every CNode slot has its own (its last 8
    /// bytes: `SLOT_LOCK_OFFSET`); see `slot_lock`.
    pub cspace_root_lock: AtomicU64,
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
    /// The priority level it was queued at (set by `sched::push`, used to take it
    /// off): `SET_PRIORITY` of an inactive thread may race with a `RESUME` that its
    /// owner is serving, and a priority changed while the thread is queued must not
    /// send the removal to another level's list. A new priority counts from the next
    /// time the thread is queued.
    pub queued_at: u8,
    /// The address space's top-level table (physical), 0 for none.
    pub vspace: u64,
    /// The IPC buffer's user address, 0 for none.
    pub ipc_buffer: u64,
    /// Whether the endpoint capability this thread last received on has the grant
    /// right: its replies may then transfer capabilities (as seL4's reply
    /// capabilities inherit the receiver's grant right).
    pub recv_grant: bool,
    /// Where the leases of calls this thread receives are mapped (0: nowhere), and
    /// how many pages the window has.
    pub lease_window: u64,
    pub lease_window_pages: u64,
    /// The leases of this thread's call in flight.
    pub leases: crate::lease::Held,
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
    /// The endpoint this thread, bound to a notification, waits on as a receiver; 0
    /// when it waits on none. Set with the notification's lock held (or under the
    /// write lock) as it blocks, cleared by whoever takes it off the endpoint's queue
    /// (with the endpoint's lock): a signal finds it here, with the notification's
    /// lock, then takes the endpoint's lock and checks (`fastpath::signal_bound`).
    /// Never stale once the thread has left the queue, so the endpoint it names is
    /// alive for as long as a read section sees it (a destroy clears it first).
    pub bound_wait: core::sync::atomic::AtomicU64,
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
    /// The lookup `lookup_memo` held before its last refill (same rules): a thread
    /// that alternates between two capabilities (wait on one, signal another; a
    /// server's endpoint and its notification) finds both without a walk.
    pub lookup_memo_prev: LookupMemo,
    /// Requests naming this thread that some CPU's inbox holds or a CPU is handling
    /// (`sched::post` counts one up, the CPU that handles it counts it down last):
    /// a destroyed thread's memory is reused only once this is 0 (see
    /// [`destroyed_thread_in_flight`]).
    pub requests: core::sync::atomic::AtomicU32,
    /// The next destroyed thread on the list of those whose memory waits
    /// (`objects::DESTROYED`; only while this one is listed).
    pub dead_next: u64,
    /// The CPU (index + 1; 0: none) whose system call destroyed this thread while
    /// another CPU owned it, and which waits for the owner to take it off before it
    /// returns to user mode (`sched::await_stopped`).
    pub destroyed_by: u32,
}

const _: () = assert!(core::mem::size_of::<Tcb>() <= 1 << TCB_BITS);

/// Offset of the CSpace-root slot inside a TCB.
pub const TCB_CSPACE_SLOT_OFFSET: u64 = core::mem::offset_of!(Tcb, cspace_root) as u64;
const _: () = assert!(
    core::mem::offset_of!(Tcb, cspace_root_lock) as u64 == TCB_CSPACE_SLOT_OFFSET + SLOT_LOCK_OFFSET,
    "a TCB's CSpace-root slot is laid out like a CNode slot, lock word last"
);

impl Tcb {
    fn new() -> Self {
        Self {
            fpu: FpuArea::initial(),
            context: UserContext::default(),
            cspace_root: Slot::default(),
            cspace_root_lock: AtomicU64::new(0),
            state: ThreadState::Inactive,
            priority: 0,
            cpu: 0,
            links: RunLinks::default(),
            queued: false,
            queued_at: 0,
            vspace: 0,
            ipc_buffer: 0,
            recv_grant: false,
            lease_window: 0,
            lease_window_pages: 0,
            leases: crate::lease::Held::none(),
            fault_endpoint: 0,
            ipc: IpcState::None,
            ipc_next: None,
            ipc_badge: 0,
            caller: None,
            replier: None,
            pending_fault: None,
            slice_end_tsc: 0,
            bound_notification: 0,
            bound_wait: core::sync::atomic::AtomicU64::new(0),
            faults: 0,
            last_fault: [0; 3],
            trace: crate::trace::ThreadTrace::new(),
            lookup_memo: LookupMemo::new(),
            lookup_memo_prev: LookupMemo::new(),
            requests: core::sync::atomic::AtomicU32::new(0),
            dead_next: 0,
            destroyed_by: 0,
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

/// Copies the start of a 4 KiB frame that user space may be writing (a user trace
/// buffer) into `out`; the bytes are untrusted.
pub fn copy_from_user_frame(frame: PhysAddr, out: &mut [u8]) {
    if out.len() > 4096 {
        return;
    }
    // SAFETY: `frame` is a 4 KiB frame a live capability names (the caller keeps it
    // from being deleted meanwhile), so the range is RAM in the direct map.
    unsafe { phys::copy_from_shared(frame.0, out) }
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

/// A thread's IPC buffer page, reached through the direct map.
///
/// Built only from a translation of the thread's own page tables that found a
/// present, user-accessible, writable 4 KiB-or-larger page, under `CAP_LOCK`: its
/// write side, or a fastpath read section (every unmap and frame deletion takes the
/// write side, which waits out every read section, so the frame cannot go away while
/// the IPC operation uses it). Words are read and written one at a
/// time and volatile: user threads of that address space may touch the page at the
/// same time, and what they see is then theirs to sort out.
#[derive(Clone, Copy, Debug)]
pub struct IpcBufferPage {
    phys: u64,
}

impl IpcBufferPage {
    /// The IPC buffer of `thread`, if it has one mapped user-writable.
    pub fn of(thread: ThreadRef) -> Option<Self> {
        use x86_64::structures::paging::PageTableFlags as Flags;
        let t = tcb(thread);
        if t.ipc_buffer == 0 || t.vspace == 0 {
            return None;
        }
        let (phys, flags) = address_space(t.vspace).translate(t.ipc_buffer)?;
        let wanted = Flags::PRESENT | Flags::USER_ACCESSIBLE | Flags::WRITABLE;
        // The buffer address is 4 KiB aligned (configure checks), so the page holds
        // all `WORDS` words whatever the page size.
        flags.contains(wanted).then_some(Self { phys })
    }

    /// Word `index`, or 0 past the end of the buffer.
    pub fn read(self, index: usize) -> u64 {
        if index >= ramen_abi::ipc_buffer::WORDS {
            return 0;
        }
        let virt = ramen_arch::phys::direct_map(self.phys + 8 * index as u64);
        // SAFETY: the word lies inside a user frame that stays allocated while
        // CAP_LOCK is held, on either side (type doc; a writer waits out every read
        // section before it unmaps or frees anything); a volatile u64 read of user
        // memory cannot produce an invalid value.
        unsafe { core::ptr::read_volatile(virt as *const u64) }
    }

    /// Writes word `index` (ignored past the end of the buffer).
    pub fn write(self, index: usize, value: u64) {
        if index >= ramen_abi::ipc_buffer::WORDS {
            return;
        }
        let virt = ramen_arch::phys::direct_map(self.phys + 8 * index as u64);
        // SAFETY: as for `read`; the page is mapped writable for its owner, who
        // asked for the message to be written there.
        unsafe { core::ptr::write_volatile(virt as *mut u64, value) }
    }
}

/// Moves a CPU's kernel data into the frames at `phys`, which the boot allocator
/// just handed out for it, and returns it for good.
pub fn place_cpu(phys: u64, cpu: crate::cpus::Cpu) -> &'static crate::cpus::Cpu {
    // SAFETY: `phys` starts enough fresh, page-aligned frames for a `Cpu`, reserved
    // for it in the boot allocator (so never handed to user space as untyped) and
    // reachable through the direct map; nothing else refers to them.
    unsafe {
        phys::write(phys, cpu);
        phys::object_mut::<crate::cpus::Cpu>(phys)
    }
}

/// The running CPU's entry, as [`place_cpu`] returned it and `cpus::register` stored
/// its address in the CPU's block (`ramen_arch::percpu::set_kernel_cpu`): one GS
/// load. `None` before the CPU registered.
#[inline(always)]
pub fn registered_cpu() -> Option<&'static crate::cpus::Cpu> {
    let entry = ramen_arch::percpu::kernel_cpu_fast() as *const crate::cpus::Cpu;
    // SAFETY: the block's `kernel_cpu` field is 0 until `cpus::register` stores the
    // address of the `&'static Cpu` that `place_cpu` made for this very CPU (never
    // freed or moved); nothing else writes the field.
    unsafe { entry.as_ref() }
}

/// Makes the frames at `phys` (fresh from the boot allocator, reserved for one CPU's
/// entry) an empty trace ring and returns it for good.
pub fn place_trace_ring(phys: u64) -> &'static crate::trace::Ring {
    let bytes = core::mem::size_of::<crate::trace::Ring>() as u64;
    // SAFETY: `phys` is page-aligned (so 64-byte aligned, as the ring needs), starts
    // `bytes` of boot frames reserved for this CPU and never handed to user space,
    // reachable through the direct map; nothing else refers to them. All-zero memory
    // is a valid empty ring (overwrite mode): the ring is atomics only, and
    // `ramen_perf_record` documents and tests that its empty state is all zeros.
    unsafe {
        phys::zero(phys, bytes);
        phys::object_mut::<crate::trace::Ring>(phys)
    }
}

/// A writer that holds the mutex waits until every CPU has left its fastpath read
/// section (new ones back off when they see the mutex held).
#[inline(never)]
fn wait_for_readers() {
    core::sync::atomic::fence(Ordering::SeqCst);
    let here = ramen_arch::percpu::index_fast();
    for index in 0..crate::cpus::INDEX_BOUND.load(Ordering::Acquire) {
        if index == here {
            continue;
        }
        if let Some(cpu) = crate::cpus::cpu(index) {
            while cpu.reading.load(Ordering::Acquire) {
                crate::sched::service_while_waiting();
                core::hint::spin_loop();
            }
        }
    }
}

/// Per-endpoint exclusion between fastpaths on different CPUs: the endpoint's third
/// word, in the cache line of its queue (an endpoint is one line: `ENDPOINT_BITS`),
/// so taking it touches no line the queue does not. Writers of `CAP_LOCK` need none:
/// they exclude every fastpath. A notification has the same kind of lock in its
/// fifth word (`NotificationLock`).
pub struct EndpointLock {
    lock: &'static core::sync::atomic::AtomicBool,
}

/// The lock word of the notification at a physical address (its fifth word, in its
/// own cache line), taken by the fastpath's signal and wait: see [`EndpointLock`].
pub type NotificationLock = EndpointLock;

impl EndpointLock {
    /// Locks the endpoint at physical address `endpoint`.
    #[inline(always)]
    pub fn take(endpoint: u64) -> Self {
        Self::at(endpoint + 16)
    }

    /// Locks the notification at physical address `notification`.
    #[inline(always)]
    pub fn notification(notification: u64) -> Self {
        Self::at(notification + 32)
    }

    #[inline(always)]
    fn at(word: u64) -> Self {
        let virt = ramen_arch::phys::direct_map(word);
        // SAFETY: `word` is the lock word of an endpoint (third word) or notification
        // (fifth) whose capability was resolved in a fastpath read section (no writer
        // can delete it meanwhile): a 64-byte object retype zeroed, whose lock word
        // nothing else uses, as an atomic byte.
        let lock = unsafe { &*(virt as *const core::sync::atomic::AtomicBool) };
        if lock.swap(true, Ordering::Acquire) {
            Self::spin(lock);
        }
        Self { lock }
    }

    #[cold]
    #[inline(never)]
    fn spin(lock: &core::sync::atomic::AtomicBool) {
        while lock.swap(true, Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
}

impl Drop for EndpointLock {
    #[inline(always)]
    fn drop(&mut self) {
        self.lock.store(false, Ordering::Release);
    }
}

/// Destroyed threads whose memory must not be reused yet: a CPU may still run one
/// (its owner has not served the `Forget` request), or a request naming it still
/// sits in an inbox or is being handled (a wake-up forwarded after a migration, an
/// adoption): each would read or write the TCB. A thread leaves once it is `Dead`
/// (its owner forgot it) and its request count is 0; until then
/// `retype_would_reuse_running_thread` refuses the memory. A list through the TCBs
/// themselves (`Tcb::dead_next`; their memory is theirs while listed), so it has no
/// bound: a destroy, which holds `CAP_LOCK`, never waits for room (the CPUs that
/// would make room may be spinning for `CAP_LOCK`). Holds the first TCB's address
/// (0: empty).
static DESTROYED: spin::Mutex<u64> = spin::Mutex::new(0);

/// Records that the thread at `addr` was destroyed while it may still be in use
/// (owned by another CPU, or named by a request not yet handled); `awaited`: this
/// CPU waits for its owner to take it off before returning to user mode.
pub fn destroyed_thread_in_flight(addr: u64, awaited: bool) {
    let Some(thread) = ThreadRef::new(addr) else { return };
    let mut head = DESTROYED.lock();
    settle_destroyed(&mut head);
    let t = tcb(thread);
    t.dead_next = *head;
    t.destroyed_by = if awaited { ramen_arch::percpu::index_fast() + 1 } else { 0 };
    *head = addr;
}

/// True once nothing can touch the destroyed thread at `addr` again: its owner
/// forgot it and no request names it.
fn destroyed_thread_settled(thread: ThreadRef) -> bool {
    let t = tcb(thread);
    // Acquire: the last handler's count-down comes after its last access to the TCB
    // (the owner's `forget` among them), so those happened before this reads.
    t.requests.load(Ordering::Acquire) == 0 && t.state == ThreadState::Dead
}

/// Takes the threads nothing can touch any more off the list.
fn settle_destroyed(head: &mut u64) {
    let mut prev: Option<ThreadRef> = None;
    let mut at = *head;
    while let Some(thread) = ThreadRef::new(at) {
        let next = tcb(thread).dead_next;
        if destroyed_thread_settled(thread) {
            match prev {
                Some(p) => tcb(p).dead_next = next,
                None => *head = next,
            }
        } else {
            prev = Some(thread);
        }
        at = next;
    }
}

/// True if `f` holds for a listed destroyed thread (the list locked).
fn any_destroyed(head: &u64, mut f: impl FnMut(ThreadRef) -> bool) -> bool {
    let mut at = *head;
    while let Some(thread) = ThreadRef::new(at) {
        if f(thread) {
            return true;
        }
        at = tcb(thread).dead_next;
    }
    false
}

/// True if retyping `[base, base + bytes)` could reuse the memory of a destroyed
/// thread that a CPU may still run or a request may still name.
pub fn retype_would_reuse_running_thread(base: u64, bytes: u64) -> bool {
    let mut head = DESTROYED.lock();
    settle_destroyed(&mut head);
    any_destroyed(&head, |t| t.addr() >= base && t.addr() - base < bytes)
}

/// Destroyed threads whose memory still waits (listed in [`DESTROYED`] after the
/// settled ones are taken off): 0 once every CPU has forgotten every destroyed thread
/// and every request naming one has been handled.
#[cfg(test)]
pub fn destroyed_threads_waiting() -> usize {
    let mut head = DESTROYED.lock();
    settle_destroyed(&mut head);
    let mut count = 0;
    any_destroyed(&head, |_| {
        count += 1;
        false
    });
    count
}

/// True while a thread this CPU destroyed (and awaits) may still run on its owner:
/// listed and not yet forgotten there (a listed thread's memory is still its own).
pub fn destroyed_here_may_run() -> bool {
    let me = ramen_arch::percpu::index_fast() + 1;
    let head = DESTROYED.lock();
    any_destroyed(&head, |t| {
        let t = tcb(t);
        t.destroyed_by == me && t.state != ThreadState::Dead
    })
}

/// The paging level of a table object (1: last-level page table ... 4: VSpace).
pub fn table_level(kind: CapType) -> u32 {
    match kind {
        CapType::VSpace => 4,
        CapType::Pdpt => 3,
        CapType::PageDirectory => 2,
        _ => 1,
    }
}

/// The ASID tag of the VSpace at `root` (a non-present entry of its top-level table;
/// see `asid`).
pub fn vspace_tag(root: u64) -> u64 {
    // SAFETY: `root` is a live VSpace object (a capability or a resolved mapping
    // record names it), a 4 KiB table; the entry is kernel-half memory only the
    // kernel writes, under CAP_LOCK.
    unsafe { phys::read::<u64>(root + 8 * crate::asid::TAG_INDEX as u64) }
}

/// Sets the ASID tag of the VSpace at `root` (bit 0 clear: never present).
pub fn set_vspace_tag(root: u64, tag: u64) {
    // SAFETY: as for `vspace_tag`; the MMU ignores a non-present entry.
    unsafe { phys::write::<u64>(root + 8 * crate::asid::TAG_INDEX as u64, tag & !1) }
}

/// The TLB generation of the VSpace at `root` (see `tlb`): a kernel-half entry of its
/// top-level table that is never present, read and written atomically (a switch
/// reads it without `CAP_LOCK`).
pub fn vspace_generation(root: u64) -> &'static core::sync::atomic::AtomicU64 {
    // SAFETY: `root` is a live VSpace (a thread configured in it, or a capability or
    // resolved mapping record names it), a 4 KiB table whose entry
    // `GENERATION_INDEX` only the kernel touches, and only through this atomic; an
    // aligned 8-byte word is a valid `AtomicU64`.
    unsafe {
        phys::object_mut::<core::sync::atomic::AtomicU64>(root + 8 * crate::tlb::GENERATION_INDEX as u64)
    }
}

/// Writes CR3 (a root with PCID bits, and bit 63 to keep that PCID's entries).
pub fn activate_cr3(cr3: u64) {
    // SAFETY: the root is a VSpace's (`tlb::switch_space`), which shares the kernel's
    // upper half (install_kernel_half); PCIDs are on when PCID bits are set.
    unsafe { ramen_arch::paging::switch_to(cr3) };
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
    // SAFETY: `addr` comes from an endpoint capability: a 64-byte object retype zeroed,
    // read and written under CAP_LOCK, or in a fastpath read section holding the
    // endpoint's own lock (`EndpointLock`).
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
    // SAFETY: `addr` comes from a notification capability: a 64-byte object retype
    // zeroed, read and written under CAP_LOCK's write side, or in a fastpath read
    // section with the notification's lock held.
    unsafe { phys::read::<[u64; 4]>(addr) }
}

/// Writes the four words of a notification.
pub fn set_notification_words(addr: u64, words: [u64; 4]) {
    // SAFETY: as for `notification_words`.
    unsafe { phys::write::<[u64; 4]>(addr, words) }
}
