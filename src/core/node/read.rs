//! Reads and their quorum.
//!
//! The receiving peer asks as many of the key's live replicas as R needs (`Fetch`; its own
//! copy first when it holds one, the others in a turn that moves with the request number),
//! merges the states it gets, and replies after R of them with the visible siblings (counter
//! siblings joined into one value, see `reader_values`) and one merged context. The key's
//! other live replicas are its *spares*: the read asks them too as soon as one asked replica
//! answers while warming or cannot be reached, a session read's answers do not cover its
//! context, the answers hold only tombstones (collecting them needs every replica's word, see
//! `collection`), or `CoreConfig::read_spare_after_ms` passes without an answer. A read of
//! this peer's warming copy, an expire's read, and the read confirming a collection ask every
//! live replica at once, as every read does with `read_spare_after_ms` at 0. A replica that
//! answered a read of a partition while warming is asked last for that partition, and probed
//! beside the replicas a read waits for once a second until it answers otherwise (see
//! [`WarmingReplicas`]): during a move, reads cost one round trip, not two.
//!
//! It keeps listening until every asked replica answered (or the deadline), then
//! read-repairs those that answered (see `read_repair`); the replicas it never asked are
//! anti-entropy's to converge. A read may wait for a client, for nobody (the node confirming
//! tombstones before collecting them: not counted as a hit or a miss), or be the first half
//! of an expire (see `expire`).

use super::expire::PendingExpire;
use super::requests::{resolve_quorum, scramble, validate_key, Flight, Request, Waiter};
use super::stats::Counters;
use super::{Node, Outputs};
use crate::core::counter::{self, parse_integer};
use crate::core::message::PeerMessage;
use crate::core::planted::PlantedBug;
use crate::core::quorum::{QuorumOutcome, QuorumTracker};
use crate::core::request::{ClientReply, ReadValue, RequestError};
use crate::core::ring::PartitionId;
use crate::core::siblings::{Payload, Siblings};
use crate::core::types::{Millis, NodeId, Quorum};
use crate::core::version_vector::{Dot, VersionVector};
use std::collections::BTreeMap;

/// What to read: the key, how many replicas must answer, and for a session read the context
/// the answer must cover.
pub(super) struct ReadSpec {
    pub(super) key: Vec<u8>,
    pub(super) r: Quorum,
    pub(super) session: Option<VersionVector>,
    /// How long past its expiry a value may still be answered when none is live (see
    /// `ClientRequest::Get`).
    pub(super) stale_ok_ms: Millis,
    /// Set for the read that confirms a scheduled tombstone collection: the clock of the
    /// tombstone-only state every replica was seen holding a grace period ago (see
    /// `collection`).
    pub(super) confirms: Option<VersionVector>,
}

impl ReadSpec {
    /// A plain read of `key` from `r` replicas.
    pub(super) fn plain(key: Vec<u8>, r: Quorum) -> ReadSpec {
        ReadSpec {
            key,
            r,
            session: None,
            stale_ok_ms: 0,
            confirms: None,
        }
    }
}

