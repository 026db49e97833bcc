//! Turning a parsed benchmark console into results, and results into the terminal
//! report beside seL4's figures (`shared/notes/reference-figures.md`).

use std::fmt::Write as _;

use anyhow::{Context, bail};
use serde::Serialize;

use super::parse::{BenchLine, Console};
use super::stats::Summary;
use crate::qemu::Accel;

/// What one tick of the run's TSC is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// `-icount shift=0`: the TSC advances one tick per guest instruction.
    Instructions,
    /// Plain TCG: the TSC follows the host clock, so ticks measure the emulator.
    EmulatorTicks,
    /// KVM on hardware virtualisation: real TSC cycles.
    TscCycles,
    /// KVM as a software hypervisor: ticks, but not representative of hardware.
    SoftwareKvmTicks,
}

impl Unit {
    pub fn of(accel: Accel) -> Self {
        match accel {
            Accel::TcgIcount => Unit::Instructions,
            Accel::Tcg => Unit::EmulatorTicks,
            Accel::Kvm { software: false } => Unit::TscCycles,
            Accel::Kvm { software: true } => Unit::SoftwareKvmTicks,
        }
    }

    /// The unit in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Unit::Instructions => "instructions (icount: one TSC tick per guest instruction)",
            Unit::EmulatorTicks => "emulator time (TSC ticks, not CPU cycles)",
            Unit::TscCycles => "TSC cycles",
            Unit::SoftwareKvmTicks => "TSC ticks under a software hypervisor (not representative)",
        }
    }

    /// The unit after a number.
    pub fn short(self) -> &'static str {
        match self {
            Unit::Instructions => "instructions",
            Unit::TscCycles => "cycles",
            Unit::EmulatorTicks | Unit::SoftwareKvmTicks => "ticks",
        }
    }
}

/// One latency case, the empty window already subtracted from every sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyResult {
    pub case: String,
    pub words: u64,
    pub client_cpu: u32,
    pub server_cpu: u32,
    /// The empty window (least `rdtscp - rdtsc`) subtracted from every figure here:
    /// they include the stubs' own register set-up ("inclusive").
    pub empty_window: u64,
    /// sel4bench's overhead (the `Call` / `ReplyRecv` stubs around a NOP), if the run
    /// measured it: what [`LatencyResult::sel4_method`] subtracts instead.
    pub stub_overhead: Option<u64>,
    /// Client `rdtsc` to server `rdtscp`.
    pub call: Summary,
    /// Server `rdtsc` to client `rdtscp`.
    pub reply_recv: Summary,
    /// Call + ReplyRecv of the same round trip (sel4bench's round trip).
    pub call_plus_reply_recv: Summary,
    /// Client `rdtsc` before Call to `rdtscp` after it (includes the server's own code).
    pub client_round_trip: Summary,
    /// Kernel IPC operations during the case (setup, dump and reports included) that
    /// took the fastpath and the slow path.
    pub fastpath_ops: u64,
    pub slowpath_ops: u64,
    /// Call + ReplyRecv per sample, for the histogram.
    #[serde(skip)]
    pub sums: Vec<u64>,
}

impl LatencyResult {
    /// Call, ReplyRecv and their sum (medians) as sel4bench computes them: the stub
    /// overhead subtracted instead of the empty window (a constant, so the medians
    /// move by it), without our stubs' set-up; `None` if the run did not measure it.
    pub fn sel4_method(&self) -> Option<(u64, u64, u64)> {
        let stub = self.stub_overhead?;
        let shift =
            |median: u64, times: u64| (median + times * self.empty_window).saturating_sub(times * stub);
        Some((
            shift(self.call.median, 1),
            shift(self.reply_recv.median, 1),
            shift(self.call_plus_reply_recv.median, 2),
        ))
    }

    /// `case/<words>w`, the key in the baseline.
    pub fn key(&self) -> String {
        format!("{}/{}w", self.case, self.words)
    }
}

/// One scaling run: `pairs` same-core pairs, one per CPU, all at once.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScalingResult {
    pub pairs: u32,
    pub round_trips: u64,
    /// From the first client's start to the last one's end.
    pub ticks: u64,
    pub round_trips_per_million_ticks: f64,
    /// Throughput over `pairs` times the one-pair throughput.
    pub efficiency: f64,
}

/// The busy-server run: clients on every CPU calling one server at once (callers
/// queue on its endpoint), with the fastpath (and the lock-free slow-path entries)
/// on or off.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContendedResult {
    pub fastpath: bool,
    pub clients: u64,
    pub round_trips: u64,
    /// From the first client's start to the last one's end.
    pub ticks: u64,
    pub round_trips_per_million_ticks: f64,
    /// IPC system calls that took the slow path during the run (all CPUs).
    pub slowpath_ops: u64,
    /// Write acquisitions of `CAP_LOCK`, the kernel's one global lock, during the run.
    pub cap_lock_writes: u64,
}

