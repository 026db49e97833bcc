//! Exporter tests: Chrome JSON (snapshot and structure), summary numbers, SVG.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use ramen_perf_export::chrome::to_chrome_json;
use ramen_perf_export::decode::{Source, SourceId, Trace, decode, encode};
use ramen_perf_export::summary::{Percentiles, summarize};
use ramen_perf_export::svg::{SvgOptions, render_svg};
use ramen_perf_export::synthetic::{self, ipc_pingpong};
use ramen_perf_export::timeline::TrackId;
use ramen_perf_export::{ExportError, ExportOptions, Timeline, export_dir};
use ramen_perf_record::{EventKind, IDLE_THREAD, IpcInfo, IpcPath, Record, ThreadName};
use serde_json::Value;

fn chrome(trace: &Trace) -> String {
    to_chrome_json(trace, &Timeline::build(trace))
}

/// What a viewer would make of a timestamp: Perfetto rounds `ts * 1000` (older
/// versions truncate); both must give the same nesting.
fn to_ns(value: &Value, round: bool) -> i64 {
    let us = value.as_f64().expect("numeric timestamp");
    if round { (us * 1000.0).round() as i64 } else { (us * 1000.0) as i64 }
}

/// Checks what Perfetto needs: valid JSON, `X` spans nesting per track, every flow
/// start finished once and bound to a slice; returns the number of cross-track flows.
fn check_chrome(json: &str) -> usize {
    let doc: Value = serde_json::from_str(json).expect("valid JSON");
    let events = doc["traceEvents"].as_array().expect("traceEvents array");
    let named: Vec<u64> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["tid"].as_u64().unwrap())
        .collect();
    for round in [true, false] {
        let mut spans: HashMap<u64, Vec<(i64, i64)>> = HashMap::new();
        for e in events.iter().filter(|e| e["ph"] == "X") {
            let tid = e["tid"].as_u64().unwrap();
            assert!(named.contains(&tid), "track {tid} has no name");
            let start = to_ns(&e["ts"], round);
            let end = start + to_ns(&e["dur"], round);
            assert!(end >= start);
            spans.entry(tid).or_default().push((start, end));
        }
        for (tid, mut list) in spans {
            list.sort_by_key(|(start, end)| (*start, -*end));
            let mut stack: Vec<(i64, i64)> = Vec::new();
            for (start, end) in list {
                while stack.last().is_some_and(|(_, top_end)| *top_end <= start) {
                    stack.pop();
                }
                if let Some((_, top_end)) = stack.last() {
                    assert!(
                        end <= *top_end,
                        "track {tid}: span {start}..{end} overlaps its parent ending {top_end}"
                    );
                }
                stack.push((start, end));
            }
        }
    }
    let enclosed = |tid: u64, ts: i64| {
        events.iter().any(|e| {
            e["ph"] == "X" && e["tid"].as_u64() == Some(tid) && {
                let start = to_ns(&e["ts"], true);
                start <= ts && ts <= start + to_ns(&e["dur"], true)
            }
        })
    };
    let mut flows: BTreeMap<u64, (Vec<&Value>, Vec<&Value>)> = BTreeMap::new();
    for e in events {
        match e["ph"].as_str() {
            Some("s") => flows.entry(e["id"].as_u64().unwrap()).or_default().0.push(e),
            Some("f") => flows.entry(e["id"].as_u64().unwrap()).or_default().1.push(e),
            _ => {}
        }
    }
    let mut cross = 0;
    for (id, (starts, finishes)) in flows {
        assert_eq!((starts.len(), finishes.len()), (1, 1), "flow {id} must have one start and one finish");
        let (s, f) = (starts[0], finishes[0]);
        assert_eq!(f["bp"], "e", "flow {id} finish binds to the enclosing slice");
        assert_eq!((&s["name"], &s["cat"]), (&f["name"], &f["cat"]));
        for end in [s, f] {
            let tid = end["tid"].as_u64().unwrap();
            assert!(enclosed(tid, to_ns(&end["ts"], true)), "flow {id} end on {tid} has no slice to bind to");
        }
        if s["tid"] != f["tid"] {
            cross += 1;
        }
    }
    cross
}

#[test]
fn chrome_json_snapshot() {
    insta::assert_snapshot!("pingpong_smp2", chrome(&ipc_pingpong(2, 2)));
}

