//! Kernel tracing: each CPU records its own events into its own trace ring, and a
//! dump request writes every ring to the trace port (COM2) in the `perf` dump format.
//!
//! What is recorded (docs/tracing.md has the record layout and every kind's
//! arguments): system-call entry and exit, IPC send / receive / reply with a flow id
//! that ties the two ends together across CPUs, context switches, interrupts, wake-up
//! IPIs (sent and received, also tied by a flow id), user page faults and thread
//! migrations.
//!
//! Control: only through the `TraceControl` capability (`trace_control::START` /
//! `STOP` / `DUMP`, dispatched in `invoke.rs`), which the root task alone gets at boot.
//!
//! Cost when compiled in but off: the system-call handler has two builds
//! (`syscall::handle_syscall::<TRACED>`); while tracing is off the one installed has
//! no trace point in the IPC fastpath at all, and `start` / `stop` swap them. Every
//! other call site first loads [`ENABLED`] (a word written only by the control
//! operations, so it sits read-only in every CPU's cache) and tests its category:
//! one load, one test, one branch.
//!
//! Ownership, with no lock on the recording path: CPU `i`'s ring is
//! `cpus::CPUS[i].trace`, in that CPU's entry. Two phases alternate:
//! - while [`ENABLED`] is non-zero only CPU `i` touches its ring, and only right
//!   after reading a non-zero [`ENABLED`] in the same stretch of kernel code (no
//!   interrupt, spin or wait between the check and the record: the kernel runs with
//!   interrupts off);
//! - the control operations (`start` clearing, `dump` reading) touch other CPUs'
//!   rings only after [`quiesce`]: [`ENABLED`] cleared, then every CPU made to
//!   answer a request (the TLB shootdown's, `tlb::sync_all`) which a CPU answers only
//!   between kernel stretches or while it spins, never between a check and its
//!   record. After that no CPU can be inside a record, and none starts one until
//!   [`ENABLED`] is set again. Control operations are serialised by [`CONTROL`].
//!
//! Thread ids in records are TCB physical addresses shifted right by `TCB_BITS`
//! (TCBs are 4 KiB-aligned, so the id is unique and fits 32 bits for 16 TiB of
//! memory); 0 is idle. A named thread's name (`thread::SET_NAME`, kept in its TCB) is
//! recorded as a `ThreadName` record the first time the thread runs in a trace, or at
//! once when it is named while tracing runs; a ring that wraps can lose it (the
//! thread then shows by id).
//!
//! User buffers: a thread given one (`thread::SET_TRACE_BUFFER`, a 4 KiB frame it
//! maps itself) appends user records there without a system call. The kernel keeps a
//! table of them, rewrites each header's enabled categories at start and stop, and
//! copies the records into the dump after sanitising them.
//!
//! Each CPU's TSC offset from the boot CPU is measured at bring-up (a handshake,
//! fastest of 16 rounds) and written into the dump.

use core::sync::atomic::Ordering::{self, Relaxed};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use ramen_abi::Error;
use ramen_abi::invocation::thread::TRACE_BUFFER_RECORDS;
use ramen_abi::invocation::trace_control;
use ramen_core::object::PhysAddr;
use ramen_core::object::TCB_BITS;
use ramen_core::runqueue::ThreadRef;
pub use ramen_perf_record::ThreadName;
use ramen_perf_record::dump::{DumpWriter, SOURCE_CORE, SOURCE_THREAD};
use ramen_perf_record::user_buffer::{self, ENABLED_OFFSET, USER_HEADER_BYTES, UserBufferView};
use ramen_perf_record::{
    Batch, Categories, EventKind, FullPolicy, IDLE_THREAD, IpcInfo, IpcPath, Record, TraceRing,
};

use crate::cpus::{self, Cpu, this_cpu};
use crate::objects::{self, tcb};

/// Records per CPU ring (32 bytes each: 128 KiB per CPU). Each CPU's ring sits in
/// the frames of its own CPU entry, in its node's memory, taken at bring-up for the
/// CPUs present (`cpus::register`); enough for a few hundred IPC round trips per CPU
/// with every category on before the oldest records are overwritten (counted as lost
/// in the dump).
pub const RING_RECORDS: usize = 4096;

/// A CPU's trace ring.
pub type Ring = TraceRing<RING_RECORDS>;