/// A read waiting for its replicas' states.
#[derive(Debug)]
pub(super) struct ReadFlight {
    pub(super) key: Vec<u8>,
    tracker: QuorumTracker,
    pub(super) merged: Siblings,
    /// What each replica answered, kept to find the stale ones once all have answered.
    pub(super) answers: BTreeMap<NodeId, Option<Siblings>>,
    /// Replicas asked (live ones, including this node if it is a replica).
    asked: usize,
    /// Live replicas not asked yet, kept in reserve (see the module's header).
    spares: Vec<NodeId>,
    /// Replicas asked only to learn whether they still warm (see [`WarmingReplicas`]): their
    /// warming answer, or their silence, does not bring the spares in.
    probes: Vec<NodeId>,
    /// Replicas that answered while warming (see `Node::is_warming`): counted toward R only
    /// once every asked replica answered.
    deferred: Vec<NodeId>,
    /// Every replica that answered while warming. Read repair passes them over: their data
    /// is on its way (handoff, anti-entropy), and a repair per read of a moving partition
    /// would only load the peers serving clients while it arrives.
    pub(super) warming: Vec<NodeId>,
    /// Replicas asked that could not be reached.
    unreachable: usize,
    /// Whether the waiter already has its answer (the read now only waits to repair).
    replied: bool,
    /// The expire this read is the first half of, until the read has its answer.
    expire: Option<Box<PendingExpire>>,
    /// A session read's context: the answer must cover it (see `ClientRequest::Get`).
    session: Option<VersionVector>,
    /// Replicas of the key this node believed down when the read started (not asked).
    not_asked: usize,
    /// How long past its expiry a value may still be answered when none is live.
    stale_ok_ms: Millis,
    /// The collection this read confirms, if it does (see `ReadSpec::confirms`).
    pub(super) confirms: Option<VersionVector>,
}

impl ReadFlight {
    /// Once every replica asked answered (or could not be reached), the warming ones count
    /// toward R after all: they are all there is.
    fn count_deferred_once_all_answered(&mut self) {
        if self.spares.is_empty() && self.answers.len() + self.unreachable >= self.asked {
            for replica in std::mem::take(&mut self.deferred) {
                self.tracker.record_success(&replica);
            }
        }
    }

    /// Whether a session read may answer with what it merged so far: it covers the session's
    /// context, or every replica of the key answered (then the merge is all the cluster holds:
    /// what the context names was evicted, collected or lost, and waiting changes nothing).
    fn session_satisfied(&self) -> bool {
        match &self.session {
            None => true,
            Some(context) => {
                self.merged.context().descends_from(context)
                    || (self.answers.len() >= self.asked
                        && self.spares.is_empty()
                        && self.unreachable == 0
                        && self.not_asked == 0)
            }
        }
    }

    /// Whether a session read can no longer be satisfied: it has no spares left to ask, every
    /// replica it asked answered or failed, and none covers the context.
    fn session_hopeless(&self) -> bool {
        !self.session_satisfied()
            && self.spares.is_empty()
            && self.answers.len() + self.unreachable >= self.asked
    }

    /// Asks the spares too (see the module's header), counting them in `counters`.
    fn ask_spares(
        &mut self,
        (now, req): (Millis, u64),
        waiter: &mut Waiter,
        counters: &mut Counters,
        out: &mut Outputs,
    ) {
        let spares = std::mem::take(&mut self.spares);
        counters.read_spares_asked += spares.len() as u64;
        for spare in &spares {
            self.asked += 1;
            let message = PeerMessage::Fetch {
                req,
                key: self.key.clone(),
            };
            waiter.send(now, spare.clone(), message, out);
        }
    }

    /// Whether this peer's own copy, the only answer asked for, answers the read and leaves
    /// nothing to do after: no other replica asked or deferred to, no session, expire or
    /// collection riding on it, and not tombstones (which need every replica's word, see
    /// `read_repair`). Such a read is answered at once (`settle_read` would reply, find every
    /// asked replica answered, and repair nothing).
    fn decided_by_own_copy(&self) -> bool {
        self.asked == 1
            && self.answers.len() == 1
            && self.deferred.is_empty()
            && self.session.is_none()
            && self.expire.is_none()
            && self.confirms.is_none()
            && !self.merged.is_tombstones_only()
            && self.tracker.outcome() == QuorumOutcome::Met
    }

    /// Whether the answers so far hold tombstones and nothing else: collecting them needs
    /// every replica's answer, so the spares are asked.
    fn found_only_tombstones(&self) -> bool {
        !self.merged.context().is_empty() && self.merged.is_tombstones_only()
    }
}

