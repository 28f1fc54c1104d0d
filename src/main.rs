//! `ringcache`: serve a peer, launch a local cluster, or talk to one.

#![allow(clippy::disallowed_methods)] // the binary is shell: it may spawn and read clocks

// The simulator's planted bugs live in the `ringcache-planted` package; a peer binary built
// with them would be a peer that loses data on purpose.
#[cfg(feature = "planted-bugs")]
compile_error!(
    "the ringcache peer binary must not be built with `planted-bugs` \
     (the simulator depends on `ringcache-planted` for that)"
);

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ringcache::api::auth::TOKEN_ENV;
use ringcache::client::{Client, ClientError, ClusterClient, ReadResult, Ttl, WriteOptions};
use ringcache::config::size::{machine_memory_bytes, MemoryLimit, DEFAULT_MEMORY_SHARE};
use ringcache::config::{EffectiveConfig, ServeArgs};
use ringcache::core::eviction::EvictionPolicy;
use ringcache::launcher::{self, LaunchOptions, LocalCluster};
use ringcache::server::RunningPeer;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// mimalloc instead of glibc's malloc: a loaded peer spent a fifth of its time in the
/// allocator (see docs/performance.md, "The quorum path"). Only the binary uses it; the
/// library, its tests and its benchmarks keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The release and the peer protocol it speaks: peers of different protocol versions cannot
/// talk, so an operator rolling an upgrade needs both.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (peer protocol ",
    // Kept equal to core::message::PROTOCOL_VERSION by a test (tests/cli.rs).
    "8",
    ")"
);

#[derive(Parser)]
#[command(
    name = "ringcache",
    version = VERSION,
    about = "A leaderless, Dynamo-style distributed cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
    /// Log lines as text (for people) or as JSON objects, one per line (for log pipelines).
    /// `RUST_LOG` chooses what is logged, as usual.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "RINGCACHE_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
