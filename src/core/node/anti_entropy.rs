//! Merkle anti-entropy: replicas find and exchange what differs between them, with no client
//! read and no operator.
//!
//! Every `anti_entropy_interval_ms`, at once when a peer comes back up or this peer just started,
//! and within one interval after a ring change (handoffs move what changed hands first),
//! a node compares the partitions it replicates with each peer that replicates them too, one
//! peer at a time. An exchange descends the peers' hash trees (see
//! [`crate::core::hash_tree`]) only where they differ:
//! 1. `Summary`: one digest over the roots of every shared partition (of this shard); equal
//!    digests end the exchange — the whole steady-state cost.
//! 2. The responder's roots name the partitions that differ; for each, `Branches` finds the
//!    differing leaves, and `Keys` lists the initiator's (ring position, digest) pairs in a
//!    batch of them.
//! 3. The responder answers with its states the initiator lacks or holds otherwise, and says
//!    which of the initiator's it wants; `Push` sends those. Both sides *merge* (a join of
//!    version vectors: concurrent versions stay siblings on both), never overwrite.
//!
//! Promises:
//! - Cost follows the differences: an equal partition costs nothing past the summary, a
//!   differing one a few hashes per differing branch and leaf, and states move only for keys
//!   that differ.
//! - Paced: the initiator spends a token budget (`anti_entropy_keys_per_sec`,
//!   `anti_entropy_bytes_per_sec`) on the states and key lists it moves, and starts a step only
//!   while the budget is not overdrawn. A responder spends its own budget on the states it
//!   takes in, and while that budget is overdrawn asks for none (the partition stays different,
//!   not settled): a newcomer that every replica exchanges with at once is not filled at three
//!   peers' pace. An exchange cut short (timeout, a peer gone) ends; the next one redoes only
//!   what still differs.
//! - No traffic for what must not move: a state with no visible value (deleted, or past its
//!   expiry at the sender) is never sent to a peer that lacks the key, so collected deletes
//!   never come back and expired values never bounce; a full peer does not ask for keys it
//!   does not hold (it evicted them), and a partition left different only for those reasons is
//!   *settled*: while neither root changes, later summaries count it as equal — for
//!   `SETTLED_FOR_INTERVALS` intervals, after which it is compared again (a full peer may
//!   have room by then without any root changing).
//! - States are merged only into partitions this node replicates, by the store's repair rule
//!   (an absent key is added only below the low-water mark).

use super::client_load::share_of;
use super::{Node, Outputs};
use crate::core::hash_tree::{FANOUT, LEAVES};
use crate::core::message::{encoded_len, AntiEntropyMessage, KeyState, PeerMessage};
use crate::core::planted::PlantedBug;
use crate::core::ring::{key_position, PartitionId, Ring};
use crate::core::siblings::Siblings;
use crate::core::store::{footprint, Store};
use crate::core::types::{Millis, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Keys a `Keys` step lists at most (it takes whole leaves, at least one).
const KEYS_PER_STEP: usize = 128;
/// How far the budget may be saved up: this many seconds of it.
const BURST_SECS: u64 = 1;
/// How many intervals a settled partition counts as equal: a peer that was full may have
/// room again without any root changing, so a settlement is retried this often.
const SETTLED_FOR_INTERVALS: u64 = 30;

/// Anti-entropy figures, since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AntiEntropyStats {
    /// Exchanges this node started and finished.
    pub exchanges: u64,
    /// Keys whose local state a received state changed.
    pub keys_repaired: u64,
    /// States sent to peers.
    pub keys_sent: u64,
    /// Bytes of anti-entropy messages this node sent (as encoded on the wire).
    pub bytes_sent: u64,
    /// States not taken or not asked for because the store was full.
    pub declined: u64,
    /// States not sent because they hold no visible value and the peer lacks the key.
    pub skipped: u64,
    /// Milliseconds the budget refilled at the busy share (see `node/client_load`).
    pub yield_ms: u64,
}

