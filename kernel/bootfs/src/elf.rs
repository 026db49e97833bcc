//! ELF64 program parsing: just enough to load a statically linked RamenOS program.
//!
//! Accepted: ELF64, little-endian, x86_64, `ET_EXEC` (static, non-PIE), at most
//! [`MAX_SEGMENTS`] non-empty `PT_LOAD` segments, each
//! - inside the user half (`USER_BASE..USER_TOP`), without address overflow;
//! - with `filesz <= memsz` and its file bytes inside the file;
//! - with `vaddr % 4096 == offset % 4096`, so file pages map straight to memory;
//! - never writable and executable at once (W^X);
//! - sharing no page with another segment (each page gets one set of permissions);
//!
//! and an entry point inside the file-backed part of an executable segment.
//! `PT_INTERP`, `PT_DYNAMIC` and `PT_TLS` are rejected (no dynamic linking, no TLS);
//! other program headers (`PT_NOTE`, `PT_GNU_STACK`, ...) are ignored.

use ramen_abi::syscall::{USER_BASE, USER_TOP};

use crate::{PAGE_BYTES, read_bytes, read_u16, read_u32, read_u64};

/// Most loadable segments one program may have (our linker script makes three).
pub const MAX_SEGMENTS: usize = 8;

const EHDR_BYTES: usize = 64;
const PHDR_BYTES: usize = 56;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_TLS: u32 = 7;

/// Why an ELF file was rejected. `index` is the program header's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than the ELF header.
    Truncated,
    /// Not `\x7fELF`.
    BadMagic,
    /// Not ELFCLASS64.
    Not64Bit,
    /// Not little-endian.
    NotLittleEndian,
    /// ELF version not 1.
    BadVersion,
    /// Not `ET_EXEC` (a PIE or shared object is `ET_DYN`): the type found.
    NotExecutable(u16),
    /// Not x86_64: the machine found.
    WrongMachine(u16),
    /// `e_phentsize` is not 56.
    BadProgramHeaderSize(u16),
    /// The program header table does not lie within the file.
    ProgramHeadersOutOfBounds,
    /// `PT_INTERP` or `PT_DYNAMIC`: dynamically linked.
    Dynamic { index: usize },
    /// `PT_TLS`: thread-local storage is not supported.
    ThreadLocal { index: usize },
    /// No loadable segment.
    NoLoadSegments,
    /// More than [`MAX_SEGMENTS`] loadable segments.
    TooManySegments,
    /// `filesz > memsz`.
    FileLargerThanMemory { index: usize },
    /// The segment's file bytes extend beyond the file.
    SegmentOutsideFile { index: usize },
    /// `vaddr` and `offset` differ modulo the page size.
    Misaligned { index: usize },
    /// `vaddr + memsz` (or its page rounding) overflows.
    AddressOverflow { index: usize },
    /// The segment is not inside `USER_BASE..USER_TOP`.
    OutsideUserSpace { index: usize },
    /// Writable and executable.
    WriteAndExecute { index: usize },
    /// The segment shares a page with an earlier one.
    Overlap { index: usize },
    /// The entry point is not in the file-backed part of an executable segment.
    EntryNotExecutable(u64),
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated => write!(f, "truncated ELF header"),
            Self::BadMagic => write!(f, "not an ELF file"),
            Self::Not64Bit => write!(f, "not ELF64"),
            Self::NotLittleEndian => write!(f, "not little-endian"),
            Self::BadVersion => write!(f, "unknown ELF version"),
            Self::NotExecutable(t) => write!(f, "ELF type {t}, expected ET_EXEC (static, non-PIE)"),
            Self::WrongMachine(m) => write!(f, "machine {m}, expected x86_64 ({EM_X86_64})"),
            Self::BadProgramHeaderSize(s) => write!(f, "program header size {s}, expected {PHDR_BYTES}"),
            Self::ProgramHeadersOutOfBounds => write!(f, "program headers extend beyond the file"),
            Self::Dynamic { index } => write!(f, "program header {index}: dynamic linking is not supported"),
            Self::ThreadLocal { index } => write!(f, "program header {index}: TLS is not supported"),
            Self::NoLoadSegments => write!(f, "no PT_LOAD segment"),
            Self::TooManySegments => write!(f, "more than {MAX_SEGMENTS} PT_LOAD segments"),
            Self::FileLargerThanMemory { index } => write!(f, "segment {index}: filesz > memsz"),
            Self::SegmentOutsideFile { index } => write!(f, "segment {index}: file bytes beyond the file"),
            Self::Misaligned { index } => write!(f, "segment {index}: vaddr and offset differ mod 4096"),
            Self::AddressOverflow { index } => write!(f, "segment {index}: address overflow"),
            Self::OutsideUserSpace { index } => {
                write!(f, "segment {index}: outside user space {USER_BASE:#x}..{USER_TOP:#x}")
            }
            Self::WriteAndExecute { index } => write!(f, "segment {index}: writable and executable (W^X)"),
            Self::Overlap { index } => write!(f, "segment {index}: shares a page with another segment"),
            Self::EntryNotExecutable(entry) => {
                write!(f, "entry point {entry:#x} not in an executable segment")
            }
        }
    }
}

