//! The IPC benchmark, run by the root task when the kernel command line says `bench`.
//!
//! Each latency case starts a client and a server (`bench-ipc`, protocol in
//! `ramen_bench_ipc`) on the CPUs it names, waits for the client's report and stops
//! both. The client prints its samples (`BENCHS` lines); this prints one
//! `BENCH {json}` line per case, which `cargo xtask bench` parses into the report:
//! `kind` is `machine` (first), `latency`, `throughput`, `unsupported`, `failed`, and
//! `end` (last). Progress goes out as `bench: ...` lines.
//!
//! Each latency line also carries the kernel's fastpath and slow-path IPC counts over
//! the case (`DebugConsole::IPC_STATS`, summed over CPUs; they include the setup, the
//! timestamp dump and the reports, so they show which path the timed calls took
//! rather than counting them exactly).
//!
//! Command-line knobs: `bench_samples=N` (latency samples per case, default
//! [`DEFAULT_SAMPLES`]), `bench_warmup=N` (calls discarded first), `bench_rounds=N`
//! (round trips per pair in the scaling runs), `bench_cases=A,B,...` (only these
//! latency cases: a case name, or `name:words` for one message length).
//!
//! `bench_trace` (what `cargo xtask trace` boots by default) records the benchmark:
//! kernel tracing (every kernel category) starts before the first latency case and
//! the dump goes to the trace port after the last; the scaling and bulk runs are
//! left out (the per-CPU rings would keep only their last round trips), as are the
//! cases that start and stop tracing themselves.

use ramen_abi::bootinfo::BootInfo;
use ramen_abi::{object, slot};
use ramen_bench_ipc::{ENDPOINT, Job, MAX_ROUNDS, MAX_SAMPLES, PING, PONG, REPORT, Role, START, label};
use ramen_perf_record::Categories;
use ramen_rt::{Message, kobj, println, recv, send};

use crate::alloc::Alloc;
use crate::loader::{self, Child, Files, Spawn};

/// The benchmark program's name in the boot archive.
const PROGRAM: &str = "bench-ipc";
/// Priority of the benchmark threads: below the root task, which must get to run to
/// collect reports, and equal for client and server.
const BENCH_PRIORITY: u64 = 10;
/// Latency samples per case unless `bench_samples=N` says otherwise.
const DEFAULT_SAMPLES: u64 = 1000;
/// Calls discarded before the samples unless `bench_warmup=N` says otherwise.
const DEFAULT_WARMUP: u64 = 100;
/// Round trips per pair in each scaling run unless `bench_rounds=N` says otherwise.
const DEFAULT_ROUNDS: u64 = 20_000;
/// Most client/server pairs in a scaling run (one per CPU).
const MAX_PAIRS: u64 = 64;
/// Messages the root task reads while waiting for one report before giving up.
const REPORT_PATIENCE: u32 = 64;

/// Repetitions of each bulk transfer unless `bench_bulk_reps=N` says otherwise.
const DEFAULT_BULK_REPS: u64 = 5;

struct Ctx {
    alloc: Alloc,
    files: Files,
    /// The endpoint the clients report to (root slot).
    report: u64,
    samples: u64,
    warmup: u64,
    rounds: u64,
    bulk_reps: u64,
    /// Latency cases started so far: the next case's id.
    next_id: u64,
}

/// What a latency case's two threads are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Endpoint client and server, each in its own program.
    CrossAs,
    /// The server is a second thread in the client's address space.
    SameAs,
    /// Signal-and-wait over two notifications, each thread in its own program.
    Notification,
    /// Cross address space, through Foundry-generated client and dispatch.
    Foundry,
    /// Like `CrossAs`, with kernel tracing on (every kernel category).
    Traced,
    /// Like `CrossAs`, and every call transfers a capability.
    CapTransfer,
}

/// One latency case: what runs where, and how long a message is.
struct Pair {
    case: &'static str,
    words: u64,
    client_cpu: u64,
    server_cpu: u64,
    kind: Kind,
}

