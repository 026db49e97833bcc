//! The per-thread trace buffer the kernel shares with a user thread.
//!
//! Drivers and servers record without a syscall: the kernel maps a buffer into the
//! thread, the thread appends records and bumps `written`, and the kernel copies the
//! records out when tracing stops. The kernel treats the whole buffer as untrusted:
//! [`UserBufferView::parse`] validates the header and [`sanitize`] rewrites the
//! fields user space cannot be trusted with.
//!
//! Layout (all little-endian; `W` = written by the kernel at set-up, `U` = by user):
//!
//! | offset | size | field | by |
//! |---|---|---|---|
//! | 0 | 4 | magic `b"RTUB"` | W |
//! | 4 | 2 | version ([`USER_BUFFER_VERSION`]) | W |
//! | 6 | 2 | header size in bytes ([`USER_HEADER_BYTES`]) | W |
//! | 8 | 4 | capacity in records (a power of two) | W |
//! | 12 | 4 | enabled [`Categories`] bits (recording happens only with `USER`) | W |
//! | 16 | 8 | `written`: records ever appended | U |
//! | 24 | 8 | `dropped`: records refused because the buffer was full (drop mode) | U |
//! | 32 | 1 | full policy: 0 overwrite, 1 drop | W |
//! | 33 | 31 | reserved, zero | |
//! | 64 | capacity × 32 | records, slot `i % capacity` holds record `i` | U |
//!
//! The header is a cache line of its own so that the records start line-aligned.

use core::fmt;

use crate::record::array;
use crate::{Categories, FullPolicy, RECORD_SIZE_BYTES, Record};

/// Identifies a user trace buffer.
pub const USER_BUFFER_MAGIC: [u8; 4] = *b"RTUB";
/// Layout version this crate reads and writes.
pub const USER_BUFFER_VERSION: u16 = 1;
/// Bytes before the first record.
pub const USER_HEADER_BYTES: usize = 64;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 4;
const HEADER_SIZE_AT: usize = 6;
const CAPACITY_AT: usize = 8;
/// Offset of the enabled-categories field (a `u32`), which the kernel rewrites when
/// tracing starts and stops.
pub const ENABLED_OFFSET: usize = 12;
const ENABLED_AT: usize = ENABLED_OFFSET;
const WRITTEN_AT: usize = 16;
const DROPPED_AT: usize = 24;
const POLICY_AT: usize = 32;

const POLICY_OVERWRITE: u8 = 0;
const POLICY_DROP: u8 = 1;

/// Why a buffer cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The byte slice is shorter than header plus records.
    TooSmall { needed_bytes: usize, len_bytes: usize },
    /// Capacity zero or not a power of two.
    BadCapacity(u32),
    /// Magic bytes are not `RTUB`.
    BadMagic,
    /// A layout version this crate does not know.
    UnsupportedVersion(u16),
    /// Header size field disagrees with [`USER_HEADER_BYTES`].
    BadHeaderSize(u16),
    /// Policy byte is neither overwrite nor drop.
    BadPolicy(u8),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::TooSmall { needed_bytes, len_bytes } => {
                write!(f, "user trace buffer needs {needed_bytes} bytes but has {len_bytes}")
            }
            LayoutError::BadCapacity(cap) => {
                write!(f, "user trace buffer capacity {cap} is not a power of two")
            }
            LayoutError::BadMagic => write!(f, "user trace buffer has the wrong magic"),
            LayoutError::UnsupportedVersion(v) => {
                write!(f, "user trace buffer version {v} is not supported")
            }
            LayoutError::BadHeaderSize(size) => {
                write!(f, "user trace buffer header size {size} is wrong")
            }
            LayoutError::BadPolicy(p) => write!(f, "user trace buffer policy byte {p} is unknown"),
        }
    }
}

/// Bytes a buffer of `capacity` records needs, or `None` on overflow.
pub const fn required_bytes(capacity: u32) -> Option<usize> {
    match (capacity as usize).checked_mul(RECORD_SIZE_BYTES) {
        Some(records) => records.checked_add(USER_HEADER_BYTES),
        None => None,
    }
}