/// A segment's permissions (the ELF `p_flags` bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentFlags(pub u32);

impl SegmentFlags {
    pub const EXECUTE: Self = Self(1);
    pub const WRITE: Self = Self(2);
    pub const READ: Self = Self(4);

    pub const fn readable(self) -> bool {
        self.0 & Self::READ.0 != 0
    }

    pub const fn writable(self) -> bool {
        self.0 & Self::WRITE.0 != 0
    }

    pub const fn executable(self) -> bool {
        self.0 & Self::EXECUTE.0 != 0
    }
}

/// One validated loadable segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Where the segment starts in memory (not necessarily page-aligned).
    pub vaddr: u64,
    /// Bytes in memory; those past `file_bytes` are zero.
    pub mem_bytes: u64,
    /// Bytes taken from the file.
    pub file_bytes: u64,
    /// Where those bytes start in the file (congruent to `vaddr` mod 4096).
    pub offset: u64,
    pub flags: SegmentFlags,
}

impl Segment {
    /// First page-aligned address the segment touches.
    pub const fn page_start(&self) -> u64 {
        self.vaddr & !(PAGE_BYTES - 1)
    }

    /// One past the last page the segment touches (validated not to overflow).
    pub const fn page_end(&self) -> u64 {
        (self.vaddr + self.mem_bytes).next_multiple_of(PAGE_BYTES)
    }
}

/// A validated program: entry point and loadable segments, in file order.
#[derive(Clone, Copy, Debug)]
pub struct Program<'a> {
    bytes: &'a [u8],
    entry: u64,
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
}

impl<'a> Program<'a> {
    /// Validates `bytes` as a loadable RamenOS program (see the module docs).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        let ident: [u8; 16] = read_bytes(bytes, 0).ok_or(ElfError::Truncated)?;
        if bytes.len() < EHDR_BYTES {
            return Err(ElfError::Truncated);
        }
        if ident[..4] != *b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        if ident[4] != ELFCLASS64 {
            return Err(ElfError::Not64Bit);
        }
        if ident[5] != ELFDATA2LSB {
            return Err(ElfError::NotLittleEndian);
        }
        if ident[6] != EV_CURRENT {
            return Err(ElfError::BadVersion);
        }
        let half = |at| read_u16(bytes, at).ok_or(ElfError::Truncated);
        let e_type = half(16)?;
        if e_type != ET_EXEC {
            return Err(ElfError::NotExecutable(e_type));
        }
        let machine = half(18)?;
        if machine != EM_X86_64 {
            return Err(ElfError::WrongMachine(machine));
        }
        if read_u32(bytes, 20) != Some(u32::from(EV_CURRENT)) {
            return Err(ElfError::BadVersion);
        }
        let entry = read_u64(bytes, 24).ok_or(ElfError::Truncated)?;
        let phoff = read_u64(bytes, 32).ok_or(ElfError::Truncated)?;
        let phentsize = half(54)?;
        let phnum = usize::from(half(56)?);
        if phnum > 0 && usize::from(phentsize) != PHDR_BYTES {
            return Err(ElfError::BadProgramHeaderSize(phentsize));
        }
        let table = usize::try_from(phoff)
            .ok()
            .and_then(|start| Some((start, start.checked_add(phnum.checked_mul(PHDR_BYTES)?)?)))
            .and_then(|(start, end)| bytes.get(start..end))
            .ok_or(ElfError::ProgramHeadersOutOfBounds)?;