impl Pair {
    /// The case with the client on CPU 0 and the server on `server_cpu`, if there is one.
    fn on(case: &'static str, words: u64, server_cpu: Option<u64>, kind: Kind) -> Option<Self> {
        server_cpu.map(|server_cpu| Self { case, words, client_cpu: 0, server_cpu, kind })
    }
}

/// Whether `bench_cases` entry `name` (`case` or `case:words`) picks `pair`.
fn case_matches(name: &str, pair: &Pair) -> bool {
    match name.split_once(':') {
        Some((case, words)) => case == pair.case && words.parse() == Ok(pair.words),
        None => name == pair.case,
    }
}

fn knob(cmdline: &str, name: &str, default: u64) -> u64 {
    cmdline
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
        .and_then(|value| value.trim_end_matches('\0').parse().ok())
        .unwrap_or(default)
}

/// Runs every case; returns whether all that the kernel supports ran.
pub fn run(info: &'static BootInfo) -> bool {
    let mut alloc = Alloc::new(info);
    let Ok(files) = loader::Files::map(&mut alloc) else {
        println!("bench: cannot map the boot archive");
        return false;
    };
    let Ok(report) = alloc.make(object::ENDPOINT, 0) else {
        println!("bench: cannot make the report endpoint");
        return false;
    };
    let cmdline = core::str::from_utf8(&info.cmdline).unwrap_or("");
    // Warm-up and samples share one buffer of MAX_SAMPLES.
    let warmup = knob(cmdline, "bench_warmup", DEFAULT_WARMUP).min(MAX_SAMPLES - 1);
    let samples = knob(cmdline, "bench_samples", DEFAULT_SAMPLES).clamp(1, MAX_SAMPLES - warmup);
    let rounds = knob(cmdline, "bench_rounds", DEFAULT_ROUNDS).clamp(1, MAX_ROUNDS);
    let cpus = u64::from(info.cpu_count);
    println!(
        "BENCH {{\"kind\":\"machine\",\"cpus\":{},\"sockets\":{},\"tsc_hz\":{},\"samples\":{},\"warmup\":{},\"rounds\":{}}}",
        cpus, info.socket_count, info.tsc_hz, samples, warmup, rounds
    );
    let bulk_reps = knob(cmdline, "bench_bulk_reps", DEFAULT_BULK_REPS).clamp(1, 64);
    let mut ctx = Ctx { alloc, files, report, samples, warmup, rounds, bulk_reps, next_id: 1 };

    // Another CPU of CPU 0's package, and one of another package.
    let package = |cpu: u64| info.cpus.get(cpu as usize).map(|c| c.package);
    let same_socket = (1..cpus).find(|&cpu| package(cpu) == package(0));
    let other_socket = (1..cpus).find(|&cpu| package(cpu) != package(0));
    let pairs = [
        Pair::on("same_core_cross_as", 0, Some(0), Kind::CrossAs),
        Pair::on("same_core_cross_as", 4, Some(0), Kind::CrossAs),
        Pair::on("same_core_cross_as", 6, Some(0), Kind::CrossAs),
        Pair::on("same_core_cross_as", 10, Some(0), Kind::CrossAs),
        Pair::on("slowpath_cap_transfer", 10, Some(0), Kind::CapTransfer),
        Pair::on("same_core_same_as", 0, Some(0), Kind::SameAs),
        Pair::on("cross_core_same_socket", 0, same_socket, Kind::CrossAs),
        Pair::on("cross_core_cross_socket", 0, other_socket, Kind::CrossAs),
        Pair::on("notification_same_core", 0, Some(0), Kind::Notification),
        Pair::on("notification_cross_core", 0, same_socket, Kind::Notification),
        Pair::on("same_core_cross_as_traced", 0, Some(0), Kind::Traced),
        Pair::on("foundry_echo_same_core", 0, Some(0), Kind::Foundry),
        Pair::on("foundry_echo_same_core", 6, Some(0), Kind::Foundry),
    ];
    // `bench_headline` (a second boot comparing kernel builds): only the headline
    // case, no scaling or bulk.
    let headline_only =
        cmdline.split_ascii_whitespace().any(|w| w.trim_end_matches('\0') == "bench_headline");
    let traced = cmdline.split_ascii_whitespace().any(|w| w.trim_end_matches('\0') == "bench_trace");
    let cases =
        cmdline.split_ascii_whitespace().find_map(|w| w.trim_end_matches('\0').strip_prefix("bench_cases="));
    let chosen = |pair: &&Pair| {
        (!headline_only || (pair.case == "same_core_cross_as" && pair.words == 0))
            && cases.is_none_or(|list| list.split(',').any(|name| case_matches(name, pair)))
            && !(traced && pair.kind == Kind::Traced)
    };
    let latency_cases = pairs.iter().flatten().filter(chosen).count() as u64;
    if latency_cases == 0 && cases.is_some() {
        println!("bench: no latency case matches bench_cases");
        return false;
    }

    let mut all_ok = true;
    if traced {
        let all_kernel = u64::from((Categories::all() - Categories::USER).bits());
        if kobj::trace_start(slot::TRACE_CONTROL, all_kernel).is_err() {
            println!("bench: the kernel refused to start tracing");
            return false;
        }
    }
    for (n, pair) in pairs.iter().flatten().filter(chosen).enumerate() {
        println!(
            "bench: [{}/{}] {} words={} client cpu {} server cpu {}",
            n as u64 + 1,
            latency_cases,
            pair.case,
            pair.words,
            pair.client_cpu,
            pair.server_cpu
        );
        if let Err(why) = latency(&mut ctx, pair) {
            println!(
                "BENCH {{\"kind\":\"failed\",\"case\":\"{}\",\"words\":{},\"why\":\"{}\"}}",
                pair.case, pair.words, why
            );
            all_ok = false;
        }
    }
    if traced {
        match kobj::trace_dump(slot::TRACE_CONTROL) {
            Ok(records) => println!("bench: trace dumped {} records", records),
            Err(e) => {
                println!("bench: trace DUMP failed with error {}", e.code());
                all_ok = false;
            }
        }
    }
    if headline_only || traced {
        println!("BENCH {{\"kind\":\"end\"}}");
        return all_ok;
    }
    let mut kept = [None; MAX_PAIRS as usize];
    // One unreported round with one pair first: the first run on a fresh boot also
    // pays for warming caches (and, under QEMU, translating the code), which made
    // the one-pair figure, and so every efficiency, swing from boot to boot.
    println!("bench: scaling warm-up, 1 pair, {} round trips (not reported)", ctx.rounds);
    if let Err(why) = scaling(&mut ctx, &mut kept, 1, false) {
        println!("BENCH {{\"kind\":\"failed\",\"case\":\"scaling\",\"pairs\":1,\"why\":\"{}\"}}", why);
        all_ok = false;
    }
    for pairs in 1..=cpus.min(MAX_PAIRS) {
        println!(
            "bench: scaling, {} pair(s) on CPUs 0..{}, {} round trips each",
            pairs,
            pairs - 1,
            ctx.rounds
        );
        if let Err(why) = scaling(&mut ctx, &mut kept, pairs, true) {
            println!(
                "BENCH {{\"kind\":\"failed\",\"case\":\"scaling\",\"pairs\":{},\"why\":\"{}\"}}",
                pairs, why
            );
            all_ok = false;
            break;
        }
    }
    if let Err(why) = beside_churn(&mut ctx, cpus) {
        println!("BENCH {{\"kind\":\"failed\",\"case\":\"churn\",\"why\":\"{}\"}}", why);
        all_ok = false;
    }
    for pair in kept.iter().flatten() {
        let _ = kobj::suspend(pair.client.tcb);
        let _ = kobj::suspend(pair.server.tcb);
    }
    if let Err(why) = contended(&mut ctx, cpus) {
        println!("BENCH {{\"kind\":\"failed\",\"case\":\"contended\",\"why\":\"{}\"}}", why);
        all_ok = false;
    }
    println!("bench: bulk, {} repetitions per size and method", ctx.bulk_reps);
    if let Err(why) = bulk(&mut ctx) {
        println!("BENCH {{\"kind\":\"failed\",\"case\":\"bulk\",\"why\":\"{}\"}}", why);
        all_ok = false;
    }
    println!("BENCH {{\"kind\":\"end\"}}");
    all_ok
}

