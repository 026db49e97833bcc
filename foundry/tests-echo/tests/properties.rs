//! Property tests over the generated code of a contract that uses every kind of type:
//! encode/decode round trips, and random bytes into every decoder, dispatcher and client
//! method (the property: never a panic, always a value or a protocol error).

use std::fmt::Debug;

use foundry_runtime::loopback::Loopback;
use foundry_runtime::{
    BoundedBytes, BoundedStr, CapPtr, ClientError, Dispatch, Disposition, IpcBuffer, LABEL_OK, LeaseAccess,
    MSG_REGS, Message, MessageInfo, NoLeases, OVERFLOW_WORDS, ProtocolError, ReadLease, Reader, RwLease,
    Wire, Writer,
};
use foundry_tests_echo::all_types::types;
use foundry_tests_echo::all_types::{Failure, Mode, Nested, Point, Scalars, SinkCap, TypesCap, sink};
use foundry_tests_echo::echo;
use proptest::prelude::*;

fn encode<T: Wire>(value: &T) -> ([u64; MSG_REGS], Vec<u64>, usize) {
    let mut regs = [0; MSG_REGS];
    let mut overflow = vec![0; OVERFLOW_WORDS];
    let mut writer = Writer::new(&mut regs, &mut overflow);
    value.encode(&mut writer);
    let len = writer.finish().expect("every contract type fits a message");
    (regs, overflow, len)
}

fn round_trip<T: Wire + PartialEq + Debug>(value: &T) {
    let (regs, overflow, len) = encode(value);
    let mut reader = Reader::new(&regs, &overflow, len);
    assert_eq!(&T::decode(&mut reader).unwrap(), value);
    reader.finish().unwrap();
}

/// Decodes random words as `T`; whatever decodes must survive a round trip.
fn decode_random<T: Wire + PartialEq + Debug>(regs: &[u64; MSG_REGS], overflow: &[u64], len: usize) {
    let mut reader = Reader::new(regs, overflow, len);
    if let Ok(value) = T::decode(&mut reader) {
        round_trip(&value);
    }
}

fn scalars() -> impl Strategy<Value = Scalars> {
    (any::<(u8, u16, u32, u64, i8)>(), any::<(i16, i32, i64, bool)>())
        .prop_map(|((a, b, c, d, e), (f, g, h, flag))| Scalars { a, b, c, d, e, f, g, h, flag })
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Off), Just(Mode::On), Just(Mode::Max)]
}

fn point() -> impl Strategy<Value = Point> {
    any::<(i32, i32)>().prop_map(|(x, y)| Point { x, y })
}

fn bytes<const N: usize>() -> impl Strategy<Value = BoundedBytes<N>> {
    proptest::collection::vec(any::<u8>(), 0..=N)
        .prop_map(|bytes| BoundedBytes::try_from_slice(&bytes).unwrap())
}

fn text<const N: usize>() -> impl Strategy<Value = BoundedStr<N>> {
    "\\PC{0,6}".prop_map(|text| BoundedStr::try_from_str(&text).unwrap())
}

fn nested() -> impl Strategy<Value = Nested> {
    (scalars(), mode(), [point(), point(), point()], text::<24>(), bytes::<40>(), any::<[[u16; 2]; 2]>())
        .prop_map(|(scalars, mode, points, name, blob, grid)| Nested {
            scalars,
            mode,
            points,
            name,
            blob,
            grid,
        })
}

/// Echoes everything back; fails `modes` on request.
struct TypesServer;

impl types::Server for TypesServer {
    fn scalars(&mut self, value: Scalars) -> Scalars {
        value
    }
    fn nested(&mut self, value: Nested) -> Result<Nested, Failure> {
        Ok(value)
    }
    fn texts(
        &mut self,
        name: BoundedStr<100>,
        blob: BoundedBytes<300>,
    ) -> (BoundedStr<100>, BoundedBytes<300>) {
        (name, blob)
    }
    fn arrays(&mut self, words: [u64; 8], flags: [bool; 5]) -> ([u64; 8], [bool; 5]) {
        (words, flags)
    }
    fn modes(&mut self, mode: Mode, fail: bool) -> Result<Mode, Failure> {
        if fail { Err(Failure::Exhausted) } else { Ok(mode) }
    }
    fn caps(&mut self, first: TypesCap, second: SinkCap) -> (SinkCap, TypesCap) {
        (second, first)
    }
    fn leases(&mut self, source: ReadLease, sink: RwLease, leases: &mut dyn LeaseAccess) -> u64 {
        let mut byte = [0u8; 1];
        let mut copied = 0;
        while source.read(leases, copied, &mut byte) == Ok(1) && sink.write(leases, copied, &byte) == Ok(1) {
            copied += 1;
        }
        copied
    }
    fn give(&mut self, _sink: SinkCap) {}
    fn nothing(&mut self) -> Result<(), Failure> {
        Err(Failure::Denied)
    }
    fn old(&mut self, value: u64) -> u64 {
        value + 1
    }
}

