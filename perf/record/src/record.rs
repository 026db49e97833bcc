//! The fixed-size trace record and its little-endian encoding.

/// Bytes one record occupies in memory and on the wire.
///
/// 32 bytes is a power of two (ring slots are found with a shift), half a cache line
/// (a record never straddles two lines when the buffer is 32-byte aligned), and
/// leaves room for two full 64-bit arguments, enough for an address plus an error
/// code or a flow id plus a packed peer description.
pub const RECORD_SIZE_BYTES: usize = 32;

/// Thread id the kernel reports while a core runs no thread (idle loop, early boot).
pub const IDLE_THREAD: u32 = 0;

/// One trace event.
///
/// Field order is the wire order: `tsc` first so that every field is naturally
/// aligned in the `repr(C)` layout (8 + 2 + 2 + 4 + 16 = 32 bytes, no padding).
/// `kind` is kept raw so that a record from a newer producer still decodes; use
/// [`Record::event_kind`] to interpret it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C, align(8))]
pub struct Record {
    /// Time stamp counter of `cpu` when the event happened (not yet offset-corrected).
    pub tsc: u64,
    /// Raw [`crate::EventKind`] value.
    pub kind: u16,
    /// Core that recorded the event.
    pub cpu: u16,
    /// Thread running on `cpu` when the event happened ([`IDLE_THREAD`] if none).
    pub thread: u32,
    /// Kind-specific arguments; see [`crate::EventKind`] for their meaning.
    pub args: [u64; 2],
}

const _: () = assert!(core::mem::size_of::<Record>() == RECORD_SIZE_BYTES);
const _: () = assert!(core::mem::align_of::<Record>() == 8);

/// Byte offsets of the fields in the encoded form.
const TSC_AT: usize = 0;
const KIND_AT: usize = 8;
const CPU_AT: usize = 10;
const THREAD_AT: usize = 12;
const ARG0_AT: usize = 16;
const ARG1_AT: usize = 24;

impl Record {
    /// An all-zero record, used to initialise ring storage.
    pub const EMPTY: Record = Record { tsc: 0, kind: 0, cpu: 0, thread: 0, args: [0; 2] };

    /// Builds a record of a known kind.
    #[inline(always)]
    pub const fn new(kind: crate::EventKind, cpu: u16, thread: u32, tsc: u64, args: [u64; 2]) -> Self {
        Record { tsc, kind: kind as u16, cpu, thread, args }
    }

    /// The second word of a record as a ring slot keeps it: `kind | cpu << 16 |
    /// thread << 32` (the encoded form's bytes 8..16 read as one little-endian word).
    /// A recorder that keeps `cpu << 16 | thread << 32` at hand ORs in the kind.
    #[inline(always)]
    pub const fn head(kind: u16, cpu: u16, thread: u32) -> u64 {
        kind as u64 | (cpu as u64) << 16 | (thread as u64) << 32
    }

    /// The inverse of [`Record::head`]: `(kind, cpu, thread)`.
    pub const fn split_head(head: u64) -> (u16, u16, u32) {
        (head as u16, (head >> 16) as u16, (head >> 32) as u32)
    }

    /// The event kind, or `None` if `kind` is not one this version knows.
    pub const fn event_kind(&self) -> Option<crate::EventKind> {
        crate::EventKind::from_raw(self.kind)
    }

    /// Encodes the record as little-endian bytes.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE_BYTES] {
        let mut out = [0u8; RECORD_SIZE_BYTES];
        out[TSC_AT..KIND_AT].copy_from_slice(&self.tsc.to_le_bytes());
        out[KIND_AT..CPU_AT].copy_from_slice(&self.kind.to_le_bytes());
        out[CPU_AT..THREAD_AT].copy_from_slice(&self.cpu.to_le_bytes());
        out[THREAD_AT..ARG0_AT].copy_from_slice(&self.thread.to_le_bytes());
        out[ARG0_AT..ARG1_AT].copy_from_slice(&self.args[0].to_le_bytes());
        out[ARG1_AT..].copy_from_slice(&self.args[1].to_le_bytes());
        out
    }

    /// Decodes a record from little-endian bytes. Any bit pattern is a record; whether
    /// its kind is known is for the caller to check.
    pub fn from_bytes(bytes: &[u8; RECORD_SIZE_BYTES]) -> Self {
        let (tsc, rest) = bytes.split_at(KIND_AT);
        let (kind, rest) = rest.split_at(CPU_AT - KIND_AT);
        let (cpu, rest) = rest.split_at(THREAD_AT - CPU_AT);
        let (thread, rest) = rest.split_at(ARG0_AT - THREAD_AT);
        let (arg0, arg1) = rest.split_at(ARG1_AT - ARG0_AT);
        Record {
            tsc: u64::from_le_bytes(array(tsc)),
            kind: u16::from_le_bytes(array(kind)),
            cpu: u16::from_le_bytes(array(cpu)),
            thread: u32::from_le_bytes(array(thread)),
            args: [u64::from_le_bytes(array(arg0)), u64::from_le_bytes(array(arg1))],
        }
    }

    /// Decodes a record from the start of `bytes`, or `None` if it is too short.
    pub fn read_from(bytes: &[u8]) -> Option<Self> {
        let head = bytes.get(..RECORD_SIZE_BYTES)?;
        Some(Self::from_bytes(&array(head)))
    }
}

/// Copies a slice whose length the caller has already fixed into an array.
pub(crate) fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_little_endian_in_field_order() {
        let record = Record {
            tsc: 0x0102_0304_0506_0708,
            kind: 0x1112,
            cpu: 0x2122,
            thread: 0x3132_3334,
            args: [0x4142_4344_4546_4748, 0x5152_5354_5556_5758],
        };
        let bytes = record.to_bytes();
        assert_eq!(bytes[..8], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bytes[8..10], [0x12, 0x11]);
        assert_eq!(bytes[10..12], [0x22, 0x21]);
        assert_eq!(bytes[12..16], [0x34, 0x33, 0x32, 0x31]);
        assert_eq!(bytes[16], 0x48);
        assert_eq!(bytes[31], 0x51);
    }

    #[test]
    fn short_input_is_rejected() {
        assert_eq!(Record::read_from(&[0u8; RECORD_SIZE_BYTES - 1]), None);
    }

    proptest! {
        #[test]
        fn bytes_round_trip(tsc: u64, kind: u16, cpu: u16, thread: u32, a0: u64, a1: u64) {
            let record = Record { tsc, kind, cpu, thread, args: [a0, a1] };
            prop_assert_eq!(Record::from_bytes(&record.to_bytes()), record);
            prop_assert_eq!(Record::read_from(&record.to_bytes()), Some(record));
        }
    }
}