// Parsed once per process: the size of `Serve` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Commands {
    /// Run one peer. Settings come from flags, then environment variables, then a TOML file
    /// (`--config FILE`, keys named like the flags), then defaults.
    Serve(ServeArgs),
    /// Inspect `serve`'s configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Stop one peer of the cluster `ringcache up` runs on this machine at once (SIGKILL, like
    /// a crash), and wait until the others see it down: to watch how the cluster copes.
    Kill {
        /// The peer's name, as `up` lists it (A, B, C, …).
        peer: String,
        /// Stop waiting for the others to notice after this many seconds.
        #[arg(long, default_value_t = 30)]
        wait_secs: u64,
    },
    /// Start a local cluster of N peers on loopback; Ctrl-C stops it.
    Up {
        #[arg(long, default_value_t = 3)]
        peers: usize,
        /// Show the peers' logs.
        #[arg(long)]
        logs: bool,
        /// Extra arguments passed to every peer's `serve`, e.g. `--serve-arg=--replicas=2`.
        #[arg(long = "serve-arg", allow_hyphen_values = true)]
        serve_args: Vec<String>,
        /// Memory limit of every peer's store, e.g. `512MiB` or `none` (passed to each
        /// `serve`). By default the peers share half of the machine's memory equally.
        #[arg(long)]
        max_memory: Option<String>,
        /// Eviction policy of every peer (passed to each `serve`).
        #[arg(long)]
        eviction: Option<EvictionPolicy>,
        /// Tombstone grace period of every peer, in milliseconds (passed to each `serve`).
        #[arg(long)]
        tombstone_grace_ms: Option<u64>,
        /// Make every peer's writes sloppy by default (see `serve --sloppy-quorum`).
        #[arg(long)]
        sloppy_quorum: bool,
        /// Require this client token on every peer (see `serve --client-token`); the word
        /// `generate` makes a random one and prints it with the URLs.
        #[arg(long = "client-token", env = TOKEN_ENV, hide_env_values = true)]
        client_token: Option<String>,
    },
    /// Read a key.
    Get {
        key: String,
        #[command(flatten)]
        target: Target,
        /// Read quorum: one, quorum, all or a number.
        #[arg(long)]
        r: Option<String>,
        /// A causal context from an earlier read or write of the key: a session read, never
        /// answering older than it (read-your-writes at any --r).
        #[arg(long)]
        context: Option<String>,
    },
    /// Write a key.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        write: WriteArgs,
        /// Time to live, in seconds.
        #[arg(long)]
        ttl: Option<f64>,
    },
    /// Add BY (default 1; negative subtracts) to a key's counter and print the new value.
    /// Concurrent increments at any peers all count (a counter CRDT).
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete a key.
    Del {
        key: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Print a shell completion script: `ringcache completions bash > /etc/bash_completion.d/ringcache`
    /// (or zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Show every peer: liveness, keys, memory, data moving in and out, hints, anti-entropy.
    Cluster {
        #[command(flatten)]
        target: Target,
        /// The asked peer's own `/v1/cluster` as JSON, instead of the table of every peer.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the cluster, redrawn in place: every peer's state, keys, memory, ops/s
    /// and p99 latency, and the cluster's hot keys. Ctrl-C stops it.
    Top {
        #[command(flatten)]
        target: Target,
        /// Seconds between frames (rates are over this span).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print one frame (two samples `--interval` apart) as plain text and exit.
        #[arg(long)]
        once: bool,
    },
    /// Make the peer leave the cluster: it hands every partition it holds to the new
    /// replicas, showing progress, then exits (SIGTERM to a `serve` does the same).
    Leave {
        #[command(flatten)]
        target: Target,
        /// Stop waiting after this many seconds (the peer goes on handing off).
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
    },
    /// Give a key's value a new time to live (like Redis's EXPIRE).
    Expire {
        key: String,
        /// Seconds from now (fractions allowed).
        seconds: f64,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Remove a key's expiry (like Redis's PERSIST).
    Persist {
        key: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// How long a key has left (like Redis's TTL): seconds, "persistent" or "not found".
    Ttl {
        key: String,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        r: Option<String>,
    },
    /// Load a ringcache cluster (HTTP) or a Redis server (RESP) and report throughput and
    /// latency percentiles (closed loop, or open loop with --rate).
    Bench(ringcache::bench::BenchOptions),
    /// Show hits, misses, keys, expiry, eviction and memory: this peer's, or with
    /// `--cluster` the sum over every live peer.
    Stats {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        cluster: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the configuration `serve` would run with, given the same flags, environment and
    /// `--config FILE`, as TOML: each key with where its value came from; secrets masked. The
    /// output is itself a config file.
    Print(ServeArgs),
}

#[derive(Args)]
struct Target {
    /// A peer's HTTP URL. Without it (or RINGCACHE_URL): the cluster `ringcache up` is running
    /// on this machine, if any, else http://127.0.0.1:7070.
    #[arg(long, env = "RINGCACHE_URL")]
    url: Option<String>,
    /// The cluster's client token, sent as `Authorization: Bearer`; prefer the environment
    /// variable.
    #[arg(long = "client-token", env = TOKEN_ENV, hide_env_values = true)]
    client_token: Option<String>,
    /// For an `https://` URL: trust this PEM certificate (the peer's own, or its CA's).
    #[arg(long = "tls-ca", env = "RINGCACHE_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

/// Where the CLI talks when no `--url` is given.
const DEFAULT_URL: &str = "http://127.0.0.1:7070";

impl Target {
    /// The cluster `ringcache up` recorded, when no URL was named.
    fn local_cluster(&self) -> Option<launcher::LocalClusterRecord> {
        if self.url.is_some() {
            return None;
        }
        launcher::LocalClusterRecord::read(&launcher::local_cluster_file()?)
    }

    /// The peer to talk to: `--url`, else the local cluster's first peer, else the default.
    fn url(&self) -> String {
        match (&self.url, self.local_cluster()) {
            (Some(url), _) => url.clone(),
            (None, Some(local)) if !local.urls.is_empty() => local.urls[0].clone(),
            _ => DEFAULT_URL.to_string(),
        }
    }

    fn client(&self) -> anyhow::Result<Client> {
        let local = self.local_cluster();
        let url = self.url();
        // A recorded local cluster brings its token and certificate, unless given here.
        let token = self
            .client_token
            .clone()
            .or_else(|| local.as_ref().and_then(|l| l.client_token.clone()));
        let tls_ca = self
            .tls_ca
            .clone()
            .or_else(|| local.as_ref().and_then(|l| l.tls_ca.clone()));
        Ok(match &tls_ca {
            None => Client::with_token(&url, token.as_deref())?,
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading --tls-ca {}", path.display()))?;
                Client::with_tls(&url, token.as_deref(), &pem)?
            }
        })
    }
}

impl Target {
    /// The peers `top` may ask for the member list, in order: `--url`, else every peer of the
    /// recorded local cluster (so one stopped peer does not blind it), else the default.
    fn seeds(&self) -> anyhow::Result<Vec<Client>> {
        let first = self.client()?;
        let others: Vec<String> = match self.local_cluster() {
            Some(local) if self.url.is_none() => local.urls.into_iter().skip(1).collect(),
            _ => Vec::new(),
        };
        let mut seeds = vec![first.clone()];
        seeds.extend(others.iter().map(|url| first.for_peer(url)));
        Ok(seeds)
    }
}

impl Target {
    /// A client that routes each key to a live replica, learning the ring from `--url`.
    async fn cluster_client(&self) -> anyhow::Result<ClusterClient> {
        ClusterClient::connect(self.client()?)
            .await
            .with_context(|| format!("reading the ring from {}", self.url()))
    }
}

impl WriteArgs {
    fn options(self, ttl_secs: Option<f64>) -> WriteOptions {
        WriteOptions {
            w: self.w,
            ttl_secs,
            context: self.context,
            overwrite: self.overwrite,
        }
    }
}

#[derive(Args)]
struct WriteArgs {
    /// Write quorum: one, quorum, all or a number.
    #[arg(long)]
    w: Option<String>,
    /// The causal context from a previous read.
    #[arg(long)]
    context: Option<String>,
    /// `put` without `--context`: replace what the coordinating replica has seen (like
    /// Redis's SET) instead of adding a sibling beside it.
    #[arg(long)]
    overwrite: bool,
}

/// Exit codes (documented in README.md): 0 done or found; 1 not found; 2 a usage error (clap);
/// 3 the cluster could not serve the request (unreachable peer, too few replicas, timeout);
/// 4 any other failure.
const EXIT_UNAVAILABLE: i32 = 3;
const EXIT_FAILED: i32 = 4;

fn main() {
    // The matches, not only the parsed values: they tell which settings the user gave.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let target_url = cli.command.target_url();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.command.runtime_threads(&matches) {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ringcache: cannot start the async runtime: {error}");
            std::process::exit(EXIT_FAILED);
        }
    };
    if let Err(error) = runtime.block_on(run(cli, &matches)) {
        // One readable line (and a hint), never a backtrace.
        // What was being done, and the innermost cause (reqwest's own chain repeats itself).
        let root = error.root_cause();
        if error.chain().count() > 1 && root.to_string() != error.to_string() {
            eprintln!("ringcache: {error}: {root}");
        } else {
            eprintln!("ringcache: {error}");
        }
        let unavailable = error.chain().any(|cause| {
            cause
                .downcast_ref::<ClientError>()
                .is_some_and(|e| match e {
                    ClientError::Transport(t) => t.is_connect() || t.is_timeout(),
                    ClientError::Status { status, .. } => *status == 503,
                    ClientError::Protocol(_) => false,
                })
        });
        let refused = error.chain().any(|cause| {
            cause
                .downcast_ref::<ClientError>()
                .is_some_and(|e| matches!(e, ClientError::Transport(t) if t.is_connect()))
        });
        if refused {
            if let Some(url) = target_url {
                eprintln!(
                    "  no peer answers at {url}: is a cluster running? start one with \
                     `ringcache up`, or name a peer with --url or RINGCACHE_URL"
                );
            }
        }
        std::process::exit(if unavailable {
            EXIT_UNAVAILABLE
        } else {
            EXIT_FAILED
        });
    }
}

impl Commands {
    /// The worker threads a `serve` was given (`--threads`, or its config file's `threads`);
    /// `None` leaves tokio's default, one per core. A configuration that does not resolve is
    /// reported by `run`, not here.
    fn runtime_threads(&self, matches: &clap::ArgMatches) -> Option<usize> {
        let Commands::Serve(args) = self else {
            return None;
        };
        let matches = matches.subcommand_matches("serve")?;
        let config = EffectiveConfig::resolve(args.clone(), matches).ok()?;
        match config.args.threads {
            0 => None,
            n => Some(n.min(256) as usize),
        }
    }

    /// The peer a client command talks to, for error hints.
    fn target_url(&self) -> Option<String> {
        match self {
            Commands::Get { target, .. }
            | Commands::Put { target, .. }
            | Commands::Del { target, .. }
            | Commands::Incr { target, .. }
            | Commands::Expire { target, .. }
            | Commands::Persist { target, .. }
            | Commands::Ttl { target, .. }
            | Commands::Stats { target, .. }
            | Commands::Cluster { target, .. }
            | Commands::Top { target, .. }
            | Commands::Leave { target, .. } => Some(target.url()),
            _ => None,
        }
    }
}

async fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ringcache=info,warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Commands::Serve(args) => {
            let matches = matches.subcommand_matches("serve").expect("serve matched");
            serve(EffectiveConfig::resolve(args, matches)?).await
        }
        Commands::Config {
            command: ConfigCommand::Print(args),
        } => {
            let matches = matches
                .subcommand_matches("config")
                .and_then(|m| m.subcommand_matches("print"))
                .expect("config print matched");
            print!("{}", EffectiveConfig::resolve(args, matches)?.to_toml());
            Ok(())
        }
        Commands::Kill { peer, wait_secs } => {
            let path = launcher::local_cluster_file()
                .context("no $XDG_RUNTIME_DIR or $HOME to find the local cluster in")?;
            let killed = launcher::kill_recorded_peer(&path, &peer).await?;
            println!("killed {peer} (pid {})", killed.pid);
            let waited = std::time::Instant::now();
            let seen_by = killed
                .wait_until_seen_down(Duration::from_secs(wait_secs))
                .await?;
            println!(
                "{seen_by} sees {peer} down after {:.1} s",
                waited.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Commands::Up {
            peers,
            logs,
            mut serve_args,
            max_memory,
            eviction,
            tombstone_grace_ms,
            sloppy_quorum,
            client_token,
        } => {
            if sloppy_quorum {
                serve_args.push("--sloppy-quorum".into());
            }
            // N peers on one machine share its cores: each runs on its share of them.
            if !serve_args.iter().any(|a| a.starts_with("--threads")) {
                serve_args.push(format!("--threads={}", launcher::threads_per_peer(peers)));
            }
            if let Some(n) = launcher::replicas_for(peers, &serve_args) {
                println!(
                    "ringcache: {peers} peer(s) keep {n} cop(ies) of each key (N = {n}): \
                     fewer peers than the default N = 3 (override with --serve-arg=--replicas=N)"
                );
                serve_args.push(format!("--replicas={n}"));
            }
            match max_memory {
                Some(m) => {
                    m.parse::<MemoryLimit>()
                        .with_context(|| format!("--max-memory {m}"))?;
                    serve_args.push(format!("--max-memory={m}"));
                }
                // N peers on one machine share it: each takes its share of the default.
                None if !serve_args.iter().any(|a| a.starts_with("--max-memory")) => {
                    if let Some(machine) = machine_memory_bytes() {
                        let each = machine / DEFAULT_MEMORY_SHARE / peers.max(1) as u64;
                        serve_args.push(format!("--max-memory={}", each.max(1 << 20)));
                    }
                }
                None => {}
            }
            if let Some(e) = eviction {
                serve_args.push(format!("--eviction={e}"));
            }
            if let Some(g) = tombstone_grace_ms {
                serve_args.push(format!("--tombstone-grace-ms={g}"));
            }
            let client_token = client_token.map(|t| {
                if t == "generate" {
                    launcher::generate_client_token()
                } else {
                    t
                }
            });
            up(peers, logs, serve_args, client_token).await
        }
        Commands::Get {
            key,
            target,
            r,
            context,
        } => {
            let client = target.cluster_client().await?;
            let read = match &context {
                // One process, one read: the context comes from the command line.
                Some(context) => {
                    client
                        .route(key.as_bytes())
                        .session_get(key.as_bytes(), r.as_deref(), Some(context))
                        .await?
                }
                None => client.get(key.as_bytes(), r.as_deref()).await?,
            };
            match read {
                ReadResult::Found { values, context } => {
                    for v in &values {
                        println!("{}", String::from_utf8_lossy(v));
                    }
                    eprintln!("context: {context}");
                    if values.len() > 1 {
                        eprintln!(
                            "{} siblings: write back with --context to resolve",
                            values.len()
                        );
                    }
                }
                ReadResult::NotFound { .. } => {
                    eprintln!("not found");
                    std::process::exit(1);
                }
            }
            Ok(())
        }
        Commands::Put {
            key,
            value,
            target,
            write,
            ttl,
        } => {
            let options = write.options(ttl);
            let context = target
                .cluster_client()
                .await?
                .put(key.as_bytes(), value.into_bytes(), &options)
                .await?;
            eprintln!("ok, context: {context}");
            Ok(())
        }
        Commands::Incr {
            key,
            by,
            target,
            write,
        } => {
            let options = write.options(None);
            let value = target
                .cluster_client()
                .await?
                .incr(key.as_bytes(), by, &options)
                .await?;
            println!("{value}");
            Ok(())
        }
        Commands::Del { key, target, write } => {
            let options = write.options(None);
            let context = target
                .cluster_client()
                .await?
                .delete(key.as_bytes(), &options)
                .await?;
            eprintln!("deleted, context: {context}");
            Ok(())
        }
        Commands::Expire {
            key,
            seconds,
            target,
            write,
        } => {
            let options = write.options(None);
            let ctx = target
                .client()?
                .expire(key.as_bytes(), Some(seconds), &options)
                .await?;
            eprintln!("context: {ctx}");
            Ok(())
        }
        Commands::Persist { key, target, write } => {
            let options = write.options(None);
            let ctx = target
                .client()?
                .expire(key.as_bytes(), None, &options)
                .await?;
            eprintln!("context: {ctx}");
            Ok(())
        }
        Commands::Ttl { key, target, r } => {
            match target.client()?.ttl(key.as_bytes(), r.as_deref()).await? {
                Ttl::ExpiresIn { ms } => println!("{:.3}", ms as f64 / 1000.0),
                Ttl::Persistent => println!("persistent"),
                Ttl::Missing => {
                    eprintln!("not found");
                    std::process::exit(1);
                }
            }
            Ok(())
        }
        Commands::Bench(options) => {
            ringcache::bench::run_and_print(options).await?;
            Ok(())
        }
        Commands::Stats { target, cluster } => {
            let stats = target.client()?.stats(cluster).await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
            Ok(())
        }
        Commands::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "ringcache", &mut std::io::stdout());
            Ok(())
        }
        Commands::Cluster { target, json } => {
            let client = target.client()?;
            if json {
                let status = client.cluster().await?;
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                let rows = ringcache::client::cluster_table::gather(&client).await?;
                print!("{}", ringcache::client::cluster_table::render(&rows));
            }
            Ok(())
        }
        Commands::Top {
            target,
            interval,
            once,
        } => top(target.seeds()?, interval, once).await,
        Commands::Leave { target, wait_secs } => {
            let client = target.client()?;
            client.leave().await?;
            println!("leaving: handing partitions off");
            let started = std::time::Instant::now();
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let Ok(status) = client.cluster().await else {
                    println!("the peer has left");
                    return Ok(());
                };
                let moving = status["handoff"].as_array().map_or(0, |a| a.len());
                let keys_left: u64 = status["handoff"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|p| p["keys_left"].as_u64()).sum())
                    .unwrap_or(0);
                println!(
                    "  {moving} partitions, {keys_left} keys left; {} keys handed off",
                    status["keys_handed_off"]
                );
                anyhow::ensure!(
                    started.elapsed().as_secs() < wait_secs,
                    "still handing off after {wait_secs} s"
                );
            }
        }
    }
}