/// Replicas that answered a read of a partition while warming (moving in): reads of that
/// partition ask them last, as spares, so a read during a move costs one round trip rather than
/// a warming answer and then another. Once a second per partition, one read asks such a
/// replica as well, beside the replicas it waits for (a *probe*: no client waits for it); the
/// first answer that is not warming puts it back in turn. A replica that gives no answer at
/// all for `WarmingReplicas::ASK_LAST_MS` is in turn again too (it may be gone, or down).
#[derive(Default)]
pub(super) struct WarmingReplicas {
    /// Per replica: the partitions it answered warming for, when it last did, and when it was
    /// last probed.
    seen: BTreeMap<NodeId, BTreeMap<PartitionId, Warming>>,
}

#[derive(Clone, Copy)]
struct Warming {
    answered_at: Millis,
    probed_at: Millis,
}

impl WarmingReplicas {
    /// How long a warming answer keeps its replica last in line for that partition, absent
    /// another answer.
    const ASK_LAST_MS: Millis = 30_000;
    /// How often (per replica and partition) a read probes a replica asked last.
    const PROBE_EVERY_MS: Millis = 1_000;

    /// Notes how `replica` answered a read of `partition` at `now`.
    fn note(&mut self, replica: &NodeId, partition: PartitionId, warming: bool, now: Millis) {
        if warming {
            let partitions = self.seen.entry(replica.clone()).or_default();
            // This replica's entries past their time go; a peer that left keeps its entries
            // (at most one per partition) until it is noted again.
            partitions.retain(|_, w| now < w.answered_at + Self::ASK_LAST_MS);
            let probed_at = partitions.get(&partition).map_or(now, |w| w.probed_at);
            partitions.insert(
                partition,
                Warming {
                    answered_at: now,
                    probed_at,
                },
            );
        } else if let Some(partitions) = self.seen.get_mut(replica) {
            partitions.remove(&partition);
            if partitions.is_empty() {
                self.seen.remove(replica);
            }
        }
    }

    /// Whether reads of `partition` ask `replica` last at `now`.
    fn asks_last(&self, replica: &NodeId, partition: PartitionId, now: Millis) -> bool {
        self.seen
            .get(replica)
            .and_then(|partitions| partitions.get(&partition))
            .is_some_and(|w| now < w.answered_at + Self::ASK_LAST_MS)
    }

    /// Whether the read starting at `now` probes `replica` (asked last) for `partition`;
    /// true at most once per [`Self::PROBE_EVERY_MS`].
    fn take_probe(&mut self, replica: &NodeId, partition: PartitionId, now: Millis) -> bool {
        let Some(w) = self
            .seen
            .get_mut(replica)
            .and_then(|partitions| partitions.get_mut(&partition))
        else {
            return false;
        };
        let due =
            now < w.answered_at + Self::ASK_LAST_MS && now >= w.probed_at + Self::PROBE_EVERY_MS;
        if due {
            w.probed_at = now;
        }
        due
    }
}

/// The order in which a read asks `count` replicas, as positions: a rotation whose start moves
/// with the request number, so reads of one key spread over its replicas.
fn in_turn(req: u64, count: usize) -> impl Iterator<Item = usize> {
    // Request numbers step by the shard count, so their low bits alone would always pick
    // the same replica.
    let start = (scramble(req) % count.max(1) as u64) as usize;
    (0..count).map(move |i| (start + i) % count)
}

