//! The single entry point of a peer's protocol logic.
//!
//! A [`Node`] is driven from outside, in the style of raft-rs: the driver calls
//! [`Node::handle`] with the current time and one [`Input`] (a client request, a peer message,
//! a membership view, an undeliverable send) and [`Node::tick`] with the current time; the node
//! appends what must happen to an [`Outputs`] (messages to send, replies to clients). It never
//! reads a clock, draws randomness, spawns a task or touches a socket, so the tokio shell and
//! the deterministic simulator drive exactly the same code.
//!
//! This file holds the [`Node`] itself and the dispatch of each input to the subsystem that
//! handles it; each subsystem owns its state and lives in `node/`:
//! - `requests`: the request table (numbering, waiters, deadlines, timeouts);
//! - `write`: client writes, their coordination and replication acks;
//! - `read`: reads and their quorum;
//! - `expire`: expire and persist, a read then a rewrite;
//! - `conditional`: compare-and-set writes, each decided by a Paxos round (proposer and
//!   acceptor sides; the acceptor's state is `core::paxos::Acceptor`);
//! - `forward`: forwarding a write to a replica to coordinate, and `Coordinate` dedupe;
//! - `replica`: the replica side of `Store`, `Fetch`, `Repair` and `Forget`;
//! - `read_repair`: repairing stale replicas once a read has every answer;
//! - `collection`: active expiry and tombstone collection (pending forgets);
//! - `placement`: membership and ring changes;
//! - `hints`: hinted handoff, the states kept for replicas believed down (sloppy quorum);
//! - `anti_entropy`: Merkle anti-entropy exchanges with the other replicas;
//! - `client_load`: how busy the node is serving clients, so background work yields to them;
//! - `handoff`: streaming partitions this peer no longer replicates to their new replicas;
//! - `stats`: [`NodeStats`] and the node's counters;
//! - `replica_timings`: how long each replica a client request asked took to answer.
//!
//! # Traces
//! A client request comes with a [`TraceId`] (made by the API layer) and every message sent on
//! its behalf carries it ([`Outgoing::trace`]), so its coordinator's and replicas' log lines
//! can be joined. A request's messages take the trace of its waiter (`Waiter::send`); any
//! other message sent while handling a traced input (a replica's answer, a read repair) takes
//! that input's. Traces label what a node sends; they never change what it does.

mod anti_entropy;
mod client_load;
mod collection;
mod conditional;
mod expire;
mod forward;
mod handoff;
mod hints;
mod placement;
mod read;
mod read_repair;
mod replica;
mod replica_timings;
mod requests;
mod stats;
#[cfg(test)]
pub(crate) mod tests;
mod write;

pub use anti_entropy::AntiEntropyStats;
pub use handoff::{HandedOff, HandoffProgress};
pub use replica_timings::{ReplicaAnswer, ReplicaTiming};
pub use stats::NodeStats;
pub use write::WriteRan;

use crate::core::config::CoreConfig;
use crate::core::membership::MembershipView;
use crate::core::message::PeerMessage;
use crate::core::request::{ClientReply, ClientRequest};
use crate::core::ring::Ring;
use crate::core::siblings::Siblings;
use crate::core::store::{Store, StoreLimits};
use crate::core::types::{ClientRequestId, Millis, NodeId, TraceId};
use crate::core::version_vector::Actor;
use anti_entropy::AntiEntropy;
use collection::Collection;
use forward::RecentForwards;
use handoff::Handoff;
use hints::Hints;
use read::ReadSpec;
use requests::{first_request_number, Flight, Requests, Waiter};
use stats::Counters;
use write::WriteLog;
// The scenario tests (`tests`, `use super::*`) name these too.
#[cfg(test)]
use {
    crate::core::request::{RequestError, WriteKind, WriteRequest},
    crate::core::siblings::Payload,
    crate::core::types::Quorum,
    crate::core::version_vector::VersionVector,
    std::collections::BTreeMap,
};

/// One thing that happened to the node.
#[derive(Clone, Debug)]
pub enum Input {
    Client {
        id: ClientRequestId,
        request: ClientRequest,
        trace: Option<TraceId>,
    },
    Peer {
        from: NodeId,
        message: PeerMessage,
        /// The trace the message arrived with (see the module's *Traces*).
        trace: Option<TraceId>,
    },
    Membership(MembershipView),
    /// The shell could not hand `req`'s message to `to` (no connection, stream refused).
    Undeliverable {
        to: NodeId,
        req: u64,
    },
}

