//! Counters that never lose an increment: a PN-counter (per-actor tallies of increments and
//! decrements, joined by maximum) with resets, stored as one sibling's payload.
//!
//! Why a CRDT: a read-add-write increment loses increments whenever two coordinators race or
//! a partition heals. Here each coordinating replica only ever raises its own tally, and
//! replicas join tallies by taking the larger of each, so increments made on every side of
//! a partition all survive the merge, and a state delivered twice (a retried message, a
//! hint, anti-entropy) counts once.
//!
//! How it sits in the dotted-version-vector set ([`crate::core::siblings`]): an increment is
//! a write by the coordinator whose context is everything its replica holds of the key, so
//! the new sibling replaces what it saw; increments at other coordinators that it did not see
//! stay beside it as siblings, and a reader joins every counter sibling into one value
//! ([`fold`]). Joining is what makes two siblings that both contain an older tally count it
//! once.
//!
//! Promises:
//! - [`Counter::join`] is commutative, associative and idempotent (proptested below).
//! - A tally is raised only by the actor it names, at the coordinator that mints that actor's
//!   dots, from the state that holds all of that actor's earlier events (the store's epoch
//!   rule, `Store::update`): a key forgotten and written again mints under a new actor, so a
//!   fresh tally never restarts below an old one that a lagging replica still holds.
//! - **Resets.** A `SET` of an integer or a delete over a counter is a reset: it records the
//!   tallies it saw (its floor), and the counter's value becomes the reset's value plus every
//!   increment past that floor. So a reset supersedes the increments it has seen, while
//!   increments concurrent with it (not in its floor) survive it. Of concurrent resets, the
//!   one of the highest generation (one above the resets its writer saw), then the highest
//!   dot, wins, the same on every replica. A deleted counter reads as absent until an
//!   increment past its floor arrives.
//! - A plain value sibling that is a canonical decimal integer (Redis's rule: what
//!   `i64::to_string` prints) counts as a reset to that integer that saw nothing; any other
//!   value makes the key not a counter ([`CounterError::NotAnInteger`]).
//! - Values never wrap: a value outside `i64` is [`CounterError::Overflow`], and an increment
//!   that would produce one is refused before anything is stored.

use crate::core::siblings::{Payload, Siblings};
use crate::core::version_vector::{Actor, Dot, VersionVector};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One actor's increments and decrements since its tally began.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tally {
    pub actor: Actor,
    /// The counter of the dot that began this tally: an actor whose replica no longer holds
    /// its tally (the key was replaced by a plain write and written again) begins a new one
    /// rather than restarting an old one from zero.
    pub run: u64,
    pub up: u64,
    pub down: u64,
}

impl Tally {
    fn id(&self) -> (&Actor, u64) {
        (&self.actor, self.run)
    }
}

/// The last reset a counter state descends from. Ordered by rank: generation, then dot (the
/// rest only orders states no honest peer makes, two resets under one dot, so that even
/// those join the same way everywhere).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reset {
    /// One above the generation of every reset its writer saw: a later reset outranks it.
    pub generation: u64,
    /// The reset's own dot: breaks ties between concurrent resets of one generation.
    pub dot: Dot,
    /// The value it set; `None` for a delete.
    pub value: Option<i64>,
    /// The tallies it saw: increments up to these are replaced by `value`.
    pub floor: Vec<Tally>,
}

/// A counter's replicated state. Tallies sorted by (actor, run), one per pair; so is a
/// reset's floor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "WireCounter")]
pub struct Counter {
    tallies: Vec<Tally>,
    reset: Option<Reset>,
}

/// `Counter` as decoded from the wire, before its invariants are restored.
#[derive(Deserialize)]
struct WireCounter {
    tallies: Vec<Tally>,
    reset: Option<Reset>,
}

/// Decoding sorts tallies and keeps the larger of two under one (actor, run), so a malformed
/// state from the wire cannot break the join.
impl From<WireCounter> for Counter {
    fn from(wire: WireCounter) -> Self {
        let reset = wire.reset.map(|r| Reset {
            floor: normalized(r.floor),
            ..r
        });
        Counter {
            tallies: normalized(wire.tallies),
            reset,
        }
    }
}

fn normalized(mut tallies: Vec<Tally>) -> Vec<Tally> {
    tallies.sort();
    // Sorted by (actor, run, up, down): of a run's duplicates, the last has the largest `up`.
    let mut out: Vec<Tally> = Vec::with_capacity(tallies.len());
    for tally in tallies {
        match out.last_mut() {
            Some(last) if last.id() == tally.id() => {
                last.up = last.up.max(tally.up);
                last.down = last.down.max(tally.down);
            }
            _ => out.push(tally),
        }
    }
    out
}

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterError {
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    #[error("increment or decrement would overflow")]
    Overflow,
}