/// `ringcache top`: one frame per interval, each the change since the last sample.
async fn top(seeds: Vec<Client>, interval: f64, once: bool) -> anyhow::Result<()> {
    use ringcache::client::top::{in_place, Frame, Snapshot};
    anyhow::ensure!(
        interval.is_finite() && interval >= 0.05,
        "--interval takes at least 0.05 seconds"
    );
    let interval = Duration::from_secs_f64(interval);
    let mut earlier = Snapshot::take(&seeds).await?;
    let mut stop = StopSignal::listen()?;
    if !once {
        // A clean screen to draw over.
        print!("\x1b[2J");
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait() => return Ok(()),
        }
        let later = Snapshot::take(&seeds).await?;
        let text = Frame::between(&earlier, &later).render();
        let mut stdout = std::io::stdout().lock();
        if once {
            write!(stdout, "{text}")?;
            return Ok(stdout.flush()?);
        }
        write!(stdout, "{}", in_place(&text))?;
        stdout.flush()?;
        drop(stdout);
        earlier = later;
    }
}

async fn serve(settings: EffectiveConfig) -> anyhow::Result<()> {
    raise_open_files_limit();
    if let Some(file) = settings.file() {
        tracing::info!(
            "settings from {} (flags and environment first)",
            file.display()
        );
    }
    let config = settings.args.into_config()?;
    let mut stop = StopSignal::listen()?;
    let peer = RunningPeer::start(config).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", launcher::ready_line(&peer.addresses))?;
        stdout.flush()?;
    }
    let mut leave_requested = peer.leave_requested();
    let graceful = tokio::select! {
        signal = stop.wait() => signal == Stop::Leave,
        _ = leave_requested.wait_for(|leaving| *leaving) => true,
        gave_up = peer.gossip_gave_up() => {
            // Serving on with a view that can no longer change would make a zombie peer.
            tracing::error!(error = %gave_up, "stopping: gossip cannot be restarted");
            peer.shutdown().await;
            return Err(anyhow::Error::new(gave_up).context("the peer stopped"));
        }
    };
    if graceful {
        peer.hand_off_and_wait().await;
    }
    tracing::info!("stopping");
    peer.shutdown().await;
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (as Go and many servers do): the
/// default soft limit (often 1,024) is below the default HTTP connection cap.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one `rlimit` through valid pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

