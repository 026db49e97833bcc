//! The trace dump: how a whole capture leaves the machine.
//!
//! A dump is a file header followed by length-prefixed sections and ends with a
//! checksum section, so a reader can reject a truncated or corrupted dump instead of
//! misreading it. The kernel streams it (serial port, shared memory) with
//! [`DumpWriter`] without buffering; `ramen-perf-export` decodes it.
//!
//! All integers are little-endian.
//!
//! File header ([`FILE_HEADER_BYTES`] bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic [`DUMP_MAGIC`] |
//! | 8 | 2 | version [`DUMP_VERSION`] |
//! | 10 | 2 | header size in bytes ([`FILE_HEADER_BYTES`]) |
//! | 12 | 2 | CPU count (1..=[`MAX_CPUS`]) |
//! | 14 | 2 | reserved, zero |
//! | 16 | 8 | TSC frequency in Hz (non-zero) |
//!
//! Then sections, each a [`SECTION_HEADER_BYTES`]-byte header (`u32` kind, `u32`
//! payload length in bytes) and the payload:
//!
//! - [`SECTION_CORE`], exactly one per CPU: `u32` cpu, `u32` zero, `i64` TSC offset.
//!   A timestamp `t` from that CPU is `t - offset` on the common time line.
//! - [`SECTION_NAME`]: `u32` name kind ([`NAME_THREAD`] or [`NAME_LABEL`]), `u32` id,
//!   then 1..=[`MAX_NAME_BYTES`] bytes of UTF-8. Labels name user spans and counters.
//! - [`SECTION_RECORDS`]: `u32` source kind ([`SOURCE_CORE`] ring or [`SOURCE_THREAD`]
//!   buffer), `u32` source id (CPU or thread), `u64` records lost by that source,
//!   then whole [`crate::Record`]s. A source may appear in several sections.
//! - [`SECTION_END`], last: `u64` FNV-1a checksum of every byte before this section.

use crate::{RECORD_SIZE_BYTES, Record};

/// First bytes of every dump.
pub const DUMP_MAGIC: [u8; 8] = *b"RAMENTRC";
/// Dump format version this crate writes.
pub const DUMP_VERSION: u16 = 1;
/// Size of the file header.
pub const FILE_HEADER_BYTES: usize = 24;
/// Size of a section header.
pub const SECTION_HEADER_BYTES: usize = 8;
/// Most CPUs a dump may describe.
pub const MAX_CPUS: u16 = 1024;
/// Longest thread or label name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Records [`DumpWriter::records_batched`] gathers per section (1 KiB on the stack).
pub const BATCH_RECORDS: usize = 32;

/// Section kind: one CPU's TSC offset.
pub const SECTION_CORE: u32 = 1;
/// Section kind: a thread or label name.
pub const SECTION_NAME: u32 = 2;
/// Section kind: records from one source.
pub const SECTION_RECORDS: u32 = 3;
/// Section kind: the closing checksum.
pub const SECTION_END: u32 = 0xE0F;

/// Payload size of a [`SECTION_CORE`].
pub const CORE_PAYLOAD_BYTES: usize = 16;
/// Bytes of a [`SECTION_NAME`] payload before the name.
pub const NAME_FIXED_BYTES: usize = 8;
/// Bytes of a [`SECTION_RECORDS`] payload before the records.
pub const RECORDS_FIXED_BYTES: usize = 16;
/// Payload size of a [`SECTION_END`].
pub const END_PAYLOAD_BYTES: usize = 8;

/// Name kind: a thread name.
pub const NAME_THREAD: u32 = 1;
/// Name kind: a user span or counter label.
pub const NAME_LABEL: u32 = 2;

/// Records source: a kernel per-core ring.
pub const SOURCE_CORE: u32 = 1;
/// Records source: a user per-thread buffer.
pub const SOURCE_THREAD: u32 = 2;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Running FNV-1a 64 checksum: tiny, table-free and good enough to catch corruption
/// on a serial line (this is not a defence against tampering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(FNV_OFFSET)
    }
}

impl Checksum {
    /// Folds `bytes` into the checksum.
    pub fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
        }
    }

    /// The checksum so far.
    pub fn value(&self) -> u64 {
        self.0
    }

    /// Checksum of one byte slice.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut sum = Checksum::default();
        sum.update(bytes);
        sum.value()
    }
}

