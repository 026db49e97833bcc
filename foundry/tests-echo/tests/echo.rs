//! The generated echo client and server, end to end through the loopback transport.

use std::cell::RefCell;

use foundry_runtime::loopback::Loopback;
use foundry_runtime::{
    BoundedBytes, CapPtr, ClientError, Dispatch, Disposition, IpcBuffer, LeaseAccess, Message, MessageInfo,
    NoLeases, ProtocolError, ReadLease, RwLease, Side, Span, Tracer,
};
use foundry_tests_echo::echo::echo::{Client, Dispatcher, Server, ordinal};
use foundry_tests_echo::echo::{EchoCap, EchoError, Sample};

#[derive(Default)]
struct EchoServer {
    pings: u64,
    busy: bool,
}

impl Server for EchoServer {
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

    fn echo_bytes(&mut self, data: BoundedBytes<256>) -> Result<BoundedBytes<256>, EchoError> {
        if self.busy { Err(EchoError::Busy) } else { Ok(data) }
    }

    fn sum(&mut self, data: ReadLease, leases: &mut dyn LeaseAccess) -> u64 {
        let mut chunk = [0u8; 16];
        let mut total = 0;
        let mut offset = 0;
        while let Ok(count @ 1..) = data.read(leases, offset, &mut chunk) {
            total += chunk[..count].iter().map(|&byte| u64::from(byte)).sum::<u64>();
            offset += count as u64;
        }
        total
    }

    fn fill(&mut self, data: RwLease, value: u8, leases: &mut dyn LeaseAccess) -> u64 {
        let bytes = vec![value; data.len_bytes as usize];
        data.write(leases, 0, &bytes).map_or(0, |count| count as u64)
    }

    fn reflect(&mut self, peer: EchoCap) -> EchoCap {
        peer
    }

    fn ping(&mut self, _seq: u32) {
        self.pings += 1;
    }

    fn pings(&mut self) -> u64 {
        self.pings
    }
}

fn client() -> Client<Loopback<Dispatcher<EchoServer>>> {
    Client::new(Loopback::new(Dispatcher::new(EchoServer::default())))
}

#[test]
fn fastpath_methods_round_trip_in_registers() {
    let mut echo = client();
    assert_eq!(echo.null(), Ok(()));
    assert_eq!(echo.echo4(1, 2, 3, u64::MAX), Ok((1, 2, 3, u64::MAX)));
    assert_eq!(echo.echo6(1, 2, 3, 4, 5, 6), Ok((1, 2, 3, 4, 5, 6)));
    let sample = echo.echo_packed(7, 0xBEEF, 0xDEAD_0001).unwrap();
    assert_eq!(sample, Sample { tag: 7, flags: 0xBEEF, value: 0xDEAD_0001 });
    // The fastpath calls never wrote the IPC buffer.
    assert!(echo.transport_mut().ipc_buffer_words().iter().all(|&word| word == 0));
}

/// Gives tests a look at the loopback's IPC buffer.
trait PeekBuffer {
    fn ipc_buffer_words(&mut self) -> [u64; foundry_runtime::OVERFLOW_WORDS];
}

impl<D: Dispatch> PeekBuffer for Loopback<D> {
    fn ipc_buffer_words(&mut self) -> [u64; foundry_runtime::OVERFLOW_WORDS] {
        foundry_runtime::Transport::ipc_buffer(self).words
    }
}

#[test]
fn large_messages_spill_into_the_ipc_buffer() {
    let mut echo = client();
    let data: Vec<u8> = (0..=255).collect();
    let data = BoundedBytes::<256>::try_from_slice(&data).unwrap();
    assert_eq!(echo.echo_bytes(&data), Ok(Ok(data)));
    assert!(echo.transport_mut().ipc_buffer_words().iter().any(|&word| word != 0));
    let empty = BoundedBytes::new();
    assert_eq!(echo.echo_bytes(&empty), Ok(Ok(empty)));
}

#[test]
fn contract_errors_come_back_typed() {
    let mut echo = client();
    echo.transport_mut().server_mut().server.busy = true;
    assert_eq!(echo.echo_bytes(&BoundedBytes::new()), Ok(Err(EchoError::Busy)));
}

#[test]
fn leases_lend_buffers_for_one_call() {
    let mut echo = client();
    let source: Vec<u8> = (1..=100).collect();
    assert_eq!(echo.sum(&source), Ok(5050));
    let mut sink = [0u8; 9];
    assert_eq!(echo.fill(&mut sink, 0xAA), Ok(9));
    assert_eq!(sink, [0xAA; 9]);
}

#[test]
fn capabilities_travel_typed() {
    let mut echo = client();
    let cap = EchoCap(CapPtr(0x42));
    assert_eq!(echo.reflect(cap), Ok(cap));
}

#[test]
fn one_way_messages_get_no_reply() {
    let mut echo = client();
    for seq in 0..3 {
        assert_eq!(echo.ping(seq), Ok(()));
    }
    assert_eq!(echo.pings(), Ok(3));
}

/// The dispatcher writes its reply over the request without clearing it first: the
/// info word must still describe only the reply (no leftover capabilities or leases).
#[test]
fn replies_are_built_in_place_over_the_request() {
    let mut msg = request(ordinal::ECHO4, [1, 2, 3, 4, 9, 9], 4, 0, 0);
    msg.caps[0] = CapPtr(7);
    assert_eq!(dispatch(&mut msg), Disposition::Reply);
    assert_eq!(msg.info, MessageInfo::try_new(0, 4, 0, 0).unwrap());
    assert_eq!(msg.regs[..4], [1, 2, 3, 4]);
    let mut msg = request(ordinal::REFLECT, [0; 6], 0, 1, 0);
    msg.caps = [CapPtr(5), CapPtr(6), CapPtr(7)];
    assert_eq!(dispatch(&mut msg), Disposition::Reply);
    assert_eq!((msg.info, msg.caps[0]), (MessageInfo::try_new(0, 0, 1, 0).unwrap(), CapPtr(5)));
}

