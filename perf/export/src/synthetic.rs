//! Synthetic traces with known shape and latencies, for tests, golden files and a
//! demonstration of the exporters before the kernel records real events.

use std::collections::BTreeMap;

use ramen_perf_record::{EventKind, IDLE_THREAD, IpcInfo, IpcPath, Record};

use crate::decode::{Source, SourceId, Trace};

/// TSC rate of the synthetic traces: 2 GHz, so one tick is half a nanosecond.
pub const SYNTHETIC_TSC_HZ: u64 = 2_000_000_000;
/// Core `n`'s TSC runs `n * CORE_SKEW_TICKS` ahead of core 0's.
pub const CORE_SKEW_TICKS: u64 = 1_000;
/// The client thread ("ping").
pub const CLIENT: u32 = 1;
/// The server thread ("pong").
pub const SERVER: u32 = 2;
/// Ticks between the starts of consecutive round trips.
pub const ROUND_TRIP_PERIOD_TICKS: u64 = 4_000;
/// Syscall numbers used by the synthetic workload.
pub const SYS_CALL: u64 = 1;
pub const SYS_REPLY_RECV: u64 = 2;
/// Interrupt vectors used by the synthetic workload.
pub const TIMER_VECTOR: u64 = 32;
/// Label ids of the server's span and counter and the client's span.
pub const LABEL_HANDLE: u32 = 1;
pub const LABEL_QUEUE_DEPTH: u32 = 2;
pub const LABEL_PING: u32 = 3;

/// Collects records against a common time line and files them by source.
struct Recorder {
    cpus: u16,
    events: Vec<(u64, SourceId, Record)>,
}

impl Recorder {
    fn kernel(&mut self, t: u64, cpu: u16, thread: u32, kind: EventKind, args: [u64; 2]) {
        let tsc = t + u64::from(cpu) * CORE_SKEW_TICKS;
        self.events.push((t, SourceId::Core(cpu), Record::new(kind, cpu, thread, tsc, args)));
    }

    fn user(&mut self, t: u64, cpu: u16, thread: u32, kind: EventKind, args: [u64; 2]) {
        let tsc = t + u64::from(cpu) * CORE_SKEW_TICKS;
        self.events.push((t, SourceId::Thread(thread), Record::new(kind, cpu, thread, tsc, args)));
    }

    fn into_trace(mut self) -> Trace {
        self.events.sort_by_key(|(t, ..)| *t);
        let mut sources: BTreeMap<SourceId, Source> = BTreeMap::new();
        for (_, source, record) in self.events {
            sources.entry(source).or_default().records.push(record);
        }
        Trace {
            tsc_hz: SYNTHETIC_TSC_HZ,
            tsc_offsets: (0..self.cpus).map(|cpu| i64::from(cpu) * CORE_SKEW_TICKS as i64).collect(),
            thread_names: BTreeMap::from([(CLIENT, "ping".to_owned()), (SERVER, "pong".to_owned())]),
            labels: BTreeMap::from([
                (LABEL_HANDLE, "handle_ping".to_owned()),
                (LABEL_QUEUE_DEPTH, "queue_depth".to_owned()),
                (LABEL_PING, "ping_call".to_owned()),
            ]),
            sources,
        }
    }
}

/// Send-to-receive latency of round trip `i`'s request, in ticks.
pub fn request_latency_ticks(i: u64) -> u64 {
    250 + (i % 5) * 20
}

