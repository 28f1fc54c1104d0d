//! Single-decree Paxos per conditional write: ballots, the conditions a compare-and-set
//! checks, and the acceptor's state. The proposer's rounds live in `node/conditional`.
//!
//! Why: a conditional write that compares against what a read quorum saw lets two racing
//! writers both win. Deciding each conditional write by a consensus round among the key's N
//! replicas (prepare/promise, read, propose/accept, commit, as Cassandra's lightweight
//! transactions do) makes them linearizable per key: of two conditional writes on the same
//! expected state, at most one applies, and an applied one is visible to every later one.
//!
//! Promises:
//! - Ballots are totally ordered by (round, proposer) and never depend on a clock: a proposer
//!   picks one round above the highest it has heard of.
//! - An acceptor promises only a ballot above every ballot it promised, and accepts only at
//!   or above its promise, so two different proposals cannot both be chosen in one ballot
//!   order; a proposer that finds a proposal accepted above the last commit it hears of
//!   finishes that proposal before its own.
//! - A ballot's proposer is an incarnation (the peer's [`Actor`]), not a peer: a peer that
//!   restarts with its memory wiped starts its rounds again from its Lamport clock's floor,
//!   and could otherwise mint the ballot, and so the dot, of a proposal it made before —
//!   two different proposals in one ballot, or two values under one dot.
//! - The acceptor's memory is bounded ([`MAX_ACCEPTOR_ENTRIES`]): only entries with no
//!   accepted, uncommitted proposal are forgotten, oldest first, and the highest promise
//!   among them becomes the promise of every key it no longer remembers. A forgotten promise
//!   would otherwise let a lower ballot be accepted after a higher one was promised — the
//!   proposer of the higher ballot, which read the key before that accept, could then choose
//!   a second value.

use crate::core::siblings::{Payload, Siblings};
use crate::core::version_vector::{Actor, Dot, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Keys an acceptor remembers at most (see the module's promises).
pub const MAX_ACCEPTOR_ENTRIES: usize = 65_536;

/// A Paxos ballot: ordered by round, then proposer (the proposing peer's incarnation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub proposer: Actor,
}

impl Ballot {
    /// The actor a write chosen in this ballot is minted under: one per proposer, its
    /// counter the round, so no two proposals on a key ever share a dot (a proposal that was
    /// not chosen can never collide with a later write's dot).
    pub fn dot(&self) -> Dot {
        Dot {
            actor: Actor(format!("{}/cas", self.proposer).into()),
            counter: self.round,
        }
    }

    /// The ballot a committed write with `dot` was chosen in, if `dot` is one of
    /// [`Ballot::dot`]'s.
    pub fn of_dot(dot: &Dot) -> Option<Ballot> {
        let proposer = dot.actor.0.strip_suffix("/cas")?;
        Some(Ballot {
            round: dot.counter,
            proposer: Actor(proposer.into()),
        })
    }
}

/// What a conditional write requires of the key's current state (judged on the state a
/// majority of replicas hold, read in the same round).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key's state is exactly the one this causal context names (HTTP `If-Match`,
    /// `RC.CAS`): nothing was written since the client read it.
    Matches(VersionVector),
    /// The key holds no live value (`If-None-Match: *`, `SET … NX`, `SETNX`).
    Absent,
    /// The key holds exactly one live value, equal to this (`SET … IFEQ`).
    Equals(Vec<u8>),
    /// The key holds a live value (`SET … XX`).
    Present,
}

impl Condition {
    pub fn holds(&self, state: &Siblings, now: u64) -> bool {
        let visible = state.visible_values(now);
        match self {
            Condition::Matches(context) => state.context() == context,
            Condition::Absent => visible.is_empty(),
            Condition::Present => !visible.is_empty(),
            Condition::Equals(expected) => matches!(
                visible.as_slice(),
                [Payload::Value { data, .. }] if data == expected
            ),
        }
    }
}

/// What one acceptor knows of one key.
#[derive(Clone, Debug, Default)]
struct Entry {
    promised: Option<Ballot>,
    /// The proposal accepted and not yet known committed: the key's state it would install.
    accepted: Option<(Ballot, Siblings)>,
    /// The highest ballot known committed, and the clock of the state it committed (what
    /// this replica's store must cover to be current).
    committed: Option<Ballot>,
    committed_clock: Option<VersionVector>,
    /// When it was last touched, in the acceptor's own sequence (for forgetting the oldest).
    touched: u64,
}

/// An acceptor's answer to a prepare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Promise {
    /// Promised: the proposal it accepted and has not seen committed, if any, and the
    /// highest ballot it knows committed.
    Granted {
        accepted: Option<(Ballot, Siblings)>,
        committed: Option<Ballot>,
    },
    /// Refused: it promised this higher ballot (the proposer retries above it).
    Refused { promised: Ballot },
    /// Not taking part: by this acceptor's ring the key's replicas are others than the
    /// proposer named (a join or leave not yet seen by both). Nothing was promised.
    OtherReplicas,
    /// Not taking part yet: this acceptor just gained the key's partition (a join or leave
    /// moved it here) and its data may still be on the way from the ex-owners, so what it
    /// holds must not decide a round, even beside every other replica. Nothing was promised.
    Incomplete,
}

