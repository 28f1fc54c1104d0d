//! The drivers: one per engine shard, each owning one [`Node`] and feeding it the world.
//!
//! A peer's keyspace is split into shards by partition (`ring::shard_of_key`), so the cores of
//! a machine serve at once. Each shard's core sits behind a lock ([`Shard`]). A client request
//! is run on the task it arrived on ([`DriverHandle`] deals requests by key), and a peer message
//! of the request path on the transport task that read it, waiting if need be for another such
//! event to let go of the lock: no hand-off between tasks on the request path. Batches
//! (anti-entropy, handoff, hints), and whatever arrives while the driver task holds the lock or
//! waits for it, are queued for the shard's driver task instead, which also
//! `select!`s over commands, failed sends, a tick timer and gossip's membership view; a router
//! task deals queued peer messages to shards (`PeerMessage::shard`). Whoever ran the core
//! carries out what it asked once the lock is let go: messages go to [`PeerTransport`] (queued,
//! so a slow peer never stalls anyone), replies go back to the waiting client. This is the only
//! place the wall clock reaches the core.
//!
//! Every client request comes with a trace id (made by the API layer) that the core puts on
//! each message sent for it; a peer message that arrived with one is handled inside a
//! `peer_message` span carrying it (`trace_id`), and logged at debug under the target
//! [`TRACE_TARGET`], so `RUST_LOG=ringcache::trace=debug` shows every peer a request
//! touched.

use crate::core::message::PeerMessage;
use crate::core::node::{
    Completion, HandoffProgress, Input, Node, NodeStats, Outgoing, Outputs, ReplicaTiming,
};
use crate::core::request::{ClientReply, ClientRequest, RequestError};
use crate::core::ring::{shard_of_key, PartitionId};
use crate::core::siblings::Siblings;
use crate::core::types::{ClientRequestId, Millis, NodeId, TraceId};
use crate::shell::gossip::{ClusterView, Gossip};
use crate::shell::hot_keys::{Access, HotKey, HotKeys};
use crate::shell::pubsub::PubSub;
use crate::shell::transport::{Inbound, PeerTransport};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How often deadlines are checked; requests fail at most this late.
const TICK: Duration = Duration::from_millis(20);
/// How often gossip's view is read into the core.
const VIEW_POLL: Duration = Duration::from_millis(100);
/// How many times an inline event tries its shard's lock before it sleeps on it: about one
/// request's hold (a few microseconds). Trying costs about what sleeping does (measured: the
/// same CPU per request), but a try can see the driver's turn and give way, a sleeper cannot.
const INLINE_TRIES: usize = 200;
/// How many waiting request-path events a driver serves after each event, before it turns to
/// what else is queued (see [`Driver::serve_waiting`]).
const WAITING_BURST: usize = 64;
/// Request-path peer messages a shard queues during the driver's turn; more are shed.
const URGENT_QUEUE: usize = 16_384;

/// The log target of request tracing: what each peer did for a traced request (at debug).
pub const TRACE_TARGET: &str = "ringcache::trace";

/// Milliseconds since the Unix epoch: the cluster's shared clock for expiry.
pub fn wall_clock_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// What the HTTP layer can ask the driver.
pub enum Command {
    Request {
        request: ClientRequest,
        /// Names the request in every peer message sent for it and in the log lines.
        trace: TraceId,
        reply: oneshot::Sender<Answer>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    /// This shard's own stored state of a key, for `GET /v1/local/{key}`.
    Local {
        key: Vec<u8>,
        reply: oneshot::Sender<LocalState>,
    },
    /// Leave the cluster: take this peer off the ring and hand every partition off.
    Leave,
    /// Up to `limit` live keys of this shard with ring positions in `from..=to`, in ring
    /// order (more when the last position holds several keys: a page never splits a
    /// position, so a cursor at the next position misses none), for RESP's SCAN.
    LiveKeys {
        from: u64,
        to: u64,
        limit: usize,
        reply: oneshot::Sender<Vec<(u64, Vec<u8>)>>,
    },
    /// Every partition's preference list, in partition order (for `GET /v1/ring`).
    Ring {
        reply: oneshot::Sender<Vec<Vec<NodeId>>>,
    },
}

/// What a client request came to: the core's reply, and how long each replica asked for it
/// took to answer (see `core::node::ReplicaTiming`), for the slow-request log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub reply: ClientReply,
    pub replicas: Vec<ReplicaTiming>,
}

impl Answer {
    fn failed(error: RequestError) -> Answer {
        Answer {
            reply: ClientReply::Failed(error),
            replicas: Vec::new(),
        }
    }
}

/// One page of a scan over this peer's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    pub keys: Vec<Vec<u8>>,
    /// The ring position to go on from; `0` once the whole ring was covered.
    pub next: u64,
}

/// The partition holding ring position `position`, as its first and last positions.
fn partition_span(position: u64, partitions: u32) -> (u32, u64, u64) {
    let bits = partitions.trailing_zeros();
    if bits == 0 {
        return (0, 0, u64::MAX);
    }
    let shift = 64 - bits;
    let partition = position >> shift;
    let start = partition << shift;
    (partition as u32, start, start | ((1u64 << shift) - 1))
}

