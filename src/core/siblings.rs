//! The versioned state of one key: concurrent values (siblings), each with its dot, plus one
//! version vector for everything the replica has seen of the key.
//!
//! This is the dotted-version-vector set of Preguiça, Baquero et al. Three operations:
//! - [`Siblings::update`] — what a coordinating replica does for a client write: the new value
//!   gets a fresh dot, and every sibling the client's causal context covers is discarded.
//! - [`Siblings::merge`] — what any replica does with a state from another replica: a sibling
//!   survives unless the other side has seen its dot *and* dropped it.
//! - [`Siblings::context`] — the causal context handed to a client on read.
//!
//! Invariants: every sibling's dot is covered by `clock`; no two siblings share a dot.
//! Replicas only ever exchange whole per-key states (never loose dots), so a version vector
//! without gaps describes the history exactly.
//!
//! Merge laws: `merge` is commutative, associative and idempotent on well-formed states, so
//! replicas converge whatever order states arrive in (proptested below).
//!
//! Why a retried write does not add a sibling (Riak's "sibling explosion"): siblings are
//! identified by dots, not by the coordinator's clock entry, so a write with a context removes
//! exactly what that context saw; and a write whose payload equals a sibling it does not cover
//! (a client retry after a lost reply) replaces that sibling instead of standing beside it.

use crate::core::version_vector::{Actor, Dot, VersionVector};
use serde::{Deserialize, Serialize};

/// What a write stored: bytes with an optional absolute expiry, or a deletion marker.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    Value {
        data: Vec<u8>,
        /// Cluster time in milliseconds at which the value stops being visible.
        expires_at_ms: Option<u64>,
    },
    /// A versioned delete. Kept like a value so a stale replica cannot undo it.
    Tombstone,
}

impl Payload {
    /// Whether a reader at `now_ms` may see this payload as a live value.
    pub fn is_visible_at(&self, now_ms: u64) -> bool {
        match self {
            Payload::Value { expires_at_ms, .. } => expires_at_ms.is_none_or(|t| now_ms < t),
            Payload::Tombstone => false,
        }
    }

