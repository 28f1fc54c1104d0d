//! Publish/subscribe: one peer's hub of subscribers, and the fan-out that carries every
//! message published on this peer to every other live peer.
//!
//! Why: a Redis client subscribed on one peer must hear what another client publishes on any
//! peer. Messages are not stored or replicated — like Redis, pub/sub is fire and forget: a
//! message reaches the subscribers connected at the moment it arrives, at most once each.
//!
//! Promises:
//! - [`PubSub::publish`] delivers to this peer's subscribers at once (exact channel and
//!   pattern matches, as Redis does: a subscriber matching both hears it twice) and queues the
//!   message for every other live peer, which delivers it to its own subscribers (never
//!   forwarding it further). It answers how many deliveries this peer made, as `PUBLISH` does
//!   in a Redis Cluster.
//! - Memory is bounded: each subscriber has an output limit in bytes; a message that would take
//!   it past the limit is not queued, and the subscriber is told it fell behind
//!   ([`Lagged`]) and must be disconnected (Redis's `client-output-buffer-limit pubsub`). The
//!   queue towards each peer holds at most [`PEER_QUEUE_MESSAGES`]; past that, messages for
//!   that peer are dropped and counted, never waited for.
//! - Messages published on one peer reach the subscribers of every peer in the order
//!   published. Each travels as its own QUIC stream, so they may arrive out of order: they
//!   carry a sequence number per receiving peer, and the receiver holds a message that came
//!   early until the ones before it arrive, or [`GAP_WAIT`] passes (a message lost on the way
//!   is skipped, never waited for long).

use crate::core::message::PeerMessage;
use crate::core::types::NodeId;
use crate::glob::glob_match;
use crate::shell::gossip::ClusterView;
use crate::shell::transport::PeerTransport;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// Messages waiting to be sent to one peer; past this, that peer's share is dropped.
pub const PEER_QUEUE_MESSAGES: usize = 4096;
/// How long a message that arrived early waits for those before it (then they count as lost).
pub const GAP_WAIT: Duration = Duration::from_millis(250);
/// Early messages held per sending peer; past this, the gap before them is given up on.
const MAX_HELD_EARLY: usize = 1024;
/// A sender's ordering state is forgotten after this long without a message.
const STREAM_IDLE: Duration = Duration::from_secs(600);
/// Bytes of bookkeeping counted per queued message beside its channel and payload.
const MESSAGE_OVERHEAD_BYTES: usize = 64;

/// A published message: (channel, payload).
type Published = (Vec<u8>, Vec<u8>);

/// One message as a subscriber receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Published on a channel the subscriber named.
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// Published on a channel matching a pattern the subscriber named.
    PatternMessage {
        pattern: Vec<u8>,
        channel: Vec<u8>,
        payload: Vec<u8>,
    },
}

impl Delivery {
    fn bytes(&self) -> usize {
        MESSAGE_OVERHEAD_BYTES
            + match self {
                Delivery::Message { channel, payload } => channel.len() + payload.len(),
                Delivery::PatternMessage {
                    pattern,
                    channel,
                    payload,
                } => pattern.len() + channel.len() + payload.len(),
            }
    }
}

/// The subscriber fell further behind than its output limit allows: disconnect it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("subscriber fell behind by more than its output buffer limit")]
pub struct Lagged;

/// Counters for `INFO` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PubSubStats {
    pub published: u64,
    pub delivered: u64,
    /// Messages that arrived from other peers.
    pub received_from_peers: u64,
    /// Subscribers disconnected for falling behind.
    pub subscribers_lagged: u64,
    /// Messages not sent to a peer because its queue was full.
    pub dropped_towards_peers: u64,
}

/// A peer's pub/sub hub; clones share it.
#[derive(Clone)]
pub struct PubSub {
    hub: Arc<Hub>,
}

