//! `bench-ipc`: one end of an IPC benchmark pair, as its argument word says
//! (`ramen_bench_ipc::Job`): an endpoint server, a latency client, a throughput
//! client, or either end of the notification ping-pong.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use ramen_bench_ipc::{
    BULK_AREA, BULK_SIZES, ENDPOINT, Job, MAX_SAMPLES, PING, PONG, RECEIVED, REPORT, Role, SAMPLES_MARKER,
    SAMPLES_PER_LINE, START, label,
};
use ramen_rt::msgbuf::{Lease, MessageBuffer};
use ramen_rt::tsc::{rdtsc, rdtsc32, rdtscp, rdtscp32};
use ramen_rt::{Console, MSG_REGS, Message, SysError, call, nb_send, println, recv, reply_recv};
use ramen_rt::{kobj, nop_stub, slot};
use ufmt::uwrite;

ramen_rt::entry!(main);

/// Payload words of the timed messages (their values do not matter).
const PAYLOAD: [u64; 15] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// Reply label of a capability-transfer server whose capability did not arrive.
const MISSING_CAP: u64 = 0xcab;
/// Reads of the empty window (`rdtsc` then `rdtscp`); the least is subtracted.
const EMPTY_WINDOW_READS: usize = 1000;

fn main(arg: u64) {
    let Some(job) = Job::decode(arg) else {
        println!("bench-ipc: bad argument {:#x}", arg);
        return;
    };
    let result = match job.role {
        Role::Server => server(&job),
        Role::LatencyClient => latency_client(&job),
        Role::ThroughputClient => throughput_client(&job),
        Role::NotificationServer => notification_server(&job),
        Role::NotificationClient => notification_client(&job),
        Role::FoundryServer => foundry_server(&job),
        Role::FoundryClient => foundry_client(&job),
        Role::BulkServer => bulk_server(),
        Role::BulkClient => bulk_client(&job),
    };
    if let Err(error) = result {
        println!("bench-ipc: system call failed with error {}", error.code());
        let _ = ramen_rt::send(REPORT, &Message::new(label::FAILED, &[error.code()]));
    }
}

/// The timed message: `job.words` words (those past the registers written into the
/// IPC buffer once, here, outside the timed loop), with the endpoint capability when
/// the client transfers one. The benchmark programs run as main threads (buffer 0).
fn payload(job: &Job, client: bool) -> Message {
    let words = PAYLOAD.get(..job.words as usize).unwrap_or(&PAYLOAD);
    let caps: &[u64] = if client && job.transfer_cap { &[ENDPOINT] } else { &[] };
    if words.len() <= MSG_REGS && caps.is_empty() {
        return Message::new(0, words);
    }
    MessageBuffer::program_thread(0).message(0, words, caps).unwrap_or_default()
}

/// Serves forever: timestamps the first `count` requests, then answers dumps.
fn server(job: &Job) -> Result<(), SysError> {
    let capacity = job.count.min(MAX_SAMPLES) as usize;
    let mut stamps = Stamps::new(capacity);
    let reply = payload(job, false);
    let missing = Message::new(MISSING_CAP, &[]);
    if job.transfer_cap {
        MessageBuffer::program_thread(0).receive_caps_into(slot::CNODE, RECEIVED, 64);
    }
    let (_, mut request) = recv(ENDPOINT)?;
    let mut arrived = rdtscp32();
    let mut index = 0usize;
    loop {
        if request.label() == label::DUMP {
            break;
        }
        // Free the slot for the next capability (between the timed windows). A
        // capability that did not arrive is answered with label `MISSING_CAP`.
        let reply = if !job.transfer_cap {
            &reply
        } else if request.info.caps() == 1 {
            kobj::delete(slot::CNODE, RECEIVED, 64)?;
            &reply
        } else {
            &missing
        };
        // Read last so that storing it is not timed; stored after the next arrival,
        // which is read as soon as the receive returns (as sel4bench does).
        let leaving = rdtsc32();
        request = reply_recv(ENDPOINT, reply)?.1;
        let next = rdtscp32();
        stamps.record(index, arrived, leaving);
        arrived = next;
        index += 1;
    }
    serve_dumps(&stamps, request)
}

