//! Replicas heal themselves with real peers: a peer restarted empty gets its data back from
//! the other replicas by Merkle anti-entropy over QUIC, without any client read.

#![allow(clippy::disallowed_methods)] // waits measured on the wall clock

mod common;

use common::{client, with_cluster_args};
use ringcache::client::WriteOptions;
use ringcache::launcher::spawn_peer;
use std::time::{Duration, Instant};

const KEYS: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_empty_gets_every_key_back_without_a_read() {
    let args = ["--anti-entropy-interval-ms", "500"];
    with_cluster_args(3, &args, |mut cluster| async move {
        cluster.peers.pop().unwrap().kill().await;
        common::wait_for_live(&cluster.peers[0].url(), 2).await;
        let a = client(&cluster, 0);
        let options = WriteOptions {
            w: Some("2".into()),
            ..WriteOptions::default()
        };
        for i in 0..KEYS {
            a.put(format!("key-{i}").as_bytes(), b"value".to_vec(), &options)
                .await
                .unwrap_or_else(|e| panic!("write {i}: {e}"));
        }
        let restarted = spawn_peer(&cluster.options, "C", &[cluster.seed()])
            .await
            .unwrap();
        cluster.peers.push(restarted);
        let c = client(&cluster, 2);
        // With N = 3 on three peers, C replicates every key.
        let started = Instant::now();
        loop {
            let stats = c.stats(false).await.unwrap().stats;
            assert_eq!(stats.hits + stats.misses, 0, "no client read reached C");
            if stats.keys == KEYS as u64 {
                assert!(stats.anti_entropy_keys_repaired >= KEYS as u64, "{stats:?}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "C holds {} of {KEYS} keys after a minute",
                stats.keys
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Every replica answers for every key.
        for i in (0..KEYS).step_by(50) {
            let read = c
                .get(format!("key-{i}").as_bytes(), Some("all"))
                .await
                .unwrap();
            assert_eq!(read.values(), &[b"value".to_vec()], "key-{i}");
        }
        cluster
    })
    .await;
}
