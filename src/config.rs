//! One peer's whole configuration, made of per-area parts.
//!
//! `main` builds a [`PeerConfig`] from `serve`'s settings ([`ServeArgs`]: flags, environment
//! variables, a config file and defaults, layered by [`EffectiveConfig`]); tests build one
//! with [`PeerConfig::for_test`]. Each component receives only its own part, by value.
//!
//! # Layout
//! - [`serve_args`] — every `serve` setting, as a flag and as a config-file key.
//! - [`file`] — a TOML config file, checked key by key.
//! - [`effective`] — the layering (flags > environment > file > defaults) and `config print`.
//! - [`size`] — byte sizes (`512MiB`) and the store's memory limit.
//! - [`error`] — [`ConfigError`], what can be wrong with the settings.

use crate::core::config::CoreConfig;
use crate::core::types::NodeId;
use crate::shell::auth::ClusterSecret;
use crate::shell::gossip::GossipTiming;
use crate::shell::seed_addr::SeedAddr;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub mod effective;
pub mod error;
pub mod file;
pub mod serve_args;
pub mod size;

pub use effective::EffectiveConfig;
pub use error::ConfigError;
pub use file::ConfigFile;
pub use serve_args::ServeArgs;

#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// This peer's name, unique in the cluster and kept across restarts.
    pub id: NodeId,
    /// UDP address for gossip (port 0 picks a free one).
    pub gossip_addr: SocketAddr,
    /// UDP address for QUIC peer traffic (port 0 picks a free one).
    pub peer_addr: SocketAddr,
    /// TCP address for the HTTP API (port 0 picks a free one).
    pub http_addr: SocketAddr,
    /// Gossip addresses (or `host:port` names) of peers to join through; empty for the
    /// first peer.
    pub seeds: Vec<SeedAddr>,
    /// Shared by every peer of the cluster; authenticates gossip and QUIC.
    pub secret: ClusterSecret,
    /// Placement, quorum and limit settings of the protocol core.
    pub core: CoreConfig,
    /// Gossip and failure-detection timing.
    pub gossip: GossipTiming,
    /// Engine shards (one driver task each); the keyspace is dealt to them by partition.
    pub shards: u32,
    /// The bearer token every HTTP request but `GET /health` must carry; the same on every
    /// peer of the cluster (peers send it to each other when summing stats). `None`: open.
    pub client_token: Option<String>,
    /// Serve HTTP on a non-loopback address without a client token (`--insecure-no-auth`).
    pub insecure_no_auth: bool,
    /// The host other peers reach this one at, in place of an unspecified bind address
    /// (`0.0.0.0`, `::`), which cannot be gossiped.
    pub advertise: Option<IpAddr>,
    /// Key requests (HTTP and RESP) that take this long or more are logged as slow, with how
    /// long each replica asked took to answer (`--slow-request-ms`; zero logs every one).
    pub slow_request: Duration,
    /// Timeouts, the connection cap and TLS of the HTTP API.
    pub http: HttpConfig,
    /// The Redis protocol endpoint: its address, deadlines and connection cap.
    pub resp: RespConfig,
}

/// The Redis protocol (RESP) endpoint of a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RespConfig {
    /// TCP address to serve RESP on (port 0 picks a free one); `None`: no RESP endpoint
    /// (`--no-resp`). Loopback by default, like HTTP.
    pub addr: Option<SocketAddr>,
    /// A connection with no request pending is closed after this long
    /// (`--resp-idle-timeout-secs`; `None` for 0: never, Redis's own default).
    pub idle_timeout: Option<Duration>,
    /// From a request's first byte, the whole request must arrive within this
    /// (`--resp-request-timeout-ms`).
    pub request_timeout: Duration,
    /// Connections served at once (`--resp-max-connections`); more are refused with Redis's
    /// `max number of clients reached`.
    pub max_connections: usize,
    /// Whether FLUSHALL may delete every key (`--enable-flushall`); refused otherwise.
    pub enable_flushall: bool,
}

/// Requests slower than this are logged unless `--slow-request-ms` says otherwise.
pub const DEFAULT_SLOW_REQUEST: Duration = Duration::from_millis(250);

/// The RESP address a single peer serves on by default: beside a Redis server's 6379, not
/// on it, so both can run on one machine.
pub const DEFAULT_RESP_ADDR: &str = "127.0.0.1:6380";

impl Default for RespConfig {
    fn default() -> Self {
        Self {
            addr: Some(DEFAULT_RESP_ADDR.parse().expect("a valid address")),
            idle_timeout: Some(Duration::from_secs(600)),
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
            enable_flushall: false,
        }
    }
}

