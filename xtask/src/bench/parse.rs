//! Reading a benchmark boot's console: the root task's `BENCH {json}` lines and the
//! clients' `BENCHS` sample lines (formats in `benches/ipc/src/lib.rs` and
//! `kernel/root/src/bench.rs`).

use std::collections::BTreeMap;

use anyhow::{Context, bail, ensure};
use serde::Deserialize;

/// Marks a root-task line (the space tells it from [`SAMPLES_MARKER`]).
const BENCH_MARKER: &str = "BENCH ";
/// Marks a sample line.
pub const SAMPLES_MARKER: &str = "BENCHS ";

/// One `BENCH` line.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BenchLine {
    Machine {
        cpus: u32,
        sockets: u32,
        tsc_hz: u64,
        samples: u64,
        warmup: u64,
        rounds: u64,
    },
    Latency {
        id: u64,
        case: String,
        words: u64,
        client_cpu: u32,
        server_cpu: u32,
        overhead: u64,
        /// sel4bench's overhead: the `Call` / `ReplyRecv` stubs around a NOP (0 from a
        /// console that predates it).
        #[serde(default)]
        stub_overhead: u64,
        samples: u64,
        /// Kernel IPC operations over the case that took the fastpath / slow path.
        #[serde(default)]
        fastpath_ops: u64,
        #[serde(default)]
        slowpath_ops: u64,
    },
    Throughput {
        case: String,
        pairs: u32,
        round_trips: u64,
        ticks: u64,
    },
    /// The busy-server run: `clients` clients calling one server at once, with the
    /// fastpath on or off; the kernel's slow-path IPC calls and `CAP_LOCK` write
    /// acquisitions over the run.
    Contended {
        fastpath: bool,
        clients: u64,
        round_trips: u64,
        ticks: u64,
        slow: u64,
        cap_writes: u64,
    },
    /// Pairs on CPUs 1.. alone (`churn` false) or beside the root task changing
    /// capabilities (`cap_changes` copies and deletes) on CPU 0; `CAP_LOCK` write
    /// acquisitions over the run.
    Churn {
        churn: bool,
        pairs: u32,
        round_trips: u64,
        ticks: u64,
        cap_changes: u64,
        cap_writes: u64,
    },
    /// One size of the bulk case: `bytes` moved by `method` (`copy` or `lease`).
    Bulk {
        bytes: u64,
        method: String,
        median: u64,
        min: u64,
        reps: u64,
    },
    Unsupported {
        case: String,
        why: String,
    },
    Failed {
        case: String,
        why: String,
    },
    End,
}

/// The samples of one metric of one case, in order.
pub type SampleKey = (u64, String);

/// Everything a benchmark boot printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Console {
    pub lines: Vec<BenchLine>,
    /// (case id, metric `call`/`rr`/`rt`) to samples, in ticks, overhead included.
    pub samples: BTreeMap<SampleKey, Vec<u64>>,
    /// What the kernel's boot line said of PCIDs: (available, in use).
    pub pcid: Option<(bool, bool)>,
}

/// The kernel's boot line that says whether the CPU has PCIDs and they are in use:
/// `... (pcid available true, in use true)`.
fn parse_pcid(line: &str) -> Option<(bool, bool)> {
    let rest = &line[line.find("(pcid available ")? + "(pcid available ".len()..];
    let (available, rest) = rest.split_once(", in use ")?;
    let in_use = rest.strip_suffix(')')?;
    Some((available.parse().ok()?, in_use.parse().ok()?))
}

impl Console {
    /// Whether the root task got to the end of the run.
    pub fn finished(&self) -> bool {
        self.lines.contains(&BenchLine::End)
    }
}

/// Parses the console; other lines (kernel log, progress) are skipped.
pub fn parse_console(console: &[String]) -> anyhow::Result<Console> {
    let mut parsed = Console::default();
    for (number, line) in console.iter().enumerate() {
        let context = || format!("console line {}: `{line}`", number + 1);
        if let Some(start) = line.find(SAMPLES_MARKER) {
            let (key, first, values) =
                parse_samples(&line[start + SAMPLES_MARKER.len()..]).with_context(context)?;
            let series = parsed.samples.entry(key).or_default();
            ensure!(
                series.len() as u64 == first,
                "{}: samples start at index {first}, expected {}",
                context(),
                series.len()
            );
            series.extend(values);
        } else if let Some(start) = line.find(BENCH_MARKER) {
            let json = &line[start + BENCH_MARKER.len()..];
            parsed.lines.push(serde_json::from_str(json).with_context(context)?);
        } else if let Some(pcid) = parse_pcid(line) {
            parsed.pcid = Some(pcid);
        }
    }
    Ok(parsed)
}