#[test]
fn chrome_json_is_structurally_sound() {
    let two = ipc_pingpong(2, 8);
    let cross = check_chrome(&chrome(&two));
    // Every request and reply, and every wake-up IPI, crosses cores.
    assert_eq!(cross, 8 * 4);
    let one = ipc_pingpong(1, 8);
    assert_eq!(check_chrome(&chrome(&one)), 0, "one core: all arrows stay on cpu 0");
}

#[test]
fn chrome_json_names_process_cores_and_threads() {
    let doc: Value = serde_json::from_str(&chrome(&ipc_pingpong(2, 1))).unwrap();
    let names: Vec<&str> = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"].as_str().is_some_and(|n| n.ends_with("_name")))
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "RamenOS",
            "cpu 0 (kernel)",
            "cpu 1 (kernel)",
            "ping (thread 1)",
            "pong (thread 2)",
            "ping (thread 1) running",
            "pong (thread 2) running"
        ]
    );
    assert_eq!(doc["otherData"]["tsc_hz"], synthetic::SYNTHETIC_TSC_HZ);
}

#[test]
fn tsc_offsets_line_cores_up() {
    // Core 1's TSC runs ahead; after correction the request arrives exactly the
    // synthetic latency after it was sent.
    let trace = ipc_pingpong(2, 1);
    let timeline = Timeline::build(&trace);
    let request = timeline.flows.iter().find(|f| f.name == "ipc_send").unwrap();
    assert_eq!(request.to_ts - request.from_ts, synthetic::request_latency_ticks(0));
}

#[test]
fn single_core_syscalls_suspend_and_resume_across_switches() {
    let timeline = Timeline::build(&ipc_pingpong(1, 3));
    let server_syscalls: Vec<_> =
        timeline.spans.iter().filter(|s| s.name == "syscall 2" && s.thread == synthetic::SERVER).collect();
    // Each reply_recv is cut by the switch to the client and resumed at the next
    // request, and the very first one began before the trace did.
    assert!(server_syscalls.len() >= 5, "{server_syscalls:?}");
    assert!(server_syscalls.iter().all(|s| s.cut));
    assert_eq!(timeline.unmatched.ends_without_begin, 1);
    assert_eq!(timeline.logical.iter().filter(|s| s.name == "syscall 2").count(), 2);
}

#[test]
fn lost_begin_becomes_a_cut_span() {
    let end = Record::new(EventKind::IrqExit, 0, 4, 100, [33, 0]);
    let other = Record::new(EventKind::SyscallEnter, 0, 4, 40, [7, 0]);
    let trace = Trace {
        tsc_hz: 1_000_000_000,
        tsc_offsets: vec![0],
        thread_names: BTreeMap::new(),
        labels: BTreeMap::new(),
        sources: BTreeMap::from([(SourceId::Core(0), Source { lost: 1, records: vec![other, end] })]),
    };
    let timeline = Timeline::build(&trace);
    let irq = timeline.spans.iter().find(|s| s.name == "irq 33").unwrap();
    assert!(irq.cut);
    assert_eq!((irq.start, irq.end, irq.depth), (0, 60, 2), "starts at the innermost open span");
    assert_eq!(timeline.unmatched.ends_without_begin, 1);
    assert_eq!(timeline.unmatched.open_at_end, 1);
    check_chrome(&chrome(&trace));
}