/// The categories being recorded, on every CPU; 0 when tracing is off.
static ENABLED: AtomicU32 = AtomicU32::new(0);

/// Serialises the control operations (`start`, `stop`, `dump`, `set_name` while
/// tracing runs is not one: it records like any event).
static CONTROL: spin::Mutex<()> = spin::Mutex::new(());

/// Which trace this is: `start` counts up, so a thread whose `named_in` differs has
/// not had its name recorded in this trace yet. Starts at 1 (a new TCB says 0).
static EPOCH: AtomicU32 = AtomicU32::new(1);

/// Most threads with a user trace buffer at once.
pub const MAX_USER_BUFFERS: usize = 64;

/// Bytes of a user trace buffer: one 4 KiB frame.
const USER_BUFFER_BYTES: usize = 4096;

/// A thread's user trace buffer (`thread::SET_TRACE_BUFFER`).
#[derive(Clone, Copy)]
struct UserBuffer {
    thread: ThreadRef,
    frame: PhysAddr,
}

/// Every registered user buffer, and a frame-sized scratch area to build headers in
/// and copy buffers out to (rather than 4 KiB on a kernel stack).
struct UserBuffers {
    table: [Option<UserBuffer>; MAX_USER_BUFFERS],
    scratch: [u8; USER_BUFFER_BYTES],
}

/// Taken after `CAP_LOCK` when both are held (registration and `tear_down`), alone by
/// the control operations. A buffer's frame stays registered only while a capability
/// to it exists: its deletion unregisters it under this lock, so the kernel never
/// touches a frame after it went back to untyped memory.
static USER_BUFFERS: spin::Mutex<UserBuffers> =
    spin::Mutex::new(UserBuffers { table: [None; MAX_USER_BUFFERS], scratch: [0; USER_BUFFER_BYTES] });

/// One CPU's tracing state (in its `cpus::Cpu` entry). It needs no lock: its fields
/// are atomics used with plain loads and stores, and the module doc's two-phase rule
/// keeps the owning CPU (the only writer while tracing runs) and the control
/// operations apart.
pub struct CpuTrace {
    ring: &'static Ring,
    /// `cpu << 16 | running << 32`: the head of a record about the thread this CPU
    /// runs (as of its last recorded switch; 0: idle or unknown), less the kind
    /// (`Record::head`). Set for this CPU's index at `start`.
    head: AtomicU64,
    /// The last flow id handed out on this CPU: `cpu << 48 | counter`.
    flows: AtomicU64,
}

impl CpuTrace {
    /// Tracing state around `ring` (empty, in overwrite mode: zeroed memory).
    pub const fn new(ring: &'static Ring) -> Self {
        Self { ring, head: AtomicU64::new(0), flows: AtomicU64::new(0) }
    }

    /// Records `kind` about the running thread.
    #[inline(always)]
    fn push(&self, kind: EventKind, args: [u64; 2]) {
        let head = self.head.load(Relaxed) | kind as u64;
        self.ring.record_words(ramen_arch::cpu::rdtsc(), head, args);
    }

    /// Records an event about `thread`, which need not be the one running here.
    #[inline(always)]
    fn push_for(&self, kind: EventKind, thread: u32, args: [u64; 2]) {
        let head = (self.head.load(Relaxed) & 0xffff_0000) | Record::head(kind as u16, 0, thread);
        self.ring.record_words(ramen_arch::cpu::rdtsc(), head, args);
    }

    /// The thread this CPU runs as far as the trace knows.
    #[inline(always)]
    fn running(&self) -> u32 {
        (self.head.load(Relaxed) >> 32) as u32
    }

    #[inline(always)]
    fn set_running(&self, thread: u32) {
        self.head.store((self.head.load(Relaxed) & 0xffff_0000) | u64::from(thread) << 32, Relaxed);
    }

    /// Empties the ring, sets what it does when full, and makes it CPU `cpu`'s,
    /// running `thread`.
    fn reset(&self, cpu: u16, thread: u32, policy: FullPolicy) {
        self.ring.clear();
        self.ring.set_policy(policy);
        self.head.store(Record::head(0, cpu, thread), Relaxed);
        self.flows.store(u64::from(cpu) << 48, Relaxed);
    }

