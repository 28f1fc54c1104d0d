//! The command line against peers that serve HTTPS: `put`/`get` with `--tls-ca` (and its
//! environment variable) succeed, and fail clearly without the certificate or with another
//! one; `up` prints `https://` URLs for peers started with `--http-tls-cert` and can reach them.
//!
//! Everything runs on loopback with a fresh self-signed certificate; every process started
//! here is waited for with a time limit and killed on drop.

// Tests spawn processes and wait on wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

mod common;

use ringcache::client::{Client, ReadResult, WriteOptions};
use ringcache::config::{PeerConfig, TlsFiles};
use ringcache::server::RunningPeer;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const SECRET: &str = "a secret of the command line's tls tests";
/// Environment variables the CLI reads that must not leak in from the test's environment.
const CLI_ENV: &[&str] = &[
    "RINGCACHE_URL",
    "RINGCACHE_TLS_CA",
    "RINGCACHE_CLIENT_TOKEN",
];

/// A fresh directory holding a self-signed certificate for 127.0.0.1 and its key.
fn certificate(name: &str) -> (PathBuf, TlsFiles) {
    let dir = std::env::temp_dir().join(format!("ringcache-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
            .unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, certified.cert.pem()).unwrap();
    std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();
    (dir, files)
}

/// Runs `ringcache ARGS` with `env` set (and no other `RINGCACHE_*` the CLI reads), within
/// 30 s.
async fn cli(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in CLI_ENV {
        command.env_remove(var);
    }
    for (var, value) in env {
        command.env(var, value);
    }
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the CLI finished within 30 s")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_an_https_peer_with_tls_ca_and_fails_clearly_without_it() {
    let _one = common::ONE_CLUSTER_AT_A_TIME.lock().await;
    let (dir, files) = certificate("cli-tls");
    let (other_dir, other) = certificate("cli-tls-other");
    let cert = files.cert.clone();
    let mut config = PeerConfig::for_test("T", SECRET, vec![]);
    config.core.replicas = 1;
    config.http.tls = Some(files);
    let peer = RunningPeer::start(config).await.expect("peer starts");
    let url = peer.addresses.http_url();
    assert!(url.starts_with("https://"), "{url}");
    let ca = cert.to_str().unwrap();

    let put = cli(
        &["put", "k", "over tls", "--url", &url, "--tls-ca", ca],
        &[],
    )
    .await;
    assert!(put.status.success(), "put: {}", text(&put.stderr));
    assert!(
        text(&put.stderr).contains("ok, context:"),
        "{}",
        text(&put.stderr)
    );
    let get = cli(&["get", "k", "--url", &url, "--tls-ca", ca], &[]).await;
    assert!(get.status.success(), "get: {}", text(&get.stderr));
    assert_eq!(text(&get.stdout), "over tls\n");
    // The same, with the certificate named in the environment.
    let get = cli(&["get", "k", "--url", &url], &[("RINGCACHE_TLS_CA", &cert)]).await;
    assert!(get.status.success(), "get: {}", text(&get.stderr));
    assert_eq!(text(&get.stdout), "over tls\n");

    // Without the certificate, or trusting another one, the CLI's own TLS refuses the peer:
    // a failure exit, saying the certificate is the problem, and nothing written.
    for (what, extra) in [
        ("no --tls-ca", vec![]),
        (
            "another certificate",
            vec!["--tls-ca", other.cert.to_str().unwrap()],
        ),
    ] {
        let mut args = vec!["put", "k", "not trusted", "--url", &url];
        args.extend(extra);
        let refused = cli(&args, &[]).await;
        let stderr = text(&refused.stderr);
        assert!(!refused.status.success(), "{what}: {stderr}");
        assert!(stderr.contains("certificate"), "{what}: {stderr}");
    }
    // A --tls-ca that is no certificate is refused before any request.
    let refused = cli(
        &[
            "get",
            "k",
            "--url",
            &url,
            "--tls-ca",
            other.key.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("certificate"),
        "{}",
        text(&refused.stderr)
    );
    let get = cli(&["get", "k", "--url", &url, "--tls-ca", ca], &[]).await;
    assert_eq!(text(&get.stdout), "over tls\n");

    peer.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

/// `up` with `--http-tls-cert` prints `https://` URLs (it used to print `http://` whatever the
/// peers served), tells curl which certificate to trust, waits for the peers over HTTPS, and
/// stops every peer on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_prints_https_urls_when_the_peers_serve_tls() {
    let _one = common::ONE_CLUSTER_AT_A_TIME.lock().await;
    let (dir, files) = certificate("up-tls");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"));
    command
        .args(["up", "--peers", "2", "--serve-arg=--gossip-interval-ms=100"])
        .arg(format!(
            "--serve-arg=--http-tls-cert={}",
            files.cert.display()
        ))
        .arg(format!(
            "--serve-arg=--http-tls-key={}",
            files.key.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for var in CLI_ENV {
        command.env_remove(var);
    }
    let mut launcher = command.spawn().unwrap();
    let mut lines = BufReader::new(launcher.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    let mut curl_lines = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let trimmed = line.trim();
            if let Some(url) = trimmed
                .split_whitespace()
                .nth(1)
                .filter(|u| u.contains("://"))
            {
                urls.push(url.to_string());
            }
            if trimmed.starts_with("curl") {
                curl_lines.push(trimmed.to_string());
            }
            if trimmed.starts_with("Ctrl-C stops") {
                return;
            }
        }
        panic!("the launcher exited before it was ready");
    })
    .await
    .expect("the launcher printed its banner in time");
    assert_eq!(urls.len(), 2, "one URL per peer: {urls:?}");
    for url in &urls {
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    }
    let cacert = format!("--cacert {}", files.cert.display());
    assert!(!curl_lines.is_empty());
    for line in &curl_lines {
        assert!(line.contains(&cacert), "{line}");
        assert!(line.contains("https://"), "{line}");
    }

    let pem = std::fs::read(&files.cert).unwrap();
    let a = Client::with_tls(&urls[0], None, &pem).unwrap();
    let b = Client::with_tls(&urls[1], None, &pem).unwrap();
    let both = WriteOptions {
        w: Some("2".into()),
        ..WriteOptions::default()
    };
    a.put(b"k", b"v".to_vec(), &both).await.unwrap();
    match b.get(b"k", Some("2")).await.unwrap() {
        ReadResult::Found { values, .. } => assert_eq!(values, vec![b"v".to_vec()]),
        other => panic!("{other:?}"),
    }

    let pid = launcher.id().unwrap() as i32;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(15), launcher.wait())
        .await
        .expect("the launcher exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    for client in [a, b] {
        assert!(
            tokio::time::timeout(Duration::from_secs(2), client.get(b"k", None))
                .await
                .map_or(true, |r| r.is_err()),
            "a peer still answers after the launcher stopped"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
