//! Membership and ring changes: a new view replaces the node's, and a changed member set
//! rebuilds the ring.
//!
//! A peer that becomes a replica of a partition it did not replicate a moment ago drops the
//! copies it still holds of it (see [`Node::drop_regained_partitions`]). The node always sees
//! itself as up, whatever the view says.

use super::Node;
use crate::core::membership::{Liveness, MembershipView};
#[cfg(feature = "planted-bugs")]
use crate::core::planted::PlantedBug;
use crate::core::ring::Ring;
#[cfg(feature = "planted-bugs")]
use crate::core::siblings::{Payload, Siblings};
use crate::core::types::Millis;

impl Node {
    pub(super) fn on_membership(&mut self, now: Millis, mut view: MembershipView) {
        let me = if self.leaving {
            Liveness::Leaving
        } else {
            Liveness::Up
        };
        view.set(self.id.clone(), me);
        // A peer back up may hold or need what changed meanwhile: compare trees with everyone
        // at once. After a ring change, handoffs move the partitions that changed hands first;
        // anti-entropy follows once they had their time (the warming period).
        let returned = view.iter().any(|(m, l)| {
            l == Liveness::Up && !self.view.is_up(m) && self.view.members().contains(m)
        });
        let ring_changed = view.ring_members() != *self.ring.members();
        let starting = self.ring.members().len() == 1 && self.store.is_empty();
        if ring_changed && !starting {
            let window = self.config.tombstone_grace_ms / 4 + self.config.request_timeout_ms;
            let at = now + window.min(self.config.anti_entropy_interval_ms);
            let members = view.ring_members();
            self.anti_entropy.all_due_at(members.iter(), at);
        }
        if returned || starting {
            self.anti_entropy.all_due_now();
        }
        #[cfg(feature = "planted-bugs")]
        if self.planted == Some(PlantedBug::DropValueAfterCrash)
            && self
                .view
                .iter()
                .any(|(m, l)| l == Liveness::Up && !view.is_up(m))
        {
            self.planted_drop_oldest_values();
        }
        if view.ring_members() != *self.ring.members() {
            let ring = Ring::new(self.config.ring_params(), view.ring_members())
                .expect("ring parameters were validated at start");
            #[cfg(feature = "planted-bugs")]
            if self.planted == Some(PlantedBug::RingChangeDropsHeld) {
                let (old, new) = (&self.ring, &ring);
                let moved: std::collections::BTreeSet<u32> = (0..self.config.partitions)
                    .filter(|p| old.preference_list(*p) != new.preference_list(*p))
                    .collect();
                self.store
                    .drop_where(|key| moved.contains(&new.partition_of(key)));
            }
            self.drop_regained_partitions(&ring);
            self.note_gained_partitions(now, &ring);
            let old_ring = std::mem::replace(&mut self.ring, ring);
            // What this peer holds but no longer replicates follows the ring.
            self.plan_handoffs(now, &old_ring);
        }
        self.view = view;
    }

    /// Planted bug: every key forgets its oldest value but keeps the clock covering it.
    #[cfg(feature = "planted-bugs")]
    fn planted_drop_oldest_values(&mut self) {
        let keys: Vec<Vec<u8>> = self.store.iter().map(|(k, _)| k.to_vec()).collect();
        for key in keys {
            let Some(state) = self.store.peek(&key) else {
                continue;
            };
            let mut versions: Vec<_> = state
                .versions()
                .map(|(d, p)| (d.clone(), p.clone()))
                .collect();
            let Some(oldest) = versions
                .iter()
                .position(|(_, p)| matches!(p, Payload::Value { .. }))
            else {
                continue;
            };
            versions.remove(oldest);
            let forgot = Siblings::from_parts(state.context().clone(), versions);
            self.store.replace(&key, forgot, 0);
        }
    }

    /// Partitions this peer replicates in `new_ring` but not in its current ring are warming:
    /// until their data has had time to arrive (the handoff deadline, then a request timeout),
    /// this peer's answers for them do not count toward a read's R, so a read right after a
    /// join or a leave is answered by replicas that hold the data. A peer that just started
    /// empty and meets peers that are up warms every partition until it has finished an
    /// anti-entropy exchange with each of them (see `Node::startup_synced`), or the same
    /// deadline passed: in a new cluster that takes a round trip, for a restarted peer as long
    /// as filling it takes.
    fn note_gained_partitions(&mut self, now: Millis, new_ring: &Ring) {
        let until = now + self.config.tombstone_grace_ms / 4 + self.config.request_timeout_ms;
        self.warming.retain(|_, t| *t > now);
        // A peer that just started (alone on its ring, holding nothing) and now meets others
        // gains all it replicates: they may hold data it lacks. Whether they look up does not
        // matter: gossip names a fresh peer's fellow members before it has heard from them,
        // so its first view of them says down, and they are up a moment later, with the ring
        // unchanged and nothing left to note the start.
        let others = new_ring.members().iter().any(|m| *m != self.id);
        let just_started = self.ring.members().len() == 1 && self.store.is_empty() && others;
        if just_started {
            self.startup_warming = Some((std::collections::BTreeSet::new(), until));
            let outlast = now + 2 * self.config.request_timeout_ms;
            self.paxos_recovery = Some((std::collections::BTreeSet::new(), outlast));
            return;
        }
        for p in 0..self.config.partitions {
            if new_ring.preference_list(p).contains(&self.id)
                && !self.ring.preference_list(p).contains(&self.id)
            {
                self.warming.insert(p, until);
            }
        }
    }

    /// A peer that becomes a replica of a partition it did not replicate a moment ago may hold
    /// copies from an earlier time it did: they missed every write since, including deletes
    /// whose tombstones may have been collected meanwhile, so they could bring a deleted value
    /// back. They are dropped (like an eviction); the current replicas hold the truth.
    fn drop_regained_partitions(&mut self, new_ring: &Ring) {
        let partitions = self.config.partitions;
        let regained: std::collections::BTreeSet<u32> = (0..partitions)
            .filter(|p| {
                new_ring.preference_list(*p).contains(&self.id)
                    && !self.ring.preference_list(*p).contains(&self.id)
            })
            .collect();
        if regained.is_empty() || self.store.is_empty() {
            return;
        }
        let ring = new_ring;
        self.store
            .drop_where(|key| regained.contains(&ring.partition_of(key)));
    }
}