    /// A new flow id, unique among this trace's flows: `cpu << 48 | counter` (the
    /// counter would reach the CPU bits after 2^48 flows).
    #[inline(always)]
    fn flow(&self) -> u64 {
        let flow = self.flows.load(Relaxed).wrapping_add(1);
        self.flows.store(flow, Relaxed);
        flow
    }
}

/// Per-thread tracing state, in each TCB: what is recorded when the thread next runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadTrace {
    /// Flow id of a message delivered to the thread while it was blocked (0: none),
    /// recorded as `IpcRecv` on the CPU it runs on next.
    pending_flow: u64,
    /// The `IpcInfo` of that message's sender.
    pending_peer: u64,
    /// Flow id of a message the thread sent that waits in an endpoint queue (0: none).
    queued_flow: u64,
    /// System-call number + 1 of a call whose exit is still to be recorded (0: none).
    open_syscall: u64,
    /// The thread's name (`thread::SET_NAME`), empty until named.
    name: ThreadName,
    /// The [`EPOCH`] of the trace its name was last recorded in (0: never).
    named_in: u32,
}

impl ThreadTrace {
    /// Nothing pending, no name.
    pub const fn new() -> Self {
        Self {
            pending_flow: 0,
            pending_peer: 0,
            queued_flow: 0,
            open_syscall: 0,
            name: ThreadName::EMPTY,
            named_in: 0,
        }
    }
}

/// The id a thread has in records.
pub fn thread_id(thread: ThreadRef) -> u32 {
    (thread.addr() >> TCB_BITS) as u32
}

/// The categories being recorded (empty while tracing is off). A hot path with
/// several trace points (the IPC fastpath) reads this once and skips them all while
/// tracing is off.
#[inline(always)]
pub fn categories() -> Categories {
    if cfg!(feature = "trace-compiled-out") {
        return Categories::empty();
    }
    Categories::from_bits_retain(ENABLED.load(Ordering::Relaxed))
}

#[inline(always)]
fn enabled(category: Categories) -> bool {
    !cfg!(feature = "trace-compiled-out") && ENABLED.load(Ordering::Relaxed) & category.bits() != 0
}

/// This CPU's tracing state. Every user has just read a non-zero [`ENABLED`] (its
/// category check), with nothing that waits since.
#[inline(always)]
fn here() -> &'static CpuTrace {
    &this_cpu().trace
}

/// Stops all recording: clears [`ENABLED`], puts the untraced system-call handler
/// back, and waits until no CPU can be inside a record (see the module doc).
fn quiesce() {
    ENABLED.store(0, Ordering::SeqCst);
    install_handler(false);
    crate::tlb::sync_all();
}

/// Whether the IPC fastpath is on (`trace_control::SET_FASTPATH`). Written under
/// [`CONTROL`].
static FASTPATH: AtomicBool = AtomicBool::new(true);

/// Points the system-call entry at the handler build for `tracing` and the fastpath
/// setting: the plain or traced fastpath build, or the slow-path-only handler.
/// Called with [`CONTROL`] held (or at boot).
fn install_handler(tracing: bool) {
    let pcid = crate::tlb::pcid_on();
    let handler = match (FASTPATH.load(Ordering::Relaxed), tracing, pcid) {
        (true, false, false) => crate::syscall::handle_syscall::<false, false>,
        (true, false, true) => crate::syscall::handle_syscall::<false, true>,
        (true, true, false) => crate::syscall::handle_syscall::<true, false>,
        (true, true, true) => crate::syscall::handle_syscall::<true, true>,
        (false, _, _) => crate::syscall::handle_syscall_slow,
    };
    ramen_arch::user::set_syscall_handler(handler);
}

/// Whether the IPC fastpath is on (the notification operations the slow path's
/// entry does without the write lock follow it too).
#[inline]
pub fn fastpath_enabled() -> bool {
    FASTPATH.load(Ordering::Relaxed)
}

/// `trace_control::SET_FASTPATH`: sends every IPC on every CPU down the slow path
/// (`on` false) or lets the fastpath take what it can again. A system call already
/// in a handler finishes there.
pub fn set_fastpath(on: bool) {
    let _control = control();
    FASTPATH.store(on, Ordering::Relaxed);
    install_handler(ENABLED.load(Ordering::Relaxed) != 0);
}

/// Takes [`CONTROL`], answering other CPUs' requests while it waits (one of them may
/// be quiescing and waiting for this CPU).
fn control() -> spin::MutexGuard<'static, ()> {
    loop {
        if let Some(guard) = CONTROL.try_lock() {
            return guard;
        }
        crate::sched::service_while_waiting();
        core::hint::spin_loop();
    }
}