fn ok<T>(result: Result<T, ramen_rt::SysError>, what: &'static str) -> Result<T, &'static str> {
    result.map_err(|_| what)
}

/// Starts one `bench-ipc` thread in a program of its own, with `grants`.
fn start(ctx: &mut Ctx, job: &Job, cpu: u64, grants: &[(u64, u64)]) -> Result<Child, &'static str> {
    let spec = Spawn {
        name: PROGRAM,
        arg: job.encode(),
        cpu,
        priority: BENCH_PRIORITY,
        grants,
        fault_handler: false,
    };
    loader::spawn(&mut ctx.alloc, &ctx.files, &spec).map_err(|_| "cannot start bench-ipc")
}

/// Receives reports until one with `wanted` label arrives; a `FAILED` report ends the
/// wait with an error.
fn wait_report(ctx: &Ctx, wanted: u64) -> Result<Message, &'static str> {
    for _ in 0..REPORT_PATIENCE {
        let (_, message) = ok(recv(ctx.report), "cannot receive reports")?;
        if message.label() == wanted {
            return Ok(message);
        }
        if message.label() == label::FAILED {
            return Err("a benchmark thread's system call failed");
        }
    }
    Err("no report from the benchmark client")
}

fn latency(ctx: &mut Ctx, pair: &Pair) -> Result<(), &'static str> {
    let id = ctx.next_id;
    ctx.next_id += 1;
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "cannot make an endpoint")?;
    let job = |role| Job {
        role,
        words: pair.words,
        case_id: id,
        count: ctx.samples,
        warmup: ctx.warmup,
        transfer_cap: pair.kind == Kind::CapTransfer,
    };
    let (client_role, server_role) = match pair.kind {
        Kind::CrossAs | Kind::SameAs | Kind::Traced | Kind::CapTransfer => {
            (Role::LatencyClient, Role::Server)
        }
        Kind::Notification => (Role::NotificationClient, Role::NotificationServer),
        Kind::Foundry => (Role::FoundryClient, Role::FoundryServer),
    };
    let client_job = job(client_role);
    let server_job = Job { count: ctx.samples + ctx.warmup, ..job(server_role) };
    let (mut ping, mut pong) = (0, 0);
    if pair.kind == Kind::Notification {
        ping = ok(ctx.alloc.make(object::NOTIFICATION, 0), "cannot make a notification")?;
        pong = ok(ctx.alloc.make(object::NOTIFICATION, 0), "cannot make a notification")?;
    }
    let grants = [(ENDPOINT, endpoint), (PING, ping), (PONG, pong), (REPORT, ctx.report)];
    // The notifications only where they exist; the server has no report capability.
    let (client_grants, server_grants) = match pair.kind {
        Kind::Notification => (&grants[..], &grants[..3]),
        Kind::CrossAs | Kind::SameAs | Kind::Foundry | Kind::Traced | Kind::CapTransfer => {
            (&[grants[0], grants[3]][..], &grants[..1])
        }
    };
    // The statistics are part of the report: a failed read is an error, not 0/0.
    let (fast_before, slow_before) = ok(kobj::ipc_stats(slot::DEBUG), "cannot read IPC_STATS")?;
    if pair.kind == Kind::Traced {
        let all_kernel = u64::from((Categories::all() - Categories::USER).bits());
        ok(kobj::trace_start(slot::TRACE_CONTROL, all_kernel), "cannot start tracing")?;
    }
    let (client, server) = if pair.kind == Kind::SameAs {
        let client = start(ctx, &client_job, pair.client_cpu, client_grants)?;
        let server = loader::spawn_thread(
            &mut ctx.alloc,
            &client,
            1,
            server_job.encode(),
            pair.server_cpu,
            BENCH_PRIORITY,
        )
        .map_err(|_| "cannot start the server thread");
        (Ok(client), server)
    } else {
        let server = start(ctx, &server_job, pair.server_cpu, server_grants);
        let client =
            if server.is_ok() { start(ctx, &client_job, pair.client_cpu, client_grants) } else { server };
        (client, server)
    };
    let result = client.and(server).and_then(|_| wait_report(ctx, label::LATENCY_DONE));
    for child in [client, server].iter().flatten() {
        let _ = kobj::suspend(child.tcb);
    }
    if pair.kind == Kind::Traced {
        let _ = kobj::trace_stop(slot::TRACE_CONTROL);
    }
    let (fast_after, slow_after) = ok(kobj::ipc_stats(slot::DEBUG), "cannot read IPC_STATS")?;
    let report = result?;
    let words = report.words();
    let [overhead, samples, stub_overhead] = [0, 1, 2].map(|i| words.get(i).copied().unwrap_or(0));
    println!(
        "BENCH {{\"kind\":\"latency\",\"id\":{},\"case\":\"{}\",\"words\":{},\"client_cpu\":{},\"server_cpu\":{},\"overhead\":{},\"stub_overhead\":{},\"samples\":{},\"fastpath_ops\":{},\"slowpath_ops\":{}}}",
        id,
        pair.case,
        pair.words,
        pair.client_cpu,
        pair.server_cpu,
        overhead,
        stub_overhead,
        samples,
        fast_after.wrapping_sub(fast_before),
        slow_after.wrapping_sub(slow_before)
    );
    Ok(())
}

