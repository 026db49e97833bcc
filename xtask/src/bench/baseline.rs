//! The committed icount baseline (`benches/baseline.json`) and the regression check:
//! the headline round trip (same core, cross address space, 0 words, Call +
//! ReplyRecv median, in instructions) may not grow by more than [`TOLERANCE_PERCENT`].
//! Getting faster always passes; refresh the baseline with `--write-baseline`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{HEADLINE_CASE, RunReport, Unit};

/// How much slower than the baseline the headline may get, in percent.
pub const TOLERANCE_PERCENT: u64 = 2;

/// Medians of one case, in instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseMedians {
    pub call: u64,
    pub reply_recv: u64,
    pub call_plus_reply_recv: u64,
    pub client_round_trip: u64,
}

/// The baseline file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub about: String,
    /// `qemu-system-x86_64 --version`: icount counts depend on QEMU's instruction set
    /// emulation only a little, but a different version is worth a warning.
    pub qemu: String,
    pub git_rev: String,
    pub cpus: u32,
    /// `case/<words>w` to medians.
    pub cases: BTreeMap<String, CaseMedians>,
}

impl Baseline {
    /// The baseline an icount run gives.
    pub fn from_run(run: &RunReport, qemu: &str, git_rev: &str) -> Self {
        let cases = run
            .latency
            .iter()
            .map(|r| {
                let medians = CaseMedians {
                    call: r.call.median,
                    reply_recv: r.reply_recv.median,
                    call_plus_reply_recv: r.call_plus_reply_recv.median,
                    client_round_trip: r.client_round_trip.median,
                };
                (r.key(), medians)
            })
            .collect();
        Self {
            about: "Medians in instructions from `cargo xtask bench --icount` (deterministic). \
                    `cargo xtask bench --check` fails if the same_core_cross_as/0w Call+ReplyRecv \
                    median grows by more than 2%; refresh with `cargo xtask bench --icount --write-baseline`."
                .into(),
            qemu: qemu.into(),
            git_rev: git_rev.into(),
            cpus: run.cpus,
            cases,
        }
    }
}

/// The outcome of `--check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckOutcome {
    pub passed: bool,
    pub case: String,
    pub baseline: u64,
    pub current: u64,
    /// Largest value that passes.
    pub limit: u64,
    /// The comparison of every case, for the terminal.
    pub text: String,
}

/// Compares an icount run with the baseline.
pub fn check(run: &RunReport, baseline: &Baseline, qemu: &str) -> anyhow::Result<CheckOutcome> {
    anyhow::ensure!(run.unit == Unit::Instructions, "--check needs the icount run (instructions)");
    let key = format!("{}/{}w", HEADLINE_CASE.0, HEADLINE_CASE.1);
    let Some(base) = baseline.cases.get(&key) else {
        anyhow::bail!("benches/baseline.json has no `{key}` case");
    };
    let Some(current) = run.latency_of(HEADLINE_CASE.0, HEADLINE_CASE.1) else {
        anyhow::bail!("the run did not measure `{key}`");
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "baseline comparison (Call+ReplyRecv medians, instructions; baseline at {}):",
        baseline.git_rev
    );
    if baseline.qemu != qemu {
        let _ = writeln!(text, "   note: baseline made with `{}`, this run with `{qemu}`", baseline.qemu);
    }
    for r in &run.latency {
        let now = r.call_plus_reply_recv.median;
        match baseline.cases.get(&r.key()) {
            Some(then) => {
                let change = (now as f64 - then.call_plus_reply_recv as f64) * 100.0
                    / then.call_plus_reply_recv as f64;
                let _ = writeln!(
                    text,
                    "   {:<32} {:>8} -> {:>8} ({change:+.1}%)",
                    r.key(),
                    then.call_plus_reply_recv,
                    now
                );
            }
            None => {
                let _ = writeln!(text, "   {:<32} {:>8} -> {:>8} (new case)", r.key(), "-", now);
            }
        }
    }
    let baseline_value = base.call_plus_reply_recv;
    let limit = baseline_value + baseline_value * TOLERANCE_PERCENT / 100;
    let now = current.call_plus_reply_recv.median;
    let passed = now <= limit;
    let verdict = if passed && now < baseline_value {
        "ok (faster than the baseline: refresh it with `cargo xtask bench --icount --write-baseline`)"
    } else if passed {
        "ok"
    } else {
        "FAILED: regression"
    };
    let _ = writeln!(
        text,
        "check: {key} {now} vs baseline {baseline_value} (limit {limit}, +{TOLERANCE_PERCENT}%): {verdict}"
    );
    Ok(CheckOutcome { passed, case: key, baseline: baseline_value, current: now, limit, text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::sample_report;
    use crate::qemu::Accel;

    fn baseline_with(headline: u64) -> Baseline {
        let mut baseline = Baseline::from_run(&sample_report(Accel::TcgIcount), "qemu 7.2", "abc");
        baseline.cases.get_mut("same_core_cross_as/0w").unwrap().call_plus_reply_recv = headline;
        baseline
    }

    #[test]
    fn two_percent_slower_passes_and_more_fails() {
        let run = sample_report(Accel::TcgIcount);
        // The run's headline median is 1277.
        assert!(check(&run, &baseline_with(1277), "qemu 7.2").unwrap().passed);
        // 1252 * 1.02 = 1277.04: just inside.
        assert!(check(&run, &baseline_with(1252), "qemu 7.2").unwrap().passed);
        let failed = check(&run, &baseline_with(1250), "qemu 7.2").unwrap();
        assert!(!failed.passed && failed.limit == 1275, "{failed:?}");
        assert!(failed.text.contains("FAILED: regression"), "{}", failed.text);
    }

    #[test]
    fn faster_always_passes_and_says_so() {
        let outcome = check(&sample_report(Accel::TcgIcount), &baseline_with(5000), "qemu 8.0").unwrap();
        assert!(outcome.passed);
        assert!(outcome.text.contains("faster than the baseline"), "{}", outcome.text);
        assert!(outcome.text.contains("note: baseline made with `qemu 7.2`"), "{}", outcome.text);
    }

    #[test]
    fn only_icount_runs_are_checked() {
        assert!(check(&sample_report(Accel::Tcg), &baseline_with(1277), "q").is_err());
    }

    #[test]
    fn committed_baseline_parses_and_has_the_headline() {
        let text = std::fs::read_to_string(crate::image::repo_root().join("benches/baseline.json")).unwrap();
        let baseline: Baseline = serde_json::from_str(&text).unwrap();
        assert!(baseline.cases.contains_key("same_core_cross_as/0w"));
    }
}
