//! The echo contract served from another thread (another core, on the host), with the
//! generated dispatcher under `foundry_runtime::serve` and messages copied between the
//! two sides the way the kernel copies them between threads.

use std::sync::mpsc::{Receiver, Sender, channel};

use foundry_runtime::{
    BoundedBytes, IpcBuffer, LeaseAccess, LeaseBuf, Message, NoLeases, ServerTransport, Transport,
    TransportError, serve,
};
use foundry_tests_echo::echo::echo::{Client, Dispatcher, Server};
use foundry_tests_echo::echo::{EchoCap, EchoError, Sample};

enum Envelope {
    Call(Message, Box<IpcBuffer>),
    Send(Message, Box<IpcBuffer>),
}

struct ClientEnd {
    requests: Sender<Envelope>,
    replies: Receiver<(Message, Box<IpcBuffer>)>,
    buffer: IpcBuffer,
}

impl Transport for ClientEnd {
    fn ipc_buffer(&mut self) -> &mut IpcBuffer {
        &mut self.buffer
    }

    fn call(&mut self, msg: &mut Message, leases: &mut [LeaseBuf<'_>]) -> Result<(), TransportError> {
        if !leases.is_empty() {
            return Err(TransportError::BadLeases);
        }
        let request = Envelope::Call(*msg, Box::new(self.buffer.clone()));
        self.requests.send(request).map_err(|_| TransportError::PeerGone)?;
        let (reply, buffer) = self.replies.recv().map_err(|_| TransportError::PeerGone)?;
        *msg = reply;
        self.buffer = *buffer;
        Ok(())
    }

    fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        let request = Envelope::Send(*msg, Box::new(self.buffer.clone()));
        self.requests.send(request).map_err(|_| TransportError::PeerGone)
    }
}

struct ServerEnd {
    requests: Receiver<Envelope>,
    replies: Sender<(Message, Box<IpcBuffer>)>,
    buffer: IpcBuffer,
    caller_waits: bool,
    leases: NoLeases,
}

impl ServerTransport for ServerEnd {
    fn recv(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        let (request, buffer, caller_waits) =
            match self.requests.recv().map_err(|_| TransportError::PeerGone)? {
                Envelope::Call(request, buffer) => (request, buffer, true),
                Envelope::Send(request, buffer) => (request, buffer, false),
            };
        *msg = request;
        self.buffer = *buffer;
        self.caller_waits = caller_waits;
        Ok(())
    }

    fn reply_recv(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        // A reply to a one-way send has nobody to go to.
        if self.caller_waits {
            let reply = (*msg, Box::new(self.buffer.clone()));
            self.replies.send(reply).map_err(|_| TransportError::PeerGone)?;
        }
        self.recv(msg)
    }

    fn parts(&mut self) -> (&mut IpcBuffer, &mut dyn LeaseAccess) {
        (&mut self.buffer, &mut self.leases)
    }
}

#[derive(Default)]
struct EchoServer {
    pings: u64,
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
        if data.len() > 200 { Err(EchoError::TooLong) } else { Ok(data) }
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
        self.pings += 1;
    }
    fn pings(&mut self) -> u64 {
        self.pings
    }
}

#[test]
fn echo_served_from_another_thread() {
    let (request_tx, request_rx) = channel();
    let (reply_tx, reply_rx) = channel();
    let server = std::thread::spawn(move || {
        let mut transport = ServerEnd {
            requests: request_rx,
            replies: reply_tx,
            buffer: IpcBuffer::new(),
            caller_waits: false,
            leases: NoLeases,
        };
        serve(&mut transport, &mut Dispatcher::new(EchoServer::default()))
    });

    let mut echo =
        Client::new(ClientEnd { requests: request_tx, replies: reply_rx, buffer: IpcBuffer::new() });
    for i in 0..1000u64 {
        assert_eq!(
            echo.echo6(i, i + 1, i + 2, i + 3, i + 4, i + 5),
            Ok((i, i + 1, i + 2, i + 3, i + 4, i + 5))
        );
        assert_eq!(echo.ping(i as u32), Ok(()));
    }
    let long = BoundedBytes::<256>::try_from_slice(&[7; 256]).unwrap();
    let short = BoundedBytes::<256>::try_from_slice(&[9; 150]).unwrap();
    assert_eq!(echo.echo_bytes(&short), Ok(Ok(short)));
    assert_eq!(echo.echo_bytes(&long), Ok(Err(EchoError::TooLong)));
    assert_eq!(echo.pings(), Ok(1000));

    drop(echo);
    assert_eq!(server.join().unwrap(), TransportError::PeerGone);
}