/// Where an exchange with one peer stands.
#[derive(Debug)]
enum Stage {
    Summary {
        partitions: Vec<PartitionId>,
    },
    Branches {
        partition: PartitionId,
    },
    Keys {
        partition: PartitionId,
        leaves: Vec<u8>,
    },
    Push {
        partition: PartitionId,
        leaves: Vec<u8>,
    },
}

#[derive(Debug)]
struct Exchange {
    peer: NodeId,
    /// The request number of the step in flight, if one is.
    req: Option<u64>,
    deadline: Millis,
    stage: Stage,
    /// Partitions still to compare.
    queue: VecDeque<PartitionId>,
    /// Whether the current partition left a difference on purpose (declines, skips).
    left_different: bool,
    their_root: u64,
}

/// The anti-entropy state of a node: its one exchange in flight, when each peer is due, the
/// settled partitions and the budget.
#[derive(Debug, Default)]
pub(super) struct AntiEntropy {
    exchange: Option<Exchange>,
    /// When each peer is next due; a peer absent here is due now.
    due: BTreeMap<NodeId, Millis>,
    /// (peer, partition) → (our root, their root, until when) when an exchange left them
    /// different on purpose.
    settled: BTreeMap<(NodeId, PartitionId), (u64, u64, Millis)>,
    /// Budget left (may go negative: the step that overdraws it finishes).
    keys_budget: i64,
    bytes_budget: i64,
    /// What the last refills earned below one key or byte, in thousandths (a slow budget
    /// refilled every few milliseconds still fills).
    keys_carry: i64,
    bytes_carry: i64,
    budget_at: Millis,
    /// The share of the budget's rate (percent) it refilled at last: less while the node is
    /// busy serving clients (see `node/client_load`).
    budget_share: u64,
    /// This node's shard and the peer's shard count, for the partitions it handles.
    shard: u32,
    shards: u32,
    stats: AntiEntropyStats,
}

impl AntiEntropy {
    pub(super) fn new(shard: u32, shards: u32) -> AntiEntropy {
        AntiEntropy {
            shard,
            shards: shards.max(1),
            budget_share: 100,
            ..AntiEntropy::default()
        }
    }

    pub(super) fn stats(&self) -> AntiEntropyStats {
        self.stats
    }

    /// Makes every peer due at once (a peer came back, this peer just started).
    pub(super) fn all_due_now(&mut self) {
        self.due.clear();
    }

    /// Makes every peer in `peers` due at `at` (after a ring change, once handoffs had their
    /// time: anti-entropy then fills in what they did not move, instead of moving it twice).
    pub(super) fn all_due_at<'a>(&mut self, peers: impl Iterator<Item = &'a NodeId>, at: Millis) {
        for peer in peers {
            self.due.insert(peer.clone(), at);
        }
    }

    /// Whether `req` is the step in flight.
    pub(super) fn owns(&self, req: u64) -> bool {
        self.exchange.as_ref().is_some_and(|e| e.req == Some(req))
    }
}

/// The partitions (of `shard` of `shards`) that both `a` and `b` replicate, in order.
fn shared_partitions(
    ring: &Ring,
    a: &NodeId,
    b: &NodeId,
    shard: u32,
    shards: u32,
) -> Vec<PartitionId> {
    (0..ring.params().partitions)
        .filter(|p| p % shards == shard)
        .filter(|p| {
            let list = ring.preference_list(*p);
            list.contains(a) && list.contains(b)
        })
        .collect()
}

