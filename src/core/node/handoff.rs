//! Handoff: data follows the ring. When a ring change (a join, a leave, this peer leaving)
//! leaves this peer holding keys of partitions it no longer replicates, it streams them to the
//! partition's new replicas and drops each copy once a new replica confirmed it.
//!
//! Promises:
//! - One partition at a time, in ring order, in batches of [`BATCH_KEYS`], paced by the same
//!   budget as anti-entropy; per-partition progress (keys handed off, keys left) is reported.
//! - Batches go to the partition's *gainers*: the replicas the ring change added to its
//!   preference list (the peer that took this one's place), not the replicas that stayed,
//!   which hold the data already (and get it from anti-entropy where they do not). Moving a
//!   copy from here to a gainer keeps the number of copies of every key. Only when no gainer
//!   is up do the batches go to the replicas that stayed instead, as before.
//! - A copy is dropped only after every live target acknowledged the batch as stored in
//!   full, and only if the key's state is still the one sent (a write that
//!   arrived meanwhile is sent again with the next round). A batch that is not acknowledged is
//!   sent again after a request timeout.
//! - Bounded in time: a copy still here `tombstone_grace_ms / 4` after the ring change is
//!   dropped unsent (*abandoned*, reported to the simulator). Later, the new replicas may have
//!   collected a delete this stale copy missed, and sending it would bring the value back; the
//!   replicas that stayed, and anti-entropy, restore N copies of everything else.
//! - The receiving side merges handed-off states (a join, never an overwrite) into partitions
//!   it replicates, subject to its memory limit like any replicated write, and paces its
//!   intake by its own budget (the one anti-entropy spends): a batch with states it lacks
//!   that arrives while that budget is overdrawn is refused with the time until it has room
//!   again (one whose states it already holds costs nothing and is taken), and the ex-owner
//!   sends it again then, its own budget refunded. So however many ex-owners stream to one
//!   newcomer at once, together they hand it no more than one peer's budget, and its clients
//!   do not wait behind three peers' worth of merges.

use super::{Node, Outputs};
use crate::core::message::{KeyState, PeerMessage};
use crate::core::ring::{PartitionId, Ring};
use crate::core::siblings::Siblings;
use crate::core::store::footprint;
use crate::core::types::{Millis, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// Keys per handoff batch.
const BATCH_KEYS: usize = 128;

/// A batch waiting for the new replicas' acknowledgements.
#[derive(Debug)]
struct Batch {
    req: u64,
    sent_at: Millis,
    /// The keys sent, with the digest of the state sent.
    keys: Vec<(Vec<u8>, u64)>,
    waiting: BTreeSet<NodeId>,
    /// The new replicas that hold every state of the batch.
    stored_by: Vec<NodeId>,
    /// Whether a replica answered that it could not take all of it (full, its ring does not
    /// make it a replica yet, or pacing its intake): the batch is then sent again.
    refused: bool,
    /// The batch's spend of this peer's budget, per new replica it went to (refunded for a
    /// replica that deferred it).
    cost: (usize, u64),
}

/// One partition being handed off.
#[derive(Debug)]
struct Move {
    /// Drop what is left unsent after this (this peer's clock).
    deadline: Millis,
    batch: Option<Batch>,
    handed_off: u64,
    /// Not before: a new replica asked for the next batch no sooner (pacing its intake).
    resume_at: Millis,
    /// The replicas the ring changes since this move began added to the partition's
    /// preference list (and that are still on it): the batches' targets.
    gainers: BTreeSet<NodeId>,
}

impl Move {
    /// A move to finish by `deadline`, nothing sent yet, no gainer known.
    fn new(deadline: Millis) -> Move {
        Move {
            deadline,
            batch: None,
            handed_off: 0,
            resume_at: 0,
            gainers: BTreeSet::new(),
        }
    }
}

/// A copy this peer dropped as handed off, and the new replicas that confirmed holding it.
#[derive(Clone, Debug)]
pub struct HandedOff {
    pub key: Vec<u8>,
    pub state: Siblings,
    pub confirmed_by: Vec<NodeId>,
}

/// Progress of one partition this peer hands off.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandoffProgress {
    pub partition: PartitionId,
    /// Keys acknowledged and dropped here so far.
    pub keys_done: u64,
    /// Keys still held here.
    pub keys_left: u64,
    /// Bytes still held here (estimated from the store's mean entry size).
    pub bytes_left: u64,
}