/// A scaling pair kept from one run to the next: its threads, and the endpoint its
/// client waits on for the start signal.
#[derive(Clone, Copy)]
struct ScalingPair {
    server: Child,
    client: Child,
    start: u64,
}

/// `pairs` same-core client/server pairs, pair i on CPU i, released together; the
/// span is from the first client's start to the last one's end. The pairs of the
/// previous run are reused (their clients wait for the next start signal) and one is
/// added, so N runs cost N pairs, not N(N+1)/2: the root task cannot reclaim slots yet.
fn scaling(
    ctx: &mut Ctx,
    kept: &mut [Option<ScalingPair>],
    pairs: u64,
    report: bool,
) -> Result<(), &'static str> {
    let new = pairs as usize - 1;
    if kept.get(new).is_some_and(Option::is_none) {
        let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "cannot make an endpoint")?;
        let start_endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "cannot make an endpoint")?;
        let server_job =
            Job { role: Role::Server, words: 0, case_id: 0, count: 0, warmup: 0, transfer_cap: false };
        let client_job = Job { role: Role::ThroughputClient, count: ctx.rounds, ..server_job };
        let grants = [(ENDPOINT, endpoint), (REPORT, ctx.report), (START, start_endpoint)];
        let cpu = pairs - 1;
        let server = start(ctx, &server_job, cpu, &grants[..1])?;
        let client = match start(ctx, &client_job, cpu, &grants) {
            Ok(client) => client,
            Err(why) => {
                let _ = kobj::suspend(server.tcb);
                return Err(why);
            }
        };
        if let Some(slot) = kept.get_mut(new) {
            *slot = Some(ScalingPair { server, client, start: start_endpoint });
        }
    }
    // Each client has its own start endpoint, so every one gets exactly one signal.
    for pair in kept.iter().take(pairs as usize).flatten() {
        ok(send(pair.start, &Message::new(0, &[])), "cannot send the start signal")?;
    }
    let mut first_start = u64::MAX;
    let mut last_end = 0;
    let mut round_trips = 0;
    for _ in 0..pairs {
        let report = wait_report(ctx, label::THROUGHPUT_DONE)?;
        let words = report.words();
        let get = |i: usize| words.get(i).copied().unwrap_or(0);
        first_start = first_start.min(get(0));
        last_end = last_end.max(get(1));
        round_trips += get(2);
    }
    if !report {
        return Ok(());
    }
    println!(
        "BENCH {{\"kind\":\"throughput\",\"case\":\"scaling\",\"pairs\":{},\"round_trips\":{},\"ticks\":{}}}",
        pairs,
        round_trips,
        last_end.saturating_sub(first_start)
    );
    Ok(())
}

