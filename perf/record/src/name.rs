//! Thread names as a [`EventKind::ThreadName`](crate::EventKind::ThreadName) record
//! carries them: up to [`ThreadName::MAX_BYTES`] bytes of UTF-8 in the record's two
//! argument words, little-endian, zero-padded.
//!
//! A name holds no NUL byte, so the padding is unambiguous and a record's arguments
//! decode to exactly the name that was recorded.
//!
//! User labels can name themselves the same way: [`inline_label`] packs up to eight
//! bytes of text into the label id, so a program needs no label table and the
//! exporter shows the text (ids that are not printable text show as numbers).

/// A user label id that carries its own text: the first eight bytes of `text`,
/// little-endian, zero-padded (so `"call"` is `u64::from_le_bytes(*b"call\0\0\0\0")`).
/// Longer text is cut to eight bytes.
pub const fn inline_label(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut id = 0u64;
    let mut i = 0;
    while i < bytes.len() && i < 8 {
        id |= (bytes[i] as u64) << (8 * i);
        i += 1;
    }
    id
}

/// A thread's name, at most [`ThreadName::MAX_BYTES`] bytes of UTF-8 without NUL.
/// `Default` is the empty name (an unnamed thread).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ThreadName {
    bytes: [u8; ThreadName::MAX_BYTES],
    len: u8,
}

impl ThreadName {
    /// Longest name: the two argument words of a record.
    pub const MAX_BYTES: usize = 16;

    /// The empty name.
    pub const EMPTY: Self = Self { bytes: [0; Self::MAX_BYTES], len: 0 };

    /// `bytes` as a name, or `None` if it is longer than [`Self::MAX_BYTES`], not
    /// UTF-8, or holds a NUL byte.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > Self::MAX_BYTES || bytes.contains(&0) || core::str::from_utf8(bytes).is_err() {
            return None;
        }
        let mut name = Self::EMPTY;
        name.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        name.len = bytes.len() as u8;
        Some(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or(&[]);
        // `new` and `from_args` admit only UTF-8.
        core::str::from_utf8(bytes).unwrap_or("")
    }

    /// True for the empty name.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The record arguments that carry the name.
    pub fn to_args(&self) -> [u64; 2] {
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = self.bytes;
        [
            u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        ]
    }

    /// The name a record's arguments carry, or `None` if they are not a name (bytes
    /// after the first NUL that are not NUL, or not UTF-8).
    pub fn from_args(args: [u64; 2]) -> Option<Self> {
        let [a, b] = args.map(u64::to_le_bytes);
        let mut bytes = [0u8; Self::MAX_BYTES];
        bytes[..8].copy_from_slice(&a);
        bytes[8..].copy_from_slice(&b);
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(Self::MAX_BYTES);
        if bytes[len..].iter().any(|&b| b != 0) {
            return None;
        }
        Self::new(&bytes[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_bounded_utf8_without_nul() {
        assert_eq!(
            ThreadName::new(b"pingpong").map(|n| n.to_args()),
            Some([u64::from_le_bytes(*b"pingpong"), 0])
        );
        assert!(ThreadName::new(b"exactly16bytes!!").is_some());
        assert!(ThreadName::new(b"seventeen bytes!!").is_none());
        assert!(ThreadName::new(b"nul\0inside").is_none());
        assert!(ThreadName::new(&[0xff]).is_none());
        assert!(ThreadName::new(b"").is_some_and(|n| n.is_empty() && n == ThreadName::EMPTY));
    }

    #[test]
    fn inline_labels_pack_the_first_eight_bytes() {
        assert_eq!(inline_label("call"), u64::from_le_bytes(*b"call\0\0\0\0"));
        assert_eq!(inline_label("requests_in_flight"), u64::from_le_bytes(*b"requests"));
        assert_eq!(inline_label(""), 0);
    }

    #[test]
    fn arguments_with_bytes_after_the_padding_are_not_a_name() {
        assert_eq!(ThreadName::from_args([u64::from_le_bytes(*b"ab\0\0\0\0\0\0"), 1]), None);
        assert_eq!(ThreadName::from_args([0, 0]), Some(ThreadName::EMPTY));
    }

    proptest! {
        #[test]
        fn names_round_trip_through_record_arguments(name in "[^\u{0}]{0,16}") {
            if let Some(thread_name) = ThreadName::new(name.as_bytes()) {
                prop_assert_eq!(thread_name.as_str(), name.as_str());
                prop_assert_eq!(ThreadName::from_args(thread_name.to_args()), Some(thread_name));
            } else {
                prop_assert!(name.len() > ThreadName::MAX_BYTES);
            }
        }
    }
}
