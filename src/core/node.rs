//! The single entry point of a peer's protocol logic.
//!
//! A [`Node`] is driven from outside, in the style of raft-rs: the driver calls
//! [`Node::handle`] with the current time and one [`Input`] (a client request, a peer message,
//! a membership view, an undeliverable send) and [`Node::tick`] with the current time; the node
//! appends what must happen to an [`Outputs`] (messages to send, replies to clients). It never
//! reads a clock, draws randomness, spawns a task or touches a socket, so the tokio shell and
//! the deterministic simulator drive exactly the same code.
//!
//! Request paths:
//! - **Write** (put or delete): the receiving peer coordinates if it is one of the key's N
//!   replicas, otherwise it forwards to the first live replica (`Coordinate`). The coordinator
//!   applies the write to its own store (new dot, context applied), sends the resulting state to
//!   the other replicas (`Store`), and replies once W distinct replicas hold it.
//! - **Read**: the receiving peer asks the key's replicas (`Fetch`), merges the states it gets,
//!   and replies after R of them with the visible siblings and one merged context. It keeps
//!   listening until every asked replica answered (or the deadline), then **read-repairs**:
//!   each replica whose state differs from the merge gets the merged state (`Store`).
//!
//! Every request has a deadline; `tick` fails those past it with `Timeout { needed, got }`.
//! A request that cannot reach its quorum among live replicas fails at once with
//! `Unavailable { needed, got }` and writes nothing.

use crate::core::config::CoreConfig;
use crate::core::membership::MembershipView;
use crate::core::message::PeerMessage;
use crate::core::planted::PlantedBug;
use crate::core::quorum::{QuorumOutcome, QuorumTracker};
use crate::core::request::{
    ClientReply, ClientRequest, ReadValue, RequestError, WriteKind, WriteRequest,
};
use crate::core::ring::Ring;
use crate::core::siblings::{Payload, Siblings};
use crate::core::store::{Store, StoreLimits};
use crate::core::types::{ClientRequestId, Millis, NodeId, Quorum};
use crate::core::version_vector::{Actor, Dot, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One thing that happened to the node.
#[derive(Clone, Debug)]
pub enum Input {
    Client {
        id: ClientRequestId,
        request: ClientRequest,
    },
    Peer {
        from: NodeId,
        message: PeerMessage,
    },
    Membership(MembershipView),
    /// The shell could not hand `req`'s message to `to` (no connection, stream refused).
    Undeliverable {
        to: NodeId,
        req: u64,
    },
}

/// A message for the shell to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: NodeId,
    pub message: PeerMessage,
}

/// What the node wants done, appended to by `handle` and `tick`.
#[derive(Debug, Default)]
pub struct Outputs {
    pub messages: Vec<Outgoing>,
    pub replies: Vec<(ClientRequestId, ClientReply)>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.replies.is_empty()
    }
}

/// Who is waiting for a request's outcome.
#[derive(Clone, Debug)]
enum Origin {
    Client(ClientRequestId),
    /// A peer that forwarded a write for us to coordinate.
    Peer {
        node: NodeId,
        req: u64,
    },
}

/// A write as the coordinator applies it: the payload and the context it replaces.
struct CoordinatedWrite {
    key: Vec<u8>,
    payload: Payload,
    context: VersionVector,
    needed: usize,
}

/// Who is waiting for a read's outcome.
#[derive(Debug)]
enum ReadFor {
    Client(ClientRequestId),
    /// The node itself, confirming tombstones before collecting them: nobody waits for the
    /// answer, and it is not counted as a hit or a miss.
    Collection,
    /// An expire (TTL change), which rewrites the value the read finds: reading from as many
    /// replicas as the write needs first means a stale coordinator cannot bring back a value
    /// a newer write replaced (it would rewrite it as a new version).
    Expire(Box<PendingExpire>),
}

/// An expire waiting for its read.
#[derive(Debug)]
struct PendingExpire {
    origin: Origin,
    write: WriteRequest,
    needed: usize,
    deadline: Millis,
}

#[derive(Debug)]
enum InFlight {
    Write {
        origin: Origin,
        tracker: QuorumTracker,
        context: VersionVector,
        deadline: Millis,
    },
    Read {
        origin: ReadFor,
        key: Vec<u8>,
        tracker: QuorumTracker,
        merged: Siblings,
        /// What each replica answered, kept to find the stale ones once all have answered.
        answers: BTreeMap<NodeId, Option<Siblings>>,
        /// Replicas asked (live ones, including this node if it is a replica).
        asked: usize,
        /// Whether the client already has its answer (the read now only waits to repair).
        replied: bool,
        deadline: Millis,
    },
    Forward {
        origin: ClientRequestId,
        needed: usize,
        deadline: Millis,
    },
}

impl InFlight {
    fn deadline(&self) -> Millis {
        match self {
            InFlight::Write { deadline, .. }
            | InFlight::Read { deadline, .. }
            | InFlight::Forward { deadline, .. } => *deadline,
        }
    }
}

