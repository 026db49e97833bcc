//! IPC ping-pong over the endpoint in its `WAIT` slot, the workload of
//! `cargo xtask trace`. The argument word is `rounds << 1 | role`: role 0 serves
//! (answers each call with its first word plus one, forever), role 1 is the client
//! (makes `rounds` calls, checks every answer, and reports 1 if all were right, else
//! 0, with its CPU and the TSC ticks the calls took, to the root task).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_rt::{Message, call, recv, reply_recv};
use ramen_user_tests::{WAIT, report};

ramen_rt::entry!(main);

/// Label of a ping.
const PING: u64 = 1;

fn serve() {
    let Ok((_, mut ping)) = recv(WAIT) else {
        return;
    };
    loop {
        let value = ping.words().first().copied().unwrap_or(0);
        match reply_recv(WAIT, &Message::new(PING, &[value.wrapping_add(1)])) {
            Ok((_, next)) => ping = next,
            Err(_) => return,
        }
    }
}

fn client(rounds: u64) -> bool {
    (0..rounds).all(|i| {
        call(WAIT, &Message::new(PING, &[i])).is_ok_and(|answer| answer.words().first() == Some(&(i + 1)))
    })
}

fn main(arg: u64) {
    if arg & 1 == 0 {
        serve();
    } else {
        let start = ramen_rt::tsc::rdtsc();
        let ok = client(arg >> 1);
        let ticks = ramen_rt::tsc::rdtscp().wrapping_sub(start);
        report(u64::from(ok), &[u64::from(ramen_rt::current_cpu()), ticks]);
    }
}
