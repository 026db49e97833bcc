//! A busy server: one `bench-ipc` server, one throughput client per CPU calling it on
//! the same endpoint, all released at once, so that callers queue on the endpoint
//! while the server answers another. Measured over the released window: round
//! trips, TSC span, and the kernel's own counts (`DebugConsole::IPC_STATS`): IPC
//! system calls that took the slow path, and write acquisitions of `CAP_LOCK`, the
//! kernel's one global lock. A queued `Call` and a `ReplyRecv` that finds callers
//! queued take neither (docs/concurrency.md), so both are 0 with the fastpath on.
//!
//! The benchmark reports it (`BENCH {"kind":"contended",...}`) and the in-QEMU tests
//! check it (`a_busy_server_s_callers_queue_without_the_global_lock`).

use ramen_abi::{object, slot};
use ramen_bench_ipc::{ENDPOINT, Job, REPORT, Role, START, label};
use ramen_rt::{Message, kobj, recv, send};

use crate::alloc::Alloc;
use crate::loader::{self, Child, Files, Spawn};

/// Most clients (one per CPU).
pub const MAX_CLIENTS: usize = 64;
/// Priority of the server and its clients: below the root task's.
const PRIORITY: u64 = 10;
/// Messages the root task reads while waiting for the reports.
const PATIENCE: u32 = 64;

/// What one run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Contended {
    pub clients: u64,
    pub round_trips: u64,
    /// From the first client's start to the last one's end (TSC).
    pub ticks: u64,
    /// IPC system calls that took the slow path in the window (all CPUs).
    pub slow: u64,
    /// Write acquisitions of `CAP_LOCK` in the window (all CPUs).
    pub cap_writes: u64,
}

fn ok<T>(result: Result<T, ramen_rt::SysError>, what: &'static str) -> Result<T, &'static str> {
    result.map_err(|_| what)
}

/// `IPC_STATS` now: (slow-path IPC calls, `CAP_LOCK` write acquisitions).
fn counts() -> Result<(u64, u64), &'static str> {
    let (_, slow) = ok(kobj::ipc_stats(slot::DEBUG), "IPC_STATS failed")?;
    let writes = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")?;
    Ok((slow, writes))
}

fn spawn(
    alloc: &mut Alloc,
    files: &Files,
    job: &Job,
    cpu: u64,
    grants: &[(u64, u64)],
) -> Result<Child, &'static str> {
    let spec =
        Spawn { name: "bench-ipc", arg: job.encode(), cpu, priority: PRIORITY, grants, fault_handler: false };
    loader::spawn(alloc, files, &spec).map_err(|_| "cannot start bench-ipc")
}

/// Starts the server on `server_cpu` and `clients` clients, client `i` on CPU
/// `i % cpus`, each making `rounds` calls per release; then releases them once per
/// entry of `fastpath` (the fastpath switched on or off for that release, back on
/// after it) and hands each release's figures to `each`. `report` is the root
/// task's report endpoint (root slot). Every thread started is stopped before this
/// returns.
pub fn run(
    alloc: &mut Alloc,
    files: &Files,
    report: u64,
    (server_cpu, cpus): (u64, u64),
    (clients, rounds): (u64, u64),
    fastpath: &[bool],
    mut each: impl FnMut(bool, Contended) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let clients = clients.clamp(1, MAX_CLIENTS as u64);
    let endpoint = ok(alloc.make(object::ENDPOINT, 0), "cannot make an endpoint")?;
    let server_job =
        Job { role: Role::Server, words: 0, case_id: 0, count: 0, warmup: 0, transfer_cap: false };
    let server = spawn(alloc, files, &server_job, server_cpu, &[(ENDPOINT, endpoint)])?;
    let mut started: [Option<(Child, u64)>; MAX_CLIENTS] = [const { None }; MAX_CLIENTS];
    let result = (|| {
        let client_job = Job { role: Role::ThroughputClient, count: rounds, ..server_job };
        for (i, entry) in (0..clients).zip(started.iter_mut()) {
            let cpu = i % cpus.max(1);
            let start = ok(alloc.make(object::ENDPOINT, 0), "cannot make an endpoint")?;
            let grants = [(ENDPOINT, endpoint), (REPORT, report), (START, start)];
            *entry = Some((spawn(alloc, files, &client_job, cpu, &grants)?, start));
        }
        for &on in fastpath {
            ok(kobj::set_fastpath(slot::TRACE_CONTROL, on), "SET_FASTPATH refused")?;
            let run = release(&started, report, clients);
            ok(kobj::set_fastpath(slot::TRACE_CONTROL, true), "SET_FASTPATH back on refused")?;
            each(on, run?)?;
        }
        Ok(())
    })();
    for (child, _) in started.iter().flatten() {
        let _ = kobj::suspend(child.tcb);
    }
    let _ = kobj::suspend(server.tcb);
    result
}

/// Throughput clients' reports (`label::THROUGHPUT_DONE`) summed: from the first
/// start to the last end, round trips, reports.
#[derive(Clone, Copy, Debug)]
pub struct Tally {
    first: u64,
    last: u64,
    pub round_trips: u64,
    pub reports: u64,
}

impl Tally {
    pub const fn new() -> Self {
        Self { first: u64::MAX, last: 0, round_trips: 0, reports: 0 }
    }

    /// Counts `message` if it is a throughput report; a client's `FAILED` report is
    /// an error; anything else is ignored.
    pub fn note(&mut self, message: &Message) -> Result<(), &'static str> {
        match message.label() {
            label::THROUGHPUT_DONE => {
                let word = |i: usize| message.words().get(i).copied().unwrap_or(0);
                self.first = self.first.min(word(0));
                self.last = self.last.max(word(1));
                self.round_trips += word(2);
                self.reports += 1;
                Ok(())
            }
            label::FAILED => Err("a client's system call failed"),
            _ => Ok(()),
        }
    }

    /// TSC ticks from the first client's start to the last one's end.
    pub fn ticks(&self) -> u64 {
        self.last.saturating_sub(self.first)
    }
}

/// Releases the clients waiting on their start endpoints and measures until every
/// one has reported.
fn release(started: &[Option<(Child, u64)>], report: u64, clients: u64) -> Result<Contended, &'static str> {
    let before = counts()?;
    for (_, start) in started.iter().flatten() {
        ok(send(*start, &Message::new(0, &[])), "cannot send the start signal")?;
    }
    let mut tally = Tally::new();
    for _ in 0..PATIENCE {
        if tally.reports == clients {
            break;
        }
        tally.note(&ok(recv(report), "cannot receive reports")?.1)?;
    }
    let after = counts()?;
    if tally.reports != clients {
        return Err("not every client reported");
    }
    Ok(Contended {
        clients,
        round_trips: tally.round_trips,
        ticks: tally.ticks(),
        slow: after.0 - before.0,
        cap_writes: after.1 - before.1,
    })
}
