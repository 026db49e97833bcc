//! Turns decoded records into what every exporter draws: spans, instants, counters
//! and flows on tracks, on one common time line.
//!
//! Tracks: one per core for kernel events (from the core rings) and one per thread
//! for user events (from the per-thread buffers). A core track's bottom row is the
//! thread it runs; kernel spans nest above it.
//!
//! Spans are built so that they always nest, whatever was lost:
//! - an end closes the innermost open span of the same kind and first argument,
//!   cutting any span above it (whose own end was lost);
//! - an end without a begin becomes a span starting at the innermost open span, or
//!   when the thread got the core, and is marked `cut`;
//! - a context switch suspends the outgoing thread's open kernel spans and resumes
//!   the incoming thread's (a thread blocked in a syscall continues it later,
//!   possibly on another core);
//! - spans still open at the end of the trace end there, marked `cut`.
//!
//! Separately, "logical" spans pair each begin with its end per thread (per core for
//! interrupts) regardless of switches; the summary measures those.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ramen_perf_record::{Categories, EventKind, IpcInfo, Phase, Record};

use crate::decode::{SourceId, Trace};

/// Process id every exported track belongs to.
pub const PROCESS_ID: u64 = 1;
/// Exported thread id of core `n`'s kernel track: `CORE_TRACK_BASE + n`. Not 1, so
/// no viewer mistakes a core for the process's main thread.
pub const CORE_TRACK_BASE: u64 = 2;
/// Exported thread id of thread `t`'s track: `THREAD_TRACK_BASE + t`, clear of the
/// core ids. Viewers keep thread ids to 32 bits, so thread ids must stay below
/// `RUNNING_TRACK_BASE - THREAD_TRACK_BASE`.
pub const THREAD_TRACK_BASE: u64 = 1_000_000;
/// Exported thread id of thread `t`'s running track (when and on which CPU it ran):
/// `RUNNING_TRACK_BASE + t`.
pub const RUNNING_TRACK_BASE: u64 = 2_000_000_000;

/// A row of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrackId {
    /// Kernel events of one core.
    Core(u16),
    /// User events of one thread.
    Thread(u32),
    /// When one thread ran, and where: a span per stay on a CPU.
    Running(u32),
}

impl TrackId {
    /// The thread id viewers show this track under.
    pub fn exported_tid(self) -> u64 {
        match self {
            TrackId::Core(cpu) => CORE_TRACK_BASE + u64::from(cpu),
            TrackId::Thread(thread) => THREAD_TRACK_BASE + u64::from(thread),
            TrackId::Running(thread) => RUNNING_TRACK_BASE + u64::from(thread),
        }
    }
}

/// A closed span on a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub track: TrackId,
    pub name: String,
    /// Category name (`sched` for the running-thread row).
    pub category: &'static str,
    /// Ticks since the start of the trace.
    pub start: u64,
    pub end: u64,
    /// Row within the track, 0 at the bottom.
    pub depth: usize,
    /// Thread the span belongs to.
    pub thread: u32,
    /// The begin record, if it was seen.
    pub begin: Option<Record>,
    /// The end record, if it was seen.
    pub end_record: Option<Record>,
    /// Start or end is inferred (lost record, context switch or end of trace).
    pub cut: bool,
}

/// A point event on a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant {
    pub track: TrackId,
    pub ts: u64,
    pub depth: usize,
    pub kind: EventKind,
    pub record: Record,
}

/// A counter sample.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterSample {
    pub track: TrackId,
    pub ts: u64,
    pub name: String,
    pub value: i64,
}

/// An arrow from one event to another, possibly across cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Unique per trace, assigned in order of the arrow's start.
    pub id: u64,
    pub category: &'static str,
    /// Name of the starting kind (`ipc_send`, `ipc_reply`, `ipi_send`).
    pub name: &'static str,
    pub from: TrackId,
    pub from_ts: u64,
    pub to: TrackId,
    pub to_ts: u64,
    pub start: Record,
    pub finish: Record,
}