/// Records `kind` on this CPU if its category is on.
#[inline(always)]
pub fn record(kind: EventKind, args: [u64; 2]) {
    if enabled(kind.category()) {
        record_now(kind, args);
    }
}

#[inline(never)]
fn record_now(kind: EventKind, args: [u64; 2]) {
    here().push(kind, args);
}

/// `thread` entered the kernel on `cpu` (this CPU) with system call `number` (first
/// argument `arg0`); `now` is what [`categories`] just returned, with nothing that
/// waits since.
#[inline(always)]
pub fn syscall_enter(cpu: &Cpu, now: Categories, thread: ThreadRef, number: u64, arg0: u64) {
    if now.contains(Categories::SYSCALL) {
        cpu.trace.push(EventKind::SyscallEnter, [number, arg0]);
        tcb(thread).trace.open_syscall = number.wrapping_add(1);
    }
}

/// This CPU is about to return to `thread` in user mode: records the switch if the
/// thread changed, a message it received while blocked, and the end of its system
/// call, all attributed to `thread`.
/// `cpu`: this CPU's entry, if the caller has it at hand (the IPC fastpath, which
/// then gets the recording inline; other callers call out to it).
#[inline(always)]
pub fn before_run(cpu: Option<&'static Cpu>, thread: ThreadRef) {
    let enabled = ENABLED.load(Ordering::Relaxed);
    if enabled != 0 {
        match cpu {
            Some(cpu) => record_run(&cpu.trace, thread, Categories::from_bits_retain(enabled)),
            None => record_run_here(thread, Categories::from_bits_retain(enabled)),
        }
    }
}

#[inline(never)]
fn record_run_here(thread: ThreadRef, enabled: Categories) {
    record_run(here(), thread, enabled);
}

/// The records of [`before_run`], as one batch with one timestamp (they describe one
/// moment: the return to `thread`).
#[inline(always)]
fn record_run(t: &CpuTrace, thread: ThreadRef, enabled: Categories) {
    let state = &mut tcb(thread).trace;
    let received = (state.pending_flow != 0).then_some((state.pending_flow, state.pending_peer));
    state.pending_flow = 0;
    run_records(t, &mut t.ring.batch(), thread, enabled, received, ramen_arch::cpu::rdtsc());
}

/// An IPC the fastpath made, recorded by [`fastpath_switch`].
pub struct FastIpc {
    /// `IpcSend` (a call) or `IpcReply`.
    pub kind: EventKind,
    /// Message words.
    pub len_words: usize,
}

/// The fastpath on `cpu` (this CPU) moved a message from `from` to `to` and is about
/// to return to `to`: records the send or reply and what [`before_run`] records, as
/// one batch with one timestamp (the send's is the moment of the return, a few dozen
/// instructions after the hand-over: a separate timestamp cost 2.5 instructions per
/// event); the receive needs no trip through `to`'s TCB.
#[inline(always)]
pub fn fastpath_switch(cpu: &Cpu, from: ThreadRef, to: ThreadRef, ipc: FastIpc) {
    let enabled = Categories::from_bits_retain(ENABLED.load(Ordering::Relaxed));
    if enabled.is_empty() {
        return;
    }
    let t = &cpu.trace;
    let mut batch = t.ring.batch();
    let tsc = ramen_arch::cpu::rdtsc();
    let received = enabled.contains(Categories::IPC).then(|| {
        let flow = t.flow();
        let args = [flow, info(Some(to), IpcPath::Fast, ipc.len_words)];
        batch.push(tsc, t.head.load(Relaxed) | ipc.kind as u64, args);
        (flow, info(Some(from), IpcPath::Fast, ipc.len_words))
    });
    run_records(t, &mut batch, to, enabled, received, tsc);
}