fn dispatch(msg: &mut Message) -> Disposition {
    let mut dispatcher = Dispatcher::new(EchoServer::default());
    dispatcher.dispatch(msg, &mut IpcBuffer::new(), &mut NoLeases)
}

fn request(ordinal: u64, regs: [u64; 6], len_words: usize, caps: usize, leases: usize) -> Message {
    Message {
        info: MessageInfo::try_new(ordinal, len_words, caps, leases).unwrap(),
        regs,
        ..Message::default()
    }
}

#[test]
fn malformed_requests_get_protocol_errors() {
    let cases = [
        (request(999, [0; 6], 0, 0, 0), ProtocolError::UnknownOrdinal),
        (request(ordinal::ECHO4, [1, 2, 3, 0, 0, 0], 3, 0, 0), ProtocolError::Truncated),
        (request(ordinal::NULL, [0; 6], 1, 0, 0), ProtocolError::TrailingData),
        (request(ordinal::ECHO4, [0; 6], 4, 1, 0), ProtocolError::WrongCaps),
        (request(ordinal::SUM, [0; 6], 0, 0, 0), ProtocolError::WrongLeases),
        // A fixed-size request is checked in one compare; a mismatch still names the
        // first thing a field-by-field decode would meet.
        (request(ordinal::ECHO6, [0; 6], 5, 0, 0), ProtocolError::Truncated),
        (request(ordinal::ECHO4, [0; 6], 5, 0, 0), ProtocolError::TrailingData),
        (request(ordinal::NULL, [0; 6], 0, 0, 1), ProtocolError::WrongLeases),
        (request(ordinal::NULL, [0; 6], 1, 1, 1), ProtocolError::WrongCaps),
        // A length prefix over the bound of `bytes<256>`.
        (request(ordinal::ECHO_BYTES, [257, 0, 0, 0, 0, 0], 1, 0, 0), ProtocolError::InvalidValue),
    ];
    for (mut msg, expected) in cases {
        assert_eq!(dispatch(&mut msg), Disposition::Reply);
        assert_eq!(ProtocolError::from_label(msg.info.label()), Some(expected), "{msg:?}");
        assert_eq!(msg.info.len_words(), 0);
    }
}

#[test]
fn a_bad_one_way_message_is_dropped() {
    let mut msg = request(ordinal::PING, [0; 6], 0, 0, 0);
    assert_eq!(dispatch(&mut msg), Disposition::NoReply);
}

/// A server that answers every request with a reply the client must reject.
struct Liar(Message);

impl Dispatch for Liar {
    fn dispatch(&mut self, msg: &mut Message, _: &mut IpcBuffer, _: &mut dyn LeaseAccess) -> Disposition {
        *msg = self.0;
        Disposition::Reply
    }
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    let lies = [
        (request(0, [5; 6], 2, 0, 0), ClientError::Malformed(ProtocolError::Truncated)),
        (request(0, [5; 6], 6, 0, 0), ClientError::Malformed(ProtocolError::TrailingData)),
        (request(0, [5; 6], 4, 1, 0), ClientError::Malformed(ProtocolError::WrongCaps)),
        (request(0, [5; 6], 4, 0, 1), ClientError::Malformed(ProtocolError::WrongLeases)),
        (request(0, [5; 6], 3, 1, 0), ClientError::Malformed(ProtocolError::WrongCaps)),
        (request(77, [0; 6], 0, 0, 0), ClientError::Malformed(ProtocolError::UnknownLabel)),
        (
            request(ProtocolError::UnknownOrdinal.label(), [0; 6], 0, 0, 0),
            ClientError::Rejected(ProtocolError::UnknownOrdinal),
        ),
    ];
    for (lie, expected) in lies {
        let mut echo = Client::new(Loopback::new(Liar(lie)));
        assert_eq!(echo.echo4(1, 2, 3, 4), Err(expected));
    }
    // An error label the contract does not declare.
    let mut echo = Client::new(Loopback::new(Liar(request(9, [0; 6], 0, 0, 0))));
    assert_eq!(
        echo.echo_bytes(&BoundedBytes::new()),
        Err(ClientError::Malformed(ProtocolError::UnknownLabel))
    );
}

#[derive(Default)]
struct Recorder(RefCell<Vec<(&'static str, Side, bool)>>);

impl Tracer for &Recorder {
    fn begin(&self, span: &'static Span) {
        self.0.borrow_mut().push((span.method, span.side, true));
    }
    fn end(&self, span: &'static Span) {
        self.0.borrow_mut().push((span.method, span.side, false));
    }
}

#[test]
fn tracing_wraps_both_ends_of_every_call() {
    let recorder = Recorder::default();
    let server = Dispatcher::with_tracer(EchoServer::default(), &recorder);
    let mut echo = Client::with_tracer(Loopback::new(server), &recorder);
    echo.echo4(1, 2, 3, 4).unwrap();
    assert_eq!(
        *recorder.0.borrow(),
        [
            ("echo4", Side::Client, true),
            ("echo4", Side::Server, true),
            ("echo4", Side::Server, false),
            ("echo4", Side::Client, false),
        ]
    );
}
