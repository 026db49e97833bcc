//! Foundry transports over the kernel's endpoints: what generated client stubs and
//! server dispatchers call in a real program.
//!
//! Messages that fit the message registers travel as they are (the fastpath shape).
//! The kernel does not yet copy IPC-buffer words, transfer capabilities or pin leases
//! (the IPC issue), so a message that needs them fails with
//! [`TransportError::Unsupported`] instead of arriving incomplete.

use foundry_runtime::{
    IpcBuffer, LeaseAccess, LeaseBuf, Message, NoLeases, ServerTransport, Transport, TransportError,
};
use ramen_abi::{Error, MSG_REGS, MessageInfo};

use crate::{SysError, call, recv, reply_recv, send};

/// The info-word bits below the label: length, capability and lease counts, and the
/// reserved bits (`ramen_abi::MessageInfo`'s layout). With no capabilities, no leases and
/// the reserved bits clear they read as the length, so "fits the registers" is one
/// compare.
const BELOW_LABEL: u64 = (1 << 16) - 1;

// The compare above relies on the counts and reserved bits lying above the length.
const _: () = {
    let fits = MessageInfo(MSG_REGS as u64);
    assert!(fits.len_words() == MSG_REGS && fits.caps() == 0 && fits.leases() == 0);
    assert!(MessageInfo(BELOW_LABEL).label() == 0 && MessageInfo(BELOW_LABEL + 1).label() == 1);
};

#[inline(always)]
fn to_rt(msg: &Message) -> Result<crate::Message, TransportError> {
    let info = msg.info;
    // Also refuses reserved bits, which the fastpath would not carry either.
    if info.0 & BELOW_LABEL > MSG_REGS as u64 {
        return Err(TransportError::Unsupported);
    }
    Ok(crate::Message { info, regs: msg.regs })
}

/// Overwrites only what a register message carries (its info word says there are no
/// capabilities or leases, so the rest is never read); rebuilding the whole message
/// cost the generated call about 20 stores.
#[inline(always)]
fn from_rt(reply: crate::Message, msg: &mut Message) {
    msg.info = reply.info;
    msg.regs = reply.regs;
}

/// Off the hot path: the generated loop keeps only the success test inline.
#[cold]
#[inline(never)]
fn transport_error(error: SysError) -> TransportError {
    if error == Error::InvalidCapability || error == Error::WrongType || error == Error::InsufficientRights {
        TransportError::InvalidCap
    } else {
        TransportError::PeerGone
    }
}

/// A client's end of an endpoint.
pub struct Endpoint {
    cptr: u64,
    buffer: IpcBuffer,
}

impl Endpoint {
    /// The endpoint capability `cptr` in this program's CSpace.
    pub fn new(cptr: u64) -> Self {
        Self { cptr, buffer: IpcBuffer::new() }
    }
}

impl Transport for Endpoint {
    #[inline]
    fn ipc_buffer(&mut self) -> &mut IpcBuffer {
        &mut self.buffer
    }

    #[inline]
    fn call(&mut self, msg: &mut Message, leases: &mut [LeaseBuf<'_>]) -> Result<(), TransportError> {
        if !leases.is_empty() {
            return Err(TransportError::Unsupported);
        }
        let reply = call(self.cptr, &to_rt(msg)?).map_err(transport_error)?;
        from_rt(reply, msg);
        Ok(())
    }

    #[inline]
    fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        send(self.cptr, &to_rt(msg)?).map_err(transport_error)
    }
}

/// A server's end of an endpoint.
pub struct Server {
    cptr: u64,
    buffer: IpcBuffer,
    leases: NoLeases,
    /// Badge of the last request's sender.
    pub badge: u64,
}

impl Server {
    /// Serves on the endpoint capability `cptr`.
    pub fn new(cptr: u64) -> Self {
        Self { cptr, buffer: IpcBuffer::new(), leases: NoLeases, badge: 0 }
    }
}

impl ServerTransport for Server {
    #[inline]
    fn recv(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        let (badge, request) = recv(self.cptr).map_err(transport_error)?;
        self.badge = badge;
        from_rt(request, msg);
        Ok(())
    }

    #[inline]
    fn reply_recv(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        // A reply that cannot travel in registers becomes a protocol error reply.
        let reply = to_rt(msg).unwrap_or_else(|_| crate::Message {
            info: MessageInfo::try_new(foundry_runtime::ProtocolError::TooLarge.label(), 0, 0, 0)
                .unwrap_or_default(),
            regs: [0; MSG_REGS],
        });
        let (badge, request) = reply_recv(self.cptr, &reply).map_err(transport_error)?;
        self.badge = badge;
        from_rt(request, msg);
        Ok(())
    }

    #[inline]
    fn parts(&mut self) -> (&mut IpcBuffer, &mut dyn LeaseAccess) {
        (&mut self.buffer, &mut self.leases)
    }
}
