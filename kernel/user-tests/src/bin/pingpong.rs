//! IPC ping-pong over the endpoint in its `WAIT` slot, the workload of
//! `cargo xtask trace`. The argument word is `rounds << 1 | role`: role 0 serves
//! (answers each call with its first word plus one, forever), role 1 is the client
//! (makes `rounds` calls, checks every answer, and reports 1 if all were right, else
//! 0, with its CPU, the TSC ticks the calls took and its rounds, to the root task).
//!
//! Given a frame in its `TRACE_FRAME` slot, it also records into a user trace
//! buffer: the server a `serve` span per request, the client a `call` span per call
//! and a `round` counter.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_rt::trace::{BUFFER_VADDR, Tracer, label};
use ramen_rt::{Message, call, recv, reply_recv, slot};
use ramen_user_tests::{TRACE_FRAME, WAIT, report};

ramen_rt::entry!(main);

/// Label of a ping.
const PING: u64 = 1;

const SERVE: u64 = label("serve");
const CALL: u64 = label("call");
const ROUND: u64 = label("round");

/// The trace buffer, if the root task gave this program a frame for one.
fn tracer() -> Option<Tracer> {
    Tracer::attach(slot::THREAD, TRACE_FRAME, BUFFER_VADDR).ok()
}

fn serve() {
    let mut tracer = tracer();
    let Ok((_, mut ping)) = recv(WAIT) else {
        return;
    };
    loop {
        let value = ping.words().first().copied().unwrap_or(0);
        // The span covers the work between receiving a request and answering it.
        if let Some(t) = tracer.as_mut() {
            t.begin(SERVE, value);
            t.end(SERVE, value);
        }
        match reply_recv(WAIT, &Message::new(PING, &[value.wrapping_add(1)])) {
            Ok((_, next)) => ping = next,
            Err(_) => return,
        }
    }
}

fn client(rounds: u64) -> bool {
    let mut tracer = tracer();
    (0..rounds).all(|i| {
        let ping = || {
            call(WAIT, &Message::new(PING, &[i])).is_ok_and(|answer| answer.words().first() == Some(&(i + 1)))
        };
        match tracer.as_mut() {
            Some(t) => {
                t.counter(ROUND, i as i64);
                t.span(CALL, ping)
            }
            None => ping(),
        }
    })
}

fn main(arg: u64) {
    if arg & 1 == 0 {
        serve();
    } else {
        let start = ramen_rt::tsc::rdtsc();
        let rounds = arg >> 1;
        let ok = client(rounds);
        let ticks = ramen_rt::tsc::rdtscp().wrapping_sub(start);
        report(u64::from(ok), &[u64::from(ramen_rt::current_cpu()), ticks, rounds]);
    }
}
