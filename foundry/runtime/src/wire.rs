//! The wire codec: values laid out as little-endian bytes across the message words.
//!
//! A payload is a byte stream mapped onto message words: byte `i` is bits
//! `8 * (i % 8)..` of word `i / 8`, words `0..MSG_REGS` in registers, the rest in the IPC
//! buffer. Each scalar is aligned to its own size (so it never straddles a word), in
//! declaration order; a bounded sequence is a `u16` length followed by its elements.
//! The compiler mirrors these rules to compute each message's size at compile time.

use core::fmt;

use ramen_abi::MSG_REGS;

use crate::ProtocolError;

const WORD_BYTES: usize = 8;

#[inline(always)]
const fn align_up(pos: usize, size: usize) -> usize {
    (pos + size - 1) & !(size - 1)
}

/// Writes a payload into the registers and, past them, the IPC buffer.
///
/// Writing never fails on the spot: a write past the end sets a flag that
/// [`Writer::finish`] reports, so generated encoders are straight-line code.
#[derive(Debug)]
pub struct Writer<'a> {
    regs: &'a mut [u64; MSG_REGS],
    overflow: &'a mut [u64],
    pos: usize,
    len_words: usize,
    too_large: bool,
}

impl<'a> Writer<'a> {
    /// A writer over the registers and `overflow` (pass `&mut []` for a message the
    /// compiler has proven fits the registers: the IPC buffer is then never touched).
    #[inline(always)]
    pub fn new(regs: &'a mut [u64; MSG_REGS], overflow: &'a mut [u64]) -> Self {
        Self { regs, overflow, pos: 0, len_words: 0, too_large: false }
    }

    #[inline(always)]
    fn word(&mut self, index: usize) -> Option<&mut u64> {
        match index.checked_sub(MSG_REGS) {
            None => self.regs.get_mut(index),
            Some(past) => self.overflow.get_mut(past),
        }
    }

    /// Writes the low `size_bytes` bytes of `value` (1, 2, 4 or 8) at the next aligned slot.
    #[inline(always)]
    pub fn put(&mut self, value: u64, size_bytes: usize) {
        let pos = align_up(self.pos, size_bytes);
        let index = pos / WORD_BYTES;
        while self.len_words <= index {
            let fresh = self.len_words;
            match self.word(fresh) {
                Some(word) => *word = 0,
                None => {
                    self.too_large = true;
                    return;
                }
            }
            self.len_words += 1;
        }
        let mask = if size_bytes >= WORD_BYTES { u64::MAX } else { (1u64 << (size_bytes * 8)) - 1 };
        let shift = (pos % WORD_BYTES) * 8;
        if let Some(word) = self.word(index) {
            *word |= (value & mask) << shift;
        }
        self.pos = pos + size_bytes;
    }

    /// Writes raw bytes, one per slot.
    #[inline]
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.put(u64::from(byte), 1);
        }
    }

    /// The payload length in words, or [`ProtocolError::TooLarge`] if it did not fit.
    #[inline(always)]
    pub fn finish(self) -> Result<usize, ProtocolError> {
        if self.too_large { Err(ProtocolError::TooLarge) } else { Ok(self.len_words) }
    }
}

/// Reads a payload back; every read is bounds-checked against the message length.
#[derive(Debug)]
pub struct Reader<'a> {
    regs: &'a [u64; MSG_REGS],
    overflow: &'a [u64],
    len_words: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a message of `len_words` words (from the info word, untrusted).
    #[inline(always)]
    pub fn new(regs: &'a [u64; MSG_REGS], overflow: &'a [u64], len_words: usize) -> Self {
        Self { regs, overflow, len_words, pos: 0 }
    }

    /// Reads `size_bytes` bytes (1, 2, 4 or 8) from the next aligned slot.
    #[inline(always)]
    pub fn get(&mut self, size_bytes: usize) -> Result<u64, ProtocolError> {
        let pos = align_up(self.pos, size_bytes);
        let index = pos / WORD_BYTES;
        if index >= self.len_words {
            return Err(ProtocolError::Truncated);
        }
        let word = match index.checked_sub(MSG_REGS) {
            None => self.regs.get(index),
            Some(past) => self.overflow.get(past),
        }
        .ok_or(ProtocolError::Truncated)?;
        let mask = if size_bytes >= WORD_BYTES { u64::MAX } else { (1u64 << (size_bytes * 8)) - 1 };
        self.pos = pos + size_bytes;
        Ok((word >> ((pos % WORD_BYTES) * 8)) & mask)
    }

    /// Checks that the payload ended exactly at the last word.
    #[inline(always)]
    pub fn finish(self) -> Result<(), ProtocolError> {
        if self.pos.div_ceil(WORD_BYTES) == self.len_words {
            Ok(())
        } else {
            Err(ProtocolError::TrailingData)
        }
    }
}

