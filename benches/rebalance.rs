//! What self-healing costs with real peers (release build, loopback): a 3-peer cluster
//! holding `KEYS` keys (N = 3, so each peer holds all of them).
//! 1. Recovery: one peer is killed and restarted empty; how long until it holds every key
//!    again with no client read, and client read latency (p50, p99) meanwhile against idle.
//! 2. Join: a fourth peer joins; the share of copies that moved (ideal: a quarter), how long
//!    until no partition is moving and every key has exactly N copies, and client latency
//!    meanwhile, against idle both before the join (three peers, every read local to the
//!    peer it reaches) and after it settles (four peers, a quarter of reads remote).
//!
//! Client load: two closed-loop clients (each sends its next read when the last is answered),
//! which keep the two cores busy: any background work shows in their tail as queueing.
//! `RINGCACHE_REBALANCE_RATE=2000` runs an open loop at that many reads per second in all
//! instead; a read held up behind its sender's previous one is timed from the instant it was
//! due, not sent, so a stall is charged to every read it delayed.
//!
//! `cargo bench --bench rebalance` (`RINGCACHE_REBALANCE_KEYS` sets the key count; default
//! 300,000; `RINGCACHE_REBALANCE_R` the clients' read quorum, default `one`;
//! `RINGCACHE_REBALANCE_BUSY_PERCENT` the share of the budget a busy shard spends;
//! `RINGCACHE_REBALANCE_THREADS` each peer's worker threads: by default the machine's cores
//! divided among the four peers the bench runs, as `ringcache up` divides them; `0` for the
//! peer's own default of one per core). Prints figures; asserts nothing.

