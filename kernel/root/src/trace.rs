//! The `trace` workload, run by the root task when the kernel command line says
//! `trace` (as `cargo xtask trace` boots it): a short IPC ping-pong between a client on
//! CPU 0 and a server on the last CPU, recorded by the kernel's tracing, which then
//! writes its dump to the trace port (COM2) for xtask to decode.
//!
//! Tracing is started after the server is up and before the client starts, so the
//! rings hold the ping-pong rather than the program loading. `trace_rounds=N` on the
//! command line sets the round trips (default [`DEFAULT_ROUNDS`]).

use ramen_abi::bootinfo::BootInfo;
use ramen_abi::invocation::debug;
use ramen_abi::{object, slot};
use ramen_perf_record::Categories;
use ramen_rt::{Message, call, kobj, println, recv};

use crate::alloc::Alloc;
use crate::loader::{self, Child, Spawn};

/// Round trips unless `trace_rounds=N` says otherwise: few enough that the kernel's
/// per-CPU rings hold all of them.
const DEFAULT_ROUNDS: u64 = 20;
/// The child slots `pingpong` expects (`ramen_user_tests::REPORT` and `WAIT`).
const REPORT: u64 = 8;
const WAIT: u64 = 9;
/// Priority of the two programs: below the root task, which must run to collect.
const PRIORITY: u64 = 10;
/// Messages the root task reads while waiting for the client's report.
const REPORT_PATIENCE: u32 = 16;

/// Every kernel category.
fn kernel_categories() -> u64 {
    u64::from((Categories::all() - Categories::USER).bits())
}

fn console_call(label: u64, words: &[u64]) -> Option<Message> {
    call(slot::DEBUG, &Message::new(label, words)).ok()
}

/// Runs the workload and dumps the trace; returns whether the ping-pong was correct
/// and the dump written.
pub fn run(info: &'static BootInfo, cmdline: &str) -> bool {
    let rounds = cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("trace_rounds="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let ok = ping_pong(info, rounds);
    let records = console_call(debug::TRACE_DUMP, &[]).and_then(|m| m.words().first().copied());
    match records {
        Some(n) if n > 0 => println!("trace: dumped {} records to COM2", n),
        _ => {
            println!("trace: the kernel wrote no trace dump");
            return false;
        }
    }
    ok
}

fn ping_pong(info: &'static BootInfo, rounds: u64) -> bool {
    let mut alloc = Alloc::new(info);
    let Ok(files) = loader::Files::map(&mut alloc) else {
        println!("trace: cannot map the boot archive");
        return false;
    };
    let (Ok(report), Ok(endpoint)) = (alloc.make(object::ENDPOINT, 0), alloc.make(object::ENDPOINT, 0))
    else {
        println!("trace: cannot make endpoints");
        return false;
    };
    let server_cpu = u64::from(info.cpu_count.saturating_sub(1));
    let grants = [(REPORT, report), (WAIT, endpoint)];
    let spec = |arg, cpu| Spawn {
        name: "pingpong",
        arg,
        cpu,
        priority: PRIORITY,
        grants: &grants,
        fault_handler: false,
    };
    let Ok(server) = loader::spawn(&mut alloc, &files, &spec(0, server_cpu)) else {
        println!("trace: cannot start the pingpong server");
        return false;
    };
    if console_call(debug::TRACE_START, &[kernel_categories()]).is_none() {
        println!("trace: the kernel refused to start tracing");
        stop(&server);
        return false;
    }
    println!("trace: {} round trips, client on cpu 0, server on cpu {}", rounds, server_cpu);
    let client = loader::spawn(&mut alloc, &files, &spec(rounds << 1 | 1, 0));
    let mut ok = false;
    if let Ok(client) = &client {
        for _ in 0..REPORT_PATIENCE {
            if let Ok((_, message)) = recv(report) {
                ok = message.label() == 1;
                break;
            }
        }
        stop(client);
    }
    stop(&server);
    println!("trace: ping-pong {}", if ok { "correct" } else { "FAILED" });
    ok
}

fn stop(child: &Child) {
    let _ = kobj::suspend(child.tcb);
}
