//! `cargo xtask test`: host tests, the dependency rules, the kernel image and its SIMD scan,
//! then a table of QEMU boots.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::console;
use crate::deps;
use crate::image;
use crate::process::{self, Echo, Exit, Outcome};
use crate::qemu::{self, AccelRequest, BootConfig, Machine, Verdict};
use crate::simd;
use crate::soak;
use crate::user;

/// Flags for `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Print every QEMU case's console, not only those of failing cases.
    #[arg(long)]
    verbose: bool,
    /// Skip the host `cargo test` step.
    #[arg(long)]
    skip_host: bool,
    /// Boot only the QEMU cases whose name contains SUBSTR (host tests still run).
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    /// Kill a QEMU case and fail it after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// Accelerator for the QEMU cases.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    accel: AccelRequest,
    /// Scan and boot this kernel ELF instead of building one.
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// Boot with this archive (-initrd) instead of building the user programs.
    #[arg(long, value_name = "RFS")]
    initrd: Option<PathBuf>,
}

/// Guest memory for cases that do not care.
const DEFAULT_MEM_MIB: u64 = 512;

/// The registers every fault report must show.
const FAULT_REGISTERS: [&str; 4] = ["RIP=", "CR2=", "RAX=", "RSP="];

/// The exit the kernel must report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KernelExit {
    Success,
    Failure,
}

/// What a QEMU case must show.
#[derive(Debug)]
struct Expect {
    exit: KernelExit,
    /// The kernel ran its test cases: `N passed, 0 failed` with N > 0.
    kernel_tests_pass: bool,
    /// The exact bring-up summary, `cpus online: N sockets: S nodes: K`.
    summary: Option<&'static str>,
    /// A fault report for this exception mnemonic (e.g. `#PF`): `EXCEPTION`, the
    /// mnemonic and `FAULT_REGISTERS` must all appear.
    fault_report: Option<&'static str>,
    /// Substrings that must each appear somewhere on the console.
    console_contains: &'static [&'static str],
}

/// One boot of the kernel under QEMU. Add a row to `QEMU_CASES` to add a case.
#[derive(Debug)]
pub struct QemuCase {
    name: &'static str,
    cpus: u32,
    sockets: u32,
    mem_mib: u64,
    /// Whether the guest gets ACPI tables.
    acpi: bool,
    /// The kernel command line.
    kernel_args: &'static str,
    /// Extra ACPI tables QEMU adds to the firmware's.
    acpi_tables: &'static [ExtraAcpiTable],
    /// Capture COM2 and require a trace dump there with IPC flows on every CPU.
    trace_dump: bool,
    /// The trace must also hold user spans from two named threads.
    trace_user_spans: bool,
    /// Boot the kernel built with the IPC fastpath compiled out (the differential).
    slowpath_kernel: bool,
    expect: Expect,
}

/// An ACPI table a case adds with `-acpitable`: QEMU writes the header (signature,
/// length, checksum) and appends `body`.
#[derive(Debug)]
pub struct ExtraAcpiTable {
    signature: &'static str,
    body: &'static [u8],
}

/// A SRAT whose first entry claims 250 bytes in a table that has 16: the kernel must
/// reject it with a message and boot as one NUMA node, never read past the table.
const MALFORMED_SRAT: ExtraAcpiTable = ExtraAcpiTable {
    signature: "SRAT",
    body: &[
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // table revision, reserved
        0, 250, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // CPU affinity, bad length
    ],
};

impl QemuCase {
    /// Boots with `test`; the in-kernel tests pass and bring-up prints `summary`.
    const fn kernel_tests(name: &'static str, cpus: u32, sockets: u32, summary: &'static str) -> Self {
        Self {
            name,
            cpus,
            sockets,
            mem_mib: DEFAULT_MEM_MIB,
            acpi: true,
            kernel_args: "test",
            acpi_tables: &[],
            trace_dump: false,
            trace_user_spans: false,
            slowpath_kernel: false,
            expect: Expect {
                exit: KernelExit::Success,
                kernel_tests_pass: true,
                summary: Some(summary),
                fault_report: None,
                console_contains: &[],
            },
        }
    }

