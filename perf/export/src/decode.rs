//! Reads a trace dump (format in `ramen_perf_record::dump`) into a [`Trace`].
//!
//! The decoder trusts nothing: every length is checked before it is used, every
//! field is validated, and the closing checksum must match, so a truncated or
//! corrupted dump yields a [`DecodeError`] naming the byte offset, never a panic or
//! a silently wrong trace.

use std::collections::BTreeMap;

use ramen_perf_record::dump::{
    CORE_PAYLOAD_BYTES, Checksum, DUMP_MAGIC, DUMP_VERSION, DumpWriter, END_PAYLOAD_BYTES, FILE_HEADER_BYTES,
    MAX_CPUS, MAX_NAME_BYTES, NAME_FIXED_BYTES, NAME_LABEL, NAME_THREAD, RECORDS_FIXED_BYTES, SECTION_CORE,
    SECTION_END, SECTION_NAME, SECTION_RECORDS, SOURCE_CORE, SOURCE_THREAD, WriteError,
};
use ramen_perf_record::{EventKind, RECORD_SIZE_BYTES, Record, ThreadName};

/// Why a dump was rejected. Offsets are bytes from the start of the dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated dump: {what} at byte {offset} needs {needed} bytes but only {available} remain")]
    Truncated { what: &'static str, offset: usize, needed: usize, available: usize },
    #[error("not a RamenOS trace dump (magic bytes are {found:02x?}, expected \"RAMENTRC\")")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported dump version {0} (this decoder reads version {DUMP_VERSION})")]
    UnsupportedVersion(u16),
    #[error("file header claims {0} bytes; version {DUMP_VERSION} headers are {FILE_HEADER_BYTES}")]
    BadHeaderSize(u16),
    #[error("CPU count {0} is outside 1..={MAX_CPUS}")]
    BadCpuCount(u16),
    #[error("TSC frequency is zero")]
    ZeroTscHz,
    #[error("reserved field at byte {offset} is {value:#x}, expected zero")]
    ReservedNonZero { offset: usize, value: u64 },
    #[error("unknown section kind {kind:#x} at byte {offset}")]
    UnknownSection { kind: u32, offset: usize },
    #[error("section kind {kind:#x} at byte {offset} has invalid length {len_bytes}")]
    BadSectionLength { kind: u32, offset: usize, len_bytes: usize },
    #[error("CPU {cpu} at byte {offset} is not below the CPU count {cpu_count}")]
    CpuOutOfRange { offset: usize, cpu: u32, cpu_count: u16 },
    #[error("CPU {cpu} is described twice (second time at byte {offset})")]
    DuplicateCore { cpu: u32, offset: usize },
    #[error("CPU {cpu} has no core section (TSC offset unknown)")]
    MissingCore { cpu: u16 },
    #[error("bad name at byte {offset}: {reason}")]
    BadName { offset: usize, reason: &'static str },
    #[error("{kind} {id} is named twice (second time at byte {offset})")]
    DuplicateName { kind: &'static str, id: u32, offset: usize },
    #[error("unknown records source kind {kind} at byte {offset}")]
    UnknownSource { kind: u32, offset: usize },
    #[error("record at byte {offset} has unknown event kind {kind:#06x}")]
    UnknownEventKind { offset: usize, kind: u16 },
    #[error("record at byte {offset} says {field} {found} but its section belongs to {field} {expected}")]
    RecordSourceMismatch { offset: usize, field: &'static str, found: u32, expected: u32 },
    #[error(
        "checksum mismatch: dump says {stored:#018x}, contents give {computed:#018x} (corrupted in transit?)"
    )]
    ChecksumMismatch { stored: u64, computed: u64 },
    #[error("dump ends at byte {offset} without its end section (truncated?)")]
    MissingEnd { offset: usize },
    #[error("{count} unexpected bytes after the end section at byte {offset}")]
    TrailingBytes { offset: usize, count: usize },
    #[error("no trace dump found (no \"RAMENTRC\" magic in {len_bytes} bytes)")]
    NotFound { len_bytes: usize },
}

/// Where a run of records came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceId {
    /// A kernel per-core ring.
    Core(u16),
    /// A user per-thread buffer.
    Thread(u32),
}

