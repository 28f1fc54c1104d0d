//! The RESP endpoint against a real Redis client library (the `redis` crate), on a cluster of
//! three peer processes (N=3): sync and async connections, RESP3, a pipeline, the same keys
//! seen from every peer, SCAN returning every key exactly once, pub/sub across two peers, and siblings as RESP shows
//! them (GET one, RC.GETALL all, RC.SET resolves, SET never piles them up).
//!
//! Loopback only, bounded in time, every peer stopped at the end (tests/common).

#![allow(clippy::disallowed_methods)] // spawn_blocking for the sync client
mod common;

use redis::Value;
use ringcache::client::WriteOptions;
use ringcache::launcher::LocalCluster;
use std::collections::BTreeMap;

fn url(cluster: &LocalCluster, peer: usize) -> String {
    let port = cluster.peers[peer].resp_port().expect("RESP is on");
    format!("redis://127.0.0.1:{port}/")
}

/// Every key a full SCAN of one peer returns, with how many times it came back.
fn scan_all(con: &mut redis::Connection, count: usize, pattern: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let mut cursor: u64 = 0;
    let mut calls = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .query(con)
            .expect("SCAN answers");
        for key in keys {
            *seen.entry(key).or_insert(0) += 1;
        }
        calls += 1;
        assert!(calls < 10_000, "SCAN never came back to cursor 0");
        if next == 0 {
            return seen;
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crate_sync_async_pipeline_and_scan_on_three_peers() {
    common::with_cluster(3, |cluster| async move {
        let urls: Vec<String> = (0..3).map(|i| url(&cluster, i)).collect();
        let sync_urls = urls.clone();
        tokio::task::spawn_blocking(move || {
            let client = redis::Client::open(sync_urls[0].as_str()).unwrap();
            let mut con = client.get_connection().expect("connects");
            // Every replica acknowledges each write, so every peer holds every key at once.
            let _: () = redis::cmd("RC.CONSISTENCY")
                .arg("quorum")
                .arg("all")
                .query(&mut con)
                .unwrap();
            let _: () = redis::cmd("SET")
                .arg("hello")
                .arg("world")
                .query(&mut con)
                .unwrap();
            let v: String = redis::cmd("GET").arg("hello").query(&mut con).unwrap();
            assert_eq!(v, "world");
            let missing: Option<String> = redis::cmd("GET").arg("nope").query(&mut con).unwrap();
            assert_eq!(missing, None);
            // A pipeline: 200 writes and reads in one round trip, answered in order.
            let mut pipe = redis::pipe();
            for i in 0..200 {
                pipe.cmd("SET").arg(format!("user:{i}")).arg(i).ignore();
            }
            pipe.cmd("MSET")
                .arg("other:a")
                .arg("1")
                .arg("other:b")
                .arg("2")
                .ignore();
            for i in [0, 7, 199] {
                pipe.cmd("GET").arg(format!("user:{i}"));
            }
            pipe.cmd("EXISTS").arg("user:1").arg("user:2").arg("nope");
            let (a, b, c, exists): (i64, i64, i64, i64) = pipe.query(&mut con).unwrap();
            assert_eq!((a, b, c, exists), (0, 7, 199, 2));
            // A key holding an integer counts from it (Redis's INCR).
            let counted = redis::cmd("INCR")
                .arg("user:1")
                .query::<i64>(&mut con)
                .unwrap();
            assert_eq!(counted, 2);
            // SCAN on each peer: every key exactly once, small pages and MATCH included.
            for url in &sync_urls {
                let mut con = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let all = scan_all(&mut con, 7, "*");
                assert_eq!(all.len(), 203, "{url}");
                assert!(
                    all.values().all(|n| *n == 1),
                    "a key came back twice from {url}"
                );
                let users = scan_all(&mut con, 50, "user:*");
                assert_eq!(users.len(), 200);
                assert!(users.keys().all(|k| k.starts_with("user:")));
                assert_eq!(users.values().sum::<usize>(), 200);
            }
            // Pub/sub across peers: a subscriber on the second peer hears what the first
            // publishes, on its channel and through a pattern.
            let mut sub_con = redis::Client::open(sync_urls[1].as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let mut sub = sub_con.as_pubsub();
            sub.subscribe("news").unwrap();
            sub.psubscribe("alerts.*").unwrap();
            sub.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            // The subscription is live on the second peer before anything is published.
            let mut check = redis::Client::open(sync_urls[1].as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let numsub: (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("news")
                .query(&mut check)
                .unwrap();
            assert_eq!(numsub, ("news".to_string(), 1));
            let local: i64 = redis::cmd("PUBLISH")
                .arg("news")
                .arg("first")
                .query(&mut con)
                .unwrap();
            assert_eq!(local, 0, "no subscriber on the publishing peer");
            let _: i64 = redis::cmd("PUBLISH")
                .arg("alerts.fire")
                .arg("second")
                .query(&mut con)
                .unwrap();
            let first = sub.get_message().expect("the message crossed peers");
            assert_eq!(first.get_channel_name(), "news");
            assert_eq!(first.get_payload::<String>().unwrap(), "first");
            let second = sub
                .get_message()
                .expect("the pattern message crossed peers");
            assert_eq!(second.get_channel_name(), "alerts.fire");
            assert_eq!(second.get_pattern::<String>().unwrap(), "alerts.*");
            assert_eq!(second.get_payload::<String>().unwrap(), "second");
        })
        .await
        .expect("the sync client's checks pass");

        // Async, multiplexed, RESP3, on another peer: it sees the writes made through the first.
        let client = redis::Client::open(format!("{}?protocol=resp3", urls[1])).unwrap();
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let v: String = redis::cmd("GET")
            .arg("hello")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v, "world");
        let values: Vec<Option<i64>> = redis::cmd("MGET")
            .arg("user:3")
            .arg("nope")
            .arg("user:4")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(values, vec![Some(3), None, Some(4)]);
        let deleted: i64 = redis::cmd("DEL")
            .arg("user:3")
            .arg("user:4")
            .arg("nope")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(deleted, 2);
        let hello: Value = redis::cmd("HELLO")
            .arg(3)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(matches!(hello, Value::Map(_)), "{hello:?}");
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siblings_show_one_value_over_resp_and_all_through_rc_getall() {
    common::with_cluster(3, |cluster| async move {
        // Two blind HTTP writes without overwrite stand side by side as siblings.
        let http = common::client(&cluster, 0);
        let blind = WriteOptions::default();
        http.put(b"twins", b"left".to_vec(), &blind).await.unwrap();
        http.put(b"twins", b"right".to_vec(), &blind).await.unwrap();
        let client = redis::Client::open(url(&cluster, 2).as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let (context, values): (String, Vec<String>) = redis::cmd("RC.GETALL")
            .arg("twins")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(values.len(), 2, "{values:?}");
        assert!(!context.is_empty());
        // GET shows the last sibling, the same on every peer.
        for peer in 0..3 {
            let client = redis::Client::open(url(&cluster, peer).as_str()).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let shown: String = redis::cmd("GET")
                .arg("twins")
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(&shown, values.last().unwrap(), "peer {peer}");
        }
        // RC.SET with the context replaces both.
        let token: String = redis::cmd("RC.SET")
            .arg("twins")
            .arg("merged")
            .arg("CONTEXT")
            .arg(&context)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(!token.is_empty());
        let (_, values): (String, Vec<String>) = redis::cmd("RC.GETALL")
            .arg("twins")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(values, vec!["merged".to_string()]);
        // SET after SET, from connections to every peer, never piles up siblings.
        for round in 0..30 {
            let client = redis::Client::open(url(&cluster, round % 3).as_str()).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let _: () = redis::cmd("SET")
                .arg("plain")
                .arg(round)
                .query_async(&mut con)
                .await
                .unwrap();
        }
        let (_, values): (String, Vec<String>) = redis::cmd("RC.GETALL")
            .arg("plain")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(values, vec!["29".to_string()]);
        // A forged context is refused.
        let err = redis::cmd("RC.SET")
            .arg("twins")
            .arg("x")
            .arg("CONTEXT")
            .arg("AAAA")
            .query_async::<String>(&mut con)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("context"), "{err}");
        cluster
    })
    .await;
}

/// `--no-resp` through the launcher: the peer starts without a RESP endpoint (the launcher
/// does not add its own `--resp`, which would conflict).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_started_with_no_resp_serves_none() {
    common::with_cluster_args(
        1,
        &["--no-resp", "--resp-idle-timeout-secs", "5"],
        |cluster| async move {
            assert_eq!(cluster.peers[0].resp_port(), None);
            cluster
        },
    )
    .await;
}