/// The records of a return to `thread`: its name (first time in this trace), the
/// switch if it was not running, the message it `received` (flow id, sender info;
/// the caller takes it from `pending_flow` and clears that), and the end of its
/// system call; one timestamp.
#[inline(always)]
fn run_records(
    t: &CpuTrace,
    batch: &mut Batch<'_, RING_RECORDS>,
    thread: ThreadRef,
    enabled: Categories,
    received: Option<(u64, u64)>,
    tsc: u64,
) {
    let id = thread_id(thread);
    let result = tcb(thread).context.rax;
    let state = &mut tcb(thread).trace;
    let mut head = t.head.load(Relaxed);
    // A thread's name goes into each trace the first time the thread runs in it.
    let epoch = EPOCH.load(Ordering::Relaxed);
    if state.named_in != epoch {
        state.named_in = epoch;
        if !state.name.is_empty() {
            let named = (head & 0xffff_0000) | Record::head(EventKind::ThreadName as u16, 0, id);
            batch.push(tsc, named, state.name.to_args());
        }
    }
    if (head >> 32) as u32 != id {
        // The switch is recorded as the outgoing thread's (`EventKind::ContextSwitch`),
        // before the CPU's head names the incoming one (regression: it named the
        // incoming thread as both; `xtask`'s `switch_problems` checks real traces).
        if enabled.contains(Categories::SCHED) {
            batch.push(tsc, head | EventKind::ContextSwitch as u64, [u64::from(id), 0]);
        }
        head = (head & 0xffff_0000) | u64::from(id) << 32;
        t.head.store(head, Relaxed);
    }
    if let Some((flow, peer)) = received
        && enabled.contains(Categories::IPC)
    {
        batch.push(tsc, head | EventKind::IpcRecv as u64, [flow, peer]);
    }
    if state.open_syscall != 0 && enabled.contains(Categories::SYSCALL) {
        batch.push(tsc, head | EventKind::SyscallExit as u64, [state.open_syscall - 1, result]);
    }
    state.open_syscall = 0;
}

/// This CPU is about to idle.
#[inline(always)]
pub fn before_idle() {
    if ENABLED.load(Ordering::Relaxed) != 0 {
        let t = here();
        if t.running() != IDLE_THREAD {
            // Recorded as the outgoing thread's, as in `run_records`.
            if enabled(Categories::SCHED) {
                t.push(EventKind::ContextSwitch, [u64::from(IDLE_THREAD), 0]);
            }
            t.set_running(IDLE_THREAD);
        }
    }
}

fn info(peer: Option<ThreadRef>, path: IpcPath, len_words: usize) -> u64 {
    let peer = peer.map_or(IDLE_THREAD, thread_id);
    IpcInfo { peer, path, len_words: len_words.min(usize::from(u8::MAX)) as u8 }.pack()
}

/// `sender` sent a message of `len_words` words on the slow path: straight into
/// `receiver` (which records `IpcRecv` when it next runs), or, with no receiver, into
/// an endpoint queue (the receiver that dequeues it records `IpcRecv`, see
/// [`ipc_dequeued`]). The fastpath records through [`fastpath_switch`].
#[inline(always)]
pub fn ipc_send(sender: ThreadRef, receiver: Option<ThreadRef>, len_words: usize, path: IpcPath) {
    if enabled(Categories::IPC) {
        ipc_flow_start(EventKind::IpcSend, sender, receiver, len_words, path);
    }
}

/// `server` replied to `caller` with `len_words` words (slow path).
#[inline(always)]
pub fn ipc_reply(server: ThreadRef, caller: ThreadRef, len_words: usize, path: IpcPath) {
    if enabled(Categories::IPC) {
        ipc_flow_start(EventKind::IpcReply, server, Some(caller), len_words, path);
    }
}

/// Records the start of an IPC flow and leaves its id where the other end's record
/// will find it.
#[inline(never)]
fn ipc_flow_start(kind: EventKind, from: ThreadRef, to: Option<ThreadRef>, len_words: usize, path: IpcPath) {
    let t = here();
    let flow = t.flow();
    t.push(kind, [flow, info(to, path, len_words)]);
    match to {
        Some(to) => {
            let state = &mut tcb(to).trace;
            state.pending_flow = flow;
            state.pending_peer = info(Some(from), path, len_words);
        }
        None => tcb(from).trace.queued_flow = flow,
    }
}

/// The running thread took the queued message of `sender` (`len_words` words).
#[inline(always)]
pub fn ipc_dequeued(sender: ThreadRef, len_words: usize) {
    if enabled(Categories::IPC) {
        let flow = core::mem::take(&mut tcb(sender).trace.queued_flow);
        if flow != 0 {
            record_now(EventKind::IpcRecv, [flow, info(Some(sender), IpcPath::Slow, len_words)]);
        }
    }
}