#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use hdrhistogram::Histogram;
use ringcache::client::{Client, WriteOptions};
use ringcache::launcher::{spawn_peer, LaunchOptions, LocalCluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

async fn fill(client: &Client, keys: usize) {
    let options = WriteOptions {
        w: Some("all".into()),
        ..WriteOptions::default()
    };
    let value = vec![b'v'; 100];
    for chunk in (0..keys).collect::<Vec<_>>().chunks(128) {
        let mut writes = tokio::task::JoinSet::new();
        for i in chunk.iter().copied() {
            let (client, options, value) = (client.clone(), options.clone(), value.clone());
            writes.spawn(async move { client.put(&key(i), value, &options).await.is_ok() });
        }
        while writes.join_next().await.is_some() {}
    }
}

/// The clients' read quorum: `RINGCACHE_REBALANCE_R`, or `one`.
fn read_quorum() -> String {
    std::env::var("RINGCACHE_REBALANCE_R").unwrap_or_else(|_| "one".into())
}

/// The clients' total read rate: `RINGCACHE_REBALANCE_RATE`, or 0 (closed loop).
fn read_rate() -> u64 {
    std::env::var("RINGCACHE_REBALANCE_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Open-loop senders per client: each keeps its own schedule, so one slow read delays only
/// its sender's next ones (and those are charged for it, timed from when they were due).
const SENDERS_PER_CLIENT: usize = 8;

/// Reads with the [`read_quorum`] through `clients` until `stop`, at [`read_rate`] (or closed
/// loop), recording latency in microseconds.
fn read_load(
    clients: Vec<Client>,
    keys: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Histogram<u64>> {
    let r = read_quorum();
    let rate = read_rate();
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        let senders = if rate == 0 { 1 } else { SENDERS_PER_CLIENT };
        let every = (rate > 0)
            .then(|| Duration::from_secs_f64((clients.len() * senders) as f64 / rate as f64));
        for (t, c) in clients.into_iter().enumerate() {
            for s in 0..senders {
                let (stop, r, c) = (stop.clone(), r.clone(), c.clone());
                tasks.spawn(async move {
                    let mut h = Histogram::<u64>::new(3).expect("histogram");
                    let mut i = (t * senders + s) * 7_919;
                    // Senders start spread over one interval, not all at once.
                    let offset = every.map_or(Duration::ZERO, |e| e * s as u32 / senders as u32);
                    let mut due = Instant::now() + offset;
                    while !stop.load(Ordering::Relaxed) {
                        i = (i + 7_919) % keys;
                        // A read that is due later waits for it, and is timed from when the
                        // timer woke it (the timer's own lateness, up to a millisecond, is
                        // not the cluster's); one already overdue, held up by its sender's
                        // previous read, is timed from when it was due.
                        let started = match every {
                            Some(_) if due > Instant::now() => {
                                tokio::time::sleep_until(due.into()).await;
                                Instant::now()
                            }
                            Some(_) => due,
                            None => Instant::now(),
                        };
                        let _ = c.get(&key(i), Some(&r)).await;
                        let _ = h.record(started.elapsed().as_micros() as u64);
                        if let Some(every) = every {
                            due += every;
                        }
                    }
                    h
                });
            }
        }
        let mut all = Histogram::<u64>::new(3).expect("histogram");
        while let Some(Ok(h)) = tasks.join_next().await {
            all.add(&h).expect("same bounds");
        }
        all
    })
}

fn describe(h: &Histogram<u64>) -> String {
    format!(
        "{} reads, p50 {:.2} ms, p99 {:.2} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0
    )
}

async fn keys_of(c: &Client) -> (u64, usize) {
    let status = c.cluster().await.expect("status");
    (
        status["keys"].as_u64().unwrap_or(0),
        status["handoff"].as_array().map_or(0, |a| a.len()),
    )
}

/// Keys handed off, anti-entropy keys sent and repaired, read repairs, and spare replicas
/// reads asked, since start.
async fn move_figures(c: &Client) -> [u64; 5] {
    let status = c.cluster().await.expect("status");
    let stat = |name: &str| status["stats"][name].as_u64().unwrap_or(0);
    [
        status["keys_handed_off"].as_u64().unwrap_or(0),
        stat("anti_entropy_keys_sent"),
        stat("anti_entropy_keys_repaired"),
        stat("read_repairs"),
        stat("read_spares_asked"),
    ]
}

async fn idle_latency(clients: &[Client], keys: usize) -> Histogram<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let load = read_load(clients.to_vec(), keys, stop.clone());
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keys: usize = std::env::var("RINGCACHE_REBALANCE_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(300_000);
    // `RINGCACHE_REBALANCE_BUDGET`: anti-entropy keys per second per shard (the default's).
    let budget = std::env::var("RINGCACHE_REBALANCE_BUDGET").ok();
    let mut options = LaunchOptions::new(env!("CARGO_BIN_EXE_ringcache"));
    options.serve_args = vec!["--anti-entropy-interval-ms".into(), "2000".into()];
    // Worker threads per peer: `RINGCACHE_REBALANCE_THREADS` (0: the peer's own default, one
    // per core), else the cores divided among the four peers the bench runs on this machine,
    // as `ringcache up` divides them: peers that each start a thread per core preempt each
    // other, and a preempted thread may hold its shard's lock while a read waits for it.
    let threads = std::env::var("RINGCACHE_REBALANCE_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or_else(|| ringcache::launcher::threads_per_peer(4));
    if threads > 0 {
        options.serve_args.push(format!("--threads={threads}"));
    }
    if let Some(budget) = &budget {
        options
            .serve_args
            .push(format!("--anti-entropy-keys-per-sec={budget}"));
    }
    // `RINGCACHE_REBALANCE_BUSY_PERCENT`: the share of the budget a shard serving clients
    // spends (the default's; 100: background work never yields to the clients).
    let busy_percent = std::env::var("RINGCACHE_REBALANCE_BUSY_PERCENT").ok();
    if let Some(percent) = &busy_percent {
        options
            .serve_args
            .push(format!("--anti-entropy-busy-percent={percent}"));
    }
    match read_rate() {
        0 => println!("client reads: r={}, two clients, closed loop", read_quorum()),
        rate => println!(
            "client reads: r={}, {rate} per second, open loop (an overdue read timed from when it was due)",
            read_quorum()
        ),
    }
    println!(
        "anti-entropy budget: {} keys/s per shard, {}% of it while busy; worker threads per peer: {}",
        budget.as_deref().unwrap_or("default"),
        busy_percent.as_deref().unwrap_or("default"),
        match threads {
            0 => "one per core".to_string(),
            t => t.to_string(),
        }
    );
    let mut cluster = LocalCluster::start(options, 3).await?;
    let clients: Vec<Client> = cluster
        .peers
        .iter()
        .map(|p| Client::new(&p.url()))
        .collect();
    let started = Instant::now();
    fill(&clients[0], keys).await;
    println!(
        "loaded {keys} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let loaders = vec![clients[0].clone(), clients[1].clone()];
    println!("idle: {}", describe(&idle_latency(&loaders, keys).await));

    // 1. Recovery of a peer restarted empty.
    let name = cluster.peers[2].addresses.id.clone();
    cluster.peers.pop().expect("three peers").kill().await;
    let restarted = spawn_peer(&cluster.options, &name, &[cluster.seed()]).await?;
    let c = Client::new(&restarted.url());
    cluster.peers.push(restarted);
    let stop = Arc::new(AtomicBool::new(false));
    let load = read_load(loaders.clone(), keys, stop.clone());
    let started = Instant::now();
    while keys_of(&c).await.0 < keys as u64 && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    println!(
        "recovery: restarted peer holds {} of {keys} keys after {:.1} s; during: {}",
        keys_of(&c).await.0,
        took.as_secs_f64(),
        describe(&load.await?)
    );

    // 2. A fourth peer joins.
    let mut before_join = Vec::new();
    for p in &cluster.peers {
        before_join.push(move_figures(&Client::new(&p.url())).await);
    }
    let d = spawn_peer(&cluster.options, "P4", &[cluster.seed()]).await?;
    let dc = Client::new(&d.url());
    cluster.peers.push(d);
    let all: Vec<Client> = cluster
        .peers
        .iter()
        .map(|p| Client::new(&p.url()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = read_load(loaders.clone(), keys, stop.clone());
    let started = Instant::now();
    cluster
        .wait_until_converged(4, Duration::from_secs(60))
        .await?;
    loop {
        let mut total = 0;
        let mut moving = 0;
        for c in &all {
            let (k, m) = keys_of(c).await;
            total += k;
            moving += m;
        }
        let newcomer = keys_of(&dc).await.0;
        let done = moving == 0 && total == 3 * keys as u64 && newcomer > 0;
        if done || started.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let moved = keys_of(&dc).await.0;
    println!(
        "join: the new peer holds {moved} of {} copies ({:.3} of them; ideal 0.250) after {:.1} s; during: {}",
        3 * keys,
        moved as f64 / (3 * keys) as f64,
        took.as_secs_f64(),
        describe(&load.await?)
    );
    // What the move cost each peer's anti-entropy, and what was handed off (since the join).
    for (i, c) in all.iter().enumerate() {
        let after = move_figures(c).await;
        let before = before_join.get(i).copied().unwrap_or_default();
        println!(
            "  {}: handed off {} keys; anti-entropy sent {} keys, repaired {}; read repairs {}; \
             spares asked {}",
            cluster.peers[i].addresses.id,
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2],
            after[3] - before[3],
            after[4] - before[4]
        );
    }
    // After the join every peer holds only three quarters of the keys, so a quarter of each
    // loader's reads now cross the network: the settled four-peer cluster is the baseline
    // that isolates what the move itself cost.
    println!(
        "idle after the join: {}",
        describe(&idle_latency(&loaders, keys).await)
    );
    cluster.stop().await;
    Ok(())
}
