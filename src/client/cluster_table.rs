//! `ringcache cluster`: one table of every peer — liveness, keys, memory, data moving in and
//! out, hints and anti-entropy — gathered from each live peer's own `/v1/cluster` and
//! `/v1/stats`.
//!
//! Why: during a join, a leave or a recovery an operator wants to see the whole cluster at once:
//! which peers still hand partitions off, how many keys are left and when it should end, and
//! whether repair is busy. Each peer only knows its own progress, so the table asks them all.
//!
//! Promises: a peer that does not answer within the client's timeout is listed as unreachable,
//! never waited for; members gossip sees down are listed without being asked.

use crate::client::http_client::{Client, ClientError};
use serde_json::Value;
use std::fmt::Write;

/// One peer's row.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    pub id: String,
    /// `up`, `down`, `leaving` or `unreachable` (gossip says up, but it did not answer).
    pub state: String,
    pub keys: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    /// Partitions this peer is handing off, and the keys they still hold here.
    pub moving_out: Option<(u64, u64)>,
    pub handoff_eta_secs: Option<u64>,
    /// Partitions this peer gained and is still filling.
    pub moving_in: Option<u64>,
    pub hints_pending: Option<u64>,
    pub anti_entropy_exchanges: Option<u64>,
    pub anti_entropy_keys_repaired: Option<u64>,
}

/// Gathers every member's row, through `seed` (any peer) for the member list.
pub async fn gather(seed: &Client) -> Result<Vec<PeerRow>, ClientError> {
    let view = seed.cluster().await?;
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
            let mut row = PeerRow {
                id: id.clone(),
                state: if !up {
                    "down"
                } else if leaving {
                    "leaving"
                } else {
                    "up"
                }
                .into(),
                keys: None,
                memory_used_bytes: None,
                moving_out: None,
                handoff_eta_secs: None,
                moving_in: None,
                hints_pending: None,
                anti_entropy_exchanges: None,
                anti_entropy_keys_repaired: None,
            };
            let Some(addr) = info["http_addr"].as_str().filter(|_| up) else {
                return row;
            };
            let peer = seed.for_peer(&format!("{scheme}://{addr}"));
            match (peer.cluster().await, peer.stats(false).await) {
                (Ok(status), Ok(stats)) => fill(&mut row, &status, &stats.stats),
                _ => row.state = "unreachable".into(),
            }
            row
        }
    });
    Ok(futures_util::future::join_all(asks).await)
}

fn fill(row: &mut PeerRow, status: &Value, stats: &crate::core::node::NodeStats) {
    row.keys = Some(stats.keys);
    row.memory_used_bytes = Some(stats.memory_used_bytes);
    let handoff = status["handoff"].as_array().cloned().unwrap_or_default();
    let keys_left = handoff.iter().filter_map(|p| p["keys_left"].as_u64()).sum();
    row.moving_out = Some((handoff.len() as u64, keys_left));
    row.handoff_eta_secs = status["handoff_eta_secs"].as_u64();
    row.moving_in = status["partitions_moving_in"]
        .as_array()
        .map(|a| a.len() as u64);
    row.hints_pending = Some(stats.hints_pending);
    row.anti_entropy_exchanges = Some(stats.anti_entropy_exchanges);
    row.anti_entropy_keys_repaired = Some(stats.anti_entropy_keys_repaired);
}

/// The rows as an aligned text table.
pub fn render(rows: &[PeerRow]) -> String {
    let dash = || "-".to_string();
    let num = |v: Option<u64>| v.map_or_else(dash, |v| v.to_string());
    let header = [
        "peer",
        "state",
        "keys",
        "memory",
        "out (parts/keys)",
        "eta",
        "in (parts)",
        "hints",
        "ae rounds",
        "ae repaired",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.state.clone(),
                num(r.keys),
                r.memory_used_bytes.map_or_else(dash, human_bytes),
                r.moving_out.map_or_else(dash, |(p, k)| format!("{p}/{k}")),
                r.handoff_eta_secs.map_or_else(dash, |s| format!("{s}s")),
                num(r.moving_in),
                num(r.hints_pending),
                num(r.anti_entropy_exchanges),
                num(r.anti_entropy_keys_repaired),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, row: Vec<&str>| {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, header.to_vec());
    for row in &cells {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_marks_what_is_unknown() {
        let rows = vec![
            PeerRow {
                id: "peer-1".into(),
                state: "up".into(),
                keys: Some(30_000),
                memory_used_bytes: Some(5 * 1024 * 1024),
                moving_out: Some((3, 1200)),
                handoff_eta_secs: Some(4),
                moving_in: Some(0),
                hints_pending: Some(0),
                anti_entropy_exchanges: Some(12),
                anti_entropy_keys_repaired: Some(7),
            },
            PeerRow {
                id: "peer-2".into(),
                state: "down".into(),
                keys: None,
                memory_used_bytes: None,
                moving_out: None,
                handoff_eta_secs: None,
                moving_in: None,
                hints_pending: None,
                anti_entropy_exchanges: None,
                anti_entropy_keys_repaired: None,
            },
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("peer    state"));
        assert!(lines[1].contains("5.0 MiB"));
        assert!(lines[1].contains("3/1200"));
        assert!(lines[1].contains("4s"));
        assert!(lines[2].starts_with("peer-2  down"));
        // Every row's second column starts where the header's does.
        let at = lines[0].find("state").unwrap();
        assert_eq!(&lines[1][at..at + 2], "up");
        assert_eq!(&lines[2][at..at + 4], "down");
    }
}