fn digest_u64(words: impl Iterator<Item = u64>) -> u64 {
    let mut hasher = blake3::Hasher::new();
    for w in words {
        hasher.update(&w.to_le_bytes());
    }
    u64::from_le_bytes(
        hasher.finalize().as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

fn partitions_digest(partitions: &[PartitionId], shards: u32) -> u64 {
    digest_u64(std::iter::once(shards as u64).chain(partitions.iter().map(|p| *p as u64)))
}

/// Whether a state holds a value a reader could see at `now`.
fn has_visible_value(state: &Siblings, now: Millis) -> bool {
    !state.visible_values(now).is_empty()
}

/// Every key of `store` at ring position `position` within `partition`, with its state.
fn states_at(store: &Store, partition: PartitionId, position: u64) -> Vec<KeyState> {
    let placement = store.trees().place(position);
    if placement.partition != partition {
        return Vec::new();
    }
    store
        .keys_between(position, position)
        .filter_map(|(key, _)| store.peek(key).map(|s| (key.to_vec(), s)))
        .collect()
}

impl Node {
    /// Starts an exchange with the next due peer, or the next step of the one in flight, as
    /// the budget allows; ends a step that overran its deadline.
    pub(super) fn anti_entropy_tick(&mut self, now: Millis, out: &mut Outputs) {
        if self.config.anti_entropy_interval_ms == 0 {
            return;
        }
        self.refill_budget(now);
        if let Some(exchange) = &self.anti_entropy.exchange {
            if exchange.req.is_some() && exchange.deadline <= now {
                self.end_exchange(now, false);
            } else if exchange.req.is_none() && !self.budget_overdrawn() {
                self.next_step(now, out);
            }
            return;
        }
        if self.budget_overdrawn() {
            return;
        }
        let me = self.id.clone();
        let (shard, shards) = (self.anti_entropy.shard, self.anti_entropy.shards);
        let peer = self
            .ring
            .members()
            .iter()
            .filter(|p| **p != me && self.view.is_up(p))
            .filter(|p| self.anti_entropy.due.get(*p).is_none_or(|d| *d <= now))
            .filter(|p| !shared_partitions(&self.ring, &me, p, shard, shards).is_empty())
            // The longest overdue first (never exchanged with: first of all), so a peer late
            // in the member list is not passed over whenever an earlier one is due again.
            .min_by_key(|p| {
                (
                    self.anti_entropy.due.get(*p).copied().unwrap_or(0),
                    (*p).clone(),
                )
            })
            .cloned();
        let Some(peer) = peer else {
            return;
        };
        let partitions = shared_partitions(&self.ring, &me, &peer, shard, shards);
        let digest = digest_u64(
            partitions
                .iter()
                .map(|p| self.effective_root(now, &peer, *p))
                .chain(partitions.iter().map(|p| *p as u64)),
        );
        let message = AntiEntropyMessage::Summary {
            partitions: partitions_digest(&partitions, shards),
            digest,
        };
        self.anti_entropy.exchange = Some(Exchange {
            peer: peer.clone(),
            req: None,
            deadline: now,
            stage: Stage::Summary { partitions },
            queue: VecDeque::new(),
            left_different: false,
            their_root: 0,
        });
        self.send_step(now, message, out);
    }

    /// Our root of `partition` as the peer would see it if nothing changed since the
    /// partition was settled with it: theirs, when ours is still what it was then.
    fn effective_root(&self, now: Millis, peer: &NodeId, partition: PartitionId) -> u64 {
        let ours = self.store.trees().root(partition);
        match self.anti_entropy.settled.get(&(peer.clone(), partition)) {
            Some((settled_ours, theirs, until)) if *settled_ours == ours && now < *until => *theirs,
            _ => ours,
        }
    }

    /// Adds what the budget earned since it was last refilled: at its full rate, or at the
    /// busy share of it while the node is busy serving clients.
    ///
    /// The balance is kept in time: when the share changes, it is scaled by new share / old
    /// share, so a debt run up at one rate takes as long to repay at the other (a debt
    /// charged for a busy peer's states is not repaid again at the busy share once this node
    /// turns busy too).
    pub(super) fn refill_budget(&mut self, now: Millis) {
        let share = if self.busy(now) {
            self.config.anti_entropy_busy_percent
        } else {
            100
        };
        let ae = &mut self.anti_entropy;
        let elapsed = if ae.budget_at == 0 {
            now // never refilled: a fresh node starts with a full burst
        } else {
            now.saturating_sub(ae.budget_at)
        };
        if share < 100 && ae.budget_at != 0 {
            // A gap longer than a load window was not seen busy throughout.
            ae.stats.yield_ms += elapsed.min(1_000);
        }
        ae.budget_at = now;
        let old_share = std::mem::replace(&mut ae.budget_share, share).max(1) as i64;
        if share as i64 != old_share {
            ae.keys_budget = ae.keys_budget.saturating_mul(share as i64) / old_share;
            ae.bytes_budget = ae.bytes_budget.saturating_mul(share as i64) / old_share;
        }
        let keys_rate = share_of(self.config.anti_entropy_keys_per_sec, share) as i64;
        let bytes_rate = share_of(self.config.anti_entropy_bytes_per_sec, share) as i64;
        let add = |budget: &mut i64, carry: &mut i64, rate: i64| {
            let earned = rate.saturating_mul(elapsed as i64).saturating_add(*carry);
            *budget = budget.saturating_add(earned / 1000);
            *carry = earned % 1000;
            let cap = rate.saturating_mul(BURST_SECS as i64);
            if *budget >= cap {
                *budget = cap;
                *carry = 0;
            }
        };
        add(&mut ae.keys_budget, &mut ae.keys_carry, keys_rate);
        add(&mut ae.bytes_budget, &mut ae.bytes_carry, bytes_rate);
    }

    /// Whether the budget anti-entropy and handoff share is overdrawn.
    pub(super) fn anti_entropy_budget_overdrawn(&self) -> bool {
        self.budget_overdrawn()
    }

    /// Spends the budget anti-entropy and handoff share.
    pub(super) fn spend_anti_entropy_budget(&mut self, keys: usize, bytes: u64) {
        self.spend(keys, bytes);
    }

    /// Gives back what a send that did not happen after all had spent.
    pub(super) fn refund_anti_entropy_budget(&mut self, keys: usize, bytes: u64) {
        self.anti_entropy.keys_budget += keys as i64;
        self.anti_entropy.bytes_budget += bytes as i64;
    }

    /// How long until the shared budget is no longer overdrawn (ms), if it is now.
    pub(super) fn anti_entropy_budget_wait_ms(&self) -> Option<Millis> {
        let wait = |budget: i64, rate: u64| {
            (budget < 0).then(|| (budget.unsigned_abs() * 1000).div_ceil(rate.max(1)))
        };
        let share = self.anti_entropy.budget_share;
        let keys = wait(
            self.anti_entropy.keys_budget,
            share_of(self.config.anti_entropy_keys_per_sec, share),
        );
        let bytes = wait(
            self.anti_entropy.bytes_budget,
            share_of(self.config.anti_entropy_bytes_per_sec, share),
        );
        keys.max(bytes)
    }

    /// The share of the budget's rate (percent) it refilled at last.
    #[cfg(test)]
    pub(super) fn budget_share(&self) -> u64 {
        self.anti_entropy.budget_share
    }

    /// Keys the budget holds now (negative: overdrawn).
    #[cfg(test)]
    pub(super) fn keys_budget(&self) -> i64 {
        self.anti_entropy.keys_budget
    }

    /// Spends the budget on states taken in from a peer. A transfer with a busy peer runs at
    /// the busy share of the budget: when this node is not busy itself (its budget refills at
    /// the full rate), a busy sender's states cost it `100 / busy_percent` times as much; when
    /// it is, its budget already refills at that share (see `node/client_load`).
    pub(super) fn spend_on_intake(
        &mut self,
        now: Millis,
        (keys, bytes): (usize, u64),
        sender_busy: bool,
    ) {
        self.refill_budget(now);
        let own = self.anti_entropy.budget_share.max(1);
        let target = if sender_busy {
            own.min(self.config.anti_entropy_busy_percent.max(1))
        } else {
            own
        };
        let scale = |n: u64| n.saturating_mul(own) / target;
        let (keys, bytes) = (scale(keys as u64), scale(bytes));
        self.anti_entropy.keys_budget = self.anti_entropy.keys_budget.saturating_sub(keys as i64);
        self.anti_entropy.bytes_budget =
            self.anti_entropy.bytes_budget.saturating_sub(bytes as i64);
    }

    fn budget_overdrawn(&self) -> bool {
        self.anti_entropy.keys_budget < 0 || self.anti_entropy.bytes_budget < 0
    }

    fn spend(&mut self, keys: usize, bytes: u64) {
        self.anti_entropy.keys_budget -= keys as i64;
        self.anti_entropy.bytes_budget -= bytes as i64;
    }

    /// Sends the step of the exchange in flight.
    fn send_step(&mut self, now: Millis, message: AntiEntropyMessage, out: &mut Outputs) {
        let req = self.requests.fresh();
        let Some(exchange) = self.anti_entropy.exchange.as_mut() else {
            return;
        };
        exchange.req = Some(req);
        exchange.deadline = now + self.config.request_timeout_ms;
        let to = exchange.peer.clone();
        self.send_anti_entropy(now, to, req, message, out);
    }

    fn send_anti_entropy(
        &mut self,
        now: Millis,
        to: NodeId,
        req: u64,
        message: AntiEntropyMessage,
        out: &mut Outputs,
    ) {
        let busy = self.busy(now);
        let message = PeerMessage::AntiEntropy { req, message, busy };
        let bytes = encoded_len(&message);
        self.anti_entropy.stats.bytes_sent += bytes;
        self.spend(0, bytes);
        out.send(to, message);
    }

    /// Ends the exchange in flight; the peer is next due an interval from now (sooner when
    /// it was cut short, so an interrupted exchange resumes).
    fn end_exchange(&mut self, now: Millis, finished: bool) {
        let Some(exchange) = self.anti_entropy.exchange.take() else {
            return;
        };
        let interval = self.config.anti_entropy_interval_ms;
        let next = if finished {
            self.anti_entropy.stats.exchanges += 1;
            self.startup_synced(&exchange.peer);
            now + interval
        } else {
            now + interval / 4 + 1
        };
        self.anti_entropy.due.insert(exchange.peer, next);
    }

    pub(super) fn on_anti_entropy_undeliverable(&mut self, now: Millis) {
        self.end_exchange(now, false);
    }

    /// Handles an anti-entropy message: requests are answered at once, replies advance the
    /// exchange in flight.
    pub(super) fn on_anti_entropy(
        &mut self,
        now: Millis,
        (from, from_busy): (NodeId, bool),
        req: u64,
        message: AntiEntropyMessage,
        out: &mut Outputs,
    ) {
        use AntiEntropyMessage as M;
        match message {
            M::Summary { partitions, digest } => {
                let reply = self.answer_summary(&from, partitions, digest);
                self.send_anti_entropy(now, from, req, reply, out);
            }
            M::Branches {
                partition,
                branches,
            } => {
                let ours = self.store.trees().branches(partition);
                let mut leaves = Vec::new();
                for (branch, theirs) in branches.iter().enumerate().take(FANOUT) {
                    if ours[branch] != *theirs {
                        let hashes = self.store.trees().leaves(partition, branch);
                        for (i, hash) in hashes.iter().enumerate() {
                            leaves.push(((branch * FANOUT + i) as u8, *hash));
                        }
                    }
                }
                let reply = M::BranchesReply { partition, leaves };
                self.send_anti_entropy(now, from, req, reply, out);
            }
            M::Keys {
                partition,
                leaves,
                keys,
            } => {
                let reply = self.answer_keys(now, partition, &leaves, keys);
                self.send_anti_entropy(now, from, req, reply, out);
            }
            M::Push { partition, states } => {
                let bytes: u64 = states.iter().map(|(k, s)| footprint(k, s)).sum();
                self.spend_on_intake(now, (states.len(), bytes), from_busy);
                let declined = self.merge_states(now, partition, states);
                let root = self.store.trees().root(partition);
                let reply = M::PushReply {
                    partition,
                    root,
                    declined,
                };
                self.send_anti_entropy(now, from, req, reply, out);
            }
            reply => {
                if !self.anti_entropy.owns(req)
                    || self.anti_entropy.exchange.as_ref().map(|e| &e.peer) != Some(&from)
                {
                    return; // late, or not ours
                }
                if let Some(exchange) = self.anti_entropy.exchange.as_mut() {
                    exchange.req = None;
                }
                self.on_step_reply(now, reply, from_busy, out);
                let idle = self
                    .anti_entropy
                    .exchange
                    .as_ref()
                    .is_some_and(|e| e.req.is_none());
                if idle && !self.budget_overdrawn() {
                    self.next_step(now, out);
                }
            }
        }
    }

    fn answer_summary(&self, from: &NodeId, partitions: u64, digest: u64) -> AntiEntropyMessage {
        let (shard, shards) = (self.anti_entropy.shard, self.anti_entropy.shards);
        let ours = shared_partitions(&self.ring, from, &self.id, shard, shards);
        if partitions_digest(&ours, shards) != partitions {
            return AntiEntropyMessage::SummaryReply {
                roots: None,
                mismatch: true,
            };
        }
        let roots: Vec<u64> = ours.iter().map(|p| self.store.trees().root(*p)).collect();
        let our_digest = digest_u64(roots.iter().copied().chain(ours.iter().map(|p| *p as u64)));
        AntiEntropyMessage::SummaryReply {
            roots: (our_digest != digest).then_some(roots),
            mismatch: false,
        }
    }

    /// The responder's side of `Keys`: compare the initiator's (position, digest) pairs in
    /// `leaves` with ours.
    fn answer_keys(
        &mut self,
        now: Millis,
        partition: PartitionId,
        leaves: &[u8],
        keys: Vec<(u64, u64)>,
    ) -> AntiEntropyMessage {
        let replicates = self.ring.preference_list(partition).contains(&self.id);
        let theirs: BTreeSet<(u64, u64)> = keys.into_iter().collect();
        let their_positions: BTreeSet<u64> = theirs.iter().map(|(p, _)| *p).collect();
        let mut ours: BTreeSet<(u64, u64)> = BTreeSet::new();
        for leaf in leaves {
            if (*leaf as usize) < LEAVES {
                ours.extend(
                    self.store
                        .keys_in_leaf(partition, *leaf)
                        .map(|(k, d)| (key_position(k), d)),
                );
            }
        }
        let our_positions: BTreeSet<u64> = ours.iter().map(|(p, _)| *p).collect();
        let (mut states, mut skipped) = (Vec::new(), 0u32);
        let send: BTreeSet<u64> = ours.difference(&theirs).map(|(p, _)| *p).collect();
        for position in send {
            for (key, state) in states_at(&self.store, partition, position) {
                if !their_positions.contains(&position) && !has_visible_value(&state, now) {
                    skipped += 1;
                } else {
                    states.push((key, state));
                }
            }
        }
        let full = self.store.near_limit();
        // Pacing: what this peer takes in comes out of its own budget, whoever started the
        // exchange. A newcomer is exchanged with by every replica of its partitions at once,
        // besides its handoffs; while its budget is spent it asks for nothing, and the
        // partition, left different but not settled, is asked for again at the next exchange.
        self.refill_budget(now);
        let paced = self.budget_overdrawn();
        let mut wants = Vec::new();
        let mut declined = 0u32;
        let wanted: BTreeSet<u64> = theirs.difference(&ours).map(|(p, _)| *p).collect();
        for position in wanted {
            let held = our_positions.contains(&position);
            if !replicates || (!held && full) {
                declined += 1;
            } else if !paced {
                wants.push((position, held));
            }
        }
        self.count_sent(&states);
        self.anti_entropy.stats.skipped += skipped as u64;
        self.anti_entropy.stats.declined += declined as u64;
        AntiEntropyMessage::KeysReply {
            partition,
            root: self.store.trees().root(partition),
            states,
            wants,
            declined,
            skipped,
        }
    }

    fn count_sent(&mut self, states: &[KeyState]) {
        self.anti_entropy.stats.keys_sent += states.len() as u64;
    }

    /// Merges received states into a partition this node replicates, by the repair rule;
    /// returns how many it could not take.
    fn merge_states(&mut self, now: Millis, partition: PartitionId, states: Vec<KeyState>) -> u32 {
        let replicates = self.ring.preference_list(partition).contains(&self.id);
        let mut declined = 0;
        for (key, state) in states {
            if !replicates || self.ring.partition_of(&key) != partition {
                declined += 1;
                continue;
            }
            let before = self.store.digest_of(&key);
            if self.store.merge_repair(&key, &state, now) {
                if self.store.digest_of(&key) != before {
                    self.anti_entropy.stats.keys_repaired += 1;
                    self.note_filling(now);
                }
            } else {
                declined += 1;
            }
        }
        self.anti_entropy.stats.declined += declined as u64;
        declined
    }

    /// Advances the exchange in flight with the reply to its step.
    fn on_step_reply(
        &mut self,
        now: Millis,
        reply: AntiEntropyMessage,
        from_busy: bool,
        out: &mut Outputs,
    ) {
        use AntiEntropyMessage as M;
        let Some(exchange) = self.anti_entropy.exchange.take() else {
            return;
        };
        let mut exchange = exchange;
        match (&exchange.stage, reply) {
            (Stage::Summary { partitions }, M::SummaryReply { roots, mismatch }) => {
                let peer = exchange.peer.clone();
                exchange.queue = match (roots, mismatch) {
                    (_, true) => partitions.iter().copied().collect(),
                    (None, false) => VecDeque::new(),
                    (Some(roots), false) => partitions
                        .iter()
                        .zip(roots)
                        .filter(|(p, theirs)| self.differs(now, &peer, **p, *theirs))
                        .map(|(p, _)| *p)
                        .collect(),
                };
            }
            (
                Stage::Branches { partition },
                M::BranchesReply {
                    partition: p,
                    leaves,
                },
            ) if *partition == p => {
                let differing: Vec<u8> = leaves
                    .into_iter()
                    .filter(|(leaf, theirs)| {
                        (*leaf as usize) < LEAVES
                            && self.store.trees().leaves(p, *leaf as usize / FANOUT)
                                [*leaf as usize % FANOUT]
                                != *theirs
                    })
                    .map(|(leaf, _)| leaf)
                    .collect();
                self.spend(differing.len(), 0);
                exchange.stage = Stage::Keys {
                    partition: p,
                    leaves: differing,
                };
            }
            (
                Stage::Keys { partition, leaves },
                M::KeysReply {
                    partition: p,
                    states,
                    wants,
                    declined,
                    skipped,
                    root,
                },
            ) if *partition == p => {
                let leaves = leaves.clone();
                exchange.their_root = root;
                exchange.left_different |= declined > 0 || skipped > 0;
                let received = states.len();
                let bytes: u64 = states.iter().map(|(k, s)| footprint(k, s)).sum();
                self.spend_on_intake(now, (received, bytes), from_busy);
                let refused = self.merge_states(now, p, states);
                exchange.left_different |= refused > 0;
                let mut push = Vec::new();
                let mut skipped = 0;
                for (position, held) in wants {
                    for (key, state) in states_at(&self.store, p, position) {
                        if !held && !has_visible_value(&state, now) {
                            skipped += 1;
                        } else {
                            push.push((key, state));
                        }
                    }
                }
                self.anti_entropy.stats.skipped += skipped;
                exchange.left_different |= skipped > 0;
                if push.is_empty() {
                    exchange.stage = Stage::Keys {
                        partition: p,
                        leaves,
                    };
                    self.anti_entropy.exchange = Some(exchange);
                    return;
                }
                let bytes: u64 = push.iter().map(|(k, s)| footprint(k, s)).sum();
                self.spend(push.len(), bytes);
                self.count_sent(&push);
                exchange.stage = Stage::Push {
                    partition: p,
                    leaves,
                };
                self.anti_entropy.exchange = Some(exchange);
                let message = M::Push {
                    partition: p,
                    states: push,
                };
                self.send_step(now, message, out);
                return;
            }
            (
                Stage::Push { partition, leaves },
                M::PushReply {
                    partition: p,
                    root,
                    declined,
                },
            ) if *partition == p => {
                let leaves = leaves.clone();
                exchange.their_root = root;
                exchange.left_different |= declined > 0;
                exchange.stage = Stage::Keys {
                    partition: p,
                    leaves,
                };
                self.anti_entropy.exchange = Some(exchange);
                return;
            }
            _ => {
                // A reply that does not fit the stage: give up this exchange.
                self.anti_entropy.exchange = Some(exchange);
                self.end_exchange(now, false);
                return;
            }
        }
        self.anti_entropy.exchange = Some(exchange);
    }

    /// Whether a partition whose root at the peer is `theirs` needs comparing.
    fn differs(&self, now: Millis, peer: &NodeId, partition: PartitionId, theirs: u64) -> bool {
        let ours = self.store.trees().root(partition);
        if ours == theirs {
            return false;
        }
        !matches!(
            self.anti_entropy.settled.get(&(peer.clone(), partition)),
            Some((o, t, until)) if *o == ours && *t == theirs && now < *until
        )
    }

    /// Sends the next step of the exchange in flight (no step is in flight).
    fn next_step(&mut self, now: Millis, out: &mut Outputs) {
        use AntiEntropyMessage as M;
        let Some(mut exchange) = self.anti_entropy.exchange.take() else {
            return;
        };
        // The current partition's next batch of leaves.
        if let Stage::Keys { partition, leaves } = &mut exchange.stage {
            let partition = *partition;
            if !leaves.is_empty() {
                let mut batch = Vec::new();
                let mut keys = Vec::new();
                while let Some(leaf) = leaves.first().copied() {
                    if !batch.is_empty() && keys.len() >= KEYS_PER_STEP {
                        break;
                    }
                    leaves.remove(0);
                    if self.has_bug(PlantedBug::AntiEntropySkipsLeaf) && leaf % 2 == 1 {
                        continue;
                    }
                    batch.push(leaf);
                    keys.extend(
                        self.store
                            .keys_in_leaf(partition, leaf)
                            .map(|(k, d)| (key_position(k), d)),
                    );
                }
                self.spend(0, keys.len() as u64 * 16);
                self.anti_entropy.exchange = Some(exchange);
                let message = M::Keys {
                    partition,
                    leaves: batch,
                    keys,
                };
                self.send_step(now, message, out);
                return;
            }
            // The partition is done: settle it if it was left different on purpose.
            let key = (exchange.peer.clone(), partition);
            let ours = self.store.trees().root(partition);
            if exchange.left_different && ours != exchange.their_root {
                let until = now + SETTLED_FOR_INTERVALS * self.config.anti_entropy_interval_ms;
                self.anti_entropy
                    .settled
                    .insert(key, (ours, exchange.their_root, until));
            } else {
                self.anti_entropy.settled.remove(&key);
            }
            exchange.left_different = false;
        }
        let Some(partition) = exchange.queue.pop_front() else {
            self.anti_entropy.exchange = Some(exchange);
            self.end_exchange(now, true);
            return;
        };
        exchange.stage = Stage::Branches { partition };
        self.anti_entropy.exchange = Some(exchange);
        let branches = self.store.trees().branches(partition).to_vec();
        self.send_step(
            now,
            M::Branches {
                partition,
                branches,
            },
            out,
        );
    }
}