/// What the global lock left costs IPC: same-core pairs on CPUs 1.. (not the root
/// task's CPU), released together twice, once with the root task waiting for their
/// reports and once with it copying and deleting a capability as fast as it can
/// meanwhile (each a write acquisition of `CAP_LOCK`, which waits out every CPU's
/// fastpath read section and holds new ones back). Reports both throughputs, the
/// capability changes made and the write acquisitions counted over each run. The
/// clients make a twentieth of the scaling runs' round trips: under icount the vCPUs
/// take turns, and each write acquisition leaves the pairs' CPUs spinning until the
/// root task's CPU runs again (20,000 round trips did not finish in 300 s).
fn beside_churn(ctx: &mut Ctx, cpus: u64) -> Result<(), &'static str> {
    // At most this many capability changes per round trip the pairs make, then the
    // root task waits for their reports: under icount the vCPUs take turns, and a
    // root task changing capabilities on every one of its turns can hold the lock
    // whenever the pairs' CPU runs, so they may never finish (the run timed out
    // once the lock became a queue lock, and earlier once the thread invocations
    // left it: the schedule is deterministic but shifts with every change). The
    // parallel runs made 6-10 changes per round trip, well under it.
    const MAX_CHANGES_PER_ROUND_TRIP: u64 = 20;
    let pairs = cpus.min(MAX_PAIRS).saturating_sub(1);
    if pairs == 0 {
        return Ok(());
    }
    let rounds = (ctx.rounds / 20).max(1);
    let spare = ok(ctx.alloc.slot(), "no free slot for the churn")?;
    let mut started: [Option<ScalingPair>; MAX_PAIRS as usize] = [const { None }; MAX_PAIRS as usize];
    let result = (|| {
        for (cpu, entry) in (1..=pairs).zip(started.iter_mut()) {
            let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "cannot make an endpoint")?;
            let start_endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "cannot make an endpoint")?;
            let server_job =
                Job { role: Role::Server, words: 0, case_id: 0, count: 0, warmup: 0, transfer_cap: false };
            let client_job = Job { role: Role::ThroughputClient, count: rounds, ..server_job };
            let grants = [(ENDPOINT, endpoint), (REPORT, ctx.report), (START, start_endpoint)];
            let server = start(ctx, &server_job, cpu, &grants[..1])?;
            let client = start(ctx, &client_job, cpu, &grants);
            let client = client.inspect_err(|_| {
                let _ = kobj::suspend(server.tcb);
            })?;
            *entry = Some(ScalingPair { server, client, start: start_endpoint });
        }
        for churn in [false, true] {
            println!(
                "bench: {} pair(s) on CPUs 1..{}, {} round trips each, {}",
                pairs,
                pairs,
                rounds,
                if churn { "the root task changing capabilities meanwhile" } else { "alone" }
            );
            let writes_before = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")?;
            for pair in started.iter().flatten() {
                ok(send(pair.start, &Message::new(0, &[])), "cannot send the start signal")?;
            }
            let (mut tally, mut changes) = (crate::contended::Tally::new(), 0u64);
            while tally.reports < pairs {
                let report = if churn && changes < MAX_CHANGES_PER_ROUND_TRIP * rounds * pairs {
                    ok(kobj::copy(slot::CNODE, spare, 64, ctx.report), "copy failed")?;
                    ok(kobj::delete(slot::CNODE, spare, 64), "delete failed")?;
                    changes += 2;
                    match ramen_rt::nb_recv(ctx.report) {
                        Ok((_, message)) => message,
                        Err(e) if e == ramen_abi::Error::Busy => continue,
                        Err(_) => return Err("cannot receive reports"),
                    }
                } else {
                    ok(recv(ctx.report), "cannot receive reports")?.1
                };
                tally.note(&report)?;
            }
            let writes = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")? - writes_before;
            println!(
                "BENCH {{\"kind\":\"churn\",\"churn\":{},\"pairs\":{},\"round_trips\":{},\"ticks\":{},\"cap_changes\":{},\"cap_writes\":{}}}",
                churn,
                pairs,
                tally.round_trips,
                tally.ticks(),
                changes,
                writes
            );
        }
        Ok(())
    })();
    for pair in started.iter().flatten() {
        let _ = kobj::suspend(pair.client.tcb);
        let _ = kobj::suspend(pair.server.tcb);
    }
    result
}

