//! Foundry transports over the kernel's endpoints: what generated client stubs and
//! server dispatchers call in a real program.
//!
//! A message that fits the message registers travels as it is (the fastpath shape).
//! The tests that send anything else down the slow path are, on the client, compares
//! the compiler folds away for a register-sized stub, and on the server one compare on
//! the request's info word (in a register) and one on the reply's; everything behind
//! them is out of line. The rest of what a contract layout can produce goes through
//! the thread's IPC buffer ([`MessageBuffer`], `ramen_abi::ipc_buffer`):
//!
//! - **Words past the registers** are copied between Foundry's [`IpcBuffer`] (which
//!   the stubs encode into and decode from) and the thread's IPC buffer.
//! - **Capabilities** a message carries (`msg.caps`, capability pointers in this
//!   thread's CSpace) are named in `SEND_CAPS`; the endpoint capability needs the
//!   grant right, and a server can return capabilities only on an endpoint it
//!   receives through with the grant right. Received capabilities land in the
//!   [`CapSlots`] the transport was given ([`Endpoint::receive_caps_in`],
//!   [`Server::receive_caps_in`]); without them none arrive, and a method that
//!   expects one fails to decode (`WrongCaps`).
//! - **Leases**: a client's [`LeaseBuf`]s become kernel leases of its own memory,
//!   pinned for the call; a server reads and writes them through its lease window
//!   (`kobj::set_lease_window`, set up by whoever holds the memory for the window's
//!   page tables), with the [`LeaseAccess`] that [`ServerTransport::parts`] returns.
//!
//! Received capabilities are the program's to manage. A server's are valid while it
//! serves the request that brought them: the transport deletes them after the reply
//! (so the slots are free for the next request); a server that wants to keep one
//! copies or moves it elsewhere first. A client's stay in its slots until it moves or
//! deletes them ([`CapSlots::clear`]); a reply's capabilities only go into empty slots.

use foundry_runtime::{
    CapPtr, IpcBuffer, LeaseAccess, LeaseBuf, LeaseDesc, LeaseError, LeaseRights, Message, ProtocolError,
    ServerTransport, Transport, TransportError,
};
use ramen_abi::ipc_buffer::SEND_CAPS;
use ramen_abi::{Error, MSG_MAX_CAPS, MSG_MAX_LEASES, MSG_MAX_WORDS, MSG_REGS, MessageInfo, slot};

use crate::msgbuf::{Lease, MessageBuffer};
use crate::{SysError, call, kobj, recv, reply, reply_recv, send};

/// The info-word bits below the label: length, capability and lease counts, and the
/// reserved bits (`ramen_abi::MessageInfo`'s layout). With no capabilities, no leases and
/// the reserved bits clear they read as the length, so "fits the registers" is one
/// compare.
const BELOW_LABEL: u64 = (1 << 16) - 1;

/// The reserved info-word bits (`12..16`): no transport sets them.
const RESERVED: u64 = 0xf000;

// The compare above relies on the counts and reserved bits lying above the length.
const _: () = {
    let fits = MessageInfo(MSG_REGS as u64);
    assert!(fits.len_words() == MSG_REGS && fits.caps() == 0 && fits.leases() == 0);
    assert!(MessageInfo(BELOW_LABEL).label() == 0 && MessageInfo(BELOW_LABEL + 1).label() == 1);
    let reserved = MessageInfo(RESERVED);
    assert!(reserved.len_words() == 0 && reserved.caps() == 0 && reserved.leases() == 0);
    assert!(reserved.label() == 0);
};

/// `info & BELOW_LABEL`, as a 16-bit value: compared in one instruction, where the
/// 64-bit mask costs a zero-extension first.
#[inline(always)]
fn shape_bits(info: MessageInfo) -> u16 {
    const _: () = assert!(BELOW_LABEL == u16::MAX as u64);
    info.0 as u16
}

/// True if `info` describes a message the registers carry alone.
#[inline(always)]
fn fits_registers(info: MessageInfo) -> bool {
    shape_bits(info) <= MSG_REGS as u16
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
    } else if error == Error::InvalidArgument || error == Error::RangeError || error == Error::AlignmentError
    {
        // What the kernel says about a lease it will not take (empty, not the caller's
        // memory, too long) or a message it cannot carry.
        TransportError::BadLeases
    } else {
        TransportError::PeerGone
    }
}

/// Where a transport's received capabilities land: [`MSG_MAX_CAPS`] consecutive
/// slots of the thread's own CNode (`slot::CNODE`), from `first`. A capability
/// pointer in a program's CSpace is its slot index, so received capability `i` is
/// `CapPtr(first + i)`.
///
/// The kernel reads the receive slots from the thread's IPC buffer, so they belong to
/// the thread, not to one transport: a thread with several transports gives them all
/// the same slots (or only one of them any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapSlots {
    first: u64,
}

