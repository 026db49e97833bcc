//! Decoder tests: round trips, and rejection of truncated and corrupted dumps.

use std::collections::BTreeMap;

use proptest::prelude::*;
use ramen_perf_export::decode::{DecodeError, Source, SourceId, Trace, decode, encode};
use ramen_perf_export::synthetic::ipc_pingpong;
use ramen_perf_record::dump::{
    Checksum, DumpWriter, FILE_HEADER_BYTES, NAME_THREAD, SECTION_HEADER_BYTES, SOURCE_CORE, SOURCE_THREAD,
};
use ramen_perf_record::{EventKind, Record, ThreadName};

fn dump(trace: &Trace) -> Vec<u8> {
    encode(trace).expect("valid trace encodes")
}

/// Writes a dump by hand, for cases `encode` would never produce.
fn handmade(cpus: u16, body: impl FnOnce(&mut DumpWriter<&mut dyn FnMut(&[u8])>)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sink = |bytes: &[u8]| out.extend_from_slice(bytes);
    let mut writer = DumpWriter::new(&mut sink as &mut dyn FnMut(&[u8]), cpus, 1_000_000_000).unwrap();
    body(&mut writer);
    let _ = writer.finish();
    out
}

/// Replaces the trailing checksum so that a deliberately edited dump passes it.
fn reseal(bytes: &mut [u8]) {
    let body_end = bytes.len() - SECTION_HEADER_BYTES - 8;
    let sum = Checksum::of(&bytes[..body_end]);
    let len = bytes.len();
    bytes[len - 8..].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn synthetic_trace_round_trips() {
    for cpus in [1, 2, 4] {
        let trace = ipc_pingpong(cpus, 5);
        assert_eq!(decode(&dump(&trace)).unwrap(), trace);
    }
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = dump(&ipc_pingpong(2, 3));
    for len in 0..bytes.len() {
        let error = decode(&bytes[..len]).expect_err("a truncated dump must not decode");
        assert!(
            matches!(error, DecodeError::Truncated { .. } | DecodeError::MissingEnd { .. }),
            "length {len}: {error}"
        );
    }
}

#[test]
fn every_single_byte_flip_is_detected() {
    // FNV-1a changes its state bijectively per byte, so no single-byte change can
    // leave the checksum intact; every flip must be caught somewhere.
    let bytes = dump(&ipc_pingpong(2, 2));
    for at in 0..bytes.len() {
        let mut broken = bytes.clone();
        broken[at] ^= 0x41;
        assert!(decode(&broken).is_err(), "flip at byte {at} went unnoticed");
    }
}

#[test]
fn errors_name_the_problem() {
    let good = dump(&ipc_pingpong(2, 1));

    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(decode(&bad), Err(DecodeError::BadMagic { .. })));

    let mut bad = good.clone();
    bad[8] = 9;
    assert_eq!(decode(&bad), Err(DecodeError::UnsupportedVersion(9)));

    let mut bad = good.clone();
    bad[12] = 0;
    assert_eq!(decode(&bad), Err(DecodeError::BadCpuCount(0)));

    let mut bad = good.clone();
    bad[16..24].fill(0);
    assert_eq!(decode(&bad), Err(DecodeError::ZeroTscHz));

    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let error = decode(&bad).unwrap_err();
    assert!(matches!(error, DecodeError::ChecksumMismatch { .. }));
    assert!(error.to_string().contains("checksum mismatch"), "{error}");

    let mut bad = good.clone();
    bad.push(0);
    assert!(matches!(decode(&bad), Err(DecodeError::TrailingBytes { count: 1, .. })));

    let error = decode(&good[..good.len() / 2]).unwrap_err();
    assert!(error.to_string().starts_with("truncated dump"), "{error}");

    let error = decode(&good[..FILE_HEADER_BYTES]).unwrap_err();
    assert!(matches!(error, DecodeError::MissingEnd { offset: FILE_HEADER_BYTES }), "{error}");
}

#[test]
fn unknown_section_is_rejected_even_with_a_valid_checksum() {
    let mut bytes = dump(&ipc_pingpong(1, 1));
    bytes[FILE_HEADER_BYTES] = 0x77;
    reseal(&mut bytes);
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::UnknownSection { kind: 0x77, offset: FILE_HEADER_BYTES })
    ));
}

#[test]
fn semantic_errors_are_rejected() {
    let record = |kind: u16, cpu: u16, thread: u32| Record { tsc: 5, kind, cpu, thread, args: [0; 2] };
    let instant = EventKind::UserInstant as u16;

    let bytes = handmade(1, |w| w.core(0, 0).unwrap());
    assert!(decode(&bytes).is_ok());

    let bytes = handmade(2, |w| w.core(0, 0).unwrap());
    assert_eq!(decode(&bytes), Err(DecodeError::MissingCore { cpu: 1 }));

    let bytes = handmade(1, |w| {
        w.core(0, 0).unwrap();
        w.core(0, 1).unwrap();
    });
    assert!(matches!(decode(&bytes), Err(DecodeError::DuplicateCore { cpu: 0, .. })));

    let bytes = handmade(1, |w| {
        w.core(0, 0).unwrap();
        w.name(NAME_THREAD, 3, "a").unwrap();
        w.name(NAME_THREAD, 3, "b").unwrap();
    });
    assert!(matches!(decode(&bytes), Err(DecodeError::DuplicateName { id: 3, .. })));

    let bytes = handmade(1, |w| {
        w.core(0, 0).unwrap();
        w.records(SOURCE_CORE, 0, 0, [record(0x7777, 0, 1)]).unwrap();
    });
    assert!(matches!(decode(&bytes), Err(DecodeError::UnknownEventKind { kind: 0x7777, .. })));

    let bytes = handmade(2, |w| {
        w.core(0, 0).unwrap();
        w.core(1, 0).unwrap();
        w.records(SOURCE_CORE, 0, 0, [record(instant, 1, 1)]).unwrap();
    });
    assert!(matches!(decode(&bytes), Err(DecodeError::RecordSourceMismatch { field: "cpu", .. })));

    let bytes = handmade(1, |w| {
        w.core(0, 0).unwrap();
        w.records(SOURCE_THREAD, 4, 0, [record(instant, 0, 5)]).unwrap();
    });
    assert!(matches!(decode(&bytes), Err(DecodeError::RecordSourceMismatch { field: "thread", .. })));

    let bytes = handmade(1, |w| {
        w.core(0, 0).unwrap();
        w.records(SOURCE_THREAD, 4, 0, [record(instant, 3, 4)]).unwrap();
    });
    assert!(matches!(decode(&bytes), Err(DecodeError::CpuOutOfRange { cpu: 3, .. })));
}