/// Why the writer refused a section. Nothing is written when it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// CPU count zero or above [`MAX_CPUS`], or a CPU index not below the count.
    BadCpu(u32),
    /// Zero TSC frequency.
    ZeroTscHz,
    /// Name empty or longer than [`MAX_NAME_BYTES`].
    BadName,
    /// A section payload would not fit its `u32` length.
    TooLarge,
}

/// Streams a dump to a byte sink (a serial port, a shared-memory window, a `Vec`).
///
/// Call [`Self::core`] once per CPU, then names and records in any order, then
/// [`Self::finish`]. The writer checks what a reader would reject.
pub struct DumpWriter<S: FnMut(&[u8])> {
    sink: S,
    checksum: Checksum,
    cpu_count: u16,
}

impl<S: FnMut(&[u8])> core::fmt::Debug for DumpWriter<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DumpWriter")
            .field("checksum", &self.checksum)
            .field("cpu_count", &self.cpu_count)
            .finish()
    }
}

impl<S: FnMut(&[u8])> DumpWriter<S> {
    /// Writes the file header.
    pub fn new(mut sink: S, cpu_count: u16, tsc_hz: u64) -> Result<Self, WriteError> {
        if cpu_count == 0 || cpu_count > MAX_CPUS {
            return Err(WriteError::BadCpu(u32::from(cpu_count)));
        }
        if tsc_hz == 0 {
            return Err(WriteError::ZeroTscHz);
        }
        let mut header = [0u8; FILE_HEADER_BYTES];
        header[0..8].copy_from_slice(&DUMP_MAGIC);
        header[8..10].copy_from_slice(&DUMP_VERSION.to_le_bytes());
        header[10..12].copy_from_slice(&(FILE_HEADER_BYTES as u16).to_le_bytes());
        header[12..14].copy_from_slice(&cpu_count.to_le_bytes());
        header[16..24].copy_from_slice(&tsc_hz.to_le_bytes());
        let mut checksum = Checksum::default();
        checksum.update(&header);
        sink(&header);
        Ok(DumpWriter { sink, checksum, cpu_count })
    }

    /// Records `cpu`'s TSC offset from the common time line.
    pub fn core(&mut self, cpu: u16, tsc_offset: i64) -> Result<(), WriteError> {
        self.check_cpu(u32::from(cpu))?;
        self.section_header(SECTION_CORE, CORE_PAYLOAD_BYTES)?;
        self.emit(&u32::from(cpu).to_le_bytes());
        self.emit(&0u32.to_le_bytes());
        self.emit(&tsc_offset.to_le_bytes());
        Ok(())
    }

