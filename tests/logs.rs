//! `--log-format json`: every log line a peer writes is one JSON object (for log pipelines).
//! One real peer on loopback, killed at the end.

#![allow(clippy::disallowed_methods)] // spawns a process and waits on the wall clock

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn json_logs_are_one_object_per_line() {
    let mut peer = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--id",
            "logs",
            "--http",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--peer-addr",
            "127.0.0.1:0",
            "--resp",
            "127.0.0.1:0",
            "--max-memory",
            "64MiB",
        ])
        .env(
            "RINGCACHE_CLUSTER_SECRET",
            "a-test-secret-of-enough-length-0123",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the peer starts");
    let stderr = BufReader::new(peer.stderr.take().unwrap());
    let started = Instant::now();
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let started_line = line.contains("peer started");
        lines.push(line);
        if started_line || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(
        lines.iter().any(|l| l.contains("peer started")),
        "{lines:?}"
    );
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(object["level"].is_string(), "{line}");
        assert!(object["fields"]["message"].is_string(), "{line}");
    }
}
