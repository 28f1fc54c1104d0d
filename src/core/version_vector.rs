//! Version vectors and dots: the causal-history vocabulary of ringcache.
//!
//! A [`VersionVector`] maps each [`Actor`] (one incarnation of a coordinating peer) to the
//! highest event counter of that actor that a piece of state has seen. A [`Dot`] names one
//! event: `(actor, counter)`. Together they form *dotted version vectors*: each stored
//! sibling carries the dot of the write that made it, and the key carries one version vector
//! summarising everything the replica has seen (see [`crate::core::siblings`]).
//!
//! Promises:
//! - `merge` is the pointwise maximum: commutative, associative, idempotent (proptested below).
//! - `compare` is consistent with `merge`: `a <= b` exactly when `a.merge(b) == b`.
//! - Entries are kept in a vector sorted by actor (a key's vector holds a handful of entries:
//!   a sorted vector is smaller and faster than a tree), so iteration, encoding and display
//!   are deterministic.
//!
//! Actors are incarnations, not peers: a peer that restarts with its memory wiped gets a new
//! actor name (the shell appends a boot-time incarnation), so it can never hand out a dot it
//! already handed out before the restart.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// One incarnation of a coordinating peer, e.g. `"A.1732390000123"`. Shared (`Arc`), so the
/// many clocks and dots naming one actor clone it without allocating.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor(pub Arc<str>);

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One write event: the `counter`-th write coordinated by `actor` on some key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub actor: Actor,
    pub counter: u64,
}

/// How two version vectors relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// The left side happened before the right side.
    Before,
    /// The left side happened after the right side.
    After,
    Concurrent,
}