/// The notification server: waits for a signal on [`PING`], signals [`PONG`], `count`
/// times, then answers dumps on [`ENDPOINT`].
fn notification_server(job: &Job) -> Result<(), SysError> {
    let total = job.count.min(MAX_SAMPLES) as usize;
    let mut stamps = Stamps::new(total);
    let signal = Message::new(0, &[]);
    recv(PING)?;
    for index in 0..total {
        let arrived = rdtscp32();
        let leaving = rdtsc32();
        nb_send(PONG, &signal)?;
        // The client signals once more after its last sample, so this always returns.
        recv(PING)?;
        stamps.record(index, arrived, leaving);
    }
    let (_, request) = recv(ENDPOINT)?;
    serve_dumps(&stamps, request)
}

/// A server's timestamps (low 32 bits): arrival of each request, departure of its reply.
struct Stamps {
    /// (arrival, departure) per request: one vector, so that recording is one bounds
    /// check wherever the compiler cannot keep the lengths in registers (the Foundry
    /// server's transport), as in the raw server.
    pairs: Vec<(u32, u32)>,
}

impl Stamps {
    fn new(capacity: usize) -> Self {
        Self { pairs: vec![(0, 0); capacity] }
    }

    fn record(&mut self, index: usize, arrived: u32, left: u32) {
        if let Some(pair) = self.pairs.get_mut(index) {
            *pair = (arrived, left);
        }
    }
}

/// Answers [`label::DUMP`] calls (the first one is `request`) forever.
fn serve_dumps(stamps: &Stamps, mut request: Message) -> Result<(), SysError> {
    loop {
        request = reply_recv(ENDPOINT, &dump_reply(stamps, &request))?.1;
    }
}

/// The least ticks between two back-to-back reads (`rdtsc`, `rdtscp`), subtracted from
/// every window as sel4bench does.
fn empty_window() -> u64 {
    (0..EMPTY_WINDOW_READS)
        .map(|_| {
            let start = rdtsc32();
            let end = rdtscp32();
            end.wrapping_sub(start)
        })
        .min()
        .map_or(0, u64::from)
}

/// sel4bench's overhead for this case: the least ticks around the `Call` and the
/// `ReplyRecv` stub with `syscall` replaced by a NOP (`ramen_rt::nop_stub`), carrying
/// `message`, over [`EMPTY_WINDOW_READS`] tries of each (sel4bench subtracts the
/// smaller of its `DO_NOP_CALL` and `DO_NOP_REPLY_RECV` overheads). Unlike the empty
/// window it contains the stub's own register set-up, which sel4bench's figures leave
/// out.
fn stub_overhead(message: &Message) -> u64 {
    let mut least = u32::MAX;
    for _ in 0..EMPTY_WINDOW_READS {
        let start = rdtsc32();
        let reply = nop_stub::call(ENDPOINT, message);
        let end = rdtscp32();
        core::hint::black_box(reply).ok();
        least = least.min(end.wrapping_sub(start));
        let start = rdtsc32();
        let reply = nop_stub::reply_recv(ENDPOINT, message);
        let end = rdtscp32();
        core::hint::black_box(reply).ok();
        least = least.min(end.wrapping_sub(start));
    }
    u64::from(least)
}

/// Times `total` round trips of `round_trip` (inlined: nothing but it between the
/// reads); returns the start and end timestamps (low 32 bits).
#[inline(always)]
fn time_round_trips(
    total: usize,
    mut round_trip: impl FnMut() -> Result<(), SysError>,
) -> Result<(Vec<u32>, Vec<u32>), SysError> {
    let mut starts = vec![0u32; total];
    let mut ends = vec![0u32; total];
    for i in 0..total {
        let start = rdtsc32();
        let result = round_trip();
        let end = rdtscp32();
        result?;
        if let (Some(s), Some(e)) = (starts.get_mut(i), ends.get_mut(i)) {
            (*s, *e) = (start, end);
        }
    }
    Ok((starts, ends))
}