#[derive(Debug, Default)]
pub(super) struct Handoff {
    moves: BTreeMap<PartitionId, Move>,
    /// Copies dropped unsent at their deadline, when logging is on (the simulator's).
    abandoned: Option<Vec<(Vec<u8>, Siblings)>>,
    /// Copies dropped as handed off, with the new replicas that confirmed them, when logging
    /// is on.
    handed_off: Option<Vec<HandedOff>>,
    /// Keys handed off since start.
    keys_handed_off: u64,
}

impl Handoff {
    pub(super) fn keys_handed_off(&self) -> u64 {
        self.keys_handed_off
    }

    pub(super) fn is_idle(&self) -> bool {
        self.moves.is_empty()
    }

    fn owns(&self, req: u64) -> Option<PartitionId> {
        self.moves
            .iter()
            .find(|(_, m)| m.batch.as_ref().is_some_and(|b| b.req == req))
            .map(|(p, _)| *p)
    }
}

impl Node {
    /// Starts handing off every partition this peer holds keys of but no longer replicates
    /// (after a ring change from `old_ring`, or when it leaves).
    pub(super) fn plan_handoffs(&mut self, now: Millis, old_ring: &Ring) {
        let deadline = now + self.config.tombstone_grace_ms / 4;
        let held: Vec<PartitionId> = self.store.trees().partitions_held().collect();
        for partition in held {
            let list = self.ring.preference_list(partition);
            if list.contains(&self.id) {
                self.handoff.moves.remove(&partition);
                continue;
            }
            let old_list = old_ring.preference_list(partition);
            let added = list.iter().filter(|m| !old_list.contains(m)).cloned();
            let m = self
                .handoff
                .moves
                .entry(partition)
                .or_insert_with(|| Move::new(deadline));
            // A move that outlives another ring change keeps the gainers still on the list.
            m.gainers.retain(|g| list.contains(g));
            m.gainers.extend(added);
        }
    }

    /// Starts handing off `partition` if this peer holds it without replicating it and no
    /// handoff of it is under way: a replicated write that arrived after the ring moved it
    /// (its targets are then every other replica up, as no gainer is known).
    pub(super) fn hand_off_if_stray(&mut self, now: Millis, partition: PartitionId) {
        if self.handoff.moves.contains_key(&partition)
            || self.ring.preference_list(partition).contains(&self.id)
        {
            return;
        }
        let deadline = now + self.config.tombstone_grace_ms / 4;
        self.handoff.moves.insert(partition, Move::new(deadline));
    }

    /// Makes the node keep what a handoff abandons, and what it drops as handed off, until
    /// [`Node::take_abandoned`] and [`Node::take_handed_off`] (the simulator's accounting).
    pub fn log_abandoned(&mut self) {
        self.handoff.abandoned.get_or_insert_with(Vec::new);
        self.handoff.handed_off.get_or_insert_with(Vec::new);
    }

