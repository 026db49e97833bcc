//! In-process transport for host tests: the client's call runs the server's dispatcher
//! directly, with the same message, IPC buffer and lease checks a kernel would apply.

use crate::{
    Dispatch, Disposition, IpcBuffer, LeaseAccess, LeaseBuf, LeaseDesc, LeaseError, Message, NoLeases,
    Transport, TransportError,
};

/// A client transport wired straight to a dispatcher.
#[derive(Debug)]
pub struct Loopback<D> {
    server: D,
    buffer: IpcBuffer,
}

impl<D: Dispatch> Loopback<D> {
    /// Connects a client to `server`.
    pub fn new(server: D) -> Self {
        Self { server, buffer: IpcBuffer::new() }
    }

    /// The dispatcher (and through it the server state).
    pub fn server(&self) -> &D {
        &self.server
    }

    /// The dispatcher, mutably.
    pub fn server_mut(&mut self) -> &mut D {
        &mut self.server
    }
}

impl<D: Dispatch> Transport for Loopback<D> {
    fn ipc_buffer(&mut self) -> &mut IpcBuffer {
        &mut self.buffer
    }

    fn call(&mut self, msg: &mut Message, leases: &mut [LeaseBuf<'_>]) -> Result<(), TransportError> {
        if msg.info.leases() != leases.len() {
            return Err(TransportError::BadLeases);
        }
        for (slot, lease) in msg.leases.iter_mut().zip(leases.iter()) {
            *slot = LeaseDesc { len_bytes: lease.len_bytes() as u64, rights: lease.rights() };
        }
        match self.server.dispatch(msg, &mut self.buffer, &mut SliceLeases(leases)) {
            Disposition::Reply => Ok(()),
            Disposition::NoReply => Err(TransportError::NoReply),
        }
    }

    fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        if msg.info.leases() != 0 {
            return Err(TransportError::BadLeases);
        }
        // The server works on its own copy, as it would after a real send; a reply to a
        // send has nowhere to go and is dropped.
        let mut delivered = *msg;
        self.server.dispatch(&mut delivered, &mut self.buffer, &mut NoLeases);
        Ok(())
    }
}

/// Lease access backed by the client's own slices.
#[derive(Debug)]
pub struct SliceLeases<'s, 'a>(pub &'s mut [LeaseBuf<'a>]);

impl LeaseAccess for SliceLeases<'_, '_> {
    fn read(&mut self, index: usize, offset: u64, out: &mut [u8]) -> Result<usize, LeaseError> {
        let bytes: &[u8] = match self.0.get(index).ok_or(LeaseError::NoSuchLease)? {
            LeaseBuf::Read(bytes) => bytes,
            LeaseBuf::ReadWrite(bytes) => bytes,
        };
        let start = usize::try_from(offset).map_err(|_| LeaseError::OutOfBounds)?;
        let tail = bytes.get(start..).ok_or(LeaseError::OutOfBounds)?;
        let count = tail.len().min(out.len());
        out.iter_mut().zip(tail).for_each(|(dst, src)| *dst = *src);
        Ok(count)
    }

    fn write(&mut self, index: usize, offset: u64, data: &[u8]) -> Result<usize, LeaseError> {
        let bytes = match self.0.get_mut(index).ok_or(LeaseError::NoSuchLease)? {
            LeaseBuf::Read(_) => return Err(LeaseError::ReadOnly),
            LeaseBuf::ReadWrite(bytes) => bytes,
        };
        let start = usize::try_from(offset).map_err(|_| LeaseError::OutOfBounds)?;
        let tail = bytes.get_mut(start..).ok_or(LeaseError::OutOfBounds)?;
        let count = tail.len().min(data.len());
        tail.iter_mut().zip(data).for_each(|(dst, src)| *dst = *src);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_leases_respect_rights_and_bounds() {
        let source = [1u8, 2, 3];
        let mut sink = [0u8; 2];
        let mut leases = [LeaseBuf::Read(&source), LeaseBuf::ReadWrite(&mut sink)];
        let mut access = SliceLeases(&mut leases);
        let mut out = [0u8; 8];
        assert_eq!(access.read(0, 1, &mut out), Ok(2));
        assert_eq!(out[..2], [2, 3]);
        assert_eq!(access.write(0, 0, &[9]), Err(LeaseError::ReadOnly));
        assert_eq!(access.write(1, 1, &[7, 7, 7]), Ok(1));
        assert_eq!(access.read(1, 3, &mut out), Err(LeaseError::OutOfBounds));
        assert_eq!(access.read(2, 0, &mut out), Err(LeaseError::NoSuchLease));
        assert_eq!(sink, [0, 7]);
    }
}