/// A trace at 1 GHz (1 tick = 1 ns) with known IPC and IRQ latencies.
fn known_latencies() -> Trace {
    const CORE1_OFFSET: i64 = -500;
    let core1_tsc = |t: u64| t.checked_add_signed(CORE1_OFFSET).unwrap();
    let mut core0 = Vec::new();
    let mut core1 = Vec::new();
    for i in 0..100u64 {
        let t = 1_000 + i * 2_000;
        let path = if i % 2 == 0 { IpcPath::Fast } else { IpcPath::Slow };
        let info = IpcInfo { peer: 2, path, len_words: 1 }.pack();
        core0.push(Record::new(EventKind::IpcSend, 0, 1, t, [i, info]));
        core1.push(Record::new(EventKind::IpcRecv, 1, 2, core1_tsc(t + (i + 1) * 10), [i, info]));
    }
    for (i, duration) in [100u64, 400, 300, 200].into_iter().enumerate() {
        let t = 300_000 + i as u64 * 1_000;
        core0.push(Record::new(EventKind::IrqEnter, 0, IDLE_THREAD, t, [32, 0]));
        core0.push(Record::new(EventKind::IrqExit, 0, IDLE_THREAD, t + duration, [32, 0]));
    }
    let user = vec![
        Record::new(EventKind::UserSpanBegin, 1, 2, core1_tsc(400_000), [9, 0]),
        Record::new(EventKind::UserSpanEnd, 1, 2, core1_tsc(405_000), [9, 0]),
    ];
    Trace {
        tsc_hz: 1_000_000_000,
        tsc_offsets: vec![0, CORE1_OFFSET],
        thread_names: BTreeMap::from([(1, "client".into()), (2, "server".into())]),
        labels: BTreeMap::from([(9, "long_job".into())]),
        sources: BTreeMap::from([
            (SourceId::Core(0), Source { lost: 0, records: core0 }),
            (SourceId::Core(1), Source { lost: 7, records: core1 }),
            (SourceId::Thread(2), Source { lost: 2, records: user }),
        ]),
    }
}

#[test]
fn summary_reports_known_latencies() {
    let trace = known_latencies();
    let timeline = Timeline::build(&trace);
    let summary = summarize(&trace, &timeline, 3);
    let p = |count, p50, p90, p99, max| Some(Percentiles { count, p50, p90, p99, max });
    assert_eq!(summary.ipc, p(100, 500, 900, 990, 1000));
    assert_eq!(summary.ipc_fastpath, p(50, 490, 890, 990, 990));
    assert_eq!(summary.ipc_slowpath, p(50, 500, 900, 1000, 1000));
    assert_eq!(summary.irq, p(4, 200, 400, 400, 400));
    assert_eq!(summary.counts[&EventKind::IpcSend], 100);
    assert_eq!(summary.counts[&EventKind::IrqExit], 4);
    assert_eq!(summary.records, 210);
    let slowest: Vec<(&str, u64)> =
        summary.slowest.iter().map(|s| (s.name.as_str(), s.duration_ns)).collect();
    assert_eq!(slowest, [("long_job", 5000), ("irq 32", 400), ("irq 32", 300)]);
    let lost: Vec<u64> = summary.lost.iter().map(|(_, _, lost)| *lost).collect();
    assert_eq!(lost, [0, 7, 2]);

    let text = summary.to_string();
    assert!(
        text.contains("ipc send->recv           100        500        900        990       1000"),
        "{text}"
    );
    assert!(text.contains("cpu 1                                   7"), "{text}");
    assert!(text.contains("thread 2 (server)"), "{text}");
}

#[test]
fn percentiles_use_nearest_rank() {
    assert_eq!(Percentiles::of(vec![]), None);
    assert_eq!(Percentiles::of(vec![7]), Some(Percentiles { count: 1, p50: 7, p90: 7, p99: 7, max: 7 }));
    let p = Percentiles::of(vec![4, 1, 3, 2]).unwrap();
    assert_eq!((p.p50, p.p90, p.max), (2, 4, 4));
}

#[test]
fn svg_is_well_formed_with_lanes_and_arrows() {
    let trace = ipc_pingpong(2, 4);
    let timeline = Timeline::build(&trace);
    let svg = render_svg(&trace, &timeline, &SvgOptions::default());
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let with_class = |class: &str| doc.descendants().filter(|n| n.attribute("class") == Some(class)).count();
    assert_eq!(with_class("lane"), 2 + 2, "a lane per core and per user thread");
    assert_eq!(with_class("arrow"), timeline.flows.len());
    // Every span but the per-thread running tracks (the cores' bottom rows show those).
    let drawn = timeline.spans.iter().filter(|s| !matches!(s.track, TrackId::Running(_))).count();
    assert_eq!(with_class("span"), drawn);
    assert!(svg.contains("handle_ping"));

    // A window around the first round trip only shows its arrows.
    let first_round_ns = synthetic::ROUND_TRIP_PERIOD_TICKS / 2;
    let window = SvgOptions { window_ns: Some((0, first_round_ns)), ..SvgOptions::default() };
    let svg = render_svg(&trace, &timeline, &window);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let arrows = doc.descendants().filter(|n| n.attribute("class") == Some("arrow")).count();
    assert_eq!(arrows, 4);
}