struct Hub {
    state: Mutex<HubState>,
    next_id: AtomicU64,
    /// Messages published here, for the fan-out task (none before it starts).
    outbox: Mutex<Option<mpsc::UnboundedSender<Published>>>,
    /// Names this peer's run in the messages it sends (a restarted peer numbers afresh).
    stream: u64,
    /// Per sending peer and its run: the order messages from it are delivered in.
    arrivals: Mutex<HashMap<(NodeId, u64), Arrivals>>,
    published: AtomicU64,
    delivered: AtomicU64,
    received_from_peers: AtomicU64,
    subscribers_lagged: AtomicU64,
    dropped_towards_peers: AtomicU64,
}

#[derive(Default)]
struct HubState {
    channels: HashMap<Vec<u8>, BTreeSet<u64>>,
    patterns: HashMap<Vec<u8>, BTreeSet<u64>>,
    mailboxes: HashMap<u64, Arc<Mailbox>>,
}

struct Mailbox {
    queue: Mutex<MailboxQueue>,
    notify: Notify,
    limit_bytes: usize,
}

#[derive(Default)]
struct MailboxQueue {
    deliveries: VecDeque<Delivery>,
    bytes: usize,
    lagged: bool,
}

impl Mailbox {
    /// Queues `delivery` unless it would pass the limit (then the subscriber has lagged).
    fn offer(&self, delivery: Delivery) -> Offered {
        let size = delivery.bytes();
        let mut q = self.queue.lock().expect("mailbox lock");
        if q.lagged {
            return Offered::AlreadyLagged;
        }
        let queued = q.bytes + size <= self.limit_bytes;
        if queued {
            q.bytes += size;
            q.deliveries.push_back(delivery);
        } else {
            q.lagged = true;
            q.deliveries.clear();
            q.bytes = 0;
        }
        drop(q);
        self.notify.notify_one();
        if queued {
            Offered::Queued
        } else {
            Offered::Lagged
        }
    }
}

enum Offered {
    Queued,
    /// This message took the subscriber past its limit.
    Lagged,
    AlreadyLagged,
}

impl Default for PubSub {
    fn default() -> Self {
        Self::new()
    }
}

impl PubSub {
    pub fn new() -> PubSub {
        PubSub {
            hub: Arc::new(Hub {
                state: Mutex::new(HubState::default()),
                next_id: AtomicU64::new(1),
                outbox: Mutex::new(None),
                stream: rand::random(),
                arrivals: Mutex::new(HashMap::new()),
                published: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                received_from_peers: AtomicU64::new(0),
                subscribers_lagged: AtomicU64::new(0),
                dropped_towards_peers: AtomicU64::new(0),
            }),
        }
    }

