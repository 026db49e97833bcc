//! The text summary: what happened, how fast, and what was lost.

use std::collections::BTreeMap;
use std::fmt;

use ramen_perf_record::{EventKind, IpcPath};

use crate::decode::{SourceId, Trace};
use crate::timeline::{Timeline, TrackId, Unmatched, ticks_to_ns};

/// Spans listed under "slowest spans" unless the caller asks otherwise.
pub const DEFAULT_TOP_N: usize = 10;

/// Latency distribution in nanoseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    /// Percentiles of `values`, or `None` if there are none.
    pub fn of(mut values: Vec<u64>) -> Option<Percentiles> {
        values.sort_unstable();
        let count = values.len();
        // Nearest rank: the smallest value with at least p% of values at or below it.
        let rank = |p: usize| values.get((count * p).div_ceil(100).saturating_sub(1)).copied();
        Some(Percentiles { count, p50: rank(50)?, p90: rank(90)?, p99: rank(99)?, max: *values.last()? })
    }
}

/// One of the slowest spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowSpan {
    pub name: String,
    pub track: TrackId,
    pub thread: String,
    pub start_ns: u64,
    pub duration_ns: u64,
}

/// Everything the summary reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub cpus: u16,
    pub tsc_hz: u64,
    pub duration_ns: u64,
    pub records: u64,
    pub counts: BTreeMap<EventKind, u64>,
    /// Send (or reply) to receive, all IPC arrows.
    pub ipc: Option<Percentiles>,
    pub ipc_fastpath: Option<Percentiles>,
    pub ipc_slowpath: Option<Percentiles>,
    /// Interrupt handler enter to exit.
    pub irq: Option<Percentiles>,
    pub slowest: Vec<SlowSpan>,
    pub lost: Vec<(SourceId, String, u64)>,
    pub unmatched: Unmatched,
}

/// Computes the summary; `top_n` bounds the slowest-span list.
pub fn summarize(trace: &Trace, timeline: &Timeline, top_n: usize) -> Summary {
    let ns = |ticks: u64| ticks_to_ns(ticks, trace.tsc_hz);
    let mut counts = BTreeMap::new();
    let mut records = 0;
    for source in trace.sources.values() {
        for kind in source.records.iter().filter_map(|r| r.event_kind()) {
            *counts.entry(kind).or_insert(0) += 1;
            records += 1;
        }
    }

    let ipc_latency = |path: Option<IpcPath>| {
        let values = timeline
            .flows
            .iter()
            .filter(|flow| flow.ipc_info().is_some_and(|info| path.is_none_or(|p| p == info.path)))
            .map(|flow| ns(flow.to_ts.saturating_sub(flow.from_ts)))
            .collect();
        Percentiles::of(values)
    };
    let irq = timeline
        .logical
        .iter()
        .filter(|span| span.kind == EventKind::IrqEnter)
        .map(|span| ns(span.end - span.start))
        .collect();

    let mut slowest: Vec<SlowSpan> = timeline
        .logical
        .iter()
        .map(|span| SlowSpan {
            name: span.name.clone(),
            track: span.track,
            thread: trace.thread_name(span.thread),
            start_ns: ns(span.start),
            duration_ns: ns(span.end - span.start),
        })
        .collect();
    slowest.sort_by(|a, b| b.duration_ns.cmp(&a.duration_ns).then(a.start_ns.cmp(&b.start_ns)));
    slowest.truncate(top_n);

    let lost = (0..trace.cpu_count())
        .map(SourceId::Core)
        .chain(trace.sources.keys().copied().filter(|s| matches!(s, SourceId::Thread(_))))
        .map(|source| {
            let lost = trace.sources.get(&source).map_or(0, |s| s.lost);
            let name = match source {
                SourceId::Core(cpu) => format!("cpu {cpu}"),
                SourceId::Thread(thread) => {
                    format!("thread {thread} ({})", trace.thread_name(thread))
                }
            };
            (source, name, lost)
        })
        .collect();

    Summary {
        cpus: trace.cpu_count(),
        tsc_hz: trace.tsc_hz,
        duration_ns: ns(timeline.end),
        records,
        counts,
        ipc: ipc_latency(None),
        ipc_fastpath: ipc_latency(Some(IpcPath::Fast)),
        ipc_slowpath: ipc_latency(Some(IpcPath::Slow)),
        irq: Percentiles::of(irq),
        slowest,
        lost,
        unmatched: timeline.unmatched,
    }
}

fn track_name(track: TrackId) -> String {
    match track {
        TrackId::Core(cpu) => format!("cpu {cpu}"),
        TrackId::Thread(thread) => format!("thread {thread}"),
        TrackId::Running(thread) => format!("thread {thread} (running)"),
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "RamenOS trace summary")?;
        writeln!(
            f,
            "{} records over {} ns on {} CPU(s), TSC {} Hz",
            self.records, self.duration_ns, self.cpus, self.tsc_hz
        )?;

        writeln!(f, "\nevents by kind")?;
        for (kind, count) in &self.counts {
            writeln!(f, "  {:<20} {count:>10}", kind.name())?;
        }

        writeln!(f, "\nlatency (ns)            count        p50        p90        p99        max")?;
        let rows = [
            ("ipc send->recv", self.ipc),
            ("  fastpath", self.ipc_fastpath),
            ("  slowpath", self.ipc_slowpath),
            ("irq enter->exit", self.irq),
        ];
        for (name, row) in rows {
            match row {
                Some(p) => writeln!(
                    f,
                    "  {name:<20} {:>7} {:>10} {:>10} {:>10} {:>10}",
                    p.count, p.p50, p.p90, p.p99, p.max
                )?,
                None => writeln!(f, "  {name:<20} {:>7}", 0)?,
            }
        }

        writeln!(f, "\nslowest spans (top {})", self.slowest.len())?;
        writeln!(f, "  {:>12}  {:>12}  {:<10} {:<16} name", "duration_ns", "start_ns", "track", "thread")?;
        for span in &self.slowest {
            writeln!(
                f,
                "  {:>12}  {:>12}  {:<10} {:<16} {}",
                span.duration_ns,
                span.start_ns,
                track_name(span.track),
                span.thread,
                span.name
            )?;
        }

        writeln!(f, "\nlost records")?;
        for (_, name, lost) in &self.lost {
            writeln!(f, "  {name:<30} {lost:>10}")?;
        }
        let u = &self.unmatched;
        writeln!(
            f,
            "\nunmatched: {} span ends without begin, {} spans open at end, {} flows without end, {} flow ends without start",
            u.ends_without_begin, u.open_at_end, u.flows_without_end, u.flow_ends_without_start
        )
    }
}