/// The busy server (`crate::contended`): clients on every CPU (four at least, round
/// robin) calling one server on the last CPU at once, `rounds / 4` calls each,
/// released four times: with the fastpath on and off unreported (the first release
/// measured 12% slower under multi-threaded TCG, whichever mode it was: code being
/// translated), then on and off reported.
fn contended(ctx: &mut Ctx, cpus: u64) -> Result<(), &'static str> {
    let clients = cpus.clamp(4, crate::contended::MAX_CLIENTS as u64);
    let rounds = (ctx.rounds / 4).max(1);
    println!(
        "bench: busy server, {} clients, {} round trips each, fastpath on and off (after a warm-up of each)",
        clients, rounds
    );
    let mut release = 0;
    crate::contended::run(
        &mut ctx.alloc,
        &ctx.files,
        ctx.report,
        (cpus - 1, cpus),
        (clients, rounds),
        &[true, false, true, false],
        |on, run| {
            release += 1;
            if release > 2 {
                println!(
                    "BENCH {{\"kind\":\"contended\",\"fastpath\":{},\"clients\":{},\"round_trips\":{},\"ticks\":{},\"slow\":{},\"cap_writes\":{}}}",
                    on, run.clients, run.round_trips, run.ticks, run.slow, run.cap_writes
                );
            }
            Ok(())
        },
    )
}

