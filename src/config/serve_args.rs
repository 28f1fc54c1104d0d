//! Every setting of `ringcache serve`, as a flag and as a config-file key at once.
//!
//! [`ServeArgs`] is one struct read two ways: clap reads it from the command line (and the
//! environment, for the keys that have a variable), serde reads it from a TOML file. Both use
//! the same names: a key is its flag's long name without the dashes in front (`peer-addr`,
//! `request-timeout-ms`), so the two can never drift apart (a test checks every flag is a key
//! and every key a flag). How the layers combine is [`super::file`]'s job; turning the result
//! into a [`PeerConfig`] is [`ServeArgs::into_config`]'s.
//!
//! # Promises
//! - The defaults a peer runs with are the flags' defaults: [`ServeArgs::defaults`] asks clap,
//!   and the config file's missing keys take the same values.
//! - Every switch takes `--switch=false` too, so a flag can undo what a file turned on.
//! - The keys whose values are secrets are exactly the flags whose environment values clap
//!   hides ([`ServeArgs::is_secret`]); `config print` masks them.

use super::size::{memory_limit, ByteSize, MemoryLimit};
use super::{default_shards, ConfigError, HttpConfig, PeerConfig, RespConfig, TlsFiles};
use crate::core::config::{CoreConfig, DEFAULT_VNODES};
use crate::core::eviction::EvictionPolicy;
use crate::core::types::NodeId;
use crate::shell::auth::ClusterSecret;
use crate::shell::gossip::GossipTiming;
use crate::shell::seed_addr::SeedAddr;
use clap::{ArgAction, Args, CommandFactory, FromArgMatches};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The client token's environment variable, read by `serve`, `up` and the CLI commands.
pub const TOKEN_ENV: &str = "RINGCACHE_CLIENT_TOKEN";

/// The cluster secret's environment variable (the launcher passes the secret through it).
pub const SECRET_ENV: &str = "RINGCACHE_CLUSTER_SECRET";

/// The config file's environment variable, beside `--config`.
pub const CONFIG_ENV: &str = "RINGCACHE_CONFIG";

