//! Stampede protection (issue 13) on a cluster of three peer processes: 1,000 concurrent
//! readers of a key that just expired, with a slow (200 ms) loader, run the loader about once
//! per reader with plain get-then-load-then-put and at most a few times with `get_or_load`;
//! every reader gets the value either way. Also: a dead lease holder's lease expires and a
//! waiter loads; an expired value within the stale window is served marked stale and
//! refreshed by one reader; XFetch refreshes a hit that is about to expire.
//!
//! Loopback only, bounded in time, every peer stopped at the end (tests/common).
//! The counts are printed (`cargo test --release --test stampede -- --nocapture`).

// Tests time the readers on the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{client, with_cluster_args};
use futures_util::future::join_all;
use ringcache::client::{
    lease_key, ClusterClient, Expected, LoadOptions, ReadResult, WriteOptions,
};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const READERS: usize = 1_000;
const LOAD_TIME: Duration = Duration::from_millis(200);
/// Keep expired values 10 s for `stale_ok` reads; room for 1,000 concurrent connections.
const ARGS: &[&str] = &[
    "--stale-window-ms",
    "10000",
    "--http-max-connections",
    "4096",
];

/// A loader that takes `LOAD_TIME` and counts its calls.
fn slow_loader(
    calls: &Arc<AtomicUsize>,
    value: &'static [u8],
) -> impl std::future::Future<Output = Result<Vec<u8>, Infallible>> {
    let calls = calls.clone();
    async move {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(LOAD_TIME).await;
        Ok(value.to_vec())
    }
}

fn with_ttl(secs: f64) -> WriteOptions {
    WriteOptions {
        ttl_secs: Some(secs),
        overwrite: true,
        ..WriteOptions::default()
    }
}

/// Ring-aware clients, one per peer as seed: readers spread over them like app servers.
async fn ring_clients(cluster: &ringcache::launcher::LocalCluster) -> Vec<ClusterClient> {
    let mut out = Vec::new();
    for i in 0..cluster.peers.len() {
        out.push(ClusterClient::connect(client(cluster, i)).await.unwrap());
    }
    out
}