/// One peer's own copy of a key, without coordination: what its store holds (tombstones and
/// expired values included) and whether its ring makes it one of the key's replicas.
#[derive(Clone, Debug)]
pub struct LocalState {
    pub id: NodeId,
    pub replica: bool,
    pub state: Option<Siblings>,
}

/// A snapshot for `GET /v1/cluster`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub id: NodeId,
    pub replicas: usize,
    pub partitions: u32,
    /// Virtual nodes per peer: with `partitions`, `replicas` and the members, what a client
    /// needs to place keys on the ring itself (`client::ClusterClient`).
    pub vnodes: u32,
    pub keys: usize,
    /// Reads, store and repair counters for `GET /v1/stats`.
    pub stats: NodeStats,
    pub members: ClusterView,
    /// Per member: partitions held as first replica, and as any replica.
    pub ownership: Vec<Ownership>,
    /// Whether this peer is leaving the cluster (summed over shards: once every one is).
    pub leaving: bool,
    /// Partitions this peer is handing off to their new replicas, with progress.
    pub handoff: Vec<HandoffProgress>,
    /// Keys this peer has handed off since start.
    pub keys_handed_off: u64,
    /// Partitions this peer gained in a ring change and is still filling (moving in): its
    /// answers for them count toward a read's R only once every replica answered.
    pub partitions_moving_in: Vec<PartitionId>,
    /// Seconds until the handoff is done at the anti-entropy budget, if one is going on.
    pub handoff_eta_secs: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::partition_span;

    #[test]
    fn partition_spans_tile_the_ring() {
        assert_eq!(partition_span(12345, 1), (0, 0, u64::MAX));
        assert_eq!(partition_span(0, 4), (0, 0, (1 << 62) - 1));
        assert_eq!(partition_span(u64::MAX, 4), (3, 3 << 62, u64::MAX));
        let (p, start, end) = partition_span(1 << 62, 4);
        assert_eq!((p, start, end), (1, 1 << 62, (2 << 62) - 1));
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Ownership {
    pub node: NodeId,
    pub primary_partitions: PartitionId,
    pub replica_partitions: PartitionId,
}

/// A cheap, cloneable way to talk to the drivers: one shared allocation, so the clone every
/// HTTP request makes is a reference count, not a copy of every shard's sender.
#[derive(Clone)]
pub struct DriverHandle {
    shared: Arc<DriverShared>,
}

impl std::ops::Deref for DriverHandle {
    type Target = DriverShared;

    fn deref(&self) -> &DriverShared {
        &self.shared
    }
}

/// What every [`DriverHandle`] shares.
pub struct DriverShared {
    shards: Vec<Arc<Shard>>,
    partitions: u32,
    gossip: Arc<Gossip>,
    /// Turns true once this peer is leaving: only after every shard has its `Leave` queued,
    /// so whoever sees it true and then asks a shard anything is answered by a leaving node.
    leaving: watch::Sender<bool>,
    /// Runs the leave once (announce it, queue `Leave` on every shard); a second caller waits
    /// until the first one's leave is under way.
    leave_started: Arc<tokio::sync::OnceCell<()>>,
    /// The keys clients ask this peer about most.
    hot_keys: HotKeys,
    /// This peer's name (`None` only for a peer of no shard).
    id: Option<NodeId>,
    /// Peer messages dropped because a queue of their shard was full.
    peer_messages_shed: Arc<AtomicU64>,
}

impl DriverHandle {
    /// Runs a client request on the shard that holds its key; `trace` names it in the peer
    /// messages sent for it.
    pub async fn request(&self, request: ClientRequest, trace: &TraceId) -> Answer {
        let access = match &request {
            ClientRequest::Get { .. } => Access::Read,
            ClientRequest::Write(_) | ClientRequest::Conditional(_) => Access::Write,
        };
        let key = request.key();
        self.hot_keys
            .observe(key, access, std::time::Instant::now());
        let shard =
            &self.shards[shard_of_key(key, self.partitions, self.shards.len() as u32) as usize];
        let rx = match shard.offer_request(request, trace) {
            RequestOffer::Answered(answer) => return answer,
            RequestOffer::Waiting(rx) => rx,
            RequestOffer::Busy(request) => {
                let (reply, rx) = oneshot::channel();
                let command = Command::Request {
                    request,
                    trace: trace.clone(),
                    reply,
                };
                if shard.commands.send(command).await.is_err() {
                    return Answer::failed(RequestError::ShuttingDown);
                }
                rx
            }
        };
        rx.await
            .unwrap_or(Answer::failed(RequestError::ShuttingDown))
    }

    /// This peer's name while every shard still runs, without asking them anything (what
    /// `/health` needs: it must stay cheap however busy the shards are); `None` once stopping.
    pub fn running_as(&self) -> Option<&NodeId> {
        if self.shards.iter().any(|s| s.commands.is_closed()) {
            return None;
        }
        self.id.as_ref()
    }

    /// Peer messages shed so far because a queue of their shard was full.
    pub fn peer_messages_shed(&self) -> u64 {
        self.peer_messages_shed.load(Ordering::Relaxed)
    }

    /// Every partition's preference list as this peer's ring has it; `None` while stopping.
    pub async fn ring(&self) -> Option<Vec<Vec<NodeId>>> {
        let (tx, rx) = oneshot::channel();
        self.shards
            .first()?
            .commands
            .send(Command::Ring { reply: tx })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// The keys clients asked this peer about most, over the last one to two minutes.
    pub fn hot_keys(&self, limit: usize) -> Vec<HotKey> {
        self.hot_keys.top(limit)
    }

    /// This peer's own state of `key`, from the shard that holds it; `None` while stopping.
    pub async fn local(&self, key: Vec<u8>) -> Option<LocalState> {
        let shard = shard_of_key(&key, self.partitions, self.shards.len() as u32) as usize;
        let (tx, rx) = oneshot::channel();
        self.shards[shard]
            .commands
            .send(Command::Local { key, reply: tx })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// The peer's status: the first shard's view of the cluster, keys and stats summed over
    /// every shard.
    pub async fn status(&self) -> Option<Status> {
        let mut merged: Option<Status> = None;
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            shard
                .commands
                .send(Command::Status { reply: tx })
                .await
                .ok()?;
            let status = rx.await.ok()?;
            match merged.as_mut() {
                None => merged = Some(status),
                Some(m) => {
                    m.keys += status.keys;
                    m.leaving &= status.leaving;
                    m.stats.add(&status.stats);
                    m.handoff.extend(status.handoff);
                    m.keys_handed_off += status.keys_handed_off;
                    m.partitions_moving_in.extend(status.partitions_moving_in);
                    m.handoff_eta_secs = match (m.handoff_eta_secs, status.handoff_eta_secs) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        merged
    }

    /// Live keys this peer holds, from ring position `cursor` on: at least `count` unless the
    /// ring's end comes first (a few more when keys share a position), walking partitions in
    /// ring order and asking each partition's shard. A scan from 0 that follows `next` until it
    /// is 0 again lists every key held from start to end exactly once, in ring order; keys
    /// written or removed meanwhile may or may not appear, as with Redis's SCAN. At most
    /// `max_partitions` partitions are visited per call, so one call's cost stays bounded
    /// on a sparse store. `None` while stopping.
    pub async fn scan(&self, cursor: u64, count: usize, max_partitions: usize) -> Option<ScanPage> {
        let mut keys = Vec::new();
        let mut from = cursor;
        for _ in 0..max_partitions.max(1) {
            let (partition, _, end) = partition_span(from, self.partitions);
            let shard = (partition % self.shards.len() as u32) as usize;
            let (tx, rx) = oneshot::channel();
            let limit = count.saturating_sub(keys.len()).max(1);
            self.shards[shard]
                .commands
                .send(Command::LiveKeys {
                    from,
                    to: end,
                    limit,
                    reply: tx,
                })
                .await
                .ok()?;
            let page = rx.await.ok()?;
            let full = page.len() >= limit;
            let last = page.last().map(|(position, _)| *position);
            keys.extend(page.into_iter().map(|(_, key)| key));
            from = match last {
                // The shard stopped at its limit: go on after the last position it gave.
                Some(position) if full => position.wrapping_add(1),
                _ => end.wrapping_add(1),
            };
            if from == 0 || keys.len() >= count {
                break;
            }
        }
        Some(ScanPage { keys, next: from })
    }

    /// Starts leaving the cluster: gossip tells the other peers, which take this one off their
    /// rings, and every shard hands its partitions to their new replicas. Idempotent; returns
    /// (and [`DriverHandle::leaving`] turns true) only once every shard has its `Leave`
    /// queued, so a status asked for afterwards shows the handoff.
    ///
    /// Why the order matters: `serve` waits on [`DriverHandle::leaving`] and then polls the
    /// status until no partition is left to hand off. Turned true before the shards had their
    /// `Leave`, it let that first status arrive ahead of it, find nothing planned, and stop
    /// the peer with all its data — while its announcement had not yet left by gossip, so the
    /// others kept it on their rings as a peer that is down and never restored its copies.
    pub async fn leave(&self) {
        self.leave_started
            .get_or_init(|| async {
                tracing::info!("leaving the cluster: handing every partition off");
                self.gossip.announce_leaving().await;
                for shard in &self.shards {
                    let _ = shard.commands.send(Command::Leave).await;
                }
            })
            .await;
        self.leaving.send_replace(true);
    }

    /// Whether this peer is leaving (turns true once every shard was told; see
    /// [`DriverHandle::leave`]).
    pub fn leaving(&self) -> watch::Receiver<bool> {
        self.leaving.subscribe()
    }
}

/// Starts one driver per node (shard) and the router that deals inbound messages to them.
///
/// Pub/sub messages from other peers skip the shards: the router hands them to `pubsub`, and
/// a fan-out task carries what is published here to the other live peers.
pub fn spawn_shards(
    nodes: Vec<Node>,
    gossip: Arc<Gossip>,
    transport: PeerTransport,
    mut inbound: mpsc::Receiver<Inbound>,
    shutdown: watch::Receiver<bool>,
    pubsub: PubSub,
) -> (DriverHandle, Vec<tokio::task::JoinHandle<()>>) {
    let partitions = nodes.first().map(|n| n.config().partitions).unwrap_or(1);
    let count = nodes.len() as u32;
    let nodes_id = nodes.first().map(|n| n.id().clone());
    let mut shards = Vec::new();
    let mut inboxes = Vec::new();
    let mut tasks = Vec::new();
    // One poller reads gossip's view and publishes it, so every shard sees the same view.
    let (view_tx, view_rx) = watch::channel(ClusterView::default());
    let mut poll_stop = shutdown.clone();
    let handle_gossip = gossip.clone();
    tasks.push(tokio::spawn(async move {
        let mut poll = tokio::time::interval(VIEW_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    let view = gossip.view().await;
                    view_tx.send_if_modified(|current| {
                        let changed = *current != view;
                        if changed {
                            *current = view;
                        }
                        changed
                    });
                }
                changed = poll_stop.changed() => {
                    let stopping = changed.is_err() || *poll_stop.borrow();
                    if stopping {
                        break;
                    }
                }
            }
        }
    }));
    if let Some(first) = nodes.first() {
        tasks.push(pubsub.start_fan_out(
            first.id().clone(),
            transport.clone(),
            view_rx.clone(),
            shutdown.clone(),
        ));
    }
    let peer_messages_shed = Arc::new(AtomicU64::new(0));
    for node in nodes {
        let (inbox_tx, inbox_rx) = mpsc::channel(65_536);
        let (shard, task) = Driver::spawn(
            node,
            view_rx.clone(),
            transport.clone(),
            inbox_rx,
            peer_messages_shed.clone(),
            shutdown.clone(),
        );
        shards.push(shard);
        inboxes.push(inbox_tx);
        tasks.push(task);
    }
    // A request-path message is handled on the stream task that read it unless it is its
    // shard's driver's turn, and waits in the shard's own queue of them then; every other message goes by
    // the router below. Weak: the transport keeps no shard alive.
    let inline_shards: Vec<std::sync::Weak<Shard>> = shards.iter().map(Arc::downgrade).collect();
    transport.handle_inline(Box::new(move |inbound: Inbound| {
        offer_inbound(&inline_shards, partitions, inbound)
    }));
    let mut stop = shutdown;
    let shed_by_router = peer_messages_shed.clone();
    let id = nodes_id;
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                received = inbound.recv() => {
                    let Some(received) = received else { break };
                    if let PeerMessage::Publish { stream, seq, channel, payload } = received.message {
                        pubsub.deliver_from_peer(&received.from, (stream, seq), channel, payload);
                        continue;
                    }
                    // Never wait on one shard's full inbox: every other shard's messages
                    // would wait behind it. A message shed here is a message the network lost,
                    // which every protocol already survives (timeouts, retries, repair).
                    let shard = received.message.shard(partitions, count) as usize;
                    match inboxes[shard].try_send(received) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            note_shed(&shed_by_router, "shard inbox full");
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
                changed = stop.changed() => {
                    let stopping = changed.is_err() || *stop.borrow();
                    if stopping {
                        break;
                    }
                }
            }
        }
    }));
    let (leaving, _) = watch::channel(false);
    (
        DriverHandle {
            shared: Arc::new(DriverShared {
                shards,
                partitions,
                gossip: handle_gossip,
                leaving,
                leave_started: Arc::new(tokio::sync::OnceCell::new()),
                hot_keys: HotKeys::new(std::time::Instant::now()),
                id,
                peer_messages_shed,
            }),
        },
        tasks,
    )
}