impl CapSlots {
    /// Slots `first..first + MSG_MAX_CAPS` of the thread's CNode.
    pub const fn new(first: u64) -> Self {
        Self { first }
    }

    /// Where received capability `index` is.
    pub const fn cptr(&self, index: usize) -> CapPtr {
        CapPtr(self.first + index as u64)
    }

    /// All of them, as a message's `caps` array.
    fn cptrs(&self) -> [CapPtr; MSG_MAX_CAPS] {
        core::array::from_fn(|i| self.cptr(i))
    }

    /// Empties the slots (empty ones are left as they are), so capabilities can
    /// arrive in them again.
    pub fn clear(&self) {
        for i in 0..MSG_MAX_CAPS {
            let _ = kobj::delete(slot::CNODE, self.cptr(i).0, CSPACE_DEPTH);
        }
    }

    /// Names the slots in the thread's IPC buffer, where the kernel looks.
    fn configure(&self, thread: &mut MessageBuffer) {
        thread.receive_caps_into(slot::CNODE, self.first, CSPACE_DEPTH);
    }
}

/// The depth a capability pointer in a thread's own CSpace resolves at.
const CSPACE_DEPTH: u64 = 64;

/// Writes the parts of `msg` the registers do not carry into the thread's IPC buffer:
/// words past the registers (from `words`) and capabilities to send. Refuses a message
/// the ABI cannot express.
fn stage(
    thread: &mut MessageBuffer,
    msg: &Message,
    words: &IpcBuffer,
) -> Result<crate::Message, TransportError> {
    let info = msg.info;
    if info.0 & RESERVED != 0 || info.len_words() > MSG_MAX_WORDS {
        return Err(TransportError::Unsupported);
    }
    for (i, word) in words.words.iter().enumerate().take(info.len_words().saturating_sub(MSG_REGS)) {
        thread.set_word(MSG_REGS + i, *word);
    }
    for (i, cap) in msg.caps.iter().enumerate().take(info.caps()) {
        thread.set_word(SEND_CAPS + i, cap.0);
    }
    Ok(crate::Message { info, regs: msg.regs })
}

/// A client's end of an endpoint.
pub struct Endpoint {
    cptr: u64,
    thread: MessageBuffer,
    buffer: IpcBuffer,
    received: [CapPtr; MSG_MAX_CAPS],
}

impl Endpoint {
    /// The endpoint capability `cptr` in this program's CSpace, called by the thread
    /// whose IPC buffer is `thread` (see [`MessageBuffer::program_thread`]).
    /// Capabilities in replies arrive only after [`Self::receive_caps_in`].
    pub fn new(cptr: u64, thread: MessageBuffer) -> Self {
        Self { cptr, thread, buffer: IpcBuffer::new(), received: [CapPtr(slot::NULL); MSG_MAX_CAPS] }
    }

    /// Receives the capabilities of replies into `slots` (they stay there until the
    /// program moves or deletes them: a reply's capabilities only go into empty slots).
    pub fn receive_caps_in(mut self, slots: CapSlots) -> Self {
        slots.configure(&mut self.thread);
        self.received = slots.cptrs();
        self
    }

