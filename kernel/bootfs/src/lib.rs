//! The RamenOS boot archive ("RBFS") and the ELF64 program parser.
//!
//! QEMU passes one `-initrd` file; xtask packs the root task and every other boot-time
//! program into it. The kernel finds the root task in it, and the root task finds the
//! rest. Every file starts on a 4 KiB boundary of the archive, so whoever holds the
//! archive's frames can map a file's pages directly instead of copying it.
//!
//! The parsers take untrusted bytes, validate everything up front, and never panic or
//! allocate: a parsed [`Archive`] or [`elf::Program`] can then be read without further
//! checks. The packer (feature `std`) is for host tools.
//!
//! # Layout (all integers little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `RBFS` |
//! | 4 | 2 | version ([`VERSION`]) |
//! | 6 | 2 | entry count (1..=[`MAX_ENTRIES`]) |
//! | 8 | 8 | total length in bytes, a multiple of [`PAGE_BYTES`] |
//! | 16 | 56 x count | entry table |
//! | page-aligned | | file data |
//!
//! Each entry: name (32 bytes, UTF-8, NUL-padded), offset (u64), length (u64), flags
//! (u32, see [`EntryFlags`]), reserved (u32, zero). Entry 0 is the root task, named
//! [`ROOT_NAME`]. Files lie in table order, each at a page-aligned offset after the
//! table and after the previous file's end, all within the total length.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod elf;
#[cfg(feature = "std")]
mod pack;

#[cfg(feature = "std")]
pub use pack::pack;

/// The archive's first four bytes.
pub const MAGIC: [u8; 4] = *b"RBFS";
/// The format version this crate reads and writes.
pub const VERSION: u16 = 1;
/// Alignment of every file (and of the total length): the page size.
pub const PAGE_BYTES: u64 = 4096;
/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 16;
/// Bytes of one entry-table row.
pub const ENTRY_BYTES: usize = 56;
/// Longest file name in bytes.
pub const NAME_BYTES: usize = 32;
/// Most files one archive holds (header and table then fit in the first page).
pub const MAX_ENTRIES: usize = 64;
/// The name of entry 0, the root task.
pub const ROOT_NAME: &str = "root";

const _: () = assert!(HEADER_BYTES + MAX_ENTRIES * ENTRY_BYTES <= PAGE_BYTES as usize);

/// Per-file flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryFlags(pub u32);

impl EntryFlags {
    /// The file is an ELF program that [`elf::Program::parse`] accepted at pack time.
    pub const EXECUTABLE: Self = Self(1 << 0);
    /// Every flag this version defines; other bits must be zero.
    pub const ALL: Self = Self::EXECUTABLE;

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Why an archive was rejected (or, for the packer, could not be built). `entry` is the
/// index in the entry table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootfsError {
    /// Shorter than the header, or than the header plus the entry table.
    Truncated,
    /// The first four bytes are not `RBFS`.
    BadMagic,
    /// A version this parser does not know.
    UnsupportedVersion(u16),
    /// No entries: an archive always holds at least the root task.
    Empty,
    /// More than [`MAX_ENTRIES`] entries.
    TooManyEntries(usize),
    /// The header's total length is beyond the bytes given.
    LengthBeyondInput { total: u64, available: usize },
    /// The total length is not a multiple of [`PAGE_BYTES`], or does not even cover the
    /// entry table.
    BadTotalLength(u64),
    /// A name is empty, too long, not UTF-8, contains NUL or a control character, or
    /// is followed by padding that is not all NUL.
    BadName { entry: usize },
    /// Two entries have the same name.
    DuplicateName { entry: usize },
    /// Entry 0 is not named [`ROOT_NAME`].
    RootNotFirst,
    /// A file's offset is not a multiple of [`PAGE_BYTES`].
    Misaligned { entry: usize },
    /// A file's offset is inside the header/table or before the previous file's end.
    Overlap { entry: usize },
    /// A file ends beyond the total length (or its end overflows).
    OutOfBounds { entry: usize },
    /// Flag bits this version does not define.
    UnknownFlags { entry: usize, flags: u32 },
    /// The reserved word is not zero.
    ReservedNotZero { entry: usize },
    /// Packer only: the archive would exceed the address space.
    TooLarge,
}