/// One shard's core and what it owes, behind its [`Shard`]'s lock.
struct ShardCore {
    node: Node,
    /// The clients waiting on this shard, by the number the core knows their request by.
    pending: HashMap<ClientRequestId, oneshot::Sender<Answer>>,
    next_client: u64,
    /// Gossip's view as the core last saw it: where each peer's messages go.
    view: ClusterView,
    /// Set once the driver has stopped: nothing more is handled and every waiter was answered.
    stopped: bool,
}

/// One engine shard: its core behind a lock that whoever has something for it takes.
///
/// A client request, or a peer message of the request path (see [`PeerMessage::is_request_path`]), is handled
/// on the task it arrived on (*inline*): no hand-off to another task, and no wake-up at all
/// for a request the core answers at once (a read of the local copy, a write with W=1).
///
/// Who waits for whom:
/// - An inline event that finds the lock held by another inline event waits for it (a few
///   microseconds: the core never awaits, and lets go after one event): it tries again for
///   about that long, then sleeps on the lock, blocking its thread. Queueing it for the driver
///   instead costs more than the wait: a channel send, a wake-up of the driver task on another
///   thread, and one of the caller when the answer comes back. Measured on one peer under
///   RESP SET, half the requests went that way.
/// - While the driver task holds the lock or waits for it (`driver_turn`), inline events queue
///   for it instead: its events (the tick, a batch, a status) may take longer than one
///   request, and a stream of inline events never starves it. An inline event checks the
///   turn on every try; one that went to sleep on the lock just before the driver asked may
///   wait for one driver event too (rare: it takes a hold of more than its tries, and the
///   driver asking in that moment).
///
/// The lock is held only while the core handles one event and its outputs are sorted;
/// messages are encoded and queued, and clients answered, after it is let go.
pub struct Shard {
    core: std::sync::Mutex<ShardCore>,
    /// Set while the driver task waits for the lock or holds it: inline events then queue
    /// for it rather than wait.
    driver_turn: std::sync::atomic::AtomicBool,
    /// The driver task's queue: client requests that came in the driver's turn, and every command
    /// that is not a request. Closed once the driver task has ended.
    commands: mpsc::Sender<Command>,
    /// Request-path peer messages that came in the driver's turn: the driver serves them, like the
    /// client requests in `commands`, right after the event in hand (see
    /// [`Driver::serve_waiting`]), not behind every batch queued before them.
    urgent: mpsc::Sender<Inbound>,
    /// Peer messages dropped because a queue was full (shared with the router).
    shed: Arc<AtomicU64>,
    transport: PeerTransport,
    undeliverable_tx: mpsc::UnboundedSender<(NodeId, u64)>,
}

