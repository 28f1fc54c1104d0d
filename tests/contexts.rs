//! Causal contexts cannot be forged (issue 11): real peers on loopback, driven over HTTP.
//!
//! The attack these tests stop: a client sends a context naming every peer's actor with
//! counter `u64::MAX`; the coordinator merged it into the key's clock and minted the next dot
//! above it, which wrapped, so every later write to the key was acknowledged and never
//! readable. Now a context must carry the cluster's MAC (any peer's token is good on every
//! peer), and anything else gets 400 before it reaches the core.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{client, with_cluster};
use ringcache::api::causal_context::{self, ContextKey};
use ringcache::client::{ClientError, WriteOptions};
use ringcache::core::version_vector::VersionVector;
use ringcache::launcher::{spawn_peer, LocalCluster};
use ringcache::shell::auth::ClusterSecret;

fn w(level: &str, context: Option<&str>) -> WriteOptions {
    WriteOptions {
        w: Some(level.to_string()),
        context: context.map(str::to_string),
        ..WriteOptions::default()
    }
}

fn cluster_key(cluster: &LocalCluster) -> ContextKey {
    ContextKey::new(
        ClusterSecret::new(&cluster.options.secret)
            .unwrap()
            .context_key(),
    )
}

/// Asserts a write was refused with 400 because its context is not the cluster's.
fn assert_not_issued(result: Result<String, ClientError>, what: &str) {
    match result {
        Err(ClientError::Status { status: 400, body }) => assert!(
            body.contains("not issued by this cluster"),
            "{what}: 400 for another reason: {body}"
        ),
        other => panic!("{what} was not refused with 400: {other:?}"),
    }
}

