//! The traits generated code calls to move messages, and the server loop.

use crate::{IpcBuffer, LeaseRights, Message};

/// Why a transport could not deliver a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TransportError {
    /// The capability does not name an endpoint, or lacks the right to call or send.
    InvalidCap,
    /// The peer is gone.
    PeerGone,
    /// A call got no reply (the server treated it as one-way), or a send got one.
    NoReply,
    /// The message's info word disagrees with the leases handed over.
    BadLeases,
    /// The message needs something this transport cannot carry (for the kernel
    /// transport: an info word the ABI cannot express, such as reserved bits set).
    Unsupported,
}

/// A lease as the client hands it over: the buffer the server may borrow.
#[derive(Debug)]
pub enum LeaseBuf<'a> {
    /// The server may read `0`.
    Read(&'a [u8]),
    /// The server may read and write `0`.
    ReadWrite(&'a mut [u8]),
}

impl LeaseBuf<'_> {
    /// Length of the leased buffer.
    pub fn len_bytes(&self) -> usize {
        match self {
            Self::Read(bytes) => bytes.len(),
            Self::ReadWrite(bytes) => bytes.len(),
        }
    }

    /// True if the leased buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len_bytes() == 0
    }

    /// The rights this lease grants.
    pub fn rights(&self) -> LeaseRights {
        match self {
            Self::Read(_) => LeaseRights::Read,
            Self::ReadWrite(_) => LeaseRights::ReadWrite,
        }
    }
}

/// The client end of an IPC channel (one endpoint capability).
///
/// A real implementation passes `msg.regs` in registers and reads overflow words from
/// the thread's IPC buffer, which [`Transport::ipc_buffer`] exposes so that stubs write
/// them in place.
pub trait Transport {
    /// The calling thread's IPC buffer (message words past the registers).
    fn ipc_buffer(&mut self) -> &mut IpcBuffer;

    /// Sends `msg` with `leases` and waits for the reply, which overwrites `msg` (and the
    /// IPC buffer).
    fn call(&mut self, msg: &mut Message, leases: &mut [LeaseBuf<'_>]) -> Result<(), TransportError>;

    /// Sends `msg` without waiting for a reply.
    fn send(&mut self, msg: &Message) -> Result<(), TransportError>;
}

/// What a lease access failed on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LeaseError {
    /// No lease with this index came with the request.
    NoSuchLease,
    /// The lease does not grant write access.
    ReadOnly,
    /// The offset lies past the end of the lease.
    OutOfBounds,
}

/// Server-side access to the leases of the request being served (a system call in a real
/// server, slices in the loopback).
pub trait LeaseAccess {
    /// Copies lease bytes from `offset` into `out`; returns the count copied (short at
    /// the end of the lease).
    fn read(&mut self, index: usize, offset: u64, out: &mut [u8]) -> Result<usize, LeaseError>;
    /// Copies `data` into the lease at `offset`; returns the count copied.
    fn write(&mut self, index: usize, offset: u64, data: &[u8]) -> Result<usize, LeaseError>;
}

/// Lease access for a request that carries none.
#[derive(Debug, Default)]
pub struct NoLeases;

impl LeaseAccess for NoLeases {
    fn read(&mut self, _: usize, _: u64, _: &mut [u8]) -> Result<usize, LeaseError> {
        Err(LeaseError::NoSuchLease)
    }
    fn write(&mut self, _: usize, _: u64, _: &[u8]) -> Result<usize, LeaseError> {
        Err(LeaseError::NoSuchLease)
    }
}

/// A read-only lease handed to a server method.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadLease {
    /// Position among the request's leases.
    pub index: usize,
    /// Length of the borrowed buffer.
    pub len_bytes: u64,
}

impl ReadLease {
    /// Copies bytes from `offset` of the client's buffer into `out`.
    pub fn read(
        &self,
        access: &mut dyn LeaseAccess,
        offset: u64,
        out: &mut [u8],
    ) -> Result<usize, LeaseError> {
        access.read(self.index, offset, out)
    }
}

/// A read-write lease handed to a server method.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RwLease {
    /// Position among the request's leases.
    pub index: usize,
    /// Length of the borrowed buffer.
    pub len_bytes: u64,
}

impl RwLease {
    /// Copies bytes from `offset` of the client's buffer into `out`.
    pub fn read(
        &self,
        access: &mut dyn LeaseAccess,
        offset: u64,
        out: &mut [u8],
    ) -> Result<usize, LeaseError> {
        access.read(self.index, offset, out)
    }

    /// Copies `data` into the client's buffer at `offset`.
    pub fn write(&self, access: &mut dyn LeaseAccess, offset: u64, data: &[u8]) -> Result<usize, LeaseError> {
        access.write(self.index, offset, data)
    }
}

/// What the server loop does after dispatching a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Disposition {
    /// `msg` now holds the reply: send it.
    Reply,
    /// The request was one-way: wait for the next one.
    NoReply,
}

/// Turns `msg` into a protocol-error reply; what dispatchers do with a bad request.
#[inline]
pub fn reject(msg: &mut Message, error: crate::ProtocolError) -> Disposition {
    msg.set_reply_label(error.label());
    Disposition::Reply
}

/// A decoded-and-served interface: implemented by the generated `Dispatcher`.
pub trait Dispatch {
    /// Decodes the request in `msg` (and `buf`), calls the server, and leaves the reply
    /// in `msg` (and `buf`). Malformed requests get a protocol-error reply; never panics.
    fn dispatch(
        &mut self,
        msg: &mut Message,
        buf: &mut IpcBuffer,
        leases: &mut dyn LeaseAccess,
    ) -> Disposition;
}

/// The server end of an IPC channel (one endpoint capability plus a reply capability).
pub trait ServerTransport {
    /// Waits for the next request.
    fn recv(&mut self, msg: &mut Message) -> Result<(), TransportError>;
    /// Replies with `msg` and waits for the next request in one step.
    fn reply_recv(&mut self, msg: &mut Message) -> Result<(), TransportError>;
    /// The IPC buffer and the lease access for the request just received.
    fn parts(&mut self) -> (&mut IpcBuffer, &mut dyn LeaseAccess);
}

/// The receive after a one-way request, kept out of the loop: inlined, LLVM tests for
/// the one-way ordinals before the dispatch table on every request.
#[cold]
#[inline(never)]
fn recv_after_one_way<T: ServerTransport + ?Sized>(
    transport: &mut T,
    msg: &mut Message,
) -> Result<(), TransportError> {
    transport.recv(msg)
}

/// Serves requests until the transport fails; returns that failure.
pub fn serve<T: ServerTransport + ?Sized, D: Dispatch + ?Sized>(
    transport: &mut T,
    server: &mut D,
) -> TransportError {
    let mut msg = Message::default();
    if let Err(error) = transport.recv(&mut msg) {
        return error;
    }
    loop {
        let (buf, leases) = transport.parts();
        // Each arm tests its own result: a shared test after the match costs the usual
        // path a materialised `Ok` and a second compare.
        match server.dispatch(&mut msg, buf, leases) {
            Disposition::Reply => {
                if let Err(error) = transport.reply_recv(&mut msg) {
                    return error;
                }
            }
            Disposition::NoReply => {
                if let Err(error) = recv_after_one_way(transport, &mut msg) {
                    return error;
                }
            }
        }
    }
}
