//! Hinted handoff: the states a peer keeps for replicas believed down, and their delivery.
//!
//! # Why
//! A sloppy write (see `write`) does not fail or shrink when a replica is believed down: the
//! coordinator sends the state, with a *hint* naming that replica (its intended owner), to the
//! next healthy peer clockwise past the key's preference list (`Ring::fallbacks`), and that
//! peer's ack counts toward W. The holder hands the state to the owner once it sees it up
//! again, so the owner catches up on writes it missed without waiting for a read.
//!
//! # Promises
//! - **Hints are not owned data.** A holder keeps hinted states here, apart from its store:
//!   they are never read, repaired, evicted or collected as the holder's own, and a hint for a
//!   key the holder later replicates is still handed to its owner.
//! - **A hint is kept until its owner acknowledged it.** Delivery (`HintDeliver`) is repeated
//!   every request timeout until the owner answers; the owner *merges* the state into its store
//!   (a join, never last-write-wins) and answers `HintAck`, and only then does the holder drop
//!   the hint. A hint the owner's store refuses (full, nothing it may evict) is given up and
//!   counted, as a refused `Store` is. A holder that loses its memory loses its hints: nothing
//!   else has them (anti-entropy covers what they carried).
//! - **Bounded.** Per intended owner, a holder keeps at most `max_hints_per_peer` hints and
//!   `max_hint_bytes_per_peer` bytes. A hint over the bound is refused (`StoreRefused`, so the
//!   coordinator does not count it toward W) and counted in `hints_dropped`; hints for the same
//!   owner and key are merged into one.
//! - **Paced.** At most `hint_deliveries_per_tick` deliveries start per tick, over all owners,
//!   and only to owners the membership view shows up. The owners are served in turn from where
//!   the last tick stopped, so one owner's backlog cannot starve the others.
//! - A hint whose owner is no longer a member of the cluster is handed to the key's first
//!   replica instead (to this peer's own store if that is this peer).
//! - **A hint lives less than a tombstone's grace.** A hint not delivered within
//!   `CoreConfig::hint_lifetime_ms` of its taking (the tombstone grace less a request timeout)
//!   is given up and counted (`expired`). A hint older than that could carry a value that a
//!   delete since covered and that tombstone collection already forgot everywhere (it asks
//!   the replicas, not the hint holders): handed to an owner that holds nothing of the key, it
//!   would come back. Anti-entropy carries what an expired hint held, from any replica that
//!   has it (as Cassandra's hints live no longer than its `gc_grace_seconds`).

use super::{Node, Outputs};
use crate::core::message::PeerMessage;
use crate::core::planted::PlantedBug;
use crate::core::ring::PartitionId;
use crate::core::siblings::Siblings;
use crate::core::store::footprint;
use crate::core::types::{Millis, NodeId};
use std::collections::BTreeMap;

/// The hints this peer holds, by intended owner, and the deliveries in flight.
#[derive(Default)]
pub(super) struct Hints {
    owners: BTreeMap<NodeId, OwnerHints>,
    /// Delivery request number → (owner, key) of the hint it carries.
    in_flight: BTreeMap<u64, (NodeId, Vec<u8>)>,
    /// The owner whose turn it is at the next tick.
    next_owner: Option<NodeId>,
    pub(super) counters: HintCounters,
    /// When enabled (simulator), the hints given up since the last take, with their owner.
    given_up: Option<Vec<(NodeId, Vec<u8>, Siblings)>>,
}

/// What a holder keeps for one intended owner. `bytes` is the sum of its hints' `bytes`.
#[derive(Default)]
struct OwnerHints {
    hints: BTreeMap<Vec<u8>, Hint>,
    bytes: u64,
}

struct Hint {
    state: Siblings,
    /// When this peer first took a hint for this owner and key (merges keep it): the hint's
    /// lifetime counts from here.
    taken_at: Millis,
    /// The state's footprint as a store entry: what the byte bound counts.
    bytes: u64,
    /// The delivery in flight (its request number) and when to send it again unacknowledged.
    sent: Option<(u64, Millis)>,
}

/// Hint counters since start.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct HintCounters {
    /// Hints handed over and acknowledged by their owners.
    pub(super) delivered: u64,
    /// Hints refused because this peer's bound for their owner was reached.
    pub(super) dropped: u64,
    /// Hints given up because their owner's full store refused them.
    pub(super) refused: u64,
    /// Hints given up undelivered once their lifetime ended (see the module's promises).
    pub(super) expired: u64,
}

