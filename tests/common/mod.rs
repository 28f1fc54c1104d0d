//! Shared set-up for tests that start real peers: loopback only, free ports, fast gossip,
//! and one cluster at a time (the machine has two cores; parallel clusters would starve the
//! failure detectors and make liveness assertions flaky).

#![allow(dead_code)]

use ringcache::client::Client;
use ringcache::launcher::{LaunchOptions, LocalCluster};
use std::time::Duration;

pub static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const SERVE_ARGS: &[&str] = &[
    "--gossip-interval-ms",
    "100",
    "--request-timeout-ms",
    "1500",
    "--partitions",
    "64",
    "--vnodes",
    "64",
    "--max-value-bytes",
    "1024",
    "--max-key-bytes",
    "1024",
];

pub fn options() -> LaunchOptions {
    let mut options = LaunchOptions::new(env!("CARGO_BIN_EXE_ringcache"));
    options.serve_args = SERVE_ARGS.iter().map(|s| s.to_string()).collect();
    options.show_logs = std::env::var_os("RINGCACHE_TEST_LOGS").is_some();
    options
}

/// Runs `body` against a fresh cluster of `n` peers, then stops every peer.
pub async fn with_cluster<F, Fut>(n: usize, body: F)
where
    F: FnOnce(LocalCluster) -> Fut,
    Fut: std::future::Future<Output = LocalCluster>,
{
    with_cluster_args(n, &[], body).await
}

/// Like [`with_cluster`], with extra arguments for every peer's `serve`.
pub async fn with_cluster_args<F, Fut>(n: usize, extra: &[&str], body: F)
where
    F: FnOnce(LocalCluster) -> Fut,
    Fut: std::future::Future<Output = LocalCluster>,
{
    let mut options = options();
    options
        .serve_args
        .extend(extra.iter().map(|s| s.to_string()));
    with_cluster_options(n, options, body).await
}

/// Like [`with_cluster`], with the launch options given.
pub async fn with_cluster_options<F, Fut>(n: usize, options: LaunchOptions, body: F)
where
    F: FnOnce(LocalCluster) -> Fut,
    Fut: std::future::Future<Output = LocalCluster>,
{
    let _guard = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = LocalCluster::start(options, n)
        .await
        .expect("cluster starts");
    let cluster = tokio::time::timeout(Duration::from_secs(120), body(cluster))
        .await
        .expect("the test finished within its time limit");
    cluster.stop().await;
}

pub fn client(cluster: &LocalCluster, index: usize) -> Client {
    Client::new(&cluster.peers[index].url())
}

/// Waits until the peer at `url` sees exactly `up` live members.
pub async fn wait_for_live(url: &str, up: usize) {
    ringcache::launcher::wait_for_live_members(
        &[url.to_string()],
        up,
        Duration::from_secs(30),
        None,
    )
    .await
    .expect("membership converged");
}
