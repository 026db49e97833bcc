//! The runtime under every Foundry-generated stub: messages, the wire codec, transports.
//!
//! Generated clients build a [`Message`] whose first [`MSG_REGS`] words are a plain
//! array on the stack, so a transport that issues the IPC system call can pass them in
//! registers without touching memory; only words past the registers go to the per-thread
//! [`IpcBuffer`], and only methods whose messages can outgrow the registers borrow it.
//! Decoding never panics: every malformed or truncated message becomes a
//! [`ProtocolError`], which a server answers with a reserved reply label
//! ([`ProtocolError::label`]) and then keeps serving.
//!
//! Nothing here allocates, and there is no `unsafe`: the kernel-facing transport (system
//! call wrappers) lives in the user runtime, behind the [`Transport`] and
//! [`ServerTransport`] traits. [`loopback`] is the in-process double used by host tests.
#![no_std]
#![forbid(unsafe_code)]

pub mod loopback;
mod message;
mod protocol;
mod trace;
mod transport;
mod wire;

pub use message::{
    CapPtr, IpcBuffer, LeaseDesc, LeaseRights, Message, OVERFLOW_WORDS, check_shape, has_label_and_shape,
};
pub use protocol::{ClientError, ErrorEnum, LABEL_OK, PROTOCOL_LABEL_BASE, ProtocolError};
pub use ramen_abi::{MSG_MAX_CAPS, MSG_MAX_LEASES, MSG_MAX_WORDS, MSG_REGS, MessageInfo};
pub use trace::{NoTrace, Side, Span, Tracer, traced};
pub use transport::{
    Dispatch, Disposition, LeaseAccess, LeaseBuf, LeaseError, NoLeases, ReadLease, RwLease, ServerTransport,
    Transport, TransportError, reject, serve,
};
pub use wire::{BoundedBytes, BoundedStr, Reader, Wire, Writer};