fn bincode(context: &VersionVector) -> Vec<u8> {
    bincode::serde::encode_to_vec(context, bincode::config::standard()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_context_with_max_counters_is_refused_and_the_key_keeps_its_writes() {
    with_cluster(3, |cluster| async move {
        let key = cluster_key(&cluster);
        let peers: Vec<_> = (0..3).map(|i| client(&cluster, i)).collect();
        // A blind write through every peer: the key's clock names every peer's actor.
        for (i, peer) in peers.iter().enumerate() {
            let value = format!("from-{i}").into_bytes();
            peer.put(b"victim", value, &w("all", None)).await.unwrap();
        }
        let read = peers[0].get(b"victim", Some("all")).await.unwrap();
        let real = causal_context::decode(read.context().unwrap(), &key).unwrap();
        assert_eq!(real.len(), 3, "every peer's actor: {real:?}");
        let forged: VersionVector = real.iter().map(|(a, _)| (a.clone(), u64::MAX)).collect();

        // The attack as it worked before: the old format, bare bincode of the vector.
        let old_format = URL_SAFE_NO_PAD.encode(bincode(&forged));
        // The new format with a made-up MAC.
        let mut fake_mac = vec![1u8];
        fake_mac.extend(bincode(&forged));
        fake_mac.extend([0u8; 32]);
        let fake_mac = URL_SAFE_NO_PAD.encode(fake_mac);
        // The same counters minted under another secret.
        let other_key = ContextKey::new([7; 32]);
        let foreign = causal_context::encode(&forged, &other_key);
        for (what, token) in [
            ("an old-format token", &old_format),
            ("a made-up MAC", &fake_mac),
            ("another key's token", &foreign),
        ] {
            for peer in &peers {
                let with_token = w("all", Some(token));
                let put = peer.put(b"victim", b"x".to_vec(), &with_token).await;
                assert_not_issued(put, what);
                let delete = peer.delete(b"victim", &with_token).await;
                assert_not_issued(delete, what);
            }
        }
        // Even a token with the cluster's own MAC cannot carry counters near u64::MAX.
        let minted = causal_context::encode(&forged, &key);
        match peers[1]
            .put(b"victim", b"x".to_vec(), &w("all", Some(&minted)))
            .await
        {
            Err(ClientError::Status { status: 400, body }) => {
                assert!(body.contains("above the limit"), "{body}")
            }
            other => panic!("a counter of u64::MAX was not refused: {other:?}"),
        }

        // The key still takes writes and returns them: with the read's context, then blind.
        let resolved = peers[1]
            .put(b"victim", b"resolved".to_vec(), &w("all", read.context()))
            .await
            .unwrap();
        for peer in &peers {
            let read = peer.get(b"victim", Some("all")).await.unwrap();
            assert_eq!(read.values(), &[b"resolved".to_vec()]);
        }
        for round in 0..3 {
            let value = format!("round-{round}").into_bytes();
            let last = peers[round % 3]
                .put(b"victim", value.clone(), &w("all", Some(&resolved)))
                .await
                .unwrap();
            let read = peers[(round + 1) % 3]
                .get(b"victim", Some("all"))
                .await
                .unwrap();
            assert!(read.values().contains(&value), "round {round}: {read:?}");
            let clock = causal_context::decode(&last, &key).unwrap();
            assert!(clock.iter().all(|(_, c)| c < 100), "{clock:?}");
        }
        cluster
    })
    .await;
}

/// Contexts are issued by the cluster, not by one peer: a read's context from one peer
/// resolves siblings through another, and what it resolved is gone on every peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_from_one_peer_is_accepted_by_another_of_the_same_cluster() {
    with_cluster(3, |cluster| async move {
        let (a, b, c) = (
            client(&cluster, 0),
            client(&cluster, 1),
            client(&cluster, 2),
        );
        a.put(b"doc", b"from-a".to_vec(), &w("all", None))
            .await
            .unwrap();
        b.put(b"doc", b"from-b".to_vec(), &w("all", None))
            .await
            .unwrap();
        let read = a.get(b"doc", Some("all")).await.unwrap();
        assert_eq!(read.values().len(), 2, "two siblings: {read:?}");
        let written = b
            .put(b"doc", b"merged".to_vec(), &w("all", read.context()))
            .await
            .expect("another peer of the cluster accepts the context");
        for peer in [&a, &b, &c] {
            let read = peer.get(b"doc", Some("all")).await.unwrap();
            assert_eq!(read.values(), &[b"merged".to_vec()]);
        }
        // And a write's context from B is good on C.
        c.delete(b"doc", &w("all", Some(&written))).await.unwrap();
        let gone = a.get(b"doc", Some("all")).await.unwrap();
        assert!(gone.values().is_empty(), "{gone:?}");
        cluster
    })
    .await;
}

/// A real peer of another cluster (another secret) issues a context for the same key; this
/// cluster refuses it, and a context of its own still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_minted_by_a_cluster_with_another_secret_is_refused() {
    with_cluster(1, |cluster| async move {
        let mut stranger_options = common::options();
        stranger_options.secret = "not the cluster's secret at all".to_string();
        assert_ne!(stranger_options.secret, cluster.options.secret);
        let stranger = spawn_peer(&stranger_options, "S", &[]).await.unwrap();
        let theirs = ringcache::client::Client::new(&stranger.url());
        theirs
            .put(b"k", b"theirs".to_vec(), &w("one", None))
            .await
            .unwrap();
        let their_read = theirs.get(b"k", Some("one")).await.unwrap();
        let foreign = their_read.context().unwrap().to_string();
        stranger.stop().await;

        let ours = client(&cluster, 0);
        let own = ours
            .put(b"k", b"ours".to_vec(), &w("one", None))
            .await
            .unwrap();
        let with_foreign = w("one", Some(&foreign));
        let put = ours.put(b"k", b"x".to_vec(), &with_foreign).await;
        assert_not_issued(put, "another cluster's context");
        let delete = ours.delete(b"k", &with_foreign).await;
        assert_not_issued(delete, "another cluster's context");
        let read = ours.get(b"k", Some("one")).await.unwrap();
        assert_eq!(read.values(), &[b"ours".to_vec()]);
        ours.put(b"k", b"ours-2".to_vec(), &w("one", Some(&own)))
            .await
            .expect("the cluster's own context is accepted");
        let read = ours.get(b"k", Some("one")).await.unwrap();
        assert_eq!(read.values(), &[b"ours-2".to_vec()]);
        cluster
    })
    .await;
}