/// The acceptor side of every key this peer replicates.
#[derive(Debug, Default)]
pub struct Acceptor {
    entries: BTreeMap<Vec<u8>, Entry>,
    /// Keys by last touch, for forgetting the oldest settled entry.
    by_touch: BTreeMap<u64, Vec<u8>>,
    sequence: u64,
    /// The highest promise among forgotten entries: the promise of every key not remembered.
    forgotten_promise: Option<Ballot>,
}

impl Acceptor {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Phase 1: promise `ballot` unless a higher or equal one was promised.
    pub fn prepare(&mut self, key: &[u8], ballot: &Ballot) -> Promise {
        let entry = self.touch(key);
        match &entry.promised {
            Some(promised) if promised >= ballot => Promise::Refused {
                promised: promised.clone(),
            },
            _ => {
                entry.promised = Some(ballot.clone());
                Promise::Granted {
                    accepted: entry.accepted.clone(),
                    committed: entry.committed.clone(),
                }
            }
        }
    }

    /// Phase 2: accept `state` in `ballot` unless a higher ballot was promised.
    pub fn accept(&mut self, key: &[u8], ballot: &Ballot, state: &Siblings) -> Result<(), Ballot> {
        let entry = self.touch(key);
        if let Some(promised) = &entry.promised {
            if promised > ballot {
                return Err(promised.clone());
            }
        }
        entry.promised = Some(ballot.clone());
        entry.accepted = Some((ballot.clone(), state.clone()));
        Ok(())
    }

    /// Phase 2 at an acceptor that lost its memory (a peer restarted empty) and has yet to
    /// recover: it no longer knows what it promised before, so it accepts only a ballot it
    /// promised since, and refuses any other as if that ballot were promised.
    pub fn accept_promised_only(
        &mut self,
        key: &[u8],
        ballot: &Ballot,
        state: &Siblings,
    ) -> Result<(), Ballot> {
        let entry = self.touch(key);
        if entry.promised.as_ref() != Some(ballot) {
            return Err(entry
                .promised
                .clone()
                .unwrap_or_else(|| ballot.clone())
                .max(ballot.clone()));
        }
        self.accept(key, ballot, state)
    }

    /// The proposal of `ballot`, with `clock`, was chosen and its state stored: nothing at or
    /// below it is in progress any more.
    pub fn committed(&mut self, key: &[u8], ballot: &Ballot, clock: &VersionVector) {
        let entry = self.touch(key);
        if entry.committed.as_ref().is_none_or(|c| c < ballot) {
            entry.committed = Some(ballot.clone());
            entry.committed_clock = Some(clock.clone());
        }
        if entry.accepted.as_ref().is_some_and(|(b, _)| b <= ballot) {
            entry.accepted = None;
        }
    }

    /// The clock of the last commit this acceptor noted for `key`: a store that does not
    /// cover it lost or refused committed data.
    pub fn committed_clock(&self, key: &[u8]) -> Option<&VersionVector> {
        self.entries.get(key)?.committed_clock.as_ref()
    }

    /// The entry of `key`, created if absent and marked most recently touched; forgets the
    /// oldest settled entry when over the bound.
    fn touch(&mut self, key: &[u8]) -> &mut Entry {
        self.sequence += 1;
        let sequence = self.sequence;
        let floor = &self.forgotten_promise;
        let entry = self.entries.entry(key.to_vec()).or_insert_with(|| Entry {
            promised: floor.clone(),
            ..Entry::default()
        });
        if entry.touched != 0 {
            self.by_touch.remove(&entry.touched);
        }
        entry.touched = sequence;
        self.by_touch.insert(sequence, key.to_vec());
        if self.entries.len() > MAX_ACCEPTOR_ENTRIES {
            self.forget_oldest_settled(key);
        }
        self.entries.get_mut(key).expect("just inserted")
    }

