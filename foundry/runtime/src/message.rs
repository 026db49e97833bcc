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

/// The info-word bits that give a message's shape: length, capability and lease counts
/// (`ramen_abi::MessageInfo` bits `0..12`; the label and the reserved bits are not part
/// of it). A test ties this to the ABI's accessors.
const SHAPE_MASK: u64 = 0xfff;

/// Checks that a message has exactly `len_words` words, `caps` capabilities and `leases`
/// leases, as every message of a fixed-size layout does: one mask and one compare on the
/// usual path, so that decoding it needs no further length checks.
///
/// The error is the one a field-by-field decode would meet first: capabilities, then
/// leases, then the length ([`ProtocolError::Truncated`] if short,
/// [`ProtocolError::TrailingData`] if long).
#[inline(always)]
pub fn check_shape(
    info: MessageInfo,
    len_words: usize,
    caps: usize,
    leases: usize,
) -> Result<(), crate::ProtocolError> {
    // A shape the ABI cannot express never matches (no masked word is `u64::MAX`).
    let expected = MessageInfo::try_new(0, len_words, caps, leases).map_or(u64::MAX, |shape| shape.0);
    if info.0 & SHAPE_MASK == expected { Ok(()) } else { Err(shape_error(info, len_words, caps, leases)) }
}

/// The reserved info-word bits (`12..16`), which no accessor reads.
const RESERVED_MASK: u64 = 0xf000;

/// True if `info` has exactly this label and shape (reserved bits aside): the usual
/// reply of a fixed-size layout, recognised in one mask and one compare. Anything else
/// goes through the label and [`check_shape`] to find out what is wrong.
#[inline(always)]
pub fn has_label_and_shape(
    info: MessageInfo,
    label: u64,
    len_words: usize,
    caps: usize,
    leases: usize,
) -> bool {
    // An info word the ABI cannot express never matches (no masked word is `u64::MAX`).
    let expected = MessageInfo::try_new(label, len_words, caps, leases).map_or(u64::MAX, |info| info.0);
    info.0 & !RESERVED_MASK == expected
}

#[cold]
#[inline(never)]
fn shape_error(info: MessageInfo, len_words: usize, caps: usize, leases: usize) -> crate::ProtocolError {
    use crate::ProtocolError;
    if info.caps() != caps {
        ProtocolError::WrongCaps
    } else if info.leases() != leases {
        ProtocolError::WrongLeases
    } else if info.len_words() < len_words {
        ProtocolError::Truncated
    } else {
        ProtocolError::TrailingData
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProtocolError;

    #[test]
    fn the_shape_mask_covers_exactly_length_caps_and_leases() {
        let all = MessageInfo(SHAPE_MASK);
        assert_eq!((all.len_words(), all.caps(), all.leases(), all.label()), (127, 3, 7, 0));
        let rest = MessageInfo(!SHAPE_MASK);
        assert_eq!((rest.len_words(), rest.caps(), rest.leases()), (0, 0, 0));
        let reserved = MessageInfo(RESERVED_MASK);
        assert_eq!(
            (reserved.len_words(), reserved.caps(), reserved.leases(), reserved.label()),
            (0, 0, 0, 0)
        );
        assert_eq!(SHAPE_MASK & RESERVED_MASK, 0);
    }

    #[test]
    fn label_and_shape_are_matched_together() {
        let info = MessageInfo::try_new(0, 6, 0, 0).unwrap();
        assert!(has_label_and_shape(info, 0, 6, 0, 0));
        assert!(has_label_and_shape(MessageInfo(info.0 | RESERVED_MASK), 0, 6, 0, 0));
        assert!(!has_label_and_shape(info, 1, 6, 0, 0));
        assert!(!has_label_and_shape(info, 0, 5, 0, 0));
        assert!(!has_label_and_shape(info, 0, 6, 1, 0));
        assert!(!has_label_and_shape(MessageInfo(u64::MAX), 0, 6, 0, 0));
    }

    #[test]
    fn shapes_are_checked_in_decode_order() {
        let info = |len, caps, leases| MessageInfo::try_new(0x77, len, caps, leases).unwrap();
        assert_eq!(check_shape(info(6, 1, 2), 6, 1, 2), Ok(()));
        assert_eq!(check_shape(info(0, 0, 0), 0, 0, 0), Ok(()));
        assert_eq!(check_shape(info(5, 0, 1), 6, 1, 2), Err(ProtocolError::WrongCaps));
        assert_eq!(check_shape(info(5, 1, 1), 6, 1, 2), Err(ProtocolError::WrongLeases));
        assert_eq!(check_shape(info(5, 1, 2), 6, 1, 2), Err(ProtocolError::Truncated));
        assert_eq!(check_shape(info(7, 1, 2), 6, 1, 2), Err(ProtocolError::TrailingData));
        // The reserved bits are ignored, as the accessors ignore them.
        assert_eq!(check_shape(MessageInfo(info(6, 0, 0).0 | 0xf000), 6, 0, 0), Ok(()));
    }
}