impl Node {
    /// Starts a read of `key` from `r` replicas for `waiter`; with `expire`, the read is that
    /// expire's first half and shares its deadline.
    pub(super) fn start_read(
        &mut self,
        now: Millis,
        mut waiter: Waiter,
        expire: Option<Box<PendingExpire>>,
        read: ReadSpec,
        out: &mut Outputs,
    ) {
        let ReadSpec {
            key,
            r,
            session,
            stale_ok_ms,
            confirms,
        } = read;
        // The planted bug: answer after R, whatever the session's context.
        let session = session.filter(|_| !self.has_bug(PlantedBug::SessionIgnored));
        let needed =
            match validate_key(&self.config, &key).and_then(|_| resolve_quorum(&self.config, r)) {
                Ok(needed) => needed,
                Err(e) => return waiter.fail(e, out),
            };
        let partition = self.ring.partition_of(&key);
        let replicas: Vec<NodeId> = self.ring.preference_list(partition).to_vec();
        let live = replicas.iter().filter(|r| self.view.is_up(r)).count();
        if live < needed {
            let error = RequestError::Unavailable { needed, got: live };
            return waiter.fail(error, out);
        }
        let deadline = match &expire {
            Some(pending) => pending.deadline,
            None => now + self.config.request_timeout_ms,
        };
        let mut tracker = QuorumTracker::new(needed, replicas.len());
        let mut merged = Siblings::new();
        let mut answers = BTreeMap::new();
        let mut asked = 0;
        let mut not_asked = 0;
        let mut deferred = Vec::new();
        let mut warming_answers = Vec::new();
        let req = self.requests.fresh();
        let warming = self.is_warming(partition, now);
        let holds_key = replicas.contains(&self.id);
        // Who is asked at once: every live replica when the read cannot rest on R of them
        // (see the module's header), else as many as R needs besides this peer's own copy.
        let everyone = self.config.read_spare_after_ms == 0
            || (holds_key && warming)
            || expire.is_some()
            || confirms.is_some();
        // The other live replicas in the order the read would ask them: in turn, except that
        // those that answered warming for this partition lately come last.
        let (remotes, ask_last): (Vec<&NodeId>, Vec<&NodeId>) = replicas
            .iter()
            .filter(|r| **r != self.id && self.view.is_up(r))
            .partition(|r| !self.warming_replicas.asks_last(r, partition, now));
        let wanted = if everyone {
            remotes.len() + ask_last.len()
        } else {
            needed - usize::from(holds_key)
        };
        // A replica asked last is probed now and then beside the other replicas a read asks
        // (not by a read that asks no other: it would stay open for the probe alone).
        let probes: Vec<NodeId> = if everyone || wanted == 0 {
            Vec::new()
        } else {
            ask_last
                .iter()
                .filter(|r| self.warming_replicas.take_probe(r, partition, now))
                .map(|r| (*r).clone())
                .collect()
        };
        let mut in_order: Vec<&NodeId> = in_turn(req, remotes.len()).map(|i| remotes[i]).collect();
        in_order.extend(ask_last);
        let mut spares: Vec<NodeId> = in_order
            .iter()
            .skip(wanted)
            .filter(|r| !probes.contains(r))
            .map(|r| (*r).clone())
            .collect();
        for replica in &replicas {
            if *replica == self.id {
                let local = self.store.read(&key, now);
                if let Some(local) = &local {
                    merged.merge(local);
                }
                answers.insert(replica.clone(), local);
                asked += 1;
                if warming {
                    deferred.push(replica.clone());
                    warming_answers.push(replica.clone());
                } else {
                    tracker.record_success(replica);
                }
            } else if self.view.is_up(replica) {
                if spares.contains(replica) {
                    continue;
                }
                asked += 1;
                let message = PeerMessage::Fetch {
                    req,
                    key: key.clone(),
                };
                waiter.send(now, replica.clone(), message, out);
            } else {
                tracker.record_failure(replica);
                not_asked += 1;
            }
        }
        if self.has_bug(PlantedBug::ReadCountsSpares) {
            // The planted bug: the spares count as answers, and are never asked.
            for spare in spares.drain(..) {
                tracker.record_success(&spare);
            }
        }
        let mut flight = ReadFlight {
            key,
            tracker,
            merged,
            answers,
            asked,
            spares,
            probes,
            deferred,
            warming: warming_answers,
            unreachable: 0,
            replied: false,
            expire,
            session,
            not_asked,
            stale_ok_ms,
            confirms,
        };
        flight.count_deferred_once_all_answered();
        if flight.decided_by_own_copy() {
            // What `settle_read` would do at once, without a place in the request table.
            let found = Ok(&flight.merged);
            return answer_reader(
                &mut self.counters,
                waiter,
                found,
                now,
                flight.stale_ok_ms,
                out,
            );
        }
        self.requests.insert(
            req,
            Request {
                waiter,
                deadline,
                flight: Flight::Read(flight),
            },
        );
        self.settle_read(now, req, out);
        // A read still waiting for its answer asks its spares when their delay has passed.
        if let Some(Flight::Read(read)) = self.requests.flight_mut(req) {
            if !read.replied && !read.spares.is_empty() {
                let due = now.saturating_add(self.config.read_spare_after_ms);
                self.requests.spares_due_at(due, req);
            }
        }
    }