    fn forget_oldest_settled(&mut self, keep: &[u8]) {
        let settled = self.by_touch.iter().find(|(_, k)| {
            k.as_slice() != keep && self.entries.get(*k).is_some_and(|e| e.accepted.is_none())
        });
        if let Some((&touched, key)) = settled {
            let key = key.clone();
            self.by_touch.remove(&touched);
            if let Some(forgotten) = self.entries.remove(&key) {
                self.forgotten_promise = self.forgotten_promise.take().max(forgotten.promised);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot(round: u64, proposer: &str) -> Ballot {
        Ballot {
            round,
            proposer: Actor(proposer.into()),
        }
    }

    #[test]
    fn ballots_order_by_round_then_proposer_and_name_their_dot() {
        assert!(ballot(2, "A") > ballot(1, "Z"));
        assert!(ballot(2, "B") > ballot(2, "A"));
        let b = ballot(7, "peer-1");
        assert_eq!(Ballot::of_dot(&b.dot()), Some(b));
        let plain = Dot {
            actor: Actor("peer-1.17".into()),
            counter: 3,
        };
        assert_eq!(Ballot::of_dot(&plain), None);
    }

    #[test]
    fn an_acceptor_keeps_its_promises() {
        let mut a = Acceptor::default();
        let state = Siblings::new();
        assert!(matches!(
            a.prepare(b"k", &ballot(2, "A")),
            Promise::Granted { .. }
        ));
        assert_eq!(
            a.prepare(b"k", &ballot(1, "B")),
            Promise::Refused {
                promised: ballot(2, "A")
            }
        );
        assert_eq!(a.accept(b"k", &ballot(1, "B"), &state), Err(ballot(2, "A")));
        assert_eq!(a.accept(b"k", &ballot(2, "A"), &state), Ok(()));
        // A later prepare learns the accepted proposal.
        match a.prepare(b"k", &ballot(3, "B")) {
            Promise::Granted {
                accepted,
                committed,
            } => {
                assert_eq!(accepted, Some((ballot(2, "A"), state.clone())));
                assert_eq!(committed, None);
            }
            other => panic!("{other:?}"),
        }
        a.committed(b"k", &ballot(2, "A"), &VersionVector::new());
        match a.prepare(b"k", &ballot(4, "A")) {
            Promise::Granted {
                accepted,
                committed,
            } => {
                assert_eq!(
                    accepted, None,
                    "a committed proposal is no longer in progress"
                );
                assert_eq!(committed, Some(ballot(2, "A")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn conditions_judge_the_state() {
        let mut s = Siblings::new();
        assert!(Condition::Absent.holds(&s, 0));
        assert!(!Condition::Present.holds(&s, 0));
        s.update(
            &Actor("A".into()),
            &VersionVector::new(),
            Payload::Value {
                data: b"v1".to_vec(),
                expires_at_ms: Some(100),
            },
            8,
        );
        assert!(Condition::Equals(b"v1".to_vec()).holds(&s, 0));
        assert!(!Condition::Equals(b"v2".to_vec()).holds(&s, 0));
        assert!(Condition::Matches(s.context().clone()).holds(&s, 0));
        assert!(!Condition::Matches(VersionVector::new()).holds(&s, 0));
        assert!(Condition::Present.holds(&s, 0));
        assert!(Condition::Absent.holds(&s, 100), "expired is absent");
    }

    #[test]
    fn memory_is_bounded_and_in_progress_proposals_are_never_forgotten() {
        let mut a = Acceptor::default();
        a.accept(b"pending", &ballot(1, "A"), &Siblings::new())
            .unwrap();
        for i in 0..MAX_ACCEPTOR_ENTRIES + 10 {
            a.prepare(format!("k{i}").as_bytes(), &ballot(1, "A"));
        }
        assert_eq!(a.len(), MAX_ACCEPTOR_ENTRIES);
        match a.prepare(b"pending", &ballot(2, "B")) {
            Promise::Granted { accepted, .. } => assert!(accepted.is_some()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_forgotten_promise_still_refuses_lower_ballots() {
        let mut a = Acceptor::default();
        assert!(matches!(
            a.prepare(b"old", &ballot(9, "B")),
            Promise::Granted { .. }
        ));
        for i in 0..MAX_ACCEPTOR_ENTRIES + 10 {
            a.prepare(format!("k{i}").as_bytes(), &ballot(1, "A"));
        }
        // "old" was forgotten (oldest, settled), its promise of round 9 with it; a proposal
        // prepared at round 5 before that must not be accepted now.
        assert_eq!(
            a.accept(b"old", &ballot(5, "A"), &Siblings::new()),
            Err(ballot(9, "B"))
        );
        assert_eq!(
            a.prepare(b"never-seen", &ballot(3, "A")),
            Promise::Refused {
                promised: ballot(9, "B")
            }
        );
        assert!(matches!(
            a.prepare(b"never-seen", &ballot(10, "A")),
            Promise::Granted { .. }
        ));
    }

    #[test]
    fn a_recovering_acceptor_accepts_only_what_it_promised_since() {
        let mut a = Acceptor::default();
        let state = Siblings::new();
        // A proposal prepared before the restart: no promise here now.
        assert_eq!(
            a.accept_promised_only(b"k", &ballot(4, "A"), &state),
            Err(ballot(4, "A"))
        );
        assert!(matches!(
            a.prepare(b"k", &ballot(2, "B")),
            Promise::Granted { .. }
        ));
        assert_eq!(
            a.accept_promised_only(b"k", &ballot(4, "A"), &state),
            Err(ballot(4, "A")),
            "a higher ballot than the one promised was prepared before the restart"
        );
        assert_eq!(
            a.accept_promised_only(b"k", &ballot(2, "B"), &state),
            Ok(())
        );
    }
}