    /// Bytes this payload holds, for accounting.
    pub fn len(&self) -> usize {
        match self {
            Payload::Value { data, .. } => data.len(),
            Payload::Tombstone => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The state of one key on one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireSiblings")]
pub struct Siblings {
    /// Everything this replica has seen of the key. Covers every dot in `versions`.
    clock: VersionVector,
    /// The surviving concurrent writes, sorted by dot, no duplicates (a key holds a handful:
    /// a sorted vector is smaller and faster than a tree).
    versions: Vec<(Dot, Payload)>,
}

/// `Siblings` as decoded from the wire, before its invariants are restored.
#[derive(Deserialize)]
struct WireSiblings {
    clock: VersionVector,
    versions: Vec<(Dot, Payload)>,
}

/// Decoding sorts the siblings, keeps one per dot, and makes the clock cover them all, so a
/// malformed state from the wire cannot break the merge.
impl From<WireSiblings> for Siblings {
    fn from(wire: WireSiblings) -> Self {
        let mut versions = wire.versions;
        versions.sort_by(|a, b| a.0.cmp(&b.0));
        versions.dedup_by(|a, b| a.0 == b.0);
        let mut clock = wire.clock;
        for (dot, _) in &versions {
            clock.add(dot);
        }
        Siblings { clock, versions }
    }
}

impl Siblings {
    pub fn new() -> Self {
        Self::default()
    }

    /// A state from its clock and siblings (as the store decodes them), with the invariants
    /// restored as for a state from the wire.
    pub fn from_parts(clock: VersionVector, versions: Vec<(Dot, Payload)>) -> Self {
        WireSiblings { clock, versions }.into()
    }

    /// The causal context a client gets on read and passes back on write.
    pub fn context(&self) -> &VersionVector {
        &self.clock
    }

    pub fn versions(&self) -> impl Iterator<Item = (&Dot, &Payload)> {
        self.versions.iter().map(|(d, p)| (d, p))
    }

    pub fn len(&self) -> usize {
        self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Values a reader at `now_ms` may see (no tombstones, nothing expired), in dot order.
    pub fn visible_values(&self, now_ms: u64) -> Vec<&Payload> {
        self.versions
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.is_visible_at(now_ms))
            .collect()
    }

    /// Applies a client write at the coordinating replica `actor`.
    ///
    /// `context` is what the client read (empty for a blind write). Returns the new dot.
    ///
    /// The state must hold every earlier event of `actor` for this key (the dotted version
    /// vector's invariant): the new dot's counter marks all lower ones as seen. A store that
    /// forgot a key (eviction) therefore writes it under a fresh actor (see `Store::update`).
    pub fn update(
        &mut self,
        actor: &Actor,
        context: &VersionVector,
        payload: Payload,
        max_clock_entries: usize,
    ) -> Dot {
        let counter = self.clock.get(actor).max(context.get(actor)) + 1;
        let dot = Dot {
            actor: actor.clone(),
            counter,
        };
        self.versions
            .retain(|(d, existing)| !context.covers(d) && *existing != payload);
        self.clock.merge(context);
        self.clock.add(&dot);
        // The new dot is above every dot of its actor here, but actors sort by name.
        let at = self
            .versions
            .binary_search_by(|(d, _)| d.cmp(&dot))
            .unwrap_or_else(|i| i);
        self.versions.insert(at, (dot.clone(), payload));
        self.prune_clock(max_clock_entries, actor);
        dot
    }

    /// Joins the state another replica holds for the same key into this one.
    pub fn merge(&mut self, other: &Siblings) {
        let mine = std::mem::take(&mut self.versions);
        let theirs = &other.versions;
        let mut merged = Vec::with_capacity(mine.len().max(theirs.len()));
        // Both lists are sorted by dot: walk them together.
        let mut b = theirs.iter().peekable();
        for (dot, payload) in mine {
            while let Some((d, p)) = b.next_if(|(d, _)| *d < dot) {
                if !self.clock.covers(d) {
                    merged.push((d.clone(), p.clone()));
                }
            }
            match b.next_if(|(d, _)| *d == dot) {
                // Both hold the dot: an expired value that one side already turned into a
                // tombstone is a tombstone on both (a one-way step, so the join stays a join).
                Some((_, p)) => merged.push((dot, join_same_dot(payload, p))),
                None if !other.clock.covers(&dot) => merged.push((dot, payload)),
                None => {}
            }
        }
        for (d, p) in b {
            if !self.clock.covers(d) {
                merged.push((d.clone(), p.clone()));
            }
        }
        self.versions = merged;
        self.clock.merge(&other.clock);
    }

    /// Whether the state holds tombstones only (deletes, and values active expiry reclaimed).
    pub fn is_tombstones_only(&self) -> bool {
        !self.versions.is_empty()
            && self
                .versions
                .iter()
                .all(|(_, p)| matches!(p, Payload::Tombstone))
    }

    /// The earliest expiry among the values, if any has one.
    pub fn earliest_expiry(&self) -> Option<u64> {
        self.versions
            .iter()
            .filter_map(|(_, p)| match p {
                Payload::Value { expires_at_ms, .. } => *expires_at_ms,
                Payload::Tombstone => None,
            })
            .min()
    }

    /// Turns every value expired at `now` into a tombstone under the same dot, dropping its
    /// bytes. Readers see no difference (expired values are invisible); returns how many.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let mut n = 0;
        for (_, payload) in self.versions.iter_mut() {
            if matches!(payload, Payload::Value { expires_at_ms: Some(t), .. } if *t <= now_ms) {
                *payload = Payload::Tombstone;
                n += 1;
            }
        }
        n
    }

    pub fn merged(&self, other: &Siblings) -> Siblings {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// Planted bug: drops every sibling but the one with the greatest dot.
    #[cfg(feature = "planted-bugs")]
    pub fn keep_only_newest(&mut self) {
        if let Some(last) = self.versions.pop() {
            self.versions = vec![last];
        }
    }

    /// Prunes the clock, never forgetting the coordinator's own entry: its next dot for this
    /// key is computed from that entry, and a forgotten entry would let it reuse a dot.
    fn prune_clock(&mut self, max_entries: usize, coordinator: &Actor) {
        let mut keep: Vec<&Actor> = self.versions.iter().map(|(d, _)| &d.actor).collect();
        keep.push(coordinator);
        let mut clock = self.clock.clone();
        clock.prune(max_entries, &keep);
        self.clock = clock;
    }
}

/// The payload two replicas hold under the same dot: equal, or one of them already expired
/// the value into a tombstone.
fn join_same_dot(mine: Payload, theirs: &Payload) -> Payload {
    if mine == *theirs {
        mine
    } else {
        Payload::Tombstone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn actor(name: &str) -> Actor {
        Actor(name.into())
    }

    fn value(s: &str) -> Payload {
        Payload::Value {
            data: s.as_bytes().to_vec(),
            expires_at_ms: None,
        }
    }

    fn datas(s: &Siblings) -> Vec<String> {
        s.versions()
            .map(|(_, p)| match p {
                Payload::Value { data, .. } => String::from_utf8(data.clone()).unwrap(),
                Payload::Tombstone => "<tomb>".to_string(),
            })
            .collect()
    }

    const MAX: usize = 64;

    #[test]
    fn blind_writes_at_two_coordinators_become_siblings() {
        let mut a = Siblings::new();
        let mut b = Siblings::new();
        a.update(&actor("A"), &VersionVector::new(), value("x"), MAX);
        b.update(&actor("B"), &VersionVector::new(), value("y"), MAX);
        let merged = a.merged(&b);
        assert_eq!(datas(&merged), vec!["x", "y"]);
        assert_eq!(merged, b.merged(&a));
    }

    #[test]
    fn a_write_with_the_merged_context_resolves_siblings() {
        let mut a = Siblings::new();
        let mut b = Siblings::new();
        a.update(&actor("A"), &VersionVector::new(), value("x"), MAX);
        b.update(&actor("B"), &VersionVector::new(), value("y"), MAX);
        let mut merged = a.merged(&b);
        let ctx = merged.context().clone();
        merged.update(&actor("A"), &ctx, value("z"), MAX);
        assert_eq!(datas(&merged), vec!["z"]);
        // A replica still holding only "y" learns that "y" was superseded.
        let healed = b.merged(&merged);
        assert_eq!(datas(&healed), vec!["z"]);
    }

    #[test]
    fn a_write_with_stale_context_keeps_the_unseen_sibling() {
        let mut s = Siblings::new();
        s.update(&actor("A"), &VersionVector::new(), value("v1"), MAX);
        let ctx1 = s.context().clone();
        s.update(&actor("A"), &ctx1, value("v2"), MAX);
        // A second client also read v1 and writes v3: v2 was not seen, so it must survive.
        s.update(&actor("A"), &ctx1, value("v3"), MAX);
        assert_eq!(datas(&s), vec!["v2", "v3"]);
    }

    #[test]
    fn a_retried_write_does_not_add_a_sibling() {
        let mut s = Siblings::new();
        s.update(&actor("A"), &VersionVector::new(), value("v1"), MAX);
        let ctx = s.context().clone();
        s.update(&actor("A"), &ctx, value("v2"), MAX);
        s.update(&actor("A"), &ctx, value("v2"), MAX);
        s.update(&actor("A"), &ctx, value("v2"), MAX);
        assert_eq!(datas(&s), vec!["v2"]);
    }

    #[test]
    fn a_tombstone_beats_a_stale_replica() {
        let mut a = Siblings::new();
        a.update(&actor("A"), &VersionVector::new(), value("x"), MAX);
        let stale = a.clone();
        let ctx = a.context().clone();
        a.update(&actor("A"), &ctx, Payload::Tombstone, MAX);
        let merged = stale.merged(&a);
        assert_eq!(datas(&merged), vec!["<tomb>"]);
        assert!(merged.visible_values(0).is_empty());
    }

    #[test]
    fn expired_values_are_not_visible() {
        let mut s = Siblings::new();
        let payload = Payload::Value {
            data: b"x".to_vec(),
            expires_at_ms: Some(1_000),
        };
        s.update(&actor("A"), &VersionVector::new(), payload, MAX);
        assert_eq!(s.visible_values(999).len(), 1);
        assert!(s.visible_values(1_000).is_empty());
    }

    /// A random history: several replicas, each doing writes (with some context it saw) or
    /// merges with another replica. Produces well-formed states to test the merge laws on.
    fn arb_states() -> impl Strategy<Value = Vec<Siblings>> {
        proptest::collection::vec((0usize..3, 0usize..3, any::<bool>(), 0u8..4), 1..25).prop_map(
            |steps| {
                let mut replicas = vec![Siblings::new(), Siblings::new(), Siblings::new()];
                for (i, j, write, v) in steps {
                    if write {
                        let ctx = if v % 2 == 0 {
                            replicas[j].context().clone()
                        } else {
                            VersionVector::new()
                        };
                        let name = format!("R{i}");
                        replicas[i].update(
                            &Actor(name.into()),
                            &ctx,
                            value(&format!("{i}{v}")),
                            MAX,
                        );
                    } else {
                        let other = replicas[j].clone();
                        replicas[i].merge(&other);
                    }
                }
                replicas
            },
        )
    }

    proptest! {
        #[test]
        fn merge_is_commutative(states in arb_states()) {
            prop_assert_eq!(states[0].merged(&states[1]), states[1].merged(&states[0]));
        }

        #[test]
        fn merge_is_associative(states in arb_states()) {
            let (a, b, c) = (&states[0], &states[1], &states[2]);
            prop_assert_eq!(a.merged(b).merged(c), a.merged(&b.merged(c)));
        }

        #[test]
        fn merge_is_idempotent(states in arb_states()) {
            prop_assert_eq!(states[0].merged(&states[0]), states[0].clone());
        }

        #[test]
        fn every_dot_is_covered_by_the_clock(states in arb_states()) {
            let m = states[0].merged(&states[1]).merged(&states[2]);
            for (dot, _) in m.versions() {
                prop_assert!(m.context().covers(dot));
            }
        }

        #[test]
        fn writing_with_the_merged_context_leaves_one_value(states in arb_states()) {
            let mut m = states[0].merged(&states[1]).merged(&states[2]);
            let ctx = m.context().clone();
            m.update(&Actor("R0".into()), &ctx, value("final"), MAX);
            prop_assert_eq!(m.len(), 1);
            for s in &states {
                prop_assert_eq!(s.merged(&m).len(), 1);
            }
        }
    }
}
