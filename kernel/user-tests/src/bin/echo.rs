//! The Foundry echo service over a real endpoint: with argument 0 it serves the
//! `bench.echo` contract on the endpoint in its `WAIT` slot; with argument 1 it is a
//! client that calls every register-sized method there, checks each answer, and
//! reports 1 (all correct) or 0 to the root task. With argument 2 the client also
//! records one trace span per call (Foundry's tracer hook) into a user trace buffer
//! made from the frame in its `TRACE_FRAME` slot, and reports the records written.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use foundry_runtime::serve;
use ramen_rt::ipc::{Endpoint, Server};
use ramen_rt::slot;
use ramen_rt::trace::{BUFFER_VADDR, CallSpans, Tracer};
use ramen_user_tests::echo as contract;
use ramen_user_tests::echo::echo;
use ramen_user_tests::{TRACE_FRAME, WAIT, report};

ramen_rt::entry!(main);

struct Echo {
    pings: u64,
}

impl echo::Server for Echo {
    fn null(&mut self) {}

    fn echo4(&mut self, a: u64, b: u64, c: u64, d: u64) -> (u64, u64, u64, u64) {
        (a, b, c, d)
    }

    fn echo6(&mut self, a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> (u64, u64, u64, u64, u64, u64) {
        (a, b, c, d, e, f)
    }

    fn echo_packed(&mut self, tag: u8, flags: u16, value: u32) -> contract::Sample {
        contract::Sample { tag, flags, value }
    }

    fn echo_bytes(
        &mut self,
        data: foundry_runtime::BoundedBytes<256>,
    ) -> Result<foundry_runtime::BoundedBytes<256>, contract::EchoError> {
        Ok(data)
    }

    fn sum(
        &mut self,
        _data: foundry_runtime::ReadLease,
        _leases: &mut dyn foundry_runtime::LeaseAccess,
    ) -> u64 {
        0
    }

    fn fill(
        &mut self,
        _data: foundry_runtime::RwLease,
        _value: u8,
        _leases: &mut dyn foundry_runtime::LeaseAccess,
    ) -> u64 {
        0
    }

    fn reflect(&mut self, peer: contract::EchoCap) -> contract::EchoCap {
        peer
    }

    fn ping(&mut self, _seq: u32) {
        self.pings += 1;
    }

    fn pings(&mut self) -> u64 {
        self.pings
    }
}

/// Calls every register-sized method; true if every answer was right.
fn calls<R: foundry_runtime::Tracer>(client: &mut echo::Client<Endpoint, R>) -> bool {
    client.null().is_ok()
        && client.echo4(1, 2, 3, 4) == Ok((1, 2, 3, 4))
        && client.echo6(1, 2, 3, 4, 5, u64::MAX) == Ok((1, 2, 3, 4, 5, u64::MAX))
        && client
            .echo_packed(7, 0x1234, 0xdead_beef)
            .is_ok_and(|s| (s.tag, s.flags, s.value) == (7, 0x1234, 0xdead_beef))
        && client.ping(1).is_ok()
        && client.ping(2).is_ok()
        && client.pings() == Ok(2)
}

/// Runs the calls, traced if `traced`; returns whether all were right and the trace
/// records written (0 untraced, or if no buffer could be made).
fn client(traced: bool) -> (bool, u64) {
    let spans = if traced { Tracer::attach(slot::THREAD, TRACE_FRAME, BUFFER_VADDR).ok() } else { None };
    match spans.map(CallSpans::new) {
        Some(spans) => {
            let ok = calls(&mut echo::Client::with_tracer(Endpoint::new(WAIT), &spans));
            (ok, spans.recorded())
        }
        None => (calls(&mut echo::Client::new(Endpoint::new(WAIT))), 0),
    }
}

fn main(arg: u64) {
    if arg == 0 {
        let error = serve(&mut Server::new(WAIT), &mut echo::Dispatcher::new(Echo { pings: 0 }));
        ramen_rt::println!("echo server: stopped ({:?})", error as u8 as u32);
    } else {
        let (ok, recorded) = client(arg == 2);
        ramen_rt::println!("echo client: {}", if ok { "all calls correct" } else { "WRONG ANSWER" });
        report(u64::from(ok), &[recorded]);
    }
}
