//! [`ClusterClient`]: a client that knows the ring, so each request goes straight to a live
//! replica of its key.
//!
//! Why: any peer coordinates any request, but a peer that is not one of the key's replicas
//! must forward the write (one more hop) and fetch every copy of a read from elsewhere. A client
//! that places keys itself — the same SHA-1 ring, built from the members, partitions, virtual
//! nodes and replication factor any peer reports at `GET /v1/cluster` — saves that hop, and
//! splits a many-key request into one batch per peer, sent side by side.
//!
//! Promises:
//! - Routing is only an optimisation: a stale ring sends a request to a peer that still
//!   coordinates it correctly, so answers never depend on the client's view being current.
//! - The view is refreshed every [`REFRESH_EVERY`] and at once after a routing failure.
//! - A request is retried on the next candidate peer only when it is known not to have
//!   happened: the connection was refused (nothing was sent), or the peer answered `503` at once
//!   because too few replicas were reachable (it wrote nothing). A timeout is never retried
//!   for a write: it may have been applied.
//! - One connection pool serves every peer (the seed client's: same token, same trusted
//!   certificates).
//! - Reads of one key take turns among its live replicas ([`ReadRouting::Spread`], the
//!   default): a hot key's reads are coordinated by all N of its replicas instead of always
//!   the first, so no one peer serves all of them. Any replica coordinates a read the same way
//!   (it asks every live replica and answers after R), and a session read carries its context
//!   wherever it goes, so which replica coordinates changes no answer. Writes still go to the
//!   first live replica.

// A client is outside the deterministic core: it reads the clock to age its view.
#![allow(clippy::disallowed_methods)]

use crate::api::batch::{BatchOp, BatchResult};
use crate::client::http_client::{Client, ClientError, ReadResult, WriteOptions};
use crate::client::stampede::{self, LoadError, LoadOptions};
use crate::core::ring::{Ring, RingParams};
use crate::core::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the ring is fetched again without a failure prompting it.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The ring as one peer described it, with a client per live peer.
struct Topology {
    ring: Ring,
    /// Live peers (up, not leaving) by name, each with a client at its HTTP address.
    live: BTreeMap<NodeId, Client>,
    fetched_at: Instant,
}

/// Keys whose session context a client remembers; past this, the oldest are forgotten (a
/// forgotten key's next read is a plain one).
pub const SESSION_KEYS: usize = 100_000;

/// The causal context this client last saw per key, for session reads.
#[derive(Default)]
struct Session {
    contexts: std::collections::HashMap<Vec<u8>, String>,
    order: std::collections::VecDeque<Vec<u8>>,
}

impl Session {
    fn remember(&mut self, key: &[u8], context: &str) {
        if self
            .contexts
            .insert(key.to_vec(), context.to_string())
            .is_none()
        {
            self.order.push_back(key.to_vec());
            if self.order.len() > SESSION_KEYS {
                if let Some(oldest) = self.order.pop_front() {
                    self.contexts.remove(&oldest);
                }
            }
        }
    }
}

/// Which live replica of a key coordinates a read of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadRouting {
    /// Each read goes to the next of the key's live replicas in turn.
    #[default]
    Spread,
    /// Every read goes to the first live replica in ring order (as writes do).
    First,
}

/// A client routing each key to a live replica (see the module comment). By default it is a
/// session: it remembers the context of every key it read or wrote and sends it with the next
/// read of that key, so it always reads its own writes and never reads older than it read
/// before, at any R ([`ClusterClient::without_session`] turns this off).
pub struct ClusterClient {
    seed: Client,
    topology: Mutex<Option<Topology>>,
    session: Option<Mutex<Session>>,
    near: Option<Mutex<NearCache>>,
    reads: ReadRouting,
    /// Reads routed so far: the turn of the next one.
    read_turn: AtomicU64,
}

/// Reads at `r=one` kept in the client for a short time (see [`ClusterClient::with_near_cache`]).
struct NearCache {
    ttl: Duration,
    capacity: usize,
    entries: std::collections::HashMap<Vec<u8>, (Instant, ReadResult)>,
    hits: u64,
}

