//! Sloppy quorum and hinted handoff with real peers on loopback: five peers, N = 3, and two
//! of a key's three replicas killed. A strict write with W = 2 fails fast with 503; a sloppy
//! one (`?sloppy=true`) succeeds through a hint holder, and reaches both owners once they are
//! restarted — without any client read of the key.

#![allow(clippy::disallowed_methods)] // tests measure wall-clock time

mod common;

use common::{client, wait_for_live, with_cluster};
use ringcache::client::{ReadResult, WriteOptions};
use ringcache::core::ring::{Ring, RingParams};
use ringcache::core::types::NodeId;
use ringcache::launcher::{peer_name, spawn_peer};
use std::time::{Duration, Instant};

const PEERS: usize = 5;
const KEY: &[u8] = b"sloppy-key";

/// The key's replicas, as indices into the cluster's peers: the ring every peer builds with
/// `common::SERVE_ARGS` (64 partitions, 64 tokens, N = 3).
fn replicas_of(key: &[u8]) -> Vec<usize> {
    let members = (0..PEERS).map(|i| NodeId::from(peer_name(i))).collect();
    let params = RingParams {
        partitions: 64,
        vnodes: 64,
        replicas: 3,
    };
    let ring = Ring::new(params, members).unwrap();
    ring.replicas_of(key)
        .iter()
        .map(|n| (0..PEERS).find(|i| peer_name(*i) == n.as_str()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_replicas_down_a_sloppy_write_succeeds_and_reaches_the_owners() {
    with_cluster(PEERS, |mut cluster| async move {
        let replicas = replicas_of(KEY);
        let (live, down) = (replicas[0], [replicas[1], replicas[2]]);
        // Kill the two replicas (highest index first, so the other indices stay valid).
        let mut killed: Vec<usize> = down.to_vec();
        killed.sort_unstable_by(|a, b| b.cmp(a));
        let mut names = Vec::new();
        for i in &killed {
            names.push(peer_name(*i));
            cluster.peers.remove(*i).kill().await;
        }
        let live_index = live - killed.iter().filter(|k| **k < live).count();
        for peer in &cluster.peers {
            wait_for_live(&peer.url(), PEERS - 2).await;
        }
        let coordinator = client(&cluster, live_index);

        // Strict: fails at once with 503, as it always did.
        let strict = WriteOptions {
            w: Some("2".into()),
            ..WriteOptions::default()
        };
        let started = Instant::now();
        let err = coordinator
            .put(KEY, b"strict".to_vec(), &strict)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503), "{err}");
        assert!(err.to_string().contains("not enough replicas"), "{err}");
        assert!(started.elapsed() < Duration::from_millis(1500));

        // Sloppy: the coordinator and a hint holder make W = 2.
        let http = reqwest::Client::new();
        let url = format!(
            "{}/v1/kv/sloppy-key?w=2&sloppy=true",
            cluster.peers[live_index].url()
        );
        let response = http.put(&url).body("hinted").send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            204,
            "{:?}",
            response.text().await
        );
        // Two hints, one per owner down (the second may land just after the reply).
        hint_counts_become(&coordinator, (2, 0)).await;

        // The owners come back, empty; the hints are handed over with no client read.
        for name in names.iter().rev() {
            let peer = spawn_peer(&cluster.options, name, &[cluster.seed()])
                .await
                .unwrap();
            cluster.peers.push(peer);
        }
        for peer in &cluster.peers {
            wait_for_live(&peer.url(), PEERS).await;
        }
        let owners = &cluster.peers[PEERS - 2..];
        let deadline = Instant::now() + Duration::from_secs(20);
        for owner in owners {
            let local = ringcache::client::Client::new(&owner.url());
            loop {
                let state = local.local_state(KEY).await.unwrap();
                if state.versions.iter().any(|v| v.value.is_some()) {
                    assert!(state.replica, "{} owns the key", state.id);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never received its hint: {state:?}",
                    state.id
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Acknowledged and dropped by their holders.
        hint_counts_become(&coordinator, (0, 2)).await;
        match coordinator.get(KEY, Some("all")).await.unwrap() {
            ReadResult::Found { values, .. } => assert_eq!(values, vec![b"hinted".to_vec()]),
            other => panic!("expected the hinted value, got {other:?}"),
        }
        cluster
    })
    .await;
}

/// Waits (at most 10 s) until the cluster's (hints pending, hints delivered) are `expected`.
async fn hint_counts_become(client: &ringcache::client::Client, expected: (u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = client.stats(true).await.unwrap().stats;
        let counts = (stats.hints_pending, stats.hints_delivered);
        if counts == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "hints (pending, delivered) stayed {counts:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