/// All records from one source, in the order the source wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// Records the source lost (dropped or overwritten).
    pub lost: u64,
    /// The records.
    pub records: Vec<Record>,
}

/// A decoded dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// TSC ticks per second.
    pub tsc_hz: u64,
    /// Per CPU, its TSC offset: a timestamp `t` from that CPU is `t - offset` on the
    /// common time line.
    pub tsc_offsets: Vec<i64>,
    /// Thread names by thread id.
    pub thread_names: BTreeMap<u32, String>,
    /// User span and counter labels by label id.
    pub labels: BTreeMap<u32, String>,
    /// Records by source.
    pub sources: BTreeMap<SourceId, Source>,
}

impl Trace {
    /// Number of CPUs.
    pub fn cpu_count(&self) -> u16 {
        // The decoder and the builders keep this below MAX_CPUS.
        u16::try_from(self.tsc_offsets.len()).unwrap_or(u16::MAX)
    }

    /// Display name of a thread.
    pub fn thread_name(&self, thread: u32) -> String {
        match self.thread_names.get(&thread) {
            Some(name) => name.clone(),
            None if thread == ramen_perf_record::IDLE_THREAD => "idle".to_owned(),
            None => format!("thread {thread}"),
        }
    }

    /// Display name of a user label: from the label table, else the text an inline
    /// label carries (`ramen_perf_record::inline_label`), else `label <id>`.
    pub fn label(&self, id: u64) -> String {
        u32::try_from(id)
            .ok()
            .and_then(|id| self.labels.get(&id).cloned())
            .or_else(|| inline_label_text(id))
            .unwrap_or_else(|| format!("label {id}"))
    }
}

/// The text of an inline label: printable ASCII from the first byte, then only zero
/// bytes; `None` for any other id.
fn inline_label_text(id: u64) -> Option<String> {
    let bytes = id.to_le_bytes();
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let (text, padding) = bytes.split_at(len);
    let printable = |b: &u8| b.is_ascii_graphic() || *b == b' ';
    (len > 0 && text.iter().all(printable) && padding.iter().all(|&b| b == 0))
        .then(|| text.iter().map(|&b| char::from(b)).collect())
}

/// A bounds-checked cursor over the dump.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let available = self.bytes.len().saturating_sub(self.at);
        if len > available {
            return Err(DecodeError::Truncated { what, offset: self.at, needed: len, available });
        }
        let out = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