/// A type with a wire encoding. Implemented here for scalars, arrays and bounded
/// sequences, and by generated code for contract structs and enums.
pub trait Wire: Sized {
    /// Appends the encoding of `self`.
    fn encode(&self, writer: &mut Writer<'_>);
    /// Reads a value back, rejecting anything the type forbids.
    fn decode(reader: &mut Reader<'_>) -> Result<Self, ProtocolError>;
    /// Some valid value, used to fill arrays while decoding (never observable).
    fn placeholder() -> Self;
}

macro_rules! wire_int {
    ($($ty:ty => $unsigned:ty),* $(,)?) => {$(
        impl Wire for $ty {
            #[inline(always)]
            fn encode(&self, writer: &mut Writer<'_>) {
                writer.put(u64::from(*self as $unsigned), size_of::<$ty>());
            }
            #[inline(always)]
            fn decode(reader: &mut Reader<'_>) -> Result<Self, ProtocolError> {
                let raw = reader.get(size_of::<$ty>())?;
                let unsigned = <$unsigned>::try_from(raw).map_err(|_| ProtocolError::InvalidValue)?;
                Ok(unsigned as $ty)
            }
            fn placeholder() -> Self {
                0
            }
        }
    )*};
}

wire_int!(u8 => u8, u16 => u16, u32 => u32, u64 => u64, i8 => u8, i16 => u16, i32 => u32, i64 => u64);

impl Wire for bool {
    #[inline(always)]
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.put(u64::from(*self), 1);
    }
    #[inline(always)]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        match reader.get(1)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtocolError::InvalidValue),
        }
    }
    fn placeholder() -> Self {
        false
    }
}

impl<T: Wire, const N: usize> Wire for [T; N] {
    #[inline]
    fn encode(&self, writer: &mut Writer<'_>) {
        for item in self {
            item.encode(writer);
        }
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let mut failure = None;
        let items = core::array::from_fn(|_| {
            if failure.is_none() {
                match T::decode(reader) {
                    Ok(item) => return item,
                    Err(error) => failure = Some(error),
                }
            }
            T::placeholder()
        });
        match failure {
            None => Ok(items),
            Some(error) => Err(error),
        }
    }
    fn placeholder() -> Self {
        core::array::from_fn(|_| T::placeholder())
    }
}

/// At most `N` bytes, stored inline (`bytes<N>` in a contract).
#[derive(Clone, Copy)]
pub struct BoundedBytes<const N: usize> {
    len: usize,
    bytes: [u8; N],
}

impl<const N: usize> BoundedBytes<N> {
    /// The bound.
    pub const MAX_LEN: usize = N;

    /// An empty sequence.
    pub const fn new() -> Self {
        Self { len: 0, bytes: [0; N] }
    }

    /// A copy of `bytes`, or `None` if it is longer than `N`.
    pub fn try_from_slice(bytes: &[u8]) -> Option<Self> {
        let mut out = Self::new();
        out.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        out.len = bytes.len();
        Some(out)
    }

    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// Number of bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> Default for BoundedBytes<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> PartialEq for BoundedBytes<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> Eq for BoundedBytes<N> {}

impl<const N: usize> fmt::Debug for BoundedBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl<const N: usize> Wire for BoundedBytes<N> {
    #[inline]
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.put(self.len as u64, 2);
        writer.put_bytes(self.as_slice());
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let len = usize::try_from(reader.get(2)?).map_err(|_| ProtocolError::InvalidValue)?;
        let mut out = Self::new();
        let slots = out.bytes.get_mut(..len).ok_or(ProtocolError::InvalidValue)?;
        for slot in slots {
            *slot = reader.get(1)? as u8;
        }
        out.len = len;
        Ok(out)
    }
    fn placeholder() -> Self {
        Self::new()
    }
}

/// A UTF-8 string of at most `N` bytes, stored inline (`string<N>` in a contract).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct BoundedStr<const N: usize> {
    bytes: BoundedBytes<N>,
}

impl<const N: usize> BoundedStr<N> {
    /// The bound, in bytes.
    pub const MAX_LEN: usize = N;

    /// An empty string.
    pub const fn new() -> Self {
        Self { bytes: BoundedBytes::new() }
    }

