//! The Foundry echo service over a real endpoint: with argument 0 it serves the
//! `bench.echo` contract on the endpoint in its `WAIT` slot (the root task sets up
//! its lease window); with argument 1 it is a client
//! that calls every method there (register-sized ones, `echo_bytes` through the IPC
//! buffer, `reflect` with a capability each way, `sum` and `fill` through leases)
//! and sends malformed requests that must come back as protocol errors; it checks
//! every answer and reports 1 (all correct) or 0 to the root task, printing the
//! number of the first check that failed.
//! With argument 2 the client makes the register-sized calls recording one trace span
//! per call (Foundry's tracer hook) into a user trace buffer made from the frame in
//! its `TRACE_FRAME` slot, and reports the records written.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use foundry_runtime::{
    BoundedBytes, CapPtr, ClientError, LeaseAccess, ProtocolError, ReadLease, RwLease, TransportError, serve,
};
use ramen_rt::ipc::{CapSlots, Endpoint, Server};
use ramen_rt::msgbuf::{Lease, MessageBuffer};
use ramen_rt::slot;
use ramen_rt::trace::{BUFFER_VADDR, CallSpans, Tracer};
use ramen_user_tests::echo as contract;
use ramen_user_tests::echo::echo;
use ramen_user_tests::{TRACE_FRAME, WAIT, report};

ramen_rt::entry!(main);

/// The server's receive slots for capabilities (its own CNode).
const SERVER_CAPS: u64 = 32;
/// The client's.
const CLIENT_CAPS: u64 = 40;
/// Bytes the server moves through a lease per access.
const CHUNK: usize = 256;

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

    fn echo_bytes(&mut self, data: BoundedBytes<256>) -> Result<BoundedBytes<256>, contract::EchoError> {
        Ok(data)
    }

    /// The sum of the lent bytes, or `u64::MAX` if the lease cannot be read to its end.
    fn sum(&mut self, data: ReadLease, leases: &mut dyn LeaseAccess) -> u64 {
        let mut chunk = [0u8; CHUNK];
        let (mut total, mut offset) = (0u64, 0u64);
        while offset < data.len_bytes {
            match data.read(leases, offset, &mut chunk) {
                Ok(count) if count > 0 => {
                    total += chunk.iter().take(count).map(|b| u64::from(*b)).sum::<u64>();
                    offset += count as u64;
                }
                _ => return u64::MAX,
            }
        }
        total
    }

    /// Fills the lent bytes with `value`; the count written (short if a write fails).
    fn fill(&mut self, data: RwLease, value: u8, leases: &mut dyn LeaseAccess) -> u64 {
        let chunk = [value; CHUNK];
        let mut offset = 0u64;
        while offset < data.len_bytes {
            match data.write(leases, offset, &chunk) {
                Ok(count) if count > 0 => offset += count as u64,
                _ => break,
            }
        }
        offset
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

/// Byte `i` of the client's test pattern.
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(37) ^ (i >> 7)) as u8
}

/// The client, as every check gets it.
type EchoClient = echo::Client<Endpoint>;

/// One check: false if an answer was wrong.
type Check = fn(&mut EchoClient, CapSlots) -> bool;

/// The register-sized methods (seven calls), traced or not.
fn registers<R: foundry_runtime::Tracer>(client: &mut echo::Client<Endpoint, R>) -> bool {
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

/// `echo_bytes` at lengths in the registers, just past them, and the longest.
fn bytes(client: &mut EchoClient) -> bool {
    let data: [u8; 256] = core::array::from_fn(pattern);
    [0, 1, 40, 41, 47, 48, 200, 256].iter().all(|&len| {
        let sent = data.get(..len).and_then(BoundedBytes::<256>::try_from_slice);
        sent.is_some_and(
            |sent| matches!(client.echo_bytes(&sent), Ok(Ok(back)) if back.as_slice() == sent.as_slice()),
        )
    })
}

/// `reflect`: the capability comes back into the client's receive slot and works;
/// while that slot is occupied the next one cannot arrive; cleared, it can.
fn capabilities(client: &mut EchoClient, slots: CapSlots) -> bool {
    let peer = contract::EchoCap(CapPtr(WAIT));
    let Ok(back) = client.reflect(peer) else {
        return false;
    };
    if back.0 != slots.cptr(0) {
        return false;
    }
    let mut through_copy = echo::Client::new(Endpoint::new(back.0.0, MessageBuffer::program_thread(0)));
    let works = through_copy.echo4(9, 8, 7, 6) == Ok((9, 8, 7, 6));
    let blocked = client.reflect(peer) == Err(ClientError::Malformed(ProtocolError::WrongCaps));
    slots.clear();
    let again = client.reflect(peer).is_ok_and(|cap| cap.0 == slots.cptr(0));
    slots.clear();
    works && blocked && again
}

/// `sum` and `fill` through leases that cross pages.
fn leases(client: &mut EchoClient) -> bool {
    let mut data = [0u8; 3 * 4096];
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = pattern(i);
    }
    let part = data.get(100..100 + 9000).unwrap_or(&[]);
    let expected: u64 = part.iter().map(|b| u64::from(*b)).sum();
    let summed = client.sum(part) == Ok(expected) && client.sum(&data[..1]) == Ok(u64::from(pattern(0)));
    let target = data.get_mut(50..50 + 5000).unwrap_or(&mut []);
    let filled = client.fill(target, 0xab) == Ok(5000) && target.iter().all(|b| *b == 0xab);
    let untouched = data[49] == pattern(49) && data[5050] == pattern(5050);
    // The kernel takes no empty lease.
    let empty = client.sum(&[]) == Err(ClientError::Transport(TransportError::BadLeases));
    summed && filled && untouched && empty
}

