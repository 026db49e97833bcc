//! `cargo xtask bench`: boots the kernel with `bench` on its command line, reads the
//! IPC benchmark's console lines, and reports the numbers beside seL4's
//! (`docs/benchmarking.md`).
//!
//! By default two boots: a deterministic one (single-threaded TCG, `-icount shift=0`:
//! one TSC tick per guest instruction, the numbers the baseline and the seL4
//! comparison use) and a parallel one (KVM where it is hardware virtualisation,
//! multi-threaded TCG otherwise) for the cross-core and scaling figures in time.

mod baseline;
mod parse;
mod report;
mod stats;
mod svg;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::process::{self, Echo};
use crate::qemu::{self, Accel, AccelRequest, BootConfig, Machine};
use crate::{image, user};
use baseline::Baseline;
use report::{RunInfo, RunReport, Unit};

/// The committed baseline, relative to the repository root.
const BASELINE_PATH: &str = "benches/baseline.json";

/// `cargo xtask bench` flags.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Number of CPUs (the cross-core and scaling cases need at least 2).
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Number of sockets (must divide --smp); with 2 or more the cross-socket case runs.
    #[arg(long, default_value_t = 1)]
    sockets: u32,
    /// Only the deterministic run: single-threaded TCG with -icount shift=0.
    #[arg(long)]
    icount: bool,
    /// Only the parallel run, with this accelerator (auto: KVM only where it is real).
    #[arg(long, value_enum)]
    accel: Option<AccelRequest>,
    /// Write every number as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write SVG plots (a histogram per case, the scaling curve) into this folder.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Compare the icount run with benches/baseline.json; fail on a >2% regression of
    /// the same-core cross-address-space 0-word round trip (only the icount run unless
    /// --accel is given too).
    #[arg(long)]
    check: bool,
    /// Overwrite benches/baseline.json with this icount run's medians.
    #[arg(long)]
    write_baseline: bool,
    /// Latency samples per case (after the warm-up).
    #[arg(long, value_name = "N")]
    samples: Option<u64>,
    /// Calls discarded before the samples of each latency case.
    #[arg(long, value_name = "N")]
    warmup: Option<u64>,
    /// Round trips per pair in each scaling run.
    #[arg(long, value_name = "N")]
    rounds: Option<u64>,
    /// Idle CPUs poll their inbox N times before halting, and senders skip the
    /// wake-up IPI to a polling CPU (kernel `idle_poll=N`; 0: IPI only; default:
    /// the kernel's, 1000).
    #[arg(long, value_name = "N")]
    idle_poll: Option<u32>,
    /// Boot nothing: report on the console of a benchmark boot saved elsewhere (for
    /// example QEMU run on a bigger machine with `-append 'bench ...'`), as a
    /// multi-threaded TCG run. Plots and --json work as usual.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["check", "write_baseline"])]
    console: Option<PathBuf>,
    /// With --console: what the run was on (for the report's CPU line).
    #[arg(long, value_name = "TEXT", requires = "console", default_value = "another host")]
    console_host: String,
    /// Kill QEMU and fail after this many seconds (per boot).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
}

/// Which boots to make.
fn modes(args: &BenchArgs) -> (bool, bool) {
    let icount = args.icount || args.accel.is_none() || args.check || args.write_baseline;
    let parallel = !args.icount && (args.accel.is_some() || !(args.check || args.write_baseline));
    (icount, parallel)
}

/// The whole `--json` document.
#[derive(Serialize)]
struct JsonReport<'a> {
    git_rev: &'a str,
    qemu: &'a str,
    host_cpu: &'a str,
    runs: &'a [RunReport],
    check: Option<&'a baseline::CheckOutcome>,
}

/// `cargo xtask bench --console FILE`: the report of a saved console.
fn from_console(args: &BenchArgs, path: &Path) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<String> = text.lines().map(|line| line.trim_end_matches('\r').to_string()).collect();
    let console = parse::parse_console(&lines)?;
    let info = RunInfo {
        mode: "parallel",
        accel: Accel::Tcg,
        accel_line: format!("accel: tcg (multi-threaded), console read from {}", path.display()),
        cpu_model: cpu_model(Accel::Tcg, &args.console_host),
    };
    let run = report::build(&console, info)?;
    print!("{}", run.render());
    let runs = [run];
    if let Some(json) = &args.json {
        let document = JsonReport {
            git_rev: &git_rev(),
            qemu: "unknown (saved console)",
            host_cpu: &args.console_host,
            runs: &runs,
            check: None,
        };
        std::fs::write(json, serde_json::to_string_pretty(&document)? + "\n")
            .with_context(|| format!("cannot write {}", json.display()))?;
    }
    if let Some(dir) = &args.plots {
        write_plots(dir, &runs)?;
    }
    Ok(console.finished() && runs[0].skipped.iter().all(|s| s.status != "failed"))
}