/// Times the calls, then reports.
fn latency_client(job: &Job) -> Result<(), SysError> {
    let total = (job.warmup + job.count).min(MAX_SAMPLES) as usize;
    let overhead = empty_window();
    let request = payload(job, true);
    let stub = stub_overhead(&request);
    let (starts, ends) = if job.transfer_cap {
        time_round_trips(total, || match call(ENDPOINT, &request) {
            Ok(reply) if reply.label() == MISSING_CAP => {
                Err(SysError(ramen_rt::Error::InvalidArgument.code()))
            }
            other => other.map(drop),
        })?
    } else {
        time_round_trips(total, || call(ENDPOINT, &request).map(drop))?
    };
    report_latency(job, overhead, stub, &starts, &ends)
}

/// Times signal-and-wait round trips (signal [`PING`], wait on [`PONG`]), releases
/// the server's last wait, then reports.
fn notification_client(job: &Job) -> Result<(), SysError> {
    let total = (job.warmup + job.count).min(MAX_SAMPLES) as usize;
    let overhead = empty_window();
    let signal = Message::new(0, &[]);
    let stub = stub_overhead(&signal);
    let (starts, ends) = time_round_trips(total, || {
        nb_send(PING, &signal)?;
        recv(PONG).map(drop)
    })?;
    nb_send(PING, &signal)?;
    report_latency(job, overhead, stub, &starts, &ends)
}

/// Fetches the server's timestamps, prints the samples after the warm-up, reports to
/// the root task. Call (or first leg) = arrival - start, ReplyRecv (or second leg) =
/// end - departure, round trip = end - start, all modulo 2^32. `overhead` is the empty
/// window, `stub` sel4bench's overhead ([`stub_overhead`]).
fn report_latency(job: &Job, overhead: u64, stub: u64, starts: &[u32], ends: &[u32]) -> Result<(), SysError> {
    let total = starts.len();
    let warmup = (job.warmup as usize).min(total);
    let mut calls = Vec::with_capacity(total);
    let mut reply_recvs = Vec::with_capacity(total);
    let mut first = 0;
    while first < total {
        let dump = call(ENDPOINT, &Message::new(label::DUMP, &[first as u64]))?;
        for (i, word) in (first..total).zip(dump.regs) {
            let (arrived, left) = (word as u32, (word >> 32) as u32);
            calls.push(arrived.wrapping_sub(starts.get(i).copied().unwrap_or(0)));
            reply_recvs.push(ends.get(i).copied().unwrap_or(0).wrapping_sub(left));
        }
        first += MSG_REGS;
    }
    let round_trips: Vec<u32> =
        ends.iter().zip(starts).map(|(end, start)| end.wrapping_sub(*start)).collect();
    for (metric, values) in [("call", &calls), ("rr", &reply_recvs), ("rt", &round_trips)] {
        print_samples(job.case_id, metric, values.get(warmup..).unwrap_or(&[]));
    }
    let samples = (total - warmup) as u64;
    ramen_rt::send(REPORT, &Message::new(label::LATENCY_DONE, &[overhead, samples, stub]))
}

/// Prints `values` as `BENCHS` lines of at most `SAMPLES_PER_LINE` entries, a run of
/// equal values as one `value*count` entry; each line goes out through one console
/// writer, in as few calls as possible.
fn print_samples(case_id: u64, metric: &str, values: &[u32]) {
    let mut first = 0;
    while first < values.len() {
        let mut console = Console::new();
        let _ = uwrite!(console, "{} id={} m={} i={} v=", SAMPLES_MARKER, case_id, metric, first);
        for entry in 0..SAMPLES_PER_LINE {
            let Some(&value) = values.get(first) else { break };
            let run = values.get(first..).unwrap_or(&[]).iter().take_while(|v| **v == value).count();
            let _ = uwrite!(console, "{}{}", if entry == 0 { "" } else { "," }, value);
            if run > 1 {
                let _ = uwrite!(console, "*{}", run);
            }
            first += run;
        }
        let _ = uwrite!(console, "\n");
    }
}

