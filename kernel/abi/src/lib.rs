//! The RamenOS system-call ABI: numbers, error codes and message layout.
//!
//! This crate is the single place where the shape of a message is defined. The kernel,
//! the user runtime and Foundry-generated stubs all take their constants from here, so
//! changing the number of message registers is a one-line change.
#![no_std]
#![forbid(unsafe_code)]

pub mod bootinfo;
pub mod invocation;
pub mod object;
pub mod slot;
pub mod syscall;

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

/// Where things live in a thread's IPC buffer, in 64-bit words from its start.
///
/// Message word `i` of a message longer than the registers is at word `i`: words
/// `0..MSG_REGS` travel in registers, and their buffer words are left alone by the
/// kernel (the runtime may keep its own data there). The sender names the
/// capabilities it transfers in [`ipc_buffer::SEND_CAPS`]; the receiver names where
/// received capabilities go in [`ipc_buffer::RECV_CNODE`], [`ipc_buffer::RECV_INDEX`]
/// and [`ipc_buffer::RECV_DEPTH`] (consecutive slots from that index). Leases are
/// two words each from [`ipc_buffer::LEASES`].
pub mod ipc_buffer {
    use super::{MSG_MAX_CAPS, MSG_MAX_LEASES, MSG_MAX_WORDS};

    /// Capability pointers (in the sender's CSpace) of the capabilities to transfer.
    pub const SEND_CAPS: usize = MSG_MAX_WORDS;
    /// A CNode capability pointer (in the receiver's CSpace) that received
    /// capabilities go into; the capability needs the write right.
    pub const RECV_CNODE: usize = SEND_CAPS + MSG_MAX_CAPS;
    /// The first slot index (in that CNode) for received capabilities.
    pub const RECV_INDEX: usize = RECV_CNODE + 1;
    /// The depth the index is resolved at, as for CNode operations.
    pub const RECV_DEPTH: usize = RECV_INDEX + 1;
    /// Leases: each is a start address and a word of length and access.
    pub const LEASES: usize = RECV_DEPTH + 1;
    /// Words the kernel reads or writes: everything above is the program's.
    pub const KERNEL_WORDS: usize = LEASES + 2 * MSG_MAX_LEASES;
    /// Words in the buffer.
    pub const WORDS: usize = super::IPC_BUFFER_BYTES / 8;

    const _: () = assert!(KERNEL_WORDS <= WORDS);
}

/// Leases: bulk buffers a call lends the server, pinned in place for the call.
///
/// A lease is two words in the caller's IPC buffer (`ipc_buffer::LEASES`): the start
/// address, then the length in bytes with [`lease::WRITABLE`] for read-write access.
/// The kernel pins the pages for the call, maps them into the receiver's lease window
/// (`invocation::thread::SET_LEASE_WINDOW`) and writes the same two words there,
/// with the address where the receiver sees the lease. The reply unmaps and unpins.
pub mod lease {
    /// In a lease's second word: the server may write.
    pub const WRITABLE: u64 = 1 << 63;
    /// In a lease's second word: the length in bytes.
    pub const LEN_MASK: u64 = (1 << 40) - 1;
    /// Longest lease.
    pub const MAX_BYTES: u64 = 64 << 20;
    /// Largest lease window.
    pub const MAX_WINDOW_BYTES: u64 = 1 << 30;
}

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

    /// True if the length and the lease count are within the maxima (the fields have
    /// room for more: 127 words, 7 leases); every message and invocation is checked.
    pub const fn within_limits(self) -> bool {
        self.len_words() <= MSG_MAX_WORDS && self.leases() <= MSG_MAX_LEASES
    }

    /// True if the message names capabilities or leases (both fields at once: they are
    /// adjacent), which only a message through an endpoint can carry.
    pub const fn names_caps_or_leases(self) -> bool {
        const _: () = assert!(MessageInfo::LEASES_SHIFT == MessageInfo::CAPS_SHIFT + MessageInfo::CAPS_BITS);
        (self.0 >> Self::CAPS_SHIFT) & ((1 << (Self::CAPS_BITS + Self::LEASES_BITS)) - 1) != 0
    }

    /// True if the message can take the register fastpath: it fits in the message
    /// registers and transfers neither capabilities nor leases.
    ///
    /// A message with any reserved bit set does not: the slow path, which rebuilds
    /// the info word from its fields, clears them, and both paths must deliver the
    /// same word (the same single mask test covers caps, leases and reserved bits).
    pub const fn fits_fastpath(self) -> bool {
        // The low 16 bits are the length (bits 0-6) under the capability count, the
        // lease count and the reserved bits (7-15): they are at most `MSG_REGS`
        // exactly when bits 7-15 are clear and the length fits. One compare.
        self.0 & 0xffff <= MSG_REGS as u64
    }

    /// True if the message transfers neither capabilities nor leases, has no
    /// reserved bit set and fits the IPC buffer: the kernel's fastpath then carries
    /// it, copying the words past the registers from buffer to buffer.
    pub const fn fits_words_only(self) -> bool {
        // As `fits_fastpath` (`MSG_MAX_WORDS` is below bit 7).
        self.0 & 0xffff <= MSG_MAX_WORDS as u64
    }
}

