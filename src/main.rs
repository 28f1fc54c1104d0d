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
use clap::{Args, Parser, Subcommand};
use ringcache::api::auth::TOKEN_ENV;
use ringcache::client::{Client, ClientError, ClusterClient, ReadResult, Ttl, WriteOptions};
use ringcache::config::{HttpConfig, PeerConfig, RespConfig, TlsFiles};
use ringcache::core::config::{CoreConfig, DEFAULT_VNODES};
use ringcache::core::eviction::EvictionPolicy;
use ringcache::core::types::NodeId;
use ringcache::launcher::{self, LaunchOptions, LocalCluster, SECRET_ENV};
use ringcache::server::RunningPeer;
use ringcache::shell::auth::ClusterSecret;
use ringcache::shell::gossip::GossipTiming;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The release and the peer protocol it speaks: peers of different protocol versions cannot
/// talk, so an operator rolling an upgrade needs both.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (peer protocol ",
    // Kept equal to core::message::PROTOCOL_VERSION by a test (tests/cli.rs).
    "4",
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
    /// Run one peer.
    Serve(ServeArgs),
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

#[derive(Args)]
struct ServeArgs {
    /// This peer's name, unique in the cluster and kept across restarts.
    #[arg(long)]
    id: String,
    /// UDP address for gossip.
    #[arg(long, default_value = "127.0.0.1:7000")]
    gossip: SocketAddr,
    /// UDP address for QUIC peer traffic.
    #[arg(long = "peer-addr", default_value = "127.0.0.1:7100")]
    peer_addr: SocketAddr,
    /// TCP address for the HTTP API. A non-loopback address needs --client-token (or
    /// --insecure-no-auth).
    #[arg(long, default_value = "127.0.0.1:7070")]
    http: SocketAddr,
    /// Require `Authorization: Bearer <token>` on every HTTP request but `GET /health`; the
    /// same on every peer of the cluster. At least 16 bytes; prefer the environment variable.
    #[arg(long = "client-token", env = TOKEN_ENV, hide_env_values = true)]
    client_token: Option<String>,
    /// Serve HTTP on a non-loopback address without a client token (logs a warning).
    #[arg(long)]
    insecure_no_auth: bool,
    /// The IP address other peers reach this one at; required when any address is bound
    /// unspecified (`0.0.0.0`, `::`), and used only in place of such addresses.
    #[arg(long)]
    advertise: Option<IpAddr>,
    /// Gossip address of a peer to join through (repeatable).
    #[arg(long = "seed")]
    seeds: Vec<SocketAddr>,
    /// Shared secret of the cluster (at least 16 bytes); prefer the environment variable.
    #[arg(long = "cluster-secret", env = SECRET_ENV, hide_env_values = true)]
    secret: String,
    /// Replicas per key (N); the same on every peer.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Keyspace partitions, a power of two; the same on every peer, for the cluster's life.
    #[arg(long, default_value_t = 1024)]
    partitions: u32,
    /// Virtual-node tokens per peer.
    #[arg(long, default_value_t = DEFAULT_VNODES)]
    vnodes: u32,
    /// Deadline of each request, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    request_timeout_ms: u64,
    /// Largest value accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_value_bytes: usize,
    /// Largest key accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_key_bytes: usize,
    /// Gossip round interval, in milliseconds; failure detection scales with it.
    #[arg(long, default_value_t = 200)]
    gossip_interval_ms: u64,
    /// How long a peer may stay down before the others take it off the ring, in seconds: the
    /// remaining replicas and anti-entropy then restore N copies of what it held. A crashed
    /// peer is never handed off from (its memory is gone); until this passes, it keeps its
    /// place, so a restart does not move data twice.
    #[arg(long, default_value_t = 3600)]
    remove_down_after_secs: u64,
    /// Most concurrent values (siblings) a key may have after a write: a blind write past it
    /// is refused with 409 (read the key and write back with its context to resolve them).
    #[arg(long, default_value_t = CoreConfig::default().max_siblings)]
    max_siblings: usize,
    /// Most bytes a key's concurrent values may take in all after a write, e.g. `64MiB`.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    max_state_bytes: u64,
    /// Memory limit of the store (keys, values, versions and overhead): bytes, or with a
    /// unit: `512MiB`, `2GiB`, `100MB`; `none` (or `0`) for no limit. By default half of the
    /// machine's memory (or of the cgroup's limit, if lower).
    #[arg(long, value_parser = parse_memory_limit)]
    max_memory: Option<MemoryLimit>,
    /// How long a client may take to send a request's headers, from its first byte, in
    /// milliseconds.
    #[arg(long, default_value_t = HttpConfig::default().header_timeout.as_millis() as u64)]
    http_header_timeout_ms: u64,
    /// How long a client may take to send a request's body, from the end of its headers, in
    /// milliseconds.
    #[arg(long, default_value_t = HttpConfig::default().body_timeout.as_millis() as u64)]
    http_body_timeout_ms: u64,
    /// How long an HTTP connection may sit with no request and nothing moving, in
    /// milliseconds.
    #[arg(long, default_value_t = HttpConfig::default().idle_timeout.as_millis() as u64)]
    http_idle_timeout_ms: u64,
    /// HTTP connections served at once; past it a few more are served `GET /health` alone and
    /// the rest are refused.
    #[arg(long, default_value_t = HttpConfig::default().max_connections)]
    http_max_connections: usize,
    /// Serve the HTTP API over TLS with this PEM certificate chain (needs --http-tls-key).
    #[arg(long, requires = "http_tls_key")]
    http_tls_cert: Option<PathBuf>,
    /// The PEM private key of --http-tls-cert.
    #[arg(long, requires = "http_tls_cert")]
    http_tls_key: Option<PathBuf>,
    /// TCP address for the Redis protocol (RESP2/RESP3: `redis-cli -p PORT`). A non-loopback
    /// address needs --client-token (clients then AUTH with it) or --insecure-no-auth.
    #[arg(long, default_value = ringcache::config::DEFAULT_RESP_ADDR, conflicts_with = "no_resp")]
    resp: SocketAddr,
    /// Serve no Redis protocol endpoint.
    #[arg(long)]
    no_resp: bool,
    /// Close a RESP connection with no request for this long, in seconds (0: never).
    #[arg(long, default_value_t = 600)]
    resp_idle_timeout_secs: u64,
    /// How long a client may take to send one RESP request, from its first byte, in
    /// milliseconds.
    #[arg(long, default_value_t = RespConfig::default().request_timeout.as_millis() as u64)]
    resp_request_timeout_ms: u64,
    /// RESP connections served at once; more are told `max number of clients reached`.
    #[arg(long, default_value_t = RespConfig::default().max_connections)]
    resp_max_connections: usize,
    /// Let RESP's FLUSHALL / FLUSHDB delete every key this peer holds (refused otherwise).
    #[arg(long)]
    enable_flushall: bool,
    /// Engine shards, each served by its own task (0: one per core).
    #[arg(long, default_value_t = 0)]
    shards: u32,
    /// What a full store evicts: lru, lfu, fifo, random, volatile-ttl, noeviction.
    #[arg(long, default_value_t = EvictionPolicy::Lru)]
    eviction: EvictionPolicy,
    /// How long a deleted (or expired) key's tombstones stay after every replica was seen
    /// holding them, in milliseconds; at least the request timeout, so that no write still
    /// in flight can arrive after them and bring the value back.
    #[arg(long, default_value_t = CoreConfig::default().tombstone_grace_ms)]
    tombstone_grace_ms: u64,
    /// How often each peer compares its hash trees with every other replica, in milliseconds
    /// (0 turns anti-entropy off; a peer coming back starts a round at once, a ring change
    /// within one interval).
    #[arg(long, default_value_t = CoreConfig::default().anti_entropy_interval_ms)]
    anti_entropy_interval_ms: u64,
    /// Anti-entropy budget of each engine shard: key states moved per second.
    #[arg(long, default_value_t = CoreConfig::default().anti_entropy_keys_per_sec)]
    anti_entropy_keys_per_sec: u64,
    /// Anti-entropy budget of each engine shard: bytes moved per second, e.g. `32MiB`.
    #[arg(long, value_parser = parse_size, default_value = "32MiB")]
    anti_entropy_bytes_per_sec: u64,
    /// Make writes sloppy unless they say otherwise (`?sloppy=false`): a replica believed
    /// down is stood in for by the next healthy peer, which keeps a hint and hands the write
    /// over when the replica is back. Off by default: quorums are strict.
    #[arg(long)]
    sloppy_quorum: bool,
    /// Hints this peer keeps for one peer that is down; more are refused (and counted).
    #[arg(long, default_value_t = CoreConfig::default().max_hints_per_peer)]
    max_hints_per_peer: usize,
    /// Bytes of hints this peer keeps for one peer that is down, e.g. `64MiB`.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    max_hint_bytes_per_peer: u64,
}