    /// A replica's answer to our `Fetch`; only its first answer counts. A warming answer
    /// brings the spares in: it counts toward R only if nothing better comes.
    pub(super) fn on_fetch_reply(
        &mut self,
        now: Millis,
        from: NodeId,
        req: u64,
        state: Option<Siblings>,
        warming: bool,
        out: &mut Outputs,
    ) {
        if let Some(Request {
            waiter,
            flight: Flight::Read(read),
            ..
        }) = self.requests.get_mut(req)
        {
            if !read.answers.contains_key(&from) {
                let partition = self.ring.partition_of(&read.key);
                self.warming_replicas.note(&from, partition, warming, now);
                if let Some(state) = &state {
                    read.merged.merge(state);
                }
                read.answers.insert(from.clone(), state);
                if warming {
                    read.deferred.push(from.clone());
                    read.warming.push(from.clone());
                    if !read.probes.contains(&from) {
                        read.ask_spares((now, req), waiter, &mut self.counters, out);
                    }
                } else {
                    read.tracker.record_success(&from);
                }
                read.count_deferred_once_all_answered();
            }
            self.settle_read(now, req, out);
        }
    }

    /// A `Fetch` that could not be sent: every spare is asked.
    pub(super) fn on_fetch_undeliverable(
        &mut self,
        now: Millis,
        to: &NodeId,
        req: u64,
        out: &mut Outputs,
    ) {
        if let Some(Request {
            waiter,
            flight: Flight::Read(read),
            ..
        }) = self.requests.get_mut(req)
        {
            read.tracker.record_failure(to);
            read.unreachable += 1;
            if !read.probes.contains(to) {
                read.ask_spares((now, req), waiter, &mut self.counters, out);
            }
            read.count_deferred_once_all_answered();
            self.settle_read(now, req, out);
        }
    }

    /// Reads whose spares came due (`CoreConfig::read_spare_after_ms`) and that have no
    /// answer yet ask their spares.
    pub(super) fn ask_spares_due(&mut self, now: Millis, out: &mut Outputs) {
        for req in self.requests.take_spares_due(now) {
            if let Some(Request {
                waiter,
                flight: Flight::Read(read),
                ..
            }) = self.requests.get_mut(req)
            {
                if !read.replied {
                    read.ask_spares((now, req), waiter, &mut self.counters, out);
                }
            }
        }
    }

