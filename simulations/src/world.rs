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
use crate::scenario::{Fault, Scenario, NAMES, NETWORK_STREAM, WORKLOAD_STREAM};
use ringcache::core::config::CoreConfig;
use ringcache::core::membership::{Liveness, MembershipView};
use ringcache::core::message::PeerMessage;
use ringcache::core::node::{Input, Node, Outputs};
use ringcache::core::planted::PlantedBug;
use ringcache::core::request::{ClientReply, ClientRequest, RequestError, WriteKind, WriteRequest};
use ringcache::core::siblings::{Payload, Siblings};
use ringcache::core::types::{ClientRequestId, Millis, NodeId, Quorum};
use ringcache::core::version_vector::VersionVector;
use ringcache::history::check::{
    check, values_of, CheckReport, Circumstances, Convergence, FinalState,
};
use ringcache::history::{History, OpId, OpKind, Outcome};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
/// Read-repair rounds after healing before replicas that still differ count as diverged.
const MAX_SWEEP_ROUNDS: u32 = 5;

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
    node: Option<Node>,
    incarnation: u64,
    paused: bool,
    /// Events that reached the peer while it was paused, handled when it resumes.
    held: Vec<Event>,
    clock: (i64, i64),
    detector: Detector,
    left: bool,
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
    work: Rng,
    net: Rng,
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
    // What the checker needs to know about lost memory.
    values_lost: BTreeSet<Vec<u8>>,
    damaged_keys: BTreeMap<Vec<u8>, Millis>,
    disruptions: Vec<(Millis, Millis)>,
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
        let config = CoreConfig {
            replicas: s.replicas,
            partitions: 64,
            vnodes: 16,
            request_timeout_ms: 500,
            ..CoreConfig::default()
        };
        let mut work = Rng::stream(s.seed, WORKLOAD_STREAM);
        let clients = (0..s.clients)
            .map(|_| Client {
                session: work.chance(s.session_clients_per_10k),
                contexts: BTreeMap::new(),
                current: None,
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
            work,
            net: Rng::stream(s.seed, NETWORK_STREAM),
            active: BTreeMap::new(),
            faults_injected: BTreeMap::new(),
            healed_at: None,
            sweep_queue: VecDeque::new(),
            sweep_in_flight: 0,
            sweep_started: false,
            sweep_rounds: 0,
            quiet_until: None,
            converged_at: None,
            values_lost: BTreeSet::new(),
            damaged_keys: BTreeMap::new(),
            disruptions: Vec::new(),
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
        let mut node = Node::new(name.clone(), incarnation, self.config.clone());
        if let Some(bug) = self.plant {
            node.plant(bug);
        }
        let peer = self.peers.get_mut(name).expect("known peer");
        peer.node = Some(node);
        peer.incarnation = incarnation;
        peer.view = None;
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
                if self.hold_if_paused(&to, incarnation, || Event::Deliver {
                    to: to.clone(),
                    incarnation,
                    from: from.clone(),
                    message: message.clone(),
                }) {
                    return;
                }
                self.feed(&to, Input::Peer { from, message });
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
                self.feed(&node, Input::Client { id, request });
            }
            Event::Reply { id, reply } => self.on_reply(id, reply),
            Event::Issue { client } => self.issue(client),
            Event::ClientTimeout { client, id } => {
                if self.clients[client].current.map(|c| c.0) == Some(id) {
                    let (_, op) = self.clients[client].current.take().expect("checked");
                    self.pending.remove(&id);
                    self.history.complete(op, self.now, Outcome::Unknown);
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

    fn feed(&mut self, node: &NodeId, input: Input) {
        let now = self.local_time(node);
        let mut out = Outputs::default();
        let peer = self.peers.get_mut(node).expect("known peer");
        let Some(n) = peer.node.as_mut() else { return };
        n.handle(now, input, &mut out);
        self.absorb(node, out);
    }

    fn absorb(&mut self, from: &NodeId, out: Outputs) {
        for msg in out.messages {
            self.send(from, msg.to, msg.message);
        }
        for (id, reply) in out.replies {
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
            if let Some(n) = self.peers.get_mut(name).and_then(|p| p.node.as_mut()) {
                n.tick(now, &mut out);
            }
            self.absorb(name, out);
            if since.is_multiple_of(self.s.heartbeat_ms) {
                self.send_heartbeats(name);
            }
            if since.is_multiple_of(DETECTOR_EVERY_MS) {
                self.update_view(name);
            }
        }
        if since.is_multiple_of(DETECTOR_EVERY_MS) && self.healed_at.is_some() {
            self.after_heal_checks();
        }
        self.schedule(self.now + TICK_MS, Event::Tick);
    }

    fn send_heartbeats(&mut self, from: &NodeId) {
        let d = &self.peers[from].detector;
        let members: Vec<NodeId> = d.last_heard.keys().cloned().collect();
        let left: Vec<NodeId> = d.left.iter().cloned().collect();
        for to in members.iter().filter(|m| *m != from) {
            let alive = self.peers.get(to).is_some_and(|p| p.node.is_some());
            if !alive || self.blocked(from, to) || self.net.chance(self.s.net.loss_per_10k) {
                continue;
            }
            let d = self.delay();
            self.schedule(
                self.now + d,
                Event::Heartbeat {
                    to: to.clone(),
                    from: from.clone(),
                    members: members.clone(),
                    left: left.clone(),
                },
            );
        }
    }

    fn on_heartbeat(&mut self, at: &NodeId, from: NodeId, members: Vec<NodeId>, left: Vec<NodeId>) {
        let now = self.now;
        let d = &mut self.peers.get_mut(at).expect("known").detector;
        for l in left {
            d.last_heard.remove(&l);
            d.left.insert(l);
        }
        if !d.left.contains(&from) {
            d.last_heard.insert(from, Some(now));
        }
        for m in members {
            if !d.left.contains(&m) {
                d.last_heard.entry(m).or_insert(None);
            }
        }
    }

    /// Recomputes a peer's membership view and hands it to the core if it changed.
    fn update_view(&mut self, name: &NodeId) {
        let now = self.now;
        let suspect_after = self.s.suspect_after_ms;
        let peer = self.peers.get_mut(name).expect("known");
        let mut view = MembershipView::new();
        for (m, heard) in &peer.detector.last_heard {
            let suspected = peer
                .detector
                .suspected_until
                .get(m)
                .is_some_and(|t| *t > now);
            let up = m == name
                || (!suspected && heard.is_some_and(|h| now.saturating_sub(h) < suspect_after));
            view.set(m.clone(), if up { Liveness::Up } else { Liveness::Down });
        }
        if peer.view.as_ref() == Some(&view) {
            return;
        }
        let ring_changed = peer.view.as_ref().map(|v| v.members()) != Some(view.members());
        peer.view = Some(view.clone());
        self.feed(name, Input::Membership(view));
        if ring_changed {
            self.note_ring_agreement();
        }
    }

    /// Tracks intervals in which running peers place keys on different rings: quorums taken on
    /// different rings need not overlap, so read-your-writes is not promised across them.
    fn note_ring_agreement(&mut self) {
        let mut rings = self
            .peers
            .values()
            .filter(|p| p.node.is_some() && !p.left)
            .map(|p| p.view.as_ref().map(|v| v.members()));
        let first = rings.next().flatten();
        let agree = rings.all(|r| r == first);
        match (agree, self.rings_differ_since) {
            (false, None) => self.rings_differ_since = Some(self.now),
            (true, Some(since)) => {
                self.disruptions.push((since, self.now));
                self.rings_differ_since = None;
            }
            _ => {}
        }
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
            OpKind::Get { r }
        } else if roll < s.mix.read_per_10k + s.mix.delete_per_10k {
            OpKind::Delete { w }
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
            }
        };
        let client = &self.clients[c];
        let context_in = if kind.is_write() && (client.session || self.work.chance(2_000)) {
            client.contexts.get(&key).cloned()
        } else {
            None
        };
        let targets: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.left)
            .map(|(n, _)| n.clone())
            .collect();
        let target = self.work.pick(&targets).clone();
        let op = self.history.invoke(
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
            self.history.complete(op, self.now + 1, outcome);
            let think = 1 + self.work.below(40);
            self.schedule(self.now + think, Event::Issue { client: c });
            return;
        }
        let request = match kind {
            OpKind::Get { r } => ClientRequest::Get { key, r },
            OpKind::Put { value, ttl_ms, w } => ClientRequest::Write(WriteRequest {
                key,
                write: WriteKind::Put { value, ttl_ms },
                context: context_in,
                w,
            }),
            OpKind::Delete { w } => ClientRequest::Write(WriteRequest {
                key,
                write: WriteKind::Delete,
                context: context_in,
                w,
            }),
        };
        let id = self.next_request_id();
        self.clients[c].current = Some((id, op));
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
                let key = self.history.get(op).key.clone();
                let outcome = match reply {
                    ClientReply::Found { values, context } => Outcome::Read { values, context },
                    ClientReply::NotFound { context } => Outcome::Read {
                        values: Vec::new(),
                        context,
                    },
                    ClientReply::Written { context } => Outcome::Written { context },
                    ClientReply::Failed(e) => Outcome::Failed {
                        definite: is_definite(&e),
                        error: e.to_string(),
                    },
                };
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

    fn history_context(&self, outcome: &Outcome) -> Option<VersionVector> {
        match outcome {
            Outcome::Read { context, .. } | Outcome::Written { context } => Some(context.clone()),
            _ => None,
        }
    }

    fn start_fault(&mut self, i: usize) {
        if self.healed_at.is_some() {
            return;
        }
        let fault = self.s.faults[i].fault.clone();
        *self.faults_injected.entry(fault.kind()).or_insert(0) += 1;
        match fault {
            Fault::Partition {
                duration, flap_ms, ..
            } => {
                self.active.insert(i, true);
                if let Some(p) = flap_ms {
                    self.schedule(self.now + p, Event::Flap(i));
                }
                self.schedule(self.now + duration, Event::FaultEnd(i));
            }
            Fault::Crash { node, down_for } => {
                let name = NodeId::from(node);
                if self.peers.get(&name).is_some_and(|p| p.node.is_some()) {
                    self.lose_memory(&name);
                    let peer = self.peers.get_mut(&name).expect("checked");
                    peer.node = None;
                    peer.paused = false;
                    peer.held.clear();
                    self.note_ring_agreement();
                    self.active.insert(i, true);
                    self.schedule(self.now + down_for, Event::FaultEnd(i));
                }
            }
            Fault::Pause { node, duration } => {
                let name = NodeId::from(node);
                if let Some(p) = self.peers.get_mut(&name) {
                    if p.node.is_some() && !p.paused {
                        p.paused = true;
                        self.active.insert(i, true);
                        self.schedule(self.now + duration, Event::FaultEnd(i));
                    }
                }
            }
            Fault::FalseSuspicion {
                observer,
                suspect,
                duration,
            } => {
                let until = self.now + duration;
                if let Some(p) = self.peers.get_mut(&NodeId::from(observer)) {
                    p.detector
                        .suspected_until
                        .insert(NodeId::from(suspect), until);
                }
            }
            Fault::Join { node } => {
                let name = NodeId::from(node);
                if self.peers.contains_key(&name) {
                    return;
                }
                let index = NAMES.iter().position(|n| *n == name.as_str()).unwrap_or(0);
                let mut detector = Detector::default();
                for (other, p) in &self.peers {
                    if !p.left {
                        // Seeds: known, not yet heard from.
                        detector.last_heard.insert(other.clone(), None);
                    }
                }
                self.peers.insert(
                    name.clone(),
                    Peer {
                        node: None,
                        incarnation: 0,
                        paused: false,
                        held: Vec::new(),
                        clock: self.s.clocks[index],
                        detector,
                        left: false,
                        view: None,
                    },
                );
                self.boot(&name);
                self.send_heartbeats(&name);
            }
            Fault::Leave { node } => {
                let name = NodeId::from(node);
                let leaving = self
                    .peers
                    .get(&name)
                    .is_some_and(|p| p.node.is_some() && !p.left && !p.paused);
                if !leaving {
                    return;
                }
                self.peers
                    .get_mut(&name)
                    .expect("checked")
                    .detector
                    .left
                    .insert(name.clone());
                self.send_heartbeats(&name);
                self.lose_memory(&name);
                let peer = self.peers.get_mut(&name).expect("checked");
                peer.left = true;
                peer.node = None;
                self.note_ring_agreement();
            }
        }
    }

    fn end_fault(&mut self, i: usize) {
        if self.active.remove(&i).is_none() {
            return;
        }
        match &self.s.faults[i].fault {
            Fault::Crash { node, .. } => {
                let name = NodeId::from(node.as_str());
                if self.peers[&name].node.is_none() && !self.peers[&name].left {
                    let d = &mut self.peers.get_mut(&name).expect("known").detector;
                    for heard in d.last_heard.values_mut() {
                        *heard = None;
                    }
                    self.boot(&name);
                }
            }
            Fault::Pause { node, .. } => self.resume(&NodeId::from(node.as_str())),
            _ => {}
        }
    }

    fn resume(&mut self, name: &NodeId) {
        let Some(peer) = self.peers.get_mut(name) else {
            return;
        };
        if !peer.paused {
            return;
        }
        peer.paused = false;
        let held = std::mem::take(&mut peer.held);
        for event in held {
            self.dispatch(event);
        }
    }

    /// A peer is about to lose its memory: note what the cluster loses with it.
    fn lose_memory(&mut self, victim: &NodeId) {
        self.disruptions.push((self.now, self.now));
        let Some(node) = self.peers[victim].node.as_ref() else {
            return;
        };
        self.read_repairs_of_gone_nodes += node.read_repairs();
        let mut lost_values = Vec::new();
        let mut damaged = Vec::new();
        for (key, state) in node.store().iter() {
            let mut others = Siblings::new();
            for (name, p) in &self.peers {
                if name == victim {
                    continue;
                }
                if let Some(n) = &p.node {
                    if let Some(s) = n.store().get(n.ring().partition_of(key), key) {
                        others.merge(s);
                    }
                }
            }
            if others.context().descends_from(state.context()) {
                continue;
            }
            damaged.push(key.clone());
            for (dot, payload) in state.versions() {
                if let Payload::Value { data, .. } = payload {
                    if !others.context().covers(dot) {
                        lost_values.push(data.clone());
                    }
                }
            }
        }
        for key in damaged {
            self.damaged_keys.insert(key, self.now);
        }
        self.values_lost.extend(lost_values);
    }

    fn heal(&mut self) {
        self.healed_at = Some(self.now);
        let active: Vec<usize> = self.active.keys().copied().collect();
        for i in active {
            self.end_fault(i);
        }
        self.active.clear();
        for p in self.peers.values_mut() {
            p.detector.suspected_until.clear();
        }
    }

    /// After healing: start the repair sweep once every peer sees every peer, and watch for
    /// convergence.
    fn after_heal_checks(&mut self) {
        if !self.sweep_started && self.views_agree() {
            self.sweep_started = true;
            let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
            for op in self.history.ops() {
                keys.insert(op.key.clone());
            }
            self.sweep_queue = keys.into_iter().map(|k| (k, 0)).collect();
            for _ in 0..SWEEP_PARALLEL {
                self.sweep_next();
            }
        }
        if self.converged_at.is_none() && self.sweep_started && self.replicas_agree().is_empty() {
            self.converged_at = Some(self.now);
        }
        let healed = self.healed_at.expect("after heal");
        if !self.sweep_started && self.now > healed + SETTLE_LIMIT_MS {
            // Views never agreed; stop and let the checker report non-convergence.
            self.quiet_until = Some(self.now);
        }
    }

    /// Every running peer holds the same view, in which exactly the running peers are up.
    /// (A peer that left while its announcement was cut off stays a member marked down, as a
    /// crashed one does.)
    fn views_agree(&self) -> bool {
        let running: BTreeSet<NodeId> = self.running().into_iter().collect();
        let views: Vec<Option<&MembershipView>> = self
            .peers
            .values()
            .filter(|p| p.node.is_some() && !p.left)
            .map(|p| p.view.as_ref())
            .collect();
        let Some(Some(first)) = views.first() else {
            return false;
        };
        views.iter().all(|v| *v == Some(*first))
            && first
                .iter()
                .all(|(m, l)| (l == Liveness::Up) == running.contains(m))
            && running.iter().all(|m| first.is_up(m))
    }

    fn sweep_next(&mut self) {
        if !self.sweep_started {
            return;
        }
        while self.sweep_in_flight < SWEEP_PARALLEL {
            let Some((key, attempts)) = self.sweep_queue.pop_front() else {
                break;
            };
            let running = self.running();
            let at = self.work.pick(&running).clone();
            let id = self.next_request_id();
            self.pending
                .insert(id, Owner::Sweep(key.clone(), attempts + 1));
            self.sweep_in_flight += 1;
            // R = one answers at once but, like every read, waits for all live replicas
            // before it repairs them; replicas that are down are not asked.
            let request = ClientRequest::Get {
                key,
                r: Quorum::One,
            };
            self.schedule(
                self.now + 1,
                Event::Arrive {
                    node: at,
                    id,
                    request,
                },
            );
        }
        if self.sweep_queue.is_empty() && self.sweep_in_flight == 0 && self.quiet_until.is_none() {
            // Let repairs land, then look again: a repair message can be lost like any other.
            let settle = 2 * self.config.request_timeout_ms;
            self.schedule(self.now + settle, Event::SweepRound);
        }
    }

    /// The end of a sweep round: stop if replicas agree, else sweep the keys that differ.
    fn sweep_round(&mut self) {
        if self.sweep_in_flight > 0 || !self.sweep_queue.is_empty() || self.quiet_until.is_some() {
            return;
        }
        self.sweep_rounds += 1;
        let diverged = self.replicas_agree();
        if diverged.is_empty() || self.sweep_rounds >= MAX_SWEEP_ROUNDS {
            self.quiet_until = Some(self.now);
            return;
        }
        self.sweep_queue = diverged.into_iter().map(|k| (k, 0)).collect();
        self.sweep_next();
    }

    /// Keys whose replicas (by the ring every peer now shares) hold different states.
    fn replicas_agree(&self) -> Vec<Vec<u8>> {
        let Some(reference) = self
            .peers
            .values()
            .find(|p| p.node.is_some() && !p.left)
            .and_then(|p| p.node.as_ref())
        else {
            return Vec::new();
        };
        let mut keys: BTreeSet<&[u8]> = BTreeSet::new();
        for op in self.history.ops() {
            keys.insert(&op.key);
        }
        let mut diverged = Vec::new();
        for key in keys {
            let partition = reference.ring().partition_of(key);
            let mut first: Option<Option<&Siblings>> = None;
            for owner in reference.ring().replicas_of(key) {
                let Some(node) = self
                    .peers
                    .get(owner)
                    .filter(|p| !p.left)
                    .and_then(|p| p.node.as_ref())
                else {
                    continue; // a member that is gone holds nothing to compare
                };
                let state = node.store().get(partition, key);
                match first {
                    None => first = Some(state),
                    Some(f) if f != state => {
                        diverged.push(key.to_vec());
                        break;
                    }
                    _ => {}
                }
            }
        }
        diverged
    }

    fn finish(mut self) -> RunResult {
        let healed_at = self.healed_at.unwrap_or(self.now);
        let diverged = self.replicas_agree();
        let keys_touched: BTreeSet<Vec<u8>> =
            self.history.ops().iter().map(|o| o.key.clone()).collect();
        // Views agree within the settle limit; each sweep round reads every key once (a read
        // takes at most one request timeout) and then waits two timeouts for repairs to land.
        let timeout = self.config.request_timeout_ms;
        let round_ms = (keys_touched.len().div_ceil(SWEEP_PARALLEL) as u64) * timeout + 2 * timeout;
        let bound_ms = SETTLE_LIMIT_MS + MAX_SWEEP_ROUNDS as u64 * round_ms;
        let convergence = Convergence {
            took_ms: self.converged_at.map(|t| t - healed_at),
            bound_ms,
            diverged_keys: diverged,
        };
        if let Some(since) = self.rings_differ_since.take() {
            self.disruptions.push((since, self.now));
        }
        let divergence = convergence
            .diverged_keys
            .first()
            .map(|k| self.describe_key(k));
        let final_state = self.final_state(&keys_touched);
        let circumstances = Circumstances {
            replicas: self.s.replicas,
            clock_uncertainty_ms: self.s.clock_uncertainty_ms(self.now),
            values_lost_to_crashes: self.values_lost.clone(),
            damaged_keys: self.damaged_keys.clone(),
            disruptions: self.disruptions.clone(),
            convergence: Some(convergence.clone()),
        };
        let report = check(&self.history, &final_state, &circumstances);
        let latencies = self
            .history
            .ops()
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Read { .. } | Outcome::Written { .. }))
            .filter_map(|o| o.completed_at.map(|c| c - o.invoked_at))
            .collect();
        let read_repairs = self.read_repairs_of_gone_nodes
            + self
                .peers
                .values()
                .filter_map(|p| p.node.as_ref())
                .map(|n| n.read_repairs())
                .sum::<u64>();
        self.trace = fnv(self.trace, format!("{:?}", self.history).as_bytes());
        RunResult {
            history: self.history,
            check: report,
            faults_injected: self.faults_injected,
            trace_hash: self.trace,
            latencies,
            convergence,
            read_repairs,
            sim_ms: self.now - START,
            messages: self.messages,
            divergence,
        }
    }

    fn describe_key(&self, key: &[u8]) -> String {
        let mut out = format!(
            "key {} after {} sweep rounds (sweep started: {}, in flight: {}, queued: {}, views agree: {}, now {}):",
            String::from_utf8_lossy(key),
            self.sweep_rounds,
            self.sweep_started,
            self.sweep_in_flight,
            self.sweep_queue.len(),
            self.views_agree(),
            self.now,
        );
        for (name, p) in &self.peers {
            let Some(n) = &p.node else { continue };
            let owner = n.ring().replicas_of(key).contains(name);
            let state = n.store().get(n.ring().partition_of(key), key);
            let view: Vec<String> = n.view().iter().map(|(m, l)| format!("{m}:{l:?}")).collect();
            out += &format!(
                "\n  {name} owner={owner} view=[{}] state={state:?}",
                view.join(" ")
            );
        }
        out
    }

    /// The merged state of each key's replicas. Data only a non-replica holds (left behind
    /// by a ring change: the cluster has no handoff yet) is unreadable, so it counts as lost
    /// to the disruption that stranded it.
    fn final_state(&mut self, keys: &BTreeSet<Vec<u8>>) -> FinalState {
        let mut fin = FinalState {
            keys: BTreeMap::new(),
            at: self.now,
        };
        let last_disruption = self.disruptions.iter().map(|(_, to)| *to).max();
        let nodes: Vec<&Node> = self
            .peers
            .values()
            .filter(|p| !p.left)
            .filter_map(|p| p.node.as_ref())
            .collect();
        let Some(reference) = nodes.first() else {
            return fin;
        };
        let mut stranded = Vec::new();
        for key in keys {
            let partition = reference.ring().partition_of(key);
            let owners = reference.ring().replicas_of(key);
            let mut on_owners = Siblings::new();
            let mut anywhere = Siblings::new();
            for n in &nodes {
                if let Some(s) = n.store().get(partition, key) {
                    anywhere.merge(s);
                    if owners.contains(n.id()) {
                        on_owners.merge(s);
                    }
                }
            }
            if !on_owners.context().descends_from(anywhere.context()) {
                if let Some(t) = last_disruption {
                    stranded.push((key.clone(), t));
                    for (dot, payload) in anywhere.versions() {
                        if let Payload::Value { data, .. } = payload {
                            if !on_owners.context().covers(dot) {
                                self.values_lost.insert(data.clone());
                            }
                        }
                    }
                }
            }
            fin.keys.insert(key.clone(), values_of(&on_owners));
        }
        for (key, t) in stranded {
            let entry = self.damaged_keys.entry(key).or_insert(t);
            *entry = (*entry).max(t);
        }
        fin
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
    )
}
