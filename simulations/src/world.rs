//! One simulated run: the real `Node` of every peer, a simulated network, clocks and failure
//! detector, the client workload and the fault schedule — all on one thread, one event queue,
//! one seed.
//!
//! Time is a `Millis` counter that jumps from event to event; each peer sees it through its own
//! skewed, drifting clock. Events at the same instant run in the order they were scheduled (a
//! sequence number breaks ties), so a run is a pure function of its [`Scenario`] and planted bug.
//!
//! After the workload the world heals every fault, waits until every peer's failure detector
//! sees every other peer, reads every key once with R = all (read repair brings stale replicas
//! up to date: the cluster has no background anti-entropy yet), lets the network go quiet, and
//! then hands the history, the replicas' final states and what the run knows about lost memory
//! to the checker.

use crate::rng::Rng;
use crate::scenario::{
    Fault, Scenario, BACKGROUND_SHARE_STREAM, CONDITIONAL_KEYS, CONDITIONAL_STREAM, COUNTER_KEYS,
    COUNTER_STREAM, FORGED_CONTEXT_STREAM, NAMES, NETWORK_STREAM, OVERWRITE_STREAM,
    READ_SPARES_STREAM, SLOPPY_STREAM, STALE_READ_STREAM, WORKLOAD_STREAM,
};
use ringcache::core::config::CoreConfig;
use ringcache::core::membership::{Liveness, MembershipView};
use ringcache::core::message::PeerMessage;
use ringcache::core::node::{Completion, Input, Outputs};
use ringcache::core::paxos::Condition;
use ringcache::core::planted::PlantedBug;
use ringcache::core::request::{
    ClientReply, ClientRequest, ConditionalWrite, RequestError, WriteKind, WriteRequest,
};
use ringcache::core::ring::Ring;
use ringcache::core::siblings::{Payload, Siblings};
use ringcache::core::types::{ClientRequestId, Millis, NodeId, Quorum};
use ringcache::core::version_vector::VersionVector;
use ringcache::history::check::{
    check, values_of, versions_of, CheckReport, Circumstances, Convergence, FinalState, Loss,
    LossCause, WriteRun,
};
use ringcache::history::{History, OpId, OpKind, Outcome};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod faults;
mod membership;
mod settle;
mod shards;
mod truth;

/// Simulated time starts here, so that clocks running behind stay positive.
const START: Millis = 10_000;
const TICK_MS: Millis = 10;
const DETECTOR_EVERY_MS: Millis = 50;
const CLIENT_TIMEOUT_MS: Millis = 2_000;
/// How long a send to an unreachable peer takes to fail (the shell's connect timeout).
const CONNECT_TIMEOUT_MS: Millis = 1_000;
const SWEEP_PARALLEL: usize = 4;
/// Longest the world waits after healing before it gives up on convergence.
const SETTLE_LIMIT_MS: Millis = 5_000;
/// Read-repair rounds after healing before replicas that still differ count as diverged. Each
/// round a lagging replica misses its repair with probability about 9% at the worst loss rate
/// (3% on each of fetch, reply and repair); 10 rounds make that 3e-11, where 5 rounds (6e-6)
/// failed about once per CI sweep of a few thousand seeds by chance alone.
const MAX_SWEEP_ROUNDS: u32 = 10;
/// Anti-entropy rounds after views agree before replicas that still differ count as diverged
/// (an exchange survives the worst loss rate, 3% a message, with high probability; ten rounds
/// make repeated failures vanishingly rare).
const AE_ROUNDS: u64 = 10;

pub struct RunResult {
    pub history: History,
    pub check: CheckReport,
    pub faults_injected: BTreeMap<&'static str, usize>,
    pub trace_hash: u64,
    /// Simulated latency of every successful operation.
    pub latencies: Vec<Millis>,
    pub convergence: Convergence,
    pub read_repairs: u64,
    pub sim_ms: Millis,
    pub messages: u64,
    /// For the first key whose replicas still differ: each replica's state.
    pub divergence: Option<String>,
    /// Keys evicted and values expired by the running peers' stores.
    pub evicted: u64,
    pub expired: u64,
    pub tombstones_collected: u64,
    /// Losses only coordinators' in-flight reads held for a while, recorded once nothing
    /// covered them any more, by cause (what `truth`'s pending losses came to).
    pub pending_losses_recorded: BTreeMap<LossCause, u64>,
    /// Writes whose coordinator had hint holders stand in for replicas believed down.
    pub hinted_writes: usize,
    /// Hint counters of the peers running at the end.
    pub hints_delivered: u64,
    pub hints_dropped: u64,
    pub hints_refused: u64,
    pub hints_expired: u64,
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: NodeId,
        incarnation: u64,
        from: NodeId,
        message: PeerMessage,
    },
    Undeliverable {
        at: NodeId,
        incarnation: u64,
        to: NodeId,
        req: u64,
    },
    Arrive {
        node: NodeId,
        id: ClientRequestId,
        request: ClientRequest,
    },
    Reply {
        id: ClientRequestId,
        reply: ClientReply,
    },
    Issue {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        id: ClientRequestId,
    },
    Heartbeat {
        to: NodeId,
        from: NodeId,
        members: Vec<NodeId>,
        left: Vec<NodeId>,
    },
    FaultStart(usize),
    FaultEnd(usize),
    Flap(usize),
    Tick,
    Heal,
    SweepNext,
    SweepRound,
}

