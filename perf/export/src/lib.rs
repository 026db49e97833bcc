//! Host side of RamenOS tracing: decode a trace dump and export it for people.
//!
//! [`decode::decode`] turns dump bytes into a [`decode::Trace`], rejecting anything
//! truncated or corrupted with a [`decode::DecodeError`]. [`timeline::Timeline`]
//! places the records on one time line as properly nested spans, instants, counters
//! and cross-core flows; the exporters draw from it: Chrome trace-event JSON for
//! Perfetto ([`chrome`]), FXT with raw ticks ([`fxt`]), a text summary ([`summary`])
//! and an SVG picture ([`svg`]).
//! [`export_dir`] does all of it at once, which is what `cargo xtask trace` calls.
#![forbid(unsafe_code)]

pub mod chrome;
pub mod decode;
pub mod fxt;
pub mod summary;
pub mod svg;
pub mod synthetic;
pub mod timeline;

use std::path::{Path, PathBuf};

pub use decode::{DecodeError, Trace, decode, extract_dump};
pub use timeline::Timeline;

/// File names [`export_dir`] writes.
pub const CHROME_JSON_FILE: &str = "trace.json";
pub const SUMMARY_FILE: &str = "summary.txt";
pub const SVG_FILE: &str = "timeline.svg";
pub const FXT_FILE: &str = "trace.fxt";

/// What [`export_dir`] should produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Length of the "slowest spans" list.
    pub top_n: usize,
    /// What the SVG shows.
    pub svg: svg::SvgOptions,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { top_n: summary::DEFAULT_TOP_N, svg: svg::SvgOptions::default() }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot decode trace dump: {0}")]
    Decode(#[from] DecodeError),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Paths of the files written by [`export_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub chrome_json: PathBuf,
    pub summary: PathBuf,
    pub svg: PathBuf,
    pub fxt: PathBuf,
    /// The summary text, for printing.
    pub summary_text: String,
}

/// Decodes `dump` and writes `trace.json`, `trace.fxt`, `summary.txt` and `timeline.svg` into
/// `out_dir` (created if missing).
pub fn export_dir(dump: &[u8], out_dir: &Path, options: &ExportOptions) -> Result<Exported, ExportError> {
    let trace = decode(dump)?;
    export_trace(&trace, out_dir, options)
}

/// Like [`export_dir`] for an already decoded trace.
pub fn export_trace(trace: &Trace, out_dir: &Path, options: &ExportOptions) -> Result<Exported, ExportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let timeline = Timeline::build(trace);
    let summary_text = summary::summarize(trace, &timeline, options.top_n).to_string();
    let files = Exported {
        chrome_json: out_dir.join(CHROME_JSON_FILE),
        summary: out_dir.join(SUMMARY_FILE),
        svg: out_dir.join(SVG_FILE),
        fxt: out_dir.join(FXT_FILE),
        summary_text,
    };
    let json = chrome::to_chrome_json(trace, &timeline);
    std::fs::write(&files.chrome_json, json).map_err(io(&files.chrome_json))?;
    std::fs::write(&files.summary, &files.summary_text).map_err(io(&files.summary))?;
    let picture = svg::render_svg(trace, &timeline, &options.svg);
    std::fs::write(&files.svg, picture).map_err(io(&files.svg))?;
    let fxt = fxt::to_fxt(trace, &timeline);
    std::fs::write(&files.fxt, fxt).map_err(io(&files.fxt))?;
    Ok(files)
}
