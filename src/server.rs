//! Starting and stopping one whole peer: sockets, gossip, QUIC transport, driver, HTTP and
//! RESP.
//!
//! This is the one place that assembles a peer from the layers below it (the HTTP API, the
//! shell and the core), so none of them needs to know the others' wiring: layers run one way,
//! `main`/`launcher` → `client` → `server` → `api` → `shell` → `core` (`tests/layers.rs`).
//!
//! Sockets are bound before anything is announced, so a peer asked for port 0 gossips the port
//! it really got. [`RunningPeer::shutdown`] stops every task it started.
// Starting a peer spawns tasks and reads the wall clock (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use crate::api::auth::ClientToken;
use crate::api::causal_context::ContextKey;
use crate::api::http;
use crate::api::http_server::HttpServer;
use crate::api::resp;
use crate::api::resp::shared::{RespSettings, RespShared};
use crate::config::PeerConfig;
use crate::core::config::CoreConfig;
use crate::core::node::Node;
use crate::shell::auth::PeerIdentity;
use crate::shell::driver::{spawn_shards, wall_clock_ms, DriverHandle};
use crate::shell::gossip::{Gossip, GossipError, GossipSetup};
use crate::shell::health::Health;
use crate::shell::pubsub::PubSub;
use crate::shell::transport::PeerTransport;
use anyhow::Context;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// The addresses a started peer is reached at: the ports it really bound, on the host it
/// bound or, for an unspecified bind (`0.0.0.0`, `::`), on its `--advertise` host.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PeerAddresses {
    pub id: String,
    pub gossip: SocketAddr,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    /// The Redis protocol endpoint, when the peer serves one.
    #[serde(default)]
    pub resp: Option<SocketAddr>,
    /// The HTTP API is served over TLS (`--http-tls-cert`): its URL is `https://`.
    #[serde(default)]
    pub http_tls: bool,
}

impl PeerAddresses {
    /// The base URL of this peer's HTTP API: `https://` when it serves TLS, else `http://`.
    pub fn http_url(&self) -> String {
        let scheme = if self.http_tls { "https" } else { "http" };
        format!("{scheme}://{}", self.http)
    }
}