/// `serve`'s flags; with `--config FILE`, the same settings from a TOML file.
///
/// Field names are the keys: clap spells them with dashes as flags, serde with dashes as keys.
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ServeArgs {
    /// Read settings from this TOML file: one key per flag, named like the flag without its
    /// dashes (`peer-addr = "127.0.0.1:7100"`). Flags and environment variables beat the file.
    #[arg(long, env = CONFIG_ENV, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This peer's name, unique in the cluster and kept across restarts (required).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// UDP address for gossip.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub gossip: SocketAddr,
    /// UDP address for QUIC peer traffic.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub peer_addr: SocketAddr,
    /// TCP address for the HTTP API. A non-loopback address needs --client-token (or
    /// --insecure-no-auth).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub http: SocketAddr,
    /// Require `Authorization: Bearer <token>` on every HTTP request but `GET /health`; the
    /// same on every peer of the cluster. At least 16 bytes; prefer the environment variable.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// Serve HTTP on a non-loopback address without a client token (logs a warning).
    #[arg(long, default_value_t = false, value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub insecure_no_auth: bool,
    /// The IP address other peers reach this one at; required when any address is bound
    /// unspecified (`0.0.0.0`, `::`), and used only in place of such addresses.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<IpAddr>,
    /// Gossip address of a peer to join through, `IP:PORT` or `HOST:PORT` (repeatable; in a
    /// file, a list). A name is resolved at start and again every minute, and may stand for
    /// several peers (a Kubernetes headless Service).
    #[arg(long, value_name = "ADDR")]
    pub seed: Vec<SeedAddr>,
    /// Shared secret of the cluster (at least 16 bytes; required); prefer the environment
    /// variable.
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<String>,
    /// Replicas per key (N); the same on every peer.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Keyspace partitions, a power of two; the same on every peer, for the cluster's life.
    #[arg(long, default_value_t = 1024)]
    pub partitions: u32,
    /// Virtual-node tokens per peer.
    #[arg(long, default_value_t = DEFAULT_VNODES)]
    pub vnodes: u32,
    /// Deadline of each request, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub request_timeout_ms: u64,
    /// Log key requests (HTTP and RESP) that take this long or more, in milliseconds, as
    /// `slow request` at warn, with how long each replica asked took to answer (0: all).
    #[arg(long, default_value_t = super::DEFAULT_SLOW_REQUEST.as_millis() as u64)]
    pub slow_request_ms: u64,
    /// Largest value accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Largest key accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_key_bytes: usize,
    /// Gossip round interval, in milliseconds; failure detection scales with it.
    #[arg(long, default_value_t = 200)]
    pub gossip_interval_ms: u64,
    /// How long a peer may stay down before the others take it off the ring, in seconds: the
    /// remaining replicas and anti-entropy then restore N copies of what it held. A crashed
    /// peer is never handed off from (its memory is gone); until this passes, it keeps its
    /// place, so a restart does not move data twice.
    #[arg(long, default_value_t = 3600)]
    pub remove_down_after_secs: u64,
    /// Most concurrent values (siblings) a key may have after a write: a blind write past it
    /// is refused with 409 (read the key and write back with its context to resolve them).
    #[arg(long, default_value_t = CoreConfig::default().max_siblings)]
    pub max_siblings: usize,
    /// Most bytes a key's concurrent values may take in all after a write, e.g. `64MiB`.
    #[arg(long, default_value = "64MiB")]
    pub max_state_bytes: ByteSize,
    /// Memory limit of the store (keys, values, versions and overhead): bytes, or with a
    /// unit: `512MiB`, `2GiB`, `100MB`; `none` (or `0`) for no limit. By default half of the
    /// machine's memory (or of the cgroup's limit, if lower).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<MemoryLimit>,
    /// How long a client may take to send a request's headers, from its first byte, in
    /// milliseconds.
    #[arg(long, default_value_t = HttpConfig::default().header_timeout.as_millis() as u64)]
    pub http_header_timeout_ms: u64,
    /// How long a client may take to send a request's body, from the end of its headers, in
    /// milliseconds.
    #[arg(long, default_value_t = HttpConfig::default().body_timeout.as_millis() as u64)]
    pub http_body_timeout_ms: u64,
    /// How long an HTTP connection may sit with no request and nothing moving, in
    /// milliseconds.
    #[arg(long, default_value_t = HttpConfig::default().idle_timeout.as_millis() as u64)]
    pub http_idle_timeout_ms: u64,
    /// HTTP connections served at once; past it a few more are served `GET /health` alone and
    /// the rest are refused.
    #[arg(long, default_value_t = HttpConfig::default().max_connections)]
    pub http_max_connections: usize,
    /// Serve the HTTP API over TLS with this PEM certificate chain (needs --http-tls-key).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tls_cert: Option<PathBuf>,
    /// The PEM private key of --http-tls-cert.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tls_key: Option<PathBuf>,
    /// TCP address for the Redis protocol (RESP2/RESP3: `redis-cli -p PORT`). A non-loopback
    /// address needs --client-token (clients then AUTH with it) or --insecure-no-auth.
    #[arg(long, default_value = super::DEFAULT_RESP_ADDR)]
    pub resp: SocketAddr,
    /// Serve no Redis protocol endpoint.
    #[arg(long, default_value_t = false, value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub no_resp: bool,
    /// Close a RESP connection with no request for this long, in seconds (0: never).
    #[arg(long, default_value_t = 600)]
    pub resp_idle_timeout_secs: u64,
    /// How long a client may take to send one RESP request, from its first byte, in
    /// milliseconds.
    #[arg(long, default_value_t = RespConfig::default().request_timeout.as_millis() as u64)]
    pub resp_request_timeout_ms: u64,
    /// RESP connections served at once; more are told `max number of clients reached`.
    #[arg(long, default_value_t = RespConfig::default().max_connections)]
    pub resp_max_connections: usize,
    /// Let RESP's FLUSHALL / FLUSHDB delete every key this peer holds (refused otherwise).
    #[arg(long, default_value_t = false, value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_flushall: bool,
    /// Engine shards, each served by its own task (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub shards: u32,
    /// Worker threads of the peer's runtime (0: one per core). Peers sharing a machine do
    /// better with the cores divided among them than with every peer's threads contending for
    /// all of them; `ringcache up` gives each of its N peers the cores divided by N.
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// What a full store evicts: lru, lfu, fifo, random, volatile-ttl, noeviction.
    #[arg(long, default_value_t = EvictionPolicy::Lru)]
    #[serde(with = "as_text")]
    pub eviction: EvictionPolicy,
    /// How long a deleted (or expired) key's tombstones stay after every replica was seen
    /// holding them, in milliseconds; at least the request timeout, so that no write still
    /// in flight can arrive after them and bring the value back.
    #[arg(long, default_value_t = CoreConfig::default().tombstone_grace_ms)]
    pub tombstone_grace_ms: u64,
    /// How long an expired value is kept before active expiry reclaims it, in milliseconds,
    /// so `GET …?stale_ok=SECONDS` can still serve it marked stale (stale-while-revalidate).
    /// 0, the default, reclaims expired values at once.
    #[arg(long, default_value_t = CoreConfig::default().stale_window_ms)]
    pub stale_window_ms: u64,
    /// How long a read waits for the R replicas it asked before asking the key's other live
    /// replicas too, in milliseconds (less than the request timeout). A replica a read did
    /// not ask is not read-repaired by it: anti-entropy converges it. 0 asks every live
    /// replica on every read (more peer traffic per read; read repair then sees every one).
    #[arg(long, default_value_t = CoreConfig::default().read_spare_after_ms)]
    pub read_spare_after_ms: u64,
    /// How often each peer compares its hash trees with every other replica, in milliseconds
    /// (0 turns anti-entropy off; a peer coming back starts a round at once, a ring change
    /// within one interval).
    #[arg(long, default_value_t = CoreConfig::default().anti_entropy_interval_ms)]
    pub anti_entropy_interval_ms: u64,
    /// Anti-entropy budget of each engine shard: key states moved per second.
    #[arg(long, default_value_t = CoreConfig::default().anti_entropy_keys_per_sec)]
    pub anti_entropy_keys_per_sec: u64,
    /// Anti-entropy budget of each engine shard: bytes moved per second, e.g. `32MiB`.
    #[arg(long, default_value = "32MiB")]
    pub anti_entropy_bytes_per_sec: ByteSize,
    /// Client requests per second (coordinated, or answered as a replica) from which an engine
    /// shard counts as busy, and its anti-entropy and handoff yield to the clients
    /// (0: never).
    #[arg(long, default_value_t = CoreConfig::default().anti_entropy_busy_requests)]
    pub anti_entropy_busy_requests: u64,
    /// Share of the anti-entropy budget, in percent, that a busy shard spends, and that a
    /// transfer with a busy peer runs at (100: background work never yields).
    #[arg(long, default_value_t = CoreConfig::default().anti_entropy_busy_percent,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub anti_entropy_busy_percent: u64,
    /// Make writes sloppy unless they say otherwise (`?sloppy=false`): a replica believed
    /// down is stood in for by the next healthy peer, which keeps a hint and hands the write
    /// over when the replica is back. Off by default: quorums are strict.
    #[arg(long, default_value_t = false, value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub sloppy_quorum: bool,
    /// Hints this peer keeps for one peer that is down; more are refused (and counted).
    #[arg(long, default_value_t = CoreConfig::default().max_hints_per_peer)]
    pub max_hints_per_peer: usize,
    /// Bytes of hints this peer keeps for one peer that is down, e.g. `64MiB`.
    #[arg(long, default_value = "64MiB")]
    pub max_hint_bytes_per_peer: ByteSize,
}