pub struct Node {
    id: NodeId,
    /// This incarnation's name in version vectors.
    actor: Actor,
    config: CoreConfig,
    view: MembershipView,
    ring: Ring,
    store: Store,
    next_req: u64,
    /// Request numbers advance by the shard count, keeping their residue (see `new_shard`).
    req_stride: u64,
    /// Requests this node coordinates or forwarded, by request number.
    in_flight: BTreeMap<u64, InFlight>,
    /// Replicas sent a merged state by read repair, since start.
    read_repairs: u64,
    /// Tombstone-only states every replica was seen holding, to collect once their grace
    /// period ends: (due time, sequence) → key, state's clock, replicas.
    pending_forgets: BTreeMap<(Millis, u64), PendingForget>,
    /// Reads this node coordinated that found a value / found none.
    hits: u64,
    misses: u64,
    /// Forwarded writes coordinated recently, by (forwarder, its request number), with the
    /// time each arrived. A duplicated `Coordinate` must not apply the write twice: a second
    /// dot for the same value would survive a later overwrite whose context covers the first.
    recent_forwards: BTreeMap<(NodeId, u64), Millis>,
    /// When enabled, the writes this node coordinated since the last `take_writes_run`, with
    /// the dot each minted (for the simulator, which must know what every write did).
    write_log: Option<Vec<WriteRan>>,
    #[cfg(feature = "planted-bugs")]
    planted: Option<crate::core::planted::PlantedBug>,
}

/// A write this node coordinated and stored: who asked for it, and the dot it minted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRan {
    /// The client request, when a client asked this node directly.
    pub client: Option<ClientRequestId>,
    /// The forwarding peer and its request number, when a peer asked.
    pub forwarded_by: Option<(NodeId, u64)>,
    pub key: Vec<u8>,
    pub dot: Dot,
}

/// A tombstone-only state to collect: the key, the state's clock, the replicas to tell.
type PendingForget = (Vec<u8>, VersionVector, Vec<NodeId>);

/// What a peer reports at `GET /v1/stats`: its reads, its store, its repairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Reads this peer coordinated that found a value.
    pub hits: u64,
    /// Reads this peer coordinated that found none (absent, deleted or expired).
    pub misses: u64,
    /// Keys in this peer's store (tombstoned ones included).
    pub keys: u64,
    /// Values whose bytes active expiry reclaimed.
    pub expired: u64,
    /// Keys evicted to stay under the memory limit.
    pub evicted: u64,
    pub memory_used_bytes: u64,
    /// `None` when the store has no limit.
    pub memory_limit_bytes: Option<u64>,
    pub read_repairs: u64,
    /// Repairs not applied because the store was near its limit.
    pub repairs_declined: u64,
    /// Tombstone-only keys collected after every replica held them.
    pub tombstones_collected: u64,
}

impl NodeStats {
    /// Hits over reads, or `None` before the first read.
    pub fn hit_ratio(&self) -> Option<f64> {
        let reads = self.hits + self.misses;
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }

    /// Cluster-wide figures: the sum over peers (limits add up too).
    pub fn add(&mut self, other: &NodeStats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.keys += other.keys;
        self.expired += other.expired;
        self.evicted += other.evicted;
        self.memory_used_bytes += other.memory_used_bytes;
        self.memory_limit_bytes = match (self.memory_limit_bytes, other.memory_limit_bytes) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.read_repairs += other.read_repairs;
        self.repairs_declined += other.repairs_declined;
        self.tombstones_collected += other.tombstones_collected;
    }
}

/// Scrambles an incarnation into a starting request number (SplitMix64's finalizer), so that a
/// reply meant for an earlier incarnation of this peer cannot match one of this incarnation's
/// requests: the ranges two incarnations use are 2^62 numbers apart on average.
fn first_request_number(incarnation: u64) -> u64 {
    let mut z = incarnation.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 1
}

impl Node {
    /// `incarnation` must differ on every start of the same peer (the shell uses its boot time
    /// in milliseconds), so a restarted peer never reuses a dot.
    pub fn new(id: NodeId, incarnation: u64, config: CoreConfig) -> Node {
        Self::new_shard(id, incarnation, config, 0, 1)
    }

    /// One of `shards` engine shards of a peer: it holds the keys whose partitions
    /// `ring::shard_of_key` deals to `shard`, and numbers its requests `shard` modulo `shards`
    /// so replies find their way back to it. Shards share the peer's actor: they never hold
    /// the same key, and dots are per key.
    pub fn new_shard(
        id: NodeId,
        incarnation: u64,
        config: CoreConfig,
        shard: u32,
        shards: u32,
    ) -> Node {
        let shards = shards.max(1) as u64;
        let mut node = Self::unsharded(id, incarnation, config);
        node.next_req = node.next_req / shards * shards + shard as u64;
        node.req_stride = shards;
        node
    }