/// `id=<case> m=<metric> i=<first> v=<entries>` into the key, first index and values;
/// an entry is `value` or `value*count`.
pub fn parse_samples(text: &str) -> anyhow::Result<(SampleKey, u64, Vec<u64>)> {
    let mut fields = BTreeMap::new();
    for word in text.split_whitespace() {
        let Some((name, value)) = word.split_once('=') else { bail!("`{word}` is not name=value") };
        fields.insert(name, value);
    }
    let field = |name: &str| fields.get(name).copied().with_context(|| format!("no `{name}=`"));
    let number = |name: &str| -> anyhow::Result<u64> {
        field(name)?.parse().with_context(|| format!("`{name}=` is not a number"))
    };
    let mut values = Vec::new();
    for entry in field("v")?.split(',').filter(|entry| !entry.is_empty()) {
        let (value, count) = entry.split_once('*').unwrap_or((entry, "1"));
        let value: u64 = value.parse().with_context(|| format!("bad sample `{entry}`"))?;
        let count: usize = count.parse().with_context(|| format!("bad run length in `{entry}`"))?;
        values.extend(std::iter::repeat_n(value, count));
    }
    Ok(((number("id")?, field("m")?.to_string()), number("i")?, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn sample_lines_expand_runs() {
        let (key, first, values) = parse_samples("id=3 m=call i=16 v=649*3,650,7*2").unwrap();
        assert_eq!((key, first), ((3, "call".to_string()), 16));
        assert_eq!(values, [649, 649, 649, 650, 7, 7]);
        assert!(parse_samples("id=3 m=call i=0 v=1,x").is_err());
        assert!(parse_samples("id=3 i=0 v=1").unwrap_err().to_string().contains("`m=`"));
    }

    #[test]
    fn console_collects_cases_and_samples_in_order() {
        let console = lines(
            "[cpu0] booting\n\
             BENCH {\"kind\":\"machine\",\"cpus\":2,\"sockets\":1,\"tsc_hz\":1000,\"samples\":3,\"warmup\":1,\"rounds\":9}\n\
             BENCHS id=1 m=call i=0 v=5*2\n\
             BENCHS id=1 m=call i=2 v=6\n\
             bench: progress\n\
             BENCH {\"kind\":\"latency\",\"id\":1,\"case\":\"same_core_cross_as\",\"words\":0,\"client_cpu\":0,\"server_cpu\":0,\"overhead\":1,\"samples\":3}\n\
             BENCH {\"kind\":\"unsupported\",\"case\":\"notification\",\"why\":\"none\"}\n\
             BENCH {\"kind\":\"end\"}",
        );
        let parsed = parse_console(&console).unwrap();
        assert_eq!(parsed.samples[&(1, "call".to_string())], [5, 5, 6]);
        assert_eq!(parsed.lines.len(), 4);
        assert!(parsed.finished());
        assert!(
            matches!(&parsed.lines[1], BenchLine::Latency { case, overhead: 1, .. } if case == "same_core_cross_as")
        );
    }

    #[test]
    fn a_gap_in_the_samples_is_an_error() {
        let console = lines("BENCHS id=1 m=rr i=0 v=5\nBENCHS id=1 m=rr i=2 v=5");
        let error = format!("{:#}", parse_console(&console).unwrap_err());
        assert!(error.contains("samples start at index 2, expected 1"), "{error}");
        assert!(parse_console(&lines("BENCH {\"kind\":\"machine\"}")).is_err());
    }

    #[test]
    fn reads_whether_pcids_are_in_use() {
        let line =
            "[cpu0] protections: nx true wp true smep true smap true (pcid available true, in use false)";
        assert_eq!(parse_pcid(line), Some((true, false)));
        assert_eq!(parse_console(&lines(line)).expect("console").pcid, Some((true, false)));
        assert_eq!(parse_pcid("[cpu0] protections: nx true (pcid available maybe, in use false)"), None);
        assert_eq!(parse_pcid("[cpu0] cpus online: 2"), None);
    }
}