impl NearCache {
    fn get(&mut self, key: &[u8]) -> Option<ReadResult> {
        let fresh = match self.entries.get(key) {
            Some((at, read)) if at.elapsed() < self.ttl => Some(read.clone()),
            _ => None,
        };
        if fresh.is_some() {
            self.hits += 1;
        }
        fresh
    }

    fn put(&mut self, key: &[u8], read: ReadResult) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(key) {
            // Make room: drop what is stale, or else everything (entries live a moment only).
            let ttl = self.ttl;
            self.entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(key.to_vec(), (Instant::now(), read));
    }
}

impl ClusterClient {
    /// Fetches the ring through `seed` (any peer) and returns a client ready to route.
    pub async fn connect(seed: Client) -> Result<ClusterClient, ClientError> {
        let client = ClusterClient {
            seed,
            topology: Mutex::new(None),
            session: Some(Mutex::new(Session::default())),
            near: None,
            reads: ReadRouting::default(),
            read_turn: AtomicU64::new(0),
        };
        client.refresh().await?;
        Ok(client)
    }

    /// Chooses which live replica coordinates each read (default: [`ReadRouting::Spread`]).
    pub fn with_reads_from(mut self, reads: ReadRouting) -> ClusterClient {
        self.reads = reads;
        self
    }

    /// Stops keeping session contexts: every read is a plain quorum read.
    pub fn without_session(mut self) -> ClusterClient {
        self.session = None;
        self
    }

    /// Keeps reads made at `r=one` for `ttl` (at most `capacity` keys), answering repeated
    /// reads of a hot key without asking the cluster. Opt-in, because such a read may be up to
    /// `ttl` stale: a write by another client is not seen until the entry expires (this
    /// client's own writes drop the entry at once). Reads at any other `r` are never cached.
    pub fn with_near_cache(mut self, ttl: Duration, capacity: usize) -> ClusterClient {
        self.near = Some(Mutex::new(NearCache {
            ttl,
            capacity: capacity.max(1),
            entries: std::collections::HashMap::new(),
            hits: 0,
        }));
        self
    }

    /// Reads the near cache answered so far.
    pub fn near_cache_hits(&self) -> u64 {
        self.near
            .as_ref()
            .map_or(0, |n| n.lock().expect("near cache lock").hits)
    }

    fn forget_near(&self, key: &[u8]) {
        if let Some(near) = &self.near {
            near.lock().expect("near cache lock").entries.remove(key);
        }
    }

    fn session_context(&self, key: &[u8]) -> Option<String> {
        let session = self.session.as_ref()?.lock().expect("session lock");
        session.contexts.get(key).cloned()
    }

    fn remember(&self, key: &[u8], context: Option<&str>) {
        if let (Some(session), Some(context)) = (&self.session, context) {
            session.lock().expect("session lock").remember(key, context);
        }
    }

    /// Fetches the ring again: from the seed, or from any live peer when the seed is down.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let mut sources = vec![self.seed.clone()];
        sources.extend(self.live_clients());
        let mut last_error = None;
        for source in sources {
            match source.cluster().await {
                Ok(status) => {
                    let topology = self.topology_from(&status)?;
                    *self.topology.lock().expect("topology lock") = Some(topology);
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::Protocol("no peer to ask".into())))
    }

