//! Counters on a cluster of three peer processes (N=3): increments sent to every peer at once,
//! over HTTP and RESP, all count; Redis's behaviour for SET-then-INCR, non-integers and
//! overflow; the client library's and the CLI's `incr`.
//!
//! Loopback only, bounded in time, every peer stopped at the end (tests/common).

#![allow(clippy::disallowed_methods)] // the CLI runs as a child process
mod common;

use common::client;
use futures_util::future::join_all;
use ringcache::client::{ClientError, ClusterClient, WriteOptions};
use ringcache::launcher::LocalCluster;

fn resp_url(cluster: &LocalCluster, peer: usize) -> String {
    let port = cluster.peers[peer].resp_port().expect("RESP is on");
    format!("redis://127.0.0.1:{port}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_at_every_peer_at_once_all_count() {
    common::with_cluster(3, |cluster| async move {
        let clients: Vec<_> = (0..3).map(|i| client(&cluster, i)).collect();
        let options = WriteOptions::default();
        // 3 peers × 40 increments of +2 and 3 × 20 of -1, all in flight together.
        let mut increments = Vec::new();
        for c in &clients {
            for i in 0..60 {
                let by = if i % 3 == 2 { -1 } else { 2 };
                let (c, options) = (c.clone(), options.clone());
                increments.push(async move { c.incr(b"hits", by, &options).await.map(|_| by) });
            }
        }
        let mut sum = 0;
        for done in join_all(increments).await {
            sum += done.expect("every increment is acknowledged");
        }
        assert_eq!(sum, 3 * (40 * 2 - 20));
        for c in &clients {
            let read = c.get(b"hits", Some("all")).await.unwrap();
            assert_eq!(read.values(), &[sum.to_string().into_bytes()]);
        }
        // RESP sees the same counter, and its INCRBY counts on top.
        let redis = redis::Client::open(resp_url(&cluster, 1)).unwrap();
        let mut con = redis.get_multiplexed_async_connection().await.unwrap();
        let value: i64 = redis::cmd("INCRBY")
            .arg("hits")
            .arg(5)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(value, sum + 5);
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_counters_behave_as_redis_does() {
    common::with_cluster(3, |cluster| async move {
        let redis = redis::Client::open(resp_url(&cluster, 0)).unwrap();
        let mut con = redis.get_multiplexed_async_connection().await.unwrap();
        let cmd = |args: &[&str]| {
            let mut c = redis::cmd(args[0]);
            for a in &args[1..] {
                c.arg(*a);
            }
            c
        };
        let int = |v: redis::RedisResult<i64>| v.unwrap();
        assert_eq!(int(cmd(&["INCR", "c"]).query_async(&mut con).await), 1);
        assert_eq!(
            int(cmd(&["INCRBY", "c", "9"]).query_async(&mut con).await),
            10
        );
        assert_eq!(int(cmd(&["DECR", "c"]).query_async(&mut con).await), 9);
        assert_eq!(
            int(cmd(&["DECRBY", "c", "-3"]).query_async(&mut con).await),
            12
        );
        let read: String = cmd(&["GET", "c"]).query_async(&mut con).await.unwrap();
        assert_eq!(read, "12");

        // SET k 10 then INCR k gives 11; the TTL stays.
        let _: () = cmd(&["SET", "k", "10", "EX", "100"])
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(int(cmd(&["INCR", "k"]).query_async(&mut con).await), 11);
        let ttl: i64 = cmd(&["TTL", "k"]).query_async(&mut con).await.unwrap();
        assert!((90..=100).contains(&ttl), "TTL kept: {ttl}");
        // SET over a counter resets it.
        let _: () = cmd(&["SET", "c", "100"])
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(int(cmd(&["INCR", "c"]).query_async(&mut con).await), 101);

        let error = |r: redis::RedisResult<i64>| r.unwrap_err().to_string();
        let _: () = cmd(&["SET", "text", "hello"])
            .query_async(&mut con)
            .await
            .unwrap();
        let e = error(cmd(&["INCR", "text"]).query_async(&mut con).await);
        assert!(e.contains("value is not an integer or out of range"), "{e}");
        let e = error(cmd(&["INCRBY", "c", "1.5"]).query_async(&mut con).await);
        assert!(e.contains("value is not an integer or out of range"), "{e}");
        let max = i64::MAX.to_string();
        let _: () = cmd(&["SET", "big", &max])
            .query_async(&mut con)
            .await
            .unwrap();
        let e = error(cmd(&["INCR", "big"]).query_async(&mut con).await);
        assert!(e.contains("increment or decrement would overflow"), "{e}");
        let read: String = cmd(&["GET", "big"]).query_async(&mut con).await.unwrap();
        assert_eq!(read, max, "an overflow changes nothing");
        let e = error(
            cmd(&["DECRBY", "c", &i64::MIN.to_string()])
                .query_async(&mut con)
                .await,
        );
        assert!(e.contains("decrement would overflow"), "{e}");

        // DEL removes a counter; the next INCR counts from zero.
        let _: () = cmd(&["DEL", "c"]).query_async(&mut con).await.unwrap();
        let gone: Option<String> = cmd(&["GET", "c"]).query_async(&mut con).await.unwrap();
        assert_eq!(gone, None);
        assert_eq!(int(cmd(&["INCR", "c"]).query_async(&mut con).await), 1);
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client_and_cli_increment() {
    common::with_cluster(3, |cluster| async move {
        let c = client(&cluster, 2);
        let options = WriteOptions::default();
        let (value, context) = c.incr(b"a/b incr", -4, &options).await.unwrap();
        assert_eq!(value, -4);
        assert!(!context.is_empty());
        c.put(b"text", b"hello".to_vec(), &options).await.unwrap();
        match c.incr(b"text", 1, &options).await {
            Err(ClientError::Status { status: 409, body }) => {
                assert!(body.contains("not an integer"), "{body}")
            }
            other => panic!("expected 409, got {other:?}"),
        }
        // The cluster client routes the increment to one of the key's replicas.
        let cluster_client = ClusterClient::connect(c.clone()).await.unwrap();
        assert_eq!(
            cluster_client.incr(b"a/b incr", 1, &options).await.unwrap(),
            -3
        );
        // `POST /v1/kv/incr` with the key in the x-key header, as for other key requests.
        let response = reqwest::Client::new()
            .post(format!("{}/v1/kv/incr?by=3", cluster.peers[1].url()))
            .header("x-key", "a%2Fb%20incr")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["value"], 0);
        // POST anywhere else is refused.
        let response = reqwest::Client::new()
            .post(format!("{}/v1/kv/x", cluster.peers[1].url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);

        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"))
            .args(["incr", "a/b incr", "10", "--url", &cluster.peers[0].url()])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "10");
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"))
            .args(["incr", "a/b incr", "-10", "--url", &cluster.peers[1].url()])
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "0");
        cluster
    })
    .await;
}
