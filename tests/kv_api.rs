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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_are_reported_per_peer_and_summed_for_the_cluster() {
    with_cluster(3, |cluster| async move {
        let http = http();
        // 60 reads of "hot" spread over the three peers, 2 writes of each of 20 cold keys.
        for i in 0..60 {
            let url = format!("{}/v1/kv/hot", cluster.peers[i % 3].url());
            http.get(url).send().await.unwrap();
        }
        for i in 0..20 {
            let url = format!("{}/v1/kv/cold-{i}", cluster.peers[i % 3].url());
            for _ in 0..2 {
                http.put(&url).body("x").send().await.unwrap();
            }
        }
        let body: ringcache::api::http::HotKeysBody = http
            .get(format!(
                "{}/v1/hotkeys?scope=cluster&limit=5",
                cluster.peers[0].url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body.peers.len(), 3);
        assert_eq!(body.keys.len(), 5);
        assert_eq!(body.keys[0].key.as_deref(), Some("hot"));
        assert_eq!(body.keys[0].reads, 60, "exact: the sketches never filled");
        assert_eq!(body.keys[1].writes, 2);
        let one: ringcache::api::http::HotKeysBody = http
            .get(format!("{}/v1/hotkeys", cluster.peers[1].url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(one.keys[0].reads, 20, "one peer saw a third of the reads");
        cluster
    })
    .await;
}

/// The value of the sample `name{labels}` (labels as written in the exposition), if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload() {
    with_cluster(3, |cluster| async move {
        let http = http();
        let base = cluster.peers[0].url();
        for i in 0..7 {
            let r = http
                .put(format!("{base}/v1/kv/m{i}?w=all"))
                .body("v")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        }
        for i in 0..10 {
            http.get(format!("{base}/v1/kv/m{i}?r=one"))
                .send()
                .await
                .unwrap();
        }
        // Conditional writes: four creates that apply, two that find the key already there.
        for (key, expected) in [
            ("c0", 204),
            ("c1", 204),
            ("c0", 412),
            ("c2", 204),
            ("c1", 412),
            ("c3", 204),
        ] {
            let r = http
                .put(format!("{base}/v1/kv/{key}"))
                .header("if-none-match", "*")
                .body("v")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), expected, "{key}");
        }
        let bad = http
            .get(format!("{base}/v1/kv/m1?r=9"))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let response = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let text = response.text().await.unwrap();
        let count = |labels: &str| sample(&text, &format!("ringcache_requests_total{{{labels}}}"));
        assert_eq!(
            count(r#"op="put",consistency="all",outcome="ok""#),
            Some(7.0),
            "{text}"
        );
        assert_eq!(
            count(r#"op="get",consistency="one",outcome="ok""#),
            Some(7.0)
        );
        assert_eq!(
            count(r#"op="get",consistency="one",outcome="not_found""#),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"ringcache_request_duration_seconds_count{op="get",consistency="one"}"#
            ),
            Some(10.0)
        );
        assert_eq!(sample(&text, "ringcache_hits_total"), Some(7.0));
        assert_eq!(sample(&text, "ringcache_misses_total"), Some(3.0));
        // Every read here was at r=one on a replica: none needed a spare.
        assert_eq!(
            sample(&text, "ringcache_read_spares_asked_total"),
            Some(0.0)
        );
        assert_eq!(sample(&text, "ringcache_members_up"), Some(3.0));
        // Every conditional write this peer proposed is counted once, by how it ended, and
        // the counts add up to the `cas` requests it answered; one client on fresh keys meets
        // no contention, so no round was started again.
        let applied = sample(&text, "ringcache_conditional_applied_total");
        let not_applied = sample(&text, "ringcache_conditional_not_applied_total");
        assert_eq!(applied, Some(4.0), "{text}");
        assert_eq!(not_applied, Some(2.0));
        assert_eq!(
            count(r#"op="cas",consistency="serial",outcome="ok""#),
            applied
        );
        assert_eq!(
            count(r#"op="cas",consistency="serial",outcome="not_applied""#),
            not_applied
        );
        assert_eq!(
            sample(&text, "ringcache_conditional_retries_total"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "ringcache_keys"),
            Some(11.0),
            "N=3 of 3 peers: every key here"
        );
        // Every metric the example dashboard queries is one the peer serves.
        let dashboard = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/grafana-dashboard.json"
        ))
        .unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
        let mut named = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("ringcache_") {
                        named += 1;
                        let served = text
                            .lines()
                            .any(|l| l.starts_with(word) && !l.starts_with('#'));
                        assert!(served, "the dashboard queries {word}, which /metrics lacks");
                    }
                }
            }
        }
        assert!(named >= 15, "{named}");
        cluster
    })
    .await;
}