    /// A new subscriber (subscribed to nothing yet) whose undelivered messages may take at
    /// most `limit_bytes`.
    pub fn subscriber(&self, limit_bytes: usize) -> Subscriber {
        let id = self.hub.next_id.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox {
            queue: Mutex::new(MailboxQueue::default()),
            notify: Notify::new(),
            limit_bytes,
        });
        self.hub.state().mailboxes.insert(id, Arc::clone(&mailbox));
        Subscriber {
            id,
            hub: Arc::clone(&self.hub),
            mailbox,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
        }
    }

    /// Publishes `payload` on `channel`: delivered here at once, and sent to every other live
    /// peer. How many deliveries this peer made.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> usize {
        self.hub.published.fetch_add(1, Ordering::Relaxed);
        if let Some(outbox) = self.hub.outbox.lock().expect("outbox lock").as_ref() {
            let _ = outbox.send((channel.to_vec(), payload.to_vec()));
        }
        self.deliver_here(channel, payload)
    }

    /// Takes a message another peer published (`(stream, seq)` from its `Publish`) and
    /// delivers it to this peer's subscribers in the sender's order: at once when it is the
    /// next one, or once those before it arrived or were given up on.
    pub fn deliver_from_peer(
        &self,
        from: &NodeId,
        (stream, seq): (u64, u64),
        channel: Vec<u8>,
        payload: Vec<u8>,
    ) {
        self.hub.received_from_peers.fetch_add(1, Ordering::Relaxed);
        let ready = {
            let mut arrivals = self.hub.arrivals.lock().expect("arrivals lock");
            let state = arrivals
                .entry((from.clone(), stream))
                .or_insert_with(Arrivals::new);
            state.arrive(seq, channel, payload, Instant::now())
        };
        for (channel, payload) in ready {
            self.deliver_here(&channel, &payload);
        }
    }

    /// Delivers the messages that waited [`GAP_WAIT`] for earlier ones, skipping the gap.
    fn deliver_overdue(&self, now: Instant) {
        let ready: Vec<Published> = {
            let mut arrivals = self.hub.arrivals.lock().expect("arrivals lock");
            arrivals.retain(|_, a| now.duration_since(a.last_arrival) < STREAM_IDLE);
            arrivals.values_mut().flat_map(|a| a.overdue(now)).collect()
        };
        for (channel, payload) in ready {
            self.deliver_here(&channel, &payload);
        }
    }

    fn deliver_here(&self, channel: &[u8], payload: &[u8]) -> usize {
        let mut targets: Vec<(Arc<Mailbox>, Delivery)> = Vec::new();
        {
            let state = self.hub.state();
            if let Some(ids) = state.channels.get(channel) {
                for id in ids {
                    if let Some(m) = state.mailboxes.get(id) {
                        let delivery = Delivery::Message {
                            channel: channel.to_vec(),
                            payload: payload.to_vec(),
                        };
                        targets.push((Arc::clone(m), delivery));
                    }
                }
            }
            for (pattern, ids) in &state.patterns {
                if !glob_match(pattern, channel) {
                    continue;
                }
                for id in ids {
                    if let Some(m) = state.mailboxes.get(id) {
                        let delivery = Delivery::PatternMessage {
                            pattern: pattern.clone(),
                            channel: channel.to_vec(),
                            payload: payload.to_vec(),
                        };
                        targets.push((Arc::clone(m), delivery));
                    }
                }
            }
        }
        let mut delivered = 0;
        for (mailbox, delivery) in targets {
            match mailbox.offer(delivery) {
                Offered::Queued => delivered += 1,
                Offered::Lagged => {
                    self.hub.subscribers_lagged.fetch_add(1, Ordering::Relaxed);
                }
                Offered::AlreadyLagged => {}
            }
        }
        self.hub
            .delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    /// Channels with at least one subscriber on this peer, matching `pattern` if given
    /// (`PUBSUB CHANNELS`), sorted.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        let state = self.hub.state();
        let mut out: Vec<Vec<u8>> = state
            .channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c)))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Subscribers of exactly `channel` on this peer (`PUBSUB NUMSUB`).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.hub
            .state()
            .channels
            .get(channel)
            .map_or(0, BTreeSet::len)
    }

    /// Distinct patterns subscribed to on this peer (`PUBSUB NUMPAT`).
    pub fn numpat(&self) -> usize {
        self.hub.state().patterns.len()
    }

    pub fn stats(&self) -> PubSubStats {
        let h = &self.hub;
        PubSubStats {
            published: h.published.load(Ordering::Relaxed),
            delivered: h.delivered.load(Ordering::Relaxed),
            received_from_peers: h.received_from_peers.load(Ordering::Relaxed),
            subscribers_lagged: h.subscribers_lagged.load(Ordering::Relaxed),
            dropped_towards_peers: h.dropped_towards_peers.load(Ordering::Relaxed),
        }
    }

    /// Starts carrying this peer's published messages to every other live peer: one sender
    /// task per peer, each with a bounded queue, sending in publish order. Ends (and with it
    /// every sender) when `shutdown` turns true.
    pub fn start_fan_out(
        &self,
        self_id: NodeId,
        transport: PeerTransport,
        views: watch::Receiver<ClusterView>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Published>();
        *self.hub.outbox.lock().expect("outbox lock") = Some(tx);
        let this = self.clone();
        let stream = self.hub.stream;
        tokio::spawn(async move {
            let mut queues: HashMap<NodeId, mpsc::Sender<Published>> = HashMap::new();
            // Messages that came early stop waiting for the ones before them after GAP_WAIT.
            let mut overdue = tokio::time::interval(GAP_WAIT / 4);
            overdue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let message = tokio::select! {
                    received = rx.recv() => match received {
                        Some(message) => message,
                        None => break,
                    },
                    _ = overdue.tick() => {
                        this.deliver_overdue(Instant::now());
                        continue;
                    }
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            break;
                        }
                        continue;
                    }
                };
                let view = views.borrow().clone();
                for (id, member) in &view.members {
                    if *id == self_id || !member.up {
                        continue;
                    }
                    let queue = queues.entry(id.clone()).or_insert_with(|| {
                        spawn_peer_sender(id.clone(), stream, transport.clone(), views.clone())
                    });
                    if queue.try_send(message.clone()).is_err() {
                        this.hub
                            .dropped_towards_peers
                            .fetch_add(1, Ordering::Relaxed);
                        if queue.is_closed() {
                            queues.remove(id);
                        }
                    }
                }
            }
            // Dropping the queues ends every peer's sender task.
            *this.hub.outbox.lock().expect("outbox lock") = None;
        })
    }
}