/// The bulk case: a client on CPU 0 moves each of `BULK_SIZES` to a server on CPU 0,
/// copied through full-length messages and lent as one lease. The root task maps
/// the client's data (the largest size, 2 MiB frames) and the server's window
/// tables, which are kernel objects paid for with its untyped memory.
fn bulk(ctx: &mut Ctx) -> Result<(), &'static str> {
    use ramen_bench_ipc::{BULK_AREA, BULK_SIZES, BULK_WINDOW};
    let largest = BULK_SIZES.iter().copied().max().unwrap_or(0);
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "cannot make an endpoint")?;
    let reps = ctx.bulk_reps;
    let job = |role| Job { role, words: 0, case_id: 0, count: reps, warmup: 0, transfer_cap: false };
    let grants = [(ENDPOINT, endpoint), (REPORT, ctx.report)];
    let server = start(ctx, &job(Role::BulkServer), 0, &grants[..1])?;
    let prepared = ok(
        ramen_rt::vm::install_tables(server.vspace, BULK_WINDOW, largest, &mut ctx.alloc),
        "cannot install the window's tables",
    )
    .and_then(|()| {
        ok(kobj::set_lease_window(server.tcb, BULK_WINDOW, largest), "cannot set the lease window")
    });
    // The client waits on START until the root task has mapped its data.
    let client = prepared.and_then(|()| {
        let start_endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "cannot make an endpoint")?;
        let client = start(ctx, &job(Role::BulkClient), 0, &[grants[0], grants[1], (START, start_endpoint)])?;
        // 2 MiB frames: eight for the largest size (a lease pins each once).
        const LARGE: u64 = 2 << 20;
        let mut at = 0;
        while at < largest {
            let frame = ok(ctx.alloc.make(object::FRAME_2M, 0), "cannot make a data frame")?;
            ok(
                ramen_rt::vm::map_page(client.vspace, frame, BULK_AREA + at, 0, &mut ctx.alloc),
                "cannot map the client's data",
            )?;
            at += LARGE;
        }
        ok(send(start_endpoint, &Message::new(0, &[])), "cannot start the bulk client")?;
        Ok(client)
    });
    let mut result = client.map(drop);
    for _ in 0..2 * BULK_SIZES.len() {
        if result.is_err() {
            break;
        }
        result = wait_report(ctx, label::BULK_DONE).map(|report| {
            let w = report.words();
            let get = |i: usize| w.get(i).copied().unwrap_or(0);
            println!(
                "BENCH {{\"kind\":\"bulk\",\"bytes\":{},\"method\":\"{}\",\"median\":{},\"min\":{},\"reps\":{}}}",
                get(0),
                if get(1) == 1 { "lease" } else { "copy" },
                get(2),
                get(3),
                get(4)
            );
        });
    }
    for child in [client.ok(), Some(server)].iter().flatten() {
        let _ = kobj::suspend(child.tcb);
    }
    result
}
