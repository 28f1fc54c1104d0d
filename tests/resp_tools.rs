//! The RESP endpoint against Redis's own tools (Debian's `redis-tools`, which `.ci/run`
//! installs as root): a scripted `redis-cli` session compared line by line with the expected
//! transcript, and `redis-benchmark` running to completion without an error line.
//!
//! Each test prints a note and passes when the tool is missing (a machine without
//! redis-tools), so `cargo test` works anywhere; CI has them. One peer process (N=1) on
//! loopback, bounded in time, stopped at the end.
//!
//! `tests/resp/session.expected` is `tests/resp/session.redis` as redis-cli 7 shows it; it
//! matches what redis-server 7 answers to the same script except where `docs/resp.md` says
//! ringcache differs (SELECT 1, the RC.* commands, FLUSHALL's flag). Regenerate it after
//! a deliberate change with `RINGCACHE_BLESS=1 cargo test --test resp_tools`, and read the diff.

#![allow(clippy::disallowed_methods)] // child processes and deadlines
mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Whether `tool` runs here; prints why the test is skipped when it does not.
fn have(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("note: {tool} is not installed (Debian: redis-tools); skipping this test");
    }
    found
}

/// Runs `program args` with `input` on stdin, within `limit`; its stdout and stderr.
async fn run(program: &str, args: &[String], input: &[u8], limit: Duration) -> (String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the tool starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within {limit:?}"))
        .unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_redis_cli_session_gives_the_expected_transcript() {
    if !have("redis-cli") {
        return;
    }
    common::with_cluster_args(
        1,
        &["--replicas", "1", "--enable-flushall"],
        |cluster| async move {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp");
            let script = std::fs::read(dir.join("session.redis")).unwrap();
            let port = cluster.peers[0]
                .resp_port()
                .expect("RESP is on")
                .to_string();
            let (out, err) = run(
                "redis-cli",
                &["-p".into(), port],
                &script,
                Duration::from_secs(30),
            )
            .await;
            let expected_path = dir.join("session.expected");
            if std::env::var_os("RINGCACHE_BLESS").is_some() {
                std::fs::write(&expected_path, &out).unwrap();
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap();
            if out != expected {
                let diff: Vec<String> = expected
                    .lines()
                    .zip(out.lines())
                    .enumerate()
                    .filter(|(_, (e, o))| e != o)
                    .map(|(i, (e, o))| format!("line {}: expected {e:?}, got {o:?}", i + 1))
                    .collect();
                panic!(
                    "redis-cli transcript differs ({} vs {} lines; stderr {err:?}):\n{}",
                    expected.lines().count(),
                    out.lines().count(),
                    diff.join("\n")
                );
            }
            cluster
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_runs_without_errors() {
    if !have("redis-benchmark") {
        return;
    }
    common::with_cluster_args(1, &["--replicas", "1"], |cluster| async move {
        let port = cluster.peers[0]
            .resp_port()
            .expect("RESP is on")
            .to_string();
        let args: Vec<String> = ["-p", &port, "-t", "ping,set,get,mset", "-n", "2000", "-q"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (out, err) = run("redis-benchmark", &args, b"", Duration::from_secs(60)).await;
        eprintln!("{out}");
        let lines: Vec<&str> = out
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|l| l.contains("requests per second"))
            .collect();
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "MSET"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("{test}:"))
                        || l.starts_with(&format!("{test} ("))),
                "no result for {test}: {out}\n{err}"
            );
        }
        let errors: Vec<&str> = out
            .lines()
            .chain(err.lines())
            .filter(|l| l.contains("ERR") || l.to_lowercase().contains("error"))
            .collect();
        assert!(errors.is_empty(), "error lines: {errors:?}");
        cluster
    })
    .await;
}
