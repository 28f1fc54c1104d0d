//! The cache behaviours end to end on real peers: TTL expiry in real time on every replica,
//! stats that add up per peer and cluster-wide, a peer at its memory limit that keeps serving
//! under a write flood, a memory limit that holds when nothing can be evicted (`noeviction`'s
//! documented error, and `volatile-ttl` without TTLs), and deletes' tombstones collected on
//! every replica.
//!
//! Timing: these run on a loaded two-core machine, so no assertion depends on how long a
//! step took. Tests wait for conditions by polling under a generous bound, wait out a TTL only
//! in the safe direction (longer is always fine), and check what a TTL leaves visible only
//! against the time that actually elapsed.

#![allow(clippy::disallowed_methods)] // tests wait in wall-clock time

mod common;

use common::{client, with_cluster, with_cluster_args};
use ringcache::client::{ReadResult, WriteOptions};
use ringcache::core::node::NodeStats;
use ringcache::launcher::LocalCluster;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a condition may take to come true before a test gives up on it.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` (every 50 ms, for at most [`PATIENCE`]) until it returns `Some`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn w(q: &str) -> WriteOptions {
    WriteOptions {
        w: Some(q.into()),
        ..WriteOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_a_ttl_is_gone_once_it_passes_on_every_replica() {
    with_cluster(3, |cluster| async move {
        let value = vec![b'x'; 1_000]; // the test peers accept values up to 1 KiB
                                       // The value must be seen on every replica before its TTL passes. A slow machine may
                                       // take longer than a TTL for the write, the read and the stats: then try again with
                                       // a longer one (under a fresh key), rather than assert anything about a TTL that had
                                       // already run out.
        let mut attempt = None;
        for ttl_ms in [2_000u64, 8_000, 30_000] {
            let key = format!("short-lived-{ttl_ms}");
            let options = WriteOptions {
                w: Some("all".into()),
                ttl_secs: Some(ttl_ms as f64 / 1_000.0),
                context: None,
                overwrite: false,
            };
            let sent = Instant::now();
            client(&cluster, 0)
                .put(key.as_bytes(), value.clone(), &options)
                .await
                .unwrap();
            let read = client(&cluster, 1)
                .get(key.as_bytes(), Some("all"))
                .await
                .unwrap();
            let before = futures_stats(&cluster).await;
            if sent.elapsed() < Duration::from_millis(ttl_ms) {
                // Still inside the TTL (its clock started after `sent`): it must be visible,
                // and every replica's bytes were measured holding it.
                assert_eq!(read.values(), std::slice::from_ref(&value), "{ttl_ms} ms");
                attempt = Some((key, ttl_ms, sent, before));
                break;
            }
        }
        let (key, ttl_ms, sent, before) = attempt.expect("some TTL outlasted a write and a read");
        // The expiry was fixed when the coordinator took the write, before the put returned
        // and so before `sent + ttl`: from then on no replica may show it.
        let expired_by = sent + Duration::from_millis(ttl_ms + 100);
        tokio::time::sleep_until(expired_by.into()).await;
        // Every peer (each reading its own replica first with r=one) sees it gone.
        for i in 0..3 {
            let read = client(&cluster, i)
                .get(key.as_bytes(), Some("one"))
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
        let before: Vec<u64> = before.iter().map(|s| s.memory_used_bytes).collect();
        eventually("every replica to free the value's bytes", || {
            let cluster = &cluster;
            let before = &before;
            async move {
                let after = futures_stats(cluster).await;
                let freed: Vec<u64> = before
                    .iter()
                    .zip(&after)
                    .map(|(b, a)| b.saturating_sub(a.memory_used_bytes))
                    .collect();
                freed.iter().all(|f| *f >= 900).then_some(())
            }
        })
        .await;
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

async fn futures_stats(cluster: &LocalCluster) -> Vec<NodeStats> {
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
            // Replication is asynchronous beyond W: wait until every replica has had to
            // evict, checking the limit at every look.
            eventually("every replica to evict", || {
                let cluster = &cluster;
                async move {
                    let stats = futures_stats(cluster).await;
                    for (i, s) in stats.iter().enumerate() {
                        assert_eq!(s.memory_limit_bytes, Some(limit));
                        assert!(s.memory_used_bytes <= limit, "peer {i}: {s:?}");
                        assert!(s.keys < 1_500, "peer {i} kept everything: {s:?}");
                    }
                    stats.iter().all(|s| s.evicted > 0).then_some(())
                }
            })
            .await;
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
            assert!(error.to_string().contains("out of memory"), "{error}");
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
        // The TTL left is read against the time that actually passed: at most the TTL, at
        // least the TTL less everything since the write was sent.
        let options = WriteOptions {
            w: Some("all".into()),
            ttl_secs: Some(5.0),
            context: None,
            overwrite: false,
        };
        let sent = Instant::now();
        a.put(b"session", b"s".to_vec(), &options).await.unwrap();
        match a.ttl(b"session", Some("all")).await.unwrap() {
            Ttl::ExpiresIn { ms } => {
                let floor = 5_000u64.saturating_sub(sent.elapsed().as_millis() as u64 + 5); // clock granularity
                assert!(ms <= 5_000 && ms >= floor, "{ms}, at least {floor}");
            }
            other => panic!("{other:?}"),
        }
        // Touch: a minute more, then the original five seconds pass and the key is still
        // there, with what is left of the minute.
        let touched = Instant::now();
        a.expire(b"session", Some(60.0), &w("all")).await.unwrap();
        tokio::time::sleep_until((sent + Duration::from_millis(5_200)).into()).await;
        let b = client(&cluster, 1);
        match b.ttl(b"session", Some("all")).await.unwrap() {
            Ttl::ExpiresIn { ms } => {
                let floor = 60_000u64.saturating_sub(touched.elapsed().as_millis() as u64 + 5); // clock granularity
                assert!(ms <= 60_000 && ms >= floor, "{ms}, at least {floor}");
            }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_ttl_without_ttls_refuses_writes_with_507_and_never_passes_its_limit() {
    // Issue 9 as a user met it (4 MiB there; 1 MiB here keeps the test short): every write
    // was acknowledged and the peer held more than twice its limit.
    let limit = 1024 * 1024;
    with_cluster_args(
        1,
        &["--max-memory=1MiB", "--eviction=volatile-ttl"],
        |cluster| async move {
            let a = client(&cluster, 0);
            let mut refused = None;
            for i in 0..3_000 {
                let result = a
                    .put(format!("k{i}").as_bytes(), vec![b'x'; 1_000], &w("one"))
                    .await;
                let s = a.stats(false).await.unwrap().stats;
                assert_eq!(s.memory_limit_bytes, Some(limit));
                assert!(s.memory_used_bytes <= limit, "after write {i}: {s:?}");
                if let Err(e) = result {
                    refused = Some((i, e));
                    break;
                }
            }
            let (i, error) = refused.expect("the limit was reached");
            assert!(i > 500, "only {i} values of 1 KB fit in 1 MiB");
            assert_eq!(error.status(), Some(507), "{error}");
            assert!(error.to_string().contains("out of memory"), "{error}");
            // Nothing could be evicted and nothing was; what was written is still served,
            // and further writes are refused the same way.
            let s = a.stats(false).await.unwrap().stats;
            assert_eq!(s.evicted, 0);
            assert_eq!(s.keys, i as u64, "every acknowledged write is held");
            let read = a.get(b"k0", Some("one")).await.unwrap();
            assert_eq!(read.values(), &[vec![b'x'; 1_000]]);
            let again = a
                .put(b"one-more", vec![b'x'; 1_000], &w("one"))
                .await
                .unwrap_err();
            assert_eq!(again.status(), Some(507), "{again}");
            assert!(a.stats(false).await.unwrap().stats.memory_used_bytes <= limit);
            cluster
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_tombstones_are_collected_on_every_replica_across_shards() {
    // Three peers of two shards each, N=3: every peer holds every key. A read with r=all that
    // finds the same tombstones everywhere schedules their collection; after the grace period
    // its coordinator forgets the key and sends Forget over QUIC to the others, whose shard
    // router hands it to the shard that owns the key.
    const KEYS: u64 = 8;
    with_cluster_args(
        3,
        &["--shards=2", "--tombstone-grace-ms=1500"],
        |cluster| async move {
            let key = |i: u64| format!("doomed-{i}").into_bytes();
            for i in 0..KEYS {
                client(&cluster, 0)
                    .put(&key(i), b"v".to_vec(), &w("all"))
                    .await
                    .unwrap();
            }
            for (p, s) in futures_stats(&cluster).await.iter().enumerate() {
                assert_eq!(s.keys, KEYS, "peer {p} holds every key: {s:?}");
                assert_eq!(s.tombstones_collected, 0, "peer {p}: {s:?}");
            }
            for i in 0..KEYS {
                let peer = (i % 3) as usize;
                client(&cluster, peer)
                    .delete(&key(i), &w("all"))
                    .await
                    .unwrap();
            }
            // Tombstones are still held: the delete alone collects nothing.
            for (p, s) in futures_stats(&cluster).await.iter().enumerate() {
                assert_eq!(s.keys, KEYS, "peer {p} holds the tombstones: {s:?}");
            }
            // Reads coordinated by every peer, each seeing the tombstones on all three.
            for i in 0..KEYS {
                let peer = (i % 3) as usize;
                let read = client(&cluster, peer)
                    .get(&key(i), Some("all"))
                    .await
                    .unwrap();
                assert!(matches!(read, ReadResult::NotFound { .. }), "{read:?}");
            }
            let stats = eventually("every replica to collect every tombstone", || {
                let cluster = &cluster;
                async move {
                    let stats = futures_stats(cluster).await;
                    stats
                        .iter()
                        .all(|s| s.tombstones_collected >= KEYS && s.keys == 0)
                        .then_some(stats)
                }
            })
            .await;
            for (p, s) in stats.iter().enumerate() {
                assert_eq!(s.tombstones_collected, KEYS, "peer {p}: {s:?}");
            }
            // Collected, the keys read as they did before: absent.
            for i in 0..KEYS {
                let read = client(&cluster, 1).get(&key(i), Some("all")).await.unwrap();
                assert!(matches!(read, ReadResult::NotFound { .. }), "{read:?}");
            }
            cluster
        },
    )
    .await;
}