fn client() -> types::Client<Loopback<types::Dispatcher<TypesServer>>> {
    types::Client::new(Loopback::new(types::Dispatcher::new(TypesServer)))
}

#[test]
fn every_method_of_the_all_types_contract_round_trips() {
    let mut client = client();
    assert_eq!(client.modes(Mode::Max, false), Ok(Ok(Mode::Max)));
    assert_eq!(client.modes(Mode::On, true), Ok(Err(Failure::Exhausted)));
    let (first, second) = (TypesCap(CapPtr(1)), SinkCap(CapPtr(2)));
    assert_eq!(client.caps(first, second), Ok((second, first)));
    let mut sink = [0u8; 4];
    assert_eq!(client.leases(b"abcdef", &mut sink), Ok(4));
    assert_eq!(&sink, b"abcd");
    assert_eq!(client.give(second), Ok(()));
    assert_eq!(client.nothing(), Ok(Err(Failure::Denied)));
    #[allow(deprecated)]
    let old = client.old(41);
    assert_eq!(old, Ok(42));
}

/// Delivers a fixed reply (message and IPC buffer) to any request.
struct Canned(Message, Vec<u64>);

impl Dispatch for Canned {
    fn dispatch(&mut self, msg: &mut Message, buf: &mut IpcBuffer, _: &mut dyn LeaseAccess) -> Disposition {
        *msg = self.0;
        buf.words.iter_mut().zip(&self.1).for_each(|(dst, src)| *dst = *src);
        Disposition::Reply
    }
}