/// IPC pairs on CPUs 1.. alone and beside capability changes on CPU 0: what the
/// global write lock left costs them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChurnResult {
    pub churn: bool,
    pub pairs: u32,
    pub round_trips: u64,
    pub ticks: u64,
    pub round_trips_per_million_ticks: f64,
    /// Capability copies and deletes the root task made during the run.
    pub cap_changes: u64,
    /// Write acquisitions of `CAP_LOCK` during the run (all CPUs).
    pub cap_lock_writes: u64,
}

/// One size of the bulk case, both ways of moving it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BulkResult {
    pub bytes: u64,
    /// Full-length messages, the kernel copying buffer to buffer (median, least).
    pub copy_median: u64,
    pub copy_min: u64,
    /// One call lending the range (median, least).
    pub lease_median: u64,
    pub lease_min: u64,
    pub reps: u64,
    /// Bytes per tick (per instruction under icount), from the medians.
    pub copy_bytes_per_tick: f64,
    pub lease_bytes_per_tick: f64,
    /// Copy time over lease time.
    pub lease_speedup: f64,
}

/// The IPC issue's bulk target: a lease of this many bytes at least
/// [`BULK_TARGET_SPEEDUP`] times faster than copying.
pub const BULK_TARGET_BYTES: u64 = 1 << 20;
pub const BULK_TARGET_SPEEDUP: f64 = 10.0;

/// A case the run did not measure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub case: String,
    pub status: &'static str,
    pub why: String,
}

/// Everything one QEMU boot measured, and on what.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// `icount` (deterministic) or `parallel`.
    pub mode: &'static str,
    pub accel: String,
    pub unit: Unit,
    pub cpu_model: String,
    /// Whether the CPU has PCIDs and the kernel uses them (from its boot line).
    pub pcid: Option<Pcid>,
    pub cpus: u32,
    pub sockets: u32,
    pub tsc_hz: u64,
    pub samples: u64,
    pub warmup: u64,
    pub rounds_per_pair: u64,
    pub latency: Vec<LatencyResult>,
    pub scaling: Vec<ScalingResult>,
    pub contended: Vec<ContendedResult>,
    pub churn: Vec<ChurnResult>,
    pub bulk: Vec<BulkResult>,
    /// The headline round trip (Call + ReplyRecv median) of a kernel built with its
    /// trace points compiled out, booted beside this run (icount runs only).
    pub headline_trace_compiled_out: Option<u64>,
    pub skipped: Vec<Skipped>,
}

/// PCIDs on the CPU the run used: whether it has them, and whether the kernel used
/// them (address-space switches keep the TLB; docs/ipc.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pcid {
    pub available: bool,
    pub in_use: bool,
}

/// How a run was made, for the report.
pub struct RunInfo {
    pub mode: &'static str,
    pub accel: Accel,
    pub accel_line: String,
    pub cpu_model: String,
}

