//! Three real peers on loopback, driven through the HTTP API: quorum reads and writes, peer
//! failures, siblings, deletes a replica missed, and strangers that cannot join: one with
//! another secret, and one that knows the cluster id but not the key its membership tag needs.

#![allow(clippy::disallowed_methods)] // tests measure wall-clock time

mod common;

use base64::Engine;
use common::{client, wait_for_live, with_cluster, with_cluster_args};
use ringcache::client::{ReadResult, WriteOptions};
use ringcache::core::types::NodeId;
use ringcache::launcher::{spawn_peer, LaunchOptions, LaunchedPeer, LocalCluster};
use ringcache::shell::auth::ClusterSecret;
use ringcache::shell::gossip::{Gossip, GossipSetup, GossipTiming};
use ringcache::shell::health::Health;
use std::time::{Duration, Instant};

fn w(level: &str) -> WriteOptions {
    WriteOptions {
        w: Some(level.to_string()),
        ..WriteOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_with_w2_then_read_with_r2_from_another_peer() {
    with_cluster(3, |cluster| async move {
        let a = client(&cluster, 0);
        let b = client(&cluster, 1);
        a.put(b"greeting", b"hello".to_vec(), &w("2"))
            .await
            .unwrap();
        let read = b.get(b"greeting", Some("2")).await.unwrap();
        assert_eq!(read.values(), &[b"hello".to_vec()]);
        // Binary keys and values travel intact.
        let key = [0u8, 255, b'/', b'%', b' '];
        let value: Vec<u8> = (0..=255u8).collect();
        a.put(&key, value.clone(), &w("all")).await.unwrap();
        assert_eq!(b.get(&key, Some("all")).await.unwrap().values(), &[value]);
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_peer_stopped_quorum_writes_and_reads_still_work() {
    with_cluster(3, |mut cluster| async move {
        let c = cluster.peers.pop().unwrap();
        c.kill().await;
        let a = client(&cluster, 0);
        let b = client(&cluster, 1);
        for i in 0..20 {
            let key = format!("k{i}");
            a.put(key.as_bytes(), b"v".to_vec(), &w("quorum"))
                .await
                .unwrap();
            let read = b.get(key.as_bytes(), Some("quorum")).await.unwrap();
            assert_eq!(read.values(), &[b"v".to_vec()], "key {key}");
        }
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_peers_stopped_a_quorum_write_fails_fast_with_503() {
    with_cluster(3, |mut cluster| async move {
        cluster.peers.pop().unwrap().kill().await;
        cluster.peers.pop().unwrap().kill().await;
        let a = client(&cluster, 0);
        wait_for_live(&cluster.peers[0].url(), 1).await;
        let started = Instant::now();
        let err = a.put(b"k", b"v".to_vec(), &w("quorum")).await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(err.status(), Some(503), "{err}");
        let body = err.to_string();
        assert!(
            body.contains("\"needed\":2") && body.contains("\"got\":1"),
            "{body}"
        );
        assert!(
            body.contains("not enough replicas"),
            "fails before waiting: {body}"
        );
        assert!(
            elapsed < Duration::from_millis(1500),
            "took {elapsed:?}, the deadline is 1.5 s"
        );
        // Nothing was written: a read at R=1 finds nothing.
        assert!(matches!(
            a.get(b"k", Some("one")).await.unwrap(),
            ReadResult::NotFound { .. }
        ));
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_writes_from_two_coordinators_become_siblings_and_context_resolves_them() {
    with_cluster(3, |cluster| async move {
        let a = client(&cluster, 0);
        let b = client(&cluster, 1);
        let c = client(&cluster, 2);
        a.put(b"doc", b"from-a".to_vec(), &w("all")).await.unwrap();
        b.put(b"doc", b"from-b".to_vec(), &w("all")).await.unwrap();
        let read = c.get(b"doc", Some("all")).await.unwrap();
        let mut values = read.values().to_vec();
        values.sort();
        assert_eq!(values, vec![b"from-a".to_vec(), b"from-b".to_vec()]);
        let resolve = WriteOptions {
            w: Some("all".into()),
            context: read.context().map(str::to_string),
            ..WriteOptions::default()
        };
        c.put(b"doc", b"merged".to_vec(), &resolve).await.unwrap();
        for peer in [&a, &b, &c] {
            let read = peer.get(b"doc", Some("all")).await.unwrap();
            assert_eq!(read.values(), &[b"merged".to_vec()]);
        }
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_reads_as_404_even_when_one_replica_missed_it() {
    // Anti-entropy off: it would repair C as soon as C is back, before the read this test is
    // about (tests/self_healing.rs covers that repair).
    with_cluster_args(
        3,
        &["--anti-entropy-interval-ms", "0"],
        |cluster| async move {
            let a = client(&cluster, 0);
            let c = client(&cluster, 2);
            let context = a.put(b"gone", b"v".to_vec(), &w("all")).await.unwrap();
            // Pause C until the others mark it down, so the delete skips it.
            cluster.peers[2].signal(libc::SIGSTOP).unwrap();
            wait_for_live(&cluster.peers[0].url(), 2).await;
            wait_for_live(&cluster.peers[1].url(), 2).await;
            let delete = WriteOptions {
                w: Some("quorum".into()),
                context: Some(context),
                ..WriteOptions::default()
            };
            a.delete(b"gone", &delete).await.unwrap();
            cluster.peers[2].signal(libc::SIGCONT).unwrap();
            for peer in &cluster.peers {
                wait_for_live(&peer.url(), 3).await;
            }
            // C really missed the delete: its own copy still has the value...
            let local = c.local_state(b"gone").await.unwrap();
            let held: Vec<Option<String>> =
                local.versions.iter().map(|v| v.value.clone()).collect();
            assert_eq!(
                held,
                vec![Some(base64::engine::general_purpose::STANDARD.encode(b"v"))],
                "C was expected to hold the stale value"
            );
            // ...yet a read that includes C's stale copy reconciles to absent.
            let read = c.get(b"gone", Some("all")).await.unwrap();
            assert!(matches!(read, ReadResult::NotFound { .. }), "{read:?}");
            cluster
        },
    )
    .await;
}

/// Every member `url`'s peer knows of, up or down.
async fn known_members(url: &str) -> Vec<String> {
    let status = ringcache::client::Client::new(url).cluster().await.unwrap();
    status["members"]["members"]
        .as_object()
        .expect("members in /v1/cluster")
        .keys()
        .cloned()
        .collect()
}

/// Starts a legitimate peer E after `intruder` began gossiping, and waits until every peer
/// (E included) sees A, B, C and E up. E's arrival shows gossip had time to carry the
/// intruder's state too: only then is its absence evidence. After that, the intruder must stay
/// unknown for another second of polling.
async fn a_late_joiner_is_seen_but_not(cluster: &LocalCluster, intruder: &str) -> LaunchedPeer {
    let joiner = spawn_peer(&cluster.options, "E", &[cluster.seed()])
        .await
        .unwrap();
    let mut urls: Vec<String> = cluster.peers.iter().map(|p| p.url()).collect();
    urls.push(joiner.url());
    let started = Instant::now();
    for url in &urls {
        loop {
            let live = ringcache::client::Client::new(url)
                .live_members()
                .await
                .unwrap();
            let known = known_members(url).await;
            assert!(
                !known.iter().any(|m| m == intruder),
                "{url} let {intruder} in: {known:?}"
            );
            if live == ["A", "B", "C", "E"] {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{url} never saw the late joiner E: {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for _ in 0..10 {
        for url in &urls {
            let known = known_members(url).await;
            assert_eq!(known, ["A", "B", "C", "E"], "{url} let {intruder} in");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    joiner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_cluster_secret_cannot_join() {
    with_cluster(3, |cluster| async move {
        let mut stranger_options: LaunchOptions = common::options();
        stranger_options.secret = "not the cluster's secret at all".to_string();
        let stranger = spawn_peer(&stranger_options, "D", &[cluster.seed()])
            .await
            .unwrap();
        let joiner = a_late_joiner_is_seen_but_not(&cluster, "D").await;
        let stranger_view = ringcache::client::Client::new(&stranger.url())
            .live_members()
            .await
            .unwrap();
        assert_eq!(stranger_view, vec!["D"]);
        stranger.stop().await;
        joiner.stop().await;
        cluster
    })
    .await;
}

/// Behind the datagram seal, the membership tag (a MAC under another key derived from the
/// secret) still keeps out a gossiper whose tag is wrong. The forger here gossips in-process
/// with the cluster's own id and seal key (as if one of the two keys had leaked) and a tag
/// under another key. (`tests/hostile.rs` shows a stranger without the seal key changes
/// nothing at all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_the_cluster_id_but_a_forged_tag_cannot_join() {
    with_cluster(3, |cluster| async move {
        let secret = ClusterSecret::new(&cluster.options.secret).unwrap();
        let wrong = ClusterSecret::new("not the cluster's secret at all").unwrap();
        assert_ne!(wrong.gossip_key(), secret.gossip_key());
        // chitchat binds its own socket: find a free port for it.
        let listen_addr = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let forger = Gossip::start(GossipSetup {
            listen_addr,
            advertise_addr: listen_addr,
            node: NodeId::from("F"),
            generation: 1,
            seeds: vec![cluster.seed().into()],
            cluster_id: secret.cluster_id(),
            gossip_key: wrong.gossip_key(),
            seal_key: secret.gossip_seal_key(),
            timing: GossipTiming {
                interval: Duration::from_millis(100),
                ..GossipTiming::default()
            },
            peer_addr: "127.0.0.1:9".parse().unwrap(),
            http_addr: "127.0.0.1:9".parse().unwrap(),
            health: Health::new(),
        })
        .await
        .unwrap();
        let joiner = a_late_joiner_is_seen_but_not(&cluster, "F").await;
        joiner.stop().await;
        forger.shutdown().await;
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_and_the_peer_keeps_serving() {
    with_cluster(1, |cluster| async move {
        let url = cluster.peers[0].url();
        let http = reqwest::Client::new();
        let status = |r: reqwest::Response| r.status().as_u16();
        let put = |q: &str, body: Vec<u8>| http.put(format!("{url}/v1/kv/k{q}")).body(body).send();
        assert_eq!(status(put("?w=7", b"v".to_vec()).await.unwrap()), 400);
        assert_eq!(status(put("?w=most", b"v".to_vec()).await.unwrap()), 400);
        assert_eq!(status(put("?ttl=-1", b"v".to_vec()).await.unwrap()), 400);
        let bad_ctx = http
            .put(format!("{url}/v1/kv/k"))
            .header("x-causal-context", "@@@")
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(status(bad_ctx), 400);
        let too_big = put("?w=one", vec![0u8; 2048]).await.unwrap();
        assert_eq!(status(too_big), 413);
        let long_key = "k".repeat(1100);
        let r = http
            .get(format!("{url}/v1/kv/{long_key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 400);
        let r = http.post(format!("{url}/v1/kv/k")).send().await.unwrap();
        assert_eq!(status(r), 405);
        // Still healthy, and a normal write works (N=3 > 1 peer, so W=1).
        let ok = put("?w=one", b"v".to_vec()).await.unwrap();
        assert_eq!(status(ok), 204);
        let health = http.get(format!("{url}/health")).send().await.unwrap();
        assert_eq!(status(health), 200);
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_is_marked_down_and_up_again_when_it_returns() {
    with_cluster(3, |mut cluster| async move {
        cluster.peers.pop().unwrap().kill().await;
        wait_for_live(&cluster.peers[0].url(), 2).await;
        wait_for_live(&cluster.peers[1].url(), 2).await;
        let restarted = spawn_peer(&cluster.options, "C", &[cluster.seed()])
            .await
            .unwrap();
        cluster.peers.push(restarted);
        for peer in &cluster.peers {
            wait_for_live(&peer.url(), 3).await;
        }
        // The restarted peer takes part in quorums again.
        let c = client(&cluster, 2);
        c.put(b"back", b"v".to_vec(), &w("all")).await.unwrap();
        let read = client(&cluster, 0).get(b"back", Some("all")).await.unwrap();
        assert_eq!(read.values(), &[b"v".to_vec()]);
        cluster
    })
    .await;
}