impl Event {
    fn tag(&self) -> u64 {
        match self {
            Event::Deliver { .. } => 1,
            Event::Undeliverable { .. } => 2,
            Event::Arrive { .. } => 3,
            Event::Reply { .. } => 4,
            Event::Issue { .. } => 5,
            Event::ClientTimeout { .. } => 6,
            Event::Heartbeat { .. } => 7,
            Event::FaultStart(_) => 8,
            Event::FaultEnd(_) => 9,
            Event::Flap(_) => 10,
            Event::Tick => 11,
            Event::Heal => 12,
            Event::SweepNext => 13,
            Event::SweepRound => 14,
        }
    }
}

/// The stand-in for gossip: who a peer knows of, when it last heard from each, who left.
#[derive(Default)]
struct Detector {
    last_heard: BTreeMap<NodeId, Option<Millis>>,
    left: BTreeSet<NodeId>,
    suspected_until: BTreeMap<NodeId, Millis>,
}

struct Peer {
    /// `None` while crashed, and after leaving.
    node: Option<shards::Shards>,
    incarnation: u64,
    paused: bool,
    /// Events that reached the peer while it was paused, handled when it resumes.
    held: Vec<Event>,
    clock: (i64, i64),
    detector: Detector,
    left: bool,
    /// Since when the peer has been leaving gracefully (handing its data off), if it is.
    leaving_since: Option<Millis>,
    /// Its first incarnation (a later one restarted empty).
    first_incarnation: u64,
    view: Option<MembershipView>,
}

enum Owner {
    Client(usize),
    Sweep(Vec<u8>, u32),
}

struct Client {
    session: bool,
    contexts: BTreeMap<Vec<u8>, VersionVector>,
    current: Option<(ClientRequestId, OpId)>,
    /// What this client last learnt each conditional key holds (from its own conditional
    /// writes' answers): what its next compare-and-set expects.
    cas_seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

struct World<'s> {
    s: &'s Scenario,
    plant: Option<PlantedBug>,
    config: CoreConfig,
    now: Millis,
    seq: u64,
    queue: BTreeMap<(Millis, u64), Event>,
    peers: BTreeMap<NodeId, Peer>,
    next_incarnation: u64,
    clients: Vec<Client>,
    issued: usize,
    next_request: u64,
    pending: BTreeMap<ClientRequestId, Owner>,
    history: History,
    /// The conditional writes, on keys nothing else touches: judged for linearizability
    /// apart from `history` (see `history::linearizable`).
    cas_history: History,
    /// Client requests that are conditional writes (their ops are in `cas_history`).
    cas_requests: BTreeSet<ClientRequestId>,
    /// Which operations become conditional writes, and what they write (`CONDITIONAL_STREAM`).
    conditionals: Rng,
    work: Rng,
    net: Rng,
    /// Which writes are sloppy (its own stream: see `SLOPPY_STREAM`).
    sloppy: Rng,
    /// Which writes send a foreign or corrupted context (see `forge_context`).
    forged: Rng,
    /// Which blind puts are overwrites (its own stream: see `OVERWRITE_STREAM`).
    overwrites: Rng,
    /// Which operations become counter increments, on which key, by how much (see
    /// `COUNTER_STREAM`).
    counters: Rng,
    /// Which reads accept stale values, and how stale (`STALE_READ_STREAM`).
    stale_reads: Rng,
    /// Faults currently in force (by index), and whether a flapping cut is on right now.
    active: BTreeMap<usize, bool>,
    faults_injected: BTreeMap<&'static str, usize>,
    healed_at: Option<Millis>,
    sweep_queue: VecDeque<(Vec<u8>, u32)>,
    sweep_in_flight: usize,
    sweep_started: bool,
    /// Sweep rounds run; each re-reads the keys whose replicas still differ.
    sweep_rounds: u32,
    quiet_until: Option<Millis>,
    converged_at: Option<Millis>,
    /// When every running peer first saw every other after healing.
    views_agreed_at: Option<Millis>,
    // What the checker needs to know and cannot see in the history (see `truth`).
    losses: BTreeMap<Vec<u8>, Vec<Loss>>,
    /// Losses whose dots only in-flight reads still hold, by key (see `truth`).
    pending_losses: BTreeMap<Vec<u8>, Vec<truth::PendingLoss>>,
    /// Pending losses later recorded as losses (their reads ended uncovered), by cause.
    pending_losses_recorded: BTreeMap<LossCause, u64>,
    writes_run: BTreeMap<OpId, WriteRun>,
    /// Writes seen running so far: the next one's place in the order writes ran.
    writes_ran: u64,
    /// What each write that arrived at a peer may replace, until it runs.
    entitlements: BTreeMap<OpId, VersionVector>,
    /// Every client request's operation, by request id.
    request_ops: BTreeMap<ClientRequestId, OpId>,
    /// Forwarded writes: (forwarding peer, its request number) → the operation.
    forwards: BTreeMap<(NodeId, u64), OpId>,
    /// The key each read's `Fetch` asked for, by request number (a `FetchReply` names none).
    fetch_keys: BTreeMap<u64, Vec<u8>>,
    /// Per (owner, key): the delivered hint states the owner's store took (see `truth`).
    handed_over: BTreeMap<(NodeId, Vec<u8>), VersionVector>,
    /// Writes whose coordinator had hint holders stand in for replicas believed down.
    sloppy_writes: BTreeSet<OpId>,
    /// Hints a holder let go of without a reason the protocol allows (see `truth`).
    hints_lost: Vec<ringcache::history::check::Violation>,
    /// Clocks of tombstone-only states peers decided to collect, by key.
    collected: BTreeMap<Vec<u8>, VersionVector>,
    /// Steps after which a peer's accounted memory exceeded its limit by more than an entry.
    over_memory: Vec<String>,
    /// Handoff drops no other peer could have confirmed (see `check_handed_off`).
    handoff_unconfirmed: Vec<String>,
    disruptions: Vec<(Millis, Millis)>,
    /// When each peer crashed (and so lost its memory), in order.
    memory_losses: Vec<(Millis, NodeId)>,
    /// When each peer evicted its copy of a key under its memory limit, by key.
    evictions: BTreeMap<Vec<u8>, Vec<(Millis, NodeId)>>,
    /// When a peer left the cluster still holding a key, or abandoned its handoff: that copy
    /// never reached the new replica, by key.
    handoffs_failed: BTreeMap<Vec<u8>, Vec<(Millis, NodeId)>>,
    key_disruptions: BTreeMap<Vec<u8>, Vec<Millis>>,
    /// Since when running peers have disagreed on the ring's members, if they do now.
    rings_differ_since: Option<Millis>,
    read_repairs_of_gone_nodes: u64,
    trace: u64,
    messages: u64,
}

