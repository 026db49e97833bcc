//! FXT, the Fuchsia trace format: binary, raw TSC ticks with a declared tick rate,
//! so nothing is rounded. Perfetto opens it like the JSON.
//!
//! Layout of what is written (all 64-bit little-endian words; see the Fuchsia
//! "trace format" spec): magic, provider info, initialization (ticks per second),
//! kernel-object records naming the process, one pseudo-thread per core and every
//! known thread, then string records as names are first used, then events:
//! complete-duration events for spans, instants, counters, flow begin/end pairs, and
//! a context-switch scheduling record per switch so viewers can draw CPU tracks.
//!
//! Koids are the ids the Chrome export uses ([`TrackId::exported_tid`]): the process
//! is 1, core tracks and user threads are offset so they cannot collide, and the
//! idle thread is 0 (a viewer's "swapper"). Perfetto keeps koids to 32 bits.

use std::collections::{BTreeSet, HashMap};

use ramen_perf_record::{EventKind, IDLE_THREAD};

use crate::decode::Trace;
use crate::timeline::{PROCESS_ID, Timeline, TrackId, category_name};

const PROCESS_KOID: u64 = PROCESS_ID;

/// The first word of every FXT file.
const MAGIC: u64 = 0x0016_5478_4604_0010;
const PROVIDER_ID: u64 = 1;
const PROVIDER_NAME: &str = "ramen";

const RECORD_METADATA: u64 = 0;
const RECORD_INITIALIZATION: u64 = 1;
const RECORD_STRING: u64 = 2;
const RECORD_EVENT: u64 = 4;
const RECORD_KERNEL_OBJECT: u64 = 7;
const RECORD_SCHEDULING: u64 = 8;

const METADATA_PROVIDER_INFO: u64 = 1;

const EVENT_INSTANT: u64 = 0;
const EVENT_COUNTER: u64 = 1;
const EVENT_DURATION_COMPLETE: u64 = 4;
const EVENT_FLOW_BEGIN: u64 = 8;
const EVENT_FLOW_END: u64 = 10;

const ARG_INT64: u64 = 3;
const ARG_UINT64: u64 = 4;
const ARG_KOID: u64 = 8;

const OBJECT_PROCESS: u64 = 1;
const OBJECT_THREAD: u64 = 2;

const SCHED_CONTEXT_SWITCH: u64 = 1;
/// Zircon's "blocked": the format wants the outgoing state, the record does not
/// carry it, and blocking in IPC is the common reason to switch.
const THREAD_STATE_BLOCKED: u64 = 3;

/// String-table indices are 15 bits; index 0 means the empty string.
const MAX_STRING_INDEX: u16 = 0x7FFF;
/// Largest record, in words (the size field is 12 bits).
const MAX_RECORD_WORDS: usize = 0xFFF;
/// Longest string written: what fits in one string record after its header.
const MAX_STRING_BYTES: usize = (MAX_RECORD_WORDS - 1) * 8;

/// Writes FXT words, interning strings as they are first used.
struct Writer {
    words: Vec<u64>,
    strings: HashMap<String, u16>,
}