pub struct RunningPeer {
    pub addresses: PeerAddresses,
    pub driver: DriverHandle,
    shutdown: watch::Sender<bool>,
    /// How long a graceful leave may wait for its handoff.
    handoff_limit_ms: u64,
    gossip: Arc<Gossip>,
    transport: PeerTransport,
    pubsub: PubSub,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningPeer {
    pub async fn start(config: PeerConfig) -> anyhow::Result<RunningPeer> {
        config.validate()?;
        let client_token = config
            .client_token
            .as_deref()
            .map(ClientToken::new)
            .transpose()?;
        if client_token.is_none() && !config.http_addr.ip().is_loopback() {
            tracing::warn!(
                http = %config.http_addr,
                "INSECURE: --insecure-no-auth serves the HTTP API on a non-loopback address \
                 WITHOUT AUTHENTICATION: anyone who can reach it can read, write and delete \
                 every key. Set --client-token to require a token."
            );
        }
        // Refuse an unspecified bind without --advertise before binding anything.
        for (what, addr) in [
            ("gossip", config.gossip_addr),
            ("peer traffic", config.peer_addr),
            ("HTTP", config.http_addr),
        ] {
            config.advertised(what, addr)?;
        }
        // A bad certificate or key fails start-up before anything is bound.
        let http_server = HttpServer::new(config.http.clone())?;
        let quic_socket = std::net::UdpSocket::bind(config.peer_addr)
            .with_context(|| format!("binding peer traffic on {}", config.peer_addr))?;
        let http_listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
        let resp_listener = match config.resp.addr {
            Some(addr) => {
                config.advertised("RESP", addr)?;
                Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding RESP on {addr}"))?,
                )
            }
            None => None,
        };
        let gossip_bound = free_gossip_addr(config.gossip_addr)?;
        let addresses = PeerAddresses {
            id: config.id.to_string(),
            gossip: config.advertised("gossip", gossip_bound)?,
            peer: config.advertised("peer traffic", quic_socket.local_addr()?)?,
            http: config.advertised("HTTP", http_listener.local_addr()?)?,
            resp: match &resp_listener {
                Some(l) => Some(config.advertised("RESP", l.local_addr()?)?),
                None => None,
            },
            http_tls: http_server.is_tls(),
        };

        let identity = PeerIdentity::new(&config.secret, config.id.as_str())?;
        let (inbound_tx, inbound_rx) = mpsc::channel(65_536);
        let transport =
            PeerTransport::start(quic_socket, &identity, config.id.clone(), inbound_tx)?;

        let incarnation = wall_clock_ms();
        // Down while gossip restarts, failed if it gives up; `/health` answers 503 then.
        let health = Health::new();
        let gossip = Arc::new(
            Gossip::start(GossipSetup {
                listen_addr: gossip_bound,
                advertise_addr: addresses.gossip,
                node: config.id.clone(),
                generation: incarnation,
                seeds: config.seeds.clone(),
                cluster_id: config.secret.cluster_id(),
                gossip_key: config.secret.gossip_key(),
                seal_key: config.secret.gossip_seal_key(),
                timing: config.gossip.clone(),
                peer_addr: addresses.peer,
                http_addr: addresses.http,
                health: health.clone(),
            })
            .await?,
        );

        // One engine shard per core; the memory limit is shared out among them.
        let shards = config.shards.max(1);
        let shard_config = shard_config(&config.core, shards);
        let nodes = (0..shards)
            .map(|i| {
                Node::new_shard(
                    config.id.clone(),
                    incarnation,
                    shard_config.clone(),
                    i,
                    shards,
                )
            })
            .collect();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let pubsub = PubSub::new();
        let (driver, mut tasks) = spawn_shards(
            nodes,
            gossip.clone(),
            transport.clone(),
            inbound_rx,
            shutdown_rx.clone(),
            pubsub.clone(),
        );
        // Peers ask each other for stats over HTTPS, trusting the certificates this one serves.
        let peer_tls = match &config.http.tls {
            Some(files) => Some(std::fs::read(&files.cert).with_context(|| {
                format!("reading the TLS certificate {}", files.cert.display())
            })?),
            None => None,
        };
        let resp_task = resp_listener.map(|listener| {
            let shared = Arc::new(RespShared {
                driver: driver.clone(),
                pubsub: pubsub.clone(),
                context_key: ContextKey::new(config.secret.context_key()),
                client_token: client_token.clone(),
                settings: RespSettings {
                    max_value_bytes: config.core.max_value_bytes,
                    max_connections: config.resp.max_connections,
                    idle_timeout: config.resp.idle_timeout,
                    request_timeout: config.resp.request_timeout,
                    enable_flushall: config.resp.enable_flushall,
                    replicas: config.core.replicas,
                    max_memory_bytes: config.core.max_memory_bytes,
                    eviction: config.core.eviction.to_string(),
                    slow_request: config.slow_request,
                },
                counters: Default::default(),
                local_addr: addresses.resp.expect("bound above"),
                started: tokio::time::Instant::now(),
            });
            tokio::spawn(resp::server::run(listener, shared, shutdown_rx.clone()))
        });
        let routers = http::router(
            driver.clone(),
            pubsub.clone(),
            http::ApiSettings {
                max_value_bytes: config.core.max_value_bytes,
                slow_request: config.slow_request,
            },
            ContextKey::new(config.secret.context_key()),
            client_token,
            health,
            peer_tls.as_deref(),
        )?;
        let http_task = tokio::spawn(http_server.run(http_listener, routers, shutdown_rx));
        tracing::info!(?addresses, "peer started");
        Ok(RunningPeer {
            addresses,
            driver,
            shutdown: shutdown_tx,
            handoff_limit_ms: config.core.tombstone_grace_ms / 4
                + 4 * config.core.request_timeout_ms,
            gossip,
            transport,
            pubsub,
            tasks: {
                tasks.push(http_task);
                tasks.extend(resp_task);
                tasks
            },
        })
    }

    /// This peer's gossip: its view, its datagram counters.
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// This peer's pub/sub hub (published messages reach every live peer's subscribers).
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    /// Resolves if gossip ended more often than its restart budget allows and was given up:
    /// the peer's view of the cluster can no longer change, so it must stop (`serve` exits
    /// with this error).
    pub async fn gossip_gave_up(&self) -> GossipError {
        self.gossip.gave_up().await
    }

    /// This peer's QUIC transport: its counters.
    pub fn transport(&self) -> &PeerTransport {
        &self.transport
    }

