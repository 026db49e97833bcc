//! The ELF program parser: one test per rejection, plus never-panic properties.

mod common;

use common::{PT_LOAD, Phdr, R, W, X, elf, valid_elf};
use proptest::prelude::*;
use ramen_abi::syscall::{USER_BASE, USER_TOP};
use ramen_bootfs::elf::{ElfError, MAX_SEGMENTS, Program, SegmentFlags};

/// A one-segment program: text at `vaddr` from file offset 0x1000.
fn one(flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64, entry: u64) -> Result<(), ElfError> {
    Program::parse(&elf(entry, &[(PT_LOAD, flags, offset, vaddr, filesz, memsz)], 0x2000)).map(drop)
}

#[test]
fn accepts_a_well_formed_program() {
    let bytes = valid_elf();
    let program = Program::parse(&bytes).unwrap();
    assert_eq!(program.entry(), 0x40_1000);
    let segments = program.segments();
    assert_eq!(segments.len(), 3);
    assert!(segments[0].flags.executable() && !segments[0].flags.writable());
    assert_eq!(segments[1].flags, SegmentFlags::READ);
    assert!(segments[2].flags.writable() && segments[2].flags.readable());
    assert_eq!((segments[2].file_bytes, segments[2].mem_bytes), (8, 0x2000));
    assert_eq!((segments[2].page_start(), segments[2].page_end()), (0x40_3000, 0x40_5000));
    assert_eq!(program.file_data(&segments[0]).unwrap()[..4], [0x31, 0xff, 0xeb, 0xfe]);
}

#[test]
fn rejects_bad_headers() {
    let valid = valid_elf();
    let with = |at: usize, value: &[u8]| {
        let mut bytes = valid.clone();
        bytes[at..at + value.len()].copy_from_slice(value);
        Program::parse(&bytes).map(drop)
    };
    assert_eq!(Program::parse(&valid[..63]).map(drop), Err(ElfError::Truncated));
    assert_eq!(Program::parse(&[]).map(drop), Err(ElfError::Truncated));
    assert_eq!(with(0, b"\x7fELG"), Err(ElfError::BadMagic));
    assert_eq!(with(4, &[1]), Err(ElfError::Not64Bit));
    assert_eq!(with(5, &[2]), Err(ElfError::NotLittleEndian));
    assert_eq!(with(6, &[0]), Err(ElfError::BadVersion));
    assert_eq!(with(20, &[2, 0, 0, 0]), Err(ElfError::BadVersion));
    assert_eq!(with(16, &3u16.to_le_bytes()), Err(ElfError::NotExecutable(3)));
    assert_eq!(with(18, &3u16.to_le_bytes()), Err(ElfError::WrongMachine(3)));
    assert_eq!(with(54, &32u16.to_le_bytes()), Err(ElfError::BadProgramHeaderSize(32)));
    assert_eq!(with(32, &0x3000u64.to_le_bytes()), Err(ElfError::ProgramHeadersOutOfBounds));
    assert_eq!(with(32, &u64::MAX.to_le_bytes()), Err(ElfError::ProgramHeadersOutOfBounds));
    assert_eq!(with(56, &0xffffu16.to_le_bytes()), Err(ElfError::ProgramHeadersOutOfBounds));
    assert_eq!(with(56, &0u16.to_le_bytes()), Err(ElfError::NoLoadSegments));
}

#[test]
fn rejects_dynamic_and_tls() {
    let with_extra = |p_type: u32| {
        Program::parse(&elf(
            0x40_1000,
            &[(PT_LOAD, R | X, 0x1000, 0x40_1000, 0x10, 0x10), (p_type, R, 0, 0, 0, 0)],
            0x2000,
        ))
        .map(drop)
    };
    assert_eq!(with_extra(2), Err(ElfError::Dynamic { index: 1 })); // PT_DYNAMIC
    assert_eq!(with_extra(3), Err(ElfError::Dynamic { index: 1 })); // PT_INTERP
    assert_eq!(with_extra(7), Err(ElfError::ThreadLocal { index: 1 })); // PT_TLS
    assert_eq!(with_extra(4), Ok(())); // PT_NOTE is ignored
}