/// A standalone `serve` command line, for reading [`ServeArgs`] outside the CLI.
#[derive(clap::Parser)]
#[command(name = "serve")]
struct ServeCommand {
    #[command(flatten)]
    args: ServeArgs,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self::defaults()
    }
}

impl ServeArgs {
    /// The settings a peer runs with when nothing sets them: the flags' defaults, read from
    /// clap with the environment ignored.
    pub fn defaults() -> Self {
        let command = ServeCommand::command().mut_args(|a| a.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["serve"])
            .expect("serve's flags all have defaults or are optional");
        Self::from_arg_matches(&matches).expect("the defaults parse")
    }

    /// The `serve` flags as clap knows them (names, environment variables, secrecy).
    pub fn command() -> clap::Command {
        ServeCommand::command()
    }

    /// Every config-file key, in the order `serve --help` lists the flags.
    pub fn keys() -> Vec<String> {
        Self::command()
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|long| !matches!(*long, "config" | "help"))
            .map(str::to_string)
            .collect()
    }

    /// Whether a key's value is a secret: its flag's environment value is hidden from
    /// `--help`, and `config print` masks it.
    pub fn is_secret(key: &str) -> bool {
        Self::command()
            .get_arguments()
            .any(|a| a.get_long() == Some(key) && a.is_hide_env_values_set())
    }

    /// The environment variable that sets a key, if any.
    pub fn env_var(key: &str) -> Option<String> {
        Self::command()
            .get_arguments()
            .find(|a| a.get_long() == Some(key))
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
    }

    /// The peer configuration these settings describe. Fails on a missing `id` or
    /// `cluster-secret`, and on settings no peer can run with.
    pub fn into_config(self) -> Result<PeerConfig, ConfigError> {
        let id = self.id.ok_or(ConfigError::Missing {
            key: "id",
            env: None,
        })?;
        let secret = self.cluster_secret.ok_or(ConfigError::Missing {
            key: "cluster-secret",
            env: Some(SECRET_ENV),
        })?;
        let secret = ClusterSecret::new(secret).map_err(|e| ConfigError::Invalid {
            key: "cluster-secret",
            message: e.to_string(),
        })?;
        let tls = match (self.http_tls_cert, self.http_tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "http-tls-cert",
                    message: "needs http-tls-key, the certificate's private key".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "http-tls-key",
                    message: "needs http-tls-cert, the key's certificate chain".into(),
                })
            }
        };
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
            stale_window_ms: self.stale_window_ms,
            read_spare_after_ms: self.read_spare_after_ms,
            anti_entropy_interval_ms: self.anti_entropy_interval_ms,
            anti_entropy_keys_per_sec: self.anti_entropy_keys_per_sec,
            anti_entropy_bytes_per_sec: self.anti_entropy_bytes_per_sec.bytes(),
            anti_entropy_busy_requests: self.anti_entropy_busy_requests,
            anti_entropy_busy_percent: self.anti_entropy_busy_percent,
            max_siblings: self.max_siblings,
            max_state_bytes: self.max_state_bytes.bytes() as usize,
            sloppy_quorum: self.sloppy_quorum,
            max_hints_per_peer: self.max_hints_per_peer,
            max_hint_bytes_per_peer: self.max_hint_bytes_per_peer.bytes(),
            ..CoreConfig::default()
        };
        Ok(PeerConfig {
            id: NodeId::from(id),
            gossip_addr: self.gossip,
            peer_addr: self.peer_addr,
            http_addr: self.http,
            seeds: self.seed,
            secret,
            core,
            gossip: GossipTiming {
                interval: Duration::from_millis(self.gossip_interval_ms.max(10)),
                dead_node_grace: Duration::from_secs(self.remove_down_after_secs.max(1)),
                ..GossipTiming::default()
            },
            shards: match self.shards {
                0 => default_shards(),
                n => n.min(64),
            },
            client_token: self.client_token,
            insecure_no_auth: self.insecure_no_auth,
            advertise: self.advertise,
            slow_request: Duration::from_millis(self.slow_request_ms),
            http: HttpConfig {
                header_timeout: Duration::from_millis(self.http_header_timeout_ms),
                body_timeout: Duration::from_millis(self.http_body_timeout_ms),
                idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
                max_connections: self.http_max_connections,
                tls,
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

/// Serde through `Display` and `FromStr`, so a file spells a value as the flag does
/// (`eviction = "volatile-ttl"`).
mod as_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_is_a_key_named_like_it() {
        let keys = ServeArgs::keys();
        assert!(keys.len() > 30, "{keys:?}");
        for arg in ServeArgs::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "config" | "help") {
                continue;
            }
            // The clap id is the field name, so serde's kebab-case key is the flag's name.
            assert_eq!(arg.get_id().as_str().replace('_', "-"), long);
        }
        // Every key serializes (or is an unset option) under its own name, and nothing else.
        let table = toml::Table::try_from(ServeArgs::defaults()).unwrap();
        for key in table.keys() {
            assert!(keys.contains(key), "{key} is serialized but is not a flag");
        }
    }

    #[test]
    fn the_defaults_are_the_flags_defaults_not_the_environment() {
        let d = ServeArgs::defaults();
        assert_eq!(d.http, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(d.max_state_bytes, ByteSize(64 << 20));
        assert_eq!(d.cluster_secret, None);
        assert_eq!(d.client_token, None);
        assert!(!d.sloppy_quorum);
    }

    #[test]
    fn the_secrets_are_the_token_and_the_cluster_secret() {
        let secret: Vec<String> = ServeArgs::keys()
            .into_iter()
            .filter(|k| ServeArgs::is_secret(k))
            .collect();
        assert_eq!(secret, ["client-token", "cluster-secret"]);
    }

    #[test]
    fn a_switch_can_be_turned_off_on_the_command_line() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            ServeCommand::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
                .unwrap()
                .args
        };
        assert!(parse(&["--sloppy-quorum"]).sloppy_quorum);
        assert!(!parse(&["--sloppy-quorum=false"]).sloppy_quorum);
        // A switch does not swallow the next argument.
        let a = parse(&["--no-resp", "--id", "A"]);
        assert!(a.no_resp);
        assert_eq!(a.id.as_deref(), Some("A"));
    }

    #[test]
    fn a_peer_config_needs_an_id_and_a_cluster_secret() {
        let mut args = ServeArgs::defaults();
        assert!(matches!(
            args.clone().into_config(),
            Err(ConfigError::Missing { key: "id", .. })
        ));
        args.id = Some("A".into());
        assert!(matches!(
            args.clone().into_config(),
            Err(ConfigError::Missing {
                key: "cluster-secret",
                ..
            })
        ));
        args.cluster_secret = Some("a secret of more than 16 bytes".into());
        args.http_tls_cert = Some("cert.pem".into());
        assert!(matches!(
            args.clone().into_config(),
            Err(ConfigError::Invalid {
                key: "http-tls-cert",
                ..
            })
        ));
        args.http_tls_cert = None;
        args.slow_request_ms = 40;
        let config = args.into_config().unwrap();
        config.validate().unwrap();
        assert_eq!(config.id.as_str(), "A");
        assert_eq!(config.slow_request, Duration::from_millis(40));
    }
}