    /// Replies to read `req`'s waiter once its quorum is met or can no longer be (an expire
    /// goes on to its rewrite). The read stays until every asked replica answered, then
    /// read-repairs the stale ones.
    fn settle_read(&mut self, now: Millis, req: u64, out: &mut Outputs) {
        let Some(Request {
            waiter,
            flight: Flight::Read(read),
            ..
        }) = self.requests.get_mut(req)
        else {
            return;
        };
        let mut outcome = read.tracker.outcome();
        if outcome == QuorumOutcome::Met && !read.session_satisfied() && !read.spares.is_empty() {
            // The answers so far do not cover the session's context: ask the others.
            read.ask_spares((now, req), waiter, &mut self.counters, out);
        }
        if outcome == QuorumOutcome::Met && !read.session_satisfied() {
            // A session read waits past R for a replica that covers its context, and fails
            // at once when none it asked does (a replica believed down may: retry later).
            outcome = if read.session_hopeless() {
                QuorumOutcome::Failed
            } else {
                QuorumOutcome::Pending
            };
        }
        let session_behind =
            outcome == QuorumOutcome::Failed && read.tracker.outcome() == QuorumOutcome::Met;
        let mut expire = None;
        if !read.replied && outcome != QuorumOutcome::Pending {
            read.replied = true;
            let found = if outcome == QuorumOutcome::Met {
                Ok(&read.merged)
            } else if session_behind {
                Err(RequestError::SessionBehind)
            } else {
                Err(RequestError::Unavailable {
                    needed: read.tracker.needed(),
                    got: read.tracker.successes(),
                })
            };
            // The waiter is answered once; the read stays in flight to repair.
            let waiter = std::mem::replace(waiter, Waiter::Nobody);
            match read.expire.take() {
                Some(pending) => expire = Some((waiter, pending, found.cloned())),
                None => answer_reader(
                    &mut self.counters,
                    waiter,
                    found,
                    now,
                    read.stale_ok_ms,
                    out,
                ),
            }
        }
        let mut done = read.replied && read.answers.len() >= read.asked;
        if done && !read.spares.is_empty() && read.found_only_tombstones() {
            // Collecting tombstones needs every replica's answer (see `read_repair`).
            read.ask_spares((now, req), waiter, &mut self.counters, out);
            done = false;
        }
        if let Some((waiter, pending, found)) = expire {
            self.expire_after_read(now, waiter, *pending, found, out);
        }
        if outcome == QuorumOutcome::Pending || !done {
            return;
        }
        let Some(Request {
            flight: Flight::Read(read),
            ..
        }) = self.requests.remove(req)
        else {
            return;
        };
        self.read_repair(now, read, out);
    }

    /// A read past its deadline: its waiter fails with a timeout, unless it already has its
    /// answer, in which case whoever answered in time is repaired.
    pub(super) fn read_timed_out(
        &mut self,
        now: Millis,
        waiter: Waiter,
        read: ReadFlight,
        out: &mut Outputs,
    ) {
        if read.replied {
            // The waiter has its answer; repair whoever answered in time.
            return self.read_repair(now, read, out);
        }
        // A session read that found no replica covering its context in time.
        if read.tracker.outcome() == QuorumOutcome::Met && !read.session_satisfied() {
            waiter.fail(RequestError::SessionBehind, out);
            return self.read_repair(now, read, out);
        }
        // Warming replicas answered but a silent one kept them from counting: at the
        // deadline they count after all, so warming costs a read latency, never its answer.
        if read.expire.is_none()
            && read.tracker.successes() + read.deferred.len() >= read.tracker.needed()
            && read.session_satisfied()
        {
            let reply = read_reply(&read.merged, now, read.stale_ok_ms);
            if matches!(waiter, Waiter::Client { .. }) {
                self.counters.count_read(&reply);
            }
            waiter.reply(reply, out);
            return self.read_repair(now, read, out);
        }
        let error = RequestError::Timeout {
            needed: read.tracker.needed(),
            got: read.tracker.successes(),
        };
        waiter.fail(error, out);
    }
}

/// What a reader sees of a merged state at `now`. When no value is live and the read accepts
/// stale values (`stale_ok_ms`), it sees what it would have seen `stale_ok_ms` ago, minus
/// nothing newer: the state is the same, only the expiry line moves (a delete or a newer write
/// already replaced the older values in `merged`, so they cannot come back).
/// Answers a read's waiter with what it `found`, counted as a hit or a miss; an internal
/// read, waited for by nobody, is neither answered nor counted.
fn answer_reader(
    counters: &mut Counters,
    waiter: Waiter,
    found: Result<&Siblings, RequestError>,
    now: Millis,
    stale_ok_ms: Millis,
    out: &mut Outputs,
) {
    if matches!(waiter, Waiter::Nobody) {
        return;
    }
    let reply = match found {
        Ok(merged) => read_reply(merged, now, stale_ok_ms),
        Err(error) => ClientReply::Failed(error),
    };
    counters.count_read(&reply);
    waiter.reply(reply, out);
}