impl Flow {
    /// For IPC arrows, the fastpath/slowpath description the sender recorded.
    pub fn ipc_info(&self) -> Option<IpcInfo> {
        (self.category == "ipc").then(|| IpcInfo::unpack(self.start.args[1]))
    }
}

/// A begin paired with its end, ignoring context switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalSpan {
    pub name: String,
    pub kind: EventKind,
    pub track: TrackId,
    pub thread: u32,
    pub start: u64,
    pub end: u64,
}

/// Things that did not pair up, usually because records were lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unmatched {
    /// Span ends whose begin was not in the trace.
    pub ends_without_begin: u64,
    /// Spans still open at the end of the trace.
    pub open_at_end: u64,
    /// Flow starts never finished.
    pub flows_without_end: u64,
    /// Flow ends without a start.
    pub flow_ends_without_start: u64,
}

/// Everything the exporters draw.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub tsc_hz: u64,
    pub cpu_count: u16,
    /// Ticks from the first to the last event.
    pub end: u64,
    pub spans: Vec<Span>,
    pub instants: Vec<Instant>,
    pub counters: Vec<CounterSample>,
    pub flows: Vec<Flow>,
    pub logical: Vec<LogicalSpan>,
    /// Threads that have a user track.
    pub thread_tracks: Vec<u32>,
    pub unmatched: Unmatched,
}

/// Lower-case name of the (single) category of a kind.
pub fn category_name(kind: EventKind) -> &'static str {
    let category = kind.category();
    [
        (Categories::SYSCALL, "syscall"),
        (Categories::IPC, "ipc"),
        (Categories::SCHED, "sched"),
        (Categories::IRQ, "irq"),
        (Categories::IPI, "ipi"),
        (Categories::FAULT, "fault"),
        (Categories::USER, "user"),
    ]
    .into_iter()
    .find(|(bit, _)| *bit == category)
    .map_or("other", |(_, name)| name)
}

/// Converts ticks to nanoseconds (floor), exact for any realistic trace length.
pub fn ticks_to_ns(ticks: u64, tsc_hz: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(tsc_hz.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

impl Timeline {
    /// Nanoseconds from the start of the trace.
    pub fn ns(&self, ticks: u64) -> u64 {
        ticks_to_ns(ticks, self.tsc_hz)
    }

    /// Builds the timeline of a decoded trace.
    pub fn build(trace: &Trace) -> Timeline {
        let events = ordered_events(trace);
        let end = events.last().map_or(0, |e| e.ts);
        let mut builder = Builder::new(trace);
        for event in &events {
            builder.event(event);
        }
        builder.finish(end);
        let thread_tracks = trace
            .sources
            .keys()
            .filter_map(|s| match s {
                SourceId::Thread(t) => Some(*t),
                SourceId::Core(_) => None,
            })
            .collect();
        let Builder { out, instants, counters, flows, logical, unmatched, .. } = builder;
        Timeline {
            tsc_hz: trace.tsc_hz,
            cpu_count: trace.cpu_count(),
            end,
            spans: out,
            instants,
            counters,
            flows,
            logical,
            thread_tracks,
            unmatched,
        }
    }
}

/// A record placed on the common time line.
struct Event {
    ts: u64,
    track: TrackId,
    kind: EventKind,
    record: Record,
}

/// All records, offset-corrected and in time order; ties keep source order.
fn ordered_events(trace: &Trace) -> Vec<Event> {
    let mut aligned: Vec<(i128, TrackId, EventKind, Record)> = Vec::new();
    for (source, data) in &trace.sources {
        let track = match source {
            SourceId::Core(cpu) => TrackId::Core(*cpu),
            SourceId::Thread(thread) => TrackId::Thread(*thread),
        };
        for record in &data.records {
            // Metadata (thread names) went into the trace's tables when decoded.
            let Some(kind) = record.event_kind().filter(|k| k.phase() != Phase::Metadata) else {
                continue;
            };
            let offset = trace.tsc_offsets.get(usize::from(record.cpu)).copied().unwrap_or(0);
            aligned.push((i128::from(record.tsc) - i128::from(offset), track, kind, *record));
        }
    }
    // Stable: records with equal time stay in the order their source wrote them.
    aligned.sort_by_key(|(t, ..)| *t);
    let base = aligned.first().map_or(0, |(t, ..)| *t);
    aligned
        .into_iter()
        .map(|(t, track, kind, record)| Event {
            ts: u64::try_from(t - base).unwrap_or(u64::MAX),
            track,
            kind,
            record,
        })
        .collect()
}

/// An open span.
#[derive(Debug, Clone)]
struct Open {
    kind: EventKind,
    key: u64,
    name: String,
    start: u64,
    record: Option<Record>,
    cut: bool,
}

#[derive(Debug, Default)]
struct TrackState {
    stack: Vec<Open>,
    /// Core tracks: the thread on the core and since when.
    running: Option<(u32, u64)>,
    /// Thread tracks: first event time, the floor for inferred starts.
    first: u64,
}

/// Where logical spans pair up: interrupts per core, everything else per thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Core(u16),
    Thread(u32),
}

/// Whether spans of this kind belong to the core rather than the running thread.
fn core_scoped(kind: EventKind) -> bool {
    kind.category() == Categories::IRQ
}

/// A flow start waiting for its end.
struct FlowStart {
    track: TrackId,
    ts: u64,
    record: Record,
}

struct Builder<'a> {
    trace: &'a Trace,
    tracks: BTreeMap<TrackId, TrackState>,
    /// Kernel spans of threads switched out while inside them.
    suspended: HashMap<u32, Vec<Open>>,
    logical_open: HashMap<Scope, Vec<Open>>,
    /// Flow starts waiting for their end, by (category, flow id).
    pending_flows: HashMap<(u32, u64), VecDeque<FlowStart>>,
    out: Vec<Span>,
    instants: Vec<Instant>,
    counters: Vec<CounterSample>,
    flows: Vec<Flow>,
    logical: Vec<LogicalSpan>,
    unmatched: Unmatched,
}

