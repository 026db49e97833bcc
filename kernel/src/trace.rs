//! Kernel tracing: each CPU records its own events into its own trace ring, and a
//! dump request writes every ring to the trace port (COM2) in the `perf` dump format.
//!
//! What is recorded (docs/tracing.md has the record layout and every kind's
//! arguments): system-call entry and exit, IPC send / receive / reply with a flow id
//! that ties the two ends together across CPUs, context switches, interrupts, wake-up
//! IPIs (sent and received, also tied by a flow id), user page faults and thread
//! migrations.
//!
//! Cost when compiled in but off: every call site first loads [`ENABLED`] (a word
//! written only by `TRACE_START` / `TRACE_STOP` / `TRACE_DUMP`, so it sits read-only
//! in every CPU's cache) and tests its category: one load, one test, one branch.
//!
//! Ownership: CPU `i`'s ring is `cpus::CPUS[i].trace`, in that CPU's entry, and only
//! CPU `i` records into it. It sits behind a `spin::Mutex` rather than a `CpuCell`
//! because the dump must read every CPU's ring from the one CPU serving the dump
//! request, which `CpuCell` forbids by design. The recording CPU only ever
//! `try_lock`s its own ring (never spins), so the lock word is a line of that CPU's
//! own that no other CPU writes while tracing runs; `TRACE_START` (clearing) and
//! `TRACE_DUMP` (reading) take other CPUs' ring locks only with tracing off, and a
//! record that would collide with them is dropped.
//!
//! Stopping all CPUs: `TRACE_STOP` and `TRACE_DUMP` clear [`ENABLED`], a global flag
//! each CPU honours at its next event (no IPI): a CPU already past the check finishes
//! that one record under its ring lock, which the dumper waits for.
//!
//! Thread ids in records are TCB physical addresses shifted right by `TCB_BITS`
//! (TCBs are 4 KiB-aligned, so the id is unique and fits 32 bits for 16 TiB of
//! memory); 0 is idle. Each CPU's TSC offset from the boot CPU is measured at bring-up
//! (a handshake, fastest of 16 rounds) and written into the dump.

use core::sync::atomic::{AtomicU32, Ordering};

use ramen_abi::Error;
use ramen_core::object::TCB_BITS;
use ramen_core::runqueue::ThreadRef;
use ramen_perf_record::dump::{DumpWriter, SOURCE_CORE};
use ramen_perf_record::{
    Categories, EventKind, FullPolicy, IDLE_THREAD, IpcInfo, IpcPath, Record, TraceRing,
};

use crate::cpus::{self, this_cpu};
use crate::objects::tcb;

/// Records per CPU ring (32 bytes each: 16 KiB per CPU). The ring lives in the static
/// CPU table, which has an entry for each of `MAX_CPUS` (256) possible CPUs, so this
/// costs 4 MiB of `.bss`; enough for a few dozen cross-CPU IPC round trips per CPU
/// before the oldest records are overwritten (counted as lost in the dump).
pub const RING_RECORDS: usize = 512;

/// The categories being recorded, on every CPU; 0 when tracing is off.
static ENABLED: AtomicU32 = AtomicU32::new(0);

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
        let record = Record::new(kind, cpu, self.running, ramen_arch::cpu::rdtsc(), args);
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
}

impl ThreadTrace {
    /// Nothing pending.
    pub const fn new() -> Self {
        Self { pending_flow: 0, pending_peer: 0, queued_flow: 0, open_syscall: 0 }
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
    ENABLED.load(Ordering::Relaxed) != 0
}

#[inline(always)]
fn enabled(category: Categories) -> bool {
    ENABLED.load(Ordering::Relaxed) & category.bits() != 0
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
    with_ring(|t, cpu| {
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

/// `TRACE_START`: clears every CPU's ring and records `categories` from now on.
/// `caller` is the thread running here (the first records are attributed to it).
pub fn start(categories: u64, caller: ThreadRef) -> Result<(), Error> {
    let categories =
        u32::try_from(categories).ok().and_then(Categories::from_bits).ok_or(Error::InvalidArgument)?;
    ENABLED.store(0, Ordering::SeqCst);
    let here = ramen_arch::percpu::index_fast();
    for (index, cpu) in cpus::CPUS.iter().enumerate() {
        let Some(cpu) = cpu.get() else { continue };
        let mut t = cpu.trace.lock();
        t.ring.clear();
        t.running = if index as u32 == here { thread_id(caller) } else { IDLE_THREAD };
    }
    ENABLED.store(categories.bits(), Ordering::SeqCst);
    Ok(())
}

/// `TRACE_STOP`: every CPU stops recording at its next event.
pub fn stop() {
    ENABLED.store(0, Ordering::SeqCst);
}

/// `TRACE_DUMP`: stops tracing and writes the dump (header, every CPU's core section,
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
    writer.finish();
    written
}
