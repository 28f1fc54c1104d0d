//! The cache behaviours end to end on real peers: TTL expiry in real time on every replica,
//! stats that add up per peer and cluster-wide, a peer at its memory limit that keeps serving
//! under a write flood, and `noeviction`'s documented error.

#![allow(clippy::disallowed_methods)] // tests wait in wall-clock time

mod common;

use common::{client, with_cluster, with_cluster_args};
use ringcache::client::{ReadResult, WriteOptions};
use std::time::Duration;

fn w(q: &str) -> WriteOptions {
    WriteOptions {
        w: Some(q.into()),
        ..WriteOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_with_a_one_second_ttl_is_gone_at_one_second_on_every_replica() {
    with_cluster(3, |cluster| async move {
        let options = WriteOptions {
            w: Some("all".into()),
            ttl_secs: Some(1.0),
            context: None,
        };
        let value = vec![b'x'; 1_000]; // the test peers accept values up to 1 KiB
        client(&cluster, 0)
            .put(b"short-lived", value.clone(), &options)
            .await
            .unwrap();
        let read = client(&cluster, 1)
            .get(b"short-lived", Some("all"))
            .await
            .unwrap();
        assert_eq!(read.values(), &[value]);
        let before: Vec<u64> = futures_stats(&cluster)
            .await
            .iter()
            .map(|s| s.memory_used_bytes)
            .collect();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        // Every peer (each reading its own replica first with r=one) sees it gone.
        for i in 0..3 {
            let read = client(&cluster, i)
                .get(b"short-lived", Some("one"))
                .await
                .unwrap();
            assert!(
                matches!(read, ReadResult::NotFound { .. }),
                "peer {i}: {read:?}"
            );
        }
        // And every replica gives the value's bytes back without being read again: active
        // expiry turns it into a tombstone (or the tombstone arrives by repair from the replica
        // that expired it first).
        let mut freed = Vec::new();
        for _ in 0..50 {
            let after = futures_stats(&cluster).await;
            freed = before
                .iter()
                .zip(&after)
                .map(|(b, a)| b.saturating_sub(a.memory_used_bytes))
                .collect();
            if freed.iter().all(|f| *f >= 900) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            freed.iter().all(|f| *f >= 900),
            "bytes freed per replica: {freed:?}"
        );
        let expired: u64 = futures_stats(&cluster)
            .await
            .iter()
            .map(|s| s.expired)
            .sum();
        assert!(expired >= 1, "active expiry ran");
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_add_up_per_peer_and_across_the_cluster() {
    with_cluster(3, |cluster| async move {
        let a = client(&cluster, 0);
        for i in 0..10 {
            a.put(format!("k{i}").as_bytes(), b"v".to_vec(), &w("all"))
                .await
                .unwrap();
        }
        let before = a.stats(false).await.unwrap().stats;
        // 10 hits and 5 misses, all coordinated by peer A.
        for i in 0..15 {
            a.get(format!("k{i}").as_bytes(), Some("quorum"))
                .await
                .unwrap();
        }
        let after = a.stats(false).await.unwrap();
        assert_eq!(after.stats.hits - before.hits, 10);
        assert_eq!(after.stats.misses - before.misses, 5);
        assert_eq!(
            (after.stats.hits + after.stats.misses) - (before.hits + before.misses),
            15,
            "hits + misses = reads"
        );
        assert_eq!(
            after.stats.keys, 10,
            "N=3 of 3 peers: every peer holds every key"
        );
        assert!(after.hit_ratio.is_some());
        // Reads at peer B add to the cluster total, not to A's.
        let b = client(&cluster, 1);
        for i in 0..4 {
            b.get(format!("k{i}").as_bytes(), Some("one"))
                .await
                .unwrap();
        }
        let total = a.stats(true).await.unwrap();
        assert_eq!(total.scope, "cluster");
        assert_eq!(total.peers.len(), 3);
        let per_peer: Vec<_> = futures_stats(&cluster).await;
        let sum_hits: u64 = per_peer.iter().map(|s| s.hits).sum();
        let sum_keys: u64 = per_peer.iter().map(|s| s.keys).sum();
        assert_eq!(total.stats.hits, sum_hits);
        assert_eq!(total.stats.keys, sum_keys);
        assert_eq!(sum_keys, 30);
        cluster
    })
    .await;
}

async fn futures_stats(
    cluster: &ringcache::launcher::LocalCluster,
) -> Vec<ringcache::core::node::NodeStats> {
    let mut out = Vec::new();
    for i in 0..cluster.peers.len() {
        out.push(client(cluster, i).stats(false).await.unwrap().stats);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_at_its_limit_keeps_serving_with_bounded_memory_under_a_write_flood() {
    let limit = 128 * 1024;
    with_cluster_args(
        3,
        &["--max-memory=128KiB", "--eviction=lru"],
        |cluster| async move {
            let a = client(&cluster, 0);
            for i in 0..1_500 {
                a.put(format!("flood-{i}").as_bytes(), vec![b'x'; 100], &w("one"))
                    .await
                    .unwrap();
            }
            // Replication is asynchronous beyond W: let it land.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (i, s) in futures_stats(&cluster).await.iter().enumerate() {
                assert_eq!(s.memory_limit_bytes, Some(limit));
                assert!(s.memory_used_bytes <= limit, "peer {i}: {s:?}");
                assert!(s.evicted > 0, "peer {i} evicted nothing: {s:?}");
                assert!(s.keys < 1_500, "peer {i} kept everything: {s:?}");
            }
            // Still serving: a fresh write is readable at once everywhere.
            a.put(b"after-the-flood", b"ok".to_vec(), &w("all"))
                .await
                .unwrap();
            let read = client(&cluster, 2)
                .get(b"after-the-flood", Some("all"))
                .await
                .unwrap();
            assert_eq!(read.values(), &[b"ok".to_vec()]);
            cluster
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noeviction_refuses_writes_with_507_and_keeps_serving_reads() {
    with_cluster_args(
        3,
        &["--max-memory=64KiB", "--eviction=noeviction"],
        |cluster| async move {
            let a = client(&cluster, 0);
            let mut refused = None;
            for i in 0..500 {
                if let Err(e) = a
                    .put(format!("k{i}").as_bytes(), vec![b'x'; 100], &w("quorum"))
                    .await
                {
                    refused = Some((i, e));
                    break;
                }
            }
            let (i, error) = refused.expect("the limit was reached");
            assert!(i > 5, "some keys fit before the limit");
            assert_eq!(error.status(), Some(507), "{error}");
            assert!(error.to_string().contains("noeviction"), "{error}");
            let read = a.get(b"k0", Some("quorum")).await.unwrap();
            assert_eq!(read.values(), &[vec![b'x'; 100]], "reads keep working");
            let s = a.stats(false).await.unwrap().stats;
            assert_eq!(s.evicted, 0);
            cluster
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_and_persist_change_a_keys_ttl_over_http() {
    use ringcache::client::Ttl;
    with_cluster(3, |cluster| async move {
        let a = client(&cluster, 0);
        let options = WriteOptions {
            w: Some("all".into()),
            ttl_secs: Some(1.0),
            context: None,
        };
        a.put(b"session", b"s".to_vec(), &options).await.unwrap();
        match a.ttl(b"session", Some("all")).await.unwrap() {
            Ttl::ExpiresIn { ms } => assert!(ms <= 1_000 && ms > 500, "{ms}"),
            other => panic!("{other:?}"),
        }
        // Touch: ten more seconds, then the original second passes and the key is still there.
        a.expire(b"session", Some(10.0), &w("all")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let b = client(&cluster, 1);
        match b.ttl(b"session", Some("all")).await.unwrap() {
            Ttl::ExpiresIn { ms } => assert!(ms > 7_000 && ms <= 10_000, "{ms}"),
            other => panic!("{other:?}"),
        }
        // Persist: no expiry at all.
        b.expire(b"session", None, &w("all")).await.unwrap();
        assert_eq!(
            client(&cluster, 2)
                .ttl(b"session", Some("all"))
                .await
                .unwrap(),
            Ttl::Persistent
        );
        // Missing keys: 404 for both the change and the read.
        let missing = a.expire(b"nobody", Some(5.0), &w("all")).await.unwrap_err();
        assert_eq!(missing.status(), Some(404));
        assert_eq!(a.ttl(b"nobody", None).await.unwrap(), Ttl::Missing);
        cluster
    })
    .await;
}
