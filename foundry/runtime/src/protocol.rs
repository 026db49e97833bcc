//! Reply labels: success, contract errors, and the reserved protocol errors.
//!
//! A reply's label says how the call went:
//!
//! | label | meaning |
//! | --- | --- |
//! | `0` ([`LABEL_OK`]) | success; the payload holds the results |
//! | `1..=u32::MAX` | the method's declared error: the discriminant of its error enum |
//! | [`PROTOCOL_LABEL_BASE`]` + n` | a [`ProtocolError`]: the request was not understood |
//!
//! Contract error discriminants are at most 32 bits wide and never zero (the compiler
//! checks both), so the three ranges never overlap.

use ramen_abi::MessageInfo;

use crate::TransportError;

/// Reply label for a successful call.
pub const LABEL_OK: u64 = 0;

/// First reserved protocol-error label: the top 256 labels of the 48-bit label space.
pub const PROTOCOL_LABEL_BASE: u64 = MessageInfo::MAX_LABEL - 0xFF;

/// Why a message could not be decoded or served. The same set describes a bad request
/// (the server replies with [`ProtocolError::label`]) and a bad reply (the client returns
/// [`ClientError::Malformed`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum ProtocolError {
    /// The request label names no method of this interface.
    UnknownOrdinal = 0,
    /// The message ended before all fields were read.
    Truncated = 1,
    /// The message carries words after the last field.
    TrailingData = 2,
    /// A field holds a value its type forbids (a bool that is not 0 or 1, an unknown
    /// enum discriminant, a length over the bound, a string that is not UTF-8).
    InvalidValue = 3,
    /// The message carries a different number of capabilities than the method declares.
    WrongCaps = 4,
    /// The message carries a different number of leases, or leases with other rights.
    WrongLeases = 5,
    /// The encoded message does not fit in `MSG_MAX_WORDS` (the compiler rules this out
    /// for generated code; kept so a bug cannot become a panic).
    TooLarge = 6,
    /// The reply label is neither success, a declared error, nor a known protocol error.
    UnknownLabel = 7,
}

impl ProtocolError {
    const ALL: [Self; 8] = [
        Self::UnknownOrdinal,
        Self::Truncated,
        Self::TrailingData,
        Self::InvalidValue,
        Self::WrongCaps,
        Self::WrongLeases,
        Self::TooLarge,
        Self::UnknownLabel,
    ];

    /// The reply label that reports this error.
    pub const fn label(self) -> u64 {
        PROTOCOL_LABEL_BASE + self as u64
    }

    /// The protocol error a reply label reports, if it is one.
    pub fn from_label(label: u64) -> Option<Self> {
        let index = usize::try_from(label.checked_sub(PROTOCOL_LABEL_BASE)?).ok()?;
        Self::ALL.get(index).copied()
    }
}

/// A contract's error enum, which travels as the reply label.
pub trait ErrorEnum: Sized + Copy {
    /// The reply label (the enum's discriminant, never zero).
    fn label(self) -> u64;
    /// The error a reply label names, if any.
    fn from_label(label: u64) -> Option<Self>;
}

/// Why a client call failed (as opposed to the server answering with a contract error).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClientError {
    /// The transport could not deliver the message or the reply.
    Transport(TransportError),
    /// The server rejected the request with a protocol error.
    Rejected(ProtocolError),
    /// The reply itself was malformed.
    Malformed(ProtocolError),
}

impl ClientError {
    /// The error for a reply whose label is neither success nor a declared error.
    pub fn from_reply_label(label: u64) -> Self {
        match ProtocolError::from_label(label) {
            Some(error) => Self::Rejected(error),
            None => Self::Malformed(ProtocolError::UnknownLabel),
        }
    }
}

impl From<TransportError> for ClientError {
    fn from(error: TransportError) -> Self {
        Self::Transport(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_labels_round_trip_and_fit_the_label_field() {
        for error in ProtocolError::ALL {
            assert_eq!(ProtocolError::from_label(error.label()), Some(error));
            assert!(error.label() <= MessageInfo::MAX_LABEL);
            assert!(error.label() > u64::from(u32::MAX));
        }
        assert_eq!(ProtocolError::from_label(LABEL_OK), None);
        assert_eq!(ProtocolError::from_label(u64::MAX), None);
    }
}