/// Builds the results of one run from its console.
pub fn build(console: &Console, info: RunInfo) -> anyhow::Result<RunReport> {
    let Some(BenchLine::Machine { cpus, sockets, tsc_hz, samples, warmup, rounds }) =
        console.lines.iter().find(|line| matches!(line, BenchLine::Machine { .. })).cloned()
    else {
        bail!("the benchmark never printed its machine line");
    };
    let mut report = RunReport {
        mode: info.mode,
        accel: info.accel_line,
        unit: Unit::of(info.accel),
        cpu_model: info.cpu_model,
        pcid: console.pcid.map(|(available, in_use)| Pcid { available, in_use }),
        cpus,
        sockets,
        tsc_hz,
        samples,
        warmup,
        rounds_per_pair: rounds,
        latency: Vec::new(),
        scaling: Vec::new(),
        contended: Vec::new(),
        churn: Vec::new(),
        bulk: Vec::new(),
        headline_trace_compiled_out: None,
        skipped: Vec::new(),
    };
    let mut one_pair_rate = None;
    for line in &console.lines {
        match line {
            BenchLine::Latency {
                id,
                case,
                words,
                client_cpu,
                server_cpu,
                overhead,
                stub_overhead,
                fastpath_ops,
                slowpath_ops,
                ..
            } => {
                let series = |metric: &str| -> anyhow::Result<Vec<u64>> {
                    let values = console.samples.get(&(*id, metric.to_string())).with_context(|| {
                        format!("case {case} ({words} words) printed no `{metric}` samples")
                    })?;
                    Ok(values.iter().map(|v| v.saturating_sub(*overhead)).collect())
                };
                let (calls, reply_recvs, round_trips) = (series("call")?, series("rr")?, series("rt")?);
                // Sample i of each list is the same round trip: lists of different
                // lengths mean a lost line, and pairing them would add up different
                // round trips.
                anyhow::ensure!(
                    calls.len() == reply_recvs.len() && calls.len() == round_trips.len(),
                    "case {case} ({words} words): {} call, {} ReplyRecv and {} round-trip samples",
                    calls.len(),
                    reply_recvs.len(),
                    round_trips.len()
                );
                let sums: Vec<u64> = calls.iter().zip(&reply_recvs).map(|(c, r)| c + r).collect();
                let summary =
                    |values: &[u64]| Summary::of(values).with_context(|| format!("case {case}: no samples"));
                report.latency.push(LatencyResult {
                    case: case.clone(),
                    words: *words,
                    client_cpu: *client_cpu,
                    server_cpu: *server_cpu,
                    empty_window: *overhead,
                    stub_overhead: (*stub_overhead > 0).then_some(*stub_overhead),
                    call: summary(&calls)?,
                    reply_recv: summary(&reply_recvs)?,
                    call_plus_reply_recv: summary(&sums)?,
                    client_round_trip: summary(&round_trips)?,
                    fastpath_ops: *fastpath_ops,
                    slowpath_ops: *slowpath_ops,
                    sums,
                });
            }
            BenchLine::Throughput { pairs, round_trips, ticks, .. } => {
                let rate = *round_trips as f64 * 1e6 / (*ticks).max(1) as f64;
                let one = *one_pair_rate.get_or_insert(rate);
                report.scaling.push(ScalingResult {
                    pairs: *pairs,
                    round_trips: *round_trips,
                    ticks: *ticks,
                    round_trips_per_million_ticks: rate,
                    efficiency: rate / (f64::from(*pairs) * one),
                });
            }
            BenchLine::Contended { fastpath, clients, round_trips, ticks, slow, cap_writes } => {
                report.contended.push(ContendedResult {
                    fastpath: *fastpath,
                    clients: *clients,
                    round_trips: *round_trips,
                    ticks: *ticks,
                    round_trips_per_million_ticks: *round_trips as f64 * 1e6 / (*ticks).max(1) as f64,
                    slowpath_ops: *slow,
                    cap_lock_writes: *cap_writes,
                });
            }
            BenchLine::Churn { churn, pairs, round_trips, ticks, cap_changes, cap_writes } => {
                report.churn.push(ChurnResult {
                    churn: *churn,
                    pairs: *pairs,
                    round_trips: *round_trips,
                    ticks: *ticks,
                    round_trips_per_million_ticks: *round_trips as f64 * 1e6 / (*ticks).max(1) as f64,
                    cap_changes: *cap_changes,
                    cap_lock_writes: *cap_writes,
                });
            }
            BenchLine::Bulk { bytes, method, median, min, reps } => {
                let index = match report.bulk.iter().position(|b| b.bytes == *bytes) {
                    Some(index) => index,
                    None => {
                        report.bulk.push(BulkResult {
                            bytes: *bytes,
                            copy_median: 0,
                            copy_min: 0,
                            lease_median: 0,
                            lease_min: 0,
                            reps: *reps,
                            copy_bytes_per_tick: 0.0,
                            lease_bytes_per_tick: 0.0,
                            lease_speedup: 0.0,
                        });
                        report.bulk.len() - 1
                    }
                };
                let entry = &mut report.bulk[index];
                match method.as_str() {
                    "copy" => (entry.copy_median, entry.copy_min) = (*median, *min),
                    "lease" => (entry.lease_median, entry.lease_min) = (*median, *min),
                    other => bail!("bulk line with unknown method `{other}`"),
                }
                let per_tick = |ticks: u64| if ticks == 0 { 0.0 } else { *bytes as f64 / ticks as f64 };
                entry.copy_bytes_per_tick = per_tick(entry.copy_median);
                entry.lease_bytes_per_tick = per_tick(entry.lease_median);
                entry.lease_speedup = if entry.lease_median == 0 {
                    0.0
                } else {
                    entry.copy_median as f64 / entry.lease_median as f64
                };
            }
            BenchLine::Unsupported { case, why } => {
                report.skipped.push(Skipped { case: case.clone(), status: "unsupported", why: why.clone() })
            }
            BenchLine::Failed { case, why } => {
                report.skipped.push(Skipped { case: case.clone(), status: "failed", why: why.clone() })
            }
            BenchLine::Machine { .. } | BenchLine::End => {}
        }
    }
    Ok(report)
}