/// Writes `key` with a 1 s TTL and waits until it has expired.
async fn expired_key(ring: &ClusterClient, key: &[u8]) {
    ring.put(key, b"old".to_vec(), &with_ttl(1.0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let read = ring.get(key, Some("all")).await.unwrap();
    assert!(matches!(read, ReadResult::NotFound { .. }), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_readers_of_an_expired_key_run_the_loader_once_or_so_with_get_or_load() {
    with_cluster_args(3, ARGS, |cluster| async move {
        let rings = ring_clients(&cluster).await;

        // Without protection: get, and on a miss load and put.
        let key = b"hot-plain".as_slice();
        expired_key(&rings[0], key).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let readers = (0..READERS).map(|i| {
            let (ring, calls) = (&rings[i % rings.len()], calls.clone());
            async move {
                if let Some(v) = ring.get(key, None).await.unwrap().values().first() {
                    return v.clone();
                }
                let value = slow_loader(&calls, b"fresh").await.unwrap();
                ring.put(key, value.clone(), &with_ttl(60.0)).await.unwrap();
                value
            }
        });
        let got = join_all(readers).await;
        let plain_calls = calls.load(Ordering::SeqCst);
        let plain_took = started.elapsed();
        assert!(got.iter().all(|v| v == b"fresh"));

        // With get_or_load.
        let key = b"hot-protected".as_slice();
        expired_key(&rings[0], key).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let readers = (0..READERS).map(|i| {
            let (ring, calls) = (&rings[i % rings.len()], calls.clone());
            async move {
                let loader = || slow_loader(&calls, b"fresh");
                let options = LoadOptions::default();
                ring.get_or_load(key, Duration::from_secs(60), loader, &options)
                    .await
            }
        });
        let got = join_all(readers).await;
        let protected_calls = calls.load(Ordering::SeqCst);
        let protected_took = started.elapsed();
        let failed: Vec<_> = got.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "{} readers failed: {:?}",
            failed.len(),
            failed.first()
        );
        assert!(got.iter().all(|v| v.as_ref().unwrap() == b"fresh"));

        println!(
            "stampede: {READERS} readers, {} ms loader: plain get-load-put {plain_calls} \
             loader calls ({} ms), get_or_load {protected_calls} loader calls ({} ms)",
            LOAD_TIME.as_millis(),
            plain_took.as_millis(),
            protected_took.as_millis()
        );
        assert!(
            (1..=3).contains(&protected_calls),
            "get_or_load ran the loader {protected_calls} times"
        );
        assert!(
            plain_calls > 10 * protected_calls,
            "the unprotected run should stampede: {plain_calls} calls"
        );
        cluster
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_stale_values_are_served_once_refreshed_and_xfetch_refreshes_early() {
    with_cluster_args(3, ARGS, |cluster| async move {
        let rings = ring_clients(&cluster).await;
        let ring = &rings[0];
        let peer = client(&cluster, 1);

        // A lease whose holder died (taken, never released): a reader waits for it to expire,
        // then takes the lease itself and loads.
        let key = b"orphaned".as_slice();
        let lease = lease_key(key);
        let taken = peer
            .put_if(&lease, b"dead".to_vec(), &Expected::Absent, Some(1.0))
            .await
            .unwrap();
        assert!(matches!(taken, ringcache::client::CasOutcome::Applied(_)));
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let value = ring
            .get_or_load(
                key,
                Duration::from_secs(60),
                || slow_loader(&calls, b"loaded"),
                &LoadOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(value, b"loaded");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "waited for the lease"
        );
        // The lease was released after the load.
        let read = ring.get(&lease, Some("all")).await.unwrap();
        assert!(matches!(read, ReadResult::NotFound { .. }), "{read:?}");

        // Stale-while-revalidate: an expired value is served marked stale within the window
        // (and to nobody who did not ask), and exactly one of many readers refreshes it.
        let key = b"stale".as_slice();
        expired_key(ring, key).await;
        let read = peer.get_cached(key, None, None).await.unwrap();
        assert!(matches!(read.read, ReadResult::NotFound { .. }), "{read:?}");
        let read = peer
            .get_cached(key, None, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(read.read.values(), &[b"old".to_vec()]);
        assert!(read.stale, "{read:?}");
        assert_eq!(read.ttl_ms, Some(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let options = LoadOptions {
            stale_ok: Some(Duration::from_secs(5)),
            ..LoadOptions::default()
        };
        let readers = (0..50).map(|i| {
            let (ring, calls, options) = (&rings[i % 3], calls.clone(), options.clone());
            async move {
                let loader = || slow_loader(&calls, b"new");
                ring.get_or_load(key, Duration::from_secs(60), loader, &options)
                    .await
                    .unwrap()
            }
        });
        let got = join_all(readers).await;
        let refreshes = calls.load(Ordering::SeqCst);
        assert_eq!(refreshes, 1, "one reader refreshed: {got:?}");
        assert!(got.iter().all(|v| v == b"old" || v == b"new"), "{got:?}");
        assert!(
            got.iter().any(|v| v == b"new"),
            "the refresher got the new value"
        );
        let read = ring.get(key, Some("all")).await.unwrap();
        assert_eq!(read.values(), &[b"new".to_vec()]);

        // XFetch: a hit about to expire, with a loader expected to take far longer than the
        // time left, is refreshed early; with beta 0 it never is.
        let key = b"xfetch".as_slice();
        ring.put(key, b"v1".to_vec(), &with_ttl(30.0))
            .await
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let never = LoadOptions {
            beta: 0.0,
            ..LoadOptions::default()
        };
        let eager = LoadOptions {
            expected_load: Duration::from_secs(3_600),
            ..LoadOptions::default()
        };
        let ttl = Duration::from_secs(60);
        let value = ring
            .get_or_load(key, ttl, || slow_loader(&calls, b"v2"), &never)
            .await
            .unwrap();
        assert_eq!(
            (value.as_slice(), calls.load(Ordering::SeqCst)),
            (&b"v1"[..], 0)
        );
        // P(refresh) = exp(-30 s / 1 h) ≈ 0.99: try a few times so the test cannot flake.
        let mut refreshed = None;
        for _ in 0..5 {
            let value = ring
                .get_or_load(key, ttl, || slow_loader(&calls, b"v2"), &eager)
                .await
                .unwrap();
            if value == b"v2" {
                refreshed = Some(value);
                break;
            }
        }
        assert_eq!(refreshed.as_deref(), Some(&b"v2"[..]));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        cluster
    })
    .await
}
