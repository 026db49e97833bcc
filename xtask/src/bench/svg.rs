//! Hand-written SVG plots for `--plots`: a latency histogram per case and the scaling
//! curve. Plain text output, no plotting dependency.

use std::fmt::Write as _;

use ramen_perf_export::svg::escape;

use super::report::{LatencyResult, ScalingResult};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 50.0;
/// Bars of a histogram (fewer when the samples span fewer values).
const BINS: u64 = 40;

fn open(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{MARGIN}" y="20" font-size="14">{}</text>"#, escape(title));
    let (left, bottom, right) = (MARGIN, HEIGHT - MARGIN, WIDTH - MARGIN / 2.0);
    let _ = writeln!(
        out,
        r#"<path d="M{left} {top} V{bottom} H{right}" stroke="black" fill="none"/>"#,
        top = MARGIN / 1.5
    );
}

fn label(out: &mut String, x: f64, y: f64, anchor: &str, text: &str) {
    let _ = writeln!(out, r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}">{}</text>"#, escape(text));
}

/// A histogram of one case's Call + ReplyRecv samples, in `unit`.
pub fn histogram(result: &LatencyResult, unit: &str) -> String {
    let mut out = String::new();
    let title =
        format!("{} ({} words): Call + ReplyRecv, {} samples", result.case, result.words, result.sums.len());
    open(&mut out, &title);
    // Up to p99: a few far outliers (interrupts, the host) would squash every bar into
    // one; the last bar also counts everything above it.
    let (low, high) = (result.call_plus_reply_recv.min, result.call_plus_reply_recv.p99);
    let bin_width = (high - low) / BINS + 1;
    let bins = (high - low) / bin_width + 1;
    let mut counts = vec![0u64; bins as usize];
    for value in &result.sums {
        let bin = ((value.min(&high) - low) / bin_width) as usize;
        counts[bin] += 1;
    }
    let tallest = counts.iter().copied().max().unwrap_or(1).max(1);
    let plot_width = WIDTH - 1.5 * MARGIN;
    let plot_height = HEIGHT - 2.0 * MARGIN;
    let bar_width = plot_width / bins as f64;
    for (i, count) in counts.iter().enumerate() {
        let height = plot_height * *count as f64 / tallest as f64;
        let x = MARGIN + i as f64 * bar_width;
        let y = HEIGHT - MARGIN - height;
        let _ = writeln!(
            out,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{height:.1}" fill="#4e79a7"><title>{} {unit}: {count}</title></rect>"##,
            (bar_width - 1.0).max(1.0),
            low + i as u64 * bin_width
        );
    }
    label(&mut out, MARGIN, HEIGHT - MARGIN + 16.0, "start", &low.to_string());
    let overflow = if result.call_plus_reply_recv.max > high { " (p99; last bar: and above)" } else { "" };
    label(&mut out, WIDTH - MARGIN / 2.0, HEIGHT - MARGIN + 16.0, "end", &format!("{high}{overflow}"));
    label(&mut out, WIDTH / 2.0, HEIGHT - 12.0, "middle", unit);
    label(&mut out, MARGIN - 6.0, MARGIN / 1.5 + 10.0, "end", &tallest.to_string());
    out.push_str("</svg>\n");
    out
}

/// Round trips per million ticks against pairs, with the ideal (N x one pair) dashed.
pub fn scaling_curve(results: &[ScalingResult], unit: &str) -> String {
    let mut out = String::new();
    open(&mut out, &format!("scaling: round trips per million {unit}, one pair per CPU"));
    let max_pairs = results.iter().map(|r| r.pairs).max().unwrap_or(1).max(2);
    let one = results.first().map_or(1.0, |r| r.round_trips_per_million_ticks);
    let top =
        results.iter().map(|r| r.round_trips_per_million_ticks).fold(one * f64::from(max_pairs), f64::max);
    let x = |pairs: f64| MARGIN + (pairs - 1.0) / f64::from(max_pairs - 1) * (WIDTH - 2.0 * MARGIN);
    let y = |rate: f64| HEIGHT - MARGIN - rate / top.max(1e-9) * (HEIGHT - 2.0 * MARGIN);
    let ideal = format!(
        "M{:.1} {:.1} L{:.1} {:.1}",
        x(1.0),
        y(one),
        x(f64::from(max_pairs)),
        y(one * f64::from(max_pairs))
    );
    let _ = writeln!(out, r##"<path d="{ideal}" stroke="#999" stroke-dasharray="4 4" fill="none"/>"##);
    let points: Vec<String> = results
        .iter()
        .map(|r| format!("{:.1},{:.1}", x(f64::from(r.pairs)), y(r.round_trips_per_million_ticks)))
        .collect();
    let _ = writeln!(
        out,
        r##"<polyline points="{}" stroke="#e15759" stroke-width="2" fill="none"/>"##,
        points.join(" ")
    );
    for r in results {
        let (px, py) = (x(f64::from(r.pairs)), y(r.round_trips_per_million_ticks));
        let _ = writeln!(out, r##"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="#e15759"/>"##);
        label(&mut out, px, HEIGHT - MARGIN + 16.0, "middle", &r.pairs.to_string());
        label(
            &mut out,
            px + 4.0,
            py - 6.0,
            "start",
            &format!("{:.0} ({:.0}%)", r.round_trips_per_million_ticks, r.efficiency * 100.0),
        );
    }
    label(&mut out, WIDTH / 2.0, HEIGHT - 12.0, "middle", "pairs (CPUs); dashed: N x one pair");
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::sample_report;
    use crate::qemu::Accel;

    fn well_formed(svg: &str) -> roxmltree::Document<'_> {
        let document = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(document.root_element().tag_name().name(), "svg");
        document
    }

    #[test]
    fn histogram_is_well_formed_and_counts_every_sample() {
        let report = sample_report(Accel::TcgIcount);
        for result in &report.latency {
            let svg = histogram(result, "instructions");
            let document = well_formed(&svg);
            let bars: u64 = document
                .descendants()
                .filter(|n| n.has_tag_name("title"))
                .filter_map(|n| n.text()?.rsplit(": ").next()?.parse::<u64>().ok())
                .sum();
            assert_eq!(bars, result.sums.len() as u64);
        }
    }

    #[test]
    fn outliers_land_in_the_last_bar() {
        let mut result = sample_report(Accel::Tcg).latency[0].clone();
        result.sums = (1..=200).chain([1_000_000]).collect();
        result.call_plus_reply_recv = crate::bench::stats::Summary::of(&result.sums).unwrap();
        let svg = histogram(&result, "ticks");
        let document = well_formed(&svg);
        let titles: Vec<&str> =
            document.descendants().filter(|n| n.has_tag_name("title")).filter_map(|n| n.text()).collect();
        assert!(titles.len() <= 41, "{}", titles.len());
        assert!(svg.contains("and above"), "{svg}");
    }

    #[test]
    fn scaling_curve_is_well_formed() {
        let report = sample_report(Accel::Tcg);
        let svg = scaling_curve(&report.scaling, "ticks");
        let document = well_formed(&svg);
        assert_eq!(document.descendants().filter(|n| n.has_tag_name("circle")).count(), 2);
        well_formed(&scaling_curve(&[], "ticks"));
    }
}