    /// Boots with a deliberate fault; the kernel reports it and exits with failure.
    const fn fault(
        name: &'static str,
        kernel_args: &'static str,
        fault_report: Option<&'static str>,
        console_contains: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            cpus: 1,
            sockets: 1,
            mem_mib: DEFAULT_MEM_MIB,
            acpi: true,
            kernel_args,
            acpi_tables: &[],
            trace_dump: false,
            trace_user_spans: false,
            slowpath_kernel: false,
            expect: Expect {
                exit: KernelExit::Failure,
                kernel_tests_pass: false,
                summary: None,
                fault_report,
                console_contains,
            },
        }
    }

    /// Boots the `trace` workload (`cargo xtask trace`'s): the ping-pong is correct
    /// and COM2 carries a dump that decodes, with IPC flows on every CPU and named
    /// client and server threads that recorded user spans.
    const fn trace(name: &'static str, cpus: u32) -> Self {
        Self {
            name,
            cpus,
            sockets: 1,
            mem_mib: DEFAULT_MEM_MIB,
            acpi: true,
            kernel_args: "trace",
            acpi_tables: &[],
            trace_dump: true,
            trace_user_spans: true,
            slowpath_kernel: false,
            expect: Expect {
                exit: KernelExit::Success,
                kernel_tests_pass: false,
                summary: None,
                fault_report: None,
                console_contains: &["trace: ping-pong correct", "trace: dumped"],
            },
        }
    }

    /// The IPC benchmark traced, as `cargo xtask trace` runs it by default: the same
    /// flow checks, no user buffers.
    const fn bench_trace(name: &'static str, cpus: u32) -> Self {
        let base = Self::trace(name, cpus);
        Self {
            kernel_args: BENCH_TRACE_ARGS,
            trace_user_spans: false,
            expect: Expect { console_contains: &["bench: trace dumped"], ..base.expect },
            ..base
        }
    }

    /// Where a `trace_dump` case's COM2 capture goes.
    fn com2_capture(&self) -> PathBuf {
        image::repo_root().join("target").join("xtask").join(format!("{}-com2.raw", self.name))
    }

    const fn without_acpi(mut self) -> Self {
        self.acpi = false;
        self
    }

    const fn with_console(mut self, console_contains: &'static [&'static str]) -> Self {
        self.expect.console_contains = console_contains;
        self
    }

    const fn with_slowpath_kernel(mut self) -> Self {
        self.slowpath_kernel = true;
        self
    }

    const fn with_args(mut self, kernel_args: &'static str) -> Self {
        self.kernel_args = kernel_args;
        self
    }

    const fn with_acpi_tables(mut self, tables: &'static [ExtraAcpiTable]) -> Self {
        self.acpi_tables = tables;
        self
    }

    /// Writes this case's extra ACPI tables under `target/` and returns the QEMU
    /// arguments that add them.
    fn acpi_table_args(&self) -> anyhow::Result<Vec<String>> {
        let dir = image::repo_root().join("target").join("xtask");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut args = Vec::new();
        for table in self.acpi_tables {
            let path = dir.join(format!("{}-{}.bin", self.name, table.signature));
            std::fs::write(&path, table.body).with_context(|| format!("cannot write {}", path.display()))?;
            args.push("-acpitable".into());
            args.push(format!("sig={},rev=3,data={}", table.signature, path.display()));
        }
        Ok(args)
    }
}

