//! `ringcache top`: a live view of the whole cluster — every peer's state, keys, memory,
//! request rate and p99 latency, and the cluster's hottest keys — refreshed in place.
//!
//! Why: `ringcache cluster` and `GET /v1/stats` are snapshots of counters; an operator chasing
//! a hot spot wants rates (which peer is busy *now*) and the keys behind them, side by side.
//!
//! How: a [`Snapshot`] asks any answering peer for the member list (`GET /v1/cluster`) and the
//! cluster's hot keys (`GET /v1/hotkeys?scope=cluster`), then every live member, side by side,
//! for its `GET /v1/stats` and `GET /metrics`. A [`Frame`] is the difference of two snapshots:
//! ops/s is the change in the client requests a peer coordinated (reads that hit or missed,
//! writes received: HTTP and RESP alike) over the time between them, and p99 is read off the
//! change of the `ringcache_request_duration_seconds` histogram over all operations and levels
//! (HTTP requests only; interpolated within a bucket, as Prometheus's `histogram_quantile`).
//!
//! Promises: a frame never waits on a silent peer longer than the client's timeout (the peer
//! shows `unreachable`); members gossip sees down are shown `down` without being asked; a
//! figure that cannot be known (a peer that restarted between samples, no requests) shows `-`
//! rather than a wrong number. Rendering is a pure function of two snapshots, so it is tested
//! without a cluster.

// A client is outside the deterministic core: it reads the clock to time its samples.
#![allow(clippy::disallowed_methods)]

use crate::api::http::HotKey;
use crate::client::cluster_table::human_bytes;
use crate::client::http_client::{Client, ClientError};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How many hot keys a frame shows.
pub const HOT_KEYS_SHOWN: usize = 10;

/// The latency histogram `GET /metrics` serves.
const LATENCY_METRIC: &str = "ringcache_request_duration_seconds_bucket";

#[derive(Debug, Error)]
pub enum TopError {
    /// None of the peers named could give the member list.
    #[error("no peer answered (tried {tried}): {last}")]
    NoPeerAnswers { tried: String, last: ClientError },
}

/// A peer's liveness as a frame shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    Up,
    Leaving,
    /// Gossip sees it down: not asked.
    Down,
    /// Gossip sees it up, but it did not answer.
    Unreachable,
}

impl PeerState {
    fn label(self) -> &'static str {
        match self {
            PeerState::Up => "up",
            PeerState::Leaving => "leaving",
            PeerState::Down => "down",
            PeerState::Unreachable => "unreachable",
        }
    }
}

/// Cumulative request counts by latency bound (nanoseconds; `u64::MAX` is `+Inf`), summed over
/// every operation and consistency level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyBuckets(BTreeMap<u64, u64>);

impl LatencyBuckets {
    /// Reads the request-duration histogram out of a `GET /metrics` body.
    pub fn parse(metrics: &str) -> LatencyBuckets {
        let mut buckets = BTreeMap::new();
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix(LATENCY_METRIC) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Some(bound) = label(labels, "le").and_then(parse_bound) else {
                continue;
            };
            let Ok(count) = value.trim().parse::<f64>() else {
                continue;
            };
            *buckets.entry(bound).or_insert(0) += count as u64;
        }
        LatencyBuckets(buckets)
    }

    /// The `q` quantile of the requests counted between `earlier` and `self`; `None` without
    /// requests, or when a count went down (the peer restarted).
    pub fn quantile_since(&self, earlier: &LatencyBuckets, q: f64) -> Option<Duration> {
        let mut deltas = Vec::with_capacity(self.0.len());
        for (bound, count) in &self.0 {
            let before = earlier.0.get(bound).copied().unwrap_or(0);
            deltas.push((*bound, count.checked_sub(before)?));
        }
        let total = deltas.last().map(|(_, c)| *c).filter(|c| *c > 0)?;
        let rank = q * total as f64;
        let (mut lower, mut below) = (0u64, 0u64);
        for (bound, cumulative) in deltas {
            if cumulative as f64 >= rank {
                if bound == u64::MAX {
                    // Past the last finite bound: all that can be said is "at least".
                    return Some(Duration::from_nanos(lower));
                }
                let within = cumulative.saturating_sub(below).max(1) as f64;
                let share = (rank - below as f64) / within;
                let nanos = lower as f64 + (bound - lower) as f64 * share.clamp(0.0, 1.0);
                return Some(Duration::from_nanos(nanos as u64));
            }
            (lower, below) = (bound, cumulative);
        }
        None
    }
}

/// The value of label `name` in `{a="x",b="y"}`.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let inner = labels.trim().strip_prefix('{')?.strip_suffix('}')?;
    inner.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// A bucket bound in seconds (`5e-5`, `0.1`, `+Inf`) as nanoseconds.