/// Why a system call failed: the value user space sees in the result register.
///
/// Zero means success and is not an `Error`. Codes are stable ABI: append new ones,
/// never renumber. Every kernel operation's documentation lists the codes it returns,
/// and a failing operation changes no state (decode, then invoke).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u64)]
pub enum Error {
    /// A capability pointer did not resolve: a guard mismatch, a depth that does not
    /// match the CNodes on the path, or a non-CNode capability part way.
    InvalidCapability = 1,
    /// The addressed slot holds no capability where one is needed (this is also what
    /// a second delete of the same slot returns).
    SlotEmpty = 2,
    /// The destination slot already holds a capability: delete it first.
    SlotOccupied = 3,
    /// The capability is of the wrong object type for the operation.
    WrongType = 4,
    /// The capability lacks a right the operation needs, or an operation asked for
    /// rights its source does not have.
    InsufficientRights = 5,
    /// An argument is malformed: an unknown object type, a badge where none may go.
    InvalidArgument = 6,
    /// A number is out of its allowed range: a slot offset, a size, a count, a depth.
    RangeError = 7,
    /// An address or size is not aligned as the object requires.
    AlignmentError = 8,
    /// The untyped memory has too little room left for the requested objects.
    NotEnoughMemory = 9,
    /// The operation is never allowed on this kind of capability (for example
    /// copying an untyped or reply capability).
    IllegalOperation = 10,
    /// A long operation (delete, revoke) did bounded work and stopped at a
    /// preemption point; calling it again continues where it left off.
    Preempted = 11,
    /// The resource is already taken (an IRQ line that already has a handler).
    Busy = 12,
    /// A mapping needs a page table that is not installed: install one first.
    MissingPageTable = 13,
    /// Something is already mapped (or a table installed) at that address.
    AlreadyMapped = 14,
    /// The thread is in the wrong state for the operation (for example configuring a
    /// thread that is running: suspend it first).
    WrongThreadState = 15,
    /// The system-call number is not one the kernel knows.
    UnknownSyscall = 16,
}

impl Error {
    /// The code as returned to user space.
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// The error with this code, or `None` for zero (success) and unknown codes.
    pub const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => Self::InvalidCapability,
            2 => Self::SlotEmpty,
            3 => Self::SlotOccupied,
            4 => Self::WrongType,
            5 => Self::InsufficientRights,
            6 => Self::InvalidArgument,
            7 => Self::RangeError,
            8 => Self::AlignmentError,
            9 => Self::NotEnoughMemory,
            10 => Self::IllegalOperation,
            11 => Self::Preempted,
            12 => Self::Busy,
            13 => Self::MissingPageTable,
            14 => Self::AlreadyMapped,
            15 => Self::WrongThreadState,
            16 => Self::UnknownSyscall,
            _ => return None,
        })
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
        let reserved = MessageInfo(MessageInfo::try_new(7, 1, 0, 0).unwrap().0 | 0x1000);
        assert!(!reserved.fits_fastpath(), "reserved bits go the slow way, which clears them");
    }

    #[test]
    fn fast_shape_tests_mean_what_their_fields_say() {
        // Every value of the low 16 bits (the label above them does not matter), with
        // and without a label: the one-compare tests agree with the field-by-field
        // definitions.
        for low in 0..=0xffffu64 {
            for label in [0, 0xABCDE] {
                let info = MessageInfo(label << 16 | low);
                let clean = low & 0xff80 == 0;
                assert_eq!(info.fits_fastpath(), clean && info.len_words() <= MSG_REGS, "{low:#x}");
                assert_eq!(info.fits_words_only(), clean && info.len_words() <= MSG_MAX_WORDS, "{low:#x}");
                assert_eq!(info.names_caps_or_leases(), info.caps() > 0 || info.leases() > 0, "{low:#x}");
                let within = info.len_words() <= MSG_MAX_WORDS && info.leases() <= MSG_MAX_LEASES;
                assert_eq!(info.within_limits(), within, "{low:#x}");
            }
        }
    }

    #[test]
    fn error_codes_round_trip_and_zero_is_success() {
        assert_eq!(Error::from_code(0), None);
        for code in 1..=16 {
            assert_eq!(Error::from_code(code).map(Error::code), Some(code));
        }
        assert_eq!(Error::from_code(17), None);
    }

    #[test]
    fn message_info_rejects_fields_that_do_not_fit() {
        assert!(MessageInfo::try_new(MessageInfo::MAX_LABEL + 1, 0, 0, 0).is_none());
        assert!(MessageInfo::try_new(0, MSG_MAX_WORDS + 1, 0, 0).is_none());
        assert!(MessageInfo::try_new(0, 0, MSG_MAX_CAPS + 1, 0).is_none());
        assert!(MessageInfo::try_new(0, 0, 0, MSG_MAX_LEASES + 1).is_none());
    }
}