/// Kernel side: writes a fresh header (empty buffer) at the start of `buf`.
pub fn init(
    buf: &mut [u8],
    capacity: u32,
    policy: FullPolicy,
    enabled: Categories,
) -> Result<(), LayoutError> {
    if !capacity.is_power_of_two() {
        return Err(LayoutError::BadCapacity(capacity));
    }
    check_len(buf.len(), capacity)?;
    let header = buf
        .get_mut(..USER_HEADER_BYTES)
        .ok_or(LayoutError::TooSmall { needed_bytes: USER_HEADER_BYTES, len_bytes: 0 })?;
    header.fill(0);
    header[MAGIC_AT..VERSION_AT].copy_from_slice(&USER_BUFFER_MAGIC);
    header[VERSION_AT..HEADER_SIZE_AT].copy_from_slice(&USER_BUFFER_VERSION.to_le_bytes());
    header[HEADER_SIZE_AT..CAPACITY_AT].copy_from_slice(&(USER_HEADER_BYTES as u16).to_le_bytes());
    header[CAPACITY_AT..ENABLED_AT].copy_from_slice(&capacity.to_le_bytes());
    header[ENABLED_AT..WRITTEN_AT].copy_from_slice(&enabled.bits().to_le_bytes());
    header[POLICY_AT] = match policy {
        FullPolicy::Overwrite => POLICY_OVERWRITE,
        FullPolicy::Drop => POLICY_DROP,
    };
    Ok(())
}

/// Kernel side: changes the enabled categories of a live buffer (start/stop).
pub fn set_enabled(buf: &mut [u8], enabled: Categories) -> Result<(), LayoutError> {
    UserBufferView::parse(buf)?;
    buf[ENABLED_AT..WRITTEN_AT].copy_from_slice(&enabled.bits().to_le_bytes());
    Ok(())
}

fn check_len(len_bytes: usize, capacity: u32) -> Result<(), LayoutError> {
    let needed_bytes = required_bytes(capacity).ok_or(LayoutError::BadCapacity(capacity))?;
    if len_bytes < needed_bytes {
        return Err(LayoutError::TooSmall { needed_bytes, len_bytes });
    }
    Ok(())
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(&buf[at..at + 8]))
}

/// A validated, read-only view of a buffer.
#[derive(Clone, Copy, Debug)]
pub struct UserBufferView<'a> {
    buf: &'a [u8],
    capacity: u32,
    policy: FullPolicy,
}

impl<'a> UserBufferView<'a> {
    /// Validates the header; never trusts `written` or `dropped` beyond arithmetic.
    pub fn parse(buf: &'a [u8]) -> Result<Self, LayoutError> {
        let header = buf
            .get(..USER_HEADER_BYTES)
            .ok_or(LayoutError::TooSmall { needed_bytes: USER_HEADER_BYTES, len_bytes: buf.len() })?;
        if header[MAGIC_AT..VERSION_AT] != USER_BUFFER_MAGIC {
            return Err(LayoutError::BadMagic);
        }
        let version = u16::from_le_bytes(array(&header[VERSION_AT..HEADER_SIZE_AT]));
        if version != USER_BUFFER_VERSION {
            return Err(LayoutError::UnsupportedVersion(version));
        }
        let header_size = u16::from_le_bytes(array(&header[HEADER_SIZE_AT..CAPACITY_AT]));
        if usize::from(header_size) != USER_HEADER_BYTES {
            return Err(LayoutError::BadHeaderSize(header_size));
        }
        let capacity = u32::from_le_bytes(array(&header[CAPACITY_AT..ENABLED_AT]));
        if !capacity.is_power_of_two() {
            return Err(LayoutError::BadCapacity(capacity));
        }
        check_len(buf.len(), capacity)?;
        let policy = match header[POLICY_AT] {
            POLICY_OVERWRITE => FullPolicy::Overwrite,
            POLICY_DROP => FullPolicy::Drop,
            other => return Err(LayoutError::BadPolicy(other)),
        };
        Ok(UserBufferView { buf, capacity, policy })
    }

    /// Capacity in records.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Full policy set by the kernel.
    pub fn policy(&self) -> FullPolicy {
        self.policy
    }

    /// Categories the kernel enabled; unknown bits are ignored.
    pub fn enabled(&self) -> Categories {
        Categories::from_bits_truncate(u32::from_le_bytes(array(&self.buf[ENABLED_AT..WRITTEN_AT])))
    }