    fn live_clients(&self) -> Vec<Client> {
        self.topology
            .lock()
            .expect("topology lock")
            .as_ref()
            .map(|t| t.live.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Builds the ring from a `GET /v1/cluster` body.
    fn topology_from(&self, status: &serde_json::Value) -> Result<Topology, ClientError> {
        let bad = |what: &str| ClientError::Protocol(format!("/v1/cluster: {what}"));
        let number = |name: &str| {
            status[name]
                .as_u64()
                .ok_or_else(|| bad(&format!("no {name}")))
        };
        let params = RingParams {
            partitions: number("partitions")? as u32,
            vnodes: number("vnodes")? as u32,
            replicas: number("replicas")? as usize,
        };
        let members = status["members"]["members"]
            .as_object()
            .ok_or_else(|| bad("no members"))?;
        // The scheme the seed was reached with (http or https) is every peer's.
        let scheme = self.seed.base().split("://").next().unwrap_or("http");
        let mut on_ring = BTreeSet::new();
        let mut live = BTreeMap::new();
        for (name, info) in members {
            let id = NodeId::from(name.as_str());
            if info["leaving"].as_bool() == Some(true) {
                continue; // off the ring, as every peer's core sees it
            }
            on_ring.insert(id.clone());
            let addr = info["http_addr"].as_str();
            if let (Some(true), Some(addr)) = (info["up"].as_bool(), addr) {
                live.insert(id, self.seed.for_peer(&format!("{scheme}://{addr}")));
            }
        }
        let ring = Ring::new(params, on_ring).map_err(|e| bad(&e.to_string()))?;
        Ok(Topology {
            ring,
            live,
            fetched_at: Instant::now(),
        })
    }

    async fn refresh_if_old(&self) {
        let old = self
            .topology
            .lock()
            .expect("topology lock")
            .as_ref()
            .is_none_or(|t| t.fetched_at.elapsed() >= REFRESH_EVERY);
        if old {
            // A failed refresh keeps the old view: routing stays correct, only less direct.
            let _ = self.refresh().await;
        }
    }

    /// Where to send a request about `key`, best first: its live replicas in ring order, then
    /// the other live peers (any peer can coordinate), then the seed.
    pub fn candidates(&self, key: &[u8]) -> Vec<Client> {
        self.candidates_and_replicas(key).0
    }

    /// Where to send a read of `key`, best first: like [`ClusterClient::candidates`], with its
    /// live replicas rotated by one more place on each read when reads are spread.
    pub fn read_candidates(&self, key: &[u8]) -> Vec<Client> {
        let (mut out, replicas) = self.candidates_and_replicas(key);
        if self.reads == ReadRouting::Spread && replicas > 1 {
            let turn = self.read_turn.fetch_add(1, Ordering::Relaxed);
            out[..replicas].rotate_left((turn % replicas as u64) as usize);
        }
        out
    }

    /// The candidates, and how many of the first are live replicas of `key`.
    fn candidates_and_replicas(&self, key: &[u8]) -> (Vec<Client>, usize) {
        let guard = self.topology.lock().expect("topology lock");
        let mut out = Vec::new();
        let mut live_replicas = 0;
        if let Some(t) = guard.as_ref() {
            let replicas = t.ring.replicas_of(key);
            out.extend(replicas.iter().filter_map(|r| t.live.get(r).cloned()));
            live_replicas = out.len();
            out.extend(
                t.live
                    .iter()
                    .filter(|(id, _)| !replicas.contains(id))
                    .map(|(_, c)| c.clone()),
            );
        }
        if out.is_empty() {
            out.push(self.seed.clone());
        }
        (out, live_replicas)
    }

    /// The peer a request about `key` goes to first.
    pub fn route(&self, key: &[u8]) -> Client {
        self.candidates(key)
            .into_iter()
            .next()
            .unwrap_or_else(|| self.seed.clone())
    }

    /// Runs `call` on the key's best peer, moving to the next only when the request is known
    /// not to have happened there (`may_retry`).
    async fn with_routing<T, F, Fut>(
        &self,
        key: &[u8],
        read: bool,
        may_retry: fn(&ClientError) -> bool,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        self.refresh_if_old().await;
        let candidates = if read {
            self.read_candidates(key)
        } else {
            self.candidates(key)
        };
        let mut last = None;
        for (n, peer) in candidates.into_iter().enumerate() {
            match call(peer).await {
                Err(e) if may_retry(&e) && n < 2 => {
                    // The view may be stale: refresh before trying the next peer.
                    let _ = self.refresh().await;
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Protocol("no peer to ask".into())))
    }

    pub async fn get(&self, key: &[u8], r: Option<&str>) -> Result<ReadResult, ClientError> {
        let near = self.near.as_ref().filter(|_| r == Some("one"));
        if let Some(near) = near {
            if let Some(read) = near.lock().expect("near cache lock").get(key) {
                return Ok(read);
            }
        }
        let context = self.session_context(key);
        let result = self
            .with_routing(key, true, safe_to_retry_read, |peer| {
                let context = context.clone();
                async move { peer.session_get(key, r, context.as_deref()).await }
            })
            .await?;
        self.remember(key, result.context());
        if let Some(near) = near {
            near.lock()
                .expect("near cache lock")
                .put(key, result.clone());
        }
        Ok(result)
    }

    /// A cache-aside read with stampede protection (see `Client::get_or_load`): the key is
    /// read and written at its first live replica, the lease at the lease key's. Not a
    /// session read, and the near cache is not used.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &[u8],
        ttl: Duration,
        loader: F,
        options: &LoadOptions,
    ) -> Result<Vec<u8>, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, E>>,
    {
        self.forget_near(key);
        let value_peer = self.route(key);
        let lease_peer = self.route(&stampede::lease_key(key));
        stampede::get_or_load(&value_peer, &lease_peer, key, ttl, loader, options).await
    }

    pub async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        options: &WriteOptions,
    ) -> Result<String, ClientError> {
        self.forget_near(key);
        let context = self
            .with_routing(key, false, safe_to_retry_write, |peer| {
                let value = value.clone();
                async move { peer.put(key, value, options).await }
            })
            .await?;
        self.remember(key, Some(&context));
        Ok(context)
    }

    pub async fn delete(&self, key: &[u8], options: &WriteOptions) -> Result<String, ClientError> {
        self.forget_near(key);
        let context = self
            .with_routing(key, false, safe_to_retry_write, |peer| async move {
                peer.delete(key, options).await
            })
            .await?;
        self.remember(key, Some(&context));
        Ok(context)
    }

    /// Adds `by` to the key's counter at one of its replicas. Asked again elsewhere only when
    /// nothing reached the peer: an increment whose outcome is unknown is never repeated.
    pub async fn incr(
        &self,
        key: &[u8],
        by: i64,
        options: &WriteOptions,
    ) -> Result<i64, ClientError> {
        self.forget_near(key);
        let (value, context) = self
            .with_routing(key, false, never_reached, |peer| async move {
                peer.incr(key, by, options).await
            })
            .await?;
        self.remember(key, Some(&context));
        Ok(value)
    }

    /// Reads many keys: one batch per peer (each key to a live replica), sent side by side;
    /// results in the order of `keys`.
    pub async fn get_many(
        &self,
        keys: &[Vec<u8>],
        r: Option<&str>,
    ) -> Result<Vec<BatchResult>, ClientError> {
        let ops = keys
            .iter()
            .map(|k| BatchOp {
                op: "get".into(),
                key_base64: Some(base64_of(k)),
                r: r.map(str::to_string),
                ..BatchOp::default()
            })
            .collect();
        self.batch_by_peer(keys, ops).await
    }

    /// Writes many keys: one batch per peer, side by side; results in the order given.
    pub async fn put_many(
        &self,
        items: Vec<(Vec<u8>, Vec<u8>)>,
        options: &WriteOptions,
    ) -> Result<Vec<BatchResult>, ClientError> {
        let keys: Vec<Vec<u8>> = items.iter().map(|(k, _)| k.clone()).collect();
        let ops = items
            .into_iter()
            .map(|(k, v)| BatchOp {
                op: "put".into(),
                key_base64: Some(base64_of(&k)),
                value_base64: Some(base64_of(&v)),
                w: options.w.clone(),
                ttl: options.ttl_secs,
                context: options.context.clone(),
                overwrite: options.overwrite,
                ..BatchOp::default()
            })
            .collect();
        self.batch_by_peer(&keys, ops).await
    }

    async fn batch_by_peer(
        &self,
        keys: &[Vec<u8>],
        ops: Vec<BatchOp>,
    ) -> Result<Vec<BatchResult>, ClientError> {
        self.refresh_if_old().await;
        // Group the operations by the peer each key goes to, remembering their places.
        let mut groups: BTreeMap<String, (Client, Vec<usize>, Vec<BatchOp>)> = BTreeMap::new();
        for (i, (key, op)) in keys.iter().zip(ops).enumerate() {
            let peer = self.route(key);
            let group = groups
                .entry(peer.base().to_string())
                .or_insert_with(|| (peer, Vec::new(), Vec::new()));
            group.1.push(i);
            group.2.push(op);
        }
        let sent = groups
            .into_values()
            .map(|(peer, places, ops)| async move { (places, peer.batch(ops).await) });
        let mut results: Vec<Option<BatchResult>> = (0..keys.len()).map(|_| None).collect();
        for (places, answer) in futures_util::future::join_all(sent).await {
            for (place, result) in places.into_iter().zip(answer?) {
                results[place] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| ClientError::Protocol("a batch answered too few".into())))
            .collect()
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A read can be asked again anywhere unless the request itself was bad.
fn safe_to_retry_read(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) => true,
        ClientError::Status { status, .. } => *status == 503,
        ClientError::Protocol(_) => false,
    }
}

/// The request never reached the peer (an increment is retried only then: a peer that
/// answered "not enough replicas" after storing it locally still counted it).
fn never_reached(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport(t) if t.is_connect())
}