        let mut program = Self { bytes, entry, segments: [Segment::default(); MAX_SEGMENTS], count: 0 };
        for index in 0..phnum {
            let at = index * PHDR_BYTES;
            let field = |offset| read_u64(table, at + offset).ok_or(ElfError::ProgramHeadersOutOfBounds);
            let p_type = read_u32(table, at).ok_or(ElfError::ProgramHeadersOutOfBounds)?;
            match p_type {
                PT_LOAD => {}
                PT_DYNAMIC | PT_INTERP => return Err(ElfError::Dynamic { index }),
                PT_TLS => return Err(ElfError::ThreadLocal { index }),
                _ => continue,
            }
            let segment = Segment {
                flags: SegmentFlags(read_u32(table, at + 4).ok_or(ElfError::ProgramHeadersOutOfBounds)?),
                offset: field(8)?,
                vaddr: field(16)?,
                file_bytes: field(32)?,
                mem_bytes: field(40)?,
            };
            if segment.mem_bytes == 0 {
                continue; // Maps nothing.
            }
            program.push(index, segment)?;
        }
        if program.count == 0 {
            return Err(ElfError::NoLoadSegments);
        }
        let entry_ok = program
            .segments()
            .iter()
            .any(|s| s.flags.executable() && entry >= s.vaddr && entry - s.vaddr < s.file_bytes);
        if !entry_ok {
            return Err(ElfError::EntryNotExecutable(entry));
        }
        Ok(program)
    }

    /// Checks one non-empty `PT_LOAD` segment and adds it.
    fn push(&mut self, index: usize, segment: Segment) -> Result<(), ElfError> {
        if segment.file_bytes > segment.mem_bytes {
            return Err(ElfError::FileLargerThanMemory { index });
        }
        let file_end = segment.offset.checked_add(segment.file_bytes);
        if file_end.is_none_or(|end| end > self.bytes.len() as u64) {
            return Err(ElfError::SegmentOutsideFile { index });
        }
        if segment.vaddr % PAGE_BYTES != segment.offset % PAGE_BYTES {
            return Err(ElfError::Misaligned { index });
        }
        let end = segment.vaddr.checked_add(segment.mem_bytes).and_then(crate::page_align_up);
        let Some(end) = end else { return Err(ElfError::AddressOverflow { index }) };
        if segment.vaddr < USER_BASE || end > USER_TOP {
            return Err(ElfError::OutsideUserSpace { index });
        }
        if segment.flags.writable() && segment.flags.executable() {
            return Err(ElfError::WriteAndExecute { index });
        }
        let overlaps = |other: &Segment| {
            segment.page_start() < other.page_end() && other.page_start() < segment.page_end()
        };
        if self.segments().iter().any(overlaps) {
            return Err(ElfError::Overlap { index });
        }
        let slot = self.segments.get_mut(self.count).ok_or(ElfError::TooManySegments)?;
        *slot = segment;
        self.count += 1;
        Ok(())
    }

    /// The entry point (inside an executable segment).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The non-empty loadable segments, in program-header order.
    pub fn segments(&self) -> &[Segment] {
        self.segments.get(..self.count).unwrap_or(&[])
    }

    /// The file bytes of `segment` (`file_bytes` long; the rest of the segment is zero).
    pub fn file_data(&self, segment: &Segment) -> Option<&'a [u8]> {
        let start = usize::try_from(segment.offset).ok()?;
        let end = start.checked_add(usize::try_from(segment.file_bytes).ok()?)?;
        self.bytes.get(start..end)
    }
}
