//! The rest of the key-value API over HTTP (issue 12): exists (`HEAD`), get-and-set
//! (`PUT …?return=old`), batches (`POST /v1/batch`) and pub/sub across peers
//! (`POST /v1/publish`, `GET /v1/subscribe` as server-sent events). Real peers on loopback.

#![allow(clippy::disallowed_methods)] // a deadline on the wall clock for reading events

mod common;

use common::with_cluster;
use ringcache::api::batch::{BatchOp, BatchRequest, BatchResponse};
use std::time::Duration;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_tells_whether_a_key_exists_and_return_old_gets_and_sets() {
    with_cluster(3, |cluster| async move {
        let base = cluster.peers[0].url();
        let http = http();
        let kv = |k: &str| format!("{base}/v1/kv/{k}");
        let head = http.head(kv("k")).send().await.unwrap();
        assert_eq!(head.status(), 404);
        // Get-and-set on a missing key: 404 (no old value), the new one is written.
        let set = http
            .put(kv("k") + "?return=old&w=all")
            .body("one")
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 404);
        assert!(set.headers().contains_key("x-causal-context"));
        let head = http.head(kv("k")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert!(head.headers().contains_key("x-causal-context"));
        assert_eq!(head.bytes().await.unwrap().len(), 0, "HEAD has no body");
        // Again: answers the old value and replaces it (no sibling).
        let set = http
            .put(kv("k") + "?return=old&w=all")
            .body("two")
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 200);
        assert_eq!(set.text().await.unwrap(), "one");
        let got = http.get(kv("k") + "?r=all").send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.text().await.unwrap(), "two");
        // A read carrying a context is a session read: it answers (never older than it).
        let token = got_context(&http, &kv("k")).await;
        let session = http
            .get(kv("k") + "?r=one")
            .header("x-causal-context", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(session.status(), 200);
        assert_eq!(session.text().await.unwrap(), "two");
        let forged = http
            .get(kv("k") + "?r=one")
            .header("x-causal-context", "not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 400);
        let bad = http
            .put(kv("k") + "?return=new")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        cluster
    })
    .await;
}

async fn got_context(http: &reqwest::Client, url: &str) -> String {
    let got = http.get(url).send().await.unwrap();
    got.headers()["x-causal-context"]
        .to_str()
        .unwrap()
        .to_string()
}

fn op(kind: &str, key: &str) -> BatchOp {
    BatchOp {
        op: kind.into(),
        key: Some(key.into()),
        ..BatchOp::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_every_operation_and_answers_in_order() {
    with_cluster(3, |cluster| async move {
        let url = format!("{}/v1/batch", cluster.peers[1].url());
        let http = http();
        let mut puts: Vec<BatchOp> = (0..50)
            .map(|i| BatchOp {
                value: Some(format!("v{i}")),
                w: Some("all".into()),
                ..op("put", &format!("key-{i}"))
            })
            .collect();
        puts.push(BatchOp {
            value_base64: Some("/w==".into()),
            ..op("put", "binary")
        });
        puts.push(op("dance", "k"));
        puts.push(BatchOp {
            w: Some("7".into()),
            value: Some("x".into()),
            ..op("put", "k")
        });
        let answer: BatchResponse = http
            .post(&url)
            .json(&BatchRequest { ops: puts })
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer.results.len(), 53);
        assert!(answer.results[..51].iter().all(|r| r.status == 204));
        assert_eq!(answer.results[51].status, 400, "{:?}", answer.results[51]);
        assert_eq!(answer.results[52].status, 400, "quorum larger than N");
        // Reads in reverse order, a delete and a missing key among them.
        let mut ops: Vec<BatchOp> = (0..50)
            .rev()
            .map(|i| BatchOp {
                r: Some("all".into()),
                ..op("get", &format!("key-{i}"))
            })
            .collect();
        ops.push(op("get", "binary"));
        ops.push(op("get", "never-written"));
        let answer: BatchResponse = http
            .post(&url)
            .json(&BatchRequest { ops })
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (n, result) in answer.results[..50].iter().enumerate() {
            assert_eq!(result.status, 200);
            assert_eq!(
                result.value.as_deref(),
                Some(format!("v{}", 49 - n).as_str())
            );
            assert!(result.context.is_some());
        }
        assert_eq!(answer.results[50].value_base64.as_deref(), Some("/w=="));
        assert_eq!(answer.results[51].status, 404);
        // Too many operations: refused whole.
        let ops: Vec<BatchOp> = (0..1001).map(|i| op("get", &format!("k{i}"))).collect();
        let refused = http
            .post(&url)
            .json(&BatchRequest { ops })
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        cluster
    })
    .await;
}

/// Reads server-sent events from `response` until `want` `message` events arrived (or 10 s).
async fn read_events(response: &mut reqwest::Response, want: usize) -> Vec<serde_json::Value> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < want {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events arrive in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                events.push(serde_json::from_str(data).unwrap());
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_on_one_peer_reaches_subscribers_on_every_peer() {
    with_cluster(3, |cluster| async move {
        let http = http();
        let mut exact = http
            .get(format!(
                "{}/v1/subscribe?channel=news",
                cluster.peers[0].url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(exact.status(), 200);
        let mut pattern = http
            .get(format!(
                "{}/v1/subscribe?pattern=ne%2A",
                cluster.peers[2].url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(pattern.status(), 200);
        // Subscriptions are registered once the response has started; publish on peer 1.
        let publish = |n: usize| {
            let http = http.clone();
            let url = format!("{}/v1/publish?channel=news", cluster.peers[1].url());
            async move {
                let r = http.post(url).body(format!("m{n}")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<serde_json::Value>().await.unwrap()
            }
        };
        let first = publish(0).await;
        assert_eq!(
            first["receivers"], 0,
            "no subscriber on the publishing peer"
        );
        for n in 1..5 {
            publish(n).await;
        }
        let got = read_events(&mut exact, 5).await;
        let payloads: Vec<&str> = got.iter().map(|e| e["payload"].as_str().unwrap()).collect();
        assert_eq!(payloads, ["m0", "m1", "m2", "m3", "m4"]);
        assert!(got.iter().all(|e| e["channel"] == "news"));
        let got = read_events(&mut pattern, 5).await;
        assert!(got.iter().all(|e| e["pattern"] == "ne*"), "{got:?}");
        let bad = http
            .post(format!("{}/v1/publish", cluster.peers[1].url()))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        drop(exact);
        drop(pattern);
        cluster
    })
    .await;
}
