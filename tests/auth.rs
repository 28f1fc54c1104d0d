//! Clients are authenticated (issue 11): with `--client-token`, every HTTP request but
//! `GET /health` needs `Authorization: Bearer <token>`; a peer will not serve HTTP beyond
//! loopback without a token unless told `--insecure-no-auth`; and it never gossips an
//! unspecified address (`0.0.0.0`) for others to connect to.
//!
//! Real peers, on 127.0.0.1 only, each test bounded in time and every process stopped.

mod common;

use ringcache::client::{Client, WriteOptions};
use ringcache::launcher::{LaunchOptions, SECRET_ENV};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const TOKEN: &str = "test-client-token-0123456789";
const TOKEN_ENV: &str = ringcache::api::auth::TOKEN_ENV;

fn with_token(replicas: usize) -> LaunchOptions {
    let mut options = common::options();
    options.client_token = Some(TOKEN.to_string());
    options.serve_args.push(format!("--replicas={replicas}"));
    options
}

/// Status, `WWW-Authenticate` and JSON body of a raw request.
async fn raw(
    method: reqwest::Method,
    url: &str,
    authorization: Option<&str>,
    body: &'static str,
) -> (u16, Option<String>, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(5))
        .body(body);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, challenge, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_only_requests_that_carry_it_are_served() {
    common::with_cluster_options(2, with_token(2), |cluster| async move {
        let url = cluster.peers[0].url();
        let key_url = format!("{url}/v1/kv/k");
        let good = Client::with_token(&url, Some(TOKEN)).unwrap();
        let both = WriteOptions {
            w: Some("2".into()),
            ..WriteOptions::default()
        };
        good.put(b"k", b"v1".to_vec(), &both).await.unwrap();

        // Without the token, or with a wrong one: 401, a JSON error and a Bearer challenge,
        // for every operation and path but the health check.
        use reqwest::Method;
        let refused = [
            (Method::GET, key_url.clone()),
            (Method::PUT, key_url.clone()),
            (Method::DELETE, key_url.clone()),
            (Method::PATCH, format!("{key_url}?persist")),
            (Method::GET, format!("{url}/v1/cluster")),
            (Method::GET, format!("{url}/v1/stats")),
            (Method::GET, format!("{url}/v1/local/k")),
            (Method::POST, format!("{url}/health")),
            (Method::GET, format!("{url}/no/such/path")),
        ];
        let wrong = format!("Bearer {TOKEN}x");
        let bad_headers = [
            None,
            Some(wrong.as_str()),
            Some("Bearer "),
            Some("Basic dGVzdDp0ZXN0"),
            Some(TOKEN),
        ];
        for (method, target) in &refused {
            for authorization in bad_headers {
                let (status, challenge, body) =
                    raw(method.clone(), target, authorization, "evil").await;
                assert_eq!(status, 401, "{method} {target} with {authorization:?}");
                assert!(
                    challenge
                        .as_deref()
                        .is_some_and(|c| c.starts_with("Bearer")),
                    "{method} {target}: challenge {challenge:?}"
                );
                assert!(body["error"].is_string(), "{method} {target}: body {body}");
            }
        }
        // A key read with no body (which a valid token would send by the direct path past
        // the router) is refused just the same.
        for authorization in bad_headers {
            let (status, challenge, _) = raw(Method::GET, &key_url, authorization, "").await;
            assert_eq!(status, 401, "GET {key_url} with {authorization:?}, no body");
            assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));
        }
        // The bare client is refused too.
        let bare = Client::new(&url);
        assert_eq!(bare.get(b"k", None).await.unwrap_err().status(), Some(401));
        let mistaken = Client::with_token(&url, Some("not-the-token-at-all")).unwrap();
        let put = mistaken
            .put(b"k", b"evil".to_vec(), &WriteOptions::default())
            .await;
        assert_eq!(put.unwrap_err().status(), Some(401));

        // The refused writes changed nothing, on either replica.
        let read = good.get(b"k", Some("all")).await.unwrap();
        assert_eq!(read.values(), &[b"v1".to_vec()]);
        for peer in &cluster.peers {
            let local = Client::with_token(&peer.url(), Some(TOKEN))
                .unwrap()
                .local_state(b"k")
                .await
                .unwrap();
            assert_eq!(local.versions.len(), 1, "{local:?}");
            assert!(local.versions[0].value.is_some(), "{local:?}");
        }

        // The health check answers without a token.
        let (status, _, body) = raw(Method::GET, &format!("{url}/health"), None, "").await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "ok");

        // The right token reads, writes, deletes, and sums the cluster's stats (the peer
        // sends the token on to the other).
        let (status, _, _) = raw(
            Method::PUT,
            &key_url,
            Some(&format!("bearer {TOKEN}")),
            "v2",
        )
        .await;
        assert_eq!(status, 204);
        // (sent without a context, the raw write stands beside v1 as a sibling)
        let read = good.get(b"k", Some("all")).await.unwrap();
        assert!(read.values().contains(&b"v2".to_vec()), "{read:?}");
        let resolve = WriteOptions {
            context: read.context().map(str::to_string),
            ..both.clone()
        };
        let after_v3 = good.put(b"k", b"v3".to_vec(), &resolve).await.unwrap();
        let read = good.get(b"k", Some("all")).await.unwrap();
        assert_eq!(read.values(), &[b"v3".to_vec()]);
        let both = WriteOptions {
            context: Some(after_v3),
            ..resolve
        };
        good.delete(b"k", &both).await.unwrap();
        assert!(good
            .get(b"k", Some("all"))
            .await
            .unwrap()
            .values()
            .is_empty());
        let stats = good.stats(true).await.unwrap();
        assert_eq!(stats.peers.len(), 2, "{stats:?}");
        cluster
    })
    .await;
}

