//! Chrome trace-event JSON, the format Perfetto (ui.perfetto.dev) and
//! `chrome://tracing` open.
//!
//! One process ("RamenOS", pid 1); one thread track per core (kernel events, with
//! the running thread as the bottom row), one per thread that has a user buffer or
//! a name (`thread_name` metadata carries the name), and one per thread that ran,
//! with a span per stay on a CPU (named after the CPU). Spans are `X`
//! events built by [`crate::timeline`] so they always nest; IPC and IPI arrows are
//! `s`/`f` flow pairs, the finish binding to the enclosing slice (`"bp":"e"`).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use ramen_perf_record::{EventKind, IpcInfo, IpcPath, Record};

use crate::decode::Trace;
use crate::timeline::{PROCESS_ID, Span, Timeline, TrackId, category_name, ticks_to_ns};

const PID: u64 = PROCESS_ID;

/// Timestamps carry a quarter-nanosecond bias so that an importer that truncates
/// `ts * 1000` (older Perfetto) and one that rounds it (newer Perfetto) both recover
/// the exact nanosecond, keeping equal ends equal and spans nested.
const BIAS_NS: f64 = 0.25;

fn tid(track: TrackId) -> u64 {
    track.exported_tid()
}

fn micros(ns: u64) -> f64 {
    (ns as f64 + BIAS_NS) / 1000.0
}

/// Renders the whole trace as Chrome JSON: one event per line, keys sorted.
pub fn to_chrome_json(trace: &Trace, timeline: &Timeline) -> String {
    let ns = |ticks: u64| ticks_to_ns(ticks, trace.tsc_hz);
    let mut events: Vec<Value> = Vec::new();
    events.push(json!({"ph": "M", "pid": PID, "name": "process_name", "args": {"name": "RamenOS"}}));
    let mut tracks: Vec<(TrackId, String)> =
        (0..trace.cpu_count()).map(|cpu| (TrackId::Core(cpu), format!("cpu {cpu} (kernel)"))).collect();
    // A track per thread with a user buffer or a name, named after the thread.
    let threads: BTreeSet<u32> =
        timeline.thread_tracks.iter().chain(trace.thread_names.keys()).copied().collect();
    for thread in threads {
        tracks.push((TrackId::Thread(thread), format!("{} (thread {thread})", trace.thread_name(thread))));
    }
    // A track per thread that ran: when, and on which CPU.
    let ran: BTreeSet<u32> = timeline
        .spans
        .iter()
        .filter_map(|span| match span.track {
            TrackId::Running(thread) => Some(thread),
            _ => None,
        })
        .collect();
    for thread in ran {
        tracks.push((
            TrackId::Running(thread),
            format!("{} (thread {thread}) running", trace.thread_name(thread)),
        ));
    }
    for (index, (track, name)) in tracks.iter().enumerate() {
        let tid = tid(*track);
        events
            .push(json!({"ph": "M", "pid": PID, "tid": tid, "name": "thread_name", "args": {"name": name}}));
        events.push(json!({"ph": "M", "pid": PID, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": index}}));
    }

    for span in &timeline.spans {
        let start = ns(span.start);
        let dur = ns(span.end).saturating_sub(start);
        events.push(json!({
            "ph": "X", "pid": PID, "tid": tid(span.track), "name": span.name, "cat": span.category,
            "ts": micros(start), "dur": micros(dur), "args": span_args(trace, span),
        }));
    }
    for instant in &timeline.instants {
        events.push(json!({
            "ph": "i", "s": "t", "pid": PID, "tid": tid(instant.track), "name": instant.kind.name(),
            "cat": category_name(instant.kind), "ts": micros(ns(instant.ts)),
            "args": instant_args(trace, instant.kind, &instant.record),
        }));
    }
    for counter in &timeline.counters {
        events.push(json!({
            "ph": "C", "pid": PID, "name": counter.name, "cat": "user", "ts": micros(ns(counter.ts)),
            "args": {"value": counter.value},
        }));
    }
    for flow in &timeline.flows {
        let common = |ph: &str, track: TrackId, ticks: u64| json!({"ph": ph, "id": flow.id, "pid": PID, "tid": tid(track), "name": flow.name, "cat": flow.category, "ts": micros(ns(ticks))});
        events.push(common("s", flow.from, flow.from_ts));
        let mut finish = common("f", flow.to, flow.to_ts);
        finish["bp"] = json!("e");
        events.push(finish);
    }

    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    let other = json!({
        "format": "RamenOS trace dump v1",
        "tsc_hz": trace.tsc_hz,
        "cpus": trace.cpu_count(),
        "tsc_offsets": trace.tsc_offsets,
    });
    format!(
        "{{\"displayTimeUnit\":\"ns\",\"otherData\":{other},\"traceEvents\":[\n{}\n]}}\n",
        lines.join(",\n")
    )
}

fn span_args(trace: &Trace, span: &Span) -> Value {
    let mut args = json!({"thread": trace.thread_name(span.thread)});
    if let Some(begin) = &span.begin {
        args["begin_args"] = json!([begin.args[0], begin.args[1]]);
    }
    if let Some(end) = &span.end_record {
        args["end_args"] = json!([end.args[0], end.args[1]]);
    }
    if span.cut {
        args["cut"] = json!(true);
    }
    args
}

fn instant_args(trace: &Trace, kind: EventKind, record: &Record) -> Value {
    let [a0, a1] = record.args;
    match kind {
        EventKind::IpcSend | EventKind::IpcRecv | EventKind::IpcReply => {
            let info = IpcInfo::unpack(a1);
            let path = match info.path {
                IpcPath::Fast => "fastpath",
                IpcPath::Slow => "slowpath",
            };
            json!({"flow": a0, "peer": trace.thread_name(info.peer), "path": path, "len_words": info.len_words})
        }
        EventKind::ContextSwitch => {
            json!({"from": trace.thread_name(record.thread), "to": trace.thread_name(a0 as u32)})
        }
        EventKind::ThreadMigrate => json!({"thread": trace.thread_name(a0 as u32), "to_cpu": a1}),
        EventKind::IpiSend => json!({"flow": a0, "to_cpu": a1}),
        EventKind::IpiRecv => json!({"flow": a0, "from_cpu": a1}),
        EventKind::UserInstant => json!({"label": trace.label(a0), "data": a1}),
        _ => json!({"args": [a0, a1]}),
    }
}
