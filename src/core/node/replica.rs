//! The replica side: what a peer does with the states, fetches, repairs and forgets other
//! peers send it for keys it replicates.
//!
//! Every incoming state is merged (a join), never overwritten, so the order states arrive in
//! does not matter and a late one cannot undo a newer write. A `Store` is acknowledged with
//! `StoreAck`, or refused with `StoreRefused` when the store is full and may not evict; a
//! `Fetch` is answered with the key's state (or nothing); a `Repair` is merged, but a key the
//! store does not hold is added only below its low-water mark, and a key of a partition this
//! peer no longer replicates not at all; a replicated write to such a partition is kept and
//! the partition handed off again; a `Forget` drops the key only if its state is still the
//! tombstone-only state the clock describes.

use super::{Node, Outputs};
use crate::core::message::PeerMessage;
use crate::core::planted::PlantedBug;
#[cfg(feature = "planted-bugs")]
use crate::core::siblings::Payload;
use crate::core::siblings::Siblings;
use crate::core::types::{Millis, NodeId};
use crate::core::version_vector::VersionVector;

impl Node {
    pub(super) fn on_store(
        &mut self,
        now: Millis,
        from: NodeId,
        req: u64,
        key: &[u8],
        state: &Siblings,
        out: &mut Outputs,
    ) {
        let message = if self.apply_replicated(key, state, now) {
            PeerMessage::StoreAck { req }
        } else {
            PeerMessage::StoreRefused { req }
        };
        out.send(from, message);
    }

    pub(super) fn on_fetch(
        &mut self,
        now: Millis,
        from: NodeId,
        req: u64,
        key: &[u8],
        out: &mut Outputs,
    ) {
        let state = self.store.read(key, now);
        let warming = self.is_warming(self.ring.partition_of(key), now);
        out.send(
            from,
            PeerMessage::FetchReply {
                req,
                state,
                warming,
            },
        );
    }

    /// A repair for a key this peer no longer replicates (its coordinator's ring is older
    /// than this peer's, or the read began before the ring changed) is declined: merged, it
    /// would put back a copy this peer already handed off, where nothing would ever move or
    /// drop it again. The replicas the coordinator read hold the state.
    pub(super) fn on_repair(&mut self, now: Millis, key: &[u8], state: &Siblings) {
        if !self.ring.replicas_of(key).contains(&self.id) {
            return;
        }
        self.store.merge_repair(key, state, now);
    }

    pub(super) fn on_forget(&mut self, key: &[u8], clock: &VersionVector) {
        if self.has_bug(PlantedBug::ForgetDropsLive) {
            #[cfg(feature = "planted-bugs")]
            self.store.forget_unchecked(key);
            return;
        }
        self.store.forget(key, clock);
    }

    /// Joins a state another replica sent into the local store; false if the store is full
    /// and may not evict.
    pub(super) fn apply_replicated(&mut self, key: &[u8], state: &Siblings, now: Millis) -> bool {
        #[cfg(feature = "planted-bugs")]
        match self.planted {
            Some(PlantedBug::LastWriteWins) => {
                self.store.replace(key, state.clone(), now);
                return true;
            }
            Some(PlantedBug::DeleteCoversUnseen) => {
                let local = self.store.peek(key);
                let stored = self.store.merge(key, state, now).is_ok();
                let has_tombstone = state
                    .versions()
                    .any(|(_, p)| matches!(p, Payload::Tombstone));
                if let (true, Some(local), Some(merged)) =
                    (has_tombstone, local, self.store.peek(key))
                {
                    // Drop the values only this replica held, which the delete never saw.
                    let kept: Vec<_> = merged
                        .versions()
                        .filter(|(d, _)| {
                            state.context().covers(d) || !local.versions().any(|(ld, _)| ld == *d)
                        })
                        .map(|(d, p)| (d.clone(), p.clone()))
                        .collect();
                    let clock = merged.context().clone();
                    self.store
                        .replace(key, Siblings::from_parts(clock, kept), now);
                }
                return stored;
            }
            Some(PlantedBug::MergeDropsSibling) => {
                let stored = self.store.merge(key, state, now).is_ok();
                self.store.keep_only_newest_sibling(key, now);
                return stored;
            }
            _ => {}
        }
        let stored = self.store.merge(key, state, now).is_ok();
        // A write for a partition this peer no longer replicates (sent by a coordinator whose
        // ring is older) is kept, never lost, and follows the ring like any copy left behind.
        if stored {
            self.hand_off_if_stray(now, self.ring.partition_of(key));
        }
        stored
    }
}