pub fn run(s: &Scenario, plant: Option<PlantedBug>) -> RunResult {
    let mut world = World::new(s, plant);
    world.run();
    world.finish()
}

fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    let mut h = hash;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl<'s> World<'s> {
    fn new(s: &'s Scenario, plant: Option<PlantedBug>) -> Self {
        let background_budget = {
            let mut draw = Rng::stream(s.seed, BACKGROUND_SHARE_STREAM);
            let keys_per_sec = if draw.below(3) == 0 { 300 } else { 2_000 };
            (keys_per_sec, [100, 50, 10][draw.below(3) as usize])
        };
        let config = CoreConfig {
            replicas: s.replicas,
            partitions: 64,
            vnodes: 16,
            request_timeout_ms: 500,
            max_memory_bytes: s.memory.map(|(bytes, _)| bytes),
            eviction: s.memory.map(|(_, policy)| policy).unwrap_or_default(),
            // Longer than any simulated message stays in flight (delay tails and spikes stay
            // under two seconds), short enough that collection happens mid-run.
            tombstone_grace_ms: 3_000,
            // Rounds often enough to converge within seconds of healing, and a budget small
            // enough that pacing shapes the larger exchanges.
            anti_entropy_interval_ms: 1_000,
            // In a third of the seeds the budget is small enough that exchanges overdraw it
            // (at 2,000 keys a second they almost never do).
            anti_entropy_keys_per_sec: background_budget.0,
            anti_entropy_bytes_per_sec: 256 * 1024,
            // Low enough that a peer serving the workload counts as busy, so transfers run at
            // the busy share while clients are served and at the full budget once they stop.
            anti_entropy_busy_requests: 5,
            anti_entropy_busy_percent: background_budget.1,
            // Low enough that hot keys written blind reach it: refused writes must never cost
            // an acknowledged sibling.
            max_siblings: 6,
            // In half the seeds expired values stay a second before active expiry reclaims
            // them (for `stale_ok` reads): plain reads must still never see them
            // (`expired-read`).
            stale_window_ms: if Rng::stream(s.seed, STALE_READ_STREAM + 1).chance(5_000) {
                1_000
            } else {
                0
            },
            // Reads ask R replicas and bring the spares in after a delay shorter than most
            // message delays, near them, or past them; in a fifth of the seeds they ask every
            // replica at once, as before spares existed.
            read_spare_after_ms: s.read_spare_after_ms.unwrap_or_else(|| {
                let mut spares = Rng::stream(s.seed, READ_SPARES_STREAM);
                [0, 5, 20, 50, 200][spares.below(5) as usize]
            }),
            ..CoreConfig::default()
        };
        let mut work = Rng::stream(s.seed, WORKLOAD_STREAM);
        let clients = (0..s.clients)
            .map(|_| Client {
                session: work.chance(s.session_clients_per_10k),
                contexts: BTreeMap::new(),
                current: None,
                cas_seen: BTreeMap::new(),
            })
            .collect();
        let mut world = World {
            s,
            plant,
            config,
            now: START,
            seq: 0,
            queue: BTreeMap::new(),
            peers: BTreeMap::new(),
            next_incarnation: 1,
            clients,
            issued: 0,
            next_request: 0,
            pending: BTreeMap::new(),
            history: History::new(),
            cas_history: History::new(),
            cas_requests: BTreeSet::new(),
            conditionals: Rng::stream(s.seed, CONDITIONAL_STREAM + 1),
            work,
            net: Rng::stream(s.seed, NETWORK_STREAM),
            sloppy: Rng::stream(s.seed, SLOPPY_STREAM + 1),
            forged: Rng::stream(s.seed, FORGED_CONTEXT_STREAM),
            overwrites: Rng::stream(s.seed, OVERWRITE_STREAM + 1),
            counters: Rng::stream(s.seed, COUNTER_STREAM + 1),
            stale_reads: Rng::stream(s.seed, STALE_READ_STREAM),
            active: BTreeMap::new(),
            faults_injected: BTreeMap::new(),
            healed_at: None,
            sweep_queue: VecDeque::new(),
            sweep_in_flight: 0,
            sweep_started: false,
            sweep_rounds: 0,
            quiet_until: None,
            converged_at: None,
            views_agreed_at: None,
            losses: BTreeMap::new(),
            pending_losses: BTreeMap::new(),
            pending_losses_recorded: BTreeMap::new(),
            writes_run: BTreeMap::new(),
            writes_ran: 0,
            entitlements: BTreeMap::new(),
            request_ops: BTreeMap::new(),
            forwards: BTreeMap::new(),
            fetch_keys: BTreeMap::new(),
            collected: BTreeMap::new(),
            handed_over: BTreeMap::new(),
            sloppy_writes: BTreeSet::new(),
            hints_lost: Vec::new(),
            over_memory: Vec::new(),
            handoff_unconfirmed: Vec::new(),
            disruptions: Vec::new(),
            memory_losses: Vec::new(),
            evictions: BTreeMap::new(),
            handoffs_failed: BTreeMap::new(),
            key_disruptions: BTreeMap::new(),
            rings_differ_since: None,
            read_repairs_of_gone_nodes: 0,
            trace: 0xcbf2_9ce4_8422_2325,
            messages: 0,
        };
        let initial: Vec<NodeId> = NAMES[..s.nodes].iter().map(|n| NodeId::from(*n)).collect();
        for (i, name) in initial.iter().enumerate() {
            let mut detector = Detector::default();
            for other in &initial {
                // Everyone starts having heard of everyone (a formed cluster).
                detector.last_heard.insert(other.clone(), Some(START));
            }
            let peer = Peer {
                node: None,
                incarnation: 0,
                paused: false,
                held: Vec::new(),
                clock: s.clocks[i],
                detector,
                left: false,
                leaving_since: None,
                first_incarnation: 0,
                view: None,
            };
            world.peers.insert(name.clone(), peer);
            world.boot(name);
        }
        world.schedule(START, Event::Tick);
        for (i, f) in s.faults.iter().enumerate() {
            world.schedule(START + f.at, Event::FaultStart(i));
        }
        for c in 0..s.clients {
            let at = START + world.work.below(50);
            world.schedule(at, Event::Issue { client: c });
        }
        world.schedule(START + s.workload_ms, Event::Heal);
        world
    }

    fn schedule(&mut self, at: Millis, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn local_time(&self, node: &NodeId) -> Millis {
        let (offset, drift) = self.peers[node].clock;
        let t = self.now as i64;
        (t + offset + drift * t / 1_000_000).max(0) as Millis
    }

    /// Starts (or restarts) a peer with empty memory and a fresh incarnation.
    fn boot(&mut self, name: &NodeId) {
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let node = shards::Shards::boot(name, incarnation, &self.config, self.s.shards, self.plant);
        let peer = self.peers.get_mut(name).expect("known peer");
        peer.node = Some(node);
        let restart = peer.incarnation != 0;
        if !restart {
            peer.first_incarnation = incarnation;
        }
        peer.incarnation = incarnation;
        peer.view = None;
        if restart {
            // A restarted process knows its fellow members (from its seeds) but has heard
            // from none of them yet: its first views show them down, as gossip's do.
            for heard in peer.detector.last_heard.values_mut() {
                *heard = None;
            }
            peer.detector.suspected_until.clear();
        }
        peer.detector
            .last_heard
            .insert(name.clone(), Some(self.now));
        self.update_view(name);
    }

    fn run(&mut self) {
        let hard_limit = START + self.s.workload_ms + 120_000;
        while let Some(((at, _), event)) = self.queue.pop_first() {
            self.now = at;
            if at > hard_limit {
                break;
            }
            self.trace = fnv(self.trace, &at.to_le_bytes());
            self.trace = fnv(self.trace, &event.tag().to_le_bytes());
            self.dispatch(event);
            if self.quiet_until.is_some_and(|q| self.now >= q) {
                break;
            }
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver {
                to,
                incarnation,
                from,
                message,
            } => {
                let stale =
                    self.peers[&to].node.is_none() || self.peers[&to].incarnation != incarnation;
                if self.hold_if_paused(&to, incarnation, || Event::Deliver {
                    to: to.clone(),
                    incarnation,
                    from: from.clone(),
                    message: message.clone(),
                }) {
                    if stale {
                        self.lose_message(&message);
                    }
                    return;
                }
                let carried: Vec<(Vec<u8>, VersionVector)> = self
                    .message_states(&message)
                    .into_iter()
                    .map(|(k, s)| (k.to_vec(), s.context().clone()))
                    .collect();
                let sender = from.clone();
                let dropped = self.feed(
                    &to,
                    Input::Peer {
                        from,
                        message: message.clone(),
                        trace: None,
                    },
                );
                for (key, clock) in carried {
                    // A state the receiver did not take (a full store, a late reply) may have
                    // been the last copy. One it took and dropped in the same step was lost
                    // by that drop, judged as a drop (an illegitimate one stays unexcused).
                    let kept = [&to, &sender].into_iter().any(|p| {
                        self.peers[p]
                            .node
                            .as_ref()
                            .and_then(|n| n.peek(&key))
                            .is_some_and(|s| s.context().descends_from(&clock))
                    }) || dropped
                        .iter()
                        .any(|(k, held)| *k == key && held.descends_from(&clock));
                    if !kept {
                        self.lose_copy(None, &key, &clock, LossCause::Message);
                    }
                }
            }
            Event::Undeliverable {
                at,
                incarnation,
                to,
                req,
            } => {
                if self.hold_if_paused(&at, incarnation, || Event::Undeliverable {
                    at: at.clone(),
                    incarnation,
                    to: to.clone(),
                    req,
                }) {
                    return;
                }
                self.feed(&at, Input::Undeliverable { to, req });
            }
            Event::Arrive { node, id, request } => {
                let incarnation = self.peers[&node].incarnation;
                if self.hold_if_paused(&node, incarnation, || Event::Arrive {
                    node: node.clone(),
                    id,
                    request: request.clone(),
                }) {
                    return;
                }
                self.feed(
                    &node,
                    Input::Client {
                        id,
                        request,
                        trace: None,
                    },
                );
            }
            Event::Reply { id, reply } => self.on_reply(id, reply),
            Event::Issue { client } => self.issue(client),
            Event::ClientTimeout { client, id } => {
                if self.clients[client].current.map(|c| c.0) == Some(id) {
                    let (_, op) = self.clients[client].current.take().expect("checked");
                    self.pending.remove(&id);
                    let now = self.now;
                    self.history_of(id).complete(op, now, Outcome::Unknown);
                    self.cas_requests.remove(&id);
                    let think = self.work.below(40);
                    self.schedule(self.now + think, Event::Issue { client });
                }
            }
            Event::Heartbeat {
                to,
                from,
                members,
                left,
            } => {
                let incarnation = self.peers[&to].incarnation;
                if self.hold_if_paused(&to, incarnation, || Event::Heartbeat {
                    to: to.clone(),
                    from: from.clone(),
                    members: members.clone(),
                    left: left.clone(),
                }) {
                    return;
                }
                self.on_heartbeat(&to, from, members, left);
            }
            Event::FaultStart(i) => self.start_fault(i),
            Event::FaultEnd(i) => self.end_fault(i),
            Event::Flap(i) => {
                if let Some(on) = self.active.get_mut(&i) {
                    *on = !*on;
                    if let Fault::Partition {
                        flap_ms: Some(p), ..
                    } = self.s.faults[i].fault
                    {
                        self.schedule(self.now + p, Event::Flap(i));
                    }
                }
            }
            Event::Tick => self.tick(),
            Event::Heal => self.heal(),
            Event::SweepNext => self.sweep_next(),
            Event::SweepRound => self.sweep_round(),
        }
    }

    /// True if the event was for a stale incarnation (dropped) or held for a paused peer.
    fn hold_if_paused(
        &mut self,
        node: &NodeId,
        incarnation: u64,
        event: impl FnOnce() -> Event,
    ) -> bool {
        let peer = self.peers.get_mut(node).expect("known peer");
        if peer.node.is_none() || peer.incarnation != incarnation {
            return true;
        }
        if peer.paused {
            peer.held.push(event());
            return true;
        }
        false
    }

    /// Hands `input` to `node`; returns the states it dropped in this step, by key.
    fn feed(&mut self, node: &NodeId, input: Input) -> Vec<(Vec<u8>, VersionVector)> {
        let now = self.local_time(node);
        let mut out = Outputs::default();
        if self.peers[node].node.is_none() {
            return Vec::new();
        }
        let before = self.before_feed(node, &input);
        let forwarded_op = match &input {
            Input::Client { id, .. } => self.op_of_client_request(*id),
            _ => None,
        };
        let ring_before: Option<Ring> = matches!(input, Input::Membership(_))
            .then(|| self.peers[node].node.as_ref().map(|n| n.ring().clone()))
            .flatten();
        let pending = self.reads_pending(node);
        let delivered = match &input {
            Input::Peer {
                message: PeerMessage::HintDeliver { key, state, .. },
                ..
            } => Some((key.clone(), state.context().clone())),
            _ => None,
        };
        let hints_before = self.hints_of(node);
        let peer = self.peers.get_mut(node).expect("known peer");
        let n = peer.node.as_mut().expect("checked");
        n.handle(now, input, &mut out);
        let dropped = n.take_evicted();
        let abandoned = n.take_abandoned();
        let handed_off = n.take_handed_off();
        self.note_hint_taken(node, delivered, &dropped);
        self.after_feed(node, before, &out);
        if let Some(op) = forwarded_op {
            for msg in &out.messages {
                if let PeerMessage::Coordinate { req, .. } = &msg.message {
                    self.forwards.insert((node.clone(), *req), op);
                }
            }
        }
        self.check_memory(node);
        // Drops are judged once this step's messages are on their way: a state the peer
        // dropped and sent in the same step survived in the message.
        self.absorb(node, out);
        let taken = dropped
            .iter()
            .map(|(k, s)| (k.clone(), s.context().clone()))
            .collect();
        self.note_dropped(node, dropped, ring_before.as_ref());
        self.note_abandoned(node, abandoned);
        self.check_handed_off(node, handed_off);
        let given_up = self.note_hints_given_up(node);
        self.check_hints_kept(node, hints_before, &given_up);
        self.after_reads_stepped(pending);
        taken
    }

    /// After every step: a peer's accounted memory stays within its limit, give or take the
    /// one entry being written.
    fn check_memory(&mut self, node: &NodeId) {
        let Some((_, policy)) = self.s.memory else {
            return;
        };
        let Some(peer) = self.peers[node].node.as_ref() else {
            return;
        };
        for (i, shard) in peer.nodes().iter().enumerate() {
            let store = shard.store();
            let Some(limit) = store.limits().max_memory_bytes else {
                continue;
            };
            let used = store.used_bytes();
            if used <= limit {
                continue;
            }
            let largest = store
                .iter()
                .map(|(k, s)| ringcache::core::store::footprint(k, &s))
                .max()
                .unwrap_or(0);
            if used > limit + largest {
                self.over_memory.push(format!(
                    "{node} shard {i} at {} uses {used} bytes, limit {limit} ({}), largest entry {largest}",
                    self.now,
                    policy.name()
                ));
            }
        }
    }

    fn absorb(&mut self, from: &NodeId, out: Outputs) {
        for msg in out.messages {
            self.send(from, msg.to, msg.message);
        }
        for Completion { id, reply, .. } in out.replies {
            let delay = 1 + self.net.below(3);
            self.schedule(self.now + delay, Event::Reply { id, reply });
        }
    }

    fn blocked(&self, from: &NodeId, to: &NodeId) -> bool {
        self.active.iter().any(|(i, on)| {
            *on && matches!(&self.s.faults[*i].fault, Fault::Partition { cut, .. }
                if cut.iter().any(|(a, b)| a == from.as_str() && b == to.as_str()))
        })
    }

    fn delay(&mut self) -> Millis {
        let n = self.s.net;
        let mut d = n.base_delay_ms + self.net.exponential(n.tail_mean_ms);
        if self.net.chance(n.spike_per_10k) {
            d += n.spike_ms;
        }
        d.max(1)
    }

    fn send(&mut self, from: &NodeId, to: NodeId, message: PeerMessage) {
        self.messages += 1;
        let from_incarnation = self.peers[from].incarnation;
        let reachable = self
            .peers
            .get(&to)
            .is_some_and(|p| p.node.is_some() && !p.left);
        if !reachable || self.blocked(from, &to) {
            self.lose_message(&message);
            // A dead or cut-off peer: the connection attempt times out, or the stream dies
            // silently.
            if !reachable || self.net.chance(5_000) {
                let after = CONNECT_TIMEOUT_MS + self.net.below(500);
                let req = message.req();
                self.schedule(
                    self.now + after,
                    Event::Undeliverable {
                        at: from.clone(),
                        incarnation: from_incarnation,
                        to,
                        req,
                    },
                );
            }
            return;
        }
        if self.net.chance(self.s.net.loss_per_10k) {
            self.lose_message(&message);
            return;
        }
        let incarnation = self.peers[&to].incarnation;
        if self.net.chance(self.s.net.dup_per_10k) {
            let d = self.delay();
            self.schedule(
                self.now + d,
                Event::Deliver {
                    to: to.clone(),
                    incarnation,
                    from: from.clone(),
                    message: message.clone(),
                },
            );
        }
        let d = self.delay();
        self.schedule(
            self.now + d,
            Event::Deliver {
                to,
                incarnation,
                from: from.clone(),
                message,
            },
        );
    }

    fn running(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.node.is_some() && !p.left)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn tick(&mut self) {
        let since = self.now - START;
        let names: Vec<NodeId> = self.peers.keys().cloned().collect();
        for name in &names {
            let peer = &self.peers[name];
            if peer.node.is_none() || peer.paused || peer.left {
                continue;
            }
            let now = self.local_time(name);
            let mut out = Outputs::default();
            // Reads end at their deadlines here, in every shard.
            let pending = self.reads_pending(name);
            let hints_before = self.hints_of(name);
            let mut dropped = Vec::new();
            let mut abandoned = Vec::new();
            let mut handed_off = Vec::new();
            if let Some(n) = self.peers.get_mut(name).and_then(|p| p.node.as_mut()) {
                n.tick(now, &mut out);
                // A read repair applied here at a deadline can evict.
                dropped = n.take_evicted();
                abandoned = n.take_abandoned();
                handed_off = n.take_handed_off();
            }
            self.after_feed(name, None, &out);
            self.check_memory(name);
            self.absorb(name, out);
            self.note_dropped(name, dropped, None);
            self.note_abandoned(name, abandoned);
            self.check_handed_off(name, handed_off);
            let given_up = self.note_hints_given_up(name);
            self.check_hints_kept(name, hints_before, &given_up);
            self.after_reads_stepped(pending);
            if since.is_multiple_of(self.s.heartbeat_ms) {
                self.send_heartbeats(name);
            }
            if since.is_multiple_of(DETECTOR_EVERY_MS) {
                self.update_view(name);
            }
            self.depart_when_handed_off(name);
        }
        if since.is_multiple_of(DETECTOR_EVERY_MS) && self.healed_at.is_some() {
            self.after_heal_checks();
        }
        self.schedule(self.now + TICK_MS, Event::Tick);
    }

    /// One write in twenty sends a context this cluster never issued: one from a foreign
    /// cluster (actors no peer here has), or a stale one corrupted with a foreign actor at a
    /// counter near the top. The API refuses both (they carry no valid MAC); the core must
    /// take them without losing an acknowledged write or wrapping a counter, since they name
    /// no event that happened here.
    fn forge_context(&mut self, context: Option<VersionVector>) -> Option<VersionVector> {
        if !self.forged.chance(500) {
            return context;
        }
        let foreign = ringcache::core::version_vector::Actor(
            format!("Z.{}", self.forged.below(1_000)).into(),
        );
        let counter = if self.forged.chance(5_000) {
            u64::MAX / 2 + self.forged.below(1_000)
        } else {
            1 + self.forged.below(100)
        };
        let mut forged = if self.forged.chance(5_000) {
            context.unwrap_or_default()
        } else {
            VersionVector::new()
        };
        forged.merge(&VersionVector::from(vec![(foreign, counter)]));
        Some(forged)
    }

    fn next_request_id(&mut self) -> ClientRequestId {
        self.next_request += 1;
        ClientRequestId(self.next_request)
    }

    fn issue(&mut self, c: usize) {
        if self.healed_at.is_some() || self.issued >= self.s.ops {
            return;
        }
        self.issued += 1;
        let s = self.s;
        let key = if s.keys.cold == 0 || self.work.chance(s.keys.hot_per_10k) {
            format!("hot-{}", self.work.below(s.keys.hot as u64))
        } else {
            format!("key-{}", self.work.below(s.keys.cold as u64))
        }
        .into_bytes();
        let (r, w) = s.quorums(&mut self.work);
        let roll = self.work.below(10_000);
        let kind = if roll < s.mix.read_per_10k {
            // One read in ten accepts a value expired up to 1.5 s ago (the peers keep them
            // 1 s in half the seeds): stale-while-revalidate, judged with its window by
            // `expired-read`.
            let stale_ok_ms = if self.stale_reads.chance(1_000) {
                self.stale_reads.between(100, 1_500)
            } else {
                0
            };
            OpKind::Get { r, stale_ok_ms }
        } else if roll < s.mix.read_per_10k + s.mix.delete_per_10k {
            OpKind::Delete { w }
        } else if roll < s.mix.read_per_10k + s.mix.delete_per_10k + s.mix.expire_per_10k {
            let ttl_ms = if self.work.chance(3_333) {
                None
            } else {
                Some(self.work.between(200, 3_000))
            };
            OpKind::Expire { ttl_ms, w }
        } else {
            let ttl_ms = if self.work.chance(s.mix.ttl_per_10k) {
                Some(self.work.between(200, 3_000))
            } else {
                None
            };
            OpKind::Put {
                value: format!("v{}.{}", c, self.issued).into_bytes(),
                ttl_ms,
                w,
                overwrite: false,
            }
        };
        let client = &self.clients[c];
        // Session clients send the context they last saw with every write and read (a read
        // with one is a session read); the others, with a fifth of their writes.
        let context_in = if (kind.is_write() && (client.session || self.work.chance(2_000)))
            || (!kind.is_write() && client.session)
        {
            client.contexts.get(&key).cloned()
        } else {
            None
        };
        let context_in = if kind.is_write() {
            self.forge_context(context_in)
        } else {
            context_in
        };
        // A blind put may be an overwrite (what a Redis client's SET sends).
        let kind = match kind {
            OpKind::Put {
                value, ttl_ms, w, ..
            } => OpKind::Put {
                value,
                ttl_ms,
                w,
                overwrite: context_in.is_none() && self.overwrites.chance(s.mix.overwrite_per_10k),
            },
            other => other,
        };
        let targets: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.left)
            .map(|(n, _)| n.clone())
            .collect();
        let target = self.work.pick(&targets).clone();
        // Some operations become increments of a counter key instead (drawn from their own
        // stream after the workload's draws, so the rest of the workload stays as it was).
        let (key, kind, context_in) = if self.counters.chance(s.mix.increment_per_10k) {
            let key = format!("ctr-{}", self.counters.below(COUNTER_KEYS));
            let by = self.counters.between(1, 5) as i64;
            let by = if self.counters.chance(3_000) { -by } else { by };
            let w = kind.w().unwrap_or(Quorum::Quorum);
            (key.into_bytes(), OpKind::Increment { by, w }, None)
        } else if self.conditionals.chance(s.mix.conditional_per_10k) {
            let key = format!("cas-{}", self.conditionals.below(CONDITIONAL_KEYS)).into_bytes();
            let seen = self.clients[c].cas_seen.get(&key).cloned().flatten();
            let roll = self.conditionals.below(10);
            let condition = match (&seen, roll) {
                (_, 0..=2) | (None, _) => Condition::Absent,
                (Some(v), _) => Condition::Equals(v.clone()),
            };
            // A fifth of the writes that expect a value delete it: the key cycles back to
            // free, and create-only writes race again.
            let value = if roll == 9 && matches!(condition, Condition::Equals(_)) {
                None
            } else {
                Some(format!("c{}.{}", c, self.issued).into_bytes())
            };
            (key, OpKind::Conditional { value, condition }, None)
        } else {
            (key, kind, context_in)
        };
        let conditional = matches!(kind, OpKind::Conditional { .. });
        let history = if conditional {
            &mut self.cas_history
        } else {
            &mut self.history
        };
        let op = history.invoke(
            c as u32,
            key.clone(),
            kind.clone(),
            context_in.clone(),
            self.now,
        );
        if self.peers[&target].node.is_none() {
            // Connection refused: nothing reached the cluster.
            let outcome = Outcome::Failed {
                error: "connection refused".into(),
                definite: true,
            };
            history.complete(op, self.now + 1, outcome);
            let think = 1 + self.work.below(40);
            self.schedule(self.now + think, Event::Issue { client: c });
            return;
        }
        let sloppy = Some(self.sloppy.chance(s.mix.sloppy_per_10k));
        let request = match kind {
            // A session client's read carries the context it last saw: a session read.
            OpKind::Get { r, stale_ok_ms } => ClientRequest::Get {
                key,
                r,
                session: context_in,
                stale_ok_ms,
            },
            OpKind::Put {
                value,
                ttl_ms,
                w,
                overwrite,
            } => ClientRequest::Write(WriteRequest {
                key,
                write: WriteKind::Put { value, ttl_ms },
                context: context_in,
                w,
                sloppy,
                overwrite,
            }),
            OpKind::Delete { w } => ClientRequest::Write(WriteRequest {
                key,
                write: WriteKind::Delete,
                context: context_in,
                w,
                sloppy,
                overwrite: false,
            }),
            OpKind::Expire { ttl_ms, w } => ClientRequest::Write(WriteRequest {
                key,
                write: WriteKind::Expire { ttl_ms },
                context: context_in,
                w,
                sloppy,
                overwrite: false,
            }),
            OpKind::Increment { by, w } => ClientRequest::Write(WriteRequest {
                key,
                write: WriteKind::Increment { by },
                context: None,
                w,
                sloppy,
                overwrite: false,
            }),
            OpKind::Conditional { value, condition } => {
                ClientRequest::Conditional(ConditionalWrite {
                    key,
                    write: match value {
                        Some(value) => WriteKind::Put {
                            value,
                            ttl_ms: None,
                        },
                        None => WriteKind::Delete,
                    },
                    condition,
                })
            }
        };
        let id = self.next_request_id();
        self.clients[c].current = Some((id, op));
        if conditional {
            self.cas_requests.insert(id);
        } else {
            self.request_ops.insert(id, op);
        }
        self.pending.insert(id, Owner::Client(c));
        let travel = 1 + self.work.below(3);
        self.schedule(
            self.now + travel,
            Event::Arrive {
                node: target,
                id,
                request,
            },
        );
        self.schedule(
            self.now + CLIENT_TIMEOUT_MS,
            Event::ClientTimeout { client: c, id },
        );
    }

    fn on_reply(&mut self, id: ClientRequestId, reply: ClientReply) {
        self.trace = fnv(self.trace, format!("{reply:?}").as_bytes());
        match self.pending.remove(&id) {
            Some(Owner::Client(c)) => {
                let Some((current, op)) = self.clients[c].current else {
                    return;
                };
                if current != id {
                    return;
                }
                self.clients[c].current = None;
                let key = self.history_of(id).get(op).key.clone();
                let outcome = match reply {
                    ClientReply::Found { values, context } => Outcome::Read { values, context },
                    ClientReply::NotFound { context } => Outcome::Read {
                        values: Vec::new(),
                        context,
                    },
                    // The counter's value is not judged: it may not count increments
                    // not yet merged at the coordinator (the final sum is).
                    ClientReply::Written { context } | ClientReply::Counted { context, .. } => {
                        Outcome::Written { context }
                    }
                    // A conditional write whose condition failed reports what it read.
                    ClientReply::NotApplied { values, context } => {
                        Outcome::Read { values, context }
                    }
                    ClientReply::Failed(e) => Outcome::Failed {
                        definite: is_definite(&e),
                        error: e.to_string(),
                    },
                };
                if self.cas_requests.remove(&id) {
                    let learnt = match (&outcome, &self.cas_history.get(op).kind) {
                        (Outcome::Written { .. }, OpKind::Conditional { value, .. }) => {
                            Some(value.clone())
                        }
                        (Outcome::Read { values, .. }, _) => {
                            Some(values.last().map(|v| v.data.clone()))
                        }
                        _ => None,
                    };
                    if let Some(learnt) = learnt {
                        self.clients[c].cas_seen.insert(key, learnt);
                    }
                    self.cas_history.complete(op, self.now, outcome);
                    let think = self.work.below(40);
                    self.schedule(self.now + think, Event::Issue { client: c });
                    return;
                }
                if let Some(ctx) = self.history_context(&outcome) {
                    self.clients[c].contexts.insert(key, ctx);
                }
                self.history.complete(op, self.now, outcome);
                let think = self.work.below(40);
                self.schedule(self.now + think, Event::Issue { client: c });
            }
            Some(Owner::Sweep(key, attempts)) => {
                self.sweep_in_flight -= 1;
                let ok = matches!(
                    reply,
                    ClientReply::Found { .. } | ClientReply::NotFound { .. }
                );
                if !ok && attempts < 20 {
                    self.sweep_queue.push_back((key, attempts));
                    self.schedule(self.now + 200, Event::SweepNext);
                } else {
                    self.sweep_next();
                }
            }
            None => {}
        }
    }

    /// The history a client request's operation is recorded in.
    fn history_of(&mut self, id: ClientRequestId) -> &mut History {
        if self.cas_requests.contains(&id) {
            &mut self.cas_history
        } else {
            &mut self.history
        }
    }

    fn history_context(&self, outcome: &Outcome) -> Option<VersionVector> {
        match outcome {
            Outcome::Read { context, .. } | Outcome::Written { context } => Some(context.clone()),
            _ => None,
        }
    }
}

/// Errors after which the write certainly stored nothing.
fn is_definite(e: &RequestError) -> bool {
    matches!(
        e,
        RequestError::QuorumTooLarge { .. }
            | RequestError::EmptyKey
            | RequestError::KeyTooLarge { .. }
            | RequestError::ValueTooLarge { .. }
            // Refused by the coordinator before it stored anything.
            | RequestError::OutOfMemory { .. }
            // An expire that found several values, or none, rewrites nothing.
            | RequestError::Conflict { .. }
            | RequestError::NothingToExpire
            // An increment refused before anything was stored.
            | RequestError::NotAnInteger
            | RequestError::Overflow
    )
}