/// Runs the `ringcache` CLI with `args`; returns (success, stdout, stderr).
async fn cli(args: &[&str], token_env: Option<&str>) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"));
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    match token_env {
        Some(t) => command.env(TOKEN_ENV, t),
        None => command.env_remove(TOKEN_ENV),
    };
    let out = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the CLI finished in time")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_token_from_its_flag_or_the_environment() {
    common::with_cluster_options(1, with_token(1), |cluster| async move {
        let url = cluster.peers[0].url();
        let (ok, _, err) = cli(&["put", "k", "hello", "--url", &url], None).await;
        assert!(!ok, "a put without the token must fail");
        assert!(err.contains("401"), "{err}");

        let (ok, _, err) = cli(&["put", "k", "hello", "--url", &url], Some(TOKEN)).await;
        assert!(ok, "put with the token in the environment: {err}");
        let (ok, out, err) = cli(&["get", "k", "--url", &url, "--client-token", TOKEN], None).await;
        assert!(ok, "get with --client-token: {err}");
        assert_eq!(out.trim(), "hello");
        let (ok, _, err) = cli(&["stats", "--cluster", "--url", &url], Some(TOKEN)).await;
        assert!(ok, "stats with the token: {err}");
        let (ok, _, err) = cli(&["get", "k", "--url", &url], Some("wrong-token-0123456789")).await;
        assert!(!ok && err.contains("401"), "a wrong token must fail: {err}");
        cluster
    })
    .await;
}