/// `cargo xtask bench`; returns whether every run finished (and the check passed).
pub fn run(args: &BenchArgs) -> anyhow::Result<bool> {
    if let Some(path) = &args.console {
        return from_console(args, path);
    }
    let mut machine = Machine::new(args.smp, args.sockets, 512)?;
    machine.acpi = true;
    qemu::ensure_installed()?;
    let elf = image::build_kernel()?;
    let initrd = user::build_boot_archive()?;
    let qemu_version = command_line("qemu-system-x86_64", &["--version"]);
    let git_rev = git_rev();
    let host_cpu = host_cpu_model();

    let (icount, parallel) = modes(args);
    let mut runs = Vec::new();
    let mut all_finished = true;
    let requests = [
        (icount, "icount", AccelRequest::Tcg, true),
        (parallel, "parallel", args.accel.unwrap_or(AccelRequest::Auto), false),
    ];
    for (wanted, mode, request, icount) in requests {
        if !wanted {
            continue;
        }
        let choice = qemu::choose_accel_for_host(request, icount)?;
        println!("bench: {mode} run; {}", choice.describe());
        let config = BootConfig {
            machine: machine.clone(),
            accel: choice.accel,
            kernel: elf.clone(),
            initrd: Some(initrd.clone()),
            kernel_args: kernel_args(args),
            gdb: false,
            extra_args: Vec::new(),
        };
        let command = qemu::command(&config);
        println!("qemu: {}", process::display_command(&command));
        let outcome = process::run_with_timeout(
            command,
            Duration::from_secs(args.timeout),
            Echo::StreamExcept(parse::SAMPLES_MARKER.trim_end()),
        )?;
        let verdict = qemu::verdict(&outcome);
        let console = parse::parse_console(&outcome.console)?;
        if verdict != qemu::Verdict::Success || !console.finished() {
            println!("bench: {mode} run incomplete: {}", verdict.describe());
            process::print_tail(&outcome.console, qemu::TAIL_LINES);
            all_finished = false;
        }
        let info = RunInfo {
            mode,
            accel: choice.accel,
            accel_line: choice.describe(),
            cpu_model: cpu_model(choice.accel, &host_cpu),
        };
        let mut run = report::build(&console, info)?;
        if icount {
            run.headline_trace_compiled_out = untraced_headline(&config, args)?;
        }
        all_finished &= run.skipped.iter().all(|s| s.status != "failed");
        println!();
        print!("{}", run.render());
        println!();
        runs.push(run);
    }

    let icount_run = runs.iter().find(|run| run.unit == Unit::Instructions);
    let baseline_path = image::repo_root().join(BASELINE_PATH);
    let mut check = None;
    if args.check {
        let run = icount_run.context("--check needs the icount run")?;
        let text = std::fs::read_to_string(&baseline_path)
            .with_context(|| format!("cannot read {}", baseline_path.display()))?;
        let baseline: Baseline =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", baseline_path.display()))?;
        let outcome = baseline::check(run, &baseline, &qemu_version)?;
        print!("{}", outcome.text);
        check = Some(outcome);
    }
    if args.write_baseline {
        let run = icount_run.context("--write-baseline needs the icount run")?;
        let baseline = Baseline::from_run(run, &qemu_version, &git_rev);
        std::fs::write(&baseline_path, serde_json::to_string_pretty(&baseline)? + "\n")
            .with_context(|| format!("cannot write {}", baseline_path.display()))?;
        println!("bench: wrote {}", baseline_path.display());
    }
    if let Some(path) = &args.json {
        let document = JsonReport {
            git_rev: &git_rev,
            qemu: &qemu_version,
            host_cpu: &host_cpu,
            runs: &runs,
            check: check.as_ref(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("bench: wrote {}", path.display());
    }
    if let Some(dir) = &args.plots {
        write_plots(dir, &runs)?;
    }
    Ok(all_finished && check.is_none_or(|c| c.passed))
}

/// Boots the kernel built with its trace points compiled out, for the headline case
/// only, with `config`'s machine and accelerator; its Call + ReplyRecv median.
fn untraced_headline(config: &BootConfig, args: &BenchArgs) -> anyhow::Result<Option<u64>> {
    let elf = image::build_untraced_kernel()?;
    let samples = args.samples.unwrap_or(300);
    let config = BootConfig {
        kernel: elf,
        kernel_args: format!("bench bench_headline bench_samples={samples}"),
        ..config.clone()
    };
    let command = qemu::command(&config);
    println!("bench: the headline case again on a kernel with its trace points compiled out");
    let outcome = process::run_with_timeout(command, Duration::from_secs(args.timeout), Echo::Capture)?;
    let console = parse::parse_console(&outcome.console)?;
    if qemu::verdict(&outcome) != qemu::Verdict::Success || !console.finished() {
        println!("bench: the compiled-out boot did not finish; its figure is left out");
        return Ok(None);
    }
    let info =
        RunInfo { mode: "icount", accel: config.accel, accel_line: String::new(), cpu_model: String::new() };
    let run = report::build(&console, info)?;
    Ok(run
        .latency_of(report::HEADLINE_CASE.0, report::HEADLINE_CASE.1)
        .map(|r| r.call_plus_reply_recv.median))
}

/// The kernel command line of a benchmark boot.
fn kernel_args(args: &BenchArgs) -> String {
    let mut words = vec!["bench".to_string()];
    if let Some(samples) = args.samples {
        words.push(format!("bench_samples={samples}"));
    }
    if let Some(warmup) = args.warmup {
        words.push(format!("bench_warmup={warmup}"));
    }
    if let Some(polls) = args.idle_poll {
        words.push(format!("idle_poll={polls}"));
    }
    if let Some(rounds) = args.rounds {
        words.push(format!("bench_rounds={rounds}"));
    }
    words.join(" ")
}

fn write_plots(dir: &Path, runs: &[RunReport]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for run in runs {
        let unit = run.unit.short();
        for result in &run.latency {
            let path = dir.join(format!("{}-{}-{}w.svg", run.mode, result.case, result.words));
            std::fs::write(&path, svg::histogram(result, unit))?;
        }
        if !run.scaling.is_empty() {
            std::fs::write(
                dir.join(format!("{}-scaling.svg", run.mode)),
                svg::scaling_curve(&run.scaling, unit),
            )?;
        }
    }
    println!("bench: plots in {}", dir.display());
    Ok(())
}

/// The guest CPU: QEMU's model for TCG, the host's for KVM (`-cpu host`).
fn cpu_model(accel: Accel, host_cpu: &str) -> String {
    match accel {
        Accel::Tcg | Accel::TcgIcount => format!("QEMU TCG `-cpu max` (emulated; host {host_cpu})"),
        Accel::Kvm { .. } => format!("{host_cpu} (`-cpu host`)"),
    }
}

/// The host's CPU model from /proc/cpuinfo.
fn host_cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The first line `program args` prints, or `unknown`.
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The short commit hash, with `-dirty` when the tree has changes.
fn git_rev() -> String {
    let root = image::repo_root();
    let root = root.to_string_lossy();
    let rev = command_line("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["-C", &root, "status", "--porcelain"])
        .output()
        .is_ok_and(|out| !out.stdout.is_empty());
    if dirty { format!("{rev}-dirty") } else { rev }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(words: &[&str]) -> BenchArgs {
        Cli::parse_from(std::iter::once("bench").chain(words.iter().copied())).bench
    }

    #[test]
    fn default_runs_both_and_check_runs_only_icount() {
        assert_eq!(modes(&parse(&[])), (true, true));
        assert_eq!(modes(&parse(&["--icount"])), (true, false));
        assert_eq!(modes(&parse(&["--accel", "tcg"])), (false, true));
        assert_eq!(modes(&parse(&["--check"])), (true, false));
        assert_eq!(modes(&parse(&["--check", "--accel", "kvm"])), (true, true));
    }

    #[test]
    fn kernel_command_line_carries_the_knobs() {
        assert_eq!(kernel_args(&parse(&[])), "bench");
        assert_eq!(
            kernel_args(&parse(&["--samples", "50", "--warmup", "5", "--rounds", "9"])),
            "bench bench_samples=50 bench_warmup=5 bench_rounds=9"
        );
    }
}
