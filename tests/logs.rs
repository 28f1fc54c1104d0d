//! `--log-format json`: every log line a peer writes is one JSON object (for log pipelines);
//! and request tracing: one request's trace id in its response, its coordinator's log lines
//! and its replicas'. Real peers on loopback, stopped at the end.

#![allow(clippy::disallowed_methods)] // spawns a process and waits on the wall clock

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn json_logs_are_one_object_per_line() {
    let mut peer = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--id",
            "logs",
            "--http",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--peer-addr",
            "127.0.0.1:0",
            "--resp",
            "127.0.0.1:0",
            "--max-memory",
            "64MiB",
        ])
        .env(
            "RINGCACHE_CLUSTER_SECRET",
            "a-test-secret-of-enough-length-0123",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the peer starts");
    let stderr = BufReader::new(peer.stderr.take().unwrap());
    let started = Instant::now();
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let started_line = line.contains("peer started");
        lines.push(line);
        if started_line || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(
        lines.iter().any(|l| l.contains("peer started")),
        "{lines:?}"
    );
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(object["level"].is_string(), "{line}");
        assert!(object["fields"]["message"].is_string(), "{line}");
    }
}

/// Every JSON log line of one peer's log file.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Whether `line` is a replica's (or the coordinator's) handling of a peer message sent for
/// the request traced `id`.
fn handles_peer_message_of(line: &serde_json::Value, id: &str) -> bool {
    line["fields"]["message"] == "peer message"
        && line["span"]["name"] == "peer_message"
        && line["span"]["trace_id"] == id
}

/// The `slow request` line of the request traced `id`.
fn slow_line<'a>(lines: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    lines
        .iter()
        .find(|l| l["fields"]["message"] == "slow request" && l["fields"]["trace_id"] == id)
}

/// Three peers on loopback log JSON, at debug for request tracing, and log every request as
/// slow (`--slow-request-ms 0`). One quorum write over HTTP with the client's own
/// `X-Request-Id`, one without, one over RESP: each request's trace id is in the response,
/// in the coordinator's `slow request` line with a timing per replica, and in the replicas'
/// handling of the messages sent for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_s_trace_id_joins_the_coordinator_s_and_replicas_log_lines() {
    let dir = std::env::temp_dir().join(format!("ringcache-trace-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut options = common::options();
    options.serve_args.extend(
        [
            "--log-format",
            "json",
            "--slow-request-ms",
            "0",
            "--replicas",
            "3",
        ]
        .map(String::from),
    );
    options.env.push((
        "RUST_LOG".into(),
        "ringcache=info,ringcache::trace=debug".into(),
    ));
    options.log_dir = Some(dir.clone());
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ids.clone();
    common::with_cluster_options(3, options, |cluster| async move {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/kv/traced?w=all", cluster.peers[0].url());
        let mine = http
            .put(&url)
            .header("x-request-id", "client-chosen-0001")
            .body("v1")
            .send()
            .await
            .unwrap();
        assert_eq!(mine.status(), 204);
        assert_eq!(mine.headers()["x-request-id"], "client-chosen-0001");
        // No id, or one that is not sane (a space): the peer makes one.
        for asked in [None, Some("not a sane id")] {
            let mut put = http.put(&url).body("v2");
            if let Some(id) = asked {
                put = put.header("x-request-id", id);
            }
            let made = put.send().await.unwrap();
            assert_eq!(made.status(), 204);
            let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            seen.lock().unwrap().push(id);
        }
        // The same write over RESP, on the same coordinator (at W=all too).
        let port = cluster.peers[0].resp_port().unwrap();
        let mut resp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for command in [
            &b"*3\r\n$14\r\nRC.CONSISTENCY\r\n$6\r\nquorum\r\n$3\r\nall\r\n"[..],
            b"*3\r\n$3\r\nSET\r\n$9\r\nresp-key1\r\n$1\r\nv\r\n",
        ] {
            resp.write_all(command).await.unwrap();
            let mut answer = [0u8; 5];
            resp.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"+OK\r\n");
        }
        cluster
    })
    .await;
    let coordinator = json_lines(&dir.join("A.log"));
    let replicas = [
        json_lines(&dir.join("B.log")),
        json_lines(&dir.join("C.log")),
    ];
    let mut traced: Vec<String> = vec!["client-chosen-0001".into()];
    traced.extend(ids.lock().unwrap().iter().cloned());
    // RESP has no response header: its id is the one its slow-request line names.
    let over_resp = coordinator
        .iter()
        .find(|l| l["fields"]["message"] == "slow request" && l["fields"]["via"] == "resp")
        .expect("the RESP write is logged as slow");
    assert_eq!(over_resp["fields"]["key"], "resp-key1");
    traced.push(
        over_resp["fields"]["trace_id"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    for id in &traced {
        let slow = slow_line(&coordinator, id)
            .unwrap_or_else(|| panic!("no slow request line names {id}: {coordinator:#?}"));
        // The line is logged in the request's span too, and names each replica's timing:
        // both others answered (W=all), each some milliseconds after it was asked.
        let timings = slow["fields"]["replicas"].as_str().unwrap();
        for replica in ["B", "C"] {
            let named = timings
                .split(", ")
                .any(|t| t.starts_with(&format!("{replica} ")) && t.ends_with("ms"));
            assert!(named, "{id}: {replica} missing from {timings:?}");
        }
        assert!(
            coordinator.iter().any(|l| handles_peer_message_of(l, id)),
            "the coordinator's handling of the acks of {id} is not traced"
        );
        for (name, lines) in ["B", "C"].iter().zip(&replicas) {
            let stored = lines.iter().any(|l| {
                handles_peer_message_of(l, id)
                    && l["span"]["kind"] == "Store"
                    && l["span"]["from"] == "A"
            });
            assert!(stored, "replica {name} logged no Store traced {id}");
        }
    }
    let http_slow = slow_line(&coordinator, "client-chosen-0001").unwrap();
    assert_eq!(http_slow["span"]["trace_id"], "client-chosen-0001");
    assert_eq!(http_slow["fields"]["via"], "http");
    let _ = std::fs::remove_dir_all(&dir);
}