fn parse_bound(le: &str) -> Option<u64> {
    if le == "+Inf" {
        return Some(u64::MAX);
    }
    let secs: f64 = le.parse().ok()?;
    Some((secs * 1e9).round() as u64)
}

/// What one peer reported at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSample {
    pub id: String,
    pub state: PeerState,
    pub keys: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    /// `Some(None)`: the store has no limit.
    pub memory_limit_bytes: Option<Option<u64>>,
    /// Client requests this peer coordinated since it started (reads that hit or missed,
    /// writes received).
    pub requests: Option<u64>,
    pub latency: Option<LatencyBuckets>,
}

impl PeerSample {
    fn unknown(id: String, state: PeerState) -> PeerSample {
        PeerSample {
            id,
            state,
            keys: None,
            memory_used_bytes: None,
            memory_limit_bytes: None,
            requests: None,
            latency: None,
        }
    }
}

/// The whole cluster at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The peer that gave the member list.
    pub via: String,
    pub peers: Vec<PeerSample>,
    /// The cluster's hottest keys, hottest first; `None` when the endpoint failed.
    pub hot_keys: Option<Vec<HotKey>>,
    pub taken: Instant,
}

impl Snapshot {
    /// Samples the cluster through the first of `seeds` that gives its member list.
    pub async fn take(seeds: &[Client]) -> Result<Snapshot, TopError> {
        let mut last = None;
        for seed in seeds {
            match seed.cluster().await {
                Ok(view) => return Ok(Self::take_via(seed, &view).await),
                Err(e) => last = Some(e),
            }
        }
        Err(TopError::NoPeerAnswers {
            tried: seeds
                .iter()
                .map(|s| s.base().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            last: last.unwrap_or_else(|| ClientError::Protocol("no peer to ask".into())),
        })
    }

    async fn take_via(seed: &Client, view: &serde_json::Value) -> Snapshot {
        let members = view["members"]["members"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let scheme = seed
            .base()
            .split("://")
            .next()
            .unwrap_or("http")
            .to_string();
        let asks = members.into_iter().map(|(id, info)| {
            let scheme = scheme.clone();
            async move {
                let up = info["up"].as_bool() == Some(true);
                let leaving = info["leaving"].as_bool() == Some(true);
                let state = match (up, leaving) {
                    (false, _) => PeerState::Down,
                    (true, true) => PeerState::Leaving,
                    (true, false) => PeerState::Up,
                };
                let Some(addr) = info["http_addr"].as_str().filter(|_| up) else {
                    return PeerSample::unknown(id, state);
                };
                let peer = seed.for_peer(&format!("{scheme}://{addr}"));
                let (stats, metrics) = tokio::join!(peer.stats(false), peer.metrics_text());
                let Ok(stats) = stats else {
                    return PeerSample::unknown(id, PeerState::Unreachable);
                };
                let s = &stats.stats;
                PeerSample {
                    id,
                    state,
                    keys: Some(s.keys),
                    memory_used_bytes: Some(s.memory_used_bytes),
                    memory_limit_bytes: Some(s.memory_limit_bytes),
                    requests: Some(s.hits + s.misses + s.client_writes),
                    latency: metrics.ok().map(|m| LatencyBuckets::parse(&m)),
                }
            }
        });
        let (peers, hot) = tokio::join!(
            futures_util::future::join_all(asks),
            seed.hot_keys(true, HOT_KEYS_SHOWN)
        );
        Snapshot {
            via: seed.base().to_string(),
            peers,
            hot_keys: hot.ok().map(|body| body.keys),
            taken: Instant::now(),
        }
    }
}

/// One peer's line of a frame.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRow {
    pub id: String,
    pub state: PeerState,
    pub keys: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_limit_bytes: Option<Option<u64>>,
    pub ops_per_sec: Option<f64>,
    pub p99: Option<Duration>,
}

/// What the screen shows: the change between two snapshots.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub via: String,
    /// Seconds between the two snapshots.
    pub over_secs: f64,
    pub peers: Vec<PeerRow>,
    pub hot_keys: Option<Vec<HotKey>>,
}