/// About to send a wake-up IPI to CPU `target`: records it and returns its flow id
/// for the target's inbox (0 when IPIs are not traced).
#[inline(always)]
pub fn ipi_send(target: u32) -> u64 {
    if !enabled(Categories::IPI) {
        return 0;
    }
    let t = here();
    let flow = t.flow();
    t.push(EventKind::IpiSend, [flow, u64::from(target)]);
    flow
}

/// This CPU took requests that came with a wake-up IPI whose flow id is `flow`.
#[inline(always)]
pub fn ipi_received(flow: u64) {
    if flow != 0 {
        record(EventKind::IpiRecv, [flow, flow >> 48]);
    }
}

/// `thread::SET_NAME`: names `thread`; recorded at once if tracing is on, else in
/// each later trace the first time the thread runs.
pub fn set_name(thread: ThreadRef, name: ThreadName) {
    let state = &mut tcb(thread).trace;
    state.name = name;
    state.named_in = 0;
    if ENABLED.load(Ordering::Relaxed) != 0 && !name.is_empty() {
        here().push_for(EventKind::ThreadName, thread_id(thread), name.to_args());
        state.named_in = EPOCH.load(Ordering::Relaxed);
    }
}

/// Writes a fresh header (empty, `enabled` categories) into a user buffer's frame.
fn reset_user_buffer(scratch: &mut [u8; USER_BUFFER_BYTES], frame: PhysAddr, enabled: Categories) {
    let enabled = enabled & Categories::USER;
    if user_buffer::init(scratch, TRACE_BUFFER_RECORDS, FullPolicy::Overwrite, enabled).is_ok() {
        objects::copy_to_frame(frame, 0, scratch.get(..USER_HEADER_BYTES).unwrap_or(&[]));
    }
}

/// Tells the thread writing a user buffer whether to record (`USER` in `enabled`).
fn enable_user_buffer(frame: PhysAddr, enabled: Categories) {
    let bits = (enabled & Categories::USER).bits();
    objects::copy_to_frame(frame, ENABLED_OFFSET as u64, &bits.to_le_bytes());
}

/// `thread::SET_TRACE_BUFFER`: the 4 KiB frame at `frame` becomes `thread`'s user trace
/// buffer (replacing any it had), with a fresh header; `None` takes it away. The
/// caller holds `CAP_LOCK` and has checked the frame capability. `Busy` when
/// [`MAX_USER_BUFFERS`] threads have one.
pub fn set_user_buffer(thread: ThreadRef, frame: Option<PhysAddr>) -> Result<(), Error> {
    let mut buffers = USER_BUFFERS.lock();
    let UserBuffers { table, scratch } = &mut *buffers;
    let existing = table.iter().position(|b| b.is_some_and(|b| b.thread == thread));
    let Some(frame) = frame else {
        if let Some(slot) = existing.and_then(|i| table.get_mut(i)) {
            *slot = None;
        }
        return Ok(());
    };
    let index = existing.or_else(|| table.iter().position(Option::is_none)).ok_or(Error::Busy)?;
    let slot = table.get_mut(index).ok_or(Error::Busy)?;
    reset_user_buffer(scratch, frame, Categories::from_bits_truncate(ENABLED.load(Ordering::SeqCst)));
    *slot = Some(UserBuffer { thread, frame });
    Ok(())
}

/// The object at `addr` (a thread or a frame) was destroyed: forget any user buffer
/// it owned or was. Called under `CAP_LOCK`.
pub fn forget_user_buffer(addr: u64) {
    let mut buffers = USER_BUFFERS.lock();
    for slot in buffers.table.iter_mut() {
        if slot.is_some_and(|b| b.thread.addr() == addr || b.frame.0 == addr) {
            *slot = None;
        }
    }
}

