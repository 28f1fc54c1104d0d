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

use crate::core::counter::Counter;
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
    /// A counter's state (see [`crate::core::counter`]): readers join every counter sibling
    /// of a key into one value.
    Counter {
        counter: Counter,
        /// As for a value: cluster time in milliseconds at which the counter stops being
        /// visible.
        expires_at_ms: Option<u64>,
    },
}

impl Payload {
    /// Whether a reader at `now_ms` may see this payload as a live value.
    pub fn is_visible_at(&self, now_ms: u64) -> bool {
        match self {
            Payload::Value { expires_at_ms, .. } => expires_at_ms.is_none_or(|t| now_ms < t),
            Payload::Tombstone => false,
            // A deleted counter nothing was counted on since is absent.
            Payload::Counter {
                counter,
                expires_at_ms,
            } => expires_at_ms.is_none_or(|t| now_ms < t) && counter.value() != Ok(None),
        }
    }

    /// The expiry of a value or counter.
    pub fn expires_at_ms(&self) -> Option<u64> {
        match self {
            Payload::Value { expires_at_ms, .. } | Payload::Counter { expires_at_ms, .. } => {
                *expires_at_ms
            }
            Payload::Tombstone => None,
        }
    }

    /// Bytes this payload holds, for accounting.
    pub fn len(&self) -> usize {
        match self {
            Payload::Value { data, .. } => data.len(),
            Payload::Tombstone => 0,
            Payload::Counter { counter, .. } => counter.heap_bytes(),
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
    ///
    /// The counter never wraps. Should `actor` already stand at `u64::MAX` here or in the
    /// context, the write is minted under an overflow actor (`actor` + `"+"`, repeated while that
    /// one is exhausted too) whose next counter is fresh. That is sound for the same reason as
    /// the eviction epochs: only this coordinator mints dots of its own actor names, so this
    /// state holds every earlier event of the overflow actor as well. A wrapped counter would
    /// instead mint a dot the clock already covers, and every replica would drop the write.
    /// The path is unreachable in practice: clients can only send contexts the cluster issued
    /// (a MAC'd token) with counters at most `api::causal_context::MAX_CONTEXT_COUNTER`
    /// (2^62), and each write raises a counter by one.
    pub fn update(
        &mut self,
        actor: &Actor,
        context: &VersionVector,
        payload: Payload,
        max_clock_entries: usize,
    ) -> Dot {
        self.update_with(actor, context, |_, _| payload, max_clock_entries)
    }

    /// [`Self::update`] with a payload made from the new dot and the state before the write
    /// (a counter's increment raises the tally of the dot's actor; a reset names its dot).
    pub fn update_with(
        &mut self,
        actor: &Actor,
        context: &VersionVector,
        make: impl FnOnce(&Dot, &Siblings) -> Payload,
        max_clock_entries: usize,
    ) -> Dot {
        let (dot, exhausted) = self.next_dot(actor, context);
        let payload = make(&dot, self);
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
        let mut coordinators: Vec<&Actor> = exhausted.iter().collect();
        coordinators.push(&dot.actor);
        self.prune_clock(max_clock_entries, &coordinators);
        dot
    }

    /// A write under a dot its caller minted: a conditional write's dot names the Paxos ballot
    /// that chose it (`core::paxos::Ballot::dot`), unique to that proposal. The dot must be
    /// above everything this state and `context` hold of its actor. Otherwise as [`Self::update`].
    pub fn update_at(
        &mut self,
        dot: Dot,
        context: &VersionVector,
        payload: Payload,
        max_clock_entries: usize,
    ) {
        debug_assert!(!self.clock.covers(&dot) && !context.covers(&dot));
        self.versions
            .retain(|(d, existing)| !context.covers(d) && *existing != payload);
        self.clock.merge(context);
        self.clock.add(&dot);
        let at = self
            .versions
            .binary_search_by(|(d, _)| d.cmp(&dot))
            .unwrap_or_else(|i| i);
        let actor = dot.actor.clone();
        self.versions.insert(at, (dot, payload));
        self.prune_clock(max_clock_entries, &[&actor]);
    }

    /// The next dot `actor` mints here after `context`: one above the highest counter either
    /// has seen, under an overflow actor when that counter is exhausted (see [`Self::update`]).
    /// Also returns the exhausted actors passed over, which the clock must keep like the
    /// coordinator itself (a pruned entry would let its actor mint an old dot again).
    /// Terminates: the clock and the context name finitely many actors, so some overflow actor
    /// has counter zero.
    fn next_dot(&self, actor: &Actor, context: &VersionVector) -> (Dot, Vec<Actor>) {
        let mut actor = actor.clone();
        let mut exhausted = Vec::new();
        loop {
            let seen = self.clock.get(&actor).max(context.get(&actor));
            match seen.checked_add(1) {
                Some(counter) => return (Dot { actor, counter }, exhausted),
                None => {
                    let next = Actor(format!("{}+", actor.0).into());
                    exhausted.push(std::mem::replace(&mut actor, next));
                }
            }
        }
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
            .filter_map(|(_, p)| p.expires_at_ms())
            .min()
    }

    /// Turns every value expired at `now` into a tombstone under the same dot, dropping its
    /// bytes. Readers see no difference (expired values are invisible); returns how many.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let mut n = 0;
        for (_, payload) in self.versions.iter_mut() {
            if payload.expires_at_ms().is_some_and(|t| t <= now_ms) {
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
    /// Only the clock changes, so pruning never discards a write: at worst a stale sibling a
    /// lagging replica still holds comes back as a spurious conflict (tested below).
    fn prune_clock(&mut self, max_entries: usize, coordinators: &[&Actor]) {
        let mut keep: Vec<&Actor> = self.versions.iter().map(|(d, _)| &d.actor).collect();
        keep.extend_from_slice(coordinators);
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
impl Siblings {
    /// A key's state after one write of `value` by `actor` with no context: what tests hand a
    /// replica as if another peer had written it.
    pub(crate) fn written_by(actor: &str, value: &[u8]) -> Siblings {
        let mut state = Siblings::new();
        let payload = Payload::Value {
            data: value.to_vec(),
            expires_at_ms: None,
        };
        state.update(&Actor(actor.into()), &VersionVector::new(), payload, 64);
        state
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

    /// A context (or clock) at `u64::MAX` for the coordinator must not wrap its next counter:
    /// a wrapped dot is covered by every clock that saw the context, so each replica would
    /// drop the write it acknowledged. The write goes to a fresh overflow actor instead, later
    /// writes keep superseding it, a merge keeps it, and pruning keeps the exhausted entry.
    #[test]
    fn an_exhausted_counter_never_wraps_and_writes_stay_readable() {
        let a = actor("A");
        let exhausted: VersionVector = [(a.clone(), u64::MAX), (actor("A+"), u64::MAX)]
            .into_iter()
            .collect();
        let mut s = Siblings::new();
        let first = s.update(&a, &exhausted, value("v1"), 1);
        assert_eq!(
            first,
            Dot {
                actor: actor("A++"),
                counter: 1
            }
        );
        assert_eq!(s.visible_values(0), vec![&value("v1")]);
        assert_eq!(s.context().get(&a), u64::MAX, "the exhausted entry is kept");
        assert_eq!(s.context().get(&actor("A+")), u64::MAX);

        let ctx = s.context().clone();
        let second = s.update(&a, &ctx, value("v2"), 1);
        assert_eq!(
            second,
            Dot {
                actor: actor("A++"),
                counter: 2
            }
        );
        assert_eq!(s.visible_values(0), vec![&value("v2")]);
        let blind = s.update(&a, &VersionVector::new(), value("v3"), 1);
        assert_eq!(blind.counter, 3);
        assert_eq!(
            s.len(),
            2,
            "a blind write stands beside what it did not see"
        );

        // Another replica that saw the exhausted context keeps the writes when it merges.
        let mut other = Siblings::new();
        other.merge(&s);
        let mut replica = Siblings::from_parts(exhausted, vec![]);
        replica.merge(&other);
        let mut seen: Vec<_> = replica.visible_values(0).into_iter().cloned().collect();
        seen.sort_by_key(|p| format!("{p:?}"));
        assert_eq!(seen, vec![value("v2"), value("v3")]);
    }

    fn datas(s: &Siblings) -> Vec<String> {
        s.versions()
            .map(|(_, p)| match p {
                Payload::Value { data, .. } => String::from_utf8(data.clone()).unwrap(),
                Payload::Tombstone => "<tomb>".to_string(),
                Payload::Counter { .. } => "<counter>".to_string(),
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

    #[test]
    fn pruning_forgets_superseded_actors_but_no_write() {
        // Four actors each overwrite the key in turn at one replica; a replica that lags holds
        // B's superseded value, and another holds a concurrent value E wrote.
        let mut s = Siblings::new();
        let mut lagging = Siblings::new();
        for name in ["A", "B", "C", "D"] {
            let ctx = s.context().clone();
            s.update(&actor(name), &ctx, value(name), MAX);
            if name == "B" {
                lagging = s.clone();
            }
        }
        let mut concurrent = lagging.clone();
        let ctx = concurrent.context().clone();
        concurrent.update(&actor("E"), &ctx, value("E"), MAX);
        // X overwrites D under a limit of two clock entries: X (the coordinator and the one
        // live sibling) stays, the three entries with the smallest counters (A, B, C) go.
        let ctx = s.context().clone();
        let mut unpruned = s.clone();
        unpruned.update(&actor("X"), &ctx, value("X"), MAX);
        s.update(&actor("X"), &ctx, value("X"), 2);
        assert_eq!(datas(&s), vec!["X"]);
        assert_eq!(s.context().to_string(), "{D:1, X:1}");
        assert_eq!(unpruned.context().to_string(), "{A:1, B:1, C:1, D:1, X:1}");
        // The lagging replica's B is no longer known as seen: it comes back as a spurious
        // sibling (the documented cost), where the unpruned state would have dropped it...
        assert_eq!(datas(&unpruned.merged(&lagging)), vec!["X"]);
        assert_eq!(datas(&s.merged(&lagging)), vec!["B", "X"]);
        assert_eq!(datas(&lagging.merged(&s)), vec!["B", "X"]);
        // ...a write the pruned replica never saw survives either way...
        assert_eq!(datas(&unpruned.merged(&concurrent)), vec!["E", "X"]);
        assert_eq!(datas(&s.merged(&concurrent)), vec!["E", "X"]);
        // ...and a client that reads the spurious conflict resolves it with one write, like
        // any conflict (provided that write's pruning does not forget B again: the limit is
        // meant to sit far above the actors a key really sees).
        let mut healed = s.merged(&lagging);
        let ctx = healed.context().clone();
        healed.update(&actor("X"), &ctx, value("Y"), MAX);
        assert_eq!(datas(&healed), vec!["Y"]);
        assert_eq!(datas(&lagging.merged(&healed)), vec!["Y"]);
    }

    #[test]
    fn pruning_keeps_live_dots_and_the_coordinator_even_below_the_limit() {
        // Three concurrent siblings (A, B, C) and a coordinator X with no sibling of its own.
        let mut s = Siblings::new();
        for name in ["A", "B", "C"] {
            let mut other = Siblings::new();
            other.update(&actor(name), &VersionVector::new(), value(name), MAX);
            s.merge(&other);
        }
        let ctx = s.context().clone();
        s.update(&actor("X"), &ctx, value("X"), MAX);
        let mut lagging_x = Siblings::new();
        lagging_x.merge(&s);
        let mut more = Siblings::new();
        more.update(&actor("Z"), &VersionVector::new(), value("Z"), MAX);
        s.merge(&more);
        let ctx = s.context().clone();
        s.update(&actor("A"), &ctx, value("A2"), MAX);
        // Now: siblings A:2 only; clock {A:2, B:1, C:1, X:1, Z:1}; coordinator X.
        s.prune_clock(0, &[&actor("X")]);
        assert_eq!(s.context().to_string(), "{A:2, X:1}");
        assert_eq!(datas(&s), vec!["A2"]);
        // X's next dot is X:2, not a second X:1.
        let dot = s.update(&actor("X"), &VersionVector::new(), value("X2"), 0);
        assert_eq!(dot.counter, 2);
    }

    /// One step of a random history over three replicas.
    #[derive(Clone, Debug)]
    enum Step {
        /// A client write coordinated by replica `at`, with the context replica `ctx_from`
        /// holds (a read there) or none (a blind write).
        Write {
            at: usize,
            ctx_from: Option<usize>,
            payload: u8,
        },
        /// Replica `into` joins the state replica `from` holds.
        Merge { into: usize, from: usize },
        /// Replica `at` restarts under a fresh actor (an incarnation, as after an eviction),
        /// keeping its state: the key's clock gains actors without losing any.
        Restart { at: usize },
        /// Replica `at` runs active expiry at time `now_ms`.
        Expire { at: usize, now_ms: u64 },
    }

    /// The payloads a write stores: plain values, values that expire (at 10, 20 or 30 ms,
    /// so expiry steps turn some into tombstones and not others), and deletes.
    fn payload(at: usize, kind: u8) -> Payload {
        match kind % 8 {
            0..=2 => value(&format!("{at}{kind}")),
            3..=5 => Payload::Value {
                data: format!("{at}{kind}t").into_bytes(),
                expires_at_ms: Some(10 * u64::from(kind % 8 - 2)),
            },
            _ => Payload::Tombstone,
        }
    }

    /// What a history exercised, so a test can show the cases worth testing really occur.
    #[derive(Clone, Debug, Default)]
    struct Coverage {
        /// Writes whose clock pruning dropped at least one entry.
        pruning_writes: usize,
        /// Merges that joined a value and a tombstone (its expired form) under one dot.
        value_tombstone_joins: usize,
        /// Writes that stored a tombstone or a value with an expiry.
        tombstone_writes: usize,
        expiring_writes: usize,
    }

    /// A random history's outcome: the three replicas' states and each replica's current
    /// actor.
    #[derive(Clone, Debug)]
    struct History {
        replicas: Vec<Siblings>,
        actors: Vec<Actor>,
        coverage: Coverage,
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0usize..3, proptest::option::of(0usize..3), any::<u8>())
                .prop_map(|(at, ctx_from, payload)| Step::Write { at, ctx_from, payload }),
            4 => (0usize..3, 0usize..3).prop_map(|(into, from)| Step::Merge { into, from }),
            1 => (0usize..3).prop_map(|at| Step::Restart { at }),
            2 => (0usize..3, 0u64..4).prop_map(|(at, t)| Step::Expire { at, now_ms: 10 * t + 5 }),
        ]
    }

    /// A random history: three replicas writing (under actors that change when a replica
    /// restarts, so keys see many actors), merging, and expiring, with a clock limit small
    /// enough in most histories that writes prune. Produces well-formed states: each actor
    /// writes only at its own replica, as the dotted version vector requires.
    fn arb_history() -> impl Strategy<Value = History> {
        let limit = prop_oneof![Just(2usize), Just(3), Just(4), Just(MAX)];
        (limit, proptest::collection::vec(arb_step(), 1..50)).prop_map(|(limit, steps)| {
            let mut replicas = vec![Siblings::new(), Siblings::new(), Siblings::new()];
            let mut incarnations = [0u32; 3];
            let actor_of =
                |at: usize, incarnation: u32| Actor(format!("R{at}.{incarnation}").into());
            let mut coverage = Coverage::default();
            for step in steps {
                match step {
                    Step::Write {
                        at,
                        ctx_from,
                        payload: kind,
                    } => {
                        let ctx = ctx_from
                            .map(|j| replicas[j].context().clone())
                            .unwrap_or_default();
                        let actor = actor_of(at, incarnations[at]);
                        let payload = payload(at, kind);
                        match &payload {
                            Payload::Tombstone => coverage.tombstone_writes += 1,
                            Payload::Value {
                                expires_at_ms: Some(_),
                                ..
                            } => coverage.expiring_writes += 1,
                            Payload::Value { .. } | Payload::Counter { .. } => {}
                        }
                        let mut unpruned = replicas[at].clone();
                        unpruned.update(&actor, &ctx, payload.clone(), usize::MAX);
                        replicas[at].update(&actor, &ctx, payload, limit);
                        if replicas[at].context().len() < unpruned.context().len() {
                            coverage.pruning_writes += 1;
                        }
                    }
                    Step::Merge { into, from } => {
                        let other = replicas[from].clone();
                        coverage.value_tombstone_joins += replicas[into]
                            .versions()
                            .filter(|(dot, mine)| {
                                other.versions().any(|(d, theirs)| {
                                    d == *dot
                                        && (matches!(mine, Payload::Tombstone)
                                            != matches!(theirs, Payload::Tombstone))
                                })
                            })
                            .count();
                        replicas[into].merge(&other);
                    }
                    Step::Restart { at } => incarnations[at] += 1,
                    Step::Expire { at, now_ms } => {
                        replicas[at].expire(now_ms);
                    }
                }
            }
            let actors = (0..3).map(|at| actor_of(at, incarnations[at])).collect();
            History {
                replicas,
                actors,
                coverage,
            }
        })
    }

    /// The strategy above really generates what the properties below are about: writes that
    /// prune, and joins of a value with its expired form. (Counted over a fixed sample; a
    /// strategy change that stopped producing them would make the properties vacuous.)
    #[test]
    fn the_history_strategy_prunes_and_joins_values_with_tombstones() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = arb_history();
        let (mut pruning, mut joining, mut tombstones, mut expiring) = (0, 0, 0, 0);
        let samples = 500;
        for _ in 0..samples {
            let h = strategy.new_tree(&mut runner).unwrap().current();
            pruning += usize::from(h.coverage.pruning_writes > 0);
            joining += usize::from(h.coverage.value_tombstone_joins > 0);
            tombstones += usize::from(h.coverage.tombstone_writes > 0);
            expiring += usize::from(h.coverage.expiring_writes > 0);
        }
        // Out of 500 histories, at least a tenth (resp. a twentieth) must exercise each case.
        assert!(
            pruning >= samples / 10,
            "{pruning} of {samples} histories pruned"
        );
        assert!(
            joining >= samples / 20,
            "{joining} of {samples} joined a value and a tombstone"
        );
        assert!(
            tombstones >= samples / 10,
            "{tombstones} of {samples} deleted"
        );
        assert!(
            expiring >= samples / 10,
            "{expiring} of {samples} wrote with an expiry"
        );
    }

    /// Sets of `(dot, payload)`, to compare what two states hold.
    fn held(s: &Siblings) -> Vec<(Dot, Payload)> {
        s.versions().map(|(d, p)| (d.clone(), p.clone())).collect()
    }

    /// What pruning may do to a merge with any other replica's state `other`, and nothing
    /// more: the pruned state's merge holds every sibling (same dot, same payload) the
    /// unpruned state's merge holds, in either direction, and its only extra siblings are
    /// stale ones `other` still held that the unpruned clock had seen (a spurious conflict).
    fn check_pruned_merge(
        unpruned: &Siblings,
        pruned: &Siblings,
        other: &Siblings,
    ) -> Result<(), TestCaseError> {
        for (full, lossy) in [
            (unpruned.merged(other), pruned.merged(other)),
            (other.merged(unpruned), other.merged(pruned)),
        ] {
            let lossy_held = held(&lossy);
            for sibling in held(&full) {
                prop_assert!(
                    lossy_held.contains(&sibling),
                    "pruning lost {:?} in a merge with {:?}",
                    sibling,
                    other
                );
            }
            for (dot, payload) in lossy_held {
                if !full.versions().any(|(d, _)| *d == dot) {
                    prop_assert!(
                        unpruned.context().covers(&dot)
                            && other.versions().any(|(d, p)| *d == dot && *p == payload),
                        "pruning made up {:?}",
                        dot
                    );
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn merge_is_commutative(h in arb_history()) {
            let states = &h.replicas;
            prop_assert_eq!(states[0].merged(&states[1]), states[1].merged(&states[0]));
        }

        #[test]
        fn merge_is_associative(h in arb_history()) {
            let (a, b, c) = (&h.replicas[0], &h.replicas[1], &h.replicas[2]);
            prop_assert_eq!(a.merged(b).merged(c), a.merged(&b.merged(c)));
        }

        #[test]
        fn merge_is_idempotent(h in arb_history()) {
            prop_assert_eq!(h.replicas[0].merged(&h.replicas[0]), h.replicas[0].clone());
        }

        #[test]
        fn every_dot_is_covered_by_the_clock(h in arb_history()) {
            let states = &h.replicas;
            let m = states[0].merged(&states[1]).merged(&states[2]);
            for (dot, _) in m.versions() {
                prop_assert!(m.context().covers(dot));
            }
        }

        #[test]
        fn writing_with_the_merged_context_leaves_one_value(h in arb_history()) {
            let states = &h.replicas;
            let mut m = states[0].merged(&states[1]).merged(&states[2]);
            let ctx = m.context().clone();
            m.update(&Actor("final".into()), &ctx, value("final"), MAX);
            prop_assert_eq!(m.len(), 1);
            for s in states {
                prop_assert_eq!(s.merged(&m).len(), 1);
            }
        }

        /// Pruning a replica's clock (to any limit, even below its live actors) changes only
        /// the clock: it keeps every live sibling's dot and the coordinator's own entry (so
        /// the coordinator's next dot is the same, never one it handed out before), only
        /// lowers entries, and never makes a later merge with any replica drop a sibling.
        #[test]
        fn pruning_never_discards_a_write(
            h in arb_history(),
            at in 0usize..3,
            limit in 0usize..5,
        ) {
            let unpruned = &h.replicas[at];
            let coordinator = &h.actors[at];
            let mut pruned = unpruned.clone();
            pruned.prune_clock(limit, &[coordinator]);
            prop_assert_eq!(held(&pruned), held(unpruned), "pruning touched the siblings");
            for (dot, _) in pruned.versions() {
                prop_assert!(pruned.context().covers(dot), "{:?} left uncovered", dot);
            }
            prop_assert_eq!(pruned.context().get(coordinator), unpruned.context().get(coordinator));
            prop_assert!(unpruned.context().descends_from(pruned.context()));
            let live: std::collections::BTreeSet<&Actor> =
                pruned.versions().map(|(d, _)| &d.actor).chain([coordinator]).collect();
            prop_assert!(pruned.context().len() <= limit.max(live.len()));
            for other in &h.replicas {
                check_pruned_merge(unpruned, &pruned, other)?;
            }
            let (mut next_pruned, mut next_unpruned) = (pruned.clone(), unpruned.clone());
            let none = VersionVector::new();
            prop_assert_eq!(
                next_pruned.update(coordinator, &none, value("next"), MAX),
                next_unpruned.update(coordinator, &none, value("next"), MAX)
            );
        }

        /// The same through a write, as the store prunes: a write under a small limit stores
        /// the same siblings as under no limit, and merges with every replica keep all the
        /// unlimited write's merges keep.
        #[test]
        fn a_pruning_write_keeps_what_an_unpruned_write_keeps(
            h in arb_history(),
            at in 0usize..3,
            ctx_from in 0usize..3,
            limit in 2usize..5,
        ) {
            let coordinator = &h.actors[at];
            let ctx = h.replicas[ctx_from].context().clone();
            let mut unpruned = h.replicas[at].clone();
            let mut pruned = h.replicas[at].clone();
            unpruned.update(coordinator, &ctx, value("w"), usize::MAX);
            pruned.update(coordinator, &ctx, value("w"), limit);
            prop_assert_eq!(held(&pruned), held(&unpruned));
            for other in &h.replicas {
                check_pruned_merge(&unpruned, &pruned, other)?;
            }
        }
    }
}
