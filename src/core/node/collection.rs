//! Tombstone collection: forgetting tombstone-only keys once every replica holds them.
//!
//! Tombstones (deletes, and values active expiry reclaimed) are collected when a read that
//! asked every replica finds each holding the same tombstone-only state (or nothing; see
//! `read_repair`). Client reads trigger it, and so does active expiry: when it leaves a key
//! with nothing but tombstones, the key's first live replica reads it from all replicas
//! itself, for nobody. When the grace period ends the coordinator reads the key from every
//! replica again; only if each still holds exactly that state (or nothing) does it forget the
//! key and tell the other replicas to (`Forget { key, clock }`), and each drops it only if its
//! state is still exactly that one, so a write since keeps the key.
//!
//! # Why read again
//! A replica that held nothing when the tombstones were seen may receive, during the grace, a
//! value they cover: a hint taken before the delete, a delayed message. Forgetting then would
//! leave that value alone on it, and anti-entropy would copy it back to the others. The
//! confirming read finds it instead, and read repair gives that replica the tombstones. What
//! could still arrive after the confirming read is bounded: messages in flight end within the
//! grace, and hints live less than it (`CoreConfig::hint_lifetime_ms`).

use super::read::ReadSpec;
use super::requests::{Requests, Waiter};
use super::{Node, Outputs};
use crate::core::message::PeerMessage;
use crate::core::planted::PlantedBug;
use crate::core::store::Store;
use crate::core::types::{Millis, NodeId, Quorum};
use crate::core::version_vector::VersionVector;
use std::collections::BTreeMap;

/// A tombstone-only state to collect: the key and the state's clock.
type PendingForget = (Vec<u8>, VersionVector);

/// Tombstone-only states every replica was seen holding, to collect once their grace period
/// ends: (due time, sequence) → key, state's clock.
#[derive(Default)]
pub(super) struct Collection {
    pending_forgets: BTreeMap<(Millis, u64), PendingForget>,
}

impl Collection {
    /// Schedules the collection of `key`'s tombstone-only state `clock` at `due`; `seq` (a
    /// fresh request number) orders collections due at the same time.
    pub(super) fn schedule(&mut self, due: Millis, seq: u64, key: &[u8], clock: VersionVector) {
        self.pending_forgets
            .insert((due, seq), (key.to_vec(), clock));
    }

    /// Takes the collections whose grace period has ended: (key, clock) of each.
    pub(super) fn take_due(&mut self, now: Millis) -> Vec<(Vec<u8>, VersionVector)> {
        let mut due = Vec::new();
        while let Some(entry) = self.pending_forgets.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, clock) = entry.remove();
            due.push((key, clock));
        }
        due
    }

    /// Forgets `key` here if this peer is among `replicas`, and tells the other replicas to
    /// (`Forget`): each drops the key only if its state's clock is still `clock`.
    pub(super) fn forget(
        key: &[u8],
        clock: &VersionVector,
        replicas: Vec<NodeId>,
        me: &NodeId,
        store: &mut Store,
        requests: &mut Requests,
        out: &mut Outputs,
    ) {
        for replica in replicas {
            if replica == *me {
                store.forget(key, clock);
            } else {
                let req = requests.fresh();
                out.send(
                    replica,
                    PeerMessage::Forget {
                        req,
                        key: key.to_vec(),
                        clock: clock.clone(),
                    },
                );
            }
        }
    }
}

impl Node {
    /// Runs one round of active expiry. A key whose values all expired is collected like a
    /// deleted one: its first live replica reads it from every replica, which schedules the
    /// collection if they agree. A value is reclaimed only once it has been expired for the
    /// stale window (`CoreConfig::stale_window_ms`), so stale reads can still find it.
    pub(super) fn expire_and_collect(&mut self, now: Millis, out: &mut Outputs) {
        let reclaim_before = now.saturating_sub(self.config.stale_window_ms);
        for key in self.store.expire_step(reclaim_before) {
            let first_live = self
                .ring
                .replicas_of(&key)
                .iter()
                .find(|r| self.view.is_up(r))
                .cloned();
            if first_live.as_ref() == Some(&self.id) {
                let read = ReadSpec::plain(key, Quorum::All);
                self.start_read(now, Waiter::Nobody, None, read, out);
            }
        }
        for (key, clock) in self.collection.take_due(now) {
            // The planted bugs: a forget sent without reading again (a Forget that drops
            // live values is only reachable through that hole once the read confirms).
            if self.has_bug(PlantedBug::ForgetWithoutConfirming)
                || self.has_bug(PlantedBug::ForgetDropsLive)
            {
                let replicas = self.ring.replicas_of(&key).to_vec();
                let (me, store) = (&self.id, &mut self.store);
                Collection::forget(&key, &clock, replicas, me, store, &mut self.requests, out);
                continue;
            }
            let read = ReadSpec {
                confirms: Some(clock),
                ..ReadSpec::plain(key, Quorum::All)
            };
            self.start_read(now, Waiter::Nobody, None, read, out);
        }
    }
}
