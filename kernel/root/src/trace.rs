//! The `trace` workload, run by the root task when the kernel command line says
//! `trace` (as `cargo xtask trace` boots it): a short IPC ping-pong between a client on
//! CPU 0 and a server on the last CPU, and beside it a shorter one with both on CPU 0
//! (the fastpath), recorded by the kernel's tracing, which then writes its dump to
//! the trace port (COM2) for xtask to decode.
//!
//! Tracing is started after the server is up and before the client starts, so the
//! rings hold the ping-pong rather than the program loading. Command-line knobs:
//! `trace_rounds=N` sets the round trips (default [`DEFAULT_ROUNDS`]);
//! `trace_overhead` first runs a same-CPU ping-pong (the fastpath) with tracing off,
//! then on, and prints the client's TSC ticks for each: under `--icount` a tick is an
//! instruction, so the difference is the recording cost.

use ramen_abi::bootinfo::BootInfo;
use ramen_abi::{object, slot};
use ramen_perf_record::Categories;
use ramen_rt::{kobj, println, recv};

use crate::alloc::Alloc;
use crate::loader::{self, Child, Files, Spawn};

/// Round trips unless `trace_rounds=N` says otherwise: few enough that the kernel's
/// per-CPU rings hold all of them.
const DEFAULT_ROUNDS: u64 = 20;
/// Round trips of the same-CPU pair that runs beside the cross-CPU one (its calls
/// take the fastpath).
const SAME_CPU_ROUNDS: u64 = 5;
/// Round trips of each `trace_overhead` run.
const OVERHEAD_ROUNDS: u64 = 1000;
/// The child slots `pingpong` expects (`ramen_user_tests::REPORT` and `WAIT`).
const REPORT: u64 = 8;
const WAIT: u64 = 9;
/// Priority of the two programs: below the root task, which must run to collect.
const PRIORITY: u64 = 10;
/// Messages the root task reads while waiting for the client's report.
const REPORT_PATIENCE: u32 = 16;

/// The child slot `pingpong` takes a trace-buffer frame from
/// (`ramen_user_tests::TRACE_FRAME`).
const TRACE_FRAME: u64 = 10;

/// Every kernel category, and user events too when the programs have buffers.
fn categories(user: bool) -> u64 {
    let kernel = Categories::all() - Categories::USER;
    u64::from(if user { Categories::all() } else { kernel }.bits())
}

/// Runs the workload and dumps the trace; returns whether the ping-pong was correct
/// and the dump written.
pub fn run(info: &'static BootInfo, cmdline: &str) -> bool {
    let rounds = cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("trace_rounds="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let mut alloc = Alloc::new(info);
    let Ok(files) = loader::Files::map(&mut alloc) else {
        println!("trace: cannot map the boot archive");
        return false;
    };
    let mut ok = true;
    if cmdline.split_ascii_whitespace().any(|w| w == "trace_overhead") {
        ok &= overhead(&mut alloc, &files);
    }
    let server_cpu = u64::from(info.cpu_count.saturating_sub(1));
    println!(
        "trace: {} round trips, client on cpu 0, server on cpu {}; {} more with both on cpu 0",
        rounds, server_cpu, SAME_CPU_ROUNDS
    );
    let pairs = [(rounds, server_cpu), (SAME_CPU_ROUNDS, 0)];
    let traced = ping_pongs(&mut alloc, &files, pairs, Traced::WithUserBuffers);
    println!("trace: ping-pong {}", if traced.is_some() { "correct" } else { "FAILED" });
    ok &= traced.is_some();
    match kobj::trace_dump(slot::TRACE_CONTROL) {
        Ok(n) if n > 0 => println!("trace: dumped {} records to COM2", n),
        Ok(_) => {
            println!("trace: the kernel wrote no trace dump (empty rings or no trace port)");
            return false;
        }
        Err(e) => {
            println!("trace: DUMP failed with error {}", e.code());
            return false;
        }
    }
    ok
}

/// The same-CPU ping-pong with tracing off, then on; prints ticks per round trip.
fn overhead(alloc: &mut Alloc, files: &Files) -> bool {
    let off = ping_pong(alloc, files, OVERHEAD_ROUNDS, 0, Traced::No);
    let on = ping_pong(alloc, files, OVERHEAD_ROUNDS, 0, Traced::Kernel);
    let _ = kobj::trace_stop(slot::TRACE_CONTROL);
    match (off, on) {
        (Some(off), Some(on)) => {
            println!(
                "trace: overhead: {} same-cpu round trips, tracing off {} ticks, on {} ticks ({} and {} per round trip)",
                OVERHEAD_ROUNDS,
                off,
                on,
                off / OVERHEAD_ROUNDS,
                on / OVERHEAD_ROUNDS
            );
            true
        }
        _ => {
            println!("trace: overhead runs FAILED");
            false
        }
    }
}

/// How a ping-pong is traced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Traced {
    No,
    /// Every kernel category.
    Kernel,
    /// Every kernel category, and each program records into a user trace buffer.
    WithUserBuffers,
}

