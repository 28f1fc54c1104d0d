//! `ringcache bench` keeps working: closed and open loop against a real 3-peer cluster over
//! HTTP and RESP (as a library call and as the CLI), and against a `redis-server` when one is
//! installed. Each run lasts about two seconds; nothing here asserts on speed.

mod common;

use clap::Parser;
use common::with_cluster;
use ringcache::bench::{self, BenchOptions, Report, TargetKind};
use std::time::Duration;

/// The flags as users type them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    options: BenchOptions,
}

fn options(args: &[&str]) -> BenchOptions {
    let mut argv = vec!["bench"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("valid flags").options
}

/// What every run must show: requests answered, none failed, JSON that reads back.
fn check(report: &Report) {
    assert!(report.ops > 0, "no request answered: {report:?}");
    assert!(
        report.errors.is_empty(),
        "errors: {:?}\n{}",
        report.errors,
        report.to_table()
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["ops"].as_u64(), Some(report.ops));
    assert!(json["latency_ms"]["all"]["p99"].as_f64().unwrap() > 0.0);
    let back: Report = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(&back, report);
    println!("{}", report.to_table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_and_open_loop_against_a_three_peer_cluster() {
    with_cluster(3, |cluster| async move {
        let url = cluster.peers[0].url();
        common::wait_for_live(&url, 3).await;
        let closed = options(&[
            "--url",
            &url,
            "-c",
            "8",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--keys",
            "500",
            "--zipf",
            "0.99",
            "--reads",
            "0.8",
            "--r",
            "quorum",
            "--w",
            "quorum",
            "--preload",
            "--quiet",
        ]);
        let report = bench::run(&closed).await.expect("closed loop runs");
        check(&report);
        assert_eq!(report.mode, "closed");
        assert_eq!(report.misses, 0, "every key was preloaded");
        assert!(report.latency_ms.read.count > 0 && report.latency_ms.write.count > 0);

        let open = options(&[
            "--url",
            &url,
            "-c",
            "8",
            "--rate",
            "200",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--keys",
            "500",
            "--ring",
            "--quiet",
        ]);
        let report = bench::run(&open).await.expect("open loop runs");
        check(&report);
        assert_eq!(report.mode, "open");
        let service = report
            .service_ms
            .as_ref()
            .expect("open loop keeps service times");
        assert_eq!(service.all.count, report.latency_ms.all.count);
        // Measured from the due time, a request never looks faster than its own round trip.
        assert!(report.latency_ms.all.max >= service.all.max * 0.99);

        // The same cluster over its RESP endpoint: the Redis client, `--target resp`.
        let resp_port = cluster.peers[0]
            .resp_port()
            .expect("the launcher serves RESP");
        let resp_url = format!("redis://127.0.0.1:{resp_port}");
        let resp = options(&[
            "--target",
            "resp",
            "--url",
            &resp_url,
            "-c",
            "8",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--keys",
            "500",
            "--zipf",
            "0.99",
            "--reads",
            "0.8",
            "--preload",
            "--quiet",
        ]);
        let report = bench::run(&resp).await.expect("RESP closed loop runs");
        check(&report);
        assert_eq!(report.misses, 0, "every key was preloaded");

        // The binary, end to end: `ringcache bench --json` prints one JSON report.
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"))
            .args(["bench", "--url", &url, "--duration", "0.5", "--warmup", "0"])
            .args(["-c", "4", "--keys", "100", "--json", "--quiet"])
            .kill_on_drop(true)
            .output()
            .await
            .expect("the binary runs");
        assert!(output.status.success(), "{output:?}");
        let report: Report = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
        check(&report);
        cluster
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_requires_a_token_gets_it() {
    const TOKEN: &str = "bench-client-token-0123456789";
    let mut launch = common::options();
    launch.client_token = Some(TOKEN.to_string());
    launch.serve_args.push("--replicas=1".into());
    common::with_cluster_options(1, launch, |cluster| async move {
        let url = cluster.peers[0].url();
        let mut with = options(&["--url", &url, "-c", "2", "--duration", "0.5", "--quiet"]);
        with.warmup = 0.0;
        let without = with.clone();
        with.client_token = Some(TOKEN.into());
        // Without the token the first read is refused: an error, not a report of 401s.
        match bench::run(&without).await {
            Err(bench::BenchError::Unreachable { reason, .. }) => assert_eq!(reason, "http 401"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // The pooled client (--ring) carries it too.
        check(&bench::run(&with).await.expect("runs with the token"));
        with.ring = true;
        check(
            &bench::run(&with)
                .await
                .expect("runs with the token, --ring"),
        );
        cluster
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_target_is_an_error_not_a_report() {
    let port = free_port();
    let mut options = BenchOptions::new(TargetKind::Http, &format!("http://127.0.0.1:{port}"));
    options.duration = 0.5;
    options.quiet = true;
    assert!(matches!(
        bench::run(&options).await,
        Err(bench::BenchError::Unreachable { .. })
    ));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server_installed() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_redis_server_with_and_without_wait() {
    if !redis_server_installed() {
        println!("skipped: redis-server is not on PATH (apt-get install redis-server)");
        return;
    }
    let port = free_port();
    let mut server = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts");
    let url = format!("redis://127.0.0.1:{port}");
    // Ready once it answers.
    let mut ready = false;
    for _ in 0..100 {
        if ringcache::bench::resp::RespConnection::connect(&format!("127.0.0.1:{port}"))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "redis-server listens on {port}");

    let closed = options(&[
        "--target",
        "redis",
        "--url",
        &url,
        "-c",
        "8",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--zipf",
        "0.9",
        "--preload",
        "--quiet",
    ]);
    let outcome = bench::run(&closed).await;
    // WAIT 0 on a server without replicas answers at once: the path runs, nothing waits.
    let open = options(&[
        "--target",
        "resp",
        "--url",
        &url,
        "-c",
        "4",
        "--rate",
        "300",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--reads",
        "0.5",
        "--wait",
        "0",
        "--quiet",
    ]);
    let open_outcome = bench::run(&open).await;
    server.kill().await.expect("redis-server stops");
    let report = outcome.expect("closed loop runs");
    check(&report);
    assert_eq!(report.misses, 0, "every key was preloaded");
    let report = open_outcome.expect("open loop runs");
    check(&report);
    assert_eq!(report.wait, Some(0));
}

/// The benchmark scripts (benches/*.sh, e.g. `just bench-compare`'s) at least parse: they run
/// for minutes, so CI checks their syntax with `bash -n` instead of running them. They read
/// `ringcache bench --json`'s `ops_per_sec`, `latency_ms.all.p50`/`p99`, `errors` and
/// `unsent`, which `check` above reads back too.
#[test]
fn the_benchmark_scripts_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    assert!(
        scripts.iter().any(|p| p.ends_with("compare.sh")),
        "{scripts:?}"
    );
    for script in scripts {
        let output = std::process::Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