/// The QEMU cases `cargo xtask test` boots, in order.
pub const QEMU_CASES: &[QemuCase] = &[
    QemuCase::kernel_tests("smp1", 1, 1, "cpus online: 1 sockets: 1 nodes: 1"),
    QemuCase::kernel_tests("smp4-sockets2", 4, 2, "cpus online: 4 sockets: 2 nodes: 2"),
    // The same user suite with the IPC fastpath compiled out: every operation the
    // fastpath takes above takes the slow path here, with the same results.
    QemuCase::kernel_tests("smp2-slowpath-only", 2, 1, "cpus online: 2 sockets: 1 nodes: 1")
        .with_args("test expect_slowpath")
        .with_slowpath_kernel(),
    QemuCase::fault("fault-pf", "fault=pf", Some("#PF"), &[]),
    QemuCase::fault("fault-ud", "fault=ud", Some("#UD"), &[]),
    QemuCase::fault("fault-gp", "fault=gp", Some("#GP"), &[]),
    QemuCase::fault("fault-panic", "fault=panic", None, &["PANIC", "kernel/src/"]),
    // core's bounds-check panic is linked to a stub that reports without formatting.
    QemuCase::fault(
        "fault-bounds",
        "fault=bounds",
        None,
        &["PANIC: index out of bounds", "called from RIP="],
    ),
    // A CPU the firmware lists that never starts is reported; the others carry on.
    QemuCase::kernel_tests("phantom-cpu", 2, 1, "cpus online: 2 sockets: 1 nodes: 1")
        .with_args("test phantom_cpu=9")
        .with_console(&["APIC id 9 did not start"]),
    // A malformed SRAT is rejected with a message; the machine boots as one node.
    QemuCase::kernel_tests("malformed-srat", 2, 1, "cpus online: 2 sockets: 1 nodes: 1")
        .with_acpi_tables(&[MALFORMED_SRAT])
        .with_console(&["SRAT unusable (malformed entry)"]),
    // Without ACPI there is no MADT: the kernel must say so and boot on one CPU.
    QemuCase::kernel_tests("no-acpi", 2, 1, "cpus online: 1 sockets: 1 nodes: 1")
        .without_acpi()
        .with_console(&["ACPI"]),
    // Kernel tracing end to end: record on two CPUs, dump to COM2, decode.
    QemuCase::trace("trace-smp2", 2),
    // The same with the IPC benchmark as the workload (`cargo xtask trace`'s default).
    QemuCase::bench_trace("trace-bench-smp2", 2),
];

/// `cargo xtask trace`'s default kernel command line (a unit test keeps the two equal).
const BENCH_TRACE_ARGS: &str = "bench bench_trace bench_samples=10 bench_warmup=1 bench_cases=same_core_cross_as:0,cross_core_same_socket";

/// The cases selected by `--filter`.
fn selected<'a>(cases: &'a [QemuCase], filter: Option<&str>) -> Vec<&'a QemuCase> {
    cases.iter().filter(|case| filter.is_none_or(|filter| case.name.contains(filter))).collect()
}

/// Checks a finished boot against its expectations; the error lists every mismatch.
fn evaluate(expect: &Expect, outcome: &Outcome) -> Result<(), String> {
    let mut problems = Vec::new();
    let wanted = match expect.exit {
        KernelExit::Success => Verdict::Success,
        KernelExit::Failure => Verdict::KernelFailure,
    };
    let verdict = qemu::verdict(outcome);
    if verdict != wanted {
        problems.push(verdict.describe());
    }
    if expect.kernel_tests_pass {
        // Both suites must have run and passed: the kernel's own cases, then the
        // user-mode suite the root task runs from the boot archive.
        for suite in ["kernel", "user"] {
            match console::suite_totals(&outcome.console, suite) {
                None => problems.push(format!("no `{suite}: N passed, M failed` line")),
                Some(totals) if totals.failed > 0 => {
                    let names = console::failed_tests(&outcome.console).join(", ");
                    problems.push(format!("{} {suite} tests failed: {names}", totals.failed));
                }
                Some(totals) if totals.passed == 0 => problems.push(format!("no {suite} tests ran")),
                Some(_) => {}
            }
        }
    }
    if let Some(wanted) = expect.summary {
        match console::summary(&outcome.console) {
            Some(summary) if summary == wanted => {}
            Some(summary) => problems.push(format!("summary `{summary}`, expected `{wanted}`")),
            None => problems.push(format!("no summary line, expected `{wanted}`")),
        }
    }
    let fault_needles = expect
        .fault_report
        .map(|mnemonic| [&["EXCEPTION", mnemonic][..], &FAULT_REGISTERS[..]].concat())
        .unwrap_or_default();
    let missing: Vec<String> = fault_needles
        .iter()
        .chain(expect.console_contains)
        .filter(|needle| !outcome.console.iter().any(|line| line.contains(*needle)))
        .map(|needle| format!("`{needle}`"))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("console lacks {}", missing.join(", ")));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// What a trace dump from `cpus` CPUs running the ping-pong lacks.