#[test]
fn rejects_bad_segments() {
    let e = 0x40_1000;
    assert_eq!(one(R | X, 0x1000, e, 0x20, 0x10, e), Err(ElfError::FileLargerThanMemory { index: 0 }));
    assert_eq!(one(R | X, 0x1000, e, 0x1001, 0x2000, e), Err(ElfError::SegmentOutsideFile { index: 0 }));
    assert_eq!(one(R | X, u64::MAX, e, 2, 2, e), Err(ElfError::SegmentOutsideFile { index: 0 }));
    assert_eq!(one(R | X, 0x1000, e + 8, 0x10, 0x10, e + 8), Err(ElfError::Misaligned { index: 0 }));
    assert_eq!(one(R | W | X, 0x1000, e, 0x10, 0x10, e), Err(ElfError::WriteAndExecute { index: 0 }));
    // Below USER_BASE (null page region) and at/above USER_TOP, and straddling it.
    assert_eq!(one(R | X, 0x1000, 0x1000, 0x10, 0x10, 0x1000), Err(ElfError::OutsideUserSpace { index: 0 }));
    let kernel = 0xffff_ffff_8000_1000;
    assert_eq!(one(R | X, 0x1000, kernel, 0x10, 0x10, kernel), Err(ElfError::OutsideUserSpace { index: 0 }));
    let top = USER_TOP - 0x1000;
    assert_eq!(one(R | X, 0x1000, top, 0x10, 0x2000, top), Err(ElfError::OutsideUserSpace { index: 0 }));
    assert_eq!(one(R | X, 0x1000, top, 0x10, 0x1000, top), Ok(()));
    assert_eq!(one(R | X, 0x1000, USER_BASE, 0x10, 0x10, USER_BASE), Ok(()));
    let wrap: u64 = !0xfff;
    assert_eq!(one(R | X, 0x1000, wrap, 0x10, 0x2000, wrap), Err(ElfError::AddressOverflow { index: 0 }));
    // memsz that ends on the last page rounds up past u64::MAX.
    assert_eq!(one(R | X, 0x1000, wrap, 0x10, 0xfff, wrap), Err(ElfError::AddressOverflow { index: 0 }));
}

#[test]
fn rejects_segments_sharing_a_page() {
    let phdrs: &[Phdr] =
        &[(PT_LOAD, R | X, 0x1000, 0x40_1000, 0x800, 0x800), (PT_LOAD, R | W, 0x1800, 0x40_1800, 0x10, 0x10)];
    assert_eq!(Program::parse(&elf(0x40_1000, phdrs, 0x2000)).map(drop), Err(ElfError::Overlap { index: 1 }));
    // Same pages, different order: the later header is named.
    let phdrs: &[Phdr] =
        &[(PT_LOAD, R, 0x1000, 0x40_3000, 0x10, 0x3000), (PT_LOAD, R | X, 0x1000, 0x40_4000, 0x10, 0x10)];
    assert_eq!(Program::parse(&elf(0x40_4000, phdrs, 0x2000)).map(drop), Err(ElfError::Overlap { index: 1 }));
}

#[test]
fn entry_must_be_in_executable_file_bytes() {
    let phdrs: &[Phdr] =
        &[(PT_LOAD, R | X, 0x1000, 0x40_1000, 0x10, 0x1000), (PT_LOAD, R | W, 0x1000, 0x40_3000, 0x10, 0x10)];
    let parse = |entry| Program::parse(&elf(entry, phdrs, 0x2000)).map(drop);
    assert_eq!(parse(0x40_100f), Ok(()));
    assert_eq!(parse(0x40_1010), Err(ElfError::EntryNotExecutable(0x40_1010))); // bss part
    assert_eq!(parse(0x40_3000), Err(ElfError::EntryNotExecutable(0x40_3000))); // data
    assert_eq!(parse(0), Err(ElfError::EntryNotExecutable(0)));
}

#[test]
fn counts_segments_and_skips_empty_ones() {
    let phdrs: Vec<Phdr> = (0..=MAX_SEGMENTS as u64)
        .map(|i| (PT_LOAD, R | X, 0x1000, 0x40_1000 + i * 0x1000, 0x10, 0x10))
        .collect();
    let parse = |phdrs: &[Phdr]| Program::parse(&elf(0x40_1000, phdrs, 0x2000)).map(|p| p.segments().len());
    assert_eq!(parse(&phdrs), Err(ElfError::TooManySegments));
    assert_eq!(parse(&phdrs[..MAX_SEGMENTS]), Ok(MAX_SEGMENTS));
    let mut with_empty = phdrs[..2].to_vec();
    with_empty.push((PT_LOAD, R | W | X, 0, 0, 0, 0)); // memsz 0: maps nothing, ignored
    assert_eq!(parse(&with_empty), Ok(2));
}

/// The test binary itself is a PIE (`ET_DYN`) linked low: a real ELF that must be refused.
#[test]
fn refuses_the_host_test_binary() {
    let Ok(bytes) = std::fs::read("/proc/self/exe") else { return };
    match Program::parse(&bytes) {
        Err(ElfError::NotExecutable(3)) => {} // PIE: ET_DYN
        Err(ElfError::Dynamic { .. } | ElfError::OutsideUserSpace { .. }) => {} // static non-PIE
        other => panic!("host binary parsed as {other:?}"),
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Program::parse(&bytes);
    }

    #[test]
    fn mutated_programs_never_panic(
        edits in proptest::collection::vec((0usize..0x200, any::<u8>()), 1..8),
        cut in 0usize..0x3100,
    ) {
        let mut bytes = valid_elf();
        for (at, value) in edits {
            bytes[at] = value;
        }
        if let Ok(program) = Program::parse(&bytes[..cut.min(bytes.len())]) {
            // Whatever parses obeys the rules.
            for segment in program.segments() {
                prop_assert!(segment.vaddr >= USER_BASE && segment.page_end() <= USER_TOP);
                prop_assert!(!(segment.flags.writable() && segment.flags.executable()));
                prop_assert!(program.file_data(segment).is_some());
            }
        }
    }
}
