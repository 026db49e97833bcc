//! The server loop: `foundry_runtime::serve` with a scripted server transport feeding
//! good and bad requests to the generated echo dispatcher.

use std::collections::VecDeque;

use foundry_runtime::{
    IpcBuffer, LABEL_OK, LeaseAccess, Message, MessageInfo, NoLeases, ProtocolError, ServerTransport,
    TransportError, serve,
};
use foundry_tests_echo::echo::echo::{Dispatcher, Server, ordinal};
use foundry_tests_echo::echo::{EchoCap, EchoError, Sample};

/// Delivers queued requests and records replies; fails with `PeerGone` when empty.
struct Script {
    requests: VecDeque<Message>,
    replies: Vec<Message>,
    buffer: IpcBuffer,
    leases: NoLeases,
}

impl Script {
    fn next(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        *msg = self.requests.pop_front().ok_or(TransportError::PeerGone)?;
        Ok(())
    }
}

impl ServerTransport for Script {
    fn recv(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        self.next(msg)
    }
    fn reply_recv(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        self.replies.push(*msg);
        self.next(msg)
    }
    fn parts(&mut self) -> (&mut IpcBuffer, &mut dyn LeaseAccess) {
        (&mut self.buffer, &mut self.leases)
    }
}

#[derive(Default)]
struct Counter(u64);

impl Server for Counter {
    fn null(&mut self) {}
    fn echo4(&mut self, a: u64, b: u64, c: u64, d: u64) -> (u64, u64, u64, u64) {
        (a, b, c, d)
    }
    fn echo6(&mut self, a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> (u64, u64, u64, u64, u64, u64) {
        (a, b, c, d, e, f)
    }
    fn echo_packed(&mut self, tag: u8, flags: u16, value: u32) -> Sample {
        Sample { tag, flags, value }
    }
    fn echo_bytes(
        &mut self,
        _data: foundry_runtime::BoundedBytes<256>,
    ) -> Result<foundry_runtime::BoundedBytes<256>, EchoError> {
        Err(EchoError::TooLong)
    }
    fn sum(&mut self, _data: foundry_runtime::ReadLease, _leases: &mut dyn LeaseAccess) -> u64 {
        0
    }
    fn fill(&mut self, _data: foundry_runtime::RwLease, _value: u8, _leases: &mut dyn LeaseAccess) -> u64 {
        0
    }
    fn reflect(&mut self, peer: EchoCap) -> EchoCap {
        peer
    }
    fn ping(&mut self, _seq: u32) {
        self.0 += 1;
    }
    fn pings(&mut self) -> u64 {
        self.0
    }
}

fn request(label: u64, regs: [u64; 6], len_words: usize) -> Message {
    Message { info: MessageInfo::try_new(label, len_words, 0, 0).unwrap(), regs, ..Message::default() }
}

#[test]
fn the_server_loop_survives_bad_requests_and_skips_one_way_replies() {
    let mut script = Script {
        requests: VecDeque::from([
            request(ordinal::PING, [1, 0, 0, 0, 0, 0], 1),
            request(12345, [0; 6], 0),
            request(ordinal::ECHO4, [1, 2, 0, 0, 0, 0], 2),
            request(ordinal::PING, [2, 0, 0, 0, 0, 0], 1),
            request(ordinal::ECHO_BYTES, [0; 6], 1),
            request(ordinal::PINGS, [0; 6], 0),
        ]),
        replies: Vec::new(),
        buffer: IpcBuffer::new(),
        leases: NoLeases,
    };
    let mut dispatcher = Dispatcher::new(Counter::default());
    assert_eq!(serve(&mut script, &mut dispatcher), TransportError::PeerGone);
    let labels: Vec<u64> = script.replies.iter().map(|reply| reply.info.label()).collect();
    assert_eq!(
        labels,
        [
            ProtocolError::UnknownOrdinal.label(),
            ProtocolError::Truncated.label(),
            EchoError::TooLong as u64,
            LABEL_OK,
        ]
    );
    let last = script.replies.last().unwrap();
    assert_eq!((last.info.len_words(), last.regs[0]), (1, 2), "two pings counted");
}