fn read_reply(merged: &Siblings, now: Millis, stale_ok_ms: Millis) -> ClientReply {
    let mut values = reader_values(merged, now);
    if values.is_empty() && stale_ok_ms > 0 {
        values = reader_values(merged, now.saturating_sub(stale_ok_ms));
    }
    let context = merged.context().clone();
    if values.is_empty() {
        ClientReply::NotFound { context }
    } else {
        ClientReply::Found { values, context }
    }
}

/// The values a reader sees of a state at `now`: its visible values, except that a key holding
/// a counter shows its counter siblings and integer values joined into one value, in decimal
/// (see `core::counter`); a non-integer value beside a counter stays a sibling of its own.
pub fn reader_values(state: &Siblings, now: Millis) -> Vec<ReadValue> {
    let visible: Vec<(&Dot, &Payload)> = state
        .versions()
        .filter(|(_, p)| p.is_visible_at(now))
        .collect();
    let holds_counter = visible
        .iter()
        .any(|(_, p)| matches!(p, Payload::Counter { .. }));
    let mut values = Vec::with_capacity(visible.len());
    let mut counted = Vec::new();
    for (dot, payload) in visible {
        match payload {
            Payload::Value { data, .. } if holds_counter && parse_integer(data).is_some() => {
                counted.push((dot, payload))
            }
            Payload::Counter { .. } => counted.push((dot, payload)),
            Payload::Value {
                data,
                expires_at_ms,
            } => values.push(ReadValue {
                data: data.clone(),
                expires_at_ms: *expires_at_ms,
            }),
            Payload::Tombstone => {}
        }
    }
    if let Ok(Some((counter, expires_at_ms))) = counter::fold(counted) {
        // A value past i64 (only reachable by joining increments that each fitted) reads
        // as its saturated bound rather than vanishing; INCR on it answers the overflow.
        let value = counter
            .total()
            .map(|t| t.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64);
        if let Some(v) = value {
            values.push(ReadValue {
                data: v.to_string().into_bytes(),
                expires_at_ms,
            });
        }
    }
    values
}

#[cfg(test)]
mod warming_replicas_tests {
    use super::*;

    #[test]
    fn a_warming_replica_is_asked_last_probed_once_a_second_and_back_in_turn_once_it_is_not() {
        let mut w = WarmingReplicas::default();
        let d = NodeId::from("D");
        assert!(!w.asks_last(&d, 3, 0));
        assert!(!w.take_probe(&d, 3, 0), "no probe for a replica in turn");
        w.note(&d, 3, true, 100);
        assert!(w.asks_last(&d, 3, 100));
        assert!(!w.asks_last(&d, 4, 100), "per partition");
        assert!(!w.take_probe(&d, 3, 100 + WarmingReplicas::PROBE_EVERY_MS - 1));
        assert!(w.take_probe(&d, 3, 100 + WarmingReplicas::PROBE_EVERY_MS));
        assert!(
            !w.take_probe(&d, 3, 100 + WarmingReplicas::PROBE_EVERY_MS + 1),
            "once"
        );
        // The probe answered warming again: still last, and its probe clock kept.
        w.note(&d, 3, true, 1_200);
        assert!(w.asks_last(&d, 3, 1_200));
        assert!(!w.take_probe(&d, 3, 1_300));
        assert!(w.take_probe(&d, 3, 2_100));
        // No answer for a long while: back in turn.
        assert!(!w.asks_last(&d, 3, 1_200 + WarmingReplicas::ASK_LAST_MS));
        assert!(!w.take_probe(&d, 3, 1_200 + WarmingReplicas::ASK_LAST_MS + 5_000));
        // An answer that is not warming puts it back in turn at once.
        w.note(&d, 3, true, 50_000);
        w.note(&d, 3, false, 50_001);
        assert!(!w.asks_last(&d, 3, 50_001));
        assert!(w.seen.is_empty());
    }
}