impl core::fmt::Display for BootfsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated => write!(f, "archive truncated"),
            Self::BadMagic => write!(f, "not an RBFS archive (bad magic)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported archive version {v}"),
            Self::Empty => write!(f, "archive has no entries (the root task is required)"),
            Self::TooManyEntries(n) => write!(f, "{n} entries, at most {MAX_ENTRIES} allowed"),
            Self::LengthBeyondInput { total, available } => {
                write!(f, "header says {total} bytes, only {available} given")
            }
            Self::BadTotalLength(total) => write!(f, "bad total length {total}"),
            Self::BadName { entry } => write!(f, "entry {entry}: bad name"),
            Self::DuplicateName { entry } => write!(f, "entry {entry}: duplicate name"),
            Self::RootNotFirst => write!(f, "entry 0 is not named `{ROOT_NAME}`"),
            Self::Misaligned { entry } => write!(f, "entry {entry}: offset not page-aligned"),
            Self::Overlap { entry } => write!(f, "entry {entry}: overlaps the table or the previous file"),
            Self::OutOfBounds { entry } => write!(f, "entry {entry}: extends beyond the archive"),
            Self::UnknownFlags { entry, flags } => write!(f, "entry {entry}: unknown flags {flags:#x}"),
            Self::ReservedNotZero { entry } => write!(f, "entry {entry}: reserved field not zero"),
            Self::TooLarge => write!(f, "archive too large"),
        }
    }
}

/// `n` rounded up to the next page boundary, `None` on overflow.
pub(crate) const fn page_align_up(n: u64) -> Option<u64> {
    match n.checked_add(PAGE_BYTES - 1) {
        Some(end) => Some(end & !(PAGE_BYTES - 1)),
        None => None,
    }
}

/// Little-endian reads that return `None` instead of panicking past the end.
pub(crate) fn read_bytes<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub(crate) fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    read_bytes(bytes, at).map(u16::from_le_bytes)
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    read_bytes(bytes, at).map(u32::from_le_bytes)
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    read_bytes(bytes, at).map(u64::from_le_bytes)
}

/// The name in a NUL-padded field, if it is a valid name.
pub(crate) fn decode_name(field: &[u8; NAME_BYTES]) -> Option<&str> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
    let (name, padding) = field.split_at(len);
    if padding.iter().any(|&b| b != 0) {
        return None;
    }
    let name = core::str::from_utf8(name).ok()?;
    valid_name(name).then_some(name)
}

/// Names are 1..=[`NAME_BYTES`] bytes of UTF-8 without control characters (so they
/// print safely and NUL padding is unambiguous).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= NAME_BYTES && !name.chars().any(char::is_control)
}

/// One raw entry-table row.
struct RawEntry<'a> {
    name: &'a [u8; NAME_BYTES],
    offset: u64,
    len: u64,
    flags: u32,
    reserved: u32,
}

fn raw_entry(bytes: &[u8], index: usize) -> Option<RawEntry<'_>> {
    let at = HEADER_BYTES.checked_add(index.checked_mul(ENTRY_BYTES)?)?;
    let row = bytes.get(at..at.checked_add(ENTRY_BYTES)?)?;
    Some(RawEntry {
        name: row.get(..NAME_BYTES)?.try_into().ok()?,
        offset: read_u64(row, 32)?,
        len: read_u64(row, 40)?,
        flags: read_u32(row, 48)?,
        reserved: read_u32(row, 52)?,
    })
}

/// A validated boot archive.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    /// Exactly the archive's total length.
    bytes: &'a [u8],
    count: usize,
}

/// One file in an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    name: &'a str,
    offset: u64,
    data: &'a [u8],
    flags: EntryFlags,
}

impl<'a> Entry<'a> {
    /// The file's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The file's contents.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Offset of the file from the start of the archive: a multiple of [`PAGE_BYTES`],
    /// so the file's pages are the archive's pages from `offset / PAGE_BYTES` on.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file's flags.
    pub fn flags(&self) -> EntryFlags {
        self.flags
    }

    /// Whether the file is a program that passed the ELF checks when packed.
    pub fn is_executable(&self) -> bool {
        self.flags.contains(EntryFlags::EXECUTABLE)
    }
}

