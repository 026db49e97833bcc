//! `cargo xtask`: the one entry point for building, running, testing and checking RamenOS.
//!
//! Every workflow goes through this binary so that the bare-metal flags, the QEMU command
//! line and the test expectations live in exactly one place. Pure decisions (QEMU
//! arguments, accelerator choice, console parsing, dependency rules, SIMD classification)
//! are plain functions with host unit tests; the modules that spawn processes stay thin.
#![forbid(unsafe_code)]

mod bench;
mod check;
mod console;
mod deps;
mod image;
mod process;
mod qemu;
mod simd;
mod soak;
mod test;
mod trace;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build, run, test and check RamenOS.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel image and the boot archive of user programs; print the kernel ELF's path.
    Build,
    /// Build the kernel, boot it under QEMU and stream its console.
    ///
    /// Exits 0 iff the kernel reported success through the isa-debug-exit device.
    Run(RunArgs),
    /// Run host tests, build the kernel, scan it, and boot the QEMU test cases.
    Test(test::TestArgs),
    /// Run the kernel's host tests under many seeds (1..=50 by default) and longer
    /// searches, serially and in parallel; stop at the first failing seed and print the
    /// command that reproduces it.
    Soak(soak::SoakArgs),
    /// Run the IPC benchmark in QEMU and report it beside seL4's figures.
    ///
    /// By default a deterministic icount run (instructions) and a parallel run (time);
    /// see docs/benchmarking.md.
    Bench(bench::BenchArgs),
    /// Boot the `trace` IPC workload with kernel tracing on, capture the dump from COM2 and
    /// export it into --out: trace.json (Perfetto), trace.fxt, summary.txt, timeline.svg.
    Trace(trace::TraceArgs),
    /// Check formatting, clippy (host, kernel, user programs), the dependency rules and the SIMD-free image.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    machine: qemu::MachineArgs,
    /// Halt the CPU at start and wait for gdb on tcp::1234.
    #[arg(long)]
    gdb: bool,
    /// Kill QEMU and fail after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
    /// Boot this kernel ELF instead of building one.
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// Pass this boot archive with -initrd instead of building the user programs.
    #[arg(long, value_name = "RFS")]
    initrd: Option<PathBuf>,
    /// Kernel command-line arguments (e.g. `test`, `fault=pf`), passed with -append.
    #[arg(last = true, value_name = "KERNEL_ARGS")]
    kernel_args: Vec<String>,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Run only the SIMD-free image scan.
    #[arg(long)]
    simd_only: bool,
    /// With --simd-only: scan this ELF instead of building the kernel.
    #[arg(long, value_name = "PATH", requires = "simd_only")]
    elf: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build => image::build_kernel().and_then(|elf| {
            user::build_boot_archive()?;
            println!("{}", elf.display());
            Ok(true)
        }),
        Command::Run(args) => run(args),
        Command::Test(args) => test::run(&args),
        Command::Soak(args) => soak::run(&args),
        Command::Trace(args) => trace::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Check(args) => {
            if args.simd_only {
                check::simd_only(args.elf.as_deref())
            } else {
                check::run()
            }
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask run`: returns whether the kernel reported success.
fn run(args: RunArgs) -> anyhow::Result<bool> {
    let machine = args.machine.to_machine()?;
    qemu::ensure_installed()?;
    let elf = match args.kernel {
        Some(elf) => elf,
        None => image::build_kernel()?,
    };
    let initrd = match args.initrd {
        Some(initrd) => initrd,
        None => user::build_boot_archive()?,
    };
    let accel = qemu::choose_accel_for_host(args.machine.accel, args.machine.icount)?;
    println!("{}", accel.describe());
    let config = qemu::BootConfig {
        machine,
        accel: accel.accel,
        kernel: elf.clone(),
        initrd: Some(initrd),
        kernel_args: args.kernel_args.join(" "),
        gdb: args.gdb,
        extra_args: Vec::new(),
    };
    if args.gdb {
        println!(
            "qemu: waiting for gdb; attach with: gdb {} -ex 'target remote :1234'\n\
             qemu: the session is killed after {} s (raise it with --timeout)",
            elf.display(),
            args.timeout
        );
    }
    let command = qemu::command(&config);
    println!("qemu: {}", process::display_command(&command));
    let outcome = process::run_with_timeout(
        command,
        std::time::Duration::from_secs(args.timeout),
        process::Echo::Stream,
    )?;
    // The console was streamed as it came, so even after a timeout it is already on screen.
    let verdict = qemu::verdict(&outcome);
    println!("run: {}", verdict.describe());
    Ok(verdict == qemu::Verdict::Success)
}