    /// Names a thread ([`NAME_THREAD`]) or a user label ([`NAME_LABEL`]).
    pub fn name(&mut self, name_kind: u32, id: u32, name: &str) -> Result<(), WriteError> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES || !matches!(name_kind, NAME_THREAD | NAME_LABEL) {
            return Err(WriteError::BadName);
        }
        self.section_header(SECTION_NAME, NAME_FIXED_BYTES + name.len())?;
        self.emit(&name_kind.to_le_bytes());
        self.emit(&id.to_le_bytes());
        self.emit(name.as_bytes());
        Ok(())
    }

    /// Writes one records section. `source_kind` is [`SOURCE_CORE`] (then `source_id`
    /// is the CPU) or [`SOURCE_THREAD`] (then it is the thread id).
    pub fn records<I>(
        &mut self,
        source_kind: u32,
        source_id: u32,
        lost: u64,
        records: I,
    ) -> Result<(), WriteError>
    where
        I: IntoIterator<Item = Record>,
        I::IntoIter: ExactSizeIterator,
    {
        if source_kind == SOURCE_CORE {
            self.check_cpu(source_id)?;
        }
        let records = records.into_iter();
        let len = records
            .len()
            .checked_mul(RECORD_SIZE_BYTES)
            .and_then(|bytes| bytes.checked_add(RECORDS_FIXED_BYTES))
            .ok_or(WriteError::TooLarge)?;
        self.section_header(SECTION_RECORDS, len)?;
        self.emit(&source_kind.to_le_bytes());
        self.emit(&source_id.to_le_bytes());
        self.emit(&lost.to_le_bytes());
        for record in records {
            self.emit(&record.to_bytes());
        }
        Ok(())
    }

    /// Writes records whose number is not known up front (for instance user records
    /// that pass [`crate::user_buffer::sanitize`]) as one or more sections of up to
    /// [`BATCH_RECORDS`]; the reader merges them. Reads `records` once, so a buffer
    /// that user space keeps scribbling on cannot break the framing.
    pub fn records_batched<I>(
        &mut self,
        source_kind: u32,
        source_id: u32,
        lost: u64,
        records: I,
    ) -> Result<(), WriteError>
    where
        I: IntoIterator<Item = Record>,
    {
        let mut batch = [Record::EMPTY; BATCH_RECORDS];
        let mut len = 0;
        // The lost count travels with the first section only; the reader adds them up.
        let mut lost = lost;
        let mut wrote_any = false;
        for record in records {
            if let Some(slot) = batch.get_mut(len) {
                *slot = record;
                len += 1;
            }
            if len == BATCH_RECORDS {
                self.records(source_kind, source_id, lost, batch.iter().copied())?;
                lost = 0;
                len = 0;
                wrote_any = true;
            }
        }
        if len > 0 || !wrote_any {
            self.records(source_kind, source_id, lost, batch.iter().take(len).copied())?;
        }
        Ok(())
    }

    /// Writes the checksum section and hands back the sink.
    pub fn finish(mut self) -> S {
        let sum = self.checksum.value();
        let mut header = [0u8; SECTION_HEADER_BYTES];
        header[..4].copy_from_slice(&SECTION_END.to_le_bytes());
        header[4..].copy_from_slice(&(END_PAYLOAD_BYTES as u32).to_le_bytes());
        (self.sink)(&header);
        (self.sink)(&sum.to_le_bytes());
        self.sink
    }

    fn check_cpu(&self, cpu: u32) -> Result<(), WriteError> {
        if cpu >= u32::from(self.cpu_count) {
            return Err(WriteError::BadCpu(cpu));
        }
        Ok(())
    }

    fn section_header(&mut self, kind: u32, payload_bytes: usize) -> Result<(), WriteError> {
        let len = u32::try_from(payload_bytes).map_err(|_| WriteError::TooLarge)?;
        self.emit(&kind.to_le_bytes());
        self.emit(&len.to_le_bytes());
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.checksum.update(bytes);
        (self.sink)(bytes);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::EventKind;
    use std::vec::Vec;

    #[test]
    fn layout_matches_the_table() {
        let mut out = Vec::new();
        let mut writer = DumpWriter::new(|b: &[u8]| out.extend_from_slice(b), 2, 1_000_000_000).unwrap();
        writer.core(1, -5).unwrap();
        writer.name(NAME_THREAD, 7, "pong").unwrap();
        let record = Record::new(EventKind::IrqEnter, 1, 7, 42, [33, 0]);
        writer.records(SOURCE_CORE, 1, 3, [record]).unwrap();
        let _ = writer.finish();

        assert_eq!(&out[..8], b"RAMENTRC");
        assert_eq!(out[12], 2);
        let core = &out[FILE_HEADER_BYTES..];
        assert_eq!(core[0], SECTION_CORE as u8);
        assert_eq!(core[4], CORE_PAYLOAD_BYTES as u8);
        assert_eq!(i64::from_le_bytes(core[16..24].try_into().unwrap()), -5);
        let name = &core[SECTION_HEADER_BYTES + CORE_PAYLOAD_BYTES..];
        assert_eq!(&name[16..20], b"pong");
        let records = &name[SECTION_HEADER_BYTES + NAME_FIXED_BYTES + 4..];
        assert_eq!(records[4] as usize, RECORDS_FIXED_BYTES + RECORD_SIZE_BYTES);
        assert_eq!(records[16], 3, "lost count");
        let body_end = out.len() - SECTION_HEADER_BYTES - END_PAYLOAD_BYTES;
        let stored = u64::from_le_bytes(out[out.len() - 8..].try_into().unwrap());
        assert_eq!(stored, Checksum::of(&out[..body_end]));
    }

    #[test]
    fn writer_refuses_what_a_reader_would_reject() {
        let sink = |_: &[u8]| {};
        assert_eq!(DumpWriter::new(sink, 0, 1).unwrap_err(), WriteError::BadCpu(0));
        assert_eq!(DumpWriter::new(sink, 1, 0).unwrap_err(), WriteError::ZeroTscHz);
        let mut writer = DumpWriter::new(sink, 2, 1).unwrap();
        assert_eq!(writer.core(2, 0), Err(WriteError::BadCpu(2)));
        assert_eq!(writer.name(NAME_THREAD, 1, ""), Err(WriteError::BadName));
        assert_eq!(writer.name(9, 1, "x"), Err(WriteError::BadName));
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(writer.name(NAME_LABEL, 1, &long), Err(WriteError::BadName));
        assert_eq!(writer.records(SOURCE_CORE, 5, 0, []), Err(WriteError::BadCpu(5)));
    }
}
