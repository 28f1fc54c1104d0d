//! Read repair: once every asked replica answered a read (or its deadline passed), each
//! replica whose state differs from the merge gets the merged state (`Repair`), except a
//! replica that answered while warming (its data is on its way by handoff or anti-entropy).
//! A replica no longer replicating the key by its own ring declines the repair.
//!
//! Replicas merge it (a join), so a repair can never undo a newer write that raced it. When
//! every replica answered with the same tombstone-only state (or nothing), there is nothing to
//! repair: the tombstones are scheduled for collection instead, or collected now if this read
//! confirms a collection scheduled a grace period ago with that very state (see `collection`).

use super::collection::Collection;
use super::read::ReadFlight;
use super::{Node, Outputs};
use crate::core::message::PeerMessage;
use crate::core::types::{Millis, NodeId};

impl Node {
    /// Sends the merged state of `key` to every replica that answered with something else.
    /// Replicas merge it (a join), so a repair can never undo a newer write that raced it.
    pub(super) fn read_repair(&mut self, now: Millis, read: ReadFlight, out: &mut Outputs) {
        let ReadFlight {
            key,
            merged,
            answers,
            confirms,
            warming,
            ..
        } = read;
        let (key, merged) = (key.as_slice(), &merged);
        if merged.context().is_empty() {
            return;
        }
        // Every replica answered with the same tombstones: collect them after the grace
        // period (they cannot come back: no replica holds anything they cover, and the grace
        // outlasts any message in flight that might).
        // (A replica holding nothing agrees: it has nothing the tombstones must cover.) The
        // key's replicas are looked up only for tombstones: most reads find a value.
        let agreeing_replicas = merged.is_tombstones_only().then(|| {
            let replicas: Vec<NodeId> = self.ring.replicas_of(key).to_vec();
            let all_agree = replicas.len() == self.config.replicas
                && replicas.iter().all(|r| {
                    answers
                        .get(r)
                        .is_some_and(|a| a.is_none() || a.as_ref() == Some(merged))
                });
            all_agree.then_some(replicas)
        });
        if let Some(replicas) = agreeing_replicas.flatten() {
            if confirms.as_ref() == Some(merged.context()) {
                // Unchanged on every replica for a whole grace period: forget it.
                let (me, store) = (&self.id, &mut self.store);
                let clock = merged.context();
                Collection::forget(key, clock, replicas, me, store, &mut self.requests, out);
                return;
            }
            let due = now + self.config.tombstone_grace_ms;
            let seq = self.requests.fresh();
            self.collection
                .schedule(due, seq, key, merged.context().clone());
            return;
        }
        for (replica, answer) in answers {
            if answer.as_ref() == Some(merged) || warming.contains(&replica) {
                continue;
            }
            // Tombstones are not pushed to a replica that holds nothing: it has no value for
            // them to cover, and re-adding them would undo their collection.
            if answer.is_none() && merged.is_tombstones_only() {
                continue;
            }
            self.counters.read_repairs += 1;
            if replica == self.id {
                self.store.merge_repair(key, merged, now);
            } else {
                let req = self.requests.fresh();
                out.send(
                    replica,
                    PeerMessage::Repair {
                        req,
                        key: key.to_vec(),
                        state: merged.clone(),
                    },
                );
            }
        }
    }
}