/// A core's outputs, sorted under the lock, to be carried out once it is let go.
#[derive(Default)]
struct Deliveries {
    answers: Vec<(oneshot::Sender<Answer>, Answer)>,
    /// The answer to a request no task waits on yet: the one the event itself brought, run
    /// inline (see [`ShardCore::client_request_here`]).
    unclaimed: Option<(ClientRequestId, Answer)>,
    /// Each message with its peer's address, `None` when gossip knows none.
    sends: Vec<(Outgoing, Option<std::net::SocketAddr>)>,
}

impl ShardCore {
    /// Runs `input` through the core and sorts what it asks for.
    fn handle(&mut self, input: Input) -> Deliveries {
        let mut out = Outputs::default();
        match traced_span(&input) {
            Some(span) => span.in_scope(|| {
                tracing::debug!(target: TRACE_TARGET, "peer message");
                self.node.handle(wall_clock_ms(), input, &mut out);
            }),
            None => self.node.handle(wall_clock_ms(), input, &mut out),
        }
        self.sort(out)
    }

    /// Takes a client request: its waiter is answered once the core replies.
    fn client_request(
        &mut self,
        request: ClientRequest,
        trace: TraceId,
        reply: oneshot::Sender<Answer>,
    ) -> Deliveries {
        let id = self.fresh_client_id();
        self.pending.insert(id, reply);
        self.handle(Input::Client {
            id,
            request,
            trace: Some(trace),
        })
    }

