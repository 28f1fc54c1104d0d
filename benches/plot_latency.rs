//! Draws the latency-against-throughput chart of `just bench-compare`: for each operation in
//! the sweep file benches/compare.sh wrote (open-loop `ringcache bench` runs at several rates),
//! p50 and p99 latency from due time against the ops/s actually achieved, as an SVG.
//!
//! Not a measurement (`harness = false`, nothing timed here): a bench target because it is
//! a tool of the benchmarks, built with `plotters` as a dev-dependency so that the peer binary
//! never carries it.
//!
//! Usage: `cargo bench --bench plot_latency -- SWEEP.tsv OUT.svg`, where SWEEP.tsv has a header
//! line, then `operation rate ops_per_sec p50_ms p99_ms` separated by tabs. Without arguments
//! it prints this usage and exits successfully, so `cargo bench` with no filter runs it harmlessly.

use plotters::prelude::*;
use std::collections::BTreeMap;
use std::error::Error;

/// One open-loop run: the rate asked for, what was achieved, and the two percentiles (ms).
struct Point {
    rate: f64,
    achieved: f64,
    p50: f64,
    p99: f64,
}

/// The sweep's runs, by operation, in the order of their rates.
fn read_sweep(text: &str) -> Result<BTreeMap<String, Vec<Point>>, Box<dyn Error>> {
    let mut by_op: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [op, rate, achieved, p50, p99] = fields[..] else {
            return Err(format!("line {}: expected 5 tab-separated fields", n + 1).into());
        };
        let number = |s: &str| -> Result<f64, Box<dyn Error>> {
            s.trim()
                .parse::<f64>()
                .map_err(|e| format!("line {}: {s:?}: {e}", n + 1).into())
        };
        by_op.entry(op.to_string()).or_default().push(Point {
            rate: number(rate)?,
            achieved: number(achieved)?,
            p50: number(p50)?,
            p99: number(p99)?,
        });
    }
    for points in by_op.values_mut() {
        points.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    }
    Ok(by_op)
}

fn plot(by_op: &BTreeMap<String, Vec<Point>>, out: &str) -> Result<(), Box<dyn Error>> {
    let points = || by_op.values().flatten();
    let x_max = points().map(|p| p.achieved.max(p.rate)).fold(1.0, f64::max) * 1.08;
    // A log scale: p50 is a fraction of a millisecond while an overloaded p99 runs to seconds.
    let latencies = || points().flat_map(|p| [p.p50, p.p99]).filter(|v| *v > 0.0);
    let y_min = latencies().fold(f64::INFINITY, f64::min).min(1.0) / 1.5;
    let y_max = latencies().fold(0.0, f64::max).max(1.0) * 1.5;

    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ringcache, 3 peers (N=3, HTTP): latency from due time against throughput",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("achieved ops/s (open loop)")
        .y_desc("latency, ms (log scale)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;

    let palette = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];
    for (i, (op, points)) in by_op.iter().enumerate() {
        let color = palette[i % palette.len()];
        for (name, width, pick) in [
            ("p50", 1, (|p: &Point| p.p50) as fn(&Point) -> f64),
            ("p99", 3, |p: &Point| p.p99),
        ] {
            let style = color.stroke_width(width);
            let series = points.iter().map(|p| (p.achieved, pick(p).max(y_min)));
            chart
                .draw_series(LineSeries::new(series, style).point_size(3))?
                .label(format!("{op} {name}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    // `cargo bench` passes `--bench` (and filters' flags) along: only plain arguments count.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [sweep, out] = &args[..] else {
        println!(
            "usage: cargo bench --bench plot_latency -- SWEEP.tsv OUT.svg (benches/compare.sh)"
        );
        return Ok(());
    };
    let by_op = read_sweep(&std::fs::read_to_string(sweep)?)?;
    if by_op.is_empty() {
        return Err(format!("{sweep}: no runs to plot").into());
    }
    plot(&by_op, out)?;
    println!("wrote {out}");
    Ok(())
}