/// A `serve` child with the given extra arguments, stderr captured.
fn serve(extra: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["serve", "--id", "S", "--gossip-interval-ms", "100"])
        .args(["--replicas", "1"])
        .args(
            [
                ("--gossip", "127.0.0.1:0"),
                ("--peer-addr", "127.0.0.1:0"),
                // Not the default 127.0.0.1:6380, which another peer or test may hold.
                ("--resp", "127.0.0.1:0"),
            ]
            .into_iter()
            .filter(|(flag, _)| !extra.contains(flag))
            .flat_map(|(flag, addr)| [flag, addr]),
        )
        .args(extra)
        .env(SECRET_ENV, "a secret of the test cluster, long enough")
        .env_remove(TOKEN_ENV)
        .env("RUST_LOG", "ringcache=info,warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits for a `serve` child that must refuse to start; returns its stderr.
async fn refused(extra: &[&str]) -> String {
    let child = serve(extra);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("serve exited in time")
        .unwrap();
    assert!(!out.status.success(), "serve {extra:?} must not start");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("READY"),
        "serve {extra:?} became ready"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts a `serve` child that must come up; returns its advertised HTTP URL and stderr
/// so far, after checking `/health`, and stops it.
async fn starts(extra: &[&str], token: Option<&str>) -> (String, String) {
    let mut child = serve(extra);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(json) = line.strip_prefix("READY ") {
                return serde_json::from_str::<serde_json::Value>(json).unwrap();
            }
        }
        panic!("serve {extra:?} exited before it was ready");
    })
    .await
    .expect("serve was ready in time");
    let http = ready["http"].as_str().unwrap().to_string();
    assert!(http.starts_with("127.0.0.1:"), "advertised {ready}");
    assert!(ready["gossip"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(ready["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let url = format!("http://{http}");
    let (status, _, _) = raw(reqwest::Method::GET, &format!("{url}/health"), None, "").await;
    assert_eq!(status, 200);
    // The cluster view gossips the advertised address, not 0.0.0.0.
    // /health answers without asking the shards, so the view may not list this peer yet.
    let client = Client::with_token(&url, token).unwrap();
    let mut view = client.cluster().await.unwrap();
    for _ in 0..50 {
        if !view["members"]["members"]["S"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = client.cluster().await.unwrap();
    }
    let me = &view["members"]["members"]["S"];
    for (field, key) in [
        ("http_addr", "http"),
        ("peer_addr", "peer"),
        ("gossip_addr", "gossip"),
    ] {
        assert_eq!(me[field], ready[key], "{view}");
        assert!(
            me[field].as_str().unwrap().starts_with("127.0.0.1:"),
            "{view}"
        );
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let mut stderr = String::new();
    let mut pipe = child.stderr.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        child.wait().await.unwrap();
        pipe.read_to_string(&mut stderr).await.unwrap();
    })
    .await
    .expect("serve stopped after SIGTERM");
    (url, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_will_not_open_http_beyond_loopback_without_a_token() {
    let _guard = common::ONE_CLUSTER_AT_A_TIME.lock().await;
    let err = refused(&["--http", "0.0.0.0:0"]).await;
    assert!(err.contains("without a client token"), "{err}");
    assert!(err.contains("--insecure-no-auth"), "{err}");

    // Told to, it serves open, and says so loudly; an unspecified bind needs --advertise.
    let err = refused(&["--http", "0.0.0.0:0", "--insecure-no-auth"]).await;
    assert!(err.contains("--advertise"), "{err}");
    let (_, err) = starts(
        &[
            "--http",
            "0.0.0.0:0",
            "--insecure-no-auth",
            "--advertise",
            "127.0.0.1",
        ],
        None,
    )
    .await;
    assert!(err.contains("INSECURE"), "no warning in: {err}");

    // With a token it starts without --insecure-no-auth, and without the warning; every
    // address bound unspecified is gossiped with the --advertise host.
    let (_, err) = starts(
        &[
            "--http",
            "0.0.0.0:0",
            "--gossip",
            "0.0.0.0:0",
            "--peer-addr",
            "0.0.0.0:0",
            "--advertise",
            "127.0.0.1",
            "--client-token",
            TOKEN,
        ],
        Some(TOKEN),
    )
    .await;
    assert!(!err.contains("INSECURE"), "{err}");

    // RESP beyond loopback needs a token too (clients AUTH with it).
    let err = refused(&["--resp", "0.0.0.0:0"]).await;
    assert!(
        err.contains("RESP") && err.contains("without a client token"),
        "{err}"
    );

    // An unspecified gossip or peer address needs --advertise too.
    let err = refused(&["--gossip", "0.0.0.0:0", "--http", "127.0.0.1:0"]).await;
    assert!(err.contains("--advertise"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_generates_a_token_and_prints_it() {
    let _guard = common::ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut launcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["up", "--peers", "1", "--client-token", "generate"])
        .args([
            "--serve-arg=--gossip-interval-ms=100",
            "--serve-arg=--replicas=1",
        ])
        .env_remove(TOKEN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(launcher.stdout.take().unwrap()).lines();
    let (mut url, mut token) = (None, None);
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(u) = words.get(1).filter(|u| u.starts_with("http://")) {
                url = Some(u.to_string());
            }
            if let Some(t) = line.strip_prefix("client token: ") {
                token = Some(t.trim().to_string());
            }
            if line.starts_with("Ctrl-C stops") {
                return;
            }
        }
        panic!("the launcher exited before it was ready");
    })
    .await
    .expect("the launcher printed its banner in time");
    let (url, token) = (url.unwrap(), token.expect("the banner shows the token"));
    assert_eq!(token.len(), 64, "{token}");
    assert_ne!(token, "generate");

    let bare = Client::new(&url);
    let put = bare
        .put(b"k", b"v".to_vec(), &WriteOptions::default())
        .await;
    assert_eq!(put.unwrap_err().status(), Some(401));
    let client = Client::with_token(&url, Some(&token)).unwrap();
    client
        .put(b"k", b"v".to_vec(), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        client.get(b"k", None).await.unwrap().values(),
        &[b"v".to_vec()]
    );

    // SAFETY: signalling our own child process.
    unsafe { libc::kill(launcher.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(15), launcher.wait())
        .await
        .expect("the launcher exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
