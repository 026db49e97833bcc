//! The RamenOS system-call ABI: numbers, error codes and message layout.
//!
//! This crate is the single place where the shape of a message is defined. The kernel,
//! the user runtime and Foundry-generated stubs all take their constants from here, so
//! changing the number of message registers is a one-line change.
#![no_std]
#![forbid(unsafe_code)]

/// Message words passed in CPU registers on every IPC (the fastpath carries exactly
/// these; seL4's x86_64 fastpath carries 4).
pub const MSG_REGS: usize = 6;

/// Size of the per-thread IPC buffer, one 4 KiB page.
pub const IPC_BUFFER_BYTES: usize = 4096;

/// Message words a message may carry in all: the registers, then the IPC buffer.
pub const MSG_MAX_WORDS: usize = 120;

/// Capabilities one message may transfer (slow path only).
pub const MSG_MAX_CAPS: usize = 3;

/// Leases (pinned bulk buffers) one call may carry.
pub const MSG_MAX_LEASES: usize = 4;

/// The message-info word that accompanies every message.
///
/// Layout (bit ranges, low to high): `0..7` length in words, `7..9` capabilities
/// transferred, `9..12` leases, `12..16` reserved (zero), `16..64` label. The label is
/// free for the protocol: Foundry puts the method ordinal there in a request and the
/// result code in a reply.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MessageInfo(pub u64);

impl MessageInfo {
    const LEN_BITS: u32 = 7;
    const CAPS_SHIFT: u32 = 7;
    const CAPS_BITS: u32 = 2;
    const LEASES_SHIFT: u32 = 9;
    const LEASES_BITS: u32 = 3;
    const LABEL_SHIFT: u32 = 16;
    /// Largest label that fits.
    pub const MAX_LABEL: u64 = (1 << (64 - Self::LABEL_SHIFT)) - 1;

    /// Builds a message-info word, or `None` if a field does not fit.
    pub const fn try_new(label: u64, len_words: usize, caps: usize, leases: usize) -> Option<Self> {
        if label > Self::MAX_LABEL
            || len_words > MSG_MAX_WORDS
            || caps > MSG_MAX_CAPS
            || leases > MSG_MAX_LEASES
        {
            return None;
        }
        Some(Self(
            (label << Self::LABEL_SHIFT)
                | ((leases as u64) << Self::LEASES_SHIFT)
                | ((caps as u64) << Self::CAPS_SHIFT)
                | len_words as u64,
        ))
    }

    /// The protocol label.
    pub const fn label(self) -> u64 {
        self.0 >> Self::LABEL_SHIFT
    }

    /// Message length in words (registers first, then the IPC buffer).
    pub const fn len_words(self) -> usize {
        (self.0 & ((1 << Self::LEN_BITS) - 1)) as usize
    }

    /// Capabilities transferred with the message.
    pub const fn caps(self) -> usize {
        ((self.0 >> Self::CAPS_SHIFT) & ((1 << Self::CAPS_BITS) - 1)) as usize
    }

    /// Leases carried by the call.
    pub const fn leases(self) -> usize {
        ((self.0 >> Self::LEASES_SHIFT) & ((1 << Self::LEASES_BITS) - 1)) as usize
    }

    /// True if the message can take the register fastpath: it fits in the message
    /// registers and transfers neither capabilities nor leases.
    pub const fn fits_fastpath(self) -> bool {
        self.len_words() <= MSG_REGS && self.caps() == 0 && self.leases() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_info_round_trips_every_field() {
        let info = MessageInfo::try_new(0xABCDE, 9, 2, 3).unwrap();
        assert_eq!((info.label(), info.len_words(), info.caps(), info.leases()), (0xABCDE, 9, 2, 3));
        assert!(!info.fits_fastpath());
        assert!(MessageInfo::try_new(7, MSG_REGS, 0, 0).unwrap().fits_fastpath());
    }

    #[test]
    fn message_info_rejects_fields_that_do_not_fit() {
        assert!(MessageInfo::try_new(MessageInfo::MAX_LABEL + 1, 0, 0, 0).is_none());
        assert!(MessageInfo::try_new(0, MSG_MAX_WORDS + 1, 0, 0).is_none());
        assert!(MessageInfo::try_new(0, 0, MSG_MAX_CAPS + 1, 0).is_none());
        assert!(MessageInfo::try_new(0, 0, 0, MSG_MAX_LEASES + 1).is_none());
    }
}
