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
//! - The acceptor's memory is bounded ([`MAX_ACCEPTOR_ENTRIES`]): only entries with no
//!   accepted, uncommitted proposal are forgotten, oldest first. Forgetting a promise is safe
//!   for conditional writes here because each round re-reads the key's state from a majority
//!   and compares its condition with that state: a stale proposer that is promised again
//!   still sees every committed write.

use crate::core::siblings::{Payload, Siblings};
use crate::core::types::NodeId;
use crate::core::version_vector::{Actor, Dot, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Keys an acceptor remembers at most (see the module's promises).
pub const MAX_ACCEPTOR_ENTRIES: usize = 65_536;

/// A Paxos ballot: ordered by round, then proposer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub proposer: NodeId,
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
            proposer: NodeId::from(proposer),
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
}

/// The acceptor side of every key this peer replicates.
#[derive(Debug, Default)]
pub struct Acceptor {
    entries: BTreeMap<Vec<u8>, Entry>,
    /// Keys by last touch, for forgetting the oldest settled entry.
    by_touch: BTreeMap<u64, Vec<u8>>,
    sequence: u64,
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
        let entry = self.entries.entry(key.to_vec()).or_default();
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
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot(round: u64, proposer: &str) -> Ballot {
        Ballot {
            round,
            proposer: NodeId::from(proposer),
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
}