impl Input {
    /// Whether this is client load: a client request, or a replica's part in one (see
    /// `node/client_load`).
    fn is_client_load(&self) -> bool {
        match self {
            Input::Client { .. } => true,
            // A replica's answer to a request-path message (not a reply to its own, nor a
            // read repair, which asks nothing).
            Input::Peer { message, .. } => {
                message.is_request_path()
                    && !message.is_reply()
                    && !matches!(message, PeerMessage::Repair { .. })
            }
            Input::Membership(_) | Input::Undeliverable { .. } => false,
        }
    }
}

/// A message for the shell to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: NodeId,
    pub message: PeerMessage,
    /// The client request it was sent for, if any (see the module's *Traces*).
    pub trace: Option<TraceId>,
}

/// A client request's outcome: its reply, and how each replica asked on its behalf fared
/// (empty when none was asked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub id: ClientRequestId,
    pub reply: ClientReply,
    pub replicas: Vec<ReplicaTiming>,
}

/// What the node wants done, appended to by `handle` and `tick`.
#[derive(Debug, Default)]
pub struct Outputs {
    pub messages: Vec<Outgoing>,
    pub replies: Vec<Completion>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.replies.is_empty()
    }

    /// Sends `message` to `to`, for no request of this node's (an answer, housekeeping).
    fn send(&mut self, to: NodeId, message: PeerMessage) {
        self.messages.push(Outgoing {
            to,
            message,
            trace: None,
        });
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
    /// Requests this node coordinates or forwarded, by request number.
    requests: Requests,
    /// Tombstone-only states to collect once their grace period ends.
    collection: Collection,
    /// Forwarded writes coordinated recently, so a duplicated `Coordinate` is applied once.
    recent_forwards: RecentForwards,
    /// Hinted states this node holds for other peers (not its own data).
    hints: Hints,
    counters: Counters,
    write_log: WriteLog,
    /// Merkle anti-entropy with the other replicas.
    anti_entropy: AntiEntropy,
    /// Client requests seen lately: background work yields while the node is busy.
    client_load: client_load::ClientLoad,
    /// Partitions this peer no longer replicates, streaming to their new replicas.
    handoff: Handoff,
    /// Whether this peer is leaving the cluster (it then holds no place on its own ring).
    leaving: bool,
    /// Replicas that answered reads while warming, which reads ask last for a while.
    warming_replicas: read::WarmingReplicas,
    /// Partitions this peer gained in a ring change, until when its answers for them do not
    /// count toward a read's R (the handoff deadline and a request timeout after the change).
    warming: std::collections::BTreeMap<crate::core::ring::PartitionId, Millis>,
    /// For a peer that just started empty: the peers it has finished an anti-entropy exchange
    /// with since; every partition warms until that is every other live ring member.
    startup_warming: Option<(std::collections::BTreeSet<NodeId>, Millis)>,
    /// The Paxos acceptor of the keys this node replicates (conditional writes).
    acceptor: crate::core::paxos::Acceptor,
    /// For a peer that started empty: the peers it has finished an anti-entropy exchange with,
    /// and until when it may still hold a proposal round's messages from before it started.
    /// Its Paxos promises count only beside every other replica's until both are done (see
    /// `paxos_recovering`): it forgot what it accepted, and its store may miss commits.
    paxos_recovery: Option<(std::collections::BTreeSet<NodeId>, Millis)>,
    /// The highest Paxos round this node has seen (its ballots start above it).
    paxos_rounds: u64,
    /// Conditional writes waiting out a backoff: (when it ends, request number).
    conditional_backoffs: std::collections::BTreeSet<(Millis, u64)>,
    #[cfg(feature = "planted-bugs")]
    planted: Option<crate::core::planted::PlantedBug>,
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
        node.requests.shard(shard, shards);
        node.anti_entropy = AntiEntropy::new(shard, shards as u32);
        node
    }

    fn unsharded(id: NodeId, incarnation: u64, config: CoreConfig) -> Node {
        let view = MembershipView::new().with(id.clone(), crate::core::membership::Liveness::Up);
        let ring = Ring::new(config.ring_params(), view.ring_members())
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
            )
            .partitioned(config.partitions)
            .with_index_keys(config.index_hash_keys),
            config,
            view,
            ring,
            requests: Requests::new(incarnation),
            collection: Collection::default(),
            recent_forwards: RecentForwards::default(),
            hints: Hints::default(),
            counters: Counters::default(),
            write_log: WriteLog::default(),
            anti_entropy: AntiEntropy::new(0, 1),
            client_load: client_load::ClientLoad::default(),
            handoff: Handoff::default(),
            leaving: false,
            warming_replicas: read::WarmingReplicas::default(),
            warming: std::collections::BTreeMap::new(),
            startup_warming: None,
            acceptor: crate::core::paxos::Acceptor::default(),
            // Every start is a restart as far as Paxos is concerned: this acceptor knows
            // nothing of what it promised or accepted before. The deadline starts on the
            // first tick or message (`paxos_recovering`).
            paxos_recovery: Some((std::collections::BTreeSet::new(), Millis::MAX)),
            paxos_rounds: 0,
            conditional_backoffs: std::collections::BTreeSet::new(),
            #[cfg(feature = "planted-bugs")]
            planted: None,
        }
    }

    /// Whether this node is busy serving clients (see `node/client_load`).
    fn busy(&self, now: Millis) -> bool {
        self.client_load
            .busy(now, self.config.anti_entropy_busy_requests)
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
        self.write_log.enable();
    }

    /// Writes coordinated since the last call, when logging is on.
    pub fn take_writes_run(&mut self) -> Vec<WriteRan> {
        self.write_log.take()
    }

    /// Makes the node keep the hints it gives up (refused by a full owner) until
    /// [`Node::take_hints_given_up`] (simulator only).
    pub fn log_hints_given_up(&mut self) {
        self.hints.log_given_up();
    }

    /// Hints given up since the last call, when logging is on: (owner, key, state).
    pub fn take_hints_given_up(&mut self) -> Vec<(NodeId, Vec<u8>, Siblings)> {
        self.hints.take_given_up()
    }

    /// The hinted states this node holds for other peers: (intended owner, key, state). They
    /// are copies too (the simulator counts them), but not this node's own data.
    pub fn hints_held(&self) -> impl Iterator<Item = (&NodeId, &[u8], &Siblings)> {
        self.hints.iter()
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
        self.requests.len()
    }

    /// The key states this node holds outside its store: what its in-flight reads gathered
    /// and may still repair other replicas with (the simulator counts them as copies).
    pub fn states_in_flight(&self) -> impl Iterator<Item = (&[u8], &Siblings)> {
        self.requests.flights().filter_map(|f| match f {
            Flight::Read(read) => Some((read.key.as_slice(), &read.merged)),
            _ => None,
        })
    }

    pub fn handle(&mut self, now: Millis, input: Input, out: &mut Outputs) {
        let first = out.messages.len();
        let trace = match &input {
            Input::Client { trace, .. } | Input::Peer { trace, .. } => trace.clone(),
            Input::Membership(_) | Input::Undeliverable { .. } => None,
        };
        self.dispatch(now, input, out);
        if let Some(trace) = trace {
            for message in out.messages[first..].iter_mut() {
                message.trace.get_or_insert_with(|| trace.clone());
            }
        }
    }

    fn dispatch(&mut self, now: Millis, input: Input, out: &mut Outputs) {
        if input.is_client_load() {
            self.client_load.note(now);
        }
        match input {
            Input::Client { id, request, trace } => match request {
                ClientRequest::Get {
                    key,
                    r,
                    session,
                    stale_ok_ms,
                } => {
                    let read = ReadSpec {
                        key,
                        r,
                        session,
                        stale_ok_ms,
                        confirms: None,
                    };
                    self.start_read(now, Waiter::client(id, trace), None, read, out)
                }
                ClientRequest::Write(write) => {
                    self.counters.client_writes += 1;
                    self.start_write(now, Waiter::client(id, trace), write, out)
                }
                ClientRequest::Conditional(write) => {
                    self.counters.client_writes += 1;
                    self.start_conditional(now, Waiter::client(id, trace), write, out)
                }
            },
            Input::Peer {
                from,
                message,
                trace,
            } => {
                if message.is_reply() {
                    if let Some(request) = self.requests.get_mut(message.req()) {
                        request.waiter.answered(&from, now);
                    }
                }
                self.on_peer_message(now, (from, trace), message, out)
            }
            Input::Membership(view) => self.on_membership(now, view),
            Input::Undeliverable { to, req } => {
                if let Some(request) = self.requests.get_mut(req) {
                    request.waiter.unreachable(&to);
                }
                self.on_undeliverable(now, to, req, out)
            }
        }
    }

    /// Fails every request whose deadline has passed, and runs one round of active expiry, one
    /// of hint delivery, and one step of anti-entropy and of handoff: [`Node::tick_deadlines`]
    /// then [`Node::tick_repair`].
    pub fn tick(&mut self, now: Millis, out: &mut Outputs) {
        self.tick_deadlines(now, out);
        self.tick_repair(now, out);
    }

    /// The part of [`Node::tick`] that keeps requests and data on time: recovery deadlines,
    /// active expiry and tombstone collection, hint delivery, and requests past their deadline.
    /// A shell may run it apart from [`Node::tick_repair`] (requests waiting in between).
    pub fn tick_deadlines(&mut self, now: Millis, out: &mut Outputs) {
        self.paxos_recovering(now); // starts a new acceptor's recovery deadline
        self.expire_and_collect(now, out);
        self.deliver_hints(now, out);
        // A forwarder gives up after one request timeout; remember its requests twice that.
        let horizon = now.saturating_sub(2 * self.config.request_timeout_ms);
        self.recent_forwards.forget_before(horizon);
        self.ask_spares_due(now, out);
        for (_, request) in self.requests.take_overdue(now) {
            let error = match request.flight {
                Flight::Write(write) => write.timeout(),
                Flight::Read(read) => {
                    self.read_timed_out(now, request.waiter, read, out);
                    continue;
                }
                Flight::Forward(forward) => forward.timeout(),
                Flight::Conditional(conditional) => conditional.timeout(),
            };
            request.waiter.fail(error, out);
        }
        self.conditional_tick(now, out);
    }

    /// The part of [`Node::tick`] that moves data in the background: the next anti-entropy
    /// step and the next handoff batch, each as the budget allows. The heavier half of a tick
    /// (a batch reads up to a hundred-odd states).
    pub fn tick_repair(&mut self, now: Millis, out: &mut Outputs) {
        self.anti_entropy_tick(now, out);
        self.handoff_tick(now, out);
    }

    /// Starts leaving the cluster: this peer takes itself off its ring (peers learn it from
    /// gossip and do the same) and hands every partition it holds to its new replicas; see
    /// [`Node::handoff_done`].
    pub fn leave(&mut self, now: Millis) {
        self.leaving = true;
        let view = self.view.clone();
        self.on_membership(now, view);
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// A peer that just started and is still taking data in keeps warming past its deadline,
    /// which bounds a warming that stalls (a peer it cannot get data from), not one that is
    /// filling at its budget's pace: until it has synchronized, its answers are not its share.
    fn note_filling(&mut self, now: Millis) {
        let stall = self.config.tombstone_grace_ms / 4 + self.config.request_timeout_ms;
        if let Some((_, until)) = self.startup_warming.as_mut() {
            *until = (*until).max(now + stall);
        }
    }

    /// Notes a finished anti-entropy exchange with `peer`; a peer that just started stops
    /// warming once it has one with every other live ring member.
    fn startup_synced(&mut self, peer: &NodeId) {
        if let Some((synced, _)) = self.paxos_recovery.as_mut() {
            synced.insert(peer.clone());
        }
        let Some((synced, _)) = self.startup_warming.as_mut() else {
            return;
        };
        synced.insert(peer.clone());
        let done = self
            .ring
            .members()
            .iter()
            .filter(|m| **m != self.id && self.view.is_up(m))
            .all(|m| synced.contains(m));
        if done {
            self.startup_warming = None;
        }
    }

    /// Whether this peer, having started empty, has yet to synchronize with every other ring
    /// member (up or not: one that is down may hold the only other copy of a commit) and to
    /// outlast any round begun before it started (two request timeouts: a proposer commits
    /// only before its deadline). Until then its promises count only beside every other
    /// replica's, so no majority rests on an acceptor that forgot what it accepted.
    fn paxos_recovering(&mut self, now: Millis) -> bool {
        if self.has_bug(crate::core::planted::PlantedBug::PaxosAmnesia) {
            return false;
        }
        let outlast = now + 2 * self.config.request_timeout_ms;
        let Some((synced, until)) = self.paxos_recovery.as_mut() else {
            return false;
        };
        if *until == Millis::MAX {
            *until = outlast;
        }
        // With anti-entropy off nothing would ever synchronize it: the wait is the deadline's.
        let all_synced = self.config.anti_entropy_interval_ms == 0
            || self
                .ring
                .members()
                .iter()
                .filter(|m| **m != self.id)
                .all(|m| synced.contains(m));
        if all_synced && now >= *until {
            self.paxos_recovery = None;
            return false;
        }
        true
    }

    /// Partitions this peer gained in a ring change and is still filling (moving in).
    pub fn partitions_moving_in(&self, now: Millis) -> Vec<crate::core::ring::PartitionId> {
        if self
            .startup_warming
            .as_ref()
            .is_some_and(|(_, until)| now < *until)
        {
            return (0..self.config.partitions)
                .filter(|p| self.ring.preference_list(*p).contains(&self.id))
                .collect();
        }
        self.warming
            .iter()
            .filter(|(_, until)| now < **until)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Whether this peer gained `partition` in a ring change (a join or leave) recently
    /// enough that the ex-owners may still be handing its data over.
    fn gained_recently(&self, partition: crate::core::ring::PartitionId, now: Millis) -> bool {
        self.warming
            .get(&partition)
            .is_some_and(|until| now < *until)
    }

    /// Whether this peer's answers for `partition` do not count toward R yet.
    fn is_warming(&self, partition: crate::core::ring::PartitionId, now: Millis) -> bool {
        self.startup_warming
            .as_ref()
            .is_some_and(|(_, until)| now < *until)
            || self.gained_recently(partition, now)
    }

    fn on_peer_message(
        &mut self,
        now: Millis,
        (from, trace): (NodeId, Option<TraceId>),
        message: PeerMessage,
        out: &mut Outputs,
    ) {
        match message {
            PeerMessage::Store { req, key, state } => {
                self.on_store(now, from, req, &key, &state, out)
            }
            PeerMessage::StoreAck { req } => self.on_store_answer(&from, req, true, out),
            PeerMessage::StoreRefused { req } => self.on_store_answer(&from, req, false, out),
            PeerMessage::Repair { key, state, .. } => self.on_repair(now, &key, &state),
            PeerMessage::Forget { key, clock, .. } => self.on_forget(&key, &clock),
            PeerMessage::Fetch { req, key } => self.on_fetch(now, from, req, &key, out),
            PeerMessage::FetchReply {
                req,
                state,
                warming,
            } => self.on_fetch_reply(now, from, req, state, warming, out),
            PeerMessage::Coordinate { req, write } => {
                self.on_coordinate(now, (from, trace), req, write, out)
            }
            PeerMessage::CoordinateReply { req, reply } => {
                self.on_coordinate_reply(req, reply, out)
            }
            PeerMessage::AntiEntropy { req, message, busy } => {
                self.on_anti_entropy(now, (from, busy), req, message, out)
            }
            PeerMessage::Handoff {
                req,
                partition,
                states,
                busy,
            } => self.on_handoff(now, (from, busy), req, partition, states, out),
            PeerMessage::HandoffAck {
                req,
                stored,
                retry_after_ms,
                ..
            } => self.on_handoff_ack(now, &from, req, (stored, retry_after_ms), out),
            PeerMessage::HintStore {
                req,
                key,
                owner,
                state,
            } => self.on_hint_store(now, from, req, (key, owner, state), out),
            PeerMessage::HintDeliver { req, key, state } => {
                self.on_hint_deliver(now, from, req, &key, &state, out)
            }
            PeerMessage::HintAck { req } => self.on_hint_answer(&from, req, true),
            PeerMessage::HintRefused { req } => self.on_hint_answer(&from, req, false),
            message @ (PeerMessage::PaxosPrepare { .. }
            | PeerMessage::PaxosPromise { .. }
            | PeerMessage::PaxosPropose { .. }
            | PeerMessage::PaxosAccepted { .. }
            | PeerMessage::PaxosCommit { .. }
            | PeerMessage::PaxosCommitted { .. }) => self.on_paxos_message(now, from, message, out),
            // Pub/sub lives in the shell; a core handed one has nothing to do with it.
            PeerMessage::Publish { .. } => {}
        }
    }

    fn on_undeliverable(&mut self, now: Millis, to: NodeId, req: u64, out: &mut Outputs) {
        if self.anti_entropy.owns(req) {
            return self.on_anti_entropy_undeliverable(now);
        }
        if self.owns_handoff(req) {
            return; // the batch is sent again when its acknowledgements are overdue
        }
        match self.requests.flight_mut(req) {
            Some(Flight::Write(_)) => self.on_store_answer(&to, req, false, out),
            Some(Flight::Read(_)) => self.on_fetch_undeliverable(now, &to, req, out),
            Some(Flight::Forward(_)) => self.on_forward_undeliverable(req, out),
            Some(Flight::Conditional(_)) => self.on_paxos_unreachable(now, req, out),
            None => self.on_hint_undeliverable(req),
        }
    }
}