/// Status, headers (but `date`) and body of a response.
async fn answered(response: reqwest::Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    headers.sort();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// Key requests are answered by a direct path past the router (see
/// `api::http::DirectKeyRoute`); a `GET` or `HEAD` that carries a body still goes by the
/// router. Both must answer the same: values, siblings, misses, counters, bad queries, trace
/// ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reads_by_the_direct_path_answer_as_the_router_does() {
    common::with_cluster_args(1, &["--replicas=1"], |cluster| async move {
        let base = cluster.peers[0].url();
        let http = http();
        let kv = |k: &str| format!("{base}/v1/kv/{k}");
        for (key, value) in [("plain", "one"), ("twice", "a"), ("twice", "b")] {
            // Written without a context: the second write to `twice` stands beside the first.
            let put = http.put(kv(key)).body(value).send().await.unwrap();
            assert_eq!(put.status(), 204);
        }
        let incr = http.post(kv("count/incr")).body("5").send().await.unwrap();
        assert!(incr.status().is_success(), "{incr:?}");
        let direct_answers = || async {
            let text = http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("ringcache_http_direct_key_requests_total "))
                .expect("the direct path's counter is exported")
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        let direct_before = direct_answers().await;
        let reads = [
            // `/v1/kv/` names no key: no route (404), by either path, x-key or not.
            format!("{base}/v1/kv/"),
            kv("plain"),
            kv("plain?r=one"),
            kv("twice"),
            kv("missing"),
            kv("count"),
            kv("a%2Fslash%20and%20space"),
            kv("plain?r=banana"),
            kv("plain?r=9"),
            kv("plain?%FF=%FE"),
        ];
        let mut siblings_seen = false;
        let mut sent_without_body = 0;
        let methods = [reqwest::Method::GET, reqwest::Method::HEAD];
        for (url, method) in reads
            .iter()
            .flat_map(|u| methods.iter().map(move |m| (u, m)))
        {
            for (trace, x_key) in [(None, None), (Some("client-trace-0001"), Some("plain"))] {
                let send = |body: Option<&'static str>| {
                    let mut get = http.request(method.clone(), url);
                    if let Some(body) = body {
                        get = get.body(body);
                    }
                    if let Some(id) = trace {
                        get = get.header("x-request-id", id);
                    }
                    if let Some(key) = x_key {
                        get = get.header("x-key", key);
                    }
                    get.send()
                };
                sent_without_body += 1;
                let (direct, routed) = (send(None).await.unwrap(), send(Some("x")).await.unwrap());
                let (mut direct, mut routed) = (answered(direct).await, answered(routed).await);
                if trace.is_none() {
                    // A fresh trace id each: present on both, and otherwise ignored.
                    for (_, headers, _) in [&mut direct, &mut routed] {
                        let at = headers.iter().position(|(n, _)| n == "x-request-id");
                        assert!(
                            at.is_some(),
                            "{method} {url}: no x-request-id in {headers:?}"
                        );
                        headers.remove(at.unwrap());
                    }
                }
                assert_eq!(
                    direct, routed,
                    "{method} {url} (trace {trace:?}, x-key {x_key:?})"
                );
                siblings_seen |= direct.0 == 300;
            }
        }
        assert!(
            siblings_seen,
            "the concurrent writes to `twice` made no siblings"
        );
        // Every read sent without a body went by the direct path, but the four of `/v1/kv/`
        // (two methods, two variants): the comparison above was between the two paths.
        assert_eq!(
            direct_answers().await - direct_before,
            sent_without_body - 4,
            "key reads answered by the direct path"
        );
        cluster
    })
    .await;
}