    fn fresh_client_id(&mut self) -> ClientRequestId {
        self.next_client += 1;
        ClientRequestId(self.next_client)
    }

    /// Runs a client request on the calling task: its answer when the event itself made it
    /// (a request its own replica decides), else the receiver it will come on.
    fn client_request_here(
        &mut self,
        request: ClientRequest,
        trace: TraceId,
    ) -> (RequestOffer, Deliveries) {
        let id = self.fresh_client_id();
        let mut deliveries = self.handle(Input::Client {
            id,
            request,
            trace: Some(trace),
        });
        if let Some((answered, answer)) = deliveries.unclaimed.take() {
            if answered == id {
                return (RequestOffer::Answered(answer), deliveries);
            }
        }
        // Registered under the lock, before any later event can answer it.
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id, tx);
        (RequestOffer::Waiting(rx), deliveries)
    }

    fn sort(&mut self, out: Outputs) -> Deliveries {
        let mut deliveries = Deliveries::default();
        for Completion {
            id,
            reply,
            replicas,
        } in out.replies
        {
            let answer = Answer { reply, replicas };
            match self.pending.remove(&id) {
                Some(waiter) => deliveries.answers.push((waiter, answer)),
                None => {
                    // Only the event's own request, run inline, has no waiter yet.
                    debug_assert!(deliveries.unclaimed.is_none(), "two unclaimed answers");
                    deliveries.unclaimed = Some((id, answer));
                }
            }
        }
        deliveries.sends = out
            .messages
            .into_iter()
            .map(|outgoing| {
                let addr = self.view.peer_addr(&outgoing.to);
                (outgoing, addr)
            })
            .collect();
        deliveries
    }

    /// Carries out a command from the driver's queue.
    fn command(&mut self, command: Command) -> Deliveries {
        match command {
            Command::Request {
                request,
                trace,
                reply,
            } => return self.client_request(request, trace, reply),
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Leave => self.node.leave(wall_clock_ms()),
            Command::LiveKeys {
                from,
                to,
                limit,
                reply,
            } => {
                let _ = reply.send(self.live_keys(from, to, limit));
            }
            Command::Ring { reply } => {
                let ring = self.node.ring();
                let lists = (0..ring.params().partitions)
                    .map(|p| ring.preference_list(p).to_vec())
                    .collect();
                let _ = reply.send(lists);
            }
            Command::Local { key, reply } => {
                // `peek`: no access is counted and nothing is repaired, so looking does not
                // change what is looked at.
                let node = &self.node;
                let _ = reply.send(LocalState {
                    id: node.id().clone(),
                    replica: node.ring().replicas_of(&key).contains(node.id()),
                    state: node.store().peek(&key),
                });
            }
        }
        Deliveries::default()
    }

    /// Runs a peer message through the core.
    fn peer_message(&mut self, inbound: Inbound) -> Deliveries {
        let Inbound {
            from,
            trace,
            message,
        } = inbound;
        self.handle(Input::Peer {
            from,
            message,
            trace,
        })
    }

    /// See [`Command::LiveKeys`]: stops at `limit` keys, but only between two positions.
    fn live_keys(&self, from: u64, to: u64, limit: usize) -> Vec<(u64, Vec<u8>)> {
        let mut keys: Vec<(u64, Vec<u8>)> = Vec::new();
        for (position, key) in self
            .node
            .store()
            .live_keys_between(from, to, wall_clock_ms())
        {
            if keys.len() >= limit && keys.last().is_some_and(|(p, _)| *p != position) {
                break;
            }
            keys.push((position, key.to_vec()));
        }
        keys
    }

    fn status(&self) -> Status {
        let config = self.node.config();
        Status {
            id: self.node.id().clone(),
            replicas: config.replicas,
            partitions: config.partitions,
            vnodes: config.vnodes,
            keys: self.node.store().len(),
            stats: self.node.stats(),
            members: self.view.clone(),
            ownership: self
                .node
                .ring()
                .ownership()
                .into_iter()
                .map(|(node, primary, any)| Ownership {
                    node,
                    primary_partitions: primary,
                    replica_partitions: any,
                })
                .collect(),
            leaving: self.node.is_leaving(),
            handoff_eta_secs: {
                let progress = self.node.handoff_progress();
                let keys_left: u64 = progress.iter().map(|p| p.keys_left).sum();
                let bytes_left: u64 = progress.iter().map(|p| p.bytes_left).sum();
                (!progress.is_empty()).then(|| {
                    let by_keys = keys_left as f64 / config.anti_entropy_keys_per_sec.max(1) as f64;
                    let by_bytes =
                        bytes_left as f64 / config.anti_entropy_bytes_per_sec.max(1) as f64;
                    by_keys.max(by_bytes)
                })
            },
            handoff: self.node.handoff_progress(),
            keys_handed_off: self.node.keys_handed_off(),
            partitions_moving_in: self.node.partitions_moving_in(wall_clock_ms()),
        }
    }
}

