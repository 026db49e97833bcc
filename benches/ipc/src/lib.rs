//! The IPC benchmark's protocol: what the root task (which runs the cases) and the
//! `bench-ipc` program (client and server threads) agree on.
//!
//! A thread learns its job from its argument word ([`Job`]), finds its endpoints in
//! fixed child slots, and reports back to the root task on [`REPORT`]. Timing follows
//! sel4bench: the client reads `rdtsc` just before `Call` and `rdtscp` just after it
//! returns; the server reads `rdtscp` just after its receive returns and `rdtsc` just
//! before `ReplyRecv`. Each side keeps its own timestamps (the low 32 bits: a window
//! is far shorter than 2^32 ticks) and the server hands its own to the client after
//! the timed loop, six words per `Call` ([`label::DUMP`]), so the timed loop carries
//! only the message being measured, even a 0-word one (the kernel zeroes the
//! registers past a message's length, so a 0-word message cannot carry a timestamp).
//!
//! The client prints its samples as `BENCHS` lines (see [`SAMPLES_MARKER`]) that
//! `cargo xtask bench` parses; the root task prints one `BENCH {json}` line per case.
#![no_std]
#![forbid(unsafe_code)]

/// Child slot of the endpoint a client calls and its server serves.
pub const ENDPOINT: u64 = 9;
/// Child slot of the root task's report endpoint (send only).
pub const REPORT: u64 = 8;
/// Child slot of the endpoint a throughput client waits on for the start signal.
pub const START: u64 = 10;
/// Child slots of the notifications of the notification case: the client signals
/// `PING` and waits on `PONG`, the server the other way round.
pub const PING: u64 = 11;
pub const PONG: u64 = 12;

/// Most samples (warm-up included) one latency case may take: the client keeps three
/// and the server two `u32` per sample in the 256 KiB heap, which the two threads
/// of the same-address-space case share.
pub const MAX_SAMPLES: u64 = 10_000;
/// Most round trips one throughput client may make (the field's width).
pub const MAX_ROUNDS: u64 = (1 << COUNT_BITS) - 1;

/// Start of every sample line: `BENCHS id=<case> m=<metric> i=<first index> v=<values>`,
/// values comma separated, a run of equal values written `value*count`.
pub const SAMPLES_MARKER: &str = "BENCHS";
/// Entries per sample line (an entry is a value or a run of equal values).
pub const SAMPLES_PER_LINE: usize = 16;

/// Message labels between the benchmark threads and the root task.
pub mod label {
    /// Client to server, after the timed loop: MR0 = first sample index; the reply
    /// holds six samples, `t1 | t2 << 32` each (arrival, departure).
    pub const DUMP: u64 = 0xd0;
    /// Client to root task: latency case done; MR0 = empty-window ticks, MR1 = samples.
    pub const LATENCY_DONE: u64 = 0x1a7;
    /// Client to root task: throughput run done; MR0 = start TSC, MR1 = end TSC,
    /// MR2 = round trips.
    pub const THROUGHPUT_DONE: u64 = 0x7b;
    /// Client to root task: a system call failed; MR0 = error code.
    pub const FAILED: u64 = 0xbad;
    /// Bulk client to server: a chunk of data in a full-length message.
    pub const BULK_COPY: u64 = 0xb0c;
    /// Bulk client to server: one lease of the data.
    pub const BULK_LEASE: u64 = 0xb1e;
    /// Bulk client to root task, once per size and method: MR0 = bytes, MR1 = 0
    /// (copy) or 1 (lease), MR2 = median ticks, MR3 = least ticks, MR4 = repetitions.
    pub const BULK_DONE: u64 = 0xb1d;
}

/// What a thread of `bench-ipc` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Answers every call on [`ENDPOINT`] with `words` words, timestamping the first
    /// `count` of them; then answers [`label::DUMP`] calls.
    Server,
    /// Times `warmup + count` calls of `words` words, fetches the server's
    /// timestamps, prints the last `count` samples and reports to the root task.
    LatencyClient,
    /// For every message on [`START`]: makes `count` 0-word calls and reports their
    /// start and end TSC.
    ThroughputClient,
    /// Waits on [`PING`] and signals [`PONG`], timestamping like [`Role::Server`],
    /// `count` times; then answers [`label::DUMP`] calls on [`ENDPOINT`].
    NotificationServer,
    /// Times `warmup + count` round trips of signal [`PING`], wait on [`PONG`];
    /// reports like [`Role::LatencyClient`] (the legs stand for Call and ReplyRecv).
    NotificationClient,
    /// Serves the Foundry `bench.echo` contract through generated dispatch,
    /// timestamping like [`Role::Server`].
    FoundryServer,
    /// Calls the generated `bench.echo` client (`null`, `echo4` or `echo6` by the
    /// job's word count), timed like [`Role::LatencyClient`].
    FoundryClient,
    /// Answers bulk calls on [`ENDPOINT`] with how many leases arrived.
    BulkServer,
    /// Moves each of [`BULK_SIZES`] to the server `count` times both ways: copied
    /// in full-length messages, and lent as one lease of [`BULK_AREA`].
    BulkClient,
}