/// One ping-pong of `rounds` calls, client on CPU 0 and server on `server_cpu`, with
/// tracing started just before the client as `traced` says. Returns the client's TSC
/// ticks for its calls, if every answer was right.
fn ping_pong(alloc: &mut Alloc, files: &Files, rounds: u64, server_cpu: u64, traced: Traced) -> Option<u64> {
    ping_pongs(alloc, files, [(rounds, server_cpu)], traced).map(|[ticks]| ticks)
}

/// `N` ping-pongs at once, pair `i` making `pairs[i].0` calls from CPU 0 to a server
/// on CPU `pairs[i].1`. Every server is started, then tracing (as `traced` says),
/// then every client: all program loading is recorded before any IPC, so the rings
/// keep the calls even when they wrap. Returns each client's TSC ticks for its calls
/// (in pair order), if every client answered that all its answers were right.
fn ping_pongs<const N: usize>(
    alloc: &mut Alloc,
    files: &Files,
    pairs: [(u64, u64); N],
    traced: Traced,
) -> Option<[u64; N]> {
    let Ok(report) = alloc.make(object::ENDPOINT, 0) else {
        println!("trace: cannot make endpoints");
        return None;
    };
    // With user buffers, each program gets a frame of its own for one.
    let user = traced == Traced::WithUserBuffers;
    let grants = |alloc: &mut Alloc, endpoint: u64| {
        let frame = if user { alloc.make(object::FRAME_4K, 0).ok() } else { None };
        let grants = [(REPORT, report), (WAIT, endpoint), (TRACE_FRAME, frame.unwrap_or(0))];
        (grants, if frame.is_some() { 3 } else { 2 })
    };
    let mut servers: [Option<Child>; N] = [const { None }; N];
    let mut endpoints = [0u64; N];
    let mut ok = true;
    for ((server, endpoint), &(_, server_cpu)) in servers.iter_mut().zip(&mut endpoints).zip(&pairs) {
        let Ok(made) = alloc.make(object::ENDPOINT, 0) else {
            println!("trace: cannot make endpoints");
            ok = false;
            break;
        };
        *endpoint = made;
        let (server_grants, server_count) = grants(alloc, made);
        let server_spec = spec(0, server_cpu, server_grants.get(..server_count).unwrap_or(&[]));
        *server = loader::spawn(alloc, files, &server_spec).ok();
        if server.is_none() {
            println!("trace: cannot start the pingpong server");
            ok = false;
            break;
        }
    }
    if ok && traced != Traced::No && kobj::trace_start(slot::TRACE_CONTROL, categories(user)).is_err() {
        println!("trace: the kernel refused to start tracing");
        ok = false;
    }
    let mut clients: [Option<Child>; N] = [const { None }; N];
    if ok {
        for ((client, &endpoint), &(rounds, _)) in clients.iter_mut().zip(&endpoints).zip(&pairs) {
            let (client_grants, client_count) = grants(alloc, endpoint);
            let client_spec = spec(rounds << 1 | 1, 0, client_grants.get(..client_count).unwrap_or(&[]));
            *client = loader::spawn(alloc, files, &client_spec).ok();
            ok &= client.is_some();
        }
    }
    // Reports come in any order; each names its client by its rounds.
    let mut ticks: [Option<u64>; N] = [None; N];
    let mut reports = 0;
    let mut patience = REPORT_PATIENCE * N as u32;
    while ok && reports < N && patience > 0 {
        patience -= 1;
        let Ok((_, message)) = recv(report) else { continue };
        reports += 1;
        if message.label() != 1 {
            ok = false;
            break;
        }
        let words = message.words();
        let (client_ticks, client_rounds) = (words.get(1).copied().unwrap_or(0), words.get(2).copied());
        // Pairs are told apart by their rounds; equal rounds fill the first free entry.
        let slot =
            pairs.iter().zip(&ticks).position(|(pair, t)| Some(pair.0) == client_rounds && t.is_none());
        match slot.and_then(|i| ticks.get_mut(i)) {
            Some(entry) => *entry = Some(client_ticks),
            None => ok = false,
        }
    }
    for child in clients.iter().chain(&servers).flatten() {
        stop(child);
    }
    if !ok {
        return None;
    }
    let mut out = [0u64; N];
    for (o, t) in out.iter_mut().zip(ticks) {
        *o = t?;
    }
    Some(out)
}

/// A `pingpong` program's start: `arg` (see the program), on `cpu`, with `grants`.
fn spec(arg: u64, cpu: u64, grants: &[(u64, u64)]) -> Spawn<'_> {
    Spawn { name: "pingpong", arg, cpu, priority: PRIORITY, grants, fault_handler: false }
}

fn stop(child: &Child) {
    let _ = kobj::suspend(child.tcb);
}