/// seL4's figures measured with sel4bench on the same QEMU under icount (instructions):
/// (our case, our words, what seL4 measured, Call, ReplyRecv).
pub const SEL4_SAME_QEMU: &[(&str, u64, &str, u64, u64)] = &[
    ("same_core_cross_as", 0, "fastpath, 0 words", 198, 225),
    ("same_core_same_as", 0, "fastpath, 0 words", 196, 223),
    // No 6-word row: seL4's x86_64 fastpath takes at most 4 words, and sel4bench was
    // measured at 0 and 10; our 6-word fastpath beside its 10-word slow path compared
    // unlike things.
    ("same_core_cross_as", 10, "10 words, slow path", 811, 778),
];

/// Published sel4bench results on other hardware (TSC cycles, cross-AS, 0 words):
/// (machine and configuration, Call, ReplyRecv).
pub const SEL4_PUBLISHED: &[(&str, u64, u64)] = &[
    ("Skylake i7-6700, no Meltdown mitigation", 722, 578),
    ("Skylake i7-6700, Meltdown mitigation (KSW) on", 946, 798),
    ("Haswell i7-4770, no mitigation", 554, 411),
];

/// The IPC issue's target: fastpath round trip (Call + ReplyRecv, same core, cross
/// address space, 0 words) at most this many instructions (0.6x seL4's 423).
pub const TARGET_ROUND_TRIP_INSTRUCTIONS: u64 = 250;

/// The IPC issue's hardware target: the same round trip under this many TSC cycles
/// on real hardware with KVM (seL4 without Meltdown mitigation: 772 to 1300).
pub const TARGET_ROUND_TRIP_CYCLES: u64 = 600;

/// [`HEADLINE_CASE`] again with kernel tracing on.
pub const TRACED_CASE: &str = "same_core_cross_as_traced";

/// The Foundry case, measured against [`HEADLINE_CASE`] with the same payload.
pub const FOUNDRY_CASE: &str = "foundry_echo_same_core";
/// The Foundry issue's target: a generated call costs at most this much more.
pub const FOUNDRY_TARGET_PERCENT: f64 = 5.0;

/// The case the target and the regression check are about.
pub const HEADLINE_CASE: (&str, u64) = ("same_core_cross_as", 0);

impl RunReport {
    /// The latency result of `case` with `words`, if measured.
    pub fn latency_of(&self, case: &str, words: u64) -> Option<&LatencyResult> {
        self.latency.iter().find(|result| result.case == case && result.words == words)
    }