impl Hints {
    /// Hints held now.
    pub(super) fn len(&self) -> usize {
        self.owners.values().map(|o| o.hints.len()).sum()
    }

    pub(super) fn log_given_up(&mut self) {
        self.given_up.get_or_insert_with(Vec::new);
    }

    pub(super) fn take_given_up(&mut self) -> Vec<(NodeId, Vec<u8>, Siblings)> {
        self.given_up
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&NodeId, &[u8], &Siblings)> {
        self.owners.iter().flat_map(|(owner, o)| {
            o.hints
                .iter()
                .map(move |(k, h)| (owner, k.as_slice(), &h.state))
        })
    }

    /// Merges `state`, taken at `taken_at`, into the hint for (`owner`, `key`); false if the
    /// bound refuses it. A merged hint keeps the earlier taking time.
    fn keep(
        &mut self,
        limits: (usize, u64),
        (owner, key): (&NodeId, &[u8]),
        state: &Siblings,
        taken_at: Millis,
    ) -> bool {
        let (max_count, max_bytes) = limits;
        let o = self.owners.entry(owner.clone()).or_default();
        let (merged, old_bytes, taken_at) = match o.hints.get(key) {
            Some(h) => (h.state.merged(state), h.bytes, h.taken_at.min(taken_at)),
            None if o.hints.len() >= max_count => return self.refuse(owner),
            None => (state.clone(), 0, taken_at),
        };
        if let Some(h) = o.hints.get(key) {
            if merged == h.state {
                return true; // nothing new (a duplicate)
            }
        }
        let bytes = footprint(key, &merged);
        if o.bytes - old_bytes + bytes > max_bytes {
            return self.refuse(owner);
        }
        o.bytes = o.bytes - old_bytes + bytes;
        // A changed hint is sent afresh: an ack for the older state must not drop it.
        if let Some(Hint {
            sent: Some((req, _)),
            ..
        }) = o.hints.insert(
            key.to_vec(),
            Hint {
                state: merged,
                bytes,
                taken_at,
                sent: None,
            },
        ) {
            self.in_flight.remove(&req);
        }
        true
    }

    fn refuse(&mut self, owner: &NodeId) -> bool {
        if self.owners.get(owner).is_some_and(|o| o.hints.is_empty()) {
            self.owners.remove(owner);
        }
        self.counters.dropped += 1;
        false
    }

    fn remove(&mut self, owner: &NodeId, key: &[u8]) -> Option<Siblings> {
        self.remove_hint(owner, key).map(|h| h.state)
    }

    fn remove_hint(&mut self, owner: &NodeId, key: &[u8]) -> Option<Hint> {
        let o = self.owners.get_mut(owner)?;
        let hint = o.hints.remove(key)?;
        o.bytes -= hint.bytes;
        if o.hints.is_empty() {
            self.owners.remove(owner);
        }
        if let Some((req, _)) = hint.sent {
            self.in_flight.remove(&req);
        }
        Some(hint)
    }

    /// Removes the hints taken before `taken_before`: (owner, key, state) of each.
    fn remove_taken_before(&mut self, taken_before: Millis) -> Vec<(NodeId, Vec<u8>, Siblings)> {
        let old: Vec<(NodeId, Vec<u8>)> = self
            .owners
            .iter()
            .flat_map(|(owner, o)| {
                o.hints
                    .iter()
                    .filter(|(_, h)| h.taken_at < taken_before)
                    .map(move |(k, _)| (owner.clone(), k.clone()))
            })
            .collect();
        old.into_iter()
            .filter_map(|(owner, key)| {
                let state = self.remove(&owner, &key)?;
                Some((owner, key, state))
            })
            .collect()
    }

    /// The delivery `req` if it is still the one in flight for its hint: (owner, key).
    fn delivery(&self, req: u64) -> Option<&(NodeId, Vec<u8>)> {
        self.in_flight.get(&req)
    }
}

