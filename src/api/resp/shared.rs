//! What every RESP connection of one peer shares: the driver and pub/sub hub, the keys that
//! authenticate clients and causal contexts, the endpoint's settings and its counters (`INFO`).

use crate::api::auth::ClientToken;
use crate::api::causal_context::ContextKey;
use crate::shell::driver::DriverHandle;
use crate::shell::pubsub::PubSub;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The RESP endpoint's settings, from the peer's configuration.
#[derive(Clone, Debug)]
pub struct RespSettings {
    /// The largest value a write may carry (`--max-value-bytes`): bounds bulk strings.
    pub max_value_bytes: usize,
    /// Connections served at once; past it a connection is told
    /// `-ERR max number of clients reached` and closed.
    pub max_connections: usize,
    /// A connection with no request for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// From a request's first byte, the whole request must arrive within this.
    pub request_timeout: Duration,
    /// Whether FLUSHALL / FLUSHDB may run (`--enable-flushall`).
    pub enable_flushall: bool,
    /// Replicas per key (N), for `INFO` and `RC.CONSISTENCY`.
    pub replicas: usize,
    /// The store's memory limit and eviction policy, for `INFO` and `CONFIG GET`.
    pub max_memory_bytes: Option<u64>,
    pub eviction: String,
    /// Requests that take this long or more are logged as slow (`--slow-request-ms`).
    pub slow_request: Duration,
}

/// Counters of the endpoint, read by `INFO`.
#[derive(Debug, Default)]
pub struct Counters {
    next_client_id: AtomicU64,
    pub connected: AtomicUsize,
    pub connections_received: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub commands_processed: AtomicU64,
}

impl Counters {
    /// A fresh client id (`CLIENT ID`), never reused while the peer runs.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Shared by the accept loop and every connection of a peer.
pub struct RespShared {
    pub driver: DriverHandle,
    /// The peer's pub/sub hub (cross-peer fan-out included).
    pub pubsub: PubSub,
    pub context_key: ContextKey,
    /// When set, a connection must `AUTH` (or `HELLO … AUTH`) with it before anything else.
    pub client_token: Option<ClientToken>,
    pub settings: RespSettings,
    pub counters: Counters,
    /// The address the endpoint listens on (`INFO`'s `tcp_port`, `CLIENT INFO`'s `laddr`).
    pub local_addr: SocketAddr,
    /// When the endpoint started (`INFO`'s uptime), on the monotonic clock.
    pub started: tokio::time::Instant,
}
