//! One IPC message: the info word, the register words, and the out-of-band slots.

use ramen_abi::{MSG_MAX_CAPS, MSG_MAX_LEASES, MSG_MAX_WORDS, MSG_REGS, MessageInfo};

/// Message words that do not fit the registers and continue in the IPC buffer.
pub const OVERFLOW_WORDS: usize = MSG_MAX_WORDS - MSG_REGS;

/// A capability pointer: the address of a slot in the caller's capability space.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct CapPtr(pub u64);

/// What the receiver of a lease may do with the borrowed memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum LeaseRights {
    /// The server may read the client's buffer.
    #[default]
    Read,
    /// The server may read and write the client's buffer.
    ReadWrite,
}

/// A lease as the receiver sees it: the kernel has pinned the client's buffer, and the
/// server reaches it by index through a [`crate::LeaseAccess`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LeaseDesc {
    /// Length of the borrowed buffer.
    pub len_bytes: u64,
    /// What the server may do with it.
    pub rights: LeaseRights,
}

/// The per-thread IPC buffer: message words `MSG_REGS..MSG_MAX_WORDS`.
///
/// A real thread has exactly one, in a page the kernel maps; stubs write overflow
/// words into it in place instead of copying them there.
#[derive(Clone, Debug)]
pub struct IpcBuffer {
    /// The overflow words, word `MSG_REGS` of the message first.
    pub words: [u64; OVERFLOW_WORDS],
}

impl IpcBuffer {
    /// A zeroed buffer.
    pub const fn new() -> Self {
        Self { words: [0; OVERFLOW_WORDS] }
    }
}

impl Default for IpcBuffer {
    fn default() -> Self {
        Self::new()
    }
}

/// One message, minus the overflow words (which live in the [`IpcBuffer`]).
///
/// The register words are inline so that a fastpath-sized message is built entirely
/// on the stack and handed to the system call as six register values.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Message {
    /// Label, length, capability and lease counts.
    pub info: MessageInfo,
    /// The words carried in registers.
    pub regs: [u64; MSG_REGS],
    /// Capabilities to transfer; the first `info.caps()` are meaningful.
    pub caps: [CapPtr; MSG_MAX_CAPS],
    /// Leases received; the first `info.leases()` are meaningful (filled by the transport).
    pub leases: [LeaseDesc; MSG_MAX_LEASES],
}

impl Message {
    /// An empty message with the given label (registers zeroed).
    #[inline(always)]
    pub fn new(label: u64) -> Self {
        Self { info: MessageInfo::try_new(label, 0, 0, 0).unwrap_or_default(), ..Self::default() }
    }

    /// Sets the info word, or reports that a count does not fit the ABI.
    #[inline(always)]
    pub fn set_info(
        &mut self,
        label: u64,
        len_words: usize,
        caps: usize,
        leases: usize,
    ) -> Result<(), crate::ProtocolError> {
        self.info =
            MessageInfo::try_new(label, len_words, caps, leases).ok_or(crate::ProtocolError::TooLarge)?;
        Ok(())
    }

    /// Turns this message into an empty reply with `label` (an error or protocol code).
    #[inline(always)]
    pub fn set_reply_label(&mut self, label: u64) {
        *self = Self::new(label);
    }
}