fn random_message() -> impl Strategy<Value = (Message, Vec<u64>)> {
    (
        prop_oneof![0u64..16, Just(ProtocolError::TrailingData.label()), any::<u64>()],
        0usize..128,
        0usize..4,
        0usize..5,
        any::<[u64; MSG_REGS]>(),
        proptest::collection::vec(prop_oneof![0u64..4, any::<u64>()], 0..OVERFLOW_WORDS),
        any::<[u64; 4]>(),
    )
        .prop_map(|(label, len, caps, leases, regs, overflow, lease_lens)| {
            let info =
                MessageInfo::try_new(label & MessageInfo::MAX_LABEL, len.min(120), caps.min(3), leases)
                    .unwrap_or_default();
            let mut msg = Message { info, regs, ..Message::default() };
            for (lease, len_bytes) in msg.leases.iter_mut().zip(lease_lens) {
                lease.len_bytes = len_bytes % 64;
                if len_bytes % 2 == 1 {
                    lease.rights = foundry_runtime::LeaseRights::ReadWrite;
                }
            }
            (msg, overflow)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_type_round_trips(
        scalars in scalars(), nested in nested(), mode in mode(), point in point(),
        name in text::<100>(), blob in bytes::<300>(), words in any::<[u64; 8]>(), flags in any::<[bool; 5]>(),
    ) {
        round_trip(&scalars);
        round_trip(&nested);
        round_trip(&mode);
        round_trip(&point);
        round_trip(&Failure::Exhausted);
        round_trip(&name);
        round_trip(&blob);
        round_trip(&words);
        round_trip(&flags);

        let mut client = client();
        prop_assert_eq!(client.scalars(&scalars), Ok(scalars));
        prop_assert_eq!(client.nested(&nested), Ok(Ok(nested)));
        prop_assert_eq!(client.texts(&name, &blob), Ok((name, blob)));
        prop_assert_eq!(client.arrays(&words, &flags), Ok((words, flags)));
    }

    #[test]
    fn random_words_into_every_decoder(
        regs in any::<[u64; MSG_REGS]>(),
        overflow in proptest::collection::vec(prop_oneof![0u64..4, any::<u64>()], 0..OVERFLOW_WORDS),
        len in 0usize..128,
    ) {
        decode_random::<Scalars>(&regs, &overflow, len);
        decode_random::<Nested>(&regs, &overflow, len);
        decode_random::<Point>(&regs, &overflow, len);
        decode_random::<Mode>(&regs, &overflow, len);
        decode_random::<Failure>(&regs, &overflow, len);
        decode_random::<BoundedStr<100>>(&regs, &overflow, len);
        decode_random::<BoundedBytes<300>>(&regs, &overflow, len);
        decode_random::<[u64; 8]>(&regs, &overflow, len);
        decode_random::<[bool; 5]>(&regs, &overflow, len);
        decode_random::<echo::Sample>(&regs, &overflow, len);
        decode_random::<echo::EchoError>(&regs, &overflow, len);
    }

    #[test]
    fn random_requests_into_every_dispatcher((msg, overflow) in random_message()) {
        let mut buf = IpcBuffer::new();
        buf.words.iter_mut().zip(&overflow).for_each(|(dst, src)| *dst = *src);
        let mut types = types::Dispatcher::new(TypesServer);
        let mut echo = echo::echo::Dispatcher::new(EchoServer);
        let mut sink = sink::Dispatcher::new(SinkServer);
        let dispatchers: [&mut dyn Dispatch; 3] = [&mut types, &mut echo, &mut sink];
        for dispatcher in dispatchers {
            let mut msg = msg;
            if dispatcher.dispatch(&mut msg, &mut buf.clone(), &mut NoLeases) == Disposition::Reply {
                let label = msg.info.label();
                prop_assert!(
                    label == LABEL_OK || label <= u64::from(u32::MAX) || ProtocolError::from_label(label).is_some(),
                    "reply label {label:#x}"
                );
            }
        }
    }

    #[test]
    fn random_replies_into_every_client_method((reply, overflow) in random_message()) {
        let mut client = types::Client::new(Loopback::new(Canned(reply, overflow.clone())));
        let mut sink = [0u8; 3];
        let results: [Result<(), ClientError>; 10] = [
            client.scalars(&Scalars { a: 0, b: 0, c: 0, d: 0, e: 0, f: 0, g: 0, h: 0, flag: false }).map(drop),
            client.nested(&Nested {
                scalars: Scalars { a: 0, b: 0, c: 0, d: 0, e: 0, f: 0, g: 0, h: 0, flag: true },
                mode: Mode::On,
                points: [Point { x: 1, y: 2 }; 3],
                name: BoundedStr::new(),
                blob: BoundedBytes::new(),
                grid: [[0; 2]; 2],
            }).map(drop),
            client.texts(&BoundedStr::new(), &BoundedBytes::new()).map(drop),
            client.arrays(&[0; 8], &[false; 5]).map(drop),
            client.modes(Mode::Off, false).map(drop),
            client.caps(TypesCap(CapPtr(1)), SinkCap(CapPtr(2))).map(drop),
            client.leases(&[1, 2], &mut sink).map(drop),
            client.give(SinkCap(CapPtr(3))),
            client.nothing().map(drop),
            #[allow(deprecated)]
            client.old(1).map(drop),
        ];
        let _ = results;
        let mut echo = echo::echo::Client::new(Loopback::new(Canned(reply, overflow)));
        let _ = echo.echo6(1, 2, 3, 4, 5, 6);
        let _ = echo.echo_bytes(&BoundedBytes::new());
        let _ = echo.reflect(echo::EchoCap(CapPtr(9)));
    }
}

struct SinkServer;

impl sink::Server for SinkServer {
    fn put(&mut self, _value: u64) {}
}

/// The bare minimum echo server, for the dispatcher fuzz test.
struct EchoServer;

impl echo::echo::Server for EchoServer {
    fn null(&mut self) {}
    fn echo4(&mut self, a: u64, b: u64, c: u64, d: u64) -> (u64, u64, u64, u64) {
        (a, b, c, d)
    }
    fn echo6(&mut self, a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> (u64, u64, u64, u64, u64, u64) {
        (a, b, c, d, e, f)
    }
    fn echo_packed(&mut self, tag: u8, flags: u16, value: u32) -> echo::Sample {
        echo::Sample { tag, flags, value }
    }
    fn echo_bytes(&mut self, data: BoundedBytes<256>) -> Result<BoundedBytes<256>, echo::EchoError> {
        Ok(data)
    }
    fn sum(&mut self, _data: ReadLease, _leases: &mut dyn LeaseAccess) -> u64 {
        0
    }
    fn fill(&mut self, _data: RwLease, _value: u8, _leases: &mut dyn LeaseAccess) -> u64 {
        0
    }
    fn reflect(&mut self, peer: echo::EchoCap) -> echo::EchoCap {
        peer
    }
    fn ping(&mut self, _seq: u32) {}
    fn pings(&mut self) -> u64 {
        0
    }
}
