//! `ringcache top --once` against a real three-peer cluster: the frame names every peer, shows
//! the keys written and a non-zero request rate while clients are busy, and shows a stopped
//! peer as down.
//!
//! Loopback only, bounded in time, every peer stopped at the end (tests/common).

#![allow(clippy::disallowed_methods)] // spawns the CLI and a load task; wall-clock deadlines
mod common;

use ringcache::client::{Client, WriteOptions};
use std::time::Duration;

/// Runs `ringcache top --once` against `url` and returns its frame.
async fn top_once(url: &str) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"))
            .args(["top", "--once", "--interval", "1", "--url", url])
            .env_remove("RINGCACHE_URL")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("top --once finished in time")
    .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The line of peer `id` in a frame.
fn row<'a>(frame: &'a str, id: &str) -> &'a str {
    frame
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{frame}"))
}

/// The total ops/s of a frame's first line (`… — 123 ops/s over 1.0 s`).
fn total_ops(frame: &str) -> f64 {
    let first = frame.lines().next().unwrap();
    let before = first.split(" ops/s").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_shows_every_peer_its_load_and_a_stopped_peer_as_down() {
    common::with_cluster(3, |mut cluster| async move {
        let url = cluster.peers[0].url();
        common::wait_for_live(&url, 3).await;
        let client = Client::new(&url);
        let overwrite = WriteOptions {
            w: Some("all".into()),
            overwrite: true,
            ..WriteOptions::default()
        };
        for i in 0..20 {
            client
                .put(format!("top-{i}").as_bytes(), b"v".to_vec(), &overwrite)
                .await
                .unwrap();
        }
        // Clients keep asking while top samples.
        let load = tokio::spawn({
            let client = client.clone();
            async move {
                for n in 0u64.. {
                    let _ = client.get(format!("top-{}", n % 3).as_bytes(), None).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let frame = top_once(&url).await;
        load.abort();
        assert!(frame.starts_with("ringcache top"), "{frame}");
        assert!(frame.contains("3 peers, 3 up"), "{frame}");
        assert!(total_ops(&frame) > 0.0, "{frame}");
        for peer in &cluster.peers {
            let line = row(&frame, &peer.addresses.id);
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[1], "up", "{frame}");
            // N = 3 on three peers: every peer holds every key written.
            let keys: u64 = fields[2].parse().unwrap();
            assert!(keys >= 20, "{frame}");
        }
        // The keys read most are the cluster's hot keys.
        assert!(frame.contains("hot keys (cluster"), "{frame}");
        assert!(frame.contains("top-0"), "{frame}");

        let stopped = cluster.peers.pop().unwrap();
        let stopped_id = stopped.addresses.id.clone();
        stopped.kill().await;
        common::wait_for_live(&url, 2).await;
        let frame = top_once(&url).await;
        assert!(frame.contains("3 peers, 2 up"), "{frame}");
        let fields: Vec<&str> = row(&frame, &stopped_id).split_whitespace().collect();
        assert_eq!(fields[1..], ["down", "-", "-", "-", "-"], "{frame}");
        assert_eq!(
            row(&frame, &cluster.peers[0].addresses.id)
                .split_whitespace()
                .nth(1),
            Some("up")
        );
        cluster
    })
    .await;
}
