//! Conditional writes on a cluster of three peer processes (N=3), each decided by a Paxos
//! round: of many clients racing to create one key through every peer, over HTTP and over
//! RESP, exactly one wins; If-Match with a context applies once; RESP's SET NX/XX/IFEQ,
//! SETNX and RC.CAS answer as Redis (and Valkey) do.
//!
//! Loopback only, bounded in time, every peer stopped at the end (tests/common).

mod common;

use common::client;
use futures_util::future::join_all;
use ringcache::client::{CasOutcome, Expected, WriteOptions};
use ringcache::launcher::LocalCluster;

fn resp_url(cluster: &LocalCluster, peer: usize) -> String {
    let port = cluster.peers[peer].resp_port().expect("RESP is on");
    format!("redis://127.0.0.1:{port}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_racing_creates_through_every_peer_exactly_one_wins() {
    common::with_cluster(3, |cluster| async move {
        let clients: Vec<_> = (0..3).map(|i| client(&cluster, i)).collect();
        let mut decided = 0;
        for round in 0..5 {
            let key = format!("lock-{round}");
            let attempts = (0..12).map(|i| {
                let (c, key) = (clients[i % 3].clone(), key.clone());
                async move {
                    let value = format!("owner-{i}").into_bytes();
                    c.put_if(key.as_bytes(), value, &Expected::Absent, None)
                        .await
                }
            });
            let mut winners = Vec::new();
            let mut timed_out = 0;
            for (i, outcome) in join_all(attempts).await.into_iter().enumerate() {
                match outcome {
                    Ok(CasOutcome::Applied(_)) => winners.push(format!("owner-{i}")),
                    Ok(CasOutcome::NotApplied { .. }) => {}
                    // Contention may run a round out of time: never a second winner.
                    Err(e) => {
                        assert_eq!(e.status(), Some(503), "{e}");
                        timed_out += 1;
                    }
                }
            }
            assert!(winners.len() <= 1, "{key}: several winners {winners:?}");
            if timed_out == 0 {
                assert_eq!(winners.len(), 1, "{key}: every racer answered, none won");
                decided += 1;
            }
            let read = clients[0].get(key.as_bytes(), Some("all")).await.unwrap();
            if let [winner] = winners.as_slice() {
                assert_eq!(read.values(), &[winner.clone().into_bytes()]);
            }
        }
        assert!(decided > 0, "every round had a racer time out");
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_applies_once_per_context_and_412_says_what_is_there() {
    common::with_cluster(3, |cluster| async move {
        let (a, b) = (client(&cluster, 0), client(&cluster, 1));
        a.put(b"k", b"v1".to_vec(), &WriteOptions::default())
            .await
            .unwrap();
        let read = b.get(b"k", Some("all")).await.unwrap();
        let token = read.context().unwrap().to_string();
        let expected = Expected::Context(token);
        let first = a
            .put_if(b"k", b"v2".to_vec(), &expected, None)
            .await
            .unwrap();
        assert!(matches!(first, CasOutcome::Applied(_)), "{first:?}");
        match b
            .put_if(b"k", b"v3".to_vec(), &expected, None)
            .await
            .unwrap()
        {
            CasOutcome::NotApplied { values, context } => {
                assert_eq!(values, vec![b"v2".to_vec()]);
                // The answer's context is fresh: a retry with it applies.
                let retry = Expected::Context(context);
                let again = b.put_if(b"k", b"v3".to_vec(), &retry, None).await.unwrap();
                assert!(matches!(again, CasOutcome::Applied(_)), "{again:?}");
            }
            other => panic!("{other:?}"),
        }
        // If-Match: * needs a value; If-None-Match: * needs none.
        let absent = a
            .put_if(b"nothing", b"x".to_vec(), &Expected::Present, None)
            .await
            .unwrap();
        assert!(matches!(absent, CasOutcome::NotApplied { .. }));
        // A malformed token is a 400, never a write.
        let bad = a
            .put_if(
                b"k",
                b"x".to_vec(),
                &Expected::Context("forged".into()),
                None,
            )
            .await;
        assert_eq!(bad.unwrap_err().status(), Some(400));
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_conditional_writes_answer_as_redis_does() {
    common::with_cluster(3, |cluster| async move {
        let urls: Vec<String> = (0..3).map(|i| resp_url(&cluster, i)).collect();
        let mut cons = Vec::new();
        for url in &urls {
            let c = redis::Client::open(url.as_str()).unwrap();
            // Twelve racers through three coordinators right after the cluster formed, while
            // every acceptor is still recovering (a promise counts only beside all three): the
            // race can take over a second to settle, longer than redis-rs's default 500 ms
            // response timeout.
            let config = redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(std::time::Duration::from_secs(10)));
            cons.push(
                c.get_multiplexed_async_connection_with_config(&config)
                    .await
                    .unwrap(),
            );
        }
        // Twelve SET NX racing through three peers: one OK, the rest nil.
        let racers = (0..12).map(|i| {
            let mut con = cons[i % 3].clone();
            async move {
                redis::cmd("SET")
                    .arg("lock")
                    .arg(format!("owner-{i}"))
                    .arg("NX")
                    .arg("EX")
                    .arg(60)
                    .query_async::<Option<String>>(&mut con)
                    .await
            }
        });
        let oks = join_all(racers)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(Some(s)) if s == "OK"))
            .count();
        assert_eq!(oks, 1, "exactly one SET NX wins");

        let con = &mut cons[0];
        let reply: Option<String> = redis::cmd("SET")
            .arg("k")
            .arg("v1")
            .arg("XX")
            .query_async(con)
            .await
            .unwrap();
        assert_eq!(reply, None, "XX on a missing key writes nothing");
        let created: i64 = redis::cmd("SETNX")
            .arg("k")
            .arg("v1")
            .query_async(con)
            .await
            .unwrap();
        assert_eq!(created, 1);
        let again: i64 = redis::cmd("SETNX")
            .arg("k")
            .arg("v9")
            .query_async(con)
            .await
            .unwrap();
        assert_eq!(again, 0);
        let ifeq_miss: Option<String> = redis::cmd("SET")
            .arg("k")
            .arg("v2")
            .arg("IFEQ")
            .arg("nope")
            .query_async(con)
            .await
            .unwrap();
        assert_eq!(ifeq_miss, None);
        let ifeq_get: Option<String> = redis::cmd("SET")
            .arg("k")
            .arg("v2")
            .arg("IFEQ")
            .arg("v1")
            .arg("GET")
            .query_async(con)
            .await
            .unwrap();
        assert_eq!(ifeq_get.as_deref(), Some("v1"), "GET answers the old value");

        // RC.CAS with the context RC.GETALL gave: applies once.
        let (token, _values): (String, Vec<String>) = redis::cmd("RC.GETALL")
            .arg("k")
            .query_async(con)
            .await
            .unwrap();
        let new_token: Option<String> = redis::cmd("RC.CAS")
            .arg("k")
            .arg(&token)
            .arg("v3")
            .query_async(con)
            .await
            .unwrap();
        assert!(new_token.is_some());
        let stale: Option<String> = redis::cmd("RC.CAS")
            .arg("k")
            .arg(&token)
            .arg("v4")
            .query_async(con)
            .await
            .unwrap();
        assert_eq!(stale, None, "the key changed since that context");
        let value: String = redis::cmd("GET").arg("k").query_async(con).await.unwrap();
        assert_eq!(value, "v3");
        cluster
    })
    .await;
}