impl Frame {
    /// The frame from `earlier` to `later` (figures of `later`, rates over the time between).
    pub fn between(earlier: &Snapshot, later: &Snapshot) -> Frame {
        let secs = later
            .taken
            .saturating_duration_since(earlier.taken)
            .as_secs_f64();
        let peers = later
            .peers
            .iter()
            .map(|now| {
                let before = earlier.peers.iter().find(|p| p.id == now.id);
                let ops_per_sec = match (before.and_then(|b| b.requests), now.requests) {
                    (Some(b), Some(n)) if n >= b && secs > 0.0 => Some((n - b) as f64 / secs),
                    _ => None,
                };
                let p99 = match (before.and_then(|b| b.latency.as_ref()), &now.latency) {
                    (Some(b), Some(n)) => n.quantile_since(b, 0.99),
                    _ => None,
                };
                PeerRow {
                    id: now.id.clone(),
                    state: now.state,
                    keys: now.keys,
                    memory_used_bytes: now.memory_used_bytes,
                    memory_limit_bytes: now.memory_limit_bytes,
                    ops_per_sec,
                    p99,
                }
            })
            .collect();
        Frame {
            via: later.via.clone(),
            over_secs: secs,
            peers,
            hot_keys: later.hot_keys.clone(),
        }
    }

    /// The frame as plain text lines (no escape codes).
    pub fn render(&self) -> String {
        let up = self
            .peers
            .iter()
            .filter(|p| matches!(p.state, PeerState::Up | PeerState::Leaving))
            .count();
        let total_ops: f64 = self.peers.iter().filter_map(|p| p.ops_per_sec).sum();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ringcache top — via {} — {} peers, {up} up — {total_ops:.0} ops/s over {:.1} s",
            self.via,
            self.peers.len(),
            self.over_secs
        );
        let _ = writeln!(out);
        let dash = || "-".to_string();
        let header = ["peer", "state", "keys", "memory", "ops/s", "p99"];
        let cells: Vec<Vec<String>> = self
            .peers
            .iter()
            .map(|p| {
                let memory = match (p.memory_used_bytes, p.memory_limit_bytes) {
                    (Some(used), Some(Some(limit))) => {
                        format!("{} / {}", human_bytes(used), human_bytes(limit))
                    }
                    (Some(used), Some(None)) => format!("{} / none", human_bytes(used)),
                    (Some(used), None) => human_bytes(used),
                    (None, _) => dash(),
                };
                vec![
                    p.id.clone(),
                    p.state.label().to_string(),
                    p.keys.map_or_else(dash, |k| k.to_string()),
                    memory,
                    p.ops_per_sec.map_or_else(dash, |o| format!("{o:.0}")),
                    p.p99.map_or_else(dash, human_duration),
                ]
            })
            .collect();
        table(&mut out, &header, &cells);
        let _ = writeln!(out);
        match &self.hot_keys {
            None => {
                let _ = writeln!(out, "hot keys: unavailable");
            }
            Some(keys) if keys.is_empty() => {
                let _ = writeln!(out, "hot keys: none yet");
            }
            Some(keys) => {
                let _ = writeln!(out, "hot keys (cluster, last 1-2 min)");
                let cells: Vec<Vec<String>> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        vec![
                            (i + 1).to_string(),
                            shown_key(k),
                            k.reads.to_string(),
                            k.writes.to_string(),
                        ]
                    })
                    .collect();
                table(&mut out, &["#", "key", "reads", "writes"], &cells);
            }
        }
        out
    }
}

/// A hot key for a terminal: its text (cut to 40 characters), or its base64 when not UTF-8.
fn shown_key(k: &HotKey) -> String {
    let (text, cut) = match (&k.key, &k.key_base64) {
        (Some(text), _) => (text.clone(), k.truncated),
        (None, Some(b64)) => (format!("base64:{b64}"), k.truncated),
        (None, None) => (String::new(), false),
    };
    // Control characters would move the cursor: show them escaped.
    let text: String = text
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(39).collect::<String>())
    } else if cut {
        format!("{text}…")
    } else {
        text
    }
}