#[test]
fn sections_from_one_source_merge_and_lost_counts_add_up() {
    let rec = |tsc| Record::new(EventKind::IrqEnter, 0, 0, tsc, [1, 0]);
    let bytes = handmade(1, |w| {
        w.core(0, 0).unwrap();
        w.records(SOURCE_CORE, 0, 2, [rec(1)]).unwrap();
        w.records(SOURCE_CORE, 0, 3, [rec(2)]).unwrap();
    });
    let trace = decode(&bytes).unwrap();
    let source = &trace.sources[&SourceId::Core(0)];
    assert_eq!(source.lost, 5);
    assert_eq!(source.records, [rec(1), rec(2)]);
}

fn arb_trace() -> impl Strategy<Value = Trace> {
    (1u16..4, 1u64..u64::MAX).prop_flat_map(|(cpus, tsc_hz)| {
        let name = "[a-z][a-z0-9_]{0,15}";
        let record = (0..EventKind::ALL.len(), 0..cpus, 0u32..8, any::<u64>(), any::<[u64; 2]>(), name)
            .prop_map(|(kind, cpu, thread, tsc, args, name)| {
                let kind = EventKind::ALL[kind];
                // A thread-name record must carry a name; any other kind any arguments.
                let args = match kind {
                    EventKind::ThreadName => ThreadName::new(name.as_bytes()).map_or(args, |n| n.to_args()),
                    _ => args,
                };
                Record { tsc, kind: kind as u16, cpu, thread, args }
            });
        (
            Just(cpus),
            Just(tsc_hz),
            proptest::collection::vec(any::<i64>(), usize::from(cpus)),
            proptest::collection::btree_map(any::<u32>(), name, 0..4),
            proptest::collection::btree_map(any::<u32>(), name, 0..4),
            proptest::collection::vec((any::<bool>(), any::<u64>(), record), 0..64),
        )
            .prop_map(|(_, tsc_hz, tsc_offsets, mut thread_names, labels, records)| {
                let mut sources: BTreeMap<SourceId, Source> = BTreeMap::new();
                for (from_thread, lost, record) in records {
                    let id = if from_thread {
                        SourceId::Thread(record.thread)
                    } else {
                        SourceId::Core(record.cpu)
                    };
                    let source = sources.entry(id).or_default();
                    source.lost = lost % 1000;
                    source.records.push(record);
                }
                // The decoder takes names from thread-name records too, the latest
                // in dump order winning over name sections.
                for record in sources.values().flat_map(|s| &s.records) {
                    if record.event_kind() == Some(EventKind::ThreadName) {
                        let name = ThreadName::from_args(record.args).expect("generated as a name");
                        thread_names.insert(record.thread, name.as_str().to_owned());
                    }
                }
                Trace { tsc_hz, tsc_offsets, thread_names, labels, sources }
            })
    })
}

proptest! {
    #[test]
    fn any_trace_round_trips(trace in arb_trace()) {
        prop_assert_eq!(decode(&dump(&trace)).unwrap(), trace);
    }

    #[test]
    fn random_corruption_never_panics(
        trace in arb_trace(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = dump(&trace);
        for (at, mask) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= mask;
        }
        let _ = decode(&bytes);
        let len = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..len]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let mut prefixed = b"RAMENTRC\x01\x00\x18\x00".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = decode(&prefixed);
    }
}

#[test]
fn dump_is_found_inside_a_serial_capture() {
    let dump = dump(&ipc_pingpong(2, 2));
    let mut capture = b"RamenOS booting...\nRAMENTR? not yet\n".to_vec();
    capture.extend_from_slice(&dump);
    capture.extend_from_slice(b"\nkernel: done\n");
    let found = ramen_perf_export::extract_dump(&capture).unwrap();
    assert_eq!(found, &dump[..]);
    assert!(decode(found).is_ok());

    assert_eq!(
        ramen_perf_export::extract_dump(b"no dump here"),
        Err(DecodeError::NotFound { len_bytes: 12 })
    );
    let cut = &capture[..capture.len() - 20];
    assert!(matches!(ramen_perf_export::extract_dump(cut), Err(DecodeError::Truncated { .. })));
}

#[test]
fn batched_records_decode_as_one_source() {
    for count in [0u64, 1, 31, 32, 33, 100] {
        let records: Vec<Record> =
            (0..count).map(|n| Record::new(EventKind::UserInstant, 0, 9, n, [n, 0])).collect();
        let bytes = handmade(1, |w| {
            w.core(0, 0).unwrap();
            w.records_batched(SOURCE_THREAD, 9, 4, records.iter().copied()).unwrap();
        });
        let trace = decode(&bytes).unwrap();
        let source = &trace.sources[&SourceId::Thread(9)];
        assert_eq!((source.lost, &source.records), (4, &records), "{count} records");
    }
}