/// Parses a value the way Redis's `INCR` does: a canonical decimal `i64` (no sign but `-`,
/// no leading zeros, no spaces).
pub fn parse_integer(data: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(data).ok()?;
    let value: i64 = text.parse().ok()?;
    (value.to_string() == text).then_some(value)
}

impl Counter {
    /// A counter no one has incremented.
    pub fn new() -> Self {
        Self::default()
    }

    /// A plain integer value under `dot`, seen as a counter: a reset to it that saw nothing.
    pub fn from_integer(dot: &Dot, value: i64) -> Self {
        Counter {
            tallies: Vec::new(),
            reset: Some(Reset {
                generation: 0,
                dot: dot.clone(),
                value: Some(value),
                floor: Vec::new(),
            }),
        }
    }

    /// What a reset under `dot` to `value` (`None`: a delete) writes over `seen`, the counter
    /// its writer holds: every tally seen becomes the floor.
    pub fn reset_over(seen: &Counter, dot: &Dot, value: Option<i64>) -> Self {
        Counter {
            tallies: seen.tallies.clone(),
            reset: Some(Reset {
                generation: seen.reset.as_ref().map_or(0, |r| r.generation) + 1,
                dot: dot.clone(),
                value,
                floor: seen.tallies.clone(),
            }),
        }
    }

    pub fn tallies(&self) -> &[Tally] {
        &self.tallies
    }

    pub fn reset(&self) -> Option<&Reset> {
        self.reset.as_ref()
    }

    /// The counter's value: the winning reset's value plus every increment past its floor;
    /// `None` when a delete won and nothing was counted since.
    pub fn value(&self) -> Result<Option<i64>, CounterError> {
        match self.total() {
            None => Ok(None),
            Some(total) => i64::try_from(total)
                .map(Some)
                .map_err(|_| CounterError::Overflow),
        }
    }

    /// [`Self::value`] before it is fitted into an `i64` (joining increments that each
    /// fitted can leave the range).
    pub fn total(&self) -> Option<i128> {
        let (base, floor) = match &self.reset {
            Some(reset) => (reset.value, reset.floor.as_slice()),
            None => (Some(0), &[][..]),
        };
        let mut past: i128 = 0;
        let mut counted_since = false;
        for tally in &self.tallies {
            let (up0, down0) = floor
                .binary_search_by(|f| f.id().cmp(&tally.id()))
                .map(|i| (floor[i].up, floor[i].down))
                .unwrap_or((0, 0));
            let up = tally.up.saturating_sub(up0);
            let down = tally.down.saturating_sub(down0);
            counted_since |= up > 0 || down > 0;
            past += i128::from(up) - i128::from(down);
        }
        if base.is_none() && !counted_since {
            return None;
        }
        Some(i128::from(base.unwrap_or(0)) + past)
    }

    /// Adds `by` under `dot`, the increment's own dot: raises the tally of `dot.actor` (the
    /// newest run this state holds of it, or a new run). Refuses, changing nothing, when the
    /// value or the tally would overflow.
    pub fn add(&mut self, dot: &Dot, by: i64) -> Result<i64, CounterError> {
        let current = self.value()?.unwrap_or(0);
        let next = current.checked_add(by).ok_or(CounterError::Overflow)?;
        let newest_run = self
            .tallies
            .iter()
            .filter(|t| t.actor == dot.actor)
            .map(|t| t.run)
            .max();
        let at = match newest_run {
            Some(run) => self
                .tallies
                .binary_search_by(|t| t.id().cmp(&(&dot.actor, run)))
                .expect("the run was just found"),
            None => {
                let tally = Tally {
                    actor: dot.actor.clone(),
                    run: dot.counter,
                    up: 0,
                    down: 0,
                };
                let at = self
                    .tallies
                    .binary_search_by(|t| t.id().cmp(&tally.id()))
                    .unwrap_err();
                self.tallies.insert(at, tally);
                at
            }
        };
        let tally = &mut self.tallies[at];
        let raised = if by >= 0 {
            tally
                .up
                .checked_add(by.unsigned_abs())
                .map(|up| (up, tally.down))
        } else {
            tally
                .down
                .checked_add(by.unsigned_abs())
                .map(|down| (tally.up, down))
        };
        match raised {
            Some((up, down)) => {
                tally.up = up;
                tally.down = down;
            }
            // The tally itself is full (2^64 counted one way, however the value moved): the
            // actor begins a new run under this dot, which no state holds yet.
            None => {
                let (up, down) = if by >= 0 {
                    (by.unsigned_abs(), 0)
                } else {
                    (0, by.unsigned_abs())
                };
                let tally = Tally {
                    actor: dot.actor.clone(),
                    run: dot.counter,
                    up,
                    down,
                };
                let at = self
                    .tallies
                    .binary_search_by(|t| t.id().cmp(&tally.id()))
                    .unwrap_or_else(|i| i);
                self.tallies.insert(at, tally);
            }
        }
        Ok(next)
    }