    fn unsharded(id: NodeId, incarnation: u64, config: CoreConfig) -> Node {
        let view = MembershipView::new().with(id.clone(), crate::core::membership::Liveness::Up);
        let ring = Ring::new(config.ring_params(), view.members())
            .expect("CoreConfig::validate accepts only valid ring parameters");
        Node {
            actor: Actor(format!("{id}.{incarnation}").into()),
            id,
            store: Store::new(
                config.max_clock_entries,
                StoreLimits {
                    max_memory_bytes: config.max_memory_bytes,
                    policy: config.eviction,
                },
                first_request_number(incarnation ^ 0x5EED),
            ),
            config,
            view,
            ring,
            next_req: first_request_number(incarnation),
            req_stride: 1,
            in_flight: BTreeMap::new(),
            read_repairs: 0,
            pending_forgets: BTreeMap::new(),
            hits: 0,
            misses: 0,
            recent_forwards: BTreeMap::new(),
            write_log: None,
            #[cfg(feature = "planted-bugs")]
            planted: None,
        }
    }

    /// Makes this node misbehave on purpose (see [`crate::core::planted`]).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: crate::core::planted::PlantedBug) {
        self.planted = Some(bug);
    }

    #[allow(unused_variables)]
    fn has_bug(&self, bug: crate::core::planted::PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.planted == Some(bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            false
        }
    }

    pub fn stats(&self) -> NodeStats {
        let store = self.store.stats();
        NodeStats {
            hits: self.hits,
            misses: self.misses,
            keys: self.store.len() as u64,
            expired: store.expired,
            evicted: store.evicted,
            memory_used_bytes: self.store.used_bytes(),
            memory_limit_bytes: self.store.limits().max_memory_bytes,
            read_repairs: self.read_repairs,
            repairs_declined: store.repairs_declined,
            tombstones_collected: store.tombstones_collected,
        }
    }

    /// Makes the store keep what it evicts until [`Node::take_evicted`] (simulator only).
    pub fn log_evictions(&mut self) {
        self.store.log_evictions();
    }

    /// Keys (and states) evicted since the last call, when logging is on.
    pub fn take_evicted(&mut self) -> Vec<(Vec<u8>, Siblings)> {
        self.store.take_evicted()
    }

    /// Makes the node keep every write it coordinates until [`Node::take_writes_run`]
    /// (simulator only).
    pub fn log_writes(&mut self) {
        self.write_log.get_or_insert_with(Vec::new);
    }

    /// Writes coordinated since the last call, when logging is on.
    pub fn take_writes_run(&mut self) -> Vec<WriteRan> {
        self.write_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// How many replica states read repair has corrected since start.
    pub fn read_repairs(&self) -> u64 {
        self.read_repairs
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn view(&self) -> &MembershipView {
        &self.view
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Number of requests waiting on replicas.
    pub fn pending_requests(&self) -> usize {
        self.in_flight.len()
    }

    /// The key states this node holds outside its store: what its in-flight reads gathered
    /// and may still repair other replicas with (the simulator counts them as copies).
    pub fn states_in_flight(&self) -> impl Iterator<Item = (&[u8], &Siblings)> {
        self.in_flight.values().filter_map(|f| match f {
            InFlight::Read { key, merged, .. } => Some((key.as_slice(), merged)),
            _ => None,
        })
    }

    pub fn handle(&mut self, now: Millis, input: Input, out: &mut Outputs) {
        match input {
            Input::Client { id, request } => match request {
                ClientRequest::Get { key, r } => {
                    self.start_read(now, ReadFor::Client(id), key, r, out)
                }
                ClientRequest::Write(write) => {
                    self.start_write(now, Origin::Client(id), write, out)
                }
            },
            Input::Peer { from, message } => self.on_peer_message(now, from, message, out),
            Input::Membership(view) => self.on_membership(view),
            Input::Undeliverable { to, req } => self.on_undeliverable(now, to, req, out),
        }
    }

    /// Fails every request whose deadline has passed, and runs one round of active expiry.
    pub fn tick(&mut self, now: Millis, out: &mut Outputs) {
        // A key whose values all expired is collected like a deleted one: its first live
        // replica reads it from every replica, which schedules the collection if they agree.
        for key in self.store.expire_step(now) {
            let first_live = self
                .ring
                .replicas_of(&key)
                .iter()
                .find(|r| self.view.is_up(r))
                .cloned();
            if first_live.as_ref() == Some(&self.id) {
                self.start_read(now, ReadFor::Collection, key, Quorum::All, out);
            }
        }
        self.send_due_forgets(now, out);
        // A forwarder gives up after one request timeout; remember its requests twice that.
        let horizon = now.saturating_sub(2 * self.config.request_timeout_ms);
        self.recent_forwards.retain(|_, at| *at >= horizon);
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline() <= now)
            .map(|(req, _)| *req)
            .collect();
        for req in expired {
            let Some(flight) = self.in_flight.remove(&req) else {
                continue;
            };
            let (origin, needed, got) = match flight {
                InFlight::Write {
                    origin, tracker, ..
                } => (origin, tracker.needed(), tracker.successes()),
                InFlight::Read {
                    replied: true,
                    key,
                    merged,
                    answers,
                    ..
                } => {
                    // The client has its answer; repair whoever answered in time.
                    self.read_repair(now, &key, &merged, answers, out);
                    continue;
                }
                InFlight::Read {
                    origin, tracker, ..
                } => match origin {
                    ReadFor::Client(client) => (
                        Origin::Client(client),
                        tracker.needed(),
                        tracker.successes(),
                    ),
                    ReadFor::Expire(pending) => {
                        (pending.origin, tracker.needed(), tracker.successes())
                    }
                    ReadFor::Collection => continue,
                },
                InFlight::Forward { origin, needed, .. } => (Origin::Client(origin), needed, 0),
            };
            let error = RequestError::Timeout { needed, got };
            self.reply(origin, ClientReply::Failed(error), out);
        }
    }

    fn on_membership(&mut self, mut view: MembershipView) {
        view.set(self.id.clone(), crate::core::membership::Liveness::Up);
        #[cfg(feature = "planted-bugs")]
        if self.planted == Some(PlantedBug::DropValueAfterCrash)
            && self
                .view
                .iter()
                .any(|(m, l)| l == crate::core::membership::Liveness::Up && !view.is_up(m))
        {
            self.planted_drop_oldest_values();
        }
        if view.members() != *self.ring.members() {
            let ring = Ring::new(self.config.ring_params(), view.members())
                .expect("ring parameters were validated at start");
            #[cfg(feature = "planted-bugs")]
            if self.planted == Some(PlantedBug::RingChangeDropsHeld) {
                let (old, new) = (&self.ring, &ring);
                let moved: std::collections::BTreeSet<u32> = (0..self.config.partitions)
                    .filter(|p| old.preference_list(*p) != new.preference_list(*p))
                    .collect();
                self.store
                    .drop_where(|key| moved.contains(&new.partition_of(key)));
            }
            self.drop_regained_partitions(&ring);
            self.ring = ring;
        }
        self.view = view;
    }

    /// Planted bug: every key forgets its oldest value but keeps the clock covering it.
    #[cfg(feature = "planted-bugs")]
    fn planted_drop_oldest_values(&mut self) {
        let keys: Vec<Vec<u8>> = self.store.iter().map(|(k, _)| k.to_vec()).collect();
        for key in keys {
            let Some(state) = self.store.peek(&key) else {
                continue;
            };
            let mut versions: Vec<_> = state
                .versions()
                .map(|(d, p)| (d.clone(), p.clone()))
                .collect();
            let Some(oldest) = versions
                .iter()
                .position(|(_, p)| matches!(p, Payload::Value { .. }))
            else {
                continue;
            };
            versions.remove(oldest);
            let forgot = Siblings::from_parts(state.context().clone(), versions);
            self.store.replace(&key, forgot, 0);
        }
    }

    /// A peer that becomes a replica of a partition it did not replicate a moment ago may hold
    /// copies from an earlier time it did: they missed every write since, including deletes
    /// whose tombstones may have been collected meanwhile, so they could bring a deleted value
    /// back. They are dropped (like an eviction); the current replicas hold the truth.
    fn drop_regained_partitions(&mut self, new_ring: &Ring) {
        let partitions = self.config.partitions;
        let regained: std::collections::BTreeSet<u32> = (0..partitions)
            .filter(|p| {
                new_ring.preference_list(*p).contains(&self.id)
                    && !self.ring.preference_list(*p).contains(&self.id)
            })
            .collect();
        if regained.is_empty() || self.store.is_empty() {
            return;
        }
        let ring = new_ring;
        self.store
            .drop_where(|key| regained.contains(&ring.partition_of(key)));
    }

    fn fresh_req(&mut self) -> u64 {
        self.next_req += self.req_stride;
        self.next_req
    }

    fn validate_key(&self, key: &[u8]) -> Result<(), RequestError> {
        if key.is_empty() {
            return Err(RequestError::EmptyKey);
        }
        if key.len() > self.config.max_key_bytes {
            return Err(RequestError::KeyTooLarge {
                size: key.len(),
                limit: self.config.max_key_bytes,
            });
        }
        Ok(())
    }

    fn resolve_quorum(&self, q: Quorum) -> Result<usize, RequestError> {
        let needed = q.resolve(self.config.replicas);
        if needed > self.config.replicas {
            return Err(RequestError::QuorumTooLarge {
                asked: needed,
                replicas: self.config.replicas,
            });
        }
        Ok(needed)
    }

    fn validate_write(&self, write: &WriteRequest) -> Result<usize, RequestError> {
        self.validate_key(&write.key)?;
        if let WriteKind::Put { value, .. } = &write.write {
            if value.len() > self.config.max_value_bytes {
                return Err(RequestError::ValueTooLarge {
                    size: value.len(),
                    limit: self.config.max_value_bytes,
                });
            }
        }
        self.resolve_quorum(write.w)
    }

    fn start_write(&mut self, now: Millis, origin: Origin, write: WriteRequest, out: &mut Outputs) {
        let needed = match self.validate_write(&write) {
            Ok(needed) => needed,
            Err(e) => return self.reply(origin, ClientReply::Failed(e), out),
        };
        let replicas = self.ring.replicas_of(&write.key);
        // A forwarded write is coordinated here even if our view disagrees that we are a
        // replica: forwarding again could bounce between peers with different views.
        if replicas.contains(&self.id) || matches!(origin, Origin::Peer { .. }) {
            return self.coordinate_write(now, origin, write, needed, out);
        }
        let Origin::Client(client) = origin else {
            unreachable!("peer origins coordinate above")
        };
        let Some(target) = replicas.iter().find(|r| self.view.is_up(r)).cloned() else {
            let error = RequestError::Unavailable { needed, got: 0 };
            return out.replies.push((client, ClientReply::Failed(error)));
        };
        let req = self.fresh_req();
        out.messages.push(Outgoing {
            to: target,
            message: PeerMessage::Coordinate { req, write },
        });
        self.in_flight.insert(
            req,
            InFlight::Forward {
                origin: client,
                needed,
                deadline: now + self.config.request_timeout_ms,
            },
        );
    }

    fn coordinate_write(
        &mut self,
        now: Millis,
        origin: Origin,
        write: WriteRequest,
        needed: usize,
        out: &mut Outputs,
    ) {
        let replicas: Vec<NodeId> = self.ring.replicas_of(&write.key).to_vec();
        let live = replicas.iter().filter(|r| self.view.is_up(r)).count();
        let self_counts = usize::from(!replicas.contains(&self.id));
        if live + self_counts < needed {
            let error = RequestError::Unavailable { needed, got: live };
            return self.reply(origin, ClientReply::Failed(error), out);
        }
        let deadline = match origin {
            Origin::Client(_) => now + self.config.request_timeout_ms,
            // Leave the forwarding peer time to relay our answer before its own deadline.
            Origin::Peer { .. } => now + self.config.request_timeout_ms * 3 / 4,
        };
        if let WriteKind::Expire { .. } = write.write {
            let key = write.key.clone();
            let read_for = ReadFor::Expire(Box::new(PendingExpire {
                origin,
                write,
                needed,
                deadline,
            }));
            return self.start_read(now, read_for, key, Quorum::Exactly(needed), out);
        }
        let context = match (&write.context, &write.write) {
            (Some(ctx), _) => ctx.clone(),
            // A delete without context removes everything this coordinator has seen.
            (None, WriteKind::Delete) => self
                .store
                .peek(&write.key)
                .map(|s| s.context().clone())
                .unwrap_or_default(),
            (None, WriteKind::Put { .. }) => VersionVector::new(),
            (None, WriteKind::Expire { .. }) => unreachable!("expires read first, above"),
        };
        let context = if self.has_bug(PlantedBug::LastWriteWins) {
            // The planted bug: the newest write replaces whatever the coordinator holds.
            let mut everything = context;
            if let Some(local) = self.store.peek(&write.key) {
                everything.merge(local.context());
            }
            everything
        } else {
            context
        };
        let payload = write
            .write
            .into_payload(now)
            .expect("puts and deletes carry a payload");
        let write = CoordinatedWrite {
            key: write.key,
            payload,
            context,
            needed,
        };
        self.store_and_replicate(now, origin, write, deadline, out);
    }

    /// The second half of an expire, once its read has an answer: rewrites the one live value
    /// found with the new expiry, under the read's context (so it replaces that value).
    fn expire_after_read(
        &mut self,
        now: Millis,
        read_for: ReadFor,
        found: Result<Siblings, RequestError>,
        out: &mut Outputs,
    ) {
        let ReadFor::Expire(pending) = read_for else {
            return;
        };
        let PendingExpire {
            origin,
            write,
            needed,
            deadline,
        } = *pending;
        let WriteKind::Expire { ttl_ms } = write.write else {
            unreachable!("only expires read first");
        };
        match found.and_then(|state| expire_rewrite(&state, ttl_ms, now)) {
            Ok((payload, context)) => {
                let write = CoordinatedWrite {
                    key: write.key,
                    payload,
                    context,
                    needed,
                };
                self.store_and_replicate(now, origin, write, deadline, out);
            }
            Err(error) => self.reply(origin, ClientReply::Failed(error), out),
        }
    }

    /// Applies a write here and sends the key's new state to the other replicas; the write is
    /// acknowledged once `needed` replicas (this one included) hold it.
    fn store_and_replicate(
        &mut self,
        now: Millis,
        origin: Origin,
        write: CoordinatedWrite,
        deadline: Millis,
        out: &mut Outputs,
    ) {
        let CoordinatedWrite {
            key,
            payload,
            context,
            needed,
        } = write;
        let replicas: Vec<NodeId> = self.ring.replicas_of(&key).to_vec();
        let self_counts = usize::from(!replicas.contains(&self.id));
        let state = match self.store.update(&key, &self.actor, &context, payload, now) {
            Ok((state, dot)) => {
                if let Some(log) = self.write_log.as_mut() {
                    let (client, forwarded_by) = match &origin {
                        Origin::Client(id) => (Some(*id), None),
                        Origin::Peer { node, req } => (None, Some((node.clone(), *req))),
                    };
                    log.push(WriteRan {
                        client,
                        forwarded_by,
                        key: key.clone(),
                        dot,
                    });
                }
                state
            }
            Err(oom) => {
                let error = RequestError::OutOfMemory {
                    needed: oom.needed,
                    used: oom.used,
                    limit: oom.limit,
                };
                return self.reply(origin, ClientReply::Failed(error), out);
            }
        };
        let mut tracker = QuorumTracker::new(needed, replicas.len() + self_counts);
        tracker.record_success(&self.id);
        let req = self.fresh_req();
        for replica in replicas.iter().filter(|r| **r != self.id) {
            if self.view.is_up(replica) {
                out.messages.push(Outgoing {
                    to: replica.clone(),
                    message: PeerMessage::Store {
                        req,
                        key: key.clone(),
                        state: state.clone(),
                    },
                });
            } else {
                tracker.record_failure(replica);
            }
        }
        self.in_flight.insert(
            req,
            InFlight::Write {
                origin,
                tracker,
                context: state.context().clone(),
                deadline,
            },
        );
        self.settle(now, req, out);
    }

    fn start_read(
        &mut self,
        now: Millis,
        read_for: ReadFor,
        key: Vec<u8>,
        r: Quorum,
        out: &mut Outputs,
    ) {
        let needed = match self.validate_key(&key).and_then(|_| self.resolve_quorum(r)) {
            Ok(needed) => needed,
            Err(e) => return self.fail_read(read_for, e, out),
        };
        let replicas: Vec<NodeId> = self.ring.replicas_of(&key).to_vec();
        let live = replicas.iter().filter(|r| self.view.is_up(r)).count();
        if live < needed {
            let error = RequestError::Unavailable { needed, got: live };
            return self.fail_read(read_for, error, out);
        }
        let deadline = match &read_for {
            ReadFor::Expire(pending) => pending.deadline,
            _ => now + self.config.request_timeout_ms,
        };
        let mut tracker = QuorumTracker::new(needed, replicas.len());
        let mut merged = Siblings::new();
        let mut answers = BTreeMap::new();
        let mut asked = 0;
        let req = self.fresh_req();
        for replica in &replicas {
            if *replica == self.id {
                let local = self.store.read(&key, now);
                if let Some(local) = &local {
                    merged.merge(local);
                }
                answers.insert(replica.clone(), local);
                asked += 1;
                tracker.record_success(replica);
            } else if self.view.is_up(replica) {
                asked += 1;
                out.messages.push(Outgoing {
                    to: replica.clone(),
                    message: PeerMessage::Fetch {
                        req,
                        key: key.clone(),
                    },
                });
            } else {
                tracker.record_failure(replica);
            }
        }
        self.in_flight.insert(
            req,
            InFlight::Read {
                origin: read_for,
                key,
                tracker,
                merged,
                answers,
                asked,
                replied: false,
                deadline,
            },
        );
        self.settle(now, req, out);
    }

    fn fail_read(&mut self, read_for: ReadFor, error: RequestError, out: &mut Outputs) {
        match read_for {
            ReadFor::Client(client) => out.replies.push((client, ClientReply::Failed(error))),
            ReadFor::Expire(pending) => self.reply(pending.origin, ClientReply::Failed(error), out),
            ReadFor::Collection => {}
        }
    }

    fn on_peer_message(
        &mut self,
        now: Millis,
        from: NodeId,
        message: PeerMessage,
        out: &mut Outputs,
    ) {
        match message {
            PeerMessage::Store { req, key, state } => {
                let message = if self.apply_replicated(&key, &state, now) {
                    PeerMessage::StoreAck { req }
                } else {
                    PeerMessage::StoreRefused { req }
                };
                out.messages.push(Outgoing { to: from, message });
            }
            PeerMessage::StoreAck { req } => {
                if let Some(InFlight::Write { tracker, .. }) = self.in_flight.get_mut(&req) {
                    tracker.record_success(&from);
                    self.settle(now, req, out);
                }
            }
            PeerMessage::StoreRefused { req } => {
                if let Some(InFlight::Write { tracker, .. }) = self.in_flight.get_mut(&req) {
                    tracker.record_failure(&from);
                    self.settle(now, req, out);
                }
            }
            PeerMessage::Repair { key, state, .. } => {
                self.store.merge_repair(&key, &state, now);
            }
            PeerMessage::Forget { key, clock, .. } => {
                if self.has_bug(PlantedBug::ForgetDropsLive) {
                    #[cfg(feature = "planted-bugs")]
                    self.store.forget_unchecked(&key);
                    return;
                }
                self.store.forget(&key, &clock);
            }
            PeerMessage::Fetch { req, key } => {
                let state = self.store.read(&key, now);
                out.messages.push(Outgoing {
                    to: from,
                    message: PeerMessage::FetchReply { req, state },
                });
            }
            PeerMessage::FetchReply { req, state } => {
                if let Some(InFlight::Read {
                    tracker,
                    merged,
                    answers,
                    ..
                }) = self.in_flight.get_mut(&req)
                {
                    if !answers.contains_key(&from) {
                        if let Some(state) = &state {
                            merged.merge(state);
                        }
                        answers.insert(from.clone(), state);
                        tracker.record_success(&from);
                    }
                    self.settle(now, req, out);
                }
            }
            PeerMessage::Coordinate { req, write } => {
                if self
                    .recent_forwards
                    .insert((from.clone(), req), now)
                    .is_some()
                {
                    return; // a duplicate: the first copy is being (or was) coordinated
                }
                let origin = Origin::Peer { node: from, req };
                self.start_write(now, origin, write, out);
            }
            PeerMessage::CoordinateReply { req, reply } => {
                if let Some(InFlight::Forward { origin, .. }) = self.in_flight.get(&req) {
                    out.replies.push((*origin, reply));
                    self.in_flight.remove(&req);
                }
            }
        }
    }

    fn on_undeliverable(&mut self, now: Millis, to: NodeId, req: u64, out: &mut Outputs) {
        match self.in_flight.get_mut(&req) {
            Some(InFlight::Write { tracker, .. }) | Some(InFlight::Read { tracker, .. }) => {
                tracker.record_failure(&to);
                self.settle(now, req, out);
            }
            Some(InFlight::Forward { origin, needed, .. }) => {
                let error = RequestError::Unavailable {
                    needed: *needed,
                    got: 0,
                };
                out.replies.push((*origin, ClientReply::Failed(error)));
                self.in_flight.remove(&req);
            }
            None => {}
        }
    }

    /// Replies and forgets request `req` if its quorum is met or can no longer be. A read stays
    /// until every asked replica answered, then read-repairs the stale ones.
    fn settle(&mut self, now: Millis, req: u64, out: &mut Outputs) {
        let ack_early = self.has_bug(PlantedBug::AckAfterWMinusOne);
        let mut expire = None;
        let (outcome, done) = match self.in_flight.get_mut(&req) {
            Some(InFlight::Write { tracker, .. }) => {
                let mut outcome = tracker.outcome();
                if ack_early && tracker.successes() + 1 >= tracker.needed() {
                    outcome = QuorumOutcome::Met;
                }
                (outcome, true)
            }
            Some(InFlight::Read {
                origin,
                tracker,
                merged,
                answers,
                asked,
                replied,
                ..
            }) => {
                let outcome = tracker.outcome();
                if !*replied && outcome != QuorumOutcome::Pending {
                    *replied = true;
                    let found = if outcome == QuorumOutcome::Met {
                        Ok(&*merged)
                    } else {
                        Err(RequestError::Unavailable {
                            needed: tracker.needed(),
                            got: tracker.successes(),
                        })
                    };
                    match origin {
                        ReadFor::Client(client) => {
                            let reply = match found {
                                Ok(merged) => read_reply(merged, now),
                                Err(error) => ClientReply::Failed(error),
                            };
                            match reply {
                                ClientReply::Found { .. } => self.hits += 1,
                                ClientReply::NotFound { .. } => self.misses += 1,
                                _ => {}
                            }
                            out.replies.push((*client, reply));
                        }
                        ReadFor::Collection => {}
                        ReadFor::Expire(_) => {
                            // The read stays in flight to repair; the expire goes on.
                            let read_for = std::mem::replace(origin, ReadFor::Collection);
                            expire = Some((read_for, found.cloned()));
                        }
                    }
                }
                (outcome, *replied && answers.len() >= *asked)
            }
            _ => return,
        };
        if let Some((read_for, found)) = expire {
            self.expire_after_read(now, read_for, found, out);
        }
        if outcome == QuorumOutcome::Pending || !done {
            return;
        }
        let Some(flight) = self.in_flight.remove(&req) else {
            return;
        };
        match flight {
            InFlight::Write {
                origin,
                tracker,
                context,
                ..
            } => {
                let reply = if outcome == QuorumOutcome::Met {
                    ClientReply::Written { context }
                } else {
                    ClientReply::Failed(RequestError::Unavailable {
                        needed: tracker.needed(),
                        got: tracker.successes(),
                    })
                };
                self.reply(origin, reply, out);
            }
            InFlight::Read {
                key,
                merged,
                answers,
                ..
            } => self.read_repair(now, &key, &merged, answers, out),
            InFlight::Forward { .. } => unreachable!("forwards are settled by their reply"),
        }
    }

    fn send_due_forgets(&mut self, now: Millis, out: &mut Outputs) {
        while let Some(entry) = self.pending_forgets.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, clock, replicas) = entry.remove();
            for replica in replicas {
                if replica == self.id {
                    self.store.forget(&key, &clock);
                } else {
                    let req = self.fresh_req();
                    out.messages.push(Outgoing {
                        to: replica,
                        message: PeerMessage::Forget {
                            req,
                            key: key.clone(),
                            clock: clock.clone(),
                        },
                    });
                }
            }
        }
    }

    /// Joins a state another replica sent into the local store; false if the store is full
    /// and may not evict.
    fn apply_replicated(&mut self, key: &[u8], state: &Siblings, now: Millis) -> bool {
        #[cfg(feature = "planted-bugs")]
        match self.planted {
            Some(PlantedBug::LastWriteWins) => {
                self.store.replace(key, state.clone(), now);
                return true;
            }
            Some(PlantedBug::DeleteCoversUnseen) => {
                let local = self.store.peek(key);
                let stored = self.store.merge(key, state, now).is_ok();
                let has_tombstone = state
                    .versions()
                    .any(|(_, p)| matches!(p, Payload::Tombstone));
                if let (true, Some(local), Some(merged)) =
                    (has_tombstone, local, self.store.peek(key))
                {
                    // Drop the values only this replica held, which the delete never saw.
                    let kept: Vec<_> = merged
                        .versions()
                        .filter(|(d, _)| {
                            state.context().covers(d) || !local.versions().any(|(ld, _)| ld == *d)
                        })
                        .map(|(d, p)| (d.clone(), p.clone()))
                        .collect();
                    let clock = merged.context().clone();
                    self.store
                        .replace(key, Siblings::from_parts(clock, kept), now);
                }
                return stored;
            }
            Some(PlantedBug::MergeDropsSibling) => {
                let stored = self.store.merge(key, state, now).is_ok();
                self.store.keep_only_newest_sibling(key, now);
                return stored;
            }
            _ => {}
        }
        self.store.merge(key, state, now).is_ok()
    }

    /// Sends the merged state of `key` to every replica that answered with something else.
    /// Replicas merge it (a join), so a repair can never undo a newer write that raced it.
    fn read_repair(
        &mut self,
        now: Millis,
        key: &[u8],
        merged: &Siblings,
        answers: BTreeMap<NodeId, Option<Siblings>>,
        out: &mut Outputs,
    ) {
        if merged.context().is_empty() {
            return;
        }
        // Every replica answered with the same tombstones: collect them after the grace
        // period (they cannot come back: no replica holds anything they cover, and the grace
        // outlasts any message in flight that might).
        let replicas: Vec<NodeId> = self.ring.replicas_of(key).to_vec();
        // (A replica holding nothing agrees: it has nothing the tombstones must cover.)
        let all_agree = merged.is_tombstones_only()
            && replicas.len() == self.config.replicas
            && replicas.iter().all(|r| {
                answers
                    .get(r)
                    .is_some_and(|a| a.is_none() || a.as_ref() == Some(merged))
            });
        if all_agree {
            let due = now + self.config.tombstone_grace_ms;
            let seq = self.fresh_req();
            self.pending_forgets.insert(
                (due, seq),
                (key.to_vec(), merged.context().clone(), replicas),
            );
            return;
        }
        for (replica, answer) in answers {
            if answer.as_ref() == Some(merged) {
                continue;
            }
            // Tombstones are not pushed to a replica that holds nothing: it has no value for
            // them to cover, and re-adding them would undo their collection.
            if answer.is_none() && merged.is_tombstones_only() {
                continue;
            }
            self.read_repairs += 1;
            if replica == self.id {
                self.store.merge_repair(key, merged, now);
            } else {
                let req = self.fresh_req();
                out.messages.push(Outgoing {
                    to: replica,
                    message: PeerMessage::Repair {
                        req,
                        key: key.to_vec(),
                        state: merged.clone(),
                    },
                });
            }
        }
    }

    fn reply(&self, origin: Origin, reply: ClientReply, out: &mut Outputs) {
        match origin {
            Origin::Client(id) => out.replies.push((id, reply)),
            Origin::Peer { node, req } => out.messages.push(Outgoing {
                to: node,
                message: PeerMessage::CoordinateReply { req, reply },
            }),
        }
    }
}