fn trace_problems(trace: &ramen_perf_export::Trace, cpus: u32, user_spans: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if u32::from(trace.cpu_count()) != cpus {
        problems.push(format!("the dump lists {} CPUs, expected {cpus}", trace.cpu_count()));
    }
    let with_flows = crate::trace::ipc_flow_cpus(trace);
    let missing: Vec<String> = (0..cpus)
        .filter(|cpu| !with_flows.iter().any(|c| u32::from(*c) == *cpu))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        problems.push(format!("no IPC flow events on cpu {}", missing.join(", ")));
    }
    if crate::trace::cross_cpu_flows(trace) == 0 {
        problems.push("no IPC delivery crossed CPUs".into());
    }
    // The workload's same-CPU pair calls on the fastpath, which only the traced build
    // of the system-call handler records.
    if crate::trace::fastpath_flows(trace) == 0 {
        problems.push("no IPC recorded on the fastpath".into());
    }
    // Client and server record spans into their user trace buffers, and are named.
    let user_threads = crate::trace::threads_with_user_spans(trace);
    if user_spans && user_threads.len() < 2 {
        problems.push(format!("user spans from {} threads, expected client and server", user_threads.len()));
    }
    for thread in user_threads.iter().filter(|t| !trace.thread_names.contains_key(t)) {
        problems.push(format!("thread {thread} recorded user spans but has no name"));
    }
    // Context switches name the outgoing thread as the record's (the kernel once set
    // it to the incoming one before recording, which no synthetic trace showed).
    let (switches, switch_problems) = crate::trace::switch_problems(trace);
    if switches == 0 {
        problems.push("no context switch recorded".into());
    }
    problems.extend(switch_problems);
    problems
}

/// Checks a `trace_dump` case's COM2 capture.
fn evaluate_trace_capture(raw: &std::path::Path, cpus: u32, user_spans: bool) -> Result<(), String> {
    let (_, trace) = crate::trace::read_capture(raw).map_err(|e| format!("{e:#}"))?;
    let problems = trace_problems(&trace, cpus, user_spans);
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// `cargo xtask test`; returns whether everything passed.
pub fn run(args: &TestArgs) -> anyhow::Result<bool> {
    if !args.skip_host && !host_tests()? {
        eprintln!("test: host tests failed; QEMU cases not run");
        return Ok(false);
    }
    // The static checks are cheap and CI runs only `test`, so they belong here too.
    let graph_ok = deps::check()?;
    let elf = match &args.kernel {
        Some(elf) => elf.clone(),
        None => image::build_kernel()?,
    };
    let image_ok = simd::check_elf(&elf)?;
    let wants_slowpath = selected(QEMU_CASES, args.filter.as_deref()).iter().any(|c| c.slowpath_kernel);
    let slowpath_elf =
        if wants_slowpath && args.kernel.is_none() { Some(image::build_slowpath_kernel()?) } else { None };
    let initrd = match &args.initrd {
        Some(initrd) => initrd.clone(),
        None => user::build_boot_archive()?,
    };

    qemu::ensure_installed()?;
    let accel = qemu::choose_accel_for_host(args.accel, false)?;
    println!("{}", accel.describe());
    let cases = selected(QEMU_CASES, args.filter.as_deref());
    if cases.is_empty() {
        println!("test: no QEMU case matches --filter");
    }
    let (mut passed, mut failed) = (0, 0);
    let mut inner = [console::TestTotals::default(); 2];
    for case in cases {
        let mut machine = Machine::new(case.cpus, case.sockets, case.mem_mib)
            .with_context(|| format!("QEMU case {} has a bad machine shape", case.name))?;
        machine.acpi = case.acpi;
        let config = BootConfig {
            machine,
            accel: accel.accel,
            kernel: if case.slowpath_kernel {
                slowpath_elf.clone().unwrap_or_else(|| elf.clone())
            } else {
                elf.clone()
            },
            initrd: Some(initrd.clone()),
            kernel_args: case.kernel_args.into(),
            gdb: false,
            extra_args: case.acpi_table_args()?,
        };
        let mut config = config;
        if case.trace_dump {
            let raw = case.com2_capture();
            std::fs::create_dir_all(raw.parent().unwrap_or(&raw))?;
            let _ = std::fs::remove_file(&raw);
            config.extra_args.extend(crate::trace::com2_args(&raw));
        }
        let command = qemu::command(&config);
        let shown = process::display_command(&command);
        let outcome = process::run_with_timeout(command, Duration::from_secs(args.timeout), Echo::Capture)?;
        let mut result = evaluate(&case.expect, &outcome);
        if case.trace_dump && result.is_ok() {
            result = evaluate_trace_capture(&case.com2_capture(), case.cpus, case.trace_user_spans);
        }
        // What ran inside the boot: each suite's own totals.
        let inside = inner_totals(&outcome.console);
        for (sum, (_, totals)) in inner.iter_mut().zip(&inside) {
            if let Some(totals) = totals {
                sum.passed += totals.passed;
                sum.failed += totals.failed;
            }
        }
        match &result {
            Ok(()) => {
                passed += 1;
                println!("qemu {} ... ok{}", case.name, describe_inner(&inside));
            }
            Err(reason) => {
                failed += 1;
                println!("qemu {} ... FAILED ({reason})", case.name);
            }
        }
        if result.is_err() || args.verbose {
            print_console(&shown, &outcome);
        }
    }
    // The QEMU totals stay the last line; name earlier failures just above them.
    for (ok, step) in [(graph_ok, "dependency rules"), (image_ok, "simd check")] {
        if !ok {
            println!("test: {step} FAILED (see above)");
        }
    }
    let [kernel, user] = inner;
    println!(
        "qemu: inside the boots: kernel tests {} passed, {} failed; user tests {} passed, {} failed",
        kernel.passed, kernel.failed, user.passed, user.failed
    );
    println!("qemu: {passed} passed, {failed} failed");
    Ok(graph_ok && image_ok && failed == 0)
}

/// The kernel's and the root task's test-suite totals a boot printed, if it ran them.
fn inner_totals(console: &[String]) -> [(&'static str, Option<console::TestTotals>); 2] {
    ["kernel", "user"].map(|suite| (suite, console::suite_totals(console, suite)))
}

/// ` (kernel: 12 passed; user: 41 passed)` for a boot that ran its suites ("" if none).
fn describe_inner(inside: &[(&str, Option<console::TestTotals>)]) -> String {
    let parts: Vec<String> = inside
        .iter()
        .filter_map(|(suite, totals)| {
            totals.map(|t| format!("{suite}: {} passed, {} failed", t.passed, t.failed))
        })
        .collect();
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join("; ")) }
}