/// For every start signal: makes `count` 0-word round trips and reports the span.
fn throughput_client(job: &Job) -> Result<(), SysError> {
    let request = Message::new(0, &[]);
    loop {
        recv(START)?;
        let start = rdtsc();
        for _ in 0..job.count {
            call(ENDPOINT, &request)?;
        }
        let end = rdtscp();
        ramen_rt::send(REPORT, &Message::new(label::THROUGHPUT_DONE, &[start, end, job.count]))?;
    }
}

// ---- The Foundry case: the same round trips through generated stubs ----

use foundry_runtime::{
    BoundedBytes, IpcBuffer, LeaseAccess, ReadLease, RwLease, ServerTransport, TransportError, serve,
};
use ramen_bench_ipc::echo::{self as contract, echo};
use ramen_rt::ipc::{Endpoint, Server as KernelServer};

/// The echo service, doing nothing but echo.
struct Echo;

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
    fn sum(&mut self, _: ReadLease, _: &mut dyn LeaseAccess) -> u64 {
        0
    }
    fn fill(&mut self, _: RwLease, _: u8, _: &mut dyn LeaseAccess) -> u64 {
        0
    }
    fn reflect(&mut self, peer: contract::EchoCap) -> contract::EchoCap {
        peer
    }
    fn ping(&mut self, _: u32) {}
    fn pings(&mut self) -> u64 {
        0
    }
}

/// The kernel transport with the server's timestamps taken where `server` takes them,
/// in the same order: arrival (`rdtscp`) as soon as the receive returns, then the
/// previous request's stamps stored, then the dump check; departure (`rdtsc`) right
/// before the reply. The benchmark's dump requests are answered on the side.
struct Timed {
    inner: KernelServer,
    stamps: Stamps,
    index: usize,
    arrived: u32,
}

impl Timed {
    /// Answers dump requests until a contract request arrives (dumps come only after
    /// the timed calls, so their arrivals are not stamped). The check is all that runs
    /// inline, as in `server`.
    #[inline(always)]
    fn settle(&mut self, msg: &mut foundry_runtime::Message) -> Result<(), TransportError> {
        if msg.info.label() == label::DUMP { self.serve_dumps(msg) } else { Ok(()) }
    }

    #[inline(never)]
    fn serve_dumps(&mut self, msg: &mut foundry_runtime::Message) -> Result<(), TransportError> {
        while msg.info.label() == label::DUMP {
            let request = Message { info: msg.info, regs: msg.regs };
            let reply = dump_reply(&self.stamps, &request);
            let (_, next) = reply_recv(ENDPOINT, &reply).map_err(|_| TransportError::PeerGone)?;
            *msg = foundry_runtime::Message { info: next.info, regs: next.regs, ..Default::default() };
        }
        Ok(())
    }
}

impl ServerTransport for Timed {
    fn recv(&mut self, msg: &mut foundry_runtime::Message) -> Result<(), TransportError> {
        self.inner.recv(msg)?;
        self.arrived = rdtscp32();
        self.settle(msg)
    }

    #[inline(always)]
    fn reply_recv(&mut self, msg: &mut foundry_runtime::Message) -> Result<(), TransportError> {
        let arrived = self.arrived;
        let leaving = rdtsc32();
        self.inner.reply_recv(msg)?;
        self.arrived = rdtscp32();
        self.stamps.record(self.index, arrived, leaving);
        self.index += 1;
        self.settle(msg)
    }

    fn parts(&mut self) -> (&mut IpcBuffer, &mut dyn LeaseAccess) {
        self.inner.parts()
    }
}

/// The reply to one dump request: six (arrival, departure) pairs from its index.
fn dump_reply(stamps: &Stamps, request: &Message) -> Message {
    let first = request.words().first().copied().unwrap_or(0) as usize;
    let mut words = [0u64; MSG_REGS];
    for (i, word) in words.iter_mut().enumerate() {
        let (arrived, left) = stamps.pairs.get(first + i).copied().unwrap_or((0, 0));
        *word = u64::from(arrived) | u64::from(left) << 32;
    }
    Message::new(label::DUMP, &words)
}

