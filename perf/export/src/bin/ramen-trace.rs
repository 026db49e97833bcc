//! `ramen-trace`: decode a RamenOS trace dump and export it.
//!
//! ```text
//! ramen-trace decode DUMP --out DIR [--top N] [--window START_NS END_NS]
//! ramen-trace demo --out DIR [--smp N] [--round-trips N]
//! ```
//! `decode` writes trace.json, trace.fxt, summary.txt and timeline.svg into DIR; DUMP
//! may also be a raw capture (a serial log) with the dump somewhere inside. `demo`
//! does the same for a synthetic IPC ping-pong trace (and saves its dump as
//! trace.bin), to try the viewers before the kernel records real events.

use std::path::PathBuf;
use std::process::ExitCode;

use ramen_perf_export::{ExportOptions, export_dir, export_trace, extract_dump, synthetic};

const USAGE: &str = "usage:
  ramen-trace decode DUMP --out DIR [--top N] [--window START_NS END_NS]
  ramen-trace demo --out DIR [--smp N] [--round-trips N]";

/// Name of the dump file `demo` writes next to the exports.
const DEMO_DUMP_FILE: &str = "trace.bin";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("ramen-trace: {message}");
            ExitCode::FAILURE
        }
    }
}

fn number(value: Option<&String>, flag: &str) -> Result<u64, String> {
    let value = value.ok_or(format!("{flag} needs a value\n{USAGE}"))?;
    value.parse().map_err(|_| format!("{flag}: `{value}` is not a number"))
}

fn run(args: Vec<String>) -> Result<String, String> {
    let command = args.first().ok_or(USAGE)?.as_str();
    let mut out: Option<PathBuf> = None;
    let mut input: Option<PathBuf> = None;
    let mut options = ExportOptions::default();
    let mut smp = 2;
    let mut round_trips = 20;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--out" => out = Some(rest.next().ok_or("--out needs a directory")?.into()),
            "--top" => {
                options.top_n = usize::try_from(number(rest.next(), "--top")?).map_err(|e| e.to_string())?
            }
            "--window" => {
                let start = number(rest.next(), "--window")?;
                let end = number(rest.next(), "--window")?;
                if end <= start {
                    return Err("--window END_NS must be after START_NS".into());
                }
                options.svg.window_ns = Some((start, end));
            }
            "--smp" => smp = u16::try_from(number(rest.next(), "--smp")?).map_err(|e| e.to_string())?,
            "--round-trips" => round_trips = number(rest.next(), "--round-trips")?,
            "-h" | "--help" => return Ok(format!("{USAGE}\n")),
            other if input.is_none() && !other.starts_with('-') => input = Some(other.into()),
            other => return Err(format!("unexpected argument `{other}`\n{USAGE}")),
        }
    }
    let out = out.ok_or(format!("--out DIR is required\n{USAGE}"))?;
    let exported = match command {
        "decode" => {
            let input = input.ok_or(format!("decode needs a dump file\n{USAGE}"))?;
            let capture =
                std::fs::read(&input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
            let dump = extract_dump(&capture).map_err(|e| format!("{}: {e}", input.display()))?;
            export_dir(dump, &out, &options).map_err(|e| format!("{}: {e}", input.display()))?
        }
        "demo" => {
            let trace = synthetic::ipc_pingpong(smp, round_trips);
            let exported = export_trace(&trace, &out, &options).map_err(|e| e.to_string())?;
            let dump = ramen_perf_export::decode::encode(&trace).map_err(|e| format!("{e:?}"))?;
            let path = out.join(DEMO_DUMP_FILE);
            std::fs::write(&path, dump).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            exported
        }
        other => return Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    Ok(format!(
        "{}\nwrote {}, {}, {}, {}\n",
        exported.summary_text,
        exported.chrome_json.display(),
        exported.fxt.display(),
        exported.summary.display(),
        exported.svg.display()
    ))
}