    /// A copy of `text`, or `None` if it is longer than `N` bytes.
    pub fn try_from_str(text: &str) -> Option<Self> {
        Some(Self { bytes: BoundedBytes::try_from_slice(text.as_bytes())? })
    }

    /// The string held.
    pub fn as_str(&self) -> &str {
        // Always valid: built from a `&str` or checked by `decode`.
        core::str::from_utf8(self.bytes.as_slice()).unwrap_or("")
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True if the string is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl<const N: usize> fmt::Debug for BoundedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> Wire for BoundedStr<N> {
    #[inline]
    fn encode(&self, writer: &mut Writer<'_>) {
        self.bytes.encode(writer);
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let bytes = BoundedBytes::decode(reader)?;
        core::str::from_utf8(bytes.as_slice()).map_err(|_| ProtocolError::InvalidValue)?;
        Ok(Self { bytes })
    }
    fn placeholder() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ramen_abi::MSG_MAX_WORDS;

    const OVERFLOW: usize = MSG_MAX_WORDS - MSG_REGS;

    fn round_trip<T: Wire + PartialEq + fmt::Debug>(value: &T) {
        let mut regs = [0; MSG_REGS];
        let mut overflow = [0; OVERFLOW];
        let mut writer = Writer::new(&mut regs, &mut overflow);
        value.encode(&mut writer);
        let len = writer.finish().unwrap();
        let mut reader = Reader::new(&regs, &overflow, len);
        assert_eq!(&T::decode(&mut reader).unwrap(), value);
        reader.finish().unwrap();
    }

    #[test]
    fn scalars_pack_by_natural_alignment() {
        let mut regs = [0; MSG_REGS];
        let mut writer = Writer::new(&mut regs, &mut []);
        1u8.encode(&mut writer);
        0x2222u16.encode(&mut writer);
        0x3333_3333u32.encode(&mut writer);
        true.encode(&mut writer);
        7u64.encode(&mut writer);
        assert_eq!(writer.finish(), Ok(3));
        assert_eq!(regs[..3], [0x3333_3333_2222_0001, 1, 7]);
    }

    #[test]
    fn writing_past_the_registers_without_a_buffer_is_reported() {
        let mut regs = [0; MSG_REGS];
        let mut writer = Writer::new(&mut regs, &mut []);
        [5u64; MSG_REGS + 1].encode(&mut writer);
        assert_eq!(writer.finish(), Err(ProtocolError::TooLarge));
    }

    #[test]
    fn decoding_rejects_bad_values_and_trailing_words() {
        let regs = [2, 0, 0, 0, 0, 0];
        assert_eq!(bool::decode(&mut Reader::new(&regs, &[], 1)), Err(ProtocolError::InvalidValue));
        assert_eq!(u64::decode(&mut Reader::new(&regs, &[], 0)), Err(ProtocolError::Truncated));
        let mut reader = Reader::new(&regs, &[], 2);
        u64::decode(&mut reader).unwrap();
        assert_eq!(reader.finish(), Err(ProtocolError::TrailingData));
        let too_long = [9, 0, 0, 0, 0, 0];
        assert_eq!(
            BoundedBytes::<8>::decode(&mut Reader::new(&too_long, &[], 2)),
            Err(ProtocolError::InvalidValue)
        );
    }

    proptest! {
        #[test]
        fn scalars_and_sequences_round_trip(
            a in any::<i8>(), b in any::<u16>(), c in any::<i32>(), d in any::<u64>(),
            e in any::<bool>(), bytes in proptest::collection::vec(any::<u8>(), 0..=200),
            text in "\\PC{0,40}",
        ) {
            round_trip(&a);
            round_trip(&b);
            round_trip(&c);
            round_trip(&d);
            round_trip(&e);
            round_trip(&[c, c.wrapping_add(1), 3]);
            round_trip(&BoundedBytes::<200>::try_from_slice(&bytes).unwrap());
            if let Some(text) = BoundedStr::<160>::try_from_str(&text) {
                round_trip(&text);
            }
        }

        #[test]
        fn random_words_never_panic_the_decoders(
            regs in any::<[u64; MSG_REGS]>(),
            overflow in proptest::collection::vec(any::<u64>(), 0..OVERFLOW),
            len in 0usize..128,
        ) {
            let _ = BoundedStr::<300>::decode(&mut Reader::new(&regs, &overflow, len));
            let _ = <[i16; 9]>::decode(&mut Reader::new(&regs, &overflow, len));
            let mut reader = Reader::new(&regs, &overflow, len);
            if BoundedBytes::<64>::decode(&mut reader).is_ok() {
                let _ = reader.finish();
            }
        }
    }
}