fn foundry_server(job: &Job) -> Result<(), SysError> {
    let capacity = job.count.min(MAX_SAMPLES) as usize;
    let mut transport = Timed {
        inner: KernelServer::new(ENDPOINT, MessageBuffer::program_thread(0)),
        stamps: Stamps::new(capacity),
        index: 0,
        arrived: 0,
    };
    let error = serve(&mut transport, &mut echo::Dispatcher::new(Echo));
    println!("bench-ipc: foundry server stopped ({})", error as u8);
    Ok(())
}

fn foundry_client(job: &Job) -> Result<(), SysError> {
    let total = (job.warmup + job.count).min(MAX_SAMPLES) as usize;
    let overhead = empty_window();
    // The raw stubs' overhead with the same number of words (Foundry's own stub code is
    // what the case measures against raw IPC).
    let stub = stub_overhead(&payload(job, true));
    let mut client = echo::Client::new(Endpoint::new(ENDPOINT, MessageBuffer::program_thread(0)));
    let failed = SysError(ramen_abi::Error::InvalidArgument.code());
    let (starts, ends) = match job.words {
        0 => time_round_trips(total, || client.null().map_err(|_| failed)),
        4 => time_round_trips(total, || client.echo4(1, 2, 3, 4).map(drop).map_err(|_| failed)),
        _ => time_round_trips(total, || client.echo6(1, 2, 3, 4, 5, 6).map(drop).map_err(|_| failed)),
    }?;
    report_latency(job, overhead, stub, &starts, &ends)
}

/// Answers every bulk call with the number of leases that arrived (the data is
/// where the server could read it: in its IPC buffer, or mapped in its window).
fn bulk_server() -> Result<(), SysError> {
    let (_, mut request) = recv(ENDPOINT)?;
    loop {
        let reply = Message::new(request.label(), &[request.info.leases() as u64]);
        request = reply_recv(ENDPOINT, &reply)?.1;
    }
}

/// Times moving each size to the server: copied in full-length messages (every
/// word of each carries data; the kernel copies it from buffer to buffer), and
/// lent as one read-only lease. Repeats each `count` times (at least once).
fn bulk_client(job: &Job) -> Result<(), SysError> {
    let reps = job.count.clamp(1, 64) as usize;
    // The root task maps the data, then says go.
    recv(START)?;
    let mut buf = MessageBuffer::program_thread(0);
    let words = [0x5a5a_5a5a_5a5a_5a5a_u64; ramen_abi::MSG_MAX_WORDS];
    let chunk_bytes = (words.len() * 8) as u64;
    let bad = || SysError(ramen_rt::Error::InvalidArgument.code());
    let mut ticks = vec![0u64; reps];
    for size in BULK_SIZES {
        for lease in [false, true] {
            let message = if lease {
                buf.message_with_leases(label::BULK_LEASE, &[], &[], &[Lease::read_only(BULK_AREA, size)])
            } else {
                buf.message(label::BULK_COPY, &words, &[])
            }
            .map_err(|_| bad())?;
            let calls = if lease { 1 } else { size.div_ceil(chunk_bytes) };
            for t in ticks.iter_mut() {
                let start = rdtsc();
                for _ in 0..calls {
                    let reply = call(ENDPOINT, &message)?;
                    // A lease that did not arrive would make the figure meaningless.
                    if lease && reply.regs[0] != 1 {
                        return Err(bad());
                    }
                }
                *t = rdtscp().wrapping_sub(start);
            }
            ticks.sort_unstable();
            let (median, least) = (ticks[reps / 2], ticks[0]);
            let done = [size, u64::from(lease), median, least, reps as u64];
            ramen_rt::send(REPORT, &Message::new(label::BULK_DONE, &done))?;
        }
    }
    Ok(())
}