impl<'a> Builder<'a> {
    fn new(trace: &'a Trace) -> Self {
        Builder {
            trace,
            tracks: BTreeMap::new(),
            suspended: HashMap::new(),
            logical_open: HashMap::new(),
            pending_flows: HashMap::new(),
            out: Vec::new(),
            instants: Vec::new(),
            counters: Vec::new(),
            flows: Vec::new(),
            logical: Vec::new(),
            unmatched: Unmatched::default(),
        }
    }

    /// Row of the innermost open span plus one: where a new span or instant goes.
    fn next_depth(&self, track: TrackId) -> usize {
        let stack = self.tracks.get(&track).map_or(0, |state| state.stack.len());
        match track {
            // Row 0 of a core track is the running thread.
            TrackId::Core(_) => stack + 1,
            TrackId::Thread(_) | TrackId::Running(_) => stack,
        }
    }

    fn event(&mut self, event: &Event) {
        let Event { ts, track, kind, record } = *event;
        self.tracks.entry(track).or_insert_with(|| TrackState { first: ts, ..TrackState::default() });
        if let TrackId::Core(_) = track {
            self.switch(track, record.thread, ts);
        }
        match kind.phase() {
            Phase::Begin => {
                let open = Open {
                    kind,
                    key: record.args[0],
                    name: self.span_name(kind, &record),
                    start: ts,
                    record: Some(record),
                    cut: false,
                };
                self.logical_begin(track, &record, open.clone());
                self.state(track).stack.push(open);
            }
            Phase::End => {
                self.logical_end(track, kind, &record, ts);
                self.close_matching(track, kind, &record, ts);
            }
            Phase::Counter => {
                let name = self.trace.label(record.args[0]);
                // The value travels as the bits of an i64.
                let value = i64::from_le_bytes(record.args[1].to_le_bytes());
                self.counters.push(CounterSample { track, ts, name, value });
            }
            Phase::Metadata => {}
            Phase::Instant | Phase::FlowStart | Phase::FlowEnd => {
                let depth = self.next_depth(track);
                self.instants.push(Instant { track, ts, depth, kind, record });
                match kind.phase() {
                    Phase::FlowStart => self.flow_start(track, ts, kind, record),
                    Phase::FlowEnd => self.flow_end(track, ts, kind, record),
                    _ => {}
                }
                if kind == EventKind::ContextSwitch {
                    // The incoming thread fits in 32 bits by the record format.
                    self.switch(track, record.args[0] as u32, ts);
                }
            }
        }
    }

