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
//! Cost when compiled in but off: every call site first loads [`ENABLED`] (a word
//! written only by the control operations, so it sits read-only
//! in every CPU's cache) and tests its category: one load, one test, one branch.
//!
//! Ownership: CPU `i`'s ring is `cpus::CPUS[i].trace`, in that CPU's entry, and only
//! CPU `i` records into it. It sits behind a `spin::Mutex` rather than a `CpuCell`
//! because the dump must read every CPU's ring from the one CPU serving the dump
//! request, which `CpuCell` forbids by design. The recording CPU only ever
//! `try_lock`s its own ring (never spins), so the lock word is a line of that CPU's
//! own that no other CPU writes while tracing runs; `START` (clearing) and `DUMP`
//! (reading) take other CPUs' ring locks only with tracing off, and a
//! record that would collide with them is dropped.
//!
//! Stopping all CPUs: `STOP` and `DUMP` clear [`ENABLED`], a global flag
//! each CPU honours at its next event (no IPI): a CPU already past the check finishes
//! that one record under its ring lock, which the dumper waits for.
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

use core::sync::atomic::{AtomicU32, Ordering};

use ramen_abi::Error;
use ramen_abi::invocation::thread::TRACE_BUFFER_RECORDS;
use ramen_core::object::PhysAddr;
use ramen_core::object::TCB_BITS;
use ramen_core::runqueue::ThreadRef;
pub use ramen_perf_record::ThreadName;
use ramen_perf_record::dump::{DumpWriter, SOURCE_CORE, SOURCE_THREAD};
use ramen_perf_record::user_buffer::{self, ENABLED_OFFSET, USER_HEADER_BYTES, UserBufferView};
use ramen_perf_record::{
    Categories, EventKind, FullPolicy, IDLE_THREAD, IpcInfo, IpcPath, Record, TraceRing,
};

use crate::cpus::{self, this_cpu};
use crate::objects::{self, tcb};

/// Records per CPU ring (32 bytes each: 16 KiB per CPU). The ring lives in the static
/// CPU table, which has an entry for each of `MAX_CPUS` (256) possible CPUs, so this
/// costs 4 MiB of `.bss`; enough for a few dozen cross-CPU IPC round trips per CPU
/// before the oldest records are overwritten (counted as lost in the dump).
pub const RING_RECORDS: usize = 512;

/// The categories being recorded, on every CPU; 0 when tracing is off.
static ENABLED: AtomicU32 = AtomicU32::new(0);

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

/// One CPU's tracing state (in its `cpus::Cpu` entry).
pub struct CpuTrace {
    ring: TraceRing<RING_RECORDS>,
    /// The thread this CPU runs, as of its last recorded switch (0: idle or unknown).
    running: u32,
    /// Flow ids handed out on this CPU (the low 48 bits of each id).
    flows: u64,
}

impl CpuTrace {
    /// An empty ring; overwrite mode keeps the newest records.
    pub const fn new() -> Self {
        Self { ring: TraceRing::new(FullPolicy::Overwrite), running: IDLE_THREAD, flows: 0 }
    }

    fn push(&mut self, cpu: u16, kind: EventKind, args: [u64; 2]) {
        self.push_for(cpu, kind, self.running, args);
    }

    /// Records an event about `thread`, which need not be the one running here.
    fn push_for(&mut self, cpu: u16, kind: EventKind, thread: u32, args: [u64; 2]) {
        let record = Record::new(kind, cpu, thread, ramen_arch::cpu::rdtsc(), args);
        self.ring.record(record);
    }

    /// A new flow id, unique among this trace's flows: `cpu << 48 | counter`.
    fn flow(&mut self, cpu: u16) -> u64 {
        self.flows = self.flows.wrapping_add(1);
        (u64::from(cpu) << 48) | (self.flows & ((1 << 48) - 1))
    }
}

/// A CPU's ring and its lock (see the module doc for why a lock).
pub type TraceCell = spin::Mutex<CpuTrace>;

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

/// True if any category is being recorded. A hot path with several trace points
/// (the IPC fastpath) reads this once and skips them all while tracing is off.
#[inline(always)]
pub fn on() -> bool {
    !cfg!(feature = "trace-compiled-out") && ENABLED.load(Ordering::Relaxed) != 0
}

#[inline(always)]
fn enabled(category: Categories) -> bool {
    !cfg!(feature = "trace-compiled-out") && ENABLED.load(Ordering::Relaxed) & category.bits() != 0
}

/// Runs `f` on this CPU's ring, unless another CPU holds it (clearing or dumping).
fn with_ring<R>(f: impl FnOnce(&mut CpuTrace, u16) -> R) -> Option<R> {
    let cpu = this_cpu();
    let mut trace = cpu.trace.try_lock()?;
    Some(f(&mut trace, cpu.local.index as u16))
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
    with_ring(|t, cpu| t.push(cpu, kind, args));
}

/// `thread` entered the kernel with system call `number` (first argument `arg0`).
#[inline(always)]
pub fn syscall_enter(thread: ThreadRef, number: u64, arg0: u64) {
    if enabled(Categories::SYSCALL) {
        record_now(EventKind::SyscallEnter, [number, arg0]);
        tcb(thread).trace.open_syscall = number.wrapping_add(1);
    }
}

/// This CPU is about to return to `thread` in user mode: records the switch if the
/// thread changed, a message it received while blocked, and the end of its system
/// call, all attributed to `thread`.
#[inline(always)]
pub fn before_run(thread: ThreadRef) {
    if ENABLED.load(Ordering::Relaxed) != 0 {
        record_run(thread);
    }
}