/// Requests the generated client never sends: each gets a protocol error, and the
/// server goes on serving.
fn malformed(client: &mut EchoClient) -> bool {
    let mut buf = MessageBuffer::program_thread(0);
    let page = [0u8; 64];
    let rejected = |request: Option<ramen_rt::Message>, error: ProtocolError| {
        request
            .and_then(|request| ramen_rt::call(WAIT, &request).ok())
            .is_some_and(|reply| reply.label() == error.label())
    };
    let long = [0u64; ramen_abi::MSG_MAX_WORDS];
    let read_only = Lease::read_only(page.as_ptr() as u64, page.len() as u64);
    rejected(buf.message(echo::ordinal::SUM, &[], &[]).ok(), ProtocolError::WrongLeases)
        && rejected(buf.message(echo::ordinal::REFLECT, &[], &[]).ok(), ProtocolError::WrongCaps)
        && rejected(buf.message(echo::ordinal::ECHO_BYTES, &[257], &[]).ok(), ProtocolError::InvalidValue)
        && rejected(buf.message(echo::ordinal::ECHO_BYTES, &[0], &[WAIT]).ok(), ProtocolError::WrongCaps)
        && rejected(buf.message(echo::ordinal::ECHO4, &long, &[]).ok(), ProtocolError::TrailingData)
        && rejected(
            buf.message_with_leases(echo::ordinal::FILL, &[1], &[], &[read_only]).ok(),
            ProtocolError::WrongLeases,
        )
        && client.echo4(4, 3, 2, 1) == Ok((4, 3, 2, 1))
}

/// Runs the checks in order; 0 if all passed, else the number of the first that failed.
fn client() -> u64 {
    let slots = CapSlots::new(CLIENT_CAPS);
    let mut client =
        EchoClient::new(Endpoint::new(WAIT, MessageBuffer::program_thread(0)).receive_caps_in(slots));
    let checks: [Check; 6] = [
        |c, _| registers(c),
        |c, _| bytes(c),
        capabilities,
        |c, _| leases(c),
        |c, _| malformed(c),
        // Everything again: nothing above left the server or the client stuck.
        |c, _| c.echo6(6, 5, 4, 3, 2, 1) == Ok((6, 5, 4, 3, 2, 1)) && bytes(c),
    ];
    for (i, check) in checks.iter().enumerate() {
        if !check(&mut client, slots) {
            return i as u64 + 1;
        }
    }
    0
}

/// The register-sized calls through a client that records one span per call;
/// returns whether all were right and the trace records written.
fn traced_client() -> (bool, u64) {
    let Some(spans) = Tracer::attach(slot::THREAD, TRACE_FRAME, BUFFER_VADDR).ok().map(CallSpans::new) else {
        return (false, 0);
    };
    let mut client = echo::Client::with_tracer(Endpoint::new(WAIT, MessageBuffer::program_thread(0)), &spans);
    let ok = registers(&mut client);
    (ok, spans.recorded())
}

fn main(arg: u64) {
    if arg == 0 {
        let mut server =
            Server::new(WAIT, MessageBuffer::program_thread(0)).receive_caps_in(CapSlots::new(SERVER_CAPS));
        let error = serve(&mut server, &mut echo::Dispatcher::new(Echo { pings: 0 }));
        ramen_rt::println!("echo server: stopped ({:?})", error as u8 as u32);
    } else {
        if arg == 2 {
            let (ok, recorded) = traced_client();
            ramen_rt::println!("echo client: {}", if ok { "all calls correct" } else { "WRONG ANSWER" });
            report(u64::from(ok), &[recorded]);
            return;
        }
        let failed = client();
        if failed == 0 {
            ramen_rt::println!("echo client: all calls correct");
        } else {
            ramen_rt::println!("echo client: WRONG ANSWER (check {})", failed);
        }
        report(u64::from(failed == 0), &[]);
    }
}