    /// Copies dropped as handed off since the last call.
    pub fn take_handed_off(&mut self) -> Vec<HandedOff> {
        self.handoff
            .handed_off
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Drops a copy the new replicas `confirmed_by` hold.
    fn drop_handed_off(&mut self, key: &[u8], confirmed_by: &[NodeId]) {
        if let (Some(log), Some(state)) = (self.handoff.handed_off.as_mut(), self.store.peek(key)) {
            log.push(HandedOff {
                key: key.to_vec(),
                state,
                confirmed_by: confirmed_by.to_vec(),
            });
        }
        self.store.hand_off(key);
    }

    /// Copies dropped unsent at their handoff deadline since the last call.
    pub fn take_abandoned(&mut self) -> Vec<(Vec<u8>, Siblings)> {
        self.handoff
            .abandoned
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Whether this peer holds no partition it must still hand off.
    pub fn handoff_done(&self) -> bool {
        self.handoff.is_idle()
    }

    /// What this peer is handing off, per partition. Cheap (no key is visited): keys left come
    /// from the partition's tree, bytes left from the store's mean entry size.
    pub fn handoff_progress(&self) -> Vec<HandoffProgress> {
        let mean_entry = self.store.used_bytes() / (self.store.len() as u64).max(1);
        self.handoff
            .moves
            .iter()
            .map(|(p, m)| {
                let keys_left = self.store.trees().keys_in(*p);
                HandoffProgress {
                    partition: *p,
                    keys_done: m.handed_off,
                    keys_left,
                    bytes_left: keys_left * mean_entry,
                }
            })
            .collect()
    }

    /// Keys this peer handed off since start.
    pub fn keys_handed_off(&self) -> u64 {
        self.handoff.keys_handed_off()
    }

    /// Sends the next batch of the first partition in progress, abandons what passed its
    /// deadline, and resends a batch nobody acknowledged in time.
    pub(super) fn handoff_tick(&mut self, now: Millis, out: &mut Outputs) {
        if self.handoff.is_idle() {
            return;
        }
        self.refill_budget(now);
        let partitions: Vec<PartitionId> = self.handoff.moves.keys().copied().collect();
        for partition in partitions {
            let Some(m) = self.handoff.moves.get(&partition) else {
                continue;
            };
            if now >= m.deadline {
                self.abandon(partition);
                continue;
            }
            if let Some(batch) = &m.batch {
                if now < batch.sent_at + self.config.request_timeout_ms {
                    return; // one batch in flight at a time
                }
            }
            if now < m.resume_at {
                return; // a new replica is pacing its intake
            }
            if self.anti_entropy_budget_overdrawn() {
                return;
            }
            if self.send_batch(now, partition, out) {
                return;
            }
            // Nothing left of that partition: on to the next.
        }
    }

    fn abandon(&mut self, partition: PartitionId) {
        self.handoff.moves.remove(&partition);
        let keys: Vec<Vec<u8>> = self
            .store
            .keys_in_partition(partition)
            .map(|(k, _)| k.to_vec())
            .collect();
        for key in keys {
            if let Some(state) = self.store.peek(&key) {
                self.store.hand_off(&key);
                if let Some(log) = self.handoff.abandoned.as_mut() {
                    log.push((key, state));
                }
            }
        }
    }

    /// The replicas the partition's next batch goes to: its gainers that are up, or when none
    /// is, every other replica that is up (see the module's promises).
    fn handoff_targets(&self, partition: PartitionId) -> BTreeSet<NodeId> {
        let up: BTreeSet<NodeId> = self
            .ring
            .preference_list(partition)
            .iter()
            .filter(|t| **t != self.id && self.view.is_up(t))
            .cloned()
            .collect();
        let gainers: BTreeSet<NodeId> = match self.handoff.moves.get(&partition) {
            Some(m) => up.intersection(&m.gainers).cloned().collect(),
            None => BTreeSet::new(),
        };
        if gainers.is_empty() {
            up
        } else {
            gainers
        }
    }

    /// Sends the partition's next batch; false when none is left to send (the partition is
    /// done) or no new replica is up to take it.
    fn send_batch(&mut self, now: Millis, partition: PartitionId, out: &mut Outputs) -> bool {
        let targets = self.handoff_targets(partition);
        let states: Vec<KeyState> = self
            .store
            .keys_in_partition(partition)
            .take(BATCH_KEYS)
            .filter_map(|(k, _)| self.store.peek(k).map(|s| (k.to_vec(), s)))
            .collect();
        if states.is_empty() {
            self.handoff.moves.remove(&partition);
            return false;
        }
        if targets.is_empty() {
            return false; // wait for a new replica to be up
        }
        let keys: Vec<(Vec<u8>, u64)> = states
            .iter()
            .filter_map(|(k, _)| self.store.digest_of(k).map(|d| (k.clone(), d)))
            .collect();
        let bytes: u64 = states.iter().map(|(k, s)| footprint(k, s)).sum();
        self.spend_anti_entropy_budget(states.len() * targets.len(), bytes * targets.len() as u64);
        let cost = (states.len(), bytes);
        let req = self.requests.fresh();
        if self.has_bug(crate::core::planted::PlantedBug::HandoffDropsEarly) {
            for (key, _) in &states {
                self.drop_handed_off(key, &[]);
            }
        }
        let busy = self.busy(now);
        for to in &targets {
            out.send(
                to.clone(),
                PeerMessage::Handoff {
                    req,
                    partition,
                    states: states.clone(),
                    busy,
                },
            );
        }
        if let Some(m) = self.handoff.moves.get_mut(&partition) {
            m.batch = Some(Batch {
                req,
                sent_at: now,
                keys,
                waiting: targets,
                stored_by: Vec::new(),
                refused: false,
                cost,
            });
        }
        true
    }

    /// A new replica's side: merge what the ex-owner hands over, if this peer replicates the
    /// partition, and say whether all of it is held now.
    pub(super) fn on_handoff(
        &mut self,
        now: Millis,
        (from, from_busy): (NodeId, bool),
        req: u64,
        partition: PartitionId,
        states: Vec<KeyState>,
        out: &mut Outputs,
    ) {
        let replicates = self.ring.preference_list(partition).contains(&self.id);
        // The states that would change something here: only they cost a merge. (Anti-entropy
        // may have brought the rest already; a batch of those is confirmed at once, or its own
        // anti-entropy could keep the budget spent and the ex-owner's copies forever here.)
        let new: Vec<&KeyState> = states
            .iter()
            .filter(|(key, state)| {
                replicates
                    && !self
                        .store
                        .peek(key)
                        .is_some_and(|have| have.context().descends_from(state.context()))
            })
            .collect();
        if !new.is_empty() {
            // Pacing: several ex-owners may stream to this peer at once, each at its own
            // budget; what this peer takes in comes out of its own.
            self.refill_budget(now);
            if let Some(wait) = self.anti_entropy_budget_wait_ms() {
                self.counters.handoff_batches_deferred += 1;
                let retry_after_ms = wait.clamp(1, self.config.request_timeout_ms) as u32;
                let message = PeerMessage::HandoffAck {
                    req,
                    partition,
                    stored: false,
                    retry_after_ms,
                };
                return out.send(from, message);
            }
            let bytes: u64 = new.iter().map(|(k, s)| footprint(k, s)).sum();
            self.spend_on_intake(now, (new.len(), bytes), from_busy);
            self.note_filling(now);
        }
        let mut stored = replicates;
        if replicates {
            for (key, state) in &states {
                if self.ring.partition_of(key) != partition
                    || self.store.merge(key, state, now).is_err()
                {
                    stored = false;
                }
            }
            // Confirmed only if every state is still here once the batch is in: a full store
            // may have evicted one batch key to make room for another.
            stored = stored
                && states.iter().all(|(key, state)| {
                    self.store
                        .peek(key)
                        .is_some_and(|s| s.context().descends_from(state.context()))
                });
        }
        out.send(
            from,
            PeerMessage::HandoffAck {
                req,
                partition,
                stored,
                retry_after_ms: 0,
            },
        );
    }

    /// The ex-owner's side: once every live new replica answered, drop the copies they
    /// confirmed.
    pub(super) fn on_handoff_ack(
        &mut self,
        now: Millis,
        from: &NodeId,
        req: u64,
        (stored, retry_after_ms): (bool, u32),
        out: &mut Outputs,
    ) {
        let Some(partition) = self.handoff.owns(req) else {
            return;
        };
        if retry_after_ms > 0 {
            // Deferred, not refused for good: refund what sending to that replica cost, and
            // send the partition's next batch no sooner than it asked.
            let cost = self
                .handoff
                .moves
                .get(&partition)
                .and_then(|m| m.batch.as_ref())
                .filter(|b| b.waiting.contains(from))
                .map(|b| b.cost);
            if let Some((keys, bytes)) = cost {
                self.refund_anti_entropy_budget(keys, bytes);
                let m = self.handoff.moves.get_mut(&partition).expect("checked");
                m.resume_at = m.resume_at.max(now + Millis::from(retry_after_ms));
            }
        }
        let Some(m) = self.handoff.moves.get_mut(&partition) else {
            return;
        };
        let Some(batch) = m.batch.as_mut() else {
            return;
        };
        if !batch.waiting.remove(from) {
            return;
        }
        if stored {
            batch.stored_by.push(from.clone());
        } else {
            batch.refused = true;
        }
        if !batch.waiting.is_empty() {
            return;
        }
        let batch = m.batch.take().expect("checked above");
        if batch.stored_by.is_empty() || batch.refused {
            // A replica could not take it (full, pacing, or not yet seeing itself as one):
            // sent again at a later tick, abandoned at the deadline.
            return;
        }
        let mut dropped = 0;
        for (key, digest) in batch.keys {
            if self.store.digest_of(&key) == Some(digest) {
                self.drop_handed_off(&key, &batch.stored_by);
                dropped += 1;
            }
        }
        if let Some(m) = self.handoff.moves.get_mut(&partition) {
            m.handed_off += dropped;
        }
        self.handoff.keys_handed_off += dropped;
        if self.store.trees().keys_in(partition) == 0 {
            self.handoff.moves.remove(&partition);
        }
        // The next batch goes at once, as the budget allows.
        self.handoff_tick(now, out);
    }

    /// Whether `req` is a handoff batch of this node.
    pub(super) fn owns_handoff(&self, req: u64) -> bool {
        self.handoff.owns(req).is_some()
    }
}