    /// Joins another replica's (or sibling's) state of the same counter into this one:
    /// each tally the larger of the two, and the higher-ranked reset.
    pub fn join(&mut self, other: &Counter) {
        let mine = std::mem::take(&mut self.tallies);
        let mut joined = Vec::with_capacity(mine.len().max(other.tallies.len()));
        let mut theirs = other.tallies.iter().peekable();
        for tally in mine {
            while let Some(t) = theirs.next_if(|t| t.id() < tally.id()) {
                joined.push(t.clone());
            }
            match theirs.next_if(|t| t.id() == tally.id()) {
                Some(t) => joined.push(Tally {
                    up: tally.up.max(t.up),
                    down: tally.down.max(t.down),
                    ..tally
                }),
                None => joined.push(tally),
            }
        }
        joined.extend(theirs.cloned());
        self.tallies = joined;
        match (&self.reset, &other.reset) {
            (None, Some(theirs)) => self.reset = Some(theirs.clone()),
            (Some(mine), Some(theirs)) if theirs > mine => self.reset = Some(theirs.clone()),
            _ => {}
        }
    }

    /// Bytes this state holds, for the store's accounting.
    pub fn heap_bytes(&self) -> usize {
        let tally = |t: &Tally| t.actor.0.len() + 24;
        self.tallies.iter().map(tally).sum::<usize>()
            + self.reset.as_ref().map_or(0, |r| {
                r.dot.actor.0.len() + 32 + r.floor.iter().map(tally).sum::<usize>()
            })
    }
}

/// The counter a replica's state of a key holds at `now`, as an increment continues it: every
/// counter sibling not expired (a deleted one too: its tallies go on past its floor) and every
/// visible integer value, joined. A visible value that is not an integer makes the key not a
/// counter. `Ok(None)` when the state holds none of these.
pub fn held(state: &Siblings, now: u64) -> Result<Option<(Counter, Option<u64>)>, CounterError> {
    fold(state.versions().filter(|(_, p)| match p {
        Payload::Counter { expires_at_ms, .. } => expires_at_ms.is_none_or(|t| now < t),
        _ => p.is_visible_at(now),
    }))
}

/// The counter a write with `context` replaces in a replica's state, if it replaces one: what
/// a reset records as its floor. Only siblings the context covers count, and only when one of
/// them is a counter (a value replacing plain values is no reset); values that are not
/// integers are passed over (they are replaced all the same).
pub fn replaced(state: &Siblings, context: &VersionVector) -> Option<Counter> {
    let covered = || state.versions().filter(|(d, _)| context.covers(d));
    if !covered().any(|(_, p)| matches!(p, Payload::Counter { .. })) {
        return None;
    }
    let counted = covered().filter(|(_, p)| match p {
        Payload::Value { data, .. } => parse_integer(data).is_some(),
        _ => true,
    });
    fold(counted).ok().flatten().map(|(counter, _)| counter)
}