/// The IPC ping-pong benchmark as the kernel would record it: a client on core 0
/// calls a server (on core 1 when `cpus >= 2`, else on core 0 with context
/// switches), the server handles the call in a user span and replies. Cross-core
/// wake-ups go by IPI; every fourth round a timer interrupt hits idle core 0.
/// Every fourth request takes the slow path.
pub fn ipc_pingpong(cpus: u16, round_trips: u64) -> Trace {
    let cpus = cpus.max(1);
    let mut rec = Recorder { cpus, events: Vec::new() };
    let client_cpu = 0;
    let server_cpu = if cpus >= 2 { 1 } else { 0 };
    let cross = client_cpu != server_cpu;
    let ipc = |peer: u32, i: u64| {
        let (path, len_words) = if i % 4 == 3 { (IpcPath::Slow, 10) } else { (IpcPath::Fast, 1) };
        IpcInfo { peer, path, len_words }.pack()
    };
    use EventKind::*;
    for i in 0..round_trips {
        let t0 = 10_000 + i * ROUND_TRIP_PERIOD_TICKS;
        let request = 2 * i + 1;
        let reply = 2 * i + 2;
        let t_recv = t0 + 100 + request_latency_ticks(i);
        let t_reply = t_recv + 700;
        let t_reply_recv = t_reply + 250;

        rec.user(t0 - 50, client_cpu, CLIENT, UserSpanBegin, [LABEL_PING.into(), i]);
        rec.kernel(t0, client_cpu, CLIENT, SyscallEnter, [SYS_CALL, 0]);
        rec.kernel(t0 + 100, client_cpu, CLIENT, IpcSend, [request, ipc(SERVER, i)]);
        if cross {
            rec.kernel(t0 + 120, client_cpu, CLIENT, IpiSend, [1000 + 2 * i, server_cpu.into()]);
            rec.kernel(t0 + 150, client_cpu, CLIENT, ContextSwitch, [IDLE_THREAD.into(), 0]);
            rec.kernel(t_recv - 60, server_cpu, IDLE_THREAD, IpiRecv, [1000 + 2 * i, client_cpu.into()]);
            rec.kernel(t_recv - 30, server_cpu, IDLE_THREAD, ContextSwitch, [SERVER.into(), 0]);
            if i % 4 == 0 {
                rec.kernel(t0 + 500, client_cpu, IDLE_THREAD, IrqEnter, [TIMER_VECTOR, 0]);
                rec.kernel(t0 + 650, client_cpu, IDLE_THREAD, IrqExit, [TIMER_VECTOR, 0]);
            }
        } else {
            rec.kernel(t0 + 150, client_cpu, CLIENT, ContextSwitch, [SERVER.into(), 0]);
        }
        rec.kernel(t_recv, server_cpu, SERVER, IpcRecv, [request, ipc(CLIENT, i)]);
        rec.kernel(t_recv + 30, server_cpu, SERVER, SyscallExit, [SYS_REPLY_RECV, 0]);
        rec.user(t_recv + 50, server_cpu, SERVER, UserSpanBegin, [LABEL_HANDLE.into(), i]);
        rec.user(t_recv + 60, server_cpu, SERVER, UserCounter, [LABEL_QUEUE_DEPTH.into(), i % 3]);
        rec.user(t_recv + 550, server_cpu, SERVER, UserSpanEnd, [LABEL_HANDLE.into(), i]);
        rec.kernel(t_reply - 50, server_cpu, SERVER, SyscallEnter, [SYS_REPLY_RECV, 0]);
        rec.kernel(t_reply, server_cpu, SERVER, IpcReply, [reply, ipc(CLIENT, i)]);
        if cross {
            rec.kernel(t_reply + 10, server_cpu, SERVER, IpiSend, [1001 + 2 * i, client_cpu.into()]);
            rec.kernel(t_reply + 50, server_cpu, SERVER, ContextSwitch, [IDLE_THREAD.into(), 0]);
            rec.kernel(
                t_reply_recv - 60,
                client_cpu,
                IDLE_THREAD,
                IpiRecv,
                [1001 + 2 * i, server_cpu.into()],
            );
            rec.kernel(t_reply_recv - 30, client_cpu, IDLE_THREAD, ContextSwitch, [CLIENT.into(), 0]);
        } else {
            rec.kernel(t_reply + 50, server_cpu, SERVER, ContextSwitch, [CLIENT.into(), 0]);
        }
        rec.kernel(t_reply_recv, client_cpu, CLIENT, IpcRecv, [reply, ipc(SERVER, i)]);
        rec.kernel(t_reply_recv + 30, client_cpu, CLIENT, SyscallExit, [SYS_CALL, 0]);
        rec.user(t_reply_recv + 60, client_cpu, CLIENT, UserSpanEnd, [LABEL_PING.into(), i]);
    }
    rec.into_trace()
}
