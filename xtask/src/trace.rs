//! `cargo xtask trace`: boot the kernel with a traced workload (the IPC benchmark by
//! default, or the `trace` ping-pong), capture the trace dump the kernel writes to
//! COM2, and export it (Perfetto JSON, FXT, summary, SVG).
//!
//! The console stays on COM1 (`-serial stdio`, the first `-serial` option); a second
//! `-serial file:...` makes COM2 a file that receives the binary dump and nothing
//! else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ramen_perf_export::decode::SourceId;
use ramen_perf_export::{ExportOptions, Trace};
use ramen_perf_record::{EventKind, IpcInfo};

use crate::image;
use crate::process::{self, Echo};
use crate::qemu::{self, AccelRequest, BootConfig, Machine, Verdict};
use crate::user;

/// Name of the raw COM2 capture in the output folder.
pub const RAW_FILE: &str = "trace.raw";

/// What `cargo xtask trace` runs while the kernel records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// The IPC benchmark's latency cases (the root task's `bench bench_trace`):
    /// by default a same-CPU fastpath pair and a cross-CPU pair, 20 samples each.
    Bench,
    /// A client/server ping-pong across CPUs and one on a CPU, both with user trace
    /// buffers (the root task's `trace`).
    Pingpong,
}

/// The benchmark's words for a traced run, unless the user gives the same knob.
pub const BENCH_TRACE_DEFAULTS: [&str; 3] =
    ["bench_samples=10", "bench_warmup=1", "bench_cases=same_core_cross_as:0,cross_core_same_socket"];

/// Flags for `cargo xtask trace`.
#[derive(clap::Args)]
pub struct TraceArgs {
    /// Number of CPUs (the cross-CPU server runs on CPU 1 for the benchmark, on the
    /// last CPU for the ping-pong).
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// The workload to trace.
    #[arg(long, value_enum, default_value_t = Workload::Bench)]
    workload: Workload,
    /// Folder for trace.raw, trace.json, trace.fxt, summary.txt and timeline.svg.
    #[arg(long, value_name = "DIR", default_value = "target/trace")]
    out: PathBuf,
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    accel: AccelRequest,
    /// Deterministic single-threaded TCG: one guest TSC tick per instruction.
    #[arg(long)]
    icount: bool,
    /// Kill QEMU and fail after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    timeout: u64,
    /// Further kernel command-line words (e.g. `bench_samples=50`, or `trace_rounds=50`
    /// for the ping-pong); the workload's own words are always passed.
    #[arg(last = true, value_name = "KERNEL_ARGS")]
    kernel_args: Vec<String>,
}