/// Bytes the bulk case moves.
pub const BULK_SIZES: [u64; 4] = [4 << 10, 64 << 10, 1 << 20, 16 << 20];
/// Where the root task maps the bulk client's data (the largest size).
pub const BULK_AREA: u64 = 0x2000_0000_0000;
/// The bulk server's lease window (the largest size).
pub const BULK_WINDOW: u64 = 0x3000_0000_0000;

/// A thread's job, packed into its argument word: bits 0..4 role, 4..8 message
/// words, 8..16 case id, 16..36 count, 36..52 warm-up calls, 52 whether each call
/// transfers a capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    pub role: Role,
    /// Message length in words, both ways (up to 15: past `ramen_abi::MSG_REGS` the
    /// rest goes through the IPC buffer, on the slow path).
    pub words: u64,
    /// The case's number, which the sample lines carry.
    pub case_id: u64,
    /// Samples (latency) or round trips (throughput).
    pub count: u64,
    /// Calls made and discarded before the samples (latency).
    pub warmup: u64,
    /// Every timed call transfers one capability (the client's endpoint capability),
    /// which the server receives into [`RECEIVED`] and deletes before replying.
    pub transfer_cap: bool,
}

/// Child slot a capability-transfer server receives capabilities into.
pub const RECEIVED: u64 = 30;

const COUNT_BITS: u32 = 20;

impl Job {
    /// The argument word.
    pub const fn encode(&self) -> u64 {
        let role = match self.role {
            Role::Server => 0,
            Role::LatencyClient => 1,
            Role::ThroughputClient => 2,
            Role::NotificationServer => 3,
            Role::NotificationClient => 4,
            Role::FoundryServer => 5,
            Role::FoundryClient => 6,
            Role::BulkServer => 7,
            Role::BulkClient => 8,
        };
        role | (self.words & 0xf) << 4
            | (self.case_id & 0xff) << 8
            | (self.count & MAX_ROUNDS) << 16
            | (self.warmup & 0xffff) << 36
            | (self.transfer_cap as u64) << 52
    }

    /// The job in an argument word, if its role is known.
    pub const fn decode(arg: u64) -> Option<Self> {
        let role = match arg & 0xf {
            0 => Role::Server,
            1 => Role::LatencyClient,
            2 => Role::ThroughputClient,
            3 => Role::NotificationServer,
            4 => Role::NotificationClient,
            5 => Role::FoundryServer,
            6 => Role::FoundryClient,
            7 => Role::BulkServer,
            8 => Role::BulkClient,
            _ => return None,
        };
        Some(Self {
            role,
            words: (arg >> 4) & 0xf,
            case_id: (arg >> 8) & 0xff,
            count: (arg >> 16) & MAX_ROUNDS,
            warmup: (arg >> 36) & 0xffff,
            transfer_cap: (arg >> 52) & 1 == 1,
        })
    }
}

// Every field survives the argument word (this crate's tests cannot run on the host:
// it is a freestanding program, so the check runs at compile time).
const _: () = {
    let job = Job {
        role: Role::NotificationClient,
        words: 15,
        case_id: 200,
        count: MAX_ROUNDS,
        warmup: 0xffff,
        transfer_cap: true,
    };
    match Job::decode(job.encode()) {
        Some(back) => assert!(
            back.encode() == job.encode()
                && back.words == 15
                && back.transfer_cap
                && back.case_id == 200
                && back.count == MAX_ROUNDS
                && back.warmup == 0xffff
                && matches!(back.role, Role::NotificationClient)
        ),
        None => panic!("a job's role did not survive encoding"),
    }
    assert!(Job::decode(0xf).is_none());
};

/// The benchmark echo contract, generated by Foundry (`contracts/bench/echo.ridl`).
pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.rs"));
}
