//! Tombstone collection: forgetting tombstone-only keys once every replica holds them.
//!
//! Tombstones (deletes, and values active expiry reclaimed) are collected when a read that
//! asked every replica finds each holding the same tombstone-only state (or nothing; see
//! `read_repair`). Client reads trigger it, and so does active expiry: when it leaves a key
//! with nothing but tombstones, the key's first live replica reads it from all replicas
//! itself, for nobody. After the grace period the read's coordinator forgets the key and tells
//! the other replicas to (`Forget { key, clock }`); each drops it only if its state is still
//! exactly that one, so a write since keeps the key.

use super::read::ReadSpec;
use super::requests::{Requests, Waiter};
use super::{Node, Outputs};
use crate::core::message::PeerMessage;
use crate::core::store::Store;
use crate::core::types::{Millis, NodeId, Quorum};
use crate::core::version_vector::VersionVector;
use std::collections::BTreeMap;

/// A tombstone-only state to collect: the key, the state's clock, the replicas to tell.
type PendingForget = (Vec<u8>, VersionVector, Vec<NodeId>);

/// Tombstone-only states every replica was seen holding, to collect once their grace period
/// ends: (due time, sequence) → key, state's clock, replicas.
#[derive(Default)]
pub(super) struct Collection {
    pending_forgets: BTreeMap<(Millis, u64), PendingForget>,
}

impl Collection {
    /// Schedules the collection of `key`'s tombstone-only state `clock` at `due`; `seq` (a
    /// fresh request number) orders collections due at the same time.
    pub(super) fn schedule(
        &mut self,
        due: Millis,
        seq: u64,
        key: &[u8],
        clock: VersionVector,
        replicas: Vec<NodeId>,
    ) {
        self.pending_forgets
            .insert((due, seq), (key.to_vec(), clock, replicas));
    }

    /// Forgets every key whose grace period has ended, here and (with `Forget`) at the other
    /// replicas.
    pub(super) fn send_due(
        &mut self,
        now: Millis,
        me: &NodeId,
        store: &mut Store,
        requests: &mut Requests,
        out: &mut Outputs,
    ) {
        while let Some(entry) = self.pending_forgets.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, clock, replicas) = entry.remove();
            for replica in replicas {
                if replica == *me {
                    store.forget(&key, &clock);
                } else {
                    let req = requests.fresh();
                    out.send(
                        replica,
                        PeerMessage::Forget {
                            req,
                            key: key.clone(),
                            clock: clock.clone(),
                        },
                    );
                }
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
        self.collection
            .send_due(now, &self.id, &mut self.store, &mut self.requests, out);
    }
}