/// Decodes a complete dump.
pub fn decode(bytes: &[u8]) -> Result<Trace, DecodeError> {
    let mut reader = Reader { bytes, at: 0 };
    let magic = reader.take(DUMP_MAGIC.len(), "magic")?;
    if magic != DUMP_MAGIC {
        return Err(DecodeError::BadMagic { found: magic.to_vec() });
    }
    let version = reader.u16("version")?;
    if version != DUMP_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let header_bytes = reader.u16("header size")?;
    if usize::from(header_bytes) != FILE_HEADER_BYTES {
        return Err(DecodeError::BadHeaderSize(header_bytes));
    }
    let cpu_count = reader.u16("CPU count")?;
    if cpu_count == 0 || cpu_count > MAX_CPUS {
        return Err(DecodeError::BadCpuCount(cpu_count));
    }
    let reserved_at = reader.at;
    let reserved = reader.u16("reserved")?;
    if reserved != 0 {
        return Err(DecodeError::ReservedNonZero { offset: reserved_at, value: reserved.into() });
    }
    let tsc_hz = reader.u64("TSC frequency")?;
    if tsc_hz == 0 {
        return Err(DecodeError::ZeroTscHz);
    }

    let mut offsets: Vec<Option<i64>> = vec![None; usize::from(cpu_count)];
    let mut trace = Trace {
        tsc_hz,
        tsc_offsets: Vec::new(),
        thread_names: BTreeMap::new(),
        labels: BTreeMap::new(),
        sources: BTreeMap::new(),
    };
    // Names from `ThreadName` records; they override name sections.
    let mut recorded_names = BTreeMap::new();
    loop {
        if reader.is_empty() {
            return Err(DecodeError::MissingEnd { offset: reader.at });
        }
        let section_at = reader.at;
        let kind = reader.u32("section kind")?;
        let len_bytes = usize::try_from(reader.u32("section length")?).unwrap_or(usize::MAX);
        let payload_at = reader.at;
        let payload = reader.take(len_bytes, "section payload")?;
        let bad_len = DecodeError::BadSectionLength { kind, offset: section_at, len_bytes };
        let mut payload = Reader { bytes: payload, at: 0 };
        match kind {
            SECTION_CORE => {
                if len_bytes != CORE_PAYLOAD_BYTES {
                    return Err(bad_len);
                }
                let cpu = payload.u32("cpu")?;
                let reserved = payload.u32("reserved")?;
                let offset = i64::from_le_bytes(payload.array("TSC offset")?);
                if reserved != 0 {
                    return Err(DecodeError::ReservedNonZero {
                        offset: payload_at + 4,
                        value: reserved.into(),
                    });
                }
                let slot = usize::try_from(cpu).ok().and_then(|cpu| offsets.get_mut(cpu));
                let slot = slot.ok_or(DecodeError::CpuOutOfRange { offset: payload_at, cpu, cpu_count })?;
                if slot.replace(offset).is_some() {
                    return Err(DecodeError::DuplicateCore { cpu, offset: section_at });
                }
            }
            SECTION_NAME => {
                if len_bytes <= NAME_FIXED_BYTES || len_bytes > NAME_FIXED_BYTES + MAX_NAME_BYTES {
                    return Err(bad_len);
                }
                let name_kind = payload.u32("name kind")?;
                let id = payload.u32("name id")?;
                let text = payload.take(len_bytes - NAME_FIXED_BYTES, "name")?;
                let text = std::str::from_utf8(text)
                    .map_err(|_| DecodeError::BadName { offset: payload_at, reason: "not UTF-8" })?;
                let (table, what) = match name_kind {
                    NAME_THREAD => (&mut trace.thread_names, "thread"),
                    NAME_LABEL => (&mut trace.labels, "label"),
                    _ => {
                        return Err(DecodeError::BadName { offset: payload_at, reason: "unknown name kind" });
                    }
                };
                if table.insert(id, text.to_owned()).is_some() {
                    return Err(DecodeError::DuplicateName { kind: what, id, offset: section_at });
                }
            }
            SECTION_RECORDS => {
                let body = len_bytes.checked_sub(RECORDS_FIXED_BYTES).ok_or(bad_len.clone())?;
                if body % RECORD_SIZE_BYTES != 0 {
                    return Err(bad_len);
                }
                let source_kind = payload.u32("source kind")?;
                let source_id = payload.u32("source id")?;
                let lost = payload.u64("lost count")?;
                let source = match source_kind {
                    SOURCE_CORE => {
                        let cpu = u16::try_from(source_id).ok().filter(|cpu| *cpu < cpu_count).ok_or(
                            DecodeError::CpuOutOfRange { offset: payload_at + 4, cpu: source_id, cpu_count },
                        )?;
                        SourceId::Core(cpu)
                    }
                    SOURCE_THREAD => SourceId::Thread(source_id),
                    kind => {
                        return Err(DecodeError::UnknownSource { kind, offset: payload_at });
                    }
                };
                let entry = trace.sources.entry(source).or_default();
                entry.lost = entry.lost.saturating_add(lost);
                while !payload.is_empty() {
                    let offset = payload_at + payload.at;
                    let record = Record::from_bytes(&payload.array("record")?);
                    check_record(&record, offset, source, cpu_count)?;
                    if record.event_kind() == Some(EventKind::ThreadName) {
                        // The latest name wins: records come oldest first per source.
                        let name = ThreadName::from_args(record.args).ok_or(DecodeError::BadName {
                            offset,
                            reason: "thread-name record is not a name",
                        })?;
                        if !name.is_empty() {
                            recorded_names.insert(record.thread, name.as_str().to_owned());
                        }
                    }
                    entry.records.push(record);
                }
            }
            SECTION_END => {
                if len_bytes != END_PAYLOAD_BYTES {
                    return Err(bad_len);
                }
                let stored = payload.u64("checksum")?;
                let computed = Checksum::of(&bytes[..section_at]);
                if stored != computed {
                    return Err(DecodeError::ChecksumMismatch { stored, computed });
                }
                if !reader.is_empty() {
                    return Err(DecodeError::TrailingBytes {
                        offset: reader.at,
                        count: bytes.len() - reader.at,
                    });
                }
                break;
            }
            kind => {
                return Err(DecodeError::UnknownSection { kind, offset: section_at });
            }
        }
    }

    for (cpu, offset) in offsets.iter().enumerate() {
        let offset =
            offset.ok_or(DecodeError::MissingCore { cpu: u16::try_from(cpu).unwrap_or(u16::MAX) })?;
        trace.tsc_offsets.push(offset);
    }
    trace.thread_names.extend(recorded_names);
    Ok(trace)
}

