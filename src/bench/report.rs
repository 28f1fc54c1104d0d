//! [`Report`]: what a bench run measured, as a table for people and as JSON for scripts — the
//! same figures in both.
//!
//! Promises:
//! - Latencies are in milliseconds, from HDR histograms kept to three significant digits, so a
//!   percentile is within 0.1% of the exact one.
//! - `ops_per_sec` counts requests answered without error whose measured start (closed loop)
//!   or due time (open loop) fell inside the measured window, divided by its length.
//! - Failed requests are not in the latency figures; they are counted by kind in `errors`.
//!   In open loop, requests that came due but were never sent because every connection was
//!   busy until the end are counted in `unsent`.

use crate::bench::options::{BenchError, TargetKind};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Percentiles of one kind of request, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencySummary {
    /// From a histogram of microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        // Microsecond precision: short numbers that read back exactly from JSON.
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean: h.mean().round() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Reads, writes and both together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    pub all: LatencySummary,
    pub read: LatencySummary,
    pub write: LatencySummary,
}

/// One run's settings and results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    pub url: String,
    /// `closed` or `open`.
    pub mode: String,
    pub connections: usize,
    /// The open loop's rate, ops/s.
    pub rate: Option<f64>,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub keys: u64,
    pub distribution: String,
    pub reads: f64,
    pub value_size: usize,
    pub r: Option<String>,
    pub w: Option<String>,
    pub wait: Option<u32>,
    pub seed: u64,
    /// Requests answered without error in the measured window.
    pub ops: u64,
    pub ops_per_sec: f64,
    /// Reads that found no value (not errors).
    pub misses: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// Open loop: requests due in the window but never sent (every connection was busy).
    pub unsent: u64,
    /// Closed loop: from send to answer. Open loop: from the moment the request was due.
    pub latency_ms: Latencies,
    /// Open loop only: from the moment the request was actually sent to its answer.
    pub service_ms: Option<Latencies>,
}

impl Report {
    pub fn target_name(kind: TargetKind) -> &'static str {
        match kind {
            TargetKind::Http => "http",
            TargetKind::Redis => "redis",
            TargetKind::Resp => "resp",
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn to_json(&self) -> Result<String, BenchError> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::Output(e.to_string()))
    }

    /// The human table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate} ops/s"),
            None => "closed loop".into(),
        };
        let _ = writeln!(
            out,
            "{} {}: {mode}, {} connections, {} s measured after {} s warm-up",
            self.target, self.url, self.connections, self.duration_secs, self.warmup_secs
        );
        let mut quorums = String::new();
        if let Some(r) = &self.r {
            let _ = write!(quorums, ", r={r}");
        }
        if let Some(w) = &self.w {
            let _ = write!(quorums, ", w={w}");
        }
        if let Some(k) = self.wait {
            let _ = write!(quorums, ", WAIT {k} after each write");
        }
        let _ = writeln!(
            out,
            "{} keys {}, {:.0}% reads, {}-byte values, seed {}{quorums}",
            self.keys,
            self.distribution,
            self.reads * 100.0,
            self.value_size,
            self.seed
        );
        let _ = writeln!(out);
        let heading = match self.rate {
            Some(_) => "latency from each request's due time (ms)",
            None => "latency (ms)",
        };
        table(&mut out, heading, &self.latency_ms, self.duration_secs);
        if let Some(service) = &self.service_ms {
            let _ = writeln!(out);
            table(
                &mut out,
                "service time, from actual send (ms)",
                service,
                self.duration_secs,
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "total: {} ops, {:.0} ops/s; {} read misses",
            self.ops, self.ops_per_sec, self.misses
        );
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, n)| format!("{kind}: {n}"))
                .collect();
            let _ = writeln!(out, "errors: {}", list.join(", "));
        }
        if self.unsent > 0 {
            let _ = writeln!(
                out,
                "unsent: {} requests came due but found every connection busy (the target fell \
                 behind the rate; add --connections or lower --rate)",
                self.unsent
            );
        }
        out
    }
}

fn table(out: &mut String, heading: &str, latencies: &Latencies, secs: f64) {
    let _ = writeln!(out, "{heading}");
    let _ = writeln!(
        out,
        "{:<6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "ops", "ops/s", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, s) in [
        ("read", &latencies.read),
        ("write", &latencies.write),
        ("all", &latencies.all),
    ] {
        if s.count == 0 && name != "all" {
            continue;
        }
        let _ = writeln!(
            out,
            "{name:<6} {:>10} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            s.count,
            s.count as f64 / secs,
            s.p50,
            s.p90,
            s.p99,
            s.p999,
            s.max
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_in_milliseconds_and_json_round_trips() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let s = LatencySummary::from_micros(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 5.0).abs() < 0.01, "{s:?}");
        assert!((s.p99 - 9.9).abs() < 0.02, "{s:?}");
        assert!((s.max - 10.0).abs() < 0.02, "{s:?}");
        let report = Report {
            target: "http".into(),
            url: "http://x".into(),
            mode: "closed".into(),
            connections: 1,
            rate: None,
            warmup_secs: 0.0,
            duration_secs: 1.0,
            keys: 1,
            distribution: "uniform".into(),
            reads: 0.5,
            value_size: 1,
            r: None,
            w: None,
            wait: None,
            seed: 1,
            ops: 1000,
            ops_per_sec: 1000.0,
            misses: 0,
            errors: BTreeMap::from([("timeout".to_string(), 2)]),
            unsent: 0,
            latency_ms: Latencies {
                all: s.clone(),
                read: s,
                write: LatencySummary::default(),
            },
            service_ms: None,
        };
        let back: Report = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(back, report);
        let table = report.to_table();
        assert!(table.contains("timeout: 2"), "{table}");
        assert!(
            !table.contains("write "),
            "no writes, no write row: {table}"
        );
    }
}
