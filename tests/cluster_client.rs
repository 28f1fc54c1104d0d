//! The ring-aware client (issue 12): it learns the ring from any peer, sends each key to a
//! live replica (so no peer has to forward its writes), splits many-key requests into one
//! batch per peer, and moves on when a peer is gone. Real peers on loopback.

mod common;

use common::{client, with_cluster_args};
use ringcache::client::{ClusterClient, WriteOptions};

fn all() -> WriteOptions {
    WriteOptions {
        w: Some("all".into()),
        ..WriteOptions::default()
    }
}

async fn forwarded(cluster: &ringcache::launcher::LocalCluster) -> u64 {
    let mut total = 0;
    for i in 0..cluster.peers.len() {
        total += client(cluster, i)
            .stats(false)
            .await
            .unwrap()
            .stats
            .writes_forwarded;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_go_straight_to_their_replicas_and_batches_split_by_peer() {
    // Four peers, two copies of each key: half the peers are not replicas of a given key.
    with_cluster_args(4, &["--replicas", "2"], |cluster| async move {
        let ring = ClusterClient::connect(client(&cluster, 0)).await.unwrap();
        for i in 0..100 {
            let key = format!("key-{i}");
            let peer = ring.route(key.as_bytes());
            let local = peer.local_state(key.as_bytes()).await.unwrap();
            assert!(
                local.replica,
                "{key} routed to {} which is no replica",
                local.id
            );
            ring.put(key.as_bytes(), format!("v{i}").into_bytes(), &all())
                .await
                .unwrap();
        }
        assert_eq!(forwarded(&cluster).await, 0, "no write needed a forward");
        // The same writes through one fixed peer are forwarded about half the time.
        let fixed = client(&cluster, 0);
        for i in 0..100 {
            fixed
                .put(format!("other-{i}").as_bytes(), b"x".to_vec(), &all())
                .await
                .unwrap();
        }
        assert!(forwarded(&cluster).await > 20, "a fixed peer forwards");
        // Many keys at once: one batch per peer, results in the order asked.
        let keys: Vec<Vec<u8>> = (0..100)
            .rev()
            .map(|i| format!("key-{i}").into_bytes())
            .collect();
        let got = ring.get_many(&keys, Some("all")).await.unwrap();
        for (n, result) in got.iter().enumerate() {
            assert_eq!(result.status, 200);
            assert_eq!(
                result.value.as_deref(),
                Some(format!("v{}", 99 - n).as_str())
            );
        }
        let items = (0..50)
            .map(|i| (format!("many-{i}").into_bytes(), vec![i as u8, 0xff]))
            .collect();
        let written = ring.put_many(items, &all()).await.unwrap();
        assert!(written.iter().all(|r| r.status == 204));
        let read = client(&cluster, 3)
            .get(b"many-7", Some("all"))
            .await
            .unwrap();
        assert_eq!(read.values(), &[vec![7, 0xff]]);
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_is_routed_around() {
    with_cluster_args(3, &["--replicas", "3"], |mut cluster| async move {
        let ring = ClusterClient::connect(client(&cluster, 0)).await.unwrap();
        for i in 0..30 {
            ring.put(format!("k{i}").as_bytes(), b"v".to_vec(), &all())
                .await
                .unwrap();
        }
        // Stop the peer most keys go to first; reads still work (retried on the next peer),
        // and quorum writes too.
        let gone = cluster.peers.remove(2);
        let gone_url = gone.url();
        gone.stop().await;
        let quorum = WriteOptions {
            w: Some("quorum".into()),
            ..WriteOptions::default()
        };
        for i in 0..30 {
            let key = format!("k{i}");
            let read = ring.get(key.as_bytes(), Some("one")).await.unwrap();
            assert_eq!(read.values(), &[b"v".to_vec()]);
            ring.put(key.as_bytes(), b"w".to_vec(), &quorum)
                .await
                .unwrap();
        }
        // Once gossip marks it down, the refreshed view never routes to it.
        common::wait_for_live(&cluster.peers[0].url(), 2).await;
        ring.refresh().await.unwrap();
        for i in 0..30 {
            assert_ne!(ring.route(format!("k{i}").as_bytes()).base(), gone_url);
        }
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_table_lists_every_peer_with_its_figures() {
    with_cluster_args(3, &[], |mut cluster| async move {
        let seed = client(&cluster, 0);
        for i in 0..20 {
            seed.put(format!("t{i}").as_bytes(), b"v".to_vec(), &all())
                .await
                .unwrap();
        }
        let rows = ringcache::client::cluster_table::gather(&seed)
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert!(
            rows.iter().all(|r| r.state == "up" && r.keys == Some(20)),
            "{rows:?}"
        );
        assert!(rows.iter().all(|r| r.moving_out == Some((0, 0))));
        // A stopped peer is listed as down once gossip sees it, without being asked.
        let gone = cluster.peers.remove(2);
        let gone_id = gone.addresses.id.to_string();
        gone.stop().await;
        common::wait_for_live(&cluster.peers[0].url(), 2).await;
        let rows = ringcache::client::cluster_table::gather(&seed)
            .await
            .unwrap();
        let row = rows.iter().find(|r| r.id == gone_id).expect("listed");
        assert_eq!(row.state, "down");
        assert_eq!(row.keys, None);
        let table = ringcache::client::cluster_table::render(&rows);
        assert_eq!(table.lines().count(), 4, "{table}");
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opt_in_near_cache_answers_repeated_r_one_reads_of_a_hot_key() {
    with_cluster_args(3, &[], |cluster| async move {
        let ring = ClusterClient::connect(client(&cluster, 0))
            .await
            .unwrap()
            .with_near_cache(std::time::Duration::from_secs(30), 100);
        ring.put(b"hot", b"v1".to_vec(), &all()).await.unwrap();
        let hits_before = cluster_reads(&cluster).await;
        for _ in 0..50 {
            let read = ring.get(b"hot", Some("one")).await.unwrap();
            assert_eq!(read.values(), &[b"v1".to_vec()]);
        }
        assert_eq!(ring.near_cache_hits(), 49);
        assert_eq!(
            cluster_reads(&cluster).await - hits_before,
            1,
            "one read reached the cluster"
        );
        // Quorum reads are never cached; this client's own write drops the entry.
        ring.get(b"hot", Some("quorum")).await.unwrap();
        assert_eq!(ring.near_cache_hits(), 49);
        let overwrite = WriteOptions {
            overwrite: true,
            ..all()
        };
        ring.put(b"hot", b"v2".to_vec(), &overwrite).await.unwrap();
        let read = ring.get(b"hot", Some("one")).await.unwrap();
        assert_eq!(read.values(), &[b"v2".to_vec()]);
        cluster
    })
    .await;
}

async fn cluster_reads(cluster: &ringcache::launcher::LocalCluster) -> u64 {
    let mut total = 0;
    for i in 0..cluster.peers.len() {
        let s = client(cluster, i).stats(false).await.unwrap().stats;
        total += s.hits + s.misses;
    }
    total
}