/// What became of a client request offered to its shard without waiting for its driver.
enum RequestOffer {
    /// Run, and answered in the same event (or refused, the shard having stopped).
    Answered(Answer),
    /// Run; its answer will come on this receiver once other replicas have answered.
    Waiting(oneshot::Receiver<Answer>),
    /// The driver's turn: here is the request back, for the driver's queue.
    Busy(ClientRequest),
}

/// What became of an event offered to a shard without waiting for its driver.
enum Offered<T> {
    /// Handled (or dropped, the shard having stopped).
    Taken,
    /// The driver's turn: here is the event back, for the driver's queue.
    Busy(T),
}

/// Whether an inline event may run the core now.
enum Inline<'a> {
    /// Yes: here is the core, locked.
    Run(std::sync::MutexGuard<'a, ShardCore>),
    /// Not now: the driver task holds the lock or waits for it.
    Busy,
    /// Never: the driver has stopped, or a panic under the lock poisoned it.
    Stopped,
}

/// The core as the driver task holds it: letting go ends the driver's turn.
struct DriverHeld<'a> {
    core: std::sync::MutexGuard<'a, ShardCore>,
    turn: &'a std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for DriverHeld<'_> {
    type Target = ShardCore;

    fn deref(&self) -> &ShardCore {
        &self.core
    }
}

impl std::ops::DerefMut for DriverHeld<'_> {
    fn deref_mut(&mut self) -> &mut ShardCore {
        &mut self.core
    }
}

impl Drop for DriverHeld<'_> {
    fn drop(&mut self) {
        // Before the guard lets go: an inline event that sees the turn over and asks for the
        // lock waits at most for the rest of this drop.
        self.turn.store(false, Ordering::Release);
    }
}

impl Shard {
    /// The core, for the driver task. From the moment it asks until it lets go, inline events
    /// queue for it ([`Shard::try_inline`]); the holders it may find are inline events that
    /// were already trying (at most one per thread, each for one event), so it waits for the
    /// lock, blocking its thread that long. `None` once a panic under the lock has poisoned
    /// it: the shard is then as good as stopped.
    fn lock(&self) -> Option<DriverHeld<'_>> {
        self.driver_turn.store(true, Ordering::Release);
        match self.core.lock() {
            Ok(core) => Some(DriverHeld {
                core,
                turn: &self.driver_turn,
            }),
            Err(_) => {
                self.driver_turn.store(false, Ordering::Release);
                None
            }
        }
    }

    /// The core for an inline event, if it may run now (see [`Inline`]): waits for an inline
    /// event that holds the lock, trying again up to [`INLINE_TRIES`] times and then sleeping
    /// on it; gives way as soon as it sees the driver's turn.
    fn try_inline(&self) -> Inline<'_> {
        for _ in 0..INLINE_TRIES {
            if self.driver_turn.load(Ordering::Acquire) {
                return Inline::Busy;
            }
            match self.core.try_lock() {
                Ok(core) if core.stopped => return Inline::Stopped,
                Ok(core) => return Inline::Run(core),
                Err(std::sync::TryLockError::Poisoned(_)) => return Inline::Stopped,
                Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        if self.driver_turn.load(Ordering::Acquire) {
            return Inline::Busy;
        }
        match self.core.lock() {
            Ok(core) if core.stopped => Inline::Stopped,
            Ok(core) => Inline::Run(core),
            Err(_) => Inline::Stopped,
        }
    }

    /// Runs a client request on the calling task unless it is the driver's turn. A request its
    /// own replica decides is answered here, without a channel; one the shard has stopped for
    /// is answered `ShuttingDown`.
    fn offer_request(&self, request: ClientRequest, trace: &TraceId) -> RequestOffer {
        let mut core = match self.try_inline() {
            Inline::Run(core) => core,
            Inline::Busy => return RequestOffer::Busy(request),
            Inline::Stopped => {
                return RequestOffer::Answered(Answer::failed(RequestError::ShuttingDown))
            }
        };
        let (offer, deliveries) = core.client_request_here(request, trace.clone());
        drop(core);
        self.deliver(deliveries);
        offer
    }

    /// Runs a peer message on the calling task unless it is the driver's turn (a message for
    /// a stopped shard is dropped, as the network might have).
    fn offer_peer_message(&self, inbound: Inbound) -> Offered<Inbound> {
        let mut core = match self.try_inline() {
            Inline::Run(core) => core,
            Inline::Busy => return Offered::Busy(inbound),
            Inline::Stopped => return Offered::Taken,
        };
        let deliveries = core.peer_message(inbound);
        drop(core);
        self.deliver(deliveries);
        Offered::Taken
    }

    /// Queues a request-path peer message that came in the driver's turn for the driver, which
    /// serves it right after the event in hand (see [`Driver::serve_waiting`]); shed (as the
    /// network might lose it) when the queue is full.
    fn queue_urgent(&self, inbound: Inbound) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.urgent.try_send(inbound) {
            note_shed(&self.shed, "request-path queue full");
        }
    }

    /// Carries out sorted outputs: answers the clients, and queues each message on the
    /// transport (a message for a peer of no known address is reported undeliverable).
    fn deliver(&self, deliveries: Deliveries) {
        for (waiter, answer) in deliveries.answers {
            let _ = waiter.send(answer);
        }
        for (outgoing, addr) in deliveries.sends {
            let Outgoing { to, message, trace } = outgoing;
            match addr {
                Some(addr) => self.transport.enqueue(
                    to,
                    addr,
                    trace.as_ref(),
                    &message,
                    Some(self.undeliverable_tx.clone()),
                ),
                None => {
                    let _ = self.undeliverable_tx.send((to, message.req()));
                }
            }
        }
    }
}