    /// Records ever appended, as claimed by user space.
    pub fn written(&self) -> u64 {
        read_u64(self.buf, WRITTEN_AT)
    }

    /// Records lost: refused in drop mode plus overwritten in overwrite mode.
    pub fn lost(&self) -> u64 {
        let overwritten = self.written().saturating_sub(u64::from(self.capacity));
        read_u64(self.buf, DROPPED_AT).saturating_add(overwritten)
    }

    /// The held records, oldest first, exactly as user space wrote them.
    pub fn records(&self) -> impl ExactSizeIterator<Item = Record> + 'a {
        let capacity = u64::from(self.capacity);
        let written = self.written();
        let held = written.min(capacity);
        let first = written - held;
        let buf = self.buf;
        // `held` is at most the capacity, a u32, so it fits a usize.
        (0..held as usize).map(move |i| {
            // Slot < capacity, and parse checked that capacity records fit.
            let slot = ((first + i as u64) % capacity) as usize;
            let at = USER_HEADER_BYTES + slot * RECORD_SIZE_BYTES;
            buf.get(at..).and_then(Record::read_from).unwrap_or(Record::EMPTY)
        })
    }
}

/// Kernel side: makes a user record safe to merge into the trace, or `None` to
/// discard it. Only user kinds are kept, the thread is forced to the buffer's owner,
/// and the CPU (user space reads it with `rdtscp`) must name a real core.
pub fn sanitize(record: Record, owner: u32, cpu_count: u16) -> Option<Record> {
    let kind = record.event_kind()?;
    (kind.is_user() && record.cpu < cpu_count).then_some(Record { thread: owner, ..record })
}

/// User side: appends records to a buffer the kernel set up.
#[derive(Debug)]
pub struct UserBufferWriter<'a> {
    buf: &'a mut [u8],
    capacity: u64,
    drop_when_full: bool,
}

impl<'a> UserBufferWriter<'a> {
    /// Checks the header the kernel wrote.
    pub fn attach(buf: &'a mut [u8]) -> Result<Self, LayoutError> {
        let view = UserBufferView::parse(buf)?;
        let capacity = u64::from(view.capacity());
        let drop_when_full = view.policy() == FullPolicy::Drop;
        Ok(UserBufferWriter { buf, capacity, drop_when_full })
    }

    /// Whether the kernel currently wants user events.
    pub fn enabled(&self) -> bool {
        let bits = u32::from_le_bytes(array(&self.buf[ENABLED_AT..WRITTEN_AT]));
        bits & Categories::USER.bits() != 0
    }