/// Finds the first dump inside a larger capture (a serial log with other output
/// around it) and returns exactly its bytes, for [`decode`]. Only the framing is
/// checked here: the file header's size and the section lengths up to the end
/// section; offsets in errors are relative to the capture.
pub fn extract_dump(capture: &[u8]) -> Result<&[u8], DecodeError> {
    let start = capture
        .windows(DUMP_MAGIC.len())
        .position(|window| window == DUMP_MAGIC)
        .ok_or(DecodeError::NotFound { len_bytes: capture.len() })?;
    let mut reader = Reader { bytes: capture, at: start };
    reader.take(FILE_HEADER_BYTES, "file header")?;
    loop {
        let kind = reader.u32("section kind")?;
        let len_bytes = usize::try_from(reader.u32("section length")?).unwrap_or(usize::MAX);
        reader.take(len_bytes, "section payload")?;
        if kind == SECTION_END {
            return Ok(&capture[start..reader.at]);
        }
    }
}

fn check_record(record: &Record, offset: usize, source: SourceId, cpu_count: u16) -> Result<(), DecodeError> {
    if record.event_kind().is_none() {
        return Err(DecodeError::UnknownEventKind { offset, kind: record.kind });
    }
    if record.cpu >= cpu_count {
        return Err(DecodeError::CpuOutOfRange { offset: offset + 10, cpu: record.cpu.into(), cpu_count });
    }
    match source {
        SourceId::Core(cpu) if record.cpu != cpu => Err(DecodeError::RecordSourceMismatch {
            offset,
            field: "cpu",
            found: record.cpu.into(),
            expected: cpu.into(),
        }),
        SourceId::Thread(thread) if record.thread != thread => Err(DecodeError::RecordSourceMismatch {
            offset,
            field: "thread",
            found: record.thread,
            expected: thread,
        }),
        _ => Ok(()),
    }
}

/// Encodes a [`Trace`] back into a dump (for tests, and for tools that filter a
/// trace and save it again).
pub fn encode(trace: &Trace) -> Result<Vec<u8>, WriteError> {
    let mut out = Vec::new();
    let mut writer =
        DumpWriter::new(|bytes: &[u8]| out.extend_from_slice(bytes), trace.cpu_count(), trace.tsc_hz)?;
    for (cpu, offset) in trace.tsc_offsets.iter().enumerate() {
        writer.core(u16::try_from(cpu).map_err(|_| WriteError::TooLarge)?, *offset)?;
    }
    for (id, name) in &trace.thread_names {
        writer.name(NAME_THREAD, *id, name)?;
    }
    for (id, name) in &trace.labels {
        writer.name(NAME_LABEL, *id, name)?;
    }
    for (source, data) in &trace.sources {
        let (kind, id) = match source {
            SourceId::Core(cpu) => (SOURCE_CORE, u32::from(*cpu)),
            SourceId::Thread(thread) => (SOURCE_THREAD, *thread),
        };
        writer.records(kind, id, data.lost, data.records.iter().copied())?;
    }
    let _ = writer.finish();
    Ok(out)
}