/// Shows what a case's boot printed: the whole console, or its tail after a timeout.
fn print_console(command: &str, outcome: &Outcome) {
    println!("  command: {command}");
    if matches!(outcome.exit, Exit::TimedOut(_)) {
        process::print_tail(&outcome.console, qemu::TAIL_LINES);
    } else {
        println!("---- console ----");
        outcome.console.iter().for_each(|line| println!("{line}"));
        println!("---- end of console ----");
    }
    if !outcome.stderr.is_empty() {
        println!("---- qemu stderr ----");
        outcome.stderr.iter().for_each(|line| println!("{line}"));
        println!("---- end of qemu stderr ----");
    }
}

/// The arguments that leave the freestanding packages (kernel image, user programs)
/// out of a `--workspace` host command.
pub fn exclude_freestanding() -> Vec<&'static str> {
    std::iter::once(image::KERNEL_PACKAGE)
        .chain(user::USER_PACKAGES.iter().copied())
        .flat_map(|p| ["--exclude", p])
        .collect()
}

/// Host tests for every crate but the freestanding ones, in the normal target directory
/// and with no bare-metal flags (those are only ever set on the bare builds' own cargo
/// commands).
fn host_tests() -> anyhow::Result<bool> {
    let exclude = exclude_freestanding();
    println!("test: host crates (cargo test --workspace {})", exclude.join(" "));
    let status = image::cargo()
        .args(["test", "--workspace"])
        .args(&exclude)
        .status()
        .context("could not start cargo test")?;
    Ok(status.success() && kernel_host_tests()? && loom_tests()?)
}

/// The kernel's own code in a host test process (`cargo test -p ramen-kernel --lib`:
/// the library on `ramen-arch`'s hosted feature, `kernel/src/hosted_tests.rs`), in its
/// own cargo command so the feature reaches no other crate's build: with the default
/// seed, then with each of `soak::CI_SEEDS` (their output shown only if they fail,
/// with the command that reproduces the failure).
fn kernel_host_tests() -> anyhow::Result<bool> {
    println!("test: kernel code on the host (cargo test -p {} --lib)", image::KERNEL_PACKAGE);
    let status = image::cargo()
        .args(["test", "-p", image::KERNEL_PACKAGE, "--lib"])
        .status()
        .context("could not start cargo test for the kernel library")?;
    if !status.success() {
        return Ok(false);
    }
    for seed in soak::CI_SEEDS {
        let run = soak::SeedRun {
            seed,
            cases: soak::CI_CASES,
            cpu_cases: soak::CI_CPU_CASES,
            order: soak::Order::Parallel,
            filter: None,
        };
        let passed = soak::run_seed(&run, true)?;
        println!("test: kernel host tests, seed {seed} ... {}", if passed { "ok" } else { "FAILED" });
        if !passed {
            println!("test: reproduce with: {}", run.reproduction());
            return Ok(false);
        }
    }
    Ok(true)
}