/// One peer's sender: numbers its queue's messages and sends them one after another.
fn spawn_peer_sender(
    to: NodeId,
    stream: u64,
    transport: PeerTransport,
    views: watch::Receiver<ClusterView>,
) -> mpsc::Sender<Published> {
    let (tx, mut rx) = mpsc::channel::<Published>(PEER_QUEUE_MESSAGES);
    tokio::spawn(async move {
        let mut seq = 0;
        while let Some((channel, payload)) = rx.recv().await {
            let message = PeerMessage::Publish {
                stream,
                seq,
                channel,
                payload,
            };
            seq += 1;
            let Some(addr) = views.borrow().peer_addr(&to) else {
                continue;
            };
            if let Err(e) = transport.send(&to, addr, None, &message).await {
                tracing::debug!(peer = %to, error = %e, "published message not delivered");
            }
        }
    });
    tx
}

/// The order of one sender's messages at this peer.
struct Arrivals {
    /// The sequence number delivered next.
    next: u64,
    /// Messages that came before `next` was delivered: (when, channel, payload).
    early: std::collections::BTreeMap<u64, (Instant, Vec<u8>, Vec<u8>)>,
    last_arrival: Instant,
}

impl Arrivals {
    /// A sender's run numbers its messages to this peer from 0 (a run first heard of in its
    /// middle — this peer restarted — costs one [`GAP_WAIT`], then flows).
    fn new() -> Arrivals {
        Arrivals {
            next: 0,
            early: Default::default(),
            last_arrival: Instant::now(),
        }
    }

    /// Takes message `seq`; what is ready to deliver now, in order.
    fn arrive(
        &mut self,
        seq: u64,
        channel: Vec<u8>,
        payload: Vec<u8>,
        now: Instant,
    ) -> Vec<Published> {
        self.last_arrival = now;
        if seq < self.next {
            // Its gap was given up on: late, but still delivered once.
            return vec![(channel, payload)];
        }
        self.early.insert(seq, (now, channel, payload));
        if self.early.len() > MAX_HELD_EARLY {
            let first = *self.early.keys().next().expect("not empty");
            self.next = first;
        }
        self.take_in_order()
    }

    /// Gives up on the gap before messages that waited [`GAP_WAIT`]; what is ready now.
    fn overdue(&mut self, now: Instant) -> Vec<Published> {
        match self.early.first_key_value() {
            Some((&seq, (at, _, _))) if now.duration_since(*at) >= GAP_WAIT => {
                self.next = seq;
                self.take_in_order()
            }
            _ => Vec::new(),
        }
    }

    fn take_in_order(&mut self) -> Vec<Published> {
        let mut ready = Vec::new();
        while let Some((_, channel, payload)) = self.early.remove(&self.next) {
            ready.push((channel, payload));
            self.next += 1;
        }
        ready
    }
}

impl Hub {
    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().expect("pubsub lock")
    }
}

/// One subscribing connection: what it is subscribed to, and its queue of messages.
/// Dropping it unsubscribes from everything.
pub struct Subscriber {
    id: u64,
    hub: Arc<Hub>,
    mailbox: Arc<Mailbox>,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
}

impl Subscriber {
    /// Subscribes to `channel`; how many channels and patterns this subscriber now has.
    pub fn subscribe(&mut self, channel: &[u8]) -> usize {
        if self.channels.insert(channel.to_vec()) {
            let mut state = self.hub.state();
            state
                .channels
                .entry(channel.to_vec())
                .or_default()
                .insert(self.id);
        }
        self.count()
    }