/// Parses `512MiB`, `2GiB`, `100MB`, `64KiB`, `1000` (bytes).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512MiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(factor)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

/// `--max-memory`: a size, or no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemoryLimit {
    Unlimited,
    Bytes(u64),
}

/// Parses a `--max-memory`: `none`, `unlimited` or `0` for no limit, else a size.
fn parse_memory_limit(s: &str) -> Result<MemoryLimit, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "none" | "unlimited" | "0" => Ok(MemoryLimit::Unlimited),
        _ => parse_size(s).map(MemoryLimit::Bytes),
    }
}

/// The memory this process may use: the machine's (`MemTotal` of /proc/meminfo), or its
/// cgroup's limit when lower. `None` when neither can be read.
fn machine_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let total = total_kib.checked_mul(1024)?;
    // cgroup v2 says `max` for no limit; v1's "no limit" is a huge number, which min() drops.
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// The share of the machine's memory a peer's store takes by default.
const DEFAULT_MEMORY_SHARE: u64 = 2;

/// The store's memory limit: the one given, or by default half of what the machine has, and a
/// line saying which and how to change it.
fn memory_limit(given: Option<MemoryLimit>) -> Option<u64> {
    match given {
        Some(MemoryLimit::Bytes(b)) => {
            tracing::info!("store memory limit: {b} bytes (--max-memory)");
            Some(b)
        }
        Some(MemoryLimit::Unlimited) => {
            tracing::info!("store memory limit: none (--max-memory none)");
            None
        }
        None => match machine_memory_bytes() {
            Some(machine) => {
                let limit = machine / DEFAULT_MEMORY_SHARE;
                tracing::info!(
                    "store memory limit: {} MiB, half of this machine's {} MiB; change it with \
                     --max-memory SIZE (e.g. 2GiB) or --max-memory none",
                    limit >> 20,
                    machine >> 20
                );
                Some(limit)
            }
            None => {
                tracing::warn!(
                    "store memory limit: none (the machine's memory could not be read from \
                     /proc/meminfo); set one with --max-memory SIZE"
                );
                None
            }
        },
    }
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<PeerConfig> {
        let core = CoreConfig {
            replicas: self.replicas,
            partitions: self.partitions,
            vnodes: self.vnodes,
            request_timeout_ms: self.request_timeout_ms,
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_memory_bytes: memory_limit(self.max_memory),
            eviction: self.eviction,
            tombstone_grace_ms: self.tombstone_grace_ms,
            anti_entropy_interval_ms: self.anti_entropy_interval_ms,
            anti_entropy_keys_per_sec: self.anti_entropy_keys_per_sec,
            anti_entropy_bytes_per_sec: self.anti_entropy_bytes_per_sec,
            max_siblings: self.max_siblings,
            max_state_bytes: self.max_state_bytes as usize,
            sloppy_quorum: self.sloppy_quorum,
            max_hints_per_peer: self.max_hints_per_peer,
            max_hint_bytes_per_peer: self.max_hint_bytes_per_peer,
            ..CoreConfig::default()
        };
        Ok(PeerConfig {
            id: NodeId::from(self.id),
            gossip_addr: self.gossip,
            peer_addr: self.peer_addr,
            http_addr: self.http,
            seeds: self.seeds,
            secret: ClusterSecret::new(self.secret)?,
            core,
            gossip: GossipTiming {
                interval: Duration::from_millis(self.gossip_interval_ms.max(10)),
                dead_node_grace: Duration::from_secs(self.remove_down_after_secs.max(1)),
                ..GossipTiming::default()
            },
            shards: match self.shards {
                0 => ringcache::config::default_shards(),
                n => n.min(64),
            },
            client_token: self.client_token,
            insecure_no_auth: self.insecure_no_auth,
            advertise: self.advertise,
            http: HttpConfig {
                header_timeout: Duration::from_millis(self.http_header_timeout_ms),
                body_timeout: Duration::from_millis(self.http_body_timeout_ms),
                idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
                max_connections: self.http_max_connections,
                tls: match (self.http_tls_cert, self.http_tls_key) {
                    (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                    _ => None,
                },
            },
            resp: RespConfig {
                addr: (!self.no_resp).then_some(self.resp),
                idle_timeout: (self.resp_idle_timeout_secs > 0)
                    .then(|| Duration::from_secs(self.resp_idle_timeout_secs)),
                request_timeout: Duration::from_millis(self.resp_request_timeout_ms),
                max_connections: self.resp_max_connections,
                enable_flushall: self.enable_flushall,
            },
        })
    }
}

/// Exit codes (documented in README.md): 0 done or found; 1 not found; 2 a usage error (clap);
/// 3 the cluster could not serve the request (unreachable peer, too few replicas, timeout);
/// 4 any other failure.
const EXIT_UNAVAILABLE: i32 = 3;
const EXIT_FAILED: i32 = 4;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let target_url = cli.command.target_url();
    if let Err(error) = run(cli).await {
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
            | Commands::Leave { target, .. } => Some(target.url()),
            _ => None,
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
        Commands::Serve(args) => serve(args).await,
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
            if let Some(n) = launcher::replicas_for(peers, &serve_args) {
                println!(
                    "ringcache: {peers} peer(s) keep {n} cop(ies) of each key (N = {n}): \
                     fewer peers than the default N = 3 (override with --serve-arg=--replicas=N)"
                );
                serve_args.push(format!("--replicas={n}"));
            }
            match max_memory {
                Some(m) => {
                    parse_memory_limit(&m).map_err(|e| anyhow::anyhow!(e))?;
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    raise_open_files_limit();
    let config = args.into_config()?;
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

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn a_memory_limit_is_a_size_or_none() {
        use super::{parse_memory_limit, MemoryLimit};
        assert_eq!(parse_memory_limit("none"), Ok(MemoryLimit::Unlimited));
        assert_eq!(parse_memory_limit("0"), Ok(MemoryLimit::Unlimited));
        assert_eq!(parse_memory_limit("1GiB"), Ok(MemoryLimit::Bytes(1 << 30)));
        assert!(parse_memory_limit("lots").is_err());
        assert!(super::machine_memory_bytes().is_some_and(|m| m > 0));
    }
}
