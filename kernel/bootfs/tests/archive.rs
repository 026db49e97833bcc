//! The boot archive: pack/parse round trips, one test per rejection, and never-panic
//! properties over random and mutated input.

mod common;

use proptest::prelude::*;
use ramen_bootfs::{
    Archive, BootfsError, ENTRY_BYTES, EntryFlags, HEADER_BYTES, MAX_ENTRIES, NAME_BYTES, PAGE_BYTES, pack,
};

fn sample() -> Vec<u8> {
    let elf = common::valid_elf();
    pack(&[("root", &elf), ("hello.txt", b"hello"), ("empty", b"")]).unwrap()
}

/// Byte offset of entry `i`'s field at `field` (0 name, 32 offset, 40 length, 48 flags, 52 reserved).
fn at(i: usize, field: usize) -> usize {
    HEADER_BYTES + i * ENTRY_BYTES + field
}

fn patched(at: usize, value: &[u8]) -> Result<(), BootfsError> {
    let mut bytes = sample();
    bytes[at..at + value.len()].copy_from_slice(value);
    Archive::parse(&bytes).map(drop)
}

#[test]
fn packs_and_finds_files() {
    let bytes = sample();
    assert_eq!(bytes.len() % PAGE_BYTES as usize, 0);
    let archive = Archive::parse(&bytes).unwrap();
    assert_eq!(archive.len(), 3);
    let names: Vec<_> = archive.entries().map(|e| e.name()).collect();
    assert_eq!(names, ["root", "hello.txt", "empty"]);
    let root = archive.root().unwrap();
    assert!(root.is_executable());
    assert_eq!(root.data(), &common::valid_elf()[..]);
    let hello = archive.find("hello.txt").unwrap();
    assert_eq!((hello.data(), hello.is_executable()), (&b"hello"[..], false));
    assert_eq!(hello.offset() % PAGE_BYTES, 0);
    assert!(archive.find("empty").unwrap().data().is_empty());
    assert!(archive.find("missing").is_none());
    // Padding after the archive (a loader rounding up) is ignored.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0xaa; 100]);
    assert_eq!(Archive::parse(&padded).unwrap().bytes(), &bytes[..]);
}

#[test]
fn packer_rejects_what_the_parser_would() {
    assert_eq!(pack(&[]), Err(BootfsError::Empty));
    assert_eq!(pack(&[("init", b"")]), Err(BootfsError::RootNotFirst));
    assert_eq!(pack(&[("root", b""), ("root", b"")]), Err(BootfsError::DuplicateName { entry: 1 }));
    assert_eq!(pack(&[("root", b""), ("", b"")]), Err(BootfsError::BadName { entry: 1 }));
    let long = "x".repeat(NAME_BYTES + 1);
    assert_eq!(pack(&[("root", b""), (&long, b"")]), Err(BootfsError::BadName { entry: 1 }));
    assert_eq!(pack(&[("root", b""), ("a\tb", b"")]), Err(BootfsError::BadName { entry: 1 }));
    let names: Vec<String> =
        (0..=MAX_ENTRIES).map(|i| if i == 0 { "root".into() } else { i.to_string() }).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    assert_eq!(pack(&files), Err(BootfsError::TooManyEntries(MAX_ENTRIES + 1)));
    assert!(pack(&files[..MAX_ENTRIES]).is_ok());
}

#[test]
fn rejects_bad_headers() {
    assert_eq!(Archive::parse(&[]).map(drop), Err(BootfsError::Truncated));
    assert_eq!(patched(0, b"RBFX"), Err(BootfsError::BadMagic));
    assert_eq!(patched(4, &2u16.to_le_bytes()), Err(BootfsError::UnsupportedVersion(2)));
    assert_eq!(patched(6, &0u16.to_le_bytes()), Err(BootfsError::Empty));
    assert_eq!(patched(6, &65u16.to_le_bytes()), Err(BootfsError::TooManyEntries(65)));
    assert_eq!(patched(8, &100u64.to_le_bytes()), Err(BootfsError::BadTotalLength(100)));
    assert_eq!(patched(8, &0u64.to_le_bytes()), Err(BootfsError::BadTotalLength(0)));
    let total = sample().len() as u64;
    assert_eq!(
        patched(8, &(total + PAGE_BYTES).to_le_bytes()),
        Err(BootfsError::LengthBeyondInput { total: total + PAGE_BYTES, available: total as usize })
    );
    assert_eq!(
        patched(8, &(!0xfff_u64).to_le_bytes()),
        Err(BootfsError::LengthBeyondInput { total: !0xfff, available: total as usize })
    );
}