    /// Unsubscribes from `channel`; how many channels and patterns are left.
    pub fn unsubscribe(&mut self, channel: &[u8]) -> usize {
        if self.channels.remove(channel) {
            remove_from(&mut self.hub.state().channels, channel, self.id);
        }
        self.count()
    }

    pub fn psubscribe(&mut self, pattern: &[u8]) -> usize {
        if self.patterns.insert(pattern.to_vec()) {
            let mut state = self.hub.state();
            state
                .patterns
                .entry(pattern.to_vec())
                .or_default()
                .insert(self.id);
        }
        self.count()
    }

    pub fn punsubscribe(&mut self, pattern: &[u8]) -> usize {
        if self.patterns.remove(pattern) {
            remove_from(&mut self.hub.state().patterns, pattern, self.id);
        }
        self.count()
    }

    /// The channels subscribed to, sorted.
    pub fn channels(&self) -> Vec<Vec<u8>> {
        self.channels.iter().cloned().collect()
    }

    /// The patterns subscribed to, sorted.
    pub fn patterns(&self) -> Vec<Vec<u8>> {
        self.patterns.iter().cloned().collect()
    }

    /// Channels plus patterns subscribed to (what Redis's (un)subscribe replies count).
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// The next message, waiting for one; `Err(Lagged)` once the subscriber fell behind by
    /// more than its limit (it stays lagged: disconnect it).
    pub async fn recv(&mut self) -> Result<Delivery, Lagged> {
        let mailbox = Arc::clone(&self.mailbox);
        loop {
            // Register interest before checking, so a message offered in between wakes us.
            let notified = mailbox.notify.notified();
            if let Some(next) = self.try_recv()? {
                return Ok(next);
            }
            notified.await;
        }
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Result<Option<Delivery>, Lagged> {
        let mut q = self.mailbox.queue.lock().expect("mailbox lock");
        if q.lagged {
            return Err(Lagged);
        }
        let next = q.deliveries.pop_front();
        if let Some(d) = &next {
            q.bytes -= d.bytes();
        }
        Ok(next)
    }
}

fn remove_from(index: &mut HashMap<Vec<u8>, BTreeSet<u64>>, name: &[u8], id: u64) {
    if let Some(ids) = index.get_mut(name) {
        ids.remove(&id);
        if ids.is_empty() {
            index.remove(name);
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut state = self.hub.state();
        for channel in &self.channels {
            remove_from(&mut state.channels, channel, self.id);
        }
        for pattern in &self.patterns {
            remove_from(&mut state.patterns, pattern, self.id);
        }
        state.mailboxes.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(channel: &str, payload: &str) -> Delivery {
        Delivery::Message {
            channel: channel.into(),
            payload: payload.into(),
        }
    }

    #[tokio::test]
    async fn channel_and_pattern_subscribers_hear_what_is_published_in_order() {
        let hub = PubSub::new();
        let mut a = hub.subscriber(1 << 20);
        let mut b = hub.subscriber(1 << 20);
        assert_eq!(a.subscribe(b"news"), 1);
        assert_eq!(b.psubscribe(b"n*"), 1);
        assert_eq!(b.subscribe(b"news"), 2);
        assert_eq!(
            hub.publish(b"news", b"one"),
            3,
            "b hears it twice, as in Redis"
        );
        assert_eq!(hub.publish(b"news", b"two"), 3);
        assert_eq!(hub.publish(b"other", b"x"), 0);
        assert_eq!(a.recv().await, Ok(message("news", "one")));
        assert_eq!(a.recv().await, Ok(message("news", "two")));
        assert_eq!(a.try_recv(), Ok(None));
        let mut got = Vec::new();
        while let Ok(Some(d)) = b.try_recv() {
            got.push(d);
        }
        assert_eq!(got.len(), 4);
        assert!(got.contains(&Delivery::PatternMessage {
            pattern: b"n*".to_vec(),
            channel: b"news".to_vec(),
            payload: b"one".to_vec(),
        }));
        assert_eq!(hub.channels(None), vec![b"news".to_vec()]);
        assert_eq!(hub.channels(Some(b"x*")), Vec::<Vec<u8>>::new());
        assert_eq!(hub.numsub(b"news"), 2);
        assert_eq!(hub.numpat(), 1);
    }

    #[tokio::test]
    async fn unsubscribing_and_dropping_stop_deliveries() {
        let hub = PubSub::new();
        let mut a = hub.subscriber(1 << 20);
        a.subscribe(b"c");
        a.psubscribe(b"*");
        assert_eq!(a.unsubscribe(b"c"), 1);
        assert_eq!(a.punsubscribe(b"*"), 0);
        assert_eq!(hub.publish(b"c", b"m"), 0);
        assert_eq!(a.try_recv(), Ok(None));
        let mut b = hub.subscriber(1 << 20);
        b.subscribe(b"c");
        drop(b);
        assert_eq!(hub.numsub(b"c"), 0);
        assert_eq!(hub.publish(b"c", b"m"), 0);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_cut_off_at_its_limit_and_memory_stays_bounded() {
        let hub = PubSub::new();
        let mut slow = hub.subscriber(10 * 1024);
        let mut fast = hub.subscriber(1 << 20);
        slow.subscribe(b"c");
        fast.subscribe(b"c");
        let payload = vec![7u8; 1024];
        for _ in 0..100 {
            hub.publish(b"c", &payload);
            // The fast one keeps up.
            assert!(fast.try_recv().unwrap().is_some());
        }
        assert_eq!(slow.recv().await, Err(Lagged));
        assert_eq!(
            slow.try_recv(),
            Err(Lagged),
            "a lagged subscriber stays lagged"
        );
        let queued = slow.mailbox.queue.lock().unwrap().bytes;
        assert_eq!(queued, 0, "what it had queued was released");
        assert_eq!(hub.stats().subscribers_lagged, 1);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_when_a_message_arrives() {
        let hub = PubSub::new();
        let mut a = hub.subscriber(1 << 20);
        a.subscribe(b"c");
        let publisher = hub.clone();
        let waiter = tokio::spawn(async move { a.recv().await });
        tokio::task::yield_now().await;
        publisher.deliver_from_peer(&NodeId::from("B"), (7, 0), b"c".to_vec(), b"far".to_vec());
        assert_eq!(waiter.await.unwrap(), Ok(message("c", "far")));
        assert_eq!(hub.stats().received_from_peers, 1);
    }

    #[tokio::test]
    async fn messages_from_a_peer_are_delivered_in_its_order_and_a_lost_one_is_skipped() {
        let hub = PubSub::new();
        let mut a = hub.subscriber(1 << 20);
        a.subscribe(b"c");
        let b = NodeId::from("B");
        let send = |seq: u64| {
            hub.deliver_from_peer(&b, (1, seq), b"c".to_vec(), format!("m{seq}").into_bytes())
        };
        send(0);
        send(2); // early: waits for 1
        send(3);
        assert_eq!(a.try_recv(), Ok(Some(message("c", "m0"))));
        assert_eq!(a.try_recv(), Ok(None));
        send(1);
        for n in 1..=3 {
            assert_eq!(a.try_recv(), Ok(Some(message("c", &format!("m{n}")))));
        }
        // 4 is lost: 5 waits GAP_WAIT, then goes.
        send(5);
        hub.deliver_overdue(Instant::now());
        assert_eq!(a.try_recv(), Ok(None), "5 waits for 4 a while");
        hub.deliver_overdue(Instant::now() + GAP_WAIT);
        assert_eq!(a.try_recv(), Ok(Some(message("c", "m5"))));
        // 4 arrives after all: late, delivered once.
        send(4);
        assert_eq!(a.try_recv(), Ok(Some(message("c", "m4"))));
        // Another run of the same peer (a restart) is ordered on its own.
        hub.deliver_from_peer(&b, (2, 0), b"c".to_vec(), b"fresh".to_vec());
        assert_eq!(a.try_recv(), Ok(Some(message("c", "fresh"))));
    }
}