/// A write is asked again only when it cannot have happened: nothing reached the peer, or the
/// peer refused at once for lack of replicas (its body says "not enough replicas").
fn safe_to_retry_write(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(t) => t.is_connect(),
        ClientError::Status { status: 503, body } => body.contains("not enough replicas"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose view is three live peers, each a replica of every key (N = 3), without
    /// asking any peer.
    fn client_of_three(reads: ReadRouting) -> ClusterClient {
        let client = ClusterClient {
            seed: Client::new("http://127.0.0.1:1"),
            topology: Mutex::new(None),
            session: None,
            near: None,
            reads,
            read_turn: AtomicU64::new(0),
        };
        let status = serde_json::json!({
            "partitions": 16, "vnodes": 8, "replicas": 3,
            "members": {"members": {
                "A": {"up": true, "http_addr": "127.0.0.1:7001"},
                "B": {"up": true, "http_addr": "127.0.0.1:7002"},
                "C": {"up": true, "http_addr": "127.0.0.1:7003"},
            }}
        });
        let topology = client.topology_from(&status).unwrap();
        *client.topology.lock().unwrap() = Some(topology);
        client
    }

    fn first(candidates: Vec<Client>) -> String {
        candidates[0].base().to_string()
    }

    #[test]
    fn reads_of_one_key_take_turns_among_its_live_replicas() {
        let client = client_of_three(ReadRouting::Spread);
        let reads: Vec<String> = (0..6)
            .map(|_| first(client.read_candidates(b"hot")))
            .collect();
        // Every replica coordinates, each in turn, and the cycle repeats.
        assert_eq!(reads.iter().collect::<BTreeSet<_>>().len(), 3, "{reads:?}");
        assert_eq!(reads[..3], reads[3..]);
        // Each read still lists every peer, so a failed one can move on.
        assert_eq!(client.read_candidates(b"hot").len(), 3);
        // Writes keep going to the first replica.
        let writes: BTreeSet<String> = (0..6).map(|_| first(client.candidates(b"hot"))).collect();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes.into_iter().next(), Some(reads[0].clone()));
    }

    #[test]
    fn reads_from_first_always_ask_the_first_replica() {
        let client = client_of_three(ReadRouting::First);
        let reads: BTreeSet<String> = (0..6)
            .map(|_| first(client.read_candidates(b"hot")))
            .collect();
        assert_eq!(reads.len(), 1);
        assert_eq!(
            reads.into_iter().next(),
            Some(first(client.candidates(b"hot")))
        );
    }
}