async fn up(
    count: usize,
    logs: bool,
    serve_args: Vec<String>,
    client_token: Option<String>,
) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("locating the ringcache binary")?;
    let mut options = LaunchOptions::new(binary);
    options.show_logs = logs;
    let cluster_serve_args = serve_args.clone();
    options.serve_args = serve_args;
    options.client_token = client_token.clone();
    // Peers serving HTTPS with a certificate of their own: the launcher trusts that one.
    options.tls_ca = launcher::http_tls_cert(&options.serve_args);
    let cacert = match &options.tls_ca {
        Some(cert) => format!(" --cacert {}", cert.display()),
        None => String::new(),
    };
    let mut stop = StopSignal::listen()?;
    let cluster = tokio::select! {
        c = LocalCluster::start(options, count) => c?,
        _ = stop.wait() => return Ok(()),
    };
    println!("ringcache: {count} peers up");
    for p in &cluster.peers {
        match p.addresses.resp {
            Some(resp) => println!(
                "  {}  {}  redis-cli -p {}",
                p.addresses.id,
                p.url(),
                resp.port()
            ),
            None => println!("  {}  {}", p.addresses.id, p.url()),
        }
    }
    let url = cluster.peers[0].url();
    let auth = match &client_token {
        Some(token) => {
            println!("client token: {token}");
            println!("  (the CLI reads it from {TOKEN_ENV})");
            format!(" -H 'Authorization: Bearer {token}'")
        }
        None => String::new(),
    };
    println!("try:");
    println!("  curl{cacert}{auth} -X PUT --data-binary 'world' {url}/v1/kv/hello");
    println!("  curl{cacert}{auth} -i {url}/v1/kv/hello");
    println!("  curl{cacert}{auth} -s {url}/v1/cluster");
    if let Some(resp) = cluster.peers[0].addresses.resp {
        let redis_auth = match &client_token {
            Some(_) => format!(" --user default --pass \"${TOKEN_ENV}\""),
            None => String::new(),
        };
        println!("  redis-cli -p {}{redis_auth} set hello world", resp.port());
    }
    // Recorded for the CLI: `ringcache get/put/cluster` find this cluster without --url.
    let record_file = launcher::local_cluster_file();
    if let Some(path) = &record_file {
        let record = launcher::LocalClusterRecord {
            urls: cluster.peers.iter().map(|p| p.url()).collect(),
            client_token: client_token.clone(),
            tls_ca: launcher::http_tls_cert(&cluster_serve_args),
            peers: cluster
                .peers
                .iter()
                .filter_map(|p| {
                    Some(launcher::RecordedPeer {
                        id: p.addresses.id.clone(),
                        url: p.url(),
                        pid: p.pid()?,
                    })
                })
                .collect(),
        };
        match record.write(path) {
            Ok(()) => println!(
                "  ringcache get hello      (the CLI finds this cluster: {})",
                path.display()
            ),
            Err(e) => eprintln!(
                "note: could not record the cluster for the CLI at {}: {e}",
                path.display()
            ),
        }
    }
    println!("Ctrl-C stops the cluster.");
    stop.wait().await;
    // First, so the CLI stops pointing at peers that are going away.
    if let Some(path) = &record_file {
        let _ = std::fs::remove_file(path);
    }
    println!("stopping {count} peers");
    cluster.stop().await;
    Ok(())
}

/// Which signal arrived: SIGTERM asks a peer to leave the cluster gracefully (hand its data off,
/// then exit); SIGINT (Ctrl-C) stops it at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Leave,
    Now,
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from its creation on: create it before telling
/// anyone the process is ready, or a signal sent right after the banner would be missed.
struct StopSignal {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn listen() -> anyhow::Result<StopSignal> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignal {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) -> Stop {
        tokio::select! {
            _ = self.term.recv() => Stop::Leave,
            _ = self.interrupt.recv() => Stop::Now,
        }
    }
}