    fn state(&mut self, track: TrackId) -> &mut TrackState {
        self.tracks.entry(track).or_default()
    }

    fn span_name(&self, kind: EventKind, record: &Record) -> String {
        match kind {
            EventKind::SyscallEnter => format!("syscall {}", record.args[0]),
            EventKind::IrqEnter => format!("irq {}", record.args[0]),
            EventKind::UserSpanBegin => self.trace.label(record.args[0]),
            other => other.span_name().to_owned(),
        }
    }

    /// Makes `thread` the one running on a core track, suspending and resuming
    /// kernel spans as the switch requires.
    fn switch(&mut self, track: TrackId, thread: u32, ts: u64) {
        let state = self.state(track);
        let previous = state.running;
        if previous.is_some_and(|(running, _)| running == thread) {
            return;
        }
        let open = std::mem::take(&mut state.stack);
        state.running = Some((thread, ts));
        // Interrupt handlers belong to the core: a switch inside one (a preempting
        // timer) carries them over to the incoming thread instead of suspending them.
        let (carried, suspended): (Vec<Open>, Vec<Open>) =
            open.iter().cloned().partition(|f| core_scoped(f.kind));
        if let Some((old, since)) = previous {
            for (depth, frame) in open.iter().enumerate().rev() {
                self.emit(track, old, depth + 1, frame, ts, None, true);
            }
            self.running_span(track, old, since, ts);
            self.suspended.insert(old, suspended);
        }
        let resumed: Vec<Open> = self
            .suspended
            .remove(&thread)
            .unwrap_or_default()
            .into_iter()
            .chain(carried)
            .map(|frame| Open { start: ts, cut: true, ..frame })
            .collect();
        self.state(track).stack = resumed;
    }

    fn running_span(&mut self, track: TrackId, thread: u32, start: u64, end: u64) {
        let span = Span {
            track,
            name: self.trace.thread_name(thread),
            category: "sched",
            start,
            end,
            depth: 0,
            thread,
            begin: None,
            end_record: None,
            cut: false,
        };
        // The same stay on the thread's own running track, named after the CPU.
        if let (TrackId::Core(cpu), false) = (track, thread == ramen_perf_record::IDLE_THREAD) {
            self.out.push(Span {
                track: TrackId::Running(thread),
                name: format!("cpu {cpu}"),
                ..span.clone()
            });
        }
        self.out.push(span);
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        track: TrackId,
        thread: u32,
        depth: usize,
        frame: &Open,
        end: u64,
        end_record: Option<Record>,
        cut: bool,
    ) {
        self.out.push(Span {
            track,
            name: frame.name.clone(),
            category: category_name(frame.kind),
            start: frame.start,
            end,
            depth,
            thread,
            begin: frame.record,
            end_record,
            cut: cut || frame.cut,
        });
    }

    fn thread_of(&self, track: TrackId) -> u32 {
        match track {
            TrackId::Thread(thread) | TrackId::Running(thread) => thread,
            TrackId::Core(_) => self.tracks.get(&track).and_then(|s| s.running).map_or(0, |(t, _)| t),
        }
    }