#[test]
fn svg_escapes_names() {
    let mut trace = ipc_pingpong(1, 1);
    trace.thread_names.insert(synthetic::CLIENT, "<a&b>\"".into());
    let svg = render_svg(&trace, &Timeline::build(&trace), &SvgOptions::default());
    roxmltree::Document::parse(&svg).expect("names are escaped");
}

#[test]
fn export_dir_writes_all_files_and_reports_decode_errors() {
    let dir = std::env::temp_dir().join(format!("ramen-perf-export-test-{}", std::process::id()));
    let dump = ramen_perf_export::decode::encode(&ipc_pingpong(2, 3)).unwrap();
    let files = export_dir(&dump, &dir, &ExportOptions::default()).unwrap();
    for path in [&files.chrome_json, &files.summary, &files.svg, &files.fxt] {
        assert!(std::fs::metadata(path).unwrap().len() > 0, "{}", path.display());
    }
    check_chrome(&std::fs::read_to_string(&files.chrome_json).unwrap());
    let error = export_dir(&dump[..dump.len() - 1], &dir, &ExportOptions::default()).unwrap_err();
    assert!(matches!(error, ExportError::Decode(_)));
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    /// Whatever records are lost, the export still nests and every arrow has both ends.
    #[test]
    fn losing_records_keeps_the_export_sound(cpus in 1u16..=2, keep in proptest::collection::vec(any::<bool>(), 400)) {
        let mut trace = ipc_pingpong(cpus, 6);
        let mut flags = keep.into_iter().cycle();
        for source in trace.sources.values_mut() {
            source.records.retain(|_| flags.next().unwrap_or(true));
        }
        check_chrome(&chrome(&trace));
        let timeline = Timeline::build(&trace);
        let _ = summarize(&trace, &timeline, 5).to_string();
        roxmltree::Document::parse(&render_svg(&trace, &timeline, &SvgOptions::default())).unwrap();
    }
}

/// Walks FXT records the way a reader does and counts what it finds.
#[derive(Debug, Default, PartialEq)]
struct FxtCounts {
    ticks_per_second: u64,
    strings: usize,
    kernel_objects: usize,
    events_by_type: BTreeMap<u64, usize>,
    context_switches: usize,
}

fn walk_fxt(bytes: &[u8]) -> FxtCounts {
    assert_eq!(bytes.len() % 8, 0, "FXT is a sequence of 64-bit words");
    let words: Vec<u64> = bytes.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(words[0], 0x0016_5478_4604_0010, "magic record first");
    let field = |word: u64, lo: u32, hi: u32| (word >> lo) & ((1u64 << (hi - lo + 1)) - 1);
    let mut counts = FxtCounts::default();
    let mut defined = std::collections::HashSet::new();
    let mut at = 1;
    while at < words.len() {
        let header = words[at];
        let size = field(header, 4, 15) as usize;
        assert!(size >= 1 && at + size <= words.len(), "record at word {at} overruns");
        let body = &words[at + 1..at + size];
        match field(header, 0, 3) {
            0 => {}
            1 => counts.ticks_per_second = body[0],
            2 => {
                let len = field(header, 32, 46) as usize;
                assert_eq!(body.len(), len.div_ceil(8));
                defined.insert(field(header, 16, 30));
                counts.strings += 1;
            }
            4 => {
                for string in [field(header, 32, 47), field(header, 48, 63)] {
                    assert!(string == 0 || defined.contains(&string), "string {string} used before defined");
                }
                assert_eq!(field(header, 24, 31), 0, "threads are inline");
                let event = field(header, 16, 19);
                if event == 4 {
                    assert!(body.last().unwrap() >= &body[0], "complete event ends before it starts");
                }
                *counts.events_by_type.entry(event).or_default() += 1;
            }
            7 => counts.kernel_objects += 1,
            8 => {
                assert_eq!(field(header, 60, 63), 1, "context switch");
                counts.context_switches += 1;
            }
            other => panic!("unexpected record type {other}"),
        }
        at += size;
    }
    counts
}