    /// The human report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let unit = self.unit.short();
        let _ = writeln!(out, "== {} run: {}", self.mode, self.accel);
        let _ = writeln!(
            out,
            "   CPU: {}; {} CPU(s), {} socket(s); TSC {} Hz",
            self.cpu_model, self.cpus, self.sockets, self.tsc_hz
        );
        if let Some(pcid) = self.pcid {
            let what = match (pcid.available, pcid.in_use) {
                (true, true) => "in use (address-space switches keep the TLB)",
                (true, false) => "available but off (`nopcid`)",
                (false, _) => "not offered by this CPU (every address-space switch drops the TLB)",
            };
            let _ = writeln!(out, "   PCID: {what}");
        }
        let _ = writeln!(out, "   unit: {}", self.unit.describe());
        let _ = writeln!(
            out,
            "   {} samples per case after {} warm-up calls; medians unless marked; empty window subtracted",
            self.samples, self.warmup
        );
        let _ = writeln!(
            out,
            "   fast/slow: the kernel's fastpath and slow-path IPC operations during the case (setup included)"
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>5} {:>8} {:>9} {:>9} {:>10} {:>13} {:>8} {:>8} {:>12}",
            "case",
            "words",
            "cpus",
            "Call",
            "ReplyRecv",
            "Call+RR",
            "client RT",
            "C+RR p10-p90",
            "p99",
            "min",
            "fast/slow"
        );
        for r in &self.latency {
            let s = &r.call_plus_reply_recv;
            let _ = writeln!(
                out,
                "{:<24} {:>5} {:>5} {:>8} {:>9} {:>9} {:>10} {:>13} {:>8} {:>8} {:>12}",
                r.case,
                r.words,
                format!("{}->{}", r.client_cpu, r.server_cpu),
                r.call.median,
                r.reply_recv.median,
                s.median,
                r.client_round_trip.median,
                format!("{}-{}", s.p10, s.p90),
                s.p99,
                s.min,
                format!("{}/{}", r.fastpath_ops, r.slowpath_ops)
            );
        }
        if self.latency.iter().any(|r| r.case.starts_with("notification")) {
            let _ = writeln!(
                out,
                "   notification_*: Call = client signals, server wakes; ReplyRecv = server signals, client wakes \
                 (each leg includes the signaller's own wait)"
            );
        }
        let _ = writeln!(out);
        self.render_references(&mut out);
        if !self.scaling.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "scaling: one same-core pair per CPU, {} round trips each, all released together",
                self.rounds_per_pair
            );
            if self.unit == Unit::Instructions {
                let _ = writeln!(
                    out,
                    "   (icount: vCPUs take turns on one host thread, so this counts instructions, not parallel speed)"
                );
            }
            let _ = writeln!(
                out,
                "{:>5} {:>12} {:>20} {:>26} {:>16}",
                "pairs",
                "round trips",
                format!("span ({unit})"),
                format!("RT per M {unit}"),
                "vs N x one pair"
            );
            for s in &self.scaling {
                let _ = writeln!(
                    out,
                    "{:>5} {:>12} {:>20} {:>26.1} {:>15.1}%",
                    s.pairs,
                    s.round_trips,
                    s.ticks,
                    s.round_trips_per_million_ticks,
                    s.efficiency * 100.0
                );
            }
        }
        self.render_contended(&mut out);
        self.render_churn(&mut out);
        self.render_bulk(&mut out);
        if !self.skipped.is_empty() {
            let _ = writeln!(out);
        }
        for skipped in &self.skipped {
            let status = if skipped.status == "unsupported" { "not yet implemented" } else { "FAILED" };
            let _ = writeln!(out, "{status}: {} ({})", skipped.case, skipped.why);
        }
        out
    }

    /// The busy-server runs: throughput and what they cost in the global lock.
    fn render_contended(&self, out: &mut String) {
        if self.contended.is_empty() {
            return;
        }
        let unit = self.unit.short();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "busy server: {} clients (one per CPU, round robin) calling one server at once",
            self.contended[0].clients
        );
        let _ = writeln!(
            out,
            "{:>9} {:>12} {:>20} {:>22} {:>10} {:>16}",
            "fastpath",
            "round trips",
            format!("span ({unit})"),
            format!("RT per M {unit}"),
            "slow path",
            "CAP_LOCK writes"
        );
        for c in &self.contended {
            let _ = writeln!(
                out,
                "{:>9} {:>12} {:>20} {:>22.1} {:>10} {:>16}",
                if c.fastpath { "on" } else { "off" },
                c.round_trips,
                c.ticks,
                c.round_trips_per_million_ticks,
                c.slowpath_ops,
                c.cap_lock_writes
            );
        }
    }

    /// IPC pairs alone and beside capability changes.
    fn render_churn(&self, out: &mut String) {
        let Some(first) = self.churn.first() else {
            return;
        };
        let unit = self.unit.short();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "beside capability changes: {} same-core pair(s) on CPUs 1.., alone and while CPU 0 copies and deletes a capability in a loop",
            first.pairs
        );
        let _ = writeln!(
            out,
            "{:>6} {:>12} {:>20} {:>22} {:>12} {:>16}",
            "churn",
            "round trips",
            format!("span ({unit})"),
            format!("RT per M {unit}"),
            "cap changes",
            "CAP_LOCK writes"
        );
        for c in &self.churn {
            let _ = writeln!(
                out,
                "{:>6} {:>12} {:>20} {:>22.1} {:>12} {:>16}",
                if c.churn { "yes" } else { "no" },
                c.round_trips,
                c.ticks,
                c.round_trips_per_million_ticks,
                c.cap_changes,
                c.cap_lock_writes
            );
        }
    }

    /// The bulk case: copying through messages against lending.
    fn render_bulk(&self, out: &mut String) {
        if self.bulk.is_empty() {
            return;
        }
        let unit = self.unit.short();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "bulk: bytes to a server on the same CPU, medians of {} (copy: 120-word messages, the kernel copying \
             buffer to buffer; lease: one call lending the range, pinned and mapped, no copy)",
            self.bulk.first().map_or(0, |b| b.reps)
        );
        let _ = writeln!(
            out,
            "{:>10} {:>16} {:>12} {:>16} {:>12} {:>9}",
            "bytes",
            format!("copy ({unit})"),
            format!("B/{unit}"),
            format!("lease ({unit})"),
            format!("B/{unit}"),
            "speed-up"
        );
        for b in &self.bulk {
            let _ = writeln!(
                out,
                "{:>10} {:>16} {:>12.2} {:>16} {:>12.2} {:>8.1}x",
                b.bytes,
                b.copy_median,
                b.copy_bytes_per_tick,
                b.lease_median,
                b.lease_bytes_per_tick,
                b.lease_speedup
            );
        }
        // Targets are judged on the deterministic run only.
        if let Some(b) = self
            .bulk
            .iter()
            .find(|b| b.bytes == BULK_TARGET_BYTES)
            .filter(|_| self.unit == Unit::Instructions)
        {
            let _ = writeln!(
                out,
                "target (IPC issue): a 1 MiB lease at least {BULK_TARGET_SPEEDUP}x faster than copying: {} ({:.1}x)",
                if b.lease_speedup >= BULK_TARGET_SPEEDUP { "reached" } else { "NOT reached" },
                b.lease_speedup
            );
        }
    }

    /// Foundry-generated calls against raw IPC with the same payload (the Foundry
    /// issue's target: at most 5% more).
    fn render_foundry(&self, out: &mut String) {
        let unit = self.unit.short();
        let pairs: Vec<_> = [0, 6]
            .iter()
            .filter_map(|&words| {
                Some((words, self.latency_of(FOUNDRY_CASE, words)?, self.latency_of(HEADLINE_CASE.0, words)?))
            })
            .collect();
        if pairs.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "Foundry-generated echo calls against raw IPC, same core, cross-AS ({unit}, medians):"
        );
        for (words, foundry, raw) in pairs {
            let (f, r) = (foundry.client_round_trip.median, raw.client_round_trip.median);
            let extra = (f as f64 / r.max(1) as f64 - 1.0) * 100.0;
            // Verdicts on the deterministic run only: emulator time is noise here.
            let verdict = match self.unit {
                Unit::Instructions if extra <= FOUNDRY_TARGET_PERCENT => "reached",
                Unit::Instructions => "NOT reached",
                _ => "judged on the icount run",
            };
            let _ = writeln!(
                out,
                "   {words}w client round trip: foundry {f}, raw {r} ({extra:+.1}%; target <= +{FOUNDRY_TARGET_PERCENT}%: {verdict})"
            );
        }
    }

    fn render_references(&self, out: &mut String) {
        let unit = self.unit.short();
        if self.unit == Unit::Instructions {
            let _ = writeln!(
                out,
                "beside seL4 on the same QEMU, icount (sel4bench, measured 2026-11-24), instructions:"
            );
            for (case, words, what, call, reply_recv) in SEL4_SAME_QEMU {
                let Some(ours) = self.latency_of(case, *words) else { continue };
                let sel4 = call + reply_recv;
                let inclusive = ours.call_plus_reply_recv.median;
                match (ours.sel4_method(), ours.stub_overhead) {
                    (Some((c, r, round_trip)), Some(stub)) => {
                        let _ = writeln!(
                            out,
                            "   {case} {words}w: ours {c} + {r} = {round_trip} (sel4bench's method: its stubs around a NOP, \
                             {stub}, subtracted); seL4 ({what}) {call} + {reply_recv} = {sel4} ({:.2}x seL4); \
                             inclusive of our stubs' set-up (empty window subtracted): {inclusive}",
                            round_trip as f64 / sel4 as f64
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            out,
                            "   {case} {words}w: ours {} + {} = {inclusive}, inclusive of our stubs' set-up (no stub \
                             overhead measured); seL4 ({what}) {call} + {reply_recv} = {sel4}",
                            ours.call.median, ours.reply_recv.median
                        );
                    }
                }
            }
            if let Some(ours) = self.latency_of(HEADLINE_CASE.0, HEADLINE_CASE.1) {
                // Against seL4's figure, so measured as sel4bench measures it.
                let round_trip = ours.sel4_method().map_or(ours.call_plus_reply_recv.median, |(_, _, rt)| rt);
                let reached = round_trip <= TARGET_ROUND_TRIP_INSTRUCTIONS;
                let _ = writeln!(
                    out,
                    "target (IPC issue): fastpath round trip <= {TARGET_ROUND_TRIP_INSTRUCTIONS} instructions (0.6x seL4's 423): {} (ours {round_trip})",
                    if reached { "reached" } else { "NOT reached" }
                );
            }
        } else {
            let _ = writeln!(
                out,
                "seL4 on the same QEMU was measured under icount (instructions): not comparable with {unit}; see the icount run"
            );
            if self.unit == Unit::TscCycles
                && let Some(ours) = self.latency_of(HEADLINE_CASE.0, HEADLINE_CASE.1)
            {
                let round_trip = ours.call_plus_reply_recv.median;
                let _ = writeln!(
                    out,
                    "target (IPC issue): round trip under {TARGET_ROUND_TRIP_CYCLES} TSC cycles on hardware with KVM: {} (ours {round_trip})",
                    if round_trip < TARGET_ROUND_TRIP_CYCLES { "reached" } else { "NOT reached" }
                );
            } else {
                let _ = writeln!(
                    out,
                    "the {TARGET_ROUND_TRIP_CYCLES}-cycle hardware target needs a run under real KVM (a host with vmx/svm): not measured here"
                );
            }
        }
        self.render_foundry(out);
        if let (Some(traced), Some(plain)) =
            (self.latency_of(TRACED_CASE, 0), self.latency_of(HEADLINE_CASE.0, HEADLINE_CASE.1))
        {
            let (t, p) = (traced.call_plus_reply_recv.median, plain.call_plus_reply_recv.median);
            let _ = writeln!(
                out,
                "tracing on (every kernel category) costs {} {unit} per round trip: {t} against {p} \
                 (a round trip records 10 events)",
                t as i64 - p as i64
            );
            if let Some(out_of_kernel) = self.headline_trace_compiled_out {
                let _ = writeln!(
                    out,
                    "tracing compiled in but off costs {} {unit} per round trip: {p} against {out_of_kernel} \
                     with the trace points compiled out (the same case on a second kernel build)",
                    p as i64 - out_of_kernel as i64
                );
            }
        }
        let comparable =
            if self.unit == Unit::TscCycles { "" } else { "; not comparable with this run's unit" };
        let _ = writeln!(
            out,
            "published, other hardware (sel4bench CI, TSC cycles, cross-AS, 0 words: Call + ReplyRecv{comparable}):"
        );
        for (machine, call, reply_recv) in SEL4_PUBLISHED {
            let _ = writeln!(out, "   {machine}: {call} + {reply_recv} = {}", call + reply_recv);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::parse::parse_console;

    pub(crate) fn sample_console() -> Console {
        parse_console(&SAMPLE_CONSOLE.lines().map(String::from).collect::<Vec<_>>()).unwrap()
    }

    const SAMPLE_CONSOLE: &str = "\
BENCH {\"kind\":\"machine\",\"cpus\":2,\"sockets\":1,\"tsc_hz\":1000000000,\"samples\":4,\"warmup\":1,\"rounds\":100}
BENCHS id=1 m=call i=0 v=649*3,700
BENCHS id=1 m=rr i=0 v=636*4
BENCHS id=1 m=rt i=0 v=1290*4
BENCH {\"kind\":\"latency\",\"id\":1,\"case\":\"same_core_cross_as\",\"words\":0,\"client_cpu\":0,\"server_cpu\":0,\"overhead\":4,\"stub_overhead\":20,\"samples\":4,\"fastpath_ops\":2210,\"slowpath_ops\":12}
BENCHS id=2 m=call i=0 v=5000,6000
BENCHS id=2 m=rr i=0 v=5000,5000
BENCHS id=2 m=rt i=0 v=10100,11100
BENCH {\"kind\":\"latency\",\"id\":2,\"case\":\"cross_core_same_socket\",\"words\":0,\"client_cpu\":0,\"server_cpu\":1,\"overhead\":4,\"samples\":2}
BENCH {\"kind\":\"throughput\",\"case\":\"scaling\",\"pairs\":1,\"round_trips\":100,\"ticks\":100000}
BENCH {\"kind\":\"throughput\",\"case\":\"scaling\",\"pairs\":2,\"round_trips\":200,\"ticks\":125000}
BENCH {\"kind\":\"contended\",\"fastpath\":true,\"clients\":4,\"round_trips\":4000,\"ticks\":2000000,\"slow\":0,\"cap_writes\":0}
BENCH {\"kind\":\"churn\",\"churn\":false,\"pairs\":1,\"round_trips\":100,\"ticks\":100000,\"cap_changes\":0,\"cap_writes\":0}
BENCH {\"kind\":\"churn\",\"churn\":true,\"pairs\":1,\"round_trips\":100,\"ticks\":125000,\"cap_changes\":300,\"cap_writes\":304}
BENCH {\"kind\":\"contended\",\"fastpath\":false,\"clients\":4,\"round_trips\":4000,\"ticks\":8000000,\"slow\":8004,\"cap_writes\":8010}
BENCH {\"kind\":\"bulk\",\"bytes\":1048576,\"method\":\"copy\",\"median\":5000000,\"min\":4900000,\"reps\":3}
BENCH {\"kind\":\"bulk\",\"bytes\":1048576,\"method\":\"lease\",\"median\":100000,\"min\":99000,\"reps\":3}
BENCH {\"kind\":\"unsupported\",\"case\":\"notification\",\"why\":\"no notifications yet\"}
BENCH {\"kind\":\"end\"}";

    /// A run's facts with nothing but the accelerator.
    fn bare_info(accel: Accel) -> RunInfo {
        RunInfo { mode: "icount", accel, accel_line: String::new(), cpu_model: String::new() }
    }

    pub(crate) fn sample_report(accel: Accel) -> RunReport {
        let info = RunInfo {
            mode: "icount",
            accel,
            accel_line: "accel: tcg (single-threaded, icount); test".into(),
            cpu_model: "QEMU TCG `max`".into(),
        };
        build(&sample_console(), info).unwrap()
    }

    #[test]
    fn results_subtract_the_empty_window_and_pair_samples() {
        let report = sample_report(Accel::TcgIcount);
        let headline = report.latency_of("same_core_cross_as", 0).unwrap();
        assert_eq!((headline.call.median, headline.call.max), (645, 696));
        assert_eq!(headline.sums, [1277, 1277, 1277, 1328]);
        assert_eq!(headline.client_round_trip.median, 1286);
        assert_eq!(report.scaling[1].round_trips_per_million_ticks, 1600.0);
        assert_eq!(report.scaling[1].efficiency, 0.8);
        let [on, off] = [&report.contended[0], &report.contended[1]];
        assert!(on.fastpath && !off.fastpath);
        assert_eq!((on.round_trips_per_million_ticks, on.cap_lock_writes), (2000.0, 0));
        assert_eq!((off.slowpath_ops, off.cap_lock_writes), (8004, 8010));
        let [alone, beside] = [&report.churn[0], &report.churn[1]];
        assert!(!alone.churn && beside.churn);
        assert_eq!((beside.round_trips_per_million_ticks, beside.cap_changes), (800.0, 300));
        assert_eq!(report.skipped[0].status, "unsupported");
        let bulk = &report.bulk[0];
        assert_eq!((bulk.bytes, bulk.copy_median, bulk.lease_min), (1 << 20, 5_000_000, 99_000));
        assert_eq!(bulk.lease_speedup, 50.0);
    }

    #[test]
    fn a_case_without_samples_is_an_error() {
        let mut console = sample_console();
        console.samples.remove(&(2, "rr".to_string()));
        let error = build(&console, bare_info(Accel::TcgIcount)).unwrap_err().to_string();
        assert!(error.contains("printed no `rr` samples"), "{error}");
    }

    /// Regression: a lost sample line paired call i with ReplyRecv i + 1 silently.
    #[test]
    fn sample_lists_of_different_lengths_are_an_error() {
        let mut console = sample_console();
        if let Some(values) = console.samples.get_mut(&(2, "rr".to_string())) {
            values.pop();
        }
        let error = build(&console, bare_info(Accel::TcgIcount)).unwrap_err().to_string();
        assert!(error.contains("call") && error.contains("ReplyRecv"), "{error}");
    }

    /// Verdicts come from icount figures only: under plain TCG the Foundry target is
    /// neither reached nor missed (regression: emulator noise made it "reached").
    #[test]
    fn emulator_time_gives_no_foundry_verdict() {
        let foundry = "\
BENCHS id=3 m=call i=0 v=700*4
BENCHS id=3 m=rr i=0 v=700*4
BENCHS id=3 m=rt i=0 v=1300*4
BENCH {\"kind\":\"latency\",\"id\":3,\"case\":\"foundry_echo_same_core\",\"words\":0,\"client_cpu\":0,\"server_cpu\":0,\"overhead\":4,\"samples\":4}
BENCH {\"kind\":\"end\"}";
        let text = SAMPLE_CONSOLE.replace("BENCH {\"kind\":\"end\"}", foundry);
        let console = parse_console(&text.lines().map(String::from).collect::<Vec<_>>()).unwrap();
        let render = |accel| build(&console, bare_info(accel)).unwrap().render();
        let (icount, tcg) = (render(Accel::TcgIcount), render(Accel::Tcg));
        let line =
            |text: &str| text.lines().find(|l| l.contains("0w client round trip: foundry")).map(String::from);
        assert!(line(&icount).is_some_and(|l| l.ends_with("reached)")), "{icount}");
        assert!(line(&tcg).is_some_and(|l| l.ends_with("judged on the icount run)")), "{tcg}");
    }

    #[test]
    fn icount_table() {
        insta::assert_snapshot!(sample_report(Accel::TcgIcount).render());
    }

    #[test]
    fn the_hardware_target_is_judged_only_in_cycles() {
        let kvm = sample_report(Accel::Kvm { software: false }).render();
        assert!(
            kvm.contains("round trip under 600 TSC cycles on hardware with KVM: NOT reached (ours 1277)"),
            "{kvm}"
        );
        let tcg = sample_report(Accel::Tcg).render();
        assert!(tcg.contains("needs a run under real KVM"), "{tcg}");
        assert!(!tcg.contains("under 600 TSC cycles on hardware with KVM:"), "{tcg}");
    }

    #[test]
    fn emulator_time_is_never_called_cycles() {
        let text = sample_report(Accel::Tcg).render();
        assert!(text.contains("emulator time (TSC ticks, not CPU cycles)"), "{text}");
        assert!(text.contains("not comparable"), "{text}");
        assert!(!text.contains("target (IPC issue)"), "{text}");
    }
}