    fn close_matching(&mut self, track: TrackId, end_kind: EventKind, record: &Record, ts: u64) {
        let Some(begin_kind) = end_kind.span_begin() else {
            return;
        };
        let thread = self.thread_of(track);
        let base = self.next_depth(track) - self.state(track).stack.len();
        let state = self.state(track);
        let found =
            state.stack.iter().rposition(|open| open.kind == begin_kind && open.key == record.args[0]);
        match found {
            Some(index) => {
                let closed: Vec<Open> = state.stack.drain(index..).collect();
                for (offset, frame) in closed.iter().enumerate().rev() {
                    let matched = offset == 0;
                    let end_record = matched.then_some(*record);
                    self.emit(track, thread, base + index + offset, frame, ts, end_record, !matched);
                }
            }
            None => {
                let floor = match state.running {
                    Some((_, since)) => since,
                    None => state.first,
                };
                let start = state.stack.last().map_or(floor, |open| open.start).max(floor);
                let depth = base + state.stack.len();
                self.unmatched.ends_without_begin += 1;
                let frame = Open {
                    kind: begin_kind,
                    key: record.args[0],
                    name: self.span_name(begin_kind, record),
                    start,
                    record: None,
                    cut: true,
                };
                self.emit(track, thread, depth, &frame, ts, Some(*record), true);
            }
        }
    }

    fn scope(track: TrackId, kind: EventKind, record: &Record) -> Scope {
        match track {
            TrackId::Core(cpu) if core_scoped(kind) => Scope::Core(cpu),
            _ => Scope::Thread(record.thread),
        }
    }

    fn logical_begin(&mut self, track: TrackId, record: &Record, open: Open) {
        let scope = Self::scope(track, open.kind, record);
        self.logical_open.entry(scope).or_default().push(open);
    }

    fn logical_end(&mut self, track: TrackId, end_kind: EventKind, record: &Record, ts: u64) {
        let Some(begin_kind) = end_kind.span_begin() else {
            return;
        };
        let scope = Self::scope(track, end_kind, record);
        let Some(stack) = self.logical_open.get_mut(&scope) else {
            return;
        };
        let Some(index) =
            stack.iter().rposition(|open| open.kind == begin_kind && open.key == record.args[0])
        else {
            return;
        };
        // Spans opened inside this one and never closed lost their ends.
        let mut closed = stack.drain(index..);
        if let Some(open) = closed.next() {
            self.logical.push(LogicalSpan {
                name: open.name,
                kind: begin_kind,
                track,
                thread: record.thread,
                start: open.start,
                end: ts,
            });
        }
    }

    fn flow_start(&mut self, track: TrackId, ts: u64, kind: EventKind, record: Record) {
        let key = (kind.category().bits(), record.args[0]);
        self.pending_flows.entry(key).or_default().push_back(FlowStart { track, ts, record });
    }

    fn flow_end(&mut self, track: TrackId, ts: u64, kind: EventKind, record: Record) {
        let key = (kind.category().bits(), record.args[0]);
        let Some(FlowStart { track: from, ts: from_ts, record: start }) =
            self.pending_flows.get_mut(&key).and_then(VecDeque::pop_front)
        else {
            self.unmatched.flow_ends_without_start += 1;
            return;
        };
        let name = start.event_kind().map_or("flow", EventKind::name);
        self.flows.push(Flow {
            id: self.flows.len() as u64 + 1,
            category: category_name(kind),
            name,
            from,
            from_ts,
            to: track,
            to_ts: ts,
            start,
            finish: record,
        });
    }

    fn finish(&mut self, end: u64) {
        let tracks: Vec<TrackId> = self.tracks.keys().copied().collect();
        for track in tracks {
            let thread = self.thread_of(track);
            let base = self.next_depth(track) - self.state(track).stack.len();
            let state = self.state(track);
            let open = std::mem::take(&mut state.stack);
            let running = state.running;
            for (depth, frame) in open.iter().enumerate().rev() {
                if !frame.cut {
                    self.unmatched.open_at_end += 1;
                }
                self.emit(track, thread, base + depth, frame, end, None, true);
            }
            if let Some((thread, since)) = running {
                self.running_span(track, thread, since, end);
            }
        }
        self.unmatched.flows_without_end = self.pending_flows.values().map(|q| q.len() as u64).sum();
        // Exporters and tests want a stable order: by track, then time, outer first.
        self.out.sort_by_key(|span| (span.track, span.start, span.depth));
    }
}