    /// Turns true once this peer was asked to leave (`POST /v1/leave`).
    pub fn leave_requested(&self) -> watch::Receiver<bool> {
        self.driver.leaving()
    }

    /// Leaves the cluster: announces it, hands every partition to its new replicas, and waits
    /// until done — bounded: a handoff abandons what it has not sent a quarter of the tombstone
    /// grace after it began, so this waits that long and a few request timeouts more.
    pub async fn hand_off_and_wait(&self) {
        self.driver.leave().await;
        let limit = std::time::Duration::from_millis(self.handoff_limit_ms);
        let started = tokio::time::Instant::now();
        let mut last_report = started;
        loop {
            let Some(status) = self.driver.status().await else {
                return;
            };
            // Done only once the shards are leaving: before, an empty handoff means none was
            // planned yet, not that it is over.
            if status.leaving && status.handoff.is_empty() {
                tracing::info!(keys = status.keys_handed_off, "handoff done");
                return;
            }
            if started.elapsed() > limit {
                tracing::warn!(
                    partitions = status.handoff.len(),
                    "handoff not done in time"
                );
                return;
            }
            if last_report.elapsed() > std::time::Duration::from_secs(1) {
                last_report = tokio::time::Instant::now();
                let keys_left: u64 = status.handoff.iter().map(|p| p.keys_left).sum();
                tracing::info!(
                    partitions = status.handoff.len(),
                    keys_left,
                    handed_off = status.keys_handed_off,
                    "handing off"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops HTTP, RESP, the driver, QUIC and gossip, and waits for their tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.transport.close();
        self.gossip.shutdown().await;
    }
}

/// The gossip socket is bound inside chitchat's start, from an address: for port 0 we pick a free port
/// by binding and releasing it just before. The window in which another process could take the
/// port is tiny, and a collision makes start-up fail loudly rather than misbehave.
fn free_gossip_addr(requested: SocketAddr) -> anyhow::Result<SocketAddr> {
    if requested.port() != 0 {
        return Ok(requested);
    }
    let probe = std::net::UdpSocket::bind(requested)
        .with_context(|| format!("finding a free gossip port on {}", requested.ip()))?;
    Ok(probe.local_addr()?)
}

/// What each of `shards` engine shards runs with: its share of the memory limit, and secret
/// random keys for its store's index, so clients cannot choose keys that collide in it.
fn shard_config(core: &CoreConfig, shards: u32) -> CoreConfig {
    let mut shard_config = core.clone();
    shard_config.max_memory_bytes = core.max_memory_bytes.map(|m| m / shards as u64);
    shard_config.index_hash_keys = (rand::random(), rand::random());
    shard_config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_keys_its_store_index_at_random() {
        let core = CoreConfig {
            max_memory_bytes: Some(1 << 30),
            ..CoreConfig::default()
        };
        let (one, other) = (shard_config(&core, 2), shard_config(&core, 2));
        assert_ne!(one.index_hash_keys, (0, 0));
        assert_ne!(one.index_hash_keys, other.index_hash_keys);
        assert_eq!(one.max_memory_bytes, Some(1 << 29));
    }

    #[test]
    fn the_http_url_says_https_when_the_api_serves_tls() {
        let mut addresses = PeerAddresses {
            id: "A".into(),
            gossip: "127.0.0.1:7000".parse().unwrap(),
            peer: "127.0.0.1:7100".parse().unwrap(),
            http: "127.0.0.1:7070".parse().unwrap(),
            resp: None,
            http_tls: false,
        };
        assert_eq!(addresses.http_url(), "http://127.0.0.1:7070");
        addresses.http_tls = true;
        assert_eq!(addresses.http_url(), "https://127.0.0.1:7070");
        addresses.http = "[::1]:7070".parse().unwrap();
        assert_eq!(addresses.http_url(), "https://[::1]:7070");
        // A READY line from a peer that predates the field reads as plain HTTP.
        let old = r#"{"id":"A","gossip":"127.0.0.1:7000","peer":"127.0.0.1:7100","http":"127.0.0.1:7070"}"#;
        let parsed: PeerAddresses = serde_json::from_str(old).unwrap();
        assert_eq!(parsed.http_url(), "http://127.0.0.1:7070");
        assert_eq!(parsed.resp, None);
    }
}