/// `trace_control::START`: clears every CPU's ring and records `categories` from now
/// on. `caller` is the thread running here (the first records are attributed to it).
pub fn start(categories: u64, flags: u64, caller: ThreadRef) -> Result<(), Error> {
    let categories =
        u32::try_from(categories).ok().and_then(Categories::from_bits).ok_or(Error::InvalidArgument)?;
    let policy = match flags {
        0 => FullPolicy::Overwrite,
        trace_control::KEEP_OLDEST => FullPolicy::Drop,
        _ => return Err(Error::InvalidArgument),
    };
    let _control = control();
    quiesce();
    EPOCH.fetch_add(1, Ordering::Relaxed);
    let here = ramen_arch::percpu::index_fast();
    for (index, cpu) in cpus::CPUS.iter().enumerate() {
        let Some(cpu) = cpu.get() else { continue };
        // Quiesced above, and `ENABLED` is set only below: no CPU records now.
        let running = if index as u32 == here { thread_id(caller) } else { IDLE_THREAD };
        cpu.trace.reset(index as u16, running, policy);
    }
    {
        let mut buffers = USER_BUFFERS.lock();
        let UserBuffers { table, scratch } = &mut *buffers;
        for buffer in table.iter().flatten() {
            reset_user_buffer(scratch, buffer.frame, categories);
        }
    }
    install_handler(true);
    ENABLED.store(categories.bits(), Ordering::SeqCst);
    Ok(())
}

/// `trace_control::STOP`: no CPU records once this returns, and every thread with a
/// user buffer stops at its next record.
pub fn stop() {
    let _control = control();
    stop_quiesced();
}

/// [`stop`], with [`CONTROL`] held.
fn stop_quiesced() {
    quiesce();
    for buffer in USER_BUFFERS.lock().table.iter().flatten() {
        enable_user_buffer(buffer.frame, Categories::empty());
    }
}

/// `trace_control::STATS`: CPU `cpu`'s ring as `[held, dropped, overwritten]`, while
/// tracing is stopped (`Busy` otherwise: the owner may be recording).
pub fn stats(cpu: u64) -> Result<[u64; 3], Error> {
    let _control = control();
    if ENABLED.load(Ordering::SeqCst) != 0 {
        return Err(Error::Busy);
    }
    let entry = u32::try_from(cpu).ok().and_then(cpus::cpu).ok_or(Error::RangeError)?;
    // Tracing is off and `CONTROL` held: every stop quiesced, nothing records.
    let ring = entry.trace.ring;
    Ok([ring.len() as u64, ring.dropped(), ring.overwritten()])
}

/// `trace_control::DUMP`: stops tracing and writes the dump (header, every CPU's core section,
/// every CPU's ring, oldest record first) to the trace port. Returns records written.
/// Runs with interrupts off for as long as the UART takes (a debugging operation).
pub fn dump() -> u64 {
    let _control = control();
    stop_quiesced();
    let cpu_count = cpus::CPUS.iter().rposition(|c| c.get().is_some()).map_or(1, |last| last + 1);
    let Ok(cpu_count) = u16::try_from(cpu_count) else {
        return 0;
    };
    let Ok(mut writer) =
        DumpWriter::new(ramen_arch::serial::trace_port_write, cpu_count, cpus::machine().tsc_hz)
    else {
        return 0;
    };
    let mut written = 0u64;
    for cpu in 0..cpu_count {
        let offset = cpus::cpu(u32::from(cpu)).map_or(0, |c| c.tsc_offset.load(Ordering::Relaxed));
        if writer.core(cpu, offset).is_err() {
            return 0;
        }
    }
    for cpu in 0..cpu_count {
        let Some(entry) = cpus::cpu(u32::from(cpu)) else { continue };
        // Quiesced by `stop_quiesced`; nothing enables while `CONTROL` is held.
        let t = &entry.trace;
        let lost = t.ring.lost();
        written += t.ring.len() as u64;
        if writer.records(SOURCE_CORE, u32::from(cpu), lost, t.ring.drain()).is_err() {
            return 0;
        }
    }
    // User buffers: copied out, then checked as untrusted (a header user space broke
    // is skipped; records lose any kernel kind, and get their owner as thread).
    let mut buffers = USER_BUFFERS.lock();
    let UserBuffers { table, scratch } = &mut *buffers;
    for buffer in table.iter().flatten() {
        objects::copy_from_user_frame(buffer.frame, scratch);
        let Ok(view) = UserBufferView::parse(scratch) else { continue };
        let owner = thread_id(buffer.thread);
        let records =
            view.records().filter_map(|r| user_buffer::sanitize(r, owner, cpu_count)).inspect(|_| {
                written += 1;
            });
        if writer.records_batched(SOURCE_THREAD, owner, view.lost(), records).is_err() {
            return 0;
        }
    }
    writer.finish();
    written
}