/// The loom model checks of ramen-core's lock-free protocols (`cfg(loom)` builds, in
/// their own target directory so the normal build is not invalidated).
fn loom_tests() -> anyhow::Result<bool> {
    println!("test: loom models (RUSTFLAGS=\"--cfg loom\" cargo test -p ramen-core --release --lib loom)");
    let target = image::repo_root().join("target").join("loom");
    let status = image::cargo()
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", &target)
        .args(["test", "-p", "ramen-core", "--release", "--lib", "loom"])
        .status()
        .context("could not start cargo test for the loom models")?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_line_says_what_ran_inside_it() {
        let console: Vec<String> =
            ["kernel: 12 passed, 0 failed", "test a ... ok", "user: 41 passed, 1 failed"]
                .map(String::from)
                .into();
        assert_eq!(
            describe_inner(&inner_totals(&console)),
            " (kernel: 12 passed, 0 failed; user: 41 passed, 1 failed)"
        );
        assert_eq!(describe_inner(&inner_totals(&["EXCEPTION #PF".to_string()])), "");
    }

    fn outcome(code: i32, console: &str) -> Outcome {
        Outcome {
            exit: Exit::Code(code),
            console: console.lines().map(String::from).collect(),
            stderr: Vec::new(),
        }
    }

    fn case(name: &str) -> &'static QemuCase {
        QEMU_CASES.iter().find(|case| case.name == name).unwrap()
    }

    #[test]
    fn case_names_are_unique_and_machines_valid() {
        for (i, case) in QEMU_CASES.iter().enumerate() {
            assert!(!case.name.is_empty());
            assert!(QEMU_CASES[..i].iter().all(|other| other.name != case.name), "{}", case.name);
            Machine::new(case.cpus, case.sockets, case.mem_mib).unwrap();
        }
    }

    #[test]
    fn no_acpi_case_is_two_cpus_without_acpi() {
        let no_acpi = case("no-acpi");
        assert_eq!((no_acpi.cpus, no_acpi.acpi), (2, false));
        assert_eq!(no_acpi.kernel_args, "test");
        assert_eq!(no_acpi.expect.summary, Some("cpus online: 1 sockets: 1 nodes: 1"));
        assert!(no_acpi.expect.kernel_tests_pass);
    }

    #[test]
    fn trace_case_checks_flows_on_every_cpu() {
        let trace_case = case("trace-smp2");
        assert!(trace_case.trace_dump);
        assert_eq!(trace_case.kernel_args, "trace");
        let trace = ramen_perf_export::synthetic::ipc_pingpong(2, 3);
        assert!(trace_problems(&trace, 2, true).is_empty());
        let problems = trace_problems(&trace, 3, true);
        assert!(problems.iter().any(|p| p.contains("expected 3")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("cpu 2")), "{problems:?}");
        let one_cpu = ramen_perf_export::synthetic::ipc_pingpong(1, 3);
        assert!(trace_problems(&one_cpu, 1, true).iter().all(|p| !p.contains("fastpath")));
        let mut slow_only = trace.clone();
        for record in slow_only.sources.values_mut().flat_map(|s| s.records.iter_mut()) {
            let mut info = ramen_perf_record::IpcInfo::unpack(record.args[1]);
            info.path = ramen_perf_record::IpcPath::Slow;
            if matches!(
                record.event_kind(),
                Some(ramen_perf_record::EventKind::IpcSend | ramen_perf_record::EventKind::IpcReply)
            ) {
                record.args[1] = info.pack();
            }
        }
        assert!(trace_problems(&slow_only, 2, true).iter().any(|p| p.contains("fastpath")));
        assert!(trace_problems(&one_cpu, 1, true).iter().any(|p| p.contains("crossed")));
        let mut unnamed = trace.clone();
        unnamed.thread_names.clear();
        assert!(trace_problems(&unnamed, 2, true).iter().any(|p| p.contains("no name")));
        let mut kernel_only = trace;
        kernel_only
            .sources
            .retain(|source, _| matches!(source, ramen_perf_export::decode::SourceId::Core(_)));
        assert!(trace_problems(&kernel_only, 2, true).iter().any(|p| p.contains("user spans from 0")));
    }

    #[test]
    fn bench_trace_case_boots_what_xtask_trace_boots() {
        let bench = case("trace-bench-smp2");
        assert!(bench.trace_dump && !bench.trace_user_spans);
        assert_eq!(bench.kernel_args, crate::trace::kernel_command_line(crate::trace::Workload::Bench, &[]));
        // Without user spans expected, a kernel-only trace passes.
        let mut kernel_only = ramen_perf_export::synthetic::ipc_pingpong(2, 3);
        kernel_only
            .sources
            .retain(|source, _| matches!(source, ramen_perf_export::decode::SourceId::Core(_)));
        assert!(trace_problems(&kernel_only, 2, false).is_empty());
    }

    #[test]
    fn filter_selects_by_substring() {
        let names = |filter| selected(QEMU_CASES, filter).iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            names(Some("fault-")),
            ["fault-pf", "fault-ud", "fault-gp", "fault-panic", "fault-bounds"]
        );
        assert_eq!(names(None).len(), QEMU_CASES.len());
        assert!(names(Some("nothing")).is_empty());
    }

    #[test]
    fn passing_test_boot() {
        let console = "[cpu0] cpus online: 4 sockets: 2 nodes: 2\n[cpu0] test a ... ok\n\
                       kernel: 1 passed, 0 failed\ntest b ... ok\nuser: 1 passed, 0 failed";
        assert_eq!(evaluate(&case("smp4-sockets2").expect, &outcome(33, console)), Ok(()));
        // The user suite is required too.
        let kernel_only = "cpus online: 4 sockets: 2 nodes: 2\nkernel: 1 passed, 0 failed";
        let reason = evaluate(&case("smp4-sockets2").expect, &outcome(33, kernel_only)).unwrap_err();
        assert_eq!(reason, "no `user: N passed, M failed` line");
    }

    #[test]
    fn failing_test_boot_names_every_problem() {
        let console = "cpus online: 1 sockets: 1 nodes: 1\ntest a ... FAILED\nkernel: 0 passed, 1 failed";
        let reason = evaluate(&case("smp4-sockets2").expect, &outcome(35, console)).unwrap_err();
        assert!(reason.contains("kernel reported failure"), "{reason}");
        assert!(reason.contains("1 kernel tests failed: a"), "{reason}");
        assert!(reason.contains("expected `cpus online: 4 sockets: 2 nodes: 2`"), "{reason}");
        let reason =
            evaluate(&case("smp1").expect, &outcome(33, "cpus online: 1 sockets: 1 nodes: 1")).unwrap_err();
        assert_eq!(reason, "no `kernel: N passed, M failed` line; no `user: N passed, M failed` line");
    }

    #[test]
    fn fault_cases_need_failure_exit_and_report() {
        let report = "[cpu0] EXCEPTION #PF at RIP=0x1 CR2=0x0\nRAX=0 RSP=0xffff";
        assert_eq!(evaluate(&case("fault-pf").expect, &outcome(35, report)), Ok(()));
        let reason = evaluate(&case("fault-pf").expect, &outcome(33, "EXCEPTION #PF")).unwrap_err();
        assert!(reason.starts_with("kernel reported success"), "{reason}");
        assert!(reason.ends_with("console lacks `RIP=`, `CR2=`, `RAX=`, `RSP=`"), "{reason}");
        let reset = evaluate(&case("fault-gp").expect, &outcome(0, report)).unwrap_err();
        assert!(reset.contains("QEMU exited with status 0 (kernel did not report)"), "{reset}");
    }

    #[test]
    fn host_commands_leave_out_every_freestanding_package() {
        assert_eq!(
            exclude_freestanding().join(" "),
            "--exclude ramen-kernel --exclude ramen-root --exclude ramen-user-tests --exclude ramen-bench-ipc"
        );
    }

    #[test]
    fn panic_case_needs_location() {
        let console = "[cpu0] PANIC at kernel/src/main.rs:10:5: boom";
        assert_eq!(evaluate(&case("fault-panic").expect, &outcome(35, console)), Ok(()));
    }
}