impl<'a> Archive<'a> {
    /// Validates `bytes` as an archive. Bytes beyond the header's total length (a
    /// loader's page padding, say) are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BootfsError> {
        let magic: [u8; 4] = read_bytes(bytes, 0).ok_or(BootfsError::Truncated)?;
        if magic != MAGIC {
            return Err(BootfsError::BadMagic);
        }
        let version = read_u16(bytes, 4).ok_or(BootfsError::Truncated)?;
        if version != VERSION {
            return Err(BootfsError::UnsupportedVersion(version));
        }
        let count = usize::from(read_u16(bytes, 6).ok_or(BootfsError::Truncated)?);
        let total = read_u64(bytes, 8).ok_or(BootfsError::Truncated)?;
        if count == 0 {
            return Err(BootfsError::Empty);
        }
        if count > MAX_ENTRIES {
            return Err(BootfsError::TooManyEntries(count));
        }
        let table_end = (HEADER_BYTES + count * ENTRY_BYTES) as u64;
        let data_start = page_align_up(table_end).ok_or(BootfsError::BadTotalLength(total))?;
        if total % PAGE_BYTES != 0 || total < data_start {
            return Err(BootfsError::BadTotalLength(total));
        }
        let bytes = usize::try_from(total)
            .ok()
            .and_then(|total| bytes.get(..total))
            .ok_or(BootfsError::LengthBeyondInput { total, available: bytes.len() })?;

        let mut previous_end = data_start;
        for entry in 0..count {
            let raw = raw_entry(bytes, entry).ok_or(BootfsError::Truncated)?;
            let name = decode_name(raw.name).ok_or(BootfsError::BadName { entry })?;
            if entry == 0 && name != ROOT_NAME {
                return Err(BootfsError::RootNotFirst);
            }
            // Quadratic, but over at most MAX_ENTRIES names and without allocating.
            let duplicate = (0..entry)
                .filter_map(|other| raw_entry(bytes, other))
                .any(|other| decode_name(other.name) == Some(name));
            if duplicate {
                return Err(BootfsError::DuplicateName { entry });
            }
            if raw.flags & !EntryFlags::ALL.0 != 0 {
                return Err(BootfsError::UnknownFlags { entry, flags: raw.flags });
            }
            if raw.reserved != 0 {
                return Err(BootfsError::ReservedNotZero { entry });
            }
            if raw.offset % PAGE_BYTES != 0 {
                return Err(BootfsError::Misaligned { entry });
            }
            if raw.offset < previous_end {
                return Err(BootfsError::Overlap { entry });
            }
            let end = raw.offset.checked_add(raw.len).ok_or(BootfsError::OutOfBounds { entry })?;
            if end > total {
                return Err(BootfsError::OutOfBounds { entry });
            }
            previous_end = end;
        }
        Ok(Self { bytes, count })
    }

    /// The archive's bytes (exactly its total length).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Always false: a valid archive holds at least the root task.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The file at `index` in the table.
    pub fn get(&self, index: usize) -> Option<Entry<'a>> {
        if index >= self.count {
            return None;
        }
        let raw = raw_entry(self.bytes, index)?;
        let start = usize::try_from(raw.offset).ok()?;
        let end = start.checked_add(usize::try_from(raw.len).ok()?)?;
        Some(Entry {
            name: decode_name(raw.name)?,
            offset: raw.offset,
            data: self.bytes.get(start..end)?,
            flags: EntryFlags(raw.flags),
        })
    }

    /// The files in table order, the root task first.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + 'a {
        let archive = *self;
        (0..self.count).filter_map(move |index| archive.get(index))
    }

    /// The root task (entry 0).
    pub fn root(&self) -> Option<Entry<'a>> {
        self.get(0)
    }

    /// The file named `name`.
    pub fn find(&self, name: &str) -> Option<Entry<'a>> {
        self.entries().find(|entry| entry.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_padded_printable_utf8() {
        let field = |s: &[u8]| {
            let mut field = [0u8; NAME_BYTES];
            field[..s.len()].copy_from_slice(s);
            field
        };
        assert_eq!(decode_name(&field(b"root")), Some("root"));
        assert_eq!(decode_name(&field(&[b'a'; NAME_BYTES])), Some(&"a".repeat(NAME_BYTES)[..]));
        assert_eq!(decode_name(&field(b"")), None);
        assert_eq!(decode_name(&field(b"a\0b")), None);
        assert_eq!(decode_name(&field(b"\xff")), None);
        assert_eq!(decode_name(&field(b"a\nb")), None);
        assert_eq!(decode_name(&field("ramen-\u{1f35c}".as_bytes())), Some("ramen-\u{1f35c}"));
    }

    #[test]
    fn page_rounding_saturates_to_none() {
        assert_eq!(page_align_up(0), Some(0));
        assert_eq!(page_align_up(1), Some(PAGE_BYTES));
        assert_eq!(page_align_up(PAGE_BYTES), Some(PAGE_BYTES));
        assert_eq!(page_align_up(u64::MAX), None);
    }
}