/// A shard's driver task: what reaches the shard through its queues (client requests that
/// came in its turn, commands, peer messages the router queued), failed sends, the tick and
/// gossip's view.
struct Driver {
    shard: Arc<Shard>,
    views: watch::Receiver<ClusterView>,
}

impl Driver {
    /// Starts one shard's driver task; it runs until `shutdown` turns true (or its sender is
    /// dropped). The shard's own sender keeps its command queue open meanwhile.
    fn spawn(
        node: Node,
        views: watch::Receiver<ClusterView>,
        transport: PeerTransport,
        inbound: mpsc::Receiver<Inbound>,
        shed: Arc<AtomicU64>,
        shutdown: watch::Receiver<bool>,
    ) -> (Arc<Shard>, tokio::task::JoinHandle<()>) {
        let (commands_tx, commands_rx) = mpsc::channel(4096);
        let (urgent_tx, urgent_rx) = mpsc::channel(URGENT_QUEUE);
        let (undeliverable_tx, undeliverable_rx) = mpsc::unbounded_channel();
        let shard = Arc::new(Shard {
            core: std::sync::Mutex::new(ShardCore {
                node,
                pending: HashMap::new(),
                next_client: 0,
                view: ClusterView::default(),
                stopped: false,
            }),
            driver_turn: std::sync::atomic::AtomicBool::new(false),
            commands: commands_tx,
            urgent: urgent_tx,
            shed,
            transport,
            undeliverable_tx,
        });
        let driver = Driver {
            shard: shard.clone(),
            views,
        };
        let queues = Queues {
            commands: commands_rx,
            urgent: urgent_rx,
            bulk: inbound,
            undeliverable: undeliverable_rx,
        };
        let task = tokio::spawn(driver.run(queues, shutdown));
        (shard, task)
    }