/// Packs `text` into padded words.
fn text_words(text: &str) -> Vec<u64> {
    text.as_bytes()
        .chunks(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect()
}

fn clip(text: &str) -> &str {
    if text.len() <= MAX_STRING_BYTES {
        return text;
    }
    let mut end = MAX_STRING_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Writer {
    fn record(&mut self, kind: u64, fields: u64, body: &[u64]) {
        let words = 1 + body.len();
        debug_assert!(words <= MAX_RECORD_WORDS, "FXT record too large");
        self.words.push(kind | (words as u64) << 4 | fields);
        self.words.extend_from_slice(body);
    }

    /// The string-table reference for `text`, writing a string record the first time.
    /// Past the table's capacity strings would have to go inline; a trace with more
    /// than 32767 distinct names is not something RamenOS produces, so they are
    /// shown as the empty string instead.
    fn string(&mut self, text: &str) -> u64 {
        let text = clip(text);
        if text.is_empty() {
            return 0;
        }
        if let Some(index) = self.strings.get(text) {
            return u64::from(*index);
        }
        let Ok(index) = u16::try_from(self.strings.len() + 1) else { return 0 };
        if index > MAX_STRING_INDEX {
            return 0;
        }
        self.strings.insert(text.to_owned(), index);
        let fields = u64::from(index) << 16 | (text.len() as u64) << 32;
        self.record(RECORD_STRING, fields, &text_words(text));
        u64::from(index)
    }

    fn kernel_object(&mut self, object: u64, koid: u64, name: &str, process: Option<u64>) {
        let name = self.string(name);
        let mut body = vec![koid];
        let mut args = 0;
        if let Some(process) = process {
            let arg_name = self.string("process");
            body.push(ARG_KOID | 2 << 4 | arg_name << 16);
            body.push(process);
            args = 1;
        }
        self.record(RECORD_KERNEL_OBJECT, object << 16 | name << 24 | args << 40, &body);
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        event: u64,
        ts: u64,
        thread: u64,
        category: &str,
        name: &str,
        args: &[(&str, u64, u64)],
        extra: Option<u64>,
    ) {
        let category = self.string(category);
        let name = self.string(name);
        let mut body = vec![ts, PROCESS_KOID, thread];
        for (arg_name, arg_type, value) in args {
            let arg_name = self.string(arg_name);
            body.push(arg_type | 2 << 4 | arg_name << 16);
            body.push(*value);
        }
        body.extend(extra);
        // Thread reference 0: the process and thread koids follow inline.
        let fields = event << 16 | (args.len() as u64) << 20 | category << 32 | name << 48;
        self.record(RECORD_EVENT, fields, &body);
    }
}

fn koid(track: TrackId) -> u64 {
    track.exported_tid()
}

/// Koid of a thread in scheduling records (idle stays 0).
fn thread_koid(thread: u32) -> u64 {
    if thread == IDLE_THREAD { 0 } else { koid(TrackId::Thread(thread)) }
}

/// Renders the trace as FXT bytes. Timestamps are ticks since the start of the trace.
pub fn to_fxt(trace: &Trace, timeline: &Timeline) -> Vec<u8> {
    let mut w = Writer { words: vec![MAGIC], strings: HashMap::new() };
    let provider = text_words(PROVIDER_NAME);
    let provider_fields =
        METADATA_PROVIDER_INFO << 16 | PROVIDER_ID << 20 | (PROVIDER_NAME.len() as u64) << 52;
    w.record(RECORD_METADATA, provider_fields, &provider);
    w.record(RECORD_INITIALIZATION, 0, &[trace.tsc_hz]);

    w.kernel_object(OBJECT_PROCESS, PROCESS_KOID, "RamenOS", None);
    for cpu in 0..trace.cpu_count() {
        w.kernel_object(
            OBJECT_THREAD,
            koid(TrackId::Core(cpu)),
            &format!("cpu {cpu} (kernel)"),
            Some(PROCESS_KOID),
        );
    }
    let threads: BTreeSet<u32> = trace
        .thread_names
        .keys()
        .copied()
        .chain(trace.sources.values().flat_map(|s| s.records.iter().map(|r| r.thread)))
        .filter(|thread| *thread != IDLE_THREAD)
        .collect();
    for thread in threads {
        w.kernel_object(OBJECT_THREAD, thread_koid(thread), &trace.thread_name(thread), Some(PROCESS_KOID));
    }

    for span in &timeline.spans {
        w.event(
            EVENT_DURATION_COMPLETE,
            span.start,
            koid(span.track),
            span.category,
            &span.name,
            &[],
            Some(span.end),
        );
    }
    for instant in &timeline.instants {
        let [a0, a1] = instant.record.args;
        let args = [("arg0", ARG_UINT64, a0), ("arg1", ARG_UINT64, a1)];
        let category = category_name(instant.kind);
        w.event(EVENT_INSTANT, instant.ts, koid(instant.track), category, instant.kind.name(), &args, None);
        if instant.kind == EventKind::ContextSwitch {
            let fields =
                SCHED_CONTEXT_SWITCH << 60 | u64::from(instant.record.cpu) << 20 | THREAD_STATE_BLOCKED << 36;
            // The incoming thread fits in 32 bits by the record format.
            let incoming = thread_koid(a0 as u32);
            w.record(RECORD_SCHEDULING, fields, &[instant.ts, thread_koid(instant.record.thread), incoming]);
        }
    }
    let mut counter_ids: HashMap<&str, u64> = HashMap::new();
    for counter in &timeline.counters {
        let next = counter_ids.len() as u64 + 1;
        let id = *counter_ids.entry(counter.name.as_str()).or_insert(next);
        // The value travels as the bits of an i64.
        let value = u64::from_le_bytes(counter.value.to_le_bytes());
        let args = [("value", ARG_INT64, value)];
        w.event(EVENT_COUNTER, counter.ts, koid(counter.track), "user", &counter.name, &args, Some(id));
    }
    for flow in &timeline.flows {
        w.event(
            EVENT_FLOW_BEGIN,
            flow.from_ts,
            koid(flow.from),
            flow.category,
            flow.name,
            &[],
            Some(flow.id),
        );
        w.event(EVENT_FLOW_END, flow.to_ts, koid(flow.to), flow.category, flow.name, &[], Some(flow.id));
    }
    w.words.iter().flat_map(|word| word.to_le_bytes()).collect()
}