#[test]
fn fxt_has_every_span_flow_and_switch_in_raw_ticks() {
    let trace = ipc_pingpong(2, 4);
    let timeline = Timeline::build(&trace);
    let counts = walk_fxt(&ramen_perf_export::fxt::to_fxt(&trace, &timeline));
    assert_eq!(counts.ticks_per_second, synthetic::SYNTHETIC_TSC_HZ);
    // Process, two cores, two threads.
    assert_eq!(counts.kernel_objects, 5);
    let switches = timeline.instants.iter().filter(|i| i.kind == EventKind::ContextSwitch).count();
    assert_eq!(counts.context_switches, switches);
    let events = |event_type: u64| counts.events_by_type.get(&event_type).copied().unwrap_or(0);
    assert_eq!(events(4), timeline.spans.len(), "complete durations");
    assert_eq!(events(0), timeline.instants.len(), "instants");
    assert_eq!(events(1), timeline.counters.len(), "counters");
    assert_eq!((events(8), events(10)), (timeline.flows.len(), timeline.flows.len()), "flow begin and end");
}

#[test]
fn svg_survives_odd_windows() {
    let trace = ipc_pingpong(2, 2);
    let timeline = Timeline::build(&trace);
    for window in [(500, 100), (0, 0), (u64::MAX - 1, u64::MAX), (0, u64::MAX)] {
        let options = SvgOptions { window_ns: Some(window), ..SvgOptions::default() };
        roxmltree::Document::parse(&render_svg(&trace, &timeline, &options)).expect("well-formed");
    }
}

#[test]
fn preempting_interrupt_carries_over_to_the_incoming_thread() {
    // Thread 1 in a syscall takes a timer interrupt, which switches to thread 2
    // before the handler returns.
    let records = vec![
        Record::new(EventKind::SyscallEnter, 0, 1, 10, [5, 0]),
        Record::new(EventKind::IrqEnter, 0, 1, 20, [32, 0]),
        Record::new(EventKind::ContextSwitch, 0, 1, 30, [2, 0]),
        Record::new(EventKind::IrqExit, 0, 2, 40, [32, 0]),
        Record::new(EventKind::ContextSwitch, 0, 2, 50, [1, 0]),
        Record::new(EventKind::SyscallExit, 0, 1, 60, [5, 0]),
    ];
    let trace = Trace {
        tsc_hz: 1_000_000_000,
        tsc_offsets: vec![0],
        thread_names: BTreeMap::new(),
        labels: BTreeMap::new(),
        sources: BTreeMap::from([(SourceId::Core(0), Source { lost: 0, records })]),
    };
    let timeline = Timeline::build(&trace);
    assert_eq!(timeline.unmatched, Default::default(), "everything pairs up");
    let irq: Vec<(u64, u64, u32)> =
        timeline.spans.iter().filter(|s| s.name == "irq 32").map(|s| (s.start, s.end, s.thread)).collect();
    assert_eq!(irq, [(10, 20, 1), (20, 30, 2)]);
    let syscall: Vec<(u64, u64)> =
        timeline.spans.iter().filter(|s| s.name == "syscall 5").map(|s| (s.start, s.end)).collect();
    assert_eq!(syscall, [(0, 20), (40, 50)], "suspended while thread 2 runs");
    let logical: Vec<(&str, u64)> =
        timeline.logical.iter().map(|s| (s.name.as_str(), s.end - s.start)).collect();
    assert_eq!(logical, [("irq 32", 20), ("syscall 5", 50)]);
    check_chrome(&chrome(&trace));
}

/// A core's records as the kernel writes them for a named thread: its name first
/// (recorded the first time it runs in the trace), then a switch to it and a syscall.
fn named_thread_trace() -> Trace {
    let name = ThreadName::new(b"pingpong").unwrap();
    let records = vec![
        Record::new(EventKind::ThreadName, 0, 5, 5, name.to_args()),
        Record::new(EventKind::ContextSwitch, 0, IDLE_THREAD, 10, [5, 0]),
        Record::new(EventKind::SyscallEnter, 0, 5, 20, [1, 0]),
        Record::new(EventKind::SyscallExit, 0, 5, 30, [1, 0]),
        Record::new(EventKind::ContextSwitch, 0, 5, 40, [u64::from(IDLE_THREAD), 0]),
    ];
    let trace = Trace {
        tsc_hz: 1_000_000_000,
        tsc_offsets: vec![0],
        thread_names: BTreeMap::new(),
        labels: BTreeMap::new(),
        sources: BTreeMap::from([(SourceId::Core(0), Source { lost: 0, records })]),
    };
    decode(&encode(&trace).unwrap()).unwrap()
}