    async fn run(mut self, mut queues: Queues, mut shutdown: watch::Receiver<bool>) {
        let _stopping = StopOnDrop(self.shard.clone());
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            // The clock is read under the lock, once an event has arrived: read before the
            // wait, it would be as old as the wait (a tick, or all of a SIGSTOP), and a client
            // request would be stamped and judged for expiry at an instant before it was sent.
            let deliveries = tokio::select! {
                command = queues.commands.recv() => {
                    let Some(command) = command else { break };
                    let Some(mut core) = self.shard.lock() else { break };
                    core.command(command)
                },
                Some(inbound) = queues.urgent.recv() => {
                    let Some(mut core) = self.shard.lock() else { break };
                    core.peer_message(inbound)
                }
                Some(inbound) = queues.bulk.recv() => {
                    let Some(mut core) = self.shard.lock() else { break };
                    core.peer_message(inbound)
                }
                Some((to, req)) = queues.undeliverable.recv() => {
                    let Some(mut core) = self.shard.lock() else { break };
                    core.handle(Input::Undeliverable { to, req })
                }
                _ = tick.tick() => {
                    // In two holds of the lock, what waited in between served first: the
                    // background half (a batch) does not hold up a request behind the other.
                    let deadlines = self.run_event(|core| {
                        let mut out = Outputs::default();
                        core.node.tick_deadlines(wall_clock_ms(), &mut out);
                        core.sort(out)
                    });
                    if !deadlines || !self.serve_waiting(&mut queues) {
                        break;
                    }
                    let Some(mut core) = self.shard.lock() else { break };
                    let mut out = Outputs::default();
                    core.node.tick_repair(wall_clock_ms(), &mut out);
                    core.sort(out)
                }
                Ok(()) = self.views.changed() => {
                    let view = self.views.borrow_and_update().clone();
                    let Some(mut core) = self.shard.lock() else { break };
                    if view == core.view {
                        Deliveries::default()
                    } else {
                        tracing::debug!(?view, "membership changed");
                        let membership = view.membership();
                        core.view = view;
                        core.handle(Input::Membership(membership))
                    }
                }
                _ = shutdown.changed() => break,
            };
            self.shard.deliver(deliveries);
            if !self.serve_waiting(&mut queues) {
                break;
            }
        }
        // `_stopping` marks the shard stopped as this returns (or unwinds).
    }

    /// Runs one event on the core, locked, and carries out what it asked for once the lock is
    /// let go. False once the shard has stopped.
    fn run_event(&self, event: impl FnOnce(&mut ShardCore) -> Deliveries) -> bool {
        let deliveries = {
            let Some(mut core) = self.shard.lock() else {
                return false;
            };
            event(&mut core)
        };
        self.shard.deliver(deliveries);
        true
    }

    /// Serves what waits on the request path, request-path peer messages and client requests
    /// that came in the driver's turn, taking one of each in turn, before the driver turns to
    /// anything else queued (a batch, the tick): a request waits for the event in hand, not
    /// for every batch that arrived before it. A reply comes first in each turn: it finishes
    /// work already under way. At most [`WAITING_BURST`] events, so a flood of them cannot
    /// starve the tick. False once the shard has stopped.
    fn serve_waiting(&self, queues: &mut Queues) -> bool {
        let mut served = 0;
        while served < WAITING_BURST {
            let mut any = false;
            if let Ok(inbound) = queues.urgent.try_recv() {
                if !self.run_event(|core| core.peer_message(inbound)) {
                    return false;
                }
                (any, served) = (true, served + 1);
            }
            if let Ok(command) = queues.commands.try_recv() {
                if !self.run_event(|core| core.command(command)) {
                    return false;
                }
                (any, served) = (true, served + 1);
            }
            if !any {
                break;
            }
        }
        true
    }
}

/// What a shard's driver task reads.
struct Queues {
    /// Client requests that came in the driver's turn, and every command that is not a request.
    commands: mpsc::Receiver<Command>,
    /// Request-path peer messages that came in the driver's turn (see [`PeerMessage::is_request_path`]).
    urgent: mpsc::Receiver<Inbound>,
    /// Every other peer message, from the router: batches, tombstone collection.
    bulk: mpsc::Receiver<Inbound>,
    /// Messages the transport could not deliver: (peer, request number).
    undeliverable: mpsc::UnboundedReceiver<(NodeId, u64)>,
}

/// Marks its shard stopped when dropped, as its driver task ends, normally or by a panic:
/// whoever takes the lock from then on finds it so, and every waiting client is told
/// `ShuttingDown` (the waiters live in the shard, which the handles keep alive: without this
/// a dead driver would leave them waiting for ever, with no tick to time them out).
struct StopOnDrop(Arc<Shard>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let mut core = match self.0.core.lock() {
            Ok(core) => core,
            Err(poisoned) => poisoned.into_inner(),
        };
        core.stopped = true;
        let waiters: Vec<_> = core.pending.drain().map(|(_, reply)| reply).collect();
        drop(core);
        for reply in waiters {
            let _ = reply.send(Answer::failed(RequestError::ShuttingDown));
        }
    }
}

/// Offers a peer message to its shard on the calling (stream) task: `None` once taken (run;
/// queued for the shard's driver, which serves it before batches, in the driver's turn; or
/// dropped because the shard is gone), or the message back for the router when it does not
/// run inline (see [`PeerMessage::is_request_path`]).
fn offer_inbound(
    shards: &[std::sync::Weak<Shard>],
    partitions: u32,
    inbound: Inbound,
) -> Option<Inbound> {
    if !inbound.message.is_request_path() {
        return Some(inbound);
    }
    let shard = inbound.message.shard(partitions, shards.len() as u32) as usize;
    // A shard that is gone (the peer stopping) drops the message: `None`, taken.
    let shard = shards[shard].upgrade()?;
    if let Offered::Busy(inbound) = shard.offer_peer_message(inbound) {
        shard.queue_urgent(inbound);
    }
    None
}

/// Counts a peer message shed from a full queue, warning at every power of two.
fn note_shed(shed: &AtomicU64, why: &'static str) {
    let total = shed.fetch_add(1, Ordering::Relaxed) + 1;
    if total.is_power_of_two() {
        tracing::warn!(shed_total = total, why, "peer message shed");
    }
}

/// The span a traced peer message is handled in: its trace id, sender and kind (debug, under
/// [`TRACE_TARGET`]); `None` for an untraced one.
fn traced_span(input: &Input) -> Option<tracing::Span> {
    let Input::Peer {
        from,
        message,
        trace: Some(trace),
    } = input
    else {
        return None;
    };
    Some(tracing::debug_span!(
        target: TRACE_TARGET,
        "peer_message",
        trace_id = %trace,
        from = %from,
        kind = message.kind(),
    ))
}

#[cfg(test)]
mod shard_tests;