    /// Appends a record if user tracing is on; returns whether it was stored.
    ///
    /// A real runtime publishes `written` with a release store after the record bytes
    /// so a concurrent kernel snapshot sees whole records; this safe version is for
    /// hosts and for runtimes that only hand the buffer over when stopped.
    pub fn record(&mut self, record: Record) -> bool {
        if !self.enabled() {
            return false;
        }
        let written = read_u64(self.buf, WRITTEN_AT);
        if self.drop_when_full && written >= self.capacity {
            let dropped = read_u64(self.buf, DROPPED_AT).wrapping_add(1);
            self.buf[DROPPED_AT..POLICY_AT].copy_from_slice(&dropped.to_le_bytes());
            return false;
        }
        let slot = (written % self.capacity) as usize;
        let at = USER_HEADER_BYTES + slot * RECORD_SIZE_BYTES;
        if let Some(cell) = self.buf.get_mut(at..at + RECORD_SIZE_BYTES) {
            cell.copy_from_slice(&record.to_bytes());
        }
        self.buf[WRITTEN_AT..DROPPED_AT].copy_from_slice(&written.wrapping_add(1).to_le_bytes());
        true
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::EventKind;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    fn user(n: u64) -> Record {
        Record::new(EventKind::UserInstant, 1, 7, n, [3, n])
    }

    fn buffer(capacity: u32, policy: FullPolicy) -> Vec<u8> {
        let mut buf = vec![0u8; required_bytes(capacity).unwrap()];
        init(&mut buf, capacity, policy, Categories::USER).unwrap();
        buf
    }

    #[test]
    fn header_fields_sit_at_documented_offsets() {
        let buf = buffer(8, FullPolicy::Drop);
        assert_eq!(&buf[..4], b"RTUB");
        assert_eq!(buf[6], USER_HEADER_BYTES as u8);
        assert_eq!(buf[8], 8);
        assert_eq!(buf[12], Categories::USER.bits() as u8);
        assert_eq!(buf[32], POLICY_DROP);
    }

    #[test]
    fn overwrite_keeps_newest() {
        let mut buf = buffer(4, FullPolicy::Overwrite);
        let mut writer = UserBufferWriter::attach(&mut buf).unwrap();
        for n in 0..6 {
            assert!(writer.record(user(n)));
        }
        let view = UserBufferView::parse(&buf).unwrap();
        let tscs: Vec<u64> = view.records().map(|r| r.tsc).collect();
        assert_eq!(tscs, [2, 3, 4, 5]);
        assert_eq!(view.lost(), 2);
    }

    #[test]
    fn drop_keeps_oldest_and_disabled_records_nothing() {
        let mut buf = buffer(2, FullPolicy::Drop);
        let mut writer = UserBufferWriter::attach(&mut buf).unwrap();
        let stored: Vec<bool> = (0..3).map(|n| writer.record(user(n))).collect();
        assert_eq!(stored, [true, true, false]);
        set_enabled(&mut buf, Categories::empty()).unwrap();
        let mut writer = UserBufferWriter::attach(&mut buf).unwrap();
        assert!(!writer.record(user(9)));
        let view = UserBufferView::parse(&buf).unwrap();
        assert_eq!(view.records().map(|r| r.tsc).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(view.lost(), 1);
    }

    #[test]
    fn bad_headers_are_rejected() {
        let good = buffer(4, FullPolicy::Overwrite);
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(UserBufferView::parse(&bad).unwrap_err(), LayoutError::BadMagic);
        let mut bad = good.clone();
        bad[CAPACITY_AT] = 3;
        assert_eq!(UserBufferView::parse(&bad).unwrap_err(), LayoutError::BadCapacity(3));
        let mut bad = good.clone();
        bad[CAPACITY_AT] = 8;
        assert!(matches!(UserBufferView::parse(&bad), Err(LayoutError::TooSmall { .. })));
        let mut bad = good.clone();
        bad[POLICY_AT] = 9;
        assert_eq!(UserBufferView::parse(&bad).unwrap_err(), LayoutError::BadPolicy(9));
        assert!(UserBufferView::parse(&good[..good.len() - 1]).is_err());
        assert_eq!(
            init(&mut vec![0; 4096], 6, FullPolicy::Drop, Categories::USER),
            Err(LayoutError::BadCapacity(6))
        );
    }

    #[test]
    fn sanitize_keeps_only_user_kinds_and_forces_owner() {
        let forged = Record::new(EventKind::IpcSend, 0, 99, 5, [0; 2]);
        assert_eq!(sanitize(forged, 7, 2), None);
        let bad_cpu = Record::new(EventKind::UserInstant, 2, 99, 5, [0; 2]);
        assert_eq!(sanitize(bad_cpu, 7, 2), None);
        let ok = Record::new(EventKind::UserInstant, 1, 99, 5, [0; 2]);
        assert_eq!(sanitize(ok, 7, 2).map(|r| r.thread), Some(7));
    }

    proptest! {
        /// Whatever user space scribbles over the buffer, reading it never panics.
        #[test]
        fn hostile_contents_never_panic(
            written: u64,
            dropped: u64,
            noise in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut buf = buffer(4, FullPolicy::Overwrite);
            buf[WRITTEN_AT..DROPPED_AT].copy_from_slice(&written.to_le_bytes());
            buf[DROPPED_AT..POLICY_AT].copy_from_slice(&dropped.to_le_bytes());
            for (at, byte) in noise.iter().enumerate() {
                if let Some(cell) = buf.get_mut(USER_HEADER_BYTES + at) {
                    *cell = *byte;
                }
            }
            let view = UserBufferView::parse(&buf).unwrap();
            prop_assert!(view.records().len() <= 4);
            let _ = view.lost();
            for record in view.records() {
                let _ = sanitize(record, 1, 2);
            }
        }
    }
}