/// A map from actor to the highest counter seen. Missing actors count as zero, and zero
/// counters are never stored, so two vectors are equal exactly when their maps are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<(Actor, u64)>")]
pub struct VersionVector {
    /// Sorted by actor, no duplicates, no zero counters.
    entries: Vec<(Actor, u64)>,
}

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest counter of `actor` this vector has seen (0 when never).
    pub fn get(&self, actor: &Actor) -> u64 {
        match self.find(actor) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    fn find(&self, actor: &Actor) -> Result<usize, usize> {
        self.entries.binary_search_by(|(a, _)| a.cmp(actor))
    }

    /// Raises `actor`'s counter to at least `counter`.
    fn raise(&mut self, actor: &Actor, counter: u64) {
        if counter == 0 {
            return; // zero means "nothing seen"; never stored, so equality stays structural
        }
        match self.find(actor) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(counter),
            Err(i) => self.entries.insert(i, (actor.clone(), counter)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Actor, u64)> {
        self.entries.iter().map(|(a, c)| (a, *c))
    }

    /// Whether the event `dot` is part of the history this vector summarises.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// Records `dot` (and, as version vectors have no gaps, every earlier event of its actor).
    pub fn add(&mut self, dot: &Dot) {
        self.raise(&dot.actor, dot.counter);
    }

    /// Pointwise maximum, in place.
    pub fn merge(&mut self, other: &VersionVector) {
        for (actor, counter) in &other.entries {
            self.raise(actor, *counter);
        }
    }

    /// Pointwise maximum, as a new vector.
    pub fn merged(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// Whether every event in `self` is also in `other`.
    pub fn descends_from(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(a, c)| self.get(a) >= *c)
    }

    pub fn compare(&self, other: &VersionVector) -> Causality {
        match (self.descends_from(other), other.descends_from(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// Keeps the vector at most `max_entries` long by dropping the entries with the smallest
    /// counters, never one named in `keep` (the dots of live siblings).
    ///
    /// Dropping an entry forgets that this key has seen those events. The only consequence is
    /// that a stale sibling with such a dot, still held by some lagging replica, is treated as
    /// concurrent and comes back as an extra sibling: pruning can create a spurious conflict
    /// but can never make the store discard a write. Entries belong to actor *incarnations*
    /// that coordinated writes to this one key, so real vectors stay far below the limit.
    pub fn prune(&mut self, max_entries: usize, keep: &[&Actor]) {
        if self.entries.len() <= max_entries {
            return;
        }
        let mut candidates: Vec<(u64, Actor)> = self
            .entries
            .iter()
            .filter(|(a, _)| !keep.contains(&a))
            .map(|(a, c)| (*c, a.clone()))
            .collect();
        candidates.sort();
        let excess = self.entries.len() - max_entries;
        for (_, actor) in candidates.into_iter().take(excess) {
            if let Ok(i) = self.find(&actor) {
                self.entries.remove(i);
            }
        }
    }
}

/// Decoding goes through `add`, so a vector from the wire (a client's context token, a peer's
/// state) is sorted, free of duplicates and zero counters whatever the bytes said.
impl From<Vec<(Actor, u64)>> for VersionVector {
    fn from(entries: Vec<(Actor, u64)>) -> Self {
        entries.into_iter().collect()
    }
}

impl PartialOrd for VersionVector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.compare(other) {
            Causality::Equal => Some(Ordering::Equal),
            Causality::Before => Some(Ordering::Less),
            Causality::After => Some(Ordering::Greater),
            Causality::Concurrent => None,
        }
    }
}

impl FromIterator<(Actor, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (Actor, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (actor, counter) in iter {
            vv.add(&Dot { actor, counter });
        }
        vv
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (actor, counter)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{actor}:{counter}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_decoded_from_the_wire_is_normalised() {
        let config = bincode::config::standard();
        let raw: Vec<(Actor, u64)> = vec![
            (Actor("B".into()), 2),
            (Actor("A".into()), 1),
            (Actor("B".into()), 5),
            (Actor("C".into()), 0),
        ];
        let bytes = bincode::serde::encode_to_vec(&raw, config).unwrap();
        let (vv, _): (VersionVector, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        let expected: VersionVector = [(Actor("A".into()), 1), (Actor("B".into()), 5)]
            .into_iter()
            .collect();
        assert_eq!(vv, expected);
        assert_eq!(vv.to_string(), "{A:1, B:5}");
    }
    use proptest::prelude::*;

    pub(crate) fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::btree_map(0u8..5, 0u64..6, 0..5).prop_map(|m| {
            m.into_iter()
                .map(|(a, c)| (Actor(format!("n{a}").into()), c))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arb_vv(), b in arb_vv()) {
            prop_assert_eq!(a.merged(&b), b.merged(&a));
        }

        #[test]
        fn merge_is_associative(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
        }

        #[test]
        fn merge_is_idempotent(a in arb_vv()) {
            prop_assert_eq!(a.merged(&a), a.clone());
        }

        #[test]
        fn merge_is_an_upper_bound(a in arb_vv(), b in arb_vv()) {
            let m = a.merged(&b);
            prop_assert!(m.descends_from(&a));
            prop_assert!(m.descends_from(&b));
        }

        #[test]
        fn compare_agrees_with_merge(a in arb_vv(), b in arb_vv()) {
            let le = a.merged(&b) == b;
            let ge = a.merged(&b) == a;
            let expected = match (le, ge) {
                (true, true) => Causality::Equal,
                (true, false) => Causality::Before,
                (false, true) => Causality::After,
                (false, false) => Causality::Concurrent,
            };
            prop_assert_eq!(a.compare(&b), expected);
        }

        #[test]
        fn compare_is_antisymmetric(a in arb_vv(), b in arb_vv()) {
            let flipped = match a.compare(&b) {
                Causality::Before => Causality::After,
                Causality::After => Causality::Before,
                other => other,
            };
            prop_assert_eq!(b.compare(&a), flipped);
        }
    }

    #[test]
    fn zero_entries_do_not_matter_for_coverage() {
        let a: VersionVector = [(Actor("x".into()), 2)].into_iter().collect();
        assert!(a.covers(&Dot {
            actor: Actor("x".into()),
            counter: 2
        }));
        assert!(!a.covers(&Dot {
            actor: Actor("x".into()),
            counter: 3
        }));
        assert!(!a.covers(&Dot {
            actor: Actor("y".into()),
            counter: 1
        }));
    }

    /// Found by proptest: a zero counter must not make an empty vector look "before" itself.
    #[test]
    fn a_zero_counter_is_the_same_as_no_entry() {
        let zero: VersionVector = [(Actor("n0".into()), 0)].into_iter().collect();
        assert_eq!(zero, VersionVector::new());
        assert_eq!(VersionVector::new().compare(&zero), Causality::Equal);
        let mut merged = VersionVector::new();
        merged.merge(&zero);
        assert!(merged.is_empty());
    }

    #[test]
    fn prune_drops_smallest_counters_but_keeps_named_actors() {
        let mut v: VersionVector = (0..6)
            .map(|i| (Actor(format!("a{i}").into()), i + 1))
            .collect();
        let keep = Actor("a0".into());
        v.prune(3, &[&keep]);
        assert_eq!(v.len(), 3);
        assert_eq!(
            v.get(&keep),
            1,
            "a kept actor survives even with the smallest counter"
        );
        assert_eq!(v.get(&Actor("a5".into())), 6);
        assert_eq!(v.get(&Actor("a4".into())), 5);
        assert_eq!(v.get(&Actor("a1".into())), 0);
    }
}