#[test]
fn thread_name_records_name_the_thread_everywhere() {
    let trace = named_thread_trace();
    assert_eq!(trace.thread_names.get(&5).map(String::as_str), Some("pingpong"));
    let timeline = Timeline::build(&trace);
    // Metadata is not drawn, and does not make the named thread the running one.
    assert!(timeline.instants.iter().all(|i| i.kind != EventKind::ThreadName));
    let running: Vec<_> = timeline.spans.iter().filter(|s| s.category == "sched").collect();
    assert!(running.iter().any(|s| s.name == "pingpong" && s.start == 0 && s.end == 30), "{running:?}");

    let json = chrome(&trace);
    check_chrome(&json);
    let doc: Value = serde_json::from_str(&json).unwrap();
    let track = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["tid"] == 1_000_005)
        .expect("a named thread track");
    assert_eq!(track["args"]["name"], "pingpong (thread 5)");

    let fxt = ramen_perf_export::fxt::to_fxt(&trace, &timeline);
    assert!(fxt.windows(8).any(|w| w == b"pingpong"), "the FXT thread record carries the name");
    // Process, one core, one thread.
    assert_eq!(walk_fxt(&fxt).kernel_objects, 3);
}

#[test]
fn a_thread_name_record_that_is_not_a_name_is_rejected() {
    let mut trace = named_thread_trace();
    let source = trace.sources.get_mut(&SourceId::Core(0)).unwrap();
    source.records[0].args = [u64::from_le_bytes(*b"ab\0\0\0\0\0\0"), 7];
    let error = decode(&encode(&trace).unwrap()).unwrap_err();
    assert!(error.to_string().contains("not a name"), "{error}");
}

#[test]
fn inline_labels_name_themselves_unless_the_table_says_otherwise() {
    use ramen_perf_record::inline_label;
    let call = inline_label("call");
    let records = vec![
        Record::new(EventKind::UserSpanBegin, 0, 7, 10, [call, 0]),
        Record::new(EventKind::UserSpanEnd, 0, 7, 20, [call, 0]),
        Record::new(EventKind::UserInstant, 0, 7, 25, [3, 0]),
    ];
    let mut trace = Trace {
        tsc_hz: 1_000_000_000,
        tsc_offsets: vec![0],
        thread_names: BTreeMap::new(),
        labels: BTreeMap::new(),
        sources: BTreeMap::from([(SourceId::Thread(7), Source { lost: 0, records })]),
    };
    assert_eq!(trace.label(call), "call");
    assert_eq!(trace.label(3), "label 3", "not printable text");
    assert_eq!(
        trace.label(u64::from_le_bytes(*b"a\0b\0\0\0\0\0")),
        format!("label {}", u64::from_le_bytes(*b"a\0b\0\0\0\0\0"))
    );
    let timeline = Timeline::build(&trace);
    assert!(timeline.spans.iter().any(|s| s.name == "call"));
    // The dump's label table wins.
    trace.labels.insert(u32::try_from(call).unwrap(), "from the table".into());
    assert_eq!(trace.label(call), "from the table");
    assert_eq!(trace.label(inline_label("requests")), "requests", "beyond 32 bits: text only");
}

#[test]
fn every_thread_that_ran_gets_a_running_track_with_its_cpus() {
    let trace = ipc_pingpong(2, 3);
    let timeline = Timeline::build(&trace);
    let running = |thread: u32| -> Vec<&str> {
        timeline
            .spans
            .iter()
            .filter(|s| s.track == TrackId::Running(thread))
            .map(|s| s.name.as_str())
            .collect()
    };
    // Each thread's stays, all on the CPU it lives on, none for the idle thread.
    assert!(!running(1).is_empty() && running(1).iter().all(|cpu| *cpu == "cpu 0"), "{:?}", running(1));
    assert!(!running(2).is_empty() && running(2).iter().all(|cpu| *cpu == "cpu 1"), "{:?}", running(2));
    assert!(running(IDLE_THREAD).is_empty());
    // Stays on one track never overlap.
    for thread in [1, 2] {
        let mut spans: Vec<_> =
            timeline.spans.iter().filter(|s| s.track == TrackId::Running(thread)).collect();
        spans.sort_by_key(|s| s.start);
        assert!(spans.windows(2).all(|w| w[0].end <= w[1].start));
    }
}
