//! A self-contained SVG timeline for a quick look without a trace viewer.
//!
//! One lane per core (then one per user thread), spans as boxes stacked by depth,
//! IPC and IPI arrows between lanes, and a time axis in microseconds.

use std::fmt::Write as _;

use crate::decode::Trace;
use crate::timeline::{Timeline, TrackId, ticks_to_ns};

/// Default drawing width in pixels.
pub const DEFAULT_WIDTH_PX: u32 = 1600;

const LABEL_PX: f64 = 140.0;
const AXIS_PX: f64 = 36.0;
const ROW_PX: f64 = 16.0;
const LANE_GAP_PX: f64 = 10.0;
const RIGHT_PAD_PX: f64 = 20.0;
const AXIS_TICKS: u64 = 8;
/// Rough width of one label character, to decide whether a name fits in a box.
const CHAR_PX: f64 = 6.5;

/// What to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvgOptions {
    /// Nanosecond window `[start, end)` from the start of the trace; `None` for all.
    pub window_ns: Option<(u64, u64)>,
    /// Total width in pixels.
    pub width_px: u32,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions { window_ns: None, width_px: DEFAULT_WIDTH_PX }
    }
}

fn color(category: &str) -> &'static str {
    match category {
        "sched" => "#d9d9d9",
        "syscall" => "#8ecae6",
        "irq" => "#f4a261",
        "ipi" => "#e9c46a",
        "fault" => "#e76f51",
        "user" => "#90be6d",
        _ => "#b8b8ff",
    }
}

/// Escapes text for an XML text node or attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

struct Lane {
    track: TrackId,
    label: String,
    top: f64,
    rows: usize,
}

/// Renders the timeline (or a window of it) as an SVG document.
pub fn render_svg(trace: &Trace, timeline: &Timeline, options: &SvgOptions) -> String {
    let ns = |ticks: u64| ticks_to_ns(ticks, trace.tsc_hz);
    let (start_ns, end_ns) = options.window_ns.unwrap_or((0, ns(timeline.end)));
    // A reversed window shows nothing rather than failing.
    let end_ns = end_ns.max(start_ns);
    let span_ns = end_ns.saturating_sub(start_ns).max(1) as f64;
    let width = f64::from(options.width_px.max(400));
    let plot_px = width - LABEL_PX - RIGHT_PAD_PX;
    let x = |t_ns: u64| LABEL_PX + (t_ns.clamp(start_ns, end_ns) - start_ns) as f64 / span_ns * plot_px;
    let visible = |a: u64, b: u64| b >= start_ns && a <= end_ns;

    let mut tracks: Vec<(TrackId, String)> =
        (0..trace.cpu_count()).map(|cpu| (TrackId::Core(cpu), format!("cpu {cpu}"))).collect();
    for thread in &timeline.thread_tracks {
        tracks.push((TrackId::Thread(*thread), trace.thread_name(*thread)));
    }
    let mut lanes = Vec::new();
    let mut top = AXIS_PX;
    for (track, label) in tracks {
        let rows = timeline.spans.iter().filter(|s| s.track == track).map(|s| s.depth + 1).max().unwrap_or(1);
        lanes.push(Lane { track, label, top, rows });
        top += rows as f64 * ROW_PX + LANE_GAP_PX;
    }
    let height = top + ROW_PX;
    let lane = |track: TrackId| lanes.iter().find(|lane| lane.track == track);

    let mut svg = String::new();
    // Writing to a String cannot fail; the results are ignored below for that reason.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="10">"#
    );
    let _ = writeln!(
        svg,
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#c1121f"/></marker></defs>"##
    );
    let _ = writeln!(
        svg,
        r#"<rect class="background" x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );

    // Time axis.
    let _ = writeln!(svg, r#"<g class="axis">"#);
    for i in 0..=AXIS_TICKS {
        let step = u128::from(end_ns - start_ns) * u128::from(i) / u128::from(AXIS_TICKS);
        // At most end_ns - start_ns, so it fits.
        let t = start_ns + step as u64;
        let tx = x(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{height:.1}" stroke="#eeeeee"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{:.3} us</text>"##,
            AXIS_PX - 6.0,
            AXIS_PX - 10.0,
            t as f64 / 1000.0
        );
    }
    let _ = writeln!(svg, "</g>");

    for lane in &lanes {
        let lane_px = lane.rows as f64 * ROW_PX;
        let _ = writeln!(svg, r#"<g class="lane" data-track="{}">"#, escape(&lane.label));
        let _ = writeln!(
            svg,
            r##"<rect x="0" y="{:.1}" width="{width}" height="{lane_px:.1}" fill="#fafafa" stroke="#dddddd"/><text x="6" y="{:.1}">{}</text>"##,
            lane.top,
            lane.top + ROW_PX * 0.75,
            escape(&lane.label)
        );
        for span in timeline.spans.iter().filter(|s| s.track == lane.track) {
            let (a, b) = (ns(span.start), ns(span.end));
            if !visible(a, b) {
                continue;
            }
            let (x0, x1) = (x(a), x(b));
            let w = (x1 - x0).max(1.0);
            // Deeper spans sit higher so the running thread is the lane's floor.
            let y = lane.top + lane_px - (span.depth + 1) as f64 * ROW_PX;
            let name = escape(&span.name);
            let _ = write!(
                svg,
                r##"<g class="span"><title>{name} ({} ns)</title><rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}" stroke="#555555" stroke-width="0.3"/>"##,
                b - a,
                y + 1.0,
                ROW_PX - 2.0,
                color(span.category)
            );
            let fits = (w / CHAR_PX) as usize;
            if fits >= 3 {
                let shown: String = span.name.chars().take(fits).collect();
                let _ = write!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                    x0 + 2.0,
                    y + ROW_PX * 0.75,
                    escape(&shown)
                );
            }
            let _ = writeln!(svg, "</g>");
        }
        let _ = writeln!(svg, "</g>");
    }

    let _ = writeln!(svg, r#"<g class="flows">"#);
    for flow in &timeline.flows {
        let (a, b) = (ns(flow.from_ts), ns(flow.to_ts));
        let (Some(from), Some(to)) = (lane(flow.from), lane(flow.to)) else {
            continue;
        };
        if !visible(a.min(b), a.max(b)) {
            continue;
        }
        let mid = |lane: &Lane| lane.top + lane.rows as f64 * ROW_PX / 2.0;
        // IPC arrows solid, IPI arrows dashed: the wake-up next to the message.
        let dash =
            if flow.category == "ipc" { "" } else { r#" stroke-dasharray="3 2" stroke-opacity="0.6""# };
        let _ = writeln!(
            svg,
            r##"<line class="arrow" data-category="{}" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c1121f" stroke-width="1.2"{dash} marker-end="url(#arrow)"><title>{} #{} ({} ns)</title></line>"##,
            flow.category,
            x(a),
            mid(from),
            x(b),
            mid(to),
            flow.name,
            flow.id,
            b.saturating_sub(a)
        );
    }
    let _ = writeln!(svg, "</g>");
    svg.push_str("</svg>\n");
    svg
}