    /// A call that needs the IPC buffer: words past the registers, capabilities or
    /// leases.
    #[cold]
    #[inline(never)]
    fn call_slow(&mut self, msg: &mut Message, leases: &mut [LeaseBuf<'_>]) -> Result<(), TransportError> {
        if msg.info.leases() != leases.len() || leases.len() > MSG_MAX_LEASES {
            return Err(TransportError::BadLeases);
        }
        let mut lent = [Lease::read_only(0, 0); MSG_MAX_LEASES];
        for (lease, buf) in lent.iter_mut().zip(leases.iter()) {
            *lease = match buf {
                LeaseBuf::Read(bytes) => Lease::read_only(bytes.as_ptr() as u64, bytes.len() as u64),
                LeaseBuf::ReadWrite(bytes) => Lease::read_write(bytes.as_ptr() as u64, bytes.len() as u64),
            };
        }
        let request = stage(&mut self.thread, msg, &self.buffer)?;
        self.thread.set_leases(lent.get(..leases.len()).unwrap_or(&[]));
        let reply = call(self.cptr, &request).map_err(transport_error)?;
        from_rt(reply, msg);
        msg.caps = self.received;
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn send_slow(&mut self, msg: &Message) -> Result<(), TransportError> {
        if msg.info.leases() != 0 {
            return Err(TransportError::BadLeases);
        }
        let request = stage(&mut self.thread, msg, &self.buffer)?;
        send(self.cptr, &request).map_err(transport_error)
    }
}

impl Transport for Endpoint {
    /// The words past the registers of the last reply (a stub reads them after the
    /// call), which the stub overwrites with a request's before the next call: the
    /// thread's IPC buffer is copied in whole, so a call whose messages fit the
    /// registers never pays for it.
    #[inline]
    fn ipc_buffer(&mut self) -> &mut IpcBuffer {
        self.thread.read_message_words(&mut self.buffer.words);
        &mut self.buffer
    }

    #[inline]
    fn call(&mut self, msg: &mut Message, leases: &mut [LeaseBuf<'_>]) -> Result<(), TransportError> {
        // For a register-sized stub both tests fold away: its lease list is empty and
        // its info word a constant.
        if !leases.is_empty() || !fits_registers(msg.info) {
            return self.call_slow(msg, leases);
        }
        let request = crate::Message { info: msg.info, regs: msg.regs };
        let reply = call(self.cptr, &request).map_err(transport_error)?;
        from_rt(reply, msg);
        // Where the reply's capabilities are, if it brought any (their count is in
        // the info word). A stub that expects none never reads them, and the stores
        // are dropped as dead.
        msg.caps = self.received;
        Ok(())
    }

    #[inline]
    fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        if !fits_registers(msg.info) {
            return self.send_slow(msg);
        }
        send(self.cptr, &crate::Message { info: msg.info, regs: msg.regs }).map_err(transport_error)
    }
}

/// The leases of the request a [`Server`] is serving, where its lease window shows
/// them.
#[derive(Debug, Default)]
struct WindowLeases {
    leases: [Option<Lease>; MSG_MAX_LEASES],
}

impl WindowLeases {
    fn get(&self, index: usize) -> Result<Lease, LeaseError> {
        self.leases.get(index).copied().flatten().ok_or(LeaseError::NoSuchLease)
    }
}

impl LeaseAccess for WindowLeases {
    fn read(&mut self, index: usize, offset: u64, out: &mut [u8]) -> Result<usize, LeaseError> {
        let lease = self.get(index)?;
        if offset > lease.len {
            return Err(LeaseError::OutOfBounds);
        }
        let count = out.len().min((lease.len - offset) as usize);
        for (i, byte) in out.iter_mut().enumerate().take(count) {
            *byte = lease.read(offset + i as u64).unwrap_or(0);
        }
        Ok(count)
    }

    fn write(&mut self, index: usize, offset: u64, data: &[u8]) -> Result<usize, LeaseError> {
        let lease = self.get(index)?;
        if !lease.writable {
            return Err(LeaseError::ReadOnly);
        }
        if offset > lease.len {
            return Err(LeaseError::OutOfBounds);
        }
        let count = data.len().min((lease.len - offset) as usize);
        for (i, byte) in data.iter().enumerate().take(count) {
            lease.write(offset + i as u64, *byte);
        }
        Ok(count)
    }
}

/// A server's end of an endpoint.
pub struct Server {
    cptr: u64,
    thread: MessageBuffer,
    buffer: IpcBuffer,
    leases: WindowLeases,
    slots: Option<CapSlots>,
    /// Capabilities the request being served left in the receive slots.
    held: usize,
    /// Replies whose shape bits (`info & BELOW_LABEL`) are at least this go the slow
    /// way: `MSG_REGS + 1` normally, 0 while received capabilities wait to be deleted
    /// after the reply. One compare against memory, as cheap as against a constant.
    slow_from: u16,
    /// Badge of the last request's sender.
    pub badge: u64,
}

impl Server {
    /// Serves on the endpoint capability `cptr`, from the thread whose IPC buffer is
    /// `thread`. Capabilities in requests arrive only after [`Self::receive_caps_in`];
    /// leases can be served only once the thread has a lease window.
    pub fn new(cptr: u64, thread: MessageBuffer) -> Self {
        Self {
            cptr,
            thread,
            buffer: IpcBuffer::new(),
            leases: WindowLeases::default(),
            slots: None,
            held: 0,
            slow_from: MSG_REGS as u16 + 1,
            badge: 0,
        }
    }

    /// Receives the capabilities of requests into `slots`; the transport deletes them
    /// after replying.
    pub fn receive_caps_in(mut self, slots: CapSlots) -> Self {
        slots.configure(&mut self.thread);
        self.slots = Some(slots);
        self
    }

    /// Takes in a request: the registers always; what else it brought only when its
    /// info word says so.
    #[inline(always)]
    fn arrived(&mut self, badge: u64, request: crate::Message, msg: &mut Message) {
        self.badge = badge;
        from_rt(request, msg);
        if !fits_registers(request.info) {
            self.arrived_slow(msg);
        }
    }

    /// Copies in the words past the registers, and notes the capabilities and leases.
    #[cold]
    #[inline(never)]
    fn arrived_slow(&mut self, msg: &mut Message) {
        // Rebuilt here rather than passed in: a reference would make the usual path
        // store the whole request.
        let request = crate::Message { info: msg.info, regs: msg.regs };
        let info = request.info;
        let overflow = info.len_words().min(MSG_MAX_WORDS).saturating_sub(MSG_REGS);
        self.thread.read_message_words(self.buffer.words.get_mut(..overflow).unwrap_or(&mut []));
        if let Some(slots) = self.slots {
            msg.caps = slots.cptrs();
        }
        self.held = info.caps();
        if self.held > 0 {
            self.slow_from = 0;
        }
        for (i, (desc, seen)) in msg.leases.iter_mut().zip(self.leases.leases.iter_mut()).enumerate() {
            *seen = self.thread.lease(&request, i);
            *desc = seen.map_or(LeaseDesc::default(), |lease| LeaseDesc {
                len_bytes: lease.len,
                rights: if lease.writable { LeaseRights::ReadWrite } else { LeaseRights::Read },
            });
        }
    }

    /// Deletes the capabilities the last request left (and notes that none are left).
    fn release(&mut self) {
        if self.held > 0
            && let Some(slots) = self.slots
        {
            slots.clear();
        }
        self.held = 0;
        self.slow_from = MSG_REGS as u16 + 1;
    }

    /// A reply that needs the IPC buffer, or one after a request that brought
    /// capabilities: reply, delete those, then wait.
    #[cold]
    #[inline(never)]
    fn reply_recv_slow(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        let bad = |error: ProtocolError| crate::Message {
            info: MessageInfo::try_new(error.label(), 0, 0, 0).unwrap_or_default(),
            regs: [0; MSG_REGS],
        };
        let staged = if msg.info.leases() != 0 {
            Err(TransportError::BadLeases)
        } else {
            stage(&mut self.thread, msg, &self.buffer)
        };
        let answer = staged.unwrap_or_else(|_| bad(ProtocolError::TooLarge));
        if self.held == 0 && answer.info.caps() == 0 {
            let (badge, request) = reply_recv(self.cptr, &answer).map_err(transport_error)?;
            self.arrived(badge, request, msg);
            return Ok(());
        }
        // The kernel checks a reply before it goes: one it refuses (a capability the
        // server named does not exist) is answered with a protocol error instead, so
        // the caller is not left waiting and the server keeps serving.
        if reply(&answer).is_err() && answer.info.caps() > 0 {
            let _ = reply(&bad(ProtocolError::WrongCaps));
        }
        self.recv(msg)
    }
}

impl ServerTransport for Server {
    #[inline]
    fn recv(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        if self.held > 0 {
            self.release();
        }
        let (badge, request) = recv(self.cptr).map_err(transport_error)?;
        self.arrived(badge, request, msg);
        Ok(())
    }

    #[inline]
    fn reply_recv(&mut self, msg: &mut Message) -> Result<(), TransportError> {
        if shape_bits(msg.info) >= self.slow_from {
            return self.reply_recv_slow(msg);
        }
        let reply = crate::Message { info: msg.info, regs: msg.regs };
        let (badge, request) = reply_recv(self.cptr, &reply).map_err(transport_error)?;
        self.arrived(badge, request, msg);
        Ok(())
    }

    #[inline]
    fn parts(&mut self) -> (&mut IpcBuffer, &mut dyn LeaseAccess) {
        (&mut self.buffer, &mut self.leases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-compare test agrees with the info word's fields for every shape.
    #[test]
    fn fits_registers_means_no_buffer_no_caps_no_leases() {
        for bits in 0..=u16::MAX {
            let info = MessageInfo(u64::from(bits) | (0x1234 << 16));
            let expected = info.len_words() <= MSG_REGS
                && info.caps() == 0
                && info.leases() == 0
                && info.0 & RESERVED == 0;
            assert_eq!(fits_registers(info), expected, "shape bits {bits:#x}");
        }
    }

    #[test]
    fn received_capabilities_are_named_by_slot() {
        let slots = CapSlots::new(40);
        for (i, cap) in slots.cptrs().iter().enumerate() {
            assert_eq!(*cap, CapPtr(40 + i as u64));
        }
    }
}