/// The rewrite an expire makes of the state its read found: the one live value, with the new
/// expiry, under a context covering the whole state (so it replaces that value).
fn expire_rewrite(
    state: &Siblings,
    ttl_ms: Option<Millis>,
    now: Millis,
) -> Result<(Payload, VersionVector), RequestError> {
    match state.visible_values(now).as_slice() {
        [] => Err(RequestError::NothingToExpire),
        [Payload::Value { data, .. }] => Ok((
            Payload::Value {
                data: data.clone(),
                expires_at_ms: ttl_ms.map(|t| now.saturating_add(t)),
            },
            state.context().clone(),
        )),
        many => Err(RequestError::Conflict {
            siblings: many.len(),
        }),
    }
}

/// What a reader sees of a merged state at `now`.
fn read_reply(merged: &Siblings, now: Millis) -> ClientReply {
    let values: Vec<ReadValue> = merged
        .visible_values(now)
        .into_iter()
        .filter_map(|p| match p {
            Payload::Value {
                data,
                expires_at_ms,
            } => Some(ReadValue {
                data: data.clone(),
                expires_at_ms: *expires_at_ms,
            }),
            Payload::Tombstone => None,
        })
        .collect();
    let context = merged.context().clone();
    if values.is_empty() {
        ClientReply::NotFound { context }
    } else {
        ClientReply::Found { values, context }
    }
}

#[cfg(test)]
mod tests;
