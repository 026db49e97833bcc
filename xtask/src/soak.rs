//! `cargo xtask soak`: the kernel's host tests (`cargo test -p ramen-kernel --lib`) under
//! many seeds, longer searches and both test orders; stops at the first failing seed and
//! prints the command that reproduces it. `cargo xtask test` runs the same tests under a
//! few fixed seeds ([`CI_SEEDS`]) through [`run_seed`].

use std::process::Stdio;
use std::time::Instant;

use anyhow::Context;

use crate::image;

/// Seeds `cargo xtask test` runs beyond the default one (0), at [`CI_CASES`] cases: 11
/// found a harness defect that 0 missed (a request left from one world handled in the
/// next).
pub const CI_SEEDS: [u64; 3] = [11, 23, 37];
/// Cases per randomised test for [`CI_SEEDS`].
pub const CI_CASES: u32 = 300;
/// Cases of the four-CPU test for [`CI_SEEDS`] (each runs up to a second).
pub const CI_CPU_CASES: u32 = 10;

/// The order the test harness runs the tests in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// One test at a time, in name order (`--test-threads=1`).
    Serial,
    /// The harness's threads (the tests still take turns on the one hosted machine, in
    /// whatever order they get it).
    Parallel,
    /// Both, serial first.
    Both,
}

impl Order {
    fn runs(self) -> &'static [Order] {
        match self {
            Order::Serial => &[Order::Serial],
            Order::Parallel => &[Order::Parallel],
            Order::Both => &[Order::Serial, Order::Parallel],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Order::Serial => "serial",
            Order::Parallel => "parallel",
            Order::Both => "both",
        }
    }
}

/// Flags for `cargo xtask soak`.
#[derive(clap::Args)]
pub struct SoakArgs {
    /// First seed (RAMEN_HOSTED_SEED).
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Last seed, included.
    #[arg(long, default_value_t = 50)]
    to: u64,
    /// Cases per randomised test (RAMEN_HOSTED_CASES).
    #[arg(long, default_value_t = 300)]
    cases: u32,
    /// Cases of the four-CPU test (RAMEN_HOSTED_CPU_CASES; each runs up to a second of
    /// wall time).
    #[arg(long, default_value_t = 30)]
    cpu_cases: u32,
    /// Test order for each seed.
    #[arg(long, value_enum, default_value_t = Order::Both)]
    order: Order,
    /// Only the tests whose name contains this (cargo test's filter).
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
}

/// One run of the kernel's host tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedRun<'a> {
    pub seed: u64,
    pub cases: u32,
    pub cpu_cases: u32,
    pub order: Order,
    pub filter: Option<&'a str>,
}

impl SeedRun<'_> {
    /// The environment and the arguments after `cargo test -p ramen-kernel --lib`.
    fn env_and_args(&self) -> (Vec<(&'static str, String)>, Vec<String>) {
        let env = vec![
            ("RAMEN_HOSTED_SEED", self.seed.to_string()),
            ("RAMEN_HOSTED_CASES", self.cases.to_string()),
            ("RAMEN_HOSTED_CPU_CASES", self.cpu_cases.to_string()),
        ];
        let mut args = Vec::new();
        if self.filter.is_some() || self.order == Order::Serial {
            args.push("--".to_string());
        }
        if let Some(filter) = self.filter {
            args.push(filter.to_string());
        }
        if self.order == Order::Serial {
            args.push("--test-threads=1".to_string());
        }
        (env, args)
    }

    /// The shell command that runs it again.
    pub fn reproduction(&self) -> String {
        let (env, args) = self.env_and_args();
        let mut words: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        words.push(format!("cargo test -p {} --lib", image::KERNEL_PACKAGE));
        words.extend(args);
        words.join(" ")
    }
}

/// Runs the kernel's host tests as `run` says, their output shown (`quiet`: kept back,
/// and shown only if they fail). Returns whether they passed.
pub fn run_seed(run: &SeedRun, quiet: bool) -> anyhow::Result<bool> {
    let (env, args) = run.env_and_args();
    let mut command = image::cargo();
    command.args(["test", "-p", image::KERNEL_PACKAGE, "--lib"]).args(&args).envs(env);
    if !quiet {
        return Ok(command.status().context("could not start cargo test for the kernel library")?.success());
    }
    let output =
        command.stdin(Stdio::null()).output().context("could not start cargo test for the kernel library")?;
    if !output.status.success() {
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(output.status.success())
}

/// `cargo xtask soak`; returns whether every seed passed.
pub fn run(args: &SoakArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.from <= args.to, "--from {} is after --to {}", args.from, args.to);
    // Built once, before the clock starts.
    let built = image::cargo()
        .args(["test", "-p", image::KERNEL_PACKAGE, "--lib", "--no-run"])
        .status()
        .context("could not build the kernel's host tests")?;
    if !built.success() {
        return Ok(false);
    }
    let started = Instant::now();
    let mut runs = 0;
    for seed in args.from..=args.to {
        for &order in args.order.runs() {
            let run = SeedRun {
                seed,
                cases: args.cases,
                cpu_cases: args.cpu_cases,
                order,
                filter: args.filter.as_deref(),
            };
            let start = Instant::now();
            let passed = run_seed(&run, true)?;
            println!(
                "soak: seed {seed} {} ... {} ({:.1} s)",
                order.name(),
                if passed { "ok" } else { "FAILED" },
                start.elapsed().as_secs_f64()
            );
            if !passed {
                println!("soak: first failing seed: {seed} ({} order); reproduce with:", order.name());
                println!("  {}", run.reproduction());
                return Ok(false);
            }
            runs += 1;
        }
    }
    println!(
        "soak: seeds {}..={}, {} cases (four-CPU test {}), order {}: {runs} runs clean in {:.0} s",
        args.from,
        args.to,
        args.cases,
        args.cpu_cases,
        args.order.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_seed_is_reproduced_by_one_command() {
        let run = SeedRun { seed: 11, cases: 300, cpu_cases: 30, order: Order::Serial, filter: Some("a_") };
        assert_eq!(
            run.reproduction(),
            "RAMEN_HOSTED_SEED=11 RAMEN_HOSTED_CASES=300 RAMEN_HOSTED_CPU_CASES=30 \
             cargo test -p ramen-kernel --lib -- a_ --test-threads=1"
        );
        let parallel = SeedRun { order: Order::Parallel, filter: None, ..run };
        assert_eq!(
            parallel.reproduction(),
            "RAMEN_HOSTED_SEED=11 RAMEN_HOSTED_CASES=300 RAMEN_HOSTED_CPU_CASES=30 cargo test -p ramen-kernel --lib"
        );
    }

    #[test]
    fn both_orders_run_serial_first() {
        assert_eq!(Order::Both.runs(), [Order::Serial, Order::Parallel]);
    }
}