impl RespConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.request_timeout.is_zero(),
            "--resp-request-timeout-ms must be at least 1"
        );
        anyhow::ensure!(
            self.max_connections > 0,
            "--resp-max-connections must be at least 1"
        );
        Ok(())
    }
}

/// How the HTTP API holds its connections: what a slow, idle or greedy client can cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// From a request's first byte to the end of its headers (`--http-header-timeout-ms`).
    pub header_timeout: Duration,
    /// From the end of a request's headers to the end of its body (`--http-body-timeout-ms`).
    pub body_timeout: Duration,
    /// A connection between requests, or one on which no byte moves while it answers, is
    /// closed after this long (`--http-idle-timeout-ms`).
    pub idle_timeout: Duration,
    /// Connections served at once (`--http-max-connections`); a few more are kept for
    /// `GET /health` alone (see `api::http_server`).
    pub max_connections: usize,
    /// Serve HTTPS with this certificate chain and key (PEM), or plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
}

/// A PEM certificate chain and its private key (`--http-tls-cert`, `--http-tls-key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            tls: None,
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, d) in [
            ("--http-header-timeout-ms", self.header_timeout),
            ("--http-body-timeout-ms", self.body_timeout),
            ("--http-idle-timeout-ms", self.idle_timeout),
        ] {
            anyhow::ensure!(!d.is_zero(), "{name} must be at least 1");
        }
        anyhow::ensure!(
            self.max_connections > 0,
            "--http-max-connections must be at least 1"
        );
        Ok(())
    }
}

/// One shard per available core.
pub fn default_shards() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .clamp(1, 64)
}

impl PeerConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.id.as_str().is_empty(),
            "the peer id must not be empty"
        );
        self.core.validate()?;
        self.http.validate()?;
        self.resp.validate()?;
        if let Some(host) = self.advertise {
            anyhow::ensure!(
                !host.is_unspecified(),
                "--advertise {host} is not an address other peers can connect to"
            );
        }
        anyhow::ensure!(
            self.client_token.is_some()
                || self.insecure_no_auth
                || self.http_addr.ip().is_loopback(),
            "refusing to serve HTTP on {} without a client token: anyone who can reach it could \
             read and write every key. Set --client-token (or RINGCACHE_CLIENT_TOKEN), bind \
             --http to a loopback address, or pass --insecure-no-auth to serve it open anyway",
            self.http_addr
        );
        if let Some(resp) = self.resp.addr {
            anyhow::ensure!(
                self.client_token.is_some() || self.insecure_no_auth || resp.ip().is_loopback(),
                "refusing to serve RESP on {resp} without a client token: anyone who can reach \
                 it could read and write every key. Set --client-token (clients then AUTH with \
                 it), bind --resp to a loopback address, or pass --insecure-no-auth"
            );
        }
        Ok(())
    }

    /// The address other peers and clients are told to use for a socket bound to `bound`:
    /// `bound` itself, or for an unspecified bind (`0.0.0.0`, `::`) the same port on
    /// [`advertise`](Self::advertise), which is then required.
    pub fn advertised(&self, what: &str, bound: SocketAddr) -> anyhow::Result<SocketAddr> {
        if !bound.ip().is_unspecified() {
            return Ok(bound);
        }
        let host = self.advertise.ok_or_else(|| {
            anyhow::anyhow!(
                "{what} is bound to {bound}, which other peers cannot connect to: pass \
                 --advertise HOST with the address they should use, or bind a concrete address"
            )
        })?;
        Ok(SocketAddr::new(host, bound.port()))
    }

    /// Loopback, free ports, fast gossip and the small core test configuration.
    pub fn for_test(id: &str, secret: &str, seeds: Vec<SocketAddr>) -> Self {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self {
            id: NodeId::from(id),
            gossip_addr: loopback,
            peer_addr: loopback,
            http_addr: loopback,
            seeds: seeds.into_iter().map(SeedAddr::from).collect(),
            secret: ClusterSecret::new(secret).expect("test secrets are long enough"),
            core: CoreConfig::for_test(),
            gossip: GossipTiming {
                interval: std::time::Duration::from_millis(100),
                ..GossipTiming::default()
            },
            shards: 2,
            client_token: None,
            insecure_no_auth: false,
            advertise: None,
            slow_request: DEFAULT_SLOW_REQUEST,
            http: HttpConfig::default(),
            resp: RespConfig {
                addr: Some(loopback),
                ..RespConfig::default()
            },
        }
    }
}