/// The counter a key's visible payloads make, with the expiry it keeps (none if any of them
/// has none): counter siblings and integer values joined into one. `Ok(None)` when nothing
/// visible is a counter or an integer (an absent key, or one holding only tombstones).
pub fn fold<'a>(
    visible: impl IntoIterator<Item = (&'a Dot, &'a Payload)>,
) -> Result<Option<(Counter, Option<u64>)>, CounterError> {
    let mut folded: Option<(Counter, Option<u64>)> = None;
    for (dot, payload) in visible {
        let (counter, expiry) = match payload {
            Payload::Counter {
                counter,
                expires_at_ms,
            } => (counter.clone(), *expires_at_ms),
            Payload::Value {
                data,
                expires_at_ms,
            } => {
                let value = parse_integer(data).ok_or(CounterError::NotAnInteger)?;
                (Counter::from_integer(dot, value), *expires_at_ms)
            }
            Payload::Tombstone => continue,
        };
        folded = Some(match folded {
            None => (counter, expiry),
            Some((mut joined, joined_expiry)) => {
                joined.join(&counter);
                let expiry = match (joined_expiry, expiry) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                (joined, expiry)
            }
        });
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dot(actor: &str, counter: u64) -> Dot {
        Dot {
            actor: Actor(actor.into()),
            counter,
        }
    }

    fn value(c: &Counter) -> Option<i64> {
        c.value().unwrap()
    }

    #[test]
    fn parsing_follows_redis() {
        assert_eq!(parse_integer(b"10"), Some(10));
        assert_eq!(parse_integer(b"-7"), Some(-7));
        assert_eq!(parse_integer(b"0"), Some(0));
        for bad in [
            &b"+1"[..],
            b" 1",
            b"01",
            b"-0",
            b"1.5",
            b"",
            b"abc",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_integer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn concurrent_increments_from_a_shared_past_count_once_each() {
        // Both coordinators saw A's 3, then each adds 1 without seeing the other.
        let mut base = Counter::new();
        base.add(&dot("A", 1), 3).unwrap();
        let mut left = base.clone();
        left.add(&dot("B", 1), 1).unwrap();
        let mut right = base.clone();
        right.add(&dot("C", 1), 1).unwrap();
        let mut joined = left.clone();
        joined.join(&right);
        assert_eq!(
            value(&joined),
            Some(5),
            "A's 3 is counted once, both 1s survive"
        );
        joined.join(&left);
        assert_eq!(
            value(&joined),
            Some(5),
            "a state delivered again counts once"
        );
    }

    #[test]
    fn set_then_incr_gives_eleven() {
        let mut c = Counter::from_integer(&dot("S", 1), 10);
        assert_eq!(c.add(&dot("A", 2), 1), Ok(11));
        assert_eq!(value(&c), Some(11));
    }

    #[test]
    fn a_reset_supersedes_what_it_saw_and_concurrent_increments_survive_it() {
        let mut seen = Counter::new();
        seen.add(&dot("A", 1), 3).unwrap();
        // B increments without seeing the reset; the reset saw only A's 3.
        let mut concurrent = seen.clone();
        concurrent.add(&dot("B", 1), 1).unwrap();
        let reset = Counter::reset_over(&seen, &dot("S", 2), Some(10));
        assert_eq!(value(&reset), Some(10));
        let mut joined = reset.clone();
        joined.join(&concurrent);
        assert_eq!(
            value(&joined),
            Some(11),
            "10, plus B's 1 the reset never saw"
        );
        // Increments after the reset count on top of it.
        joined.add(&dot("A", 3), 2).unwrap();
        assert_eq!(value(&joined), Some(13));
    }

    #[test]
    fn a_deleted_counter_is_absent_until_counted_again_from_zero() {
        let mut seen = Counter::new();
        seen.add(&dot("A", 1), 5).unwrap();
        let mut deleted = Counter::reset_over(&seen, &dot("D", 2), None);
        assert_eq!(value(&deleted), None);
        // A's own tally continues past its floor: the old 5 is not counted again.
        assert_eq!(deleted.add(&dot("A", 3), 1), Ok(1));
        // A concurrent increment that saw the old 5 adds only its own 1.
        let mut concurrent = seen.clone();
        concurrent.add(&dot("B", 1), 1).unwrap();
        deleted.join(&concurrent);
        assert_eq!(value(&deleted), Some(2));
    }

    #[test]
    fn of_concurrent_resets_one_wins_everywhere_and_later_resets_outrank_both() {
        let mut seen = Counter::new();
        seen.add(&dot("A", 1), 3).unwrap();
        let r1 = Counter::reset_over(&seen, &dot("S", 2), Some(10));
        let r2 = Counter::reset_over(&seen, &dot("T", 2), Some(20));
        let mut a = r1.clone();
        a.join(&r2);
        let mut b = r2.clone();
        b.join(&r1);
        assert_eq!(a, b);
        assert_eq!(
            value(&a),
            Some(20),
            "the higher dot wins a tie of generations"
        );
        let r3 = Counter::reset_over(&a, &dot("A", 3), Some(1));
        let mut c = r1.clone();
        c.join(&r3);
        assert_eq!(value(&c), Some(1), "a reset that saw both outranks them");
    }

    #[test]
    fn a_malformed_state_from_the_wire_is_normalized() {
        let t = |actor: &str, run, up, down| Tally {
            actor: Actor(actor.into()),
            run,
            up,
            down,
        };
        let wire = WireCounter {
            tallies: vec![t("B", 1, 1, 0), t("A", 1, 2, 5), t("A", 1, 7, 0)],
            reset: None,
        };
        let c = Counter::from(wire);
        assert_eq!(c.tallies(), &[t("A", 1, 7, 5), t("B", 1, 1, 0)]);
        assert_eq!(value(&c), Some(3));
    }

    #[test]
    fn overflow_is_an_error_and_changes_nothing() {
        let mut c = Counter::from_integer(&dot("S", 1), i64::MAX - 1);
        assert_eq!(c.add(&dot("A", 2), 1), Ok(i64::MAX));
        let before = c.clone();
        assert_eq!(c.add(&dot("A", 3), 1), Err(CounterError::Overflow));
        assert_eq!(c, before);
        let mut low = Counter::from_integer(&dot("S", 1), i64::MIN);
        assert_eq!(low.add(&dot("A", 2), -1), Err(CounterError::Overflow));
        assert_eq!(low.add(&dot("A", 2), i64::MAX), Ok(-1));
    }

    #[test]
    fn a_new_run_never_restarts_under_an_old_one() {
        let mut old = Counter::new();
        old.add(&dot("A", 1), 5).unwrap();
        // A's replica lost its tally and starts counting again: a new run, not A from zero.
        let mut fresh = Counter::new();
        fresh.add(&dot("A", 9), 1).unwrap();
        fresh.join(&old);
        assert_eq!(value(&fresh), Some(6));
    }

    #[test]
    fn fold_joins_counters_and_integers_and_refuses_other_values() {
        let mut c = Counter::new();
        c.add(&dot("A", 1), 2).unwrap();
        let counter = Payload::Counter {
            counter: c,
            expires_at_ms: Some(50),
        };
        let integer = Payload::Value {
            data: b"10".to_vec(),
            expires_at_ms: Some(90),
        };
        let (d1, d2) = (dot("A", 1), dot("S", 1));
        let (folded, expiry) = fold([(&d1, &counter), (&d2, &integer)]).unwrap().unwrap();
        assert_eq!(value(&folded), Some(12));
        assert_eq!(expiry, Some(90));
        let text = Payload::Value {
            data: b"hello".to_vec(),
            expires_at_ms: None,
        };
        assert_eq!(
            fold([(&d1, &counter), (&d2, &text)]),
            Err(CounterError::NotAnInteger)
        );
        assert_eq!(fold([(&d1, &Payload::Tombstone)]), Ok(None));
    }

    /// Random counters built by increments and resets at a few actors.
    fn arb_counter() -> impl Strategy<Value = Counter> {
        let step = (0..4usize, -5i64..6, 0..6u8);
        prop::collection::vec(step, 0..12).prop_map(|steps| {
            let mut c = Counter::new();
            for (i, (actor, by, kind)) in steps.into_iter().enumerate() {
                let d = dot(["A", "B", "C", "D"][actor], i as u64 + 1);
                if kind == 0 {
                    c = Counter::reset_over(&c, &d, (by != 0).then_some(by));
                } else {
                    c.add(&d, by).unwrap();
                }
            }
            c
        })
    }

    proptest! {
        #[test]
        fn join_is_commutative_associative_and_idempotent(
            a in arb_counter(), b in arb_counter(), c in arb_counter()
        ) {
            let join = |x: &Counter, y: &Counter| { let mut z = x.clone(); z.join(y); z };
            prop_assert_eq!(join(&a, &b), join(&b, &a));
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
            prop_assert_eq!(join(&a, &a), a.clone());
        }

        /// Increments made on separate copies of one counter all count once joined.
        #[test]
        fn every_increment_on_every_copy_survives_the_join(
            base in arb_counter(),
            deltas in prop::collection::vec((0..3usize, -5i64..6), 0..20),
        ) {
            let mut copies = vec![base.clone(), base.clone(), base.clone()];
            let mut sum = 0i64;
            for (i, (copy, by)) in deltas.into_iter().enumerate() {
                let actor = ["X", "Y", "Z"][copy];
                copies[copy].add(&dot(actor, i as u64 + 1), by).unwrap();
                sum += by;
            }
            let mut joined = base.clone();
            for c in &copies {
                joined.join(c);
            }
            let before = base.value().unwrap().unwrap_or(0);
            let after = joined.value().unwrap().unwrap_or(0);
            prop_assert_eq!(after - before, sum);
        }
    }
}