#[test]
fn rejects_bad_entries() {
    let bytes = sample();
    let offset = |i: usize| u64::from_le_bytes(bytes[at(i, 32)..at(i, 40)].try_into().unwrap());
    assert_eq!(patched(at(0, 0), b"init"), Err(BootfsError::RootNotFirst));
    assert_eq!(patched(at(1, 0), b"root\0\0\0\0\0"), Err(BootfsError::DuplicateName { entry: 1 }));
    assert_eq!(patched(at(1, 0), &[0]), Err(BootfsError::BadName { entry: 1 }));
    assert_eq!(patched(at(1, 0), b"hello\0x"), Err(BootfsError::BadName { entry: 1 }));
    assert_eq!(patched(at(1, 0), b"\xff"), Err(BootfsError::BadName { entry: 1 }));
    assert_eq!(
        patched(at(2, 48), &2u32.to_le_bytes()),
        Err(BootfsError::UnknownFlags { entry: 2, flags: 2 })
    );
    assert_eq!(patched(at(2, 52), &1u32.to_le_bytes()), Err(BootfsError::ReservedNotZero { entry: 2 }));
    assert_eq!(patched(at(1, 32), &(offset(1) + 1).to_le_bytes()), Err(BootfsError::Misaligned { entry: 1 }));
    // Into the table's page, onto the previous file, past the end.
    assert_eq!(patched(at(0, 32), &0u64.to_le_bytes()), Err(BootfsError::Overlap { entry: 0 }));
    assert_eq!(patched(at(1, 32), &offset(0).to_le_bytes()), Err(BootfsError::Overlap { entry: 1 }));
    assert_eq!(
        patched(at(2, 40), &(PAGE_BYTES + 1).to_le_bytes()),
        Err(BootfsError::OutOfBounds { entry: 2 })
    );
    assert_eq!(patched(at(2, 40), &u64::MAX.to_le_bytes()), Err(BootfsError::OutOfBounds { entry: 2 }));
    assert_eq!(patched(at(1, 32), &(!0xfff_u64).to_le_bytes()), Err(BootfsError::OutOfBounds { entry: 1 }));
    // Flags are data, not checked against the contents; a known flag is accepted.
    assert_eq!(patched(at(1, 48), &EntryFlags::EXECUTABLE.0.to_le_bytes()), Ok(()));
}

#[test]
fn every_truncation_fails() {
    let bytes = sample();
    for len in 0..bytes.len() {
        assert!(Archive::parse(&bytes[..len]).is_err(), "truncated to {len} bytes still parsed");
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,32}"
}

proptest! {
    #[test]
    fn pack_then_parse_round_trips(
        files in proptest::collection::vec((name(), proptest::collection::vec(any::<u8>(), 0..5000)), 0..6)
    ) {
        let mut all: Vec<(String, Vec<u8>)> = vec![("root".into(), vec![1, 2, 3])];
        for (name, data) in files {
            if all.iter().all(|(other, _)| *other != name) {
                all.push((name, data));
            }
        }
        let refs: Vec<(&str, &[u8])> = all.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        let bytes = pack(&refs).unwrap();
        let archive = Archive::parse(&bytes).unwrap();
        prop_assert_eq!(archive.len(), all.len());
        for (entry, (name, data)) in archive.entries().zip(&all) {
            prop_assert_eq!(entry.name(), name.as_str());
            prop_assert_eq!(entry.data(), data.as_slice());
            prop_assert_eq!(entry.offset() % PAGE_BYTES, 0);
            prop_assert_eq!(archive.find(name), Some(entry));
        }
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..9000), magic in any::<bool>()) {
        if magic && bytes.len() >= 8 {
            bytes[..6].copy_from_slice(b"RBFS\x01\x00");
        }
        let _ = Archive::parse(&bytes);
    }

    #[test]
    fn mutated_archives_never_panic(edits in proptest::collection::vec((0usize..300, any::<u8>()), 1..8)) {
        let mut bytes = sample();
        for (at, value) in edits {
            bytes[at] = value;
        }
        if let Ok(archive) = Archive::parse(&bytes) {
            // Whatever parses is consistent: every entry is readable and in bounds.
            prop_assert_eq!(archive.entries().count(), archive.len());
            for entry in archive.entries() {
                prop_assert_eq!(entry.offset() % PAGE_BYTES, 0);
                prop_assert!(archive.find(entry.name()).is_some());
            }
        }
    }
}