fn human_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1e6 {
        format!("{:.1} ms", micros / 1000.0)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// Writes `cells` under `header`, columns left-aligned to their widest cell.
fn table(out: &mut String, header: &[&str], cells: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |row: Vec<&str>| {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in cells {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `text` drawn over the previous frame: cursor home, each line cleared to its end, and the
/// rest of the screen cleared (no flicker, unlike clearing first).
pub fn in_place(text: &str) -> String {
    let mut out = String::from("\x1b[H");
    for line in text.lines() {
        out.push_str(line);
        out.push_str("\x1b[K\n");
    }
    out.push_str("\x1b[J");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS_BEFORE: &str = "\
# TYPE ringcache_request_duration_seconds histogram
ringcache_request_duration_seconds_sum{op=\"get\",consistency=\"one\"} 0.5
ringcache_request_duration_seconds_count{op=\"get\",consistency=\"one\"} 10
ringcache_request_duration_seconds_bucket{le=\"0.001\",op=\"get\",consistency=\"one\"} 10
ringcache_request_duration_seconds_bucket{le=\"0.002\",op=\"get\",consistency=\"one\"} 10
ringcache_request_duration_seconds_bucket{le=\"+Inf\",op=\"get\",consistency=\"one\"} 10
ringcache_requests_total{op=\"get\",consistency=\"one\",outcome=\"ok\"} 10
";

    fn later_metrics() -> String {
        // 100 more requests: 90 under 1 ms (two levels), 10 between 1 and 2 ms.
        "\
ringcache_request_duration_seconds_bucket{le=\"0.001\",op=\"get\",consistency=\"one\"} 60
ringcache_request_duration_seconds_bucket{le=\"0.002\",op=\"get\",consistency=\"one\"} 70
ringcache_request_duration_seconds_bucket{le=\"+Inf\",op=\"get\",consistency=\"one\"} 70
ringcache_request_duration_seconds_bucket{op=\"put\",consistency=\"quorum\",le=\"0.001\"} 40
ringcache_request_duration_seconds_bucket{op=\"put\",consistency=\"quorum\",le=\"0.002\"} 40
ringcache_request_duration_seconds_bucket{op=\"put\",consistency=\"quorum\",le=\"+Inf\"} 40
"
        .to_string()
    }

    #[test]
    fn p99_comes_from_the_change_of_the_histogram_summed_over_labels() {
        let before = LatencyBuckets::parse(METRICS_BEFORE);
        let after = LatencyBuckets::parse(&later_metrics());
        // 100 new requests: the 99th is the 9th of the 10 in (1 ms, 2 ms]: 1.9 ms.
        let p99 = after.quantile_since(&before, 0.99).unwrap();
        assert_eq!(p99, Duration::from_micros(1_900));
        let p50 = after.quantile_since(&before, 0.5).unwrap();
        assert!(p50 <= Duration::from_millis(1), "{p50:?}");
        // Nothing new: no figure; a count that went down (a restart): no figure.
        assert_eq!(after.quantile_since(&after, 0.99), None);
        assert_eq!(before.quantile_since(&after, 0.99), None);
    }

    #[test]
    fn a_quantile_past_the_last_bound_reports_that_bound() {
        let before = LatencyBuckets::default();
        let after = LatencyBuckets::parse(
            "ringcache_request_duration_seconds_bucket{le=\"0.001\"} 1\n\
             ringcache_request_duration_seconds_bucket{le=\"+Inf\"} 100\n",
        );
        assert_eq!(
            after.quantile_since(&before, 0.99),
            Some(Duration::from_millis(1))
        );
    }

    fn sample(id: &str, state: PeerState, requests: Option<u64>, metrics: &str) -> PeerSample {
        PeerSample {
            id: id.into(),
            state,
            keys: requests.map(|_| 42),
            memory_used_bytes: requests.map(|_| 3 * 1024 * 1024),
            memory_limit_bytes: requests.map(|_| Some(64 * 1024 * 1024)),
            requests,
            latency: requests.map(|_| LatencyBuckets::parse(metrics)),
        }
    }

    #[test]
    fn a_frame_shows_rates_states_and_hot_keys() {
        let start = Instant::now();
        let earlier = Snapshot {
            via: "http://127.0.0.1:7070".into(),
            peers: vec![
                sample("A", PeerState::Up, Some(10), METRICS_BEFORE),
                sample("B", PeerState::Up, Some(500), ""),
            ],
            hot_keys: Some(Vec::new()),
            taken: start,
        };
        let later = Snapshot {
            via: "http://127.0.0.1:7070".into(),
            peers: vec![
                sample("A", PeerState::Up, Some(110), &later_metrics()),
                sample("B", PeerState::Down, None, ""),
            ],
            hot_keys: Some(vec![HotKey {
                key: Some("user:\u{1b}[2J".into()),
                key_base64: None,
                truncated: false,
                reads: 90,
                writes: 10,
                error: 0,
            }]),
            taken: start + Duration::from_secs(2),
        };
        let frame = Frame::between(&earlier, &later);
        assert_eq!(frame.peers[0].ops_per_sec, Some(50.0));
        assert_eq!(frame.peers[1].ops_per_sec, None);
        let text = frame.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("2 peers, 1 up"), "{text}");
        assert!(lines[0].contains("50 ops/s"), "{text}");
        let a = lines.iter().find(|l| l.starts_with("A ")).unwrap();
        assert!(a.contains("3.0 MiB / 64.0 MiB"), "{a}");
        assert!(a.contains(" 50 ") && a.contains("1.9 ms"), "{a}");
        let b = lines.iter().find(|l| l.starts_with("B ")).unwrap();
        assert!(b.contains("down"), "{b}");
        // A key's control characters are escaped, never sent to the terminal.
        assert!(text.contains("user:\\u{1b}[2J"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        // Redrawn in place: home, lines cleared to their end, the rest cleared.
        let drawn = in_place(&text);
        assert!(drawn.starts_with("\x1b[H") && drawn.ends_with("\x1b[J"));
    }
}