/// The kernel command line for a trace run: the workload's words first, then the
/// user's; for the benchmark, [`BENCH_TRACE_DEFAULTS`] for the knobs the user did not
/// give.
pub fn kernel_command_line(workload: Workload, extra: &[String]) -> String {
    let base: &[&str] = match workload {
        Workload::Bench => &["bench", "bench_trace"],
        Workload::Pingpong => &["trace"],
    };
    let knob = |word: &str| word.split_once('=').map_or(word, |(name, _)| name).to_string();
    let given: Vec<String> = extra.iter().map(|w| knob(w)).collect();
    let defaults = match workload {
        Workload::Bench => &BENCH_TRACE_DEFAULTS[..],
        Workload::Pingpong => &[],
    };
    base.iter()
        .copied()
        .chain(extra.iter().map(String::as_str).filter(|w| !base.contains(w)))
        .chain(defaults.iter().copied().filter(|d| !given.contains(&knob(d))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The QEMU arguments that make COM2 write to `raw` (added after `-serial stdio`,
/// which stays COM1).
pub fn com2_args(raw: &Path) -> Vec<String> {
    vec!["-serial".into(), format!("file:{}", raw.display())]
}

/// Boots `cpus` CPUs with `kernel_args` (which must include `trace`) and the COM2
/// capture in `raw`; returns the verdict and the console.
pub fn boot(
    cpus: u32,
    accel: qemu::Accel,
    kernel_args: &str,
    raw: &Path,
    timeout: Duration,
    echo: Echo,
) -> anyhow::Result<(Verdict, process::Outcome)> {
    let elf = image::build_kernel()?;
    let initrd = user::build_boot_archive()?;
    boot_with(&elf, &initrd, cpus, accel, kernel_args, raw, timeout, echo)
}

/// [`boot`] with a kernel and archive already built.
#[allow(clippy::too_many_arguments)]
pub fn boot_with(
    elf: &Path,
    initrd: &Path,
    cpus: u32,
    accel: qemu::Accel,
    kernel_args: &str,
    raw: &Path,
    timeout: Duration,
    echo: Echo,
) -> anyhow::Result<(Verdict, process::Outcome)> {
    if let Some(dir) = raw.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A stale capture must never pass for this run's.
    let _ = std::fs::remove_file(raw);
    let config = BootConfig {
        machine: Machine::new(cpus, 1, 512)?,
        accel,
        kernel: elf.to_owned(),
        initrd: Some(initrd.to_owned()),
        kernel_args: kernel_args.into(),
        gdb: false,
        extra_args: com2_args(raw),
    };
    let command = qemu::command(&config);
    if echo == Echo::Stream {
        println!("qemu: {}", process::display_command(&command));
    }
    let outcome = process::run_with_timeout(command, timeout, echo)?;
    Ok((qemu::verdict(&outcome), outcome))
}

/// Reads the COM2 capture and decodes the dump in it.
pub fn read_capture(raw: &Path) -> anyhow::Result<(Vec<u8>, Trace)> {
    let capture =
        std::fs::read(raw).with_context(|| format!("cannot read the COM2 capture {}", raw.display()))?;
    let dump = ramen_perf_export::extract_dump(&capture)
        .with_context(|| format!("no trace dump in {} ({} bytes)", raw.display(), capture.len()))?
        .to_vec();
    let trace = ramen_perf_export::decode(&dump).context("the trace dump does not decode")?;
    Ok((dump, trace))
}

/// CPUs whose ring holds at least one IPC send, receive and reply, and whether every
/// receive carries a flow id some send or reply started: what a working trace shows.
pub fn ipc_flow_cpus(trace: &Trace) -> Vec<u16> {
    let mut cpus = Vec::new();
    for (source, records) in &trace.sources {
        let SourceId::Core(cpu) = source else { continue };
        let has = |kind: EventKind| records.records.iter().any(|r| r.event_kind() == Some(kind));
        if has(EventKind::IpcSend) && has(EventKind::IpcRecv)
            || has(EventKind::IpcReply) && has(EventKind::IpcRecv)
        {
            cpus.push(*cpu);
        }
    }
    cpus
}

/// Threads whose user trace buffer holds at least one span.
pub fn threads_with_user_spans(trace: &Trace) -> Vec<u32> {
    trace
        .sources
        .iter()
        .filter_map(|(source, data)| match source {
            SourceId::Thread(thread)
                if data.records.iter().any(|r| r.event_kind() == Some(EventKind::UserSpanBegin)) =>
            {
                Some(*thread)
            }
            _ => None,
        })
        .collect()
}

/// Flow ids received that no send or reply in the trace started (lost ends).
pub fn unmatched_receives(trace: &Trace) -> usize {
    let records = || trace.sources.values().flat_map(|s| s.records.iter());
    let started: std::collections::BTreeSet<u64> = records()
        .filter(|r| matches!(r.event_kind(), Some(EventKind::IpcSend | EventKind::IpcReply)))
        .map(|r| r.args[0])
        .collect();
    records().filter(|r| r.event_kind() == Some(EventKind::IpcRecv) && !started.contains(&r.args[0])).count()
}

/// Cross-CPU IPC deliveries: receives whose sender's record is on another CPU.
pub fn cross_cpu_flows(trace: &Trace) -> usize {
    let mut start_cpu = std::collections::BTreeMap::new();
    for record in trace.sources.values().flat_map(|s| s.records.iter()) {
        if matches!(record.event_kind(), Some(EventKind::IpcSend | EventKind::IpcReply)) {
            start_cpu.insert(record.args[0], record.cpu);
        }
    }
    trace
        .sources
        .values()
        .flat_map(|s| s.records.iter())
        .filter(|r| r.event_kind() == Some(EventKind::IpcRecv))
        .filter(|r| start_cpu.get(&r.args[0]).is_some_and(|cpu| *cpu != r.cpu))
        .filter(|r| IpcInfo::unpack(r.args[1]).peer != 0)
        .count()
}

/// IPC deliveries recorded on the fastpath (`IpcSend` / `IpcReply` marked fast): the
/// traced build of the system-call handler is in use while tracing runs.
pub fn fastpath_flows(trace: &Trace) -> usize {
    trace
        .sources
        .values()
        .flat_map(|s| s.records.iter())
        .filter(|r| matches!(r.event_kind(), Some(EventKind::IpcSend | EventKind::IpcReply)))
        .filter(|r| IpcInfo::unpack(r.args[1]).path == ramen_perf_record::IpcPath::Fast)
        .count()
}

/// Context switches a CPU recorded, and what is wrong with them: a switch record names
/// the outgoing thread (the record's thread) and the incoming one (its first argument),
/// so the two differ, and where the CPU's ring lost nothing, each switch's outgoing
/// thread is the one the CPU's previous switch brought in.
pub fn switch_problems(trace: &Trace) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut switches = 0;
    for (id, source) in &trace.sources {
        let SourceId::Core(cpu) = id else { continue };
        let mut records: Vec<_> =
            source.records.iter().filter(|r| r.event_kind() == Some(EventKind::ContextSwitch)).collect();
        records.sort_by_key(|r| r.tsc);
        let mut previous: Option<u32> = None;
        for record in records {
            switches += 1;
            let incoming = record.args[0] as u32;
            if record.thread == incoming {
                problems.push(format!(
                    "cpu {cpu}: a switch at tsc {} names thread {incoming} as both outgoing and incoming",
                    record.tsc
                ));
            } else if let Some(expected) = previous
                && source.lost == 0
                && record.thread != expected
            {
                problems.push(format!(
                    "cpu {cpu}: a switch at tsc {} leaves thread {}, but the previous one brought in {expected}",
                    record.tsc, record.thread
                ));
            }
            previous = Some(incoming);
        }
    }
    problems.truncate(5);
    (switches, problems)
}

/// `cargo xtask trace`: returns whether the run and the export worked.
pub fn run(args: &TraceArgs) -> anyhow::Result<bool> {
    if args.smp < 2 {
        bail!("--smp must be at least 2: the workload calls across two CPUs");
    }
    qemu::ensure_installed()?;
    let accel = qemu::choose_accel_for_host(args.accel, args.icount)?;
    println!("{}", accel.describe());
    let out = if args.out.is_absolute() { args.out.clone() } else { image::repo_root().join(&args.out) };
    let raw = out.join(RAW_FILE);
    let kernel_args = kernel_command_line(args.workload, &args.kernel_args);
    let (verdict, _) =
        boot(args.smp, accel.accel, &kernel_args, &raw, Duration::from_secs(args.timeout), Echo::Stream)?;
    println!("run: {}", verdict.describe());
    let (dump, trace) = read_capture(&raw)?;
    let exported = ramen_perf_export::export_dir(&dump, &out, &ExportOptions::default())
        .with_context(|| format!("cannot export into {}", out.display()))?;
    println!("{}", exported.summary_text);
    println!(
        "trace: {} cross-CPU IPC deliveries, {} receives without their start",
        cross_cpu_flows(&trace),
        unmatched_receives(&trace)
    );
    println!("trace: raw capture  {}", raw.display());
    println!("trace: Perfetto     {}  (open in https://ui.perfetto.dev)", exported.chrome_json.display());
    println!("trace: FXT          {}", exported.fxt.display());
    println!("trace: summary      {}", exported.summary.display());
    println!("trace: timeline     {}", exported.svg.display());
    Ok(verdict == Verdict::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramen_perf_export::synthetic;

    #[test]
    fn command_line_starts_with_the_workload_and_keeps_extra_words() {
        let ping = Workload::Pingpong;
        assert_eq!(kernel_command_line(ping, &[]), "trace");
        assert_eq!(kernel_command_line(ping, &["trace_rounds=5".into()]), "trace trace_rounds=5");
        assert_eq!(kernel_command_line(ping, &["trace".into(), "x".into()]), "trace x");
        let bench = Workload::Bench;
        assert_eq!(
            kernel_command_line(bench, &[]),
            format!("bench bench_trace {}", BENCH_TRACE_DEFAULTS.join(" "))
        );
        // A knob the user gives replaces the default; the others stay.
        let line = kernel_command_line(bench, &["bench_samples=50".into()]);
        assert_eq!(
            line,
            "bench bench_trace bench_samples=50 bench_warmup=1 \
             bench_cases=same_core_cross_as:0,cross_core_same_socket"
        );
    }

    #[test]
    fn com2_comes_after_the_console_serial() {
        let config = BootConfig {
            machine: Machine::new(2, 1, 512).unwrap(),
            accel: qemu::Accel::Tcg,
            kernel: "k".into(),
            initrd: None,
            kernel_args: "trace".into(),
            gdb: false,
            extra_args: com2_args(Path::new("/tmp/out/trace.raw")),
        };
        let args = qemu::args(&config);
        let serials: Vec<&str> =
            args.windows(2).filter(|w| w[0] == "-serial").map(|w| w[1].as_str()).collect();
        assert_eq!(serials, ["stdio", "file:/tmp/out/trace.raw"], "COM1 is the console, COM2 the capture");
    }

    #[test]
    fn switch_records_name_the_outgoing_thread() {
        let mut trace = synthetic::ipc_pingpong(2, 3);
        let (switches, problems) = switch_problems(&trace);
        assert!(switches > 0 && problems.is_empty(), "{switches} switches: {problems:?}");
        // The kernel's old bug: the record's thread set to the incoming one first.
        for source in trace.sources.values_mut() {
            for r in source.records.iter_mut().filter(|r| r.event_kind() == Some(EventKind::ContextSwitch)) {
                r.thread = r.args[0] as u32;
            }
        }
        assert!(!switch_problems(&trace).1.is_empty());
    }

    #[test]
    fn flow_checks_on_the_synthetic_ping_pong() {
        let trace = synthetic::ipc_pingpong(2, 3);
        assert_eq!(ipc_flow_cpus(&trace), [0, 1]);
        assert_eq!(unmatched_receives(&trace), 0);
        assert!(cross_cpu_flows(&trace) > 0);
    }
}