#[inline(never)]
fn record_run(thread: ThreadRef) {
    let id = thread_id(thread);
    let result = tcb(thread).context.rax;
    let state = &mut tcb(thread).trace;
    let epoch = EPOCH.load(Ordering::Relaxed);
    with_ring(|t, cpu| {
        // A thread's name goes into each trace the first time the thread runs in it.
        if state.named_in != epoch {
            state.named_in = epoch;
            if !state.name.is_empty() {
                t.push_for(cpu, EventKind::ThreadName, id, state.name.to_args());
            }
        }
        if t.running != id {
            if enabled(Categories::SCHED) {
                t.push(cpu, EventKind::ContextSwitch, [u64::from(id), 0]);
            }
            t.running = id;
        }
        if state.pending_flow != 0 && enabled(Categories::IPC) {
            t.push(cpu, EventKind::IpcRecv, [state.pending_flow, state.pending_peer]);
        }
        if state.open_syscall != 0 && enabled(Categories::SYSCALL) {
            t.push(cpu, EventKind::SyscallExit, [state.open_syscall - 1, result]);
        }
    });
    state.pending_flow = 0;
    state.open_syscall = 0;
}

/// This CPU is about to idle.
#[inline(always)]
pub fn before_idle() {
    if ENABLED.load(Ordering::Relaxed) != 0 {
        with_ring(|t, cpu| {
            if t.running != IDLE_THREAD && enabled(Categories::SCHED) {
                t.push(cpu, EventKind::ContextSwitch, [u64::from(IDLE_THREAD), 0]);
            }
            t.running = IDLE_THREAD;
        });
    }
}

fn info(peer: Option<ThreadRef>, path: IpcPath, len_words: usize) -> u64 {
    let peer = peer.map_or(IDLE_THREAD, thread_id);
    IpcInfo { peer, path, len_words: len_words.min(usize::from(u8::MAX)) as u8 }.pack()
}

/// `sender` sent a message of `len_words` words: straight into `receiver` (which
/// records `IpcRecv` when it next runs), or, with no receiver, into an endpoint queue
/// (the receiver that dequeues it records `IpcRecv`, see [`ipc_dequeued`]).
#[inline(always)]
pub fn ipc_send(sender: ThreadRef, receiver: Option<ThreadRef>, len_words: usize, path: IpcPath) {
    if enabled(Categories::IPC) {
        ipc_flow_start(EventKind::IpcSend, sender, receiver, len_words, path);
    }
}

/// `server` replied to `caller` with `len_words` words.
#[inline(always)]
pub fn ipc_reply(server: ThreadRef, caller: ThreadRef, len_words: usize, path: IpcPath) {
    if enabled(Categories::IPC) {
        ipc_flow_start(EventKind::IpcReply, server, Some(caller), len_words, path);
    }
}

#[inline(never)]
fn ipc_flow_start(kind: EventKind, from: ThreadRef, to: Option<ThreadRef>, len_words: usize, path: IpcPath) {
    let Some(flow) = with_ring(|t, cpu| {
        let flow = t.flow(cpu);
        t.push(cpu, kind, [flow, info(to, path, len_words)]);
        flow
    }) else {
        return;
    };
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
    with_ring(|t, cpu| {
        let flow = t.flow(cpu);
        t.push(cpu, EventKind::IpiSend, [flow, u64::from(target)]);
        flow
    })
    .unwrap_or(0)
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
        let recorded =
            with_ring(|t, cpu| t.push_for(cpu, EventKind::ThreadName, thread_id(thread), name.to_args()));
        if recorded.is_some() {
            state.named_in = EPOCH.load(Ordering::Relaxed);
        }
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
pub fn start(categories: u64, caller: ThreadRef) -> Result<(), Error> {
    let categories =
        u32::try_from(categories).ok().and_then(Categories::from_bits).ok_or(Error::InvalidArgument)?;
    ENABLED.store(0, Ordering::SeqCst);
    EPOCH.fetch_add(1, Ordering::Relaxed);
    let here = ramen_arch::percpu::index_fast();
    for (index, cpu) in cpus::CPUS.iter().enumerate() {
        let Some(cpu) = cpu.get() else { continue };
        let mut t = cpu.trace.lock();
        t.ring.clear();
        t.running = if index as u32 == here { thread_id(caller) } else { IDLE_THREAD };
    }
    {
        let mut buffers = USER_BUFFERS.lock();
        let UserBuffers { table, scratch } = &mut *buffers;
        for buffer in table.iter().flatten() {
            reset_user_buffer(scratch, buffer.frame, categories);
        }
    }
    ENABLED.store(categories.bits(), Ordering::SeqCst);
    Ok(())
}

/// `trace_control::STOP`: every CPU stops recording at its next event, and every
/// thread with a user buffer at its next record.
pub fn stop() {
    ENABLED.store(0, Ordering::SeqCst);
    for buffer in USER_BUFFERS.lock().table.iter().flatten() {
        enable_user_buffer(buffer.frame, Categories::empty());
    }
}

/// `trace_control::DUMP`: stops tracing and writes the dump (header, every CPU's core section,
/// every CPU's ring, oldest record first) to the trace port. Returns records written.
/// Runs with interrupts off for as long as the UART takes (a debugging operation).
pub fn dump() -> u64 {
    stop();
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
        let mut t = entry.trace.lock();
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