impl Node {
    /// The replicas of `partition` believed down, each paired with the healthy peer past the
    /// preference list that stands in for it (as many as there are such peers).
    pub(super) fn stand_ins(&self, partition: PartitionId) -> Vec<(NodeId, NodeId)> {
        let down: Vec<NodeId> = self
            .ring
            .preference_list(partition)
            .iter()
            .filter(|r| **r != self.id && !self.view.is_up(r))
            .cloned()
            .collect();
        if down.is_empty() {
            return Vec::new();
        }
        let holders = self
            .ring
            .fallbacks(partition)
            .filter(|p| **p != self.id && self.view.is_up(p))
            .take(down.len())
            .cloned();
        down.into_iter().zip(holders).collect()
    }

    /// A coordinator asks us to keep a hint for `owner`.
    pub(super) fn on_hint_store(
        &mut self,
        now: Millis,
        from: NodeId,
        req: u64,
        hint: (Vec<u8>, NodeId, Siblings),
        out: &mut Outputs,
    ) {
        let (key, owner, state) = hint;
        let kept = if owner == self.id {
            // Views disagreed: we are the owner, so this is a plain replicated write.
            self.apply_replicated(&key, &state, now)
        } else {
            let limits = (
                self.config.max_hints_per_peer,
                self.config.max_hint_bytes_per_peer,
            );
            self.hints.keep(limits, (&owner, &key), &state, now)
        };
        let message = if kept {
            PeerMessage::StoreAck { req }
        } else {
            PeerMessage::StoreRefused { req }
        };
        out.send(from, message);
    }

    /// A holder hands us a hint: merged into the store (a join), then acknowledged.
    pub(super) fn on_hint_deliver(
        &mut self,
        now: Millis,
        from: NodeId,
        req: u64,
        key: &[u8],
        state: &Siblings,
        out: &mut Outputs,
    ) {
        let stored = self.has_bug(PlantedBug::HintAckWithoutStoring)
            || self.apply_replicated(key, state, now);
        let message = if stored {
            PeerMessage::HintAck { req }
        } else {
            PeerMessage::HintRefused { req }
        };
        out.send(from, message);
    }

    /// The owner's answer to a delivery: the hint is dropped either way (`stored`: it holds
    /// it; otherwise its store is full and the hint is given up).
    pub(super) fn on_hint_answer(&mut self, from: &NodeId, req: u64, stored: bool) {
        let Some((owner, key)) = self.hints.delivery(req).cloned() else {
            return; // a duplicate, or an answer to a delivery superseded since
        };
        if owner != *from {
            return;
        }
        let Some(state) = self.hints.remove(&owner, &key) else {
            return;
        };
        if stored {
            self.hints.counters.delivered += 1;
        } else {
            self.hints.counters.refused += 1;
            self.give_up_hint(owner, key, state);
        }
    }

    /// A delivery that could not be sent: tried again at the next tick.
    pub(super) fn on_hint_undeliverable(&mut self, req: u64) {
        let Some((owner, key)) = self.hints.in_flight.remove(&req) else {
            return;
        };
        if let Some(hint) = self
            .hints
            .owners
            .get_mut(&owner)
            .and_then(|o| o.hints.get_mut(&key))
        {
            hint.sent = None;
        }
    }

    fn give_up_hint(&mut self, owner: NodeId, key: Vec<u8>, state: Siblings) {
        if let Some(log) = self.hints.given_up.as_mut() {
            log.push((owner, key, state));
        }
    }

    /// One round of handoff: hints whose owner left go to the key's first replica, then up
    /// to `hint_deliveries_per_tick` hints are sent to owners seen up, taking owners in turn.
    pub(super) fn deliver_hints(&mut self, now: Millis, out: &mut Outputs) {
        if self.hints.owners.is_empty() {
            return;
        }
        self.expire_hints(now);
        self.rehome_hints(now);
        let mut budget = self.config.hint_deliveries_per_tick;
        let owners: Vec<NodeId> = {
            let start = self.hints.next_owner.clone();
            let (after, before): (Vec<&NodeId>, Vec<&NodeId>) = self
                .hints
                .owners
                .keys()
                .partition(|o| start.as_ref().is_none_or(|s| *o >= s));
            after.into_iter().chain(before).cloned().collect()
        };
        self.hints.next_owner = None;
        for owner in owners {
            if budget == 0 {
                self.hints.next_owner = Some(owner);
                break;
            }
            if !self.view.is_up(&owner) {
                continue;
            }
            let due: Vec<Vec<u8>> = self.hints.owners[&owner]
                .hints
                .iter()
                .filter(|(_, h)| h.sent.is_none_or(|(_, retry_at)| retry_at <= now))
                .take(budget)
                .map(|(k, _)| k.clone())
                .collect();
            budget -= due.len();
            for key in due {
                self.send_hint(now, &owner, key, out);
            }
        }
    }

