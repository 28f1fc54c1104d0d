//! Bounded keys (issue 11): blind writes cannot grow a key's siblings without bound. Real
//! peers on loopback, driven over HTTP.
//!
//! The attack these tests stop: 200 blind PUTs to one key made 200 siblings and a 26 MB reply.
//! Now a blind write past `--max-siblings` is refused with 409 and a message that says to read
//! and write back with the context; no acknowledged sibling is dropped, and a write with the
//! context resolves them.

mod common;

use common::{client, with_cluster_args};
use ringcache::client::{ClientError, WriteOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_from_every_peer_never_pile_up_siblings() {
    let args = ["--max-siblings", "8"];
    with_cluster_args(3, &args, |cluster| async move {
        let overwrite = WriteOptions {
            w: Some("all".into()),
            overwrite: true,
            ..WriteOptions::default()
        };
        // Two blind writes make siblings; Redis-style overwrites through any peer replace
        // them and each other, and never reach the cap.
        let blind = WriteOptions {
            w: Some("all".into()),
            ..WriteOptions::default()
        };
        client(&cluster, 0)
            .put(b"k", b"x".to_vec(), &blind)
            .await
            .unwrap();
        client(&cluster, 1)
            .put(b"k", b"y".to_vec(), &blind)
            .await
            .unwrap();
        for i in 0..30 {
            let peer = client(&cluster, i % 3);
            peer.put(b"k", format!("v{i}").into_bytes(), &overwrite)
                .await
                .unwrap();
            let read = client(&cluster, (i + 1) % 3)
                .get(b"k", Some("all"))
                .await
                .unwrap();
            assert_eq!(read.values(), &[format!("v{i}").into_bytes()]);
        }
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_writes_past_the_sibling_cap_get_409_and_the_context_resolves_them() {
    let args = ["--max-siblings", "8"];
    with_cluster_args(3, &args, |cluster| async move {
        let a = client(&cluster, 0);
        let blind = WriteOptions {
            w: Some("all".into()),
            ..WriteOptions::default()
        };
        let mut refused = 0;
        for i in 0..200 {
            match a.put(b"hot", format!("v{i}").into_bytes(), &blind).await {
                Ok(_) => {}
                Err(ClientError::Status { status: 409, body }) => {
                    assert!(
                        body.contains("write back with its causal context"),
                        "{body}"
                    );
                    refused += 1;
                }
                Err(e) => panic!("write {i}: {e}"),
            }
        }
        assert_eq!(refused, 192, "every blind write past 8 siblings is refused");
        let read = client(&cluster, 1).get(b"hot", Some("all")).await.unwrap();
        assert_eq!(
            read.values().len(),
            8,
            "the 8 acknowledged siblings are all there"
        );
        let stats = a.stats(false).await.unwrap().stats;
        assert_eq!(stats.writes_refused_by_sibling_cap, 192);
        assert_eq!(stats.largest_sibling_set, 8);
        // Writing back with the context read resolves them into one value.
        let resolve = WriteOptions {
            w: Some("all".into()),
            context: read.context().map(str::to_string),
            ..WriteOptions::default()
        };
        a.put(b"hot", b"resolved".to_vec(), &resolve).await.unwrap();
        let read = client(&cluster, 2).get(b"hot", Some("all")).await.unwrap();
        assert_eq!(read.values(), &[b"resolved".to_vec()]);
        cluster
    })
    .await;
}