    fn send_hint(&mut self, now: Millis, owner: &NodeId, key: Vec<u8>, out: &mut Outputs) {
        let req = self.requests.fresh();
        if self.has_bug(PlantedBug::HintDroppedBeforeAck) {
            // The planted bug: the hint goes with the message, before any ack.
            if let Some(state) = self.hints.remove(owner, &key) {
                out.send(owner.clone(), PeerMessage::HintDeliver { req, key, state });
            }
            return;
        }
        let retry_at = now + self.config.request_timeout_ms;
        let Some(hint) = self
            .hints
            .owners
            .get_mut(owner)
            .and_then(|o| o.hints.get_mut(&key))
        else {
            return;
        };
        if let Some((old, _)) = hint.sent.replace((req, retry_at)) {
            self.hints.in_flight.remove(&old);
        }
        let state = hint.state.clone();
        self.hints
            .in_flight
            .insert(req, (owner.clone(), key.clone()));
        out.send(owner.clone(), PeerMessage::HintDeliver { req, key, state });
    }

    /// Gives up the hints whose lifetime ended undelivered (see the module's promises). A
    /// delivery already sent may still land: it left within the lifetime.
    fn expire_hints(&mut self, now: Millis) {
        let lifetime = self.config.hint_lifetime_ms();
        if self.has_bug(PlantedBug::HintOutlivesGrace) || now < lifetime {
            return;
        }
        for (owner, key, state) in self.hints.remove_taken_before(now - lifetime) {
            self.hints.counters.expired += 1;
            self.give_up_hint(owner, key, state);
        }
    }

    /// Hints for owners that are no longer members go to the key's first replica; those that
    /// land here are merged into the store.
    fn rehome_hints(&mut self, now: Millis) {
        let gone: Vec<NodeId> = self
            .hints
            .owners
            .keys()
            .filter(|o| !self.ring.members().contains(*o))
            .cloned()
            .collect();
        let limits = (
            self.config.max_hints_per_peer,
            self.config.max_hint_bytes_per_peer,
        );
        for owner in gone {
            let keys: Vec<Vec<u8>> = self.hints.owners[&owner].hints.keys().cloned().collect();
            for key in keys {
                let Some(heir) = self.ring.replicas_of(&key).first().cloned() else {
                    continue; // no members at all: keep it
                };
                let hint = self
                    .hints
                    .remove_hint(&owner, &key)
                    .expect("listed just above");
                let kept = if heir == self.id {
                    self.apply_replicated(&key, &hint.state, now)
                } else {
                    self.hints
                        .keep(limits, (&heir, &key), &hint.state, hint.taken_at)
                };
                if !kept {
                    self.hints.counters.refused += 1;
                    self.give_up_hint(owner.clone(), key, hint.state);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(value: &str) -> Siblings {
        Siblings::written_by("A.1", value.as_bytes())
    }

    #[test]
    fn the_bound_refuses_and_counts_what_does_not_fit() {
        let mut hints = Hints::default();
        let owner = NodeId::from("X");
        assert!(hints.keep((2, u64::MAX), (&owner, b"a"), &state("1"), 0));
        assert!(hints.keep((2, u64::MAX), (&owner, b"b"), &state("2"), 0));
        assert!(!hints.keep((2, u64::MAX), (&owner, b"c"), &state("3"), 0));
        // The same key merges into its hint: no new hint, within the count.
        assert!(hints.keep((2, u64::MAX), (&owner, b"a"), &state("4"), 0));
        assert_eq!(hints.len(), 2);
        assert_eq!(hints.counters.dropped, 1);
        // Another owner has its own bound.
        assert!(hints.keep((2, u64::MAX), (&NodeId::from("Y"), b"c"), &state("3"), 0));
        // Bytes: one small state fits, a second does not.
        let mut small = Hints::default();
        let one = footprint(b"a", &state("1"));
        assert!(small.keep((100, one + 10), (&owner, b"a"), &state("1"), 0));
        assert!(!small.keep((100, one + 10), (&owner, b"b"), &state("2"), 0));
        assert_eq!(small.counters.dropped, 1);
        assert_eq!(small.owners[&owner].bytes, one);
        small.remove(&owner, b"a");
        assert!(small.owners.is_empty());
    }
}
