//! The linearizability check of conditional writes (compare-and-set), per key, in the style of
//! Knossos and Porcupine (the Wing–Gong–Lowe search with memoization).
//!
//! A key that only conditional writes touch behaves as one register: its state is a value or
//! nothing. Each operation either **applied** (its condition held, its write took effect),
//! **did not apply** (its condition failed on the state it observed, which it reports), or has
//! an **unknown** outcome (it may take effect at any moment after it was invoked, or never).
//! The history is linearizable if some total order of the operations respects real time (an
//! operation that completed before another was invoked comes first), gives every operation
//! the outcome it reported on the state the order reaches, and ends in the state the replicas
//! hold at the end. Two compare-and-sets that both succeed on one expected state, or a
//! success on a stale state, have no such order.
//!
//! Cost: the search visits each (set of operations placed, state) pair once; keys carry a few
//! dozen operations in a simulation, and a key with more than [`MAX_OPS_PER_KEY`] is not
//! judged (reported as such, never silently passed).

use crate::core::paxos::Condition;
use crate::core::types::Millis;
use crate::history::check::{Violation, ViolationKind};
use crate::history::{History, OpId, OpKind, Outcome};
use std::collections::{BTreeMap, BTreeSet};

/// Operations on one key beyond which the search is not attempted (a bitmask holds them).
pub const MAX_OPS_PER_KEY: usize = 128;

/// What the check covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinearizabilityReport {
    pub violations: Vec<Violation>,
    pub keys_checked: usize,
    pub ops_checked: usize,
    /// Keys not judged: too many operations, or the recorder excused them (see `check`).
    pub keys_skipped: usize,
}

/// The register a key is: a value, or none.
type State = Option<Vec<u8>>;

#[derive(Clone, Debug)]
enum Effect {
    Applied,
    /// The condition failed on this state.
    NotApplied(State),
    /// It may have applied (at any moment after its invocation) or not.
    Unknown,
    /// It observed concurrent values.
    Siblings,
}

#[derive(Clone, Debug)]
struct Op {
    id: OpId,
    invoked_at: Millis,
    /// `None`: never answered (only an unknown operation).
    completed_at: Option<Millis>,
    condition: Condition,
    write: State,
    effect: Effect,
}

fn holds(condition: &Condition, state: &State) -> bool {
    match condition {
        Condition::Absent => state.is_none(),
        Condition::Present => state.is_some(),
        Condition::Equals(expected) => state.as_ref() == Some(expected),
        // Contexts are not modelled here (the workload sends none): never holds.
        Condition::Matches(_) => false,
    }
}

/// Judges every key's conditional writes in `history`. `finals` holds each key's values on
/// its replicas at the end; `excused` names the keys to pass over (where the promise's
/// premises did not hold: a copy lost for good, a replica's memory lost, a ring change).
pub fn check(
    history: &History,
    finals: &BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    excused: &dyn Fn(&[u8]) -> bool,
) -> LinearizabilityReport {
    let mut report = LinearizabilityReport::default();
    let mut by_key: BTreeMap<&[u8], Vec<Op>> = BTreeMap::new();
    for (i, op) in history.ops().iter().enumerate() {
        let OpKind::Conditional { value, condition } = &op.kind else {
            continue;
        };
        let effect = match &op.outcome {
            Outcome::Written { .. } => Effect::Applied,
            Outcome::Read { values, .. } => match values.as_slice() {
                [] => Effect::NotApplied(None),
                [one] => Effect::NotApplied(Some(one.data.clone())),
                // Concurrent values on a key only conditional writes touch: no register
                // state explains them (judged with the key, below).
                _ => Effect::Siblings,
            },
            Outcome::Failed { definite: true, .. } => continue,
            Outcome::Failed { .. } | Outcome::Unknown => Effect::Unknown,
        };
        let completed_at = match effect {
            Effect::Unknown => None,
            _ => op.completed_at,
        };
        by_key.entry(op.key.as_slice()).or_default().push(Op {
            id: OpId(i),
            invoked_at: op.invoked_at,
            completed_at,
            condition: condition.clone(),
            write: value.clone(),
            effect,
        });
    }
    for (key, ops) in by_key {
        if ops.len() > MAX_OPS_PER_KEY || excused(key) {
            report.keys_skipped += 1;
            continue;
        }
        let listing = || {
            let mut shown: Vec<String> = ops
                .iter()
                .map(|o| format!("{}", history.get(o.id)))
                .collect();
            shown.truncate(40);
            shown.join("\n    ")
        };
        let last = match finals.get(key).map(Vec::as_slice) {
            None | Some([]) => None,
            Some([one]) => Some(one.clone()),
            Some(many) => {
                report.violations.push(Violation {
                    kind: ViolationKind::NotLinearizable,
                    key: key.to_vec(),
                    detail: format!(
                        "ends with {} concurrent values:\n    {}",
                        many.len(),
                        listing()
                    ),
                    ops: Vec::new(),
                });
                continue;
            }
        };
        report.keys_checked += 1;
        report.ops_checked += ops.len();
        if let Some(op) = ops.iter().find(|o| matches!(o.effect, Effect::Siblings)) {
            report.violations.push(Violation {
                kind: ViolationKind::NotLinearizable,
                key: key.to_vec(),
                detail: format!(
                    "a conditional write observed concurrent values on a key only conditional \
                     writes touch: {}",
                    history.get(op.id)
                ),
                // Operations of the conditional history, shown in the detail.
                ops: Vec::new(),
            });
            continue;
        }
        if !Search::new(&ops, last.clone()).run() {
            report.violations.push(Violation {
                kind: ViolationKind::NotLinearizable,
                key: key.to_vec(),
                detail: format!(
                    "no order of its {} conditional writes explains what they answered and the \
                     final state {:?}:\n    {}",
                    ops.len(),
                    last.as_deref().map(String::from_utf8_lossy),
                    listing()
                ),
                ops: Vec::new(),
            });
        }
    }
    report
}

/// The depth-first search for a linearization.
struct Search<'a> {
    ops: &'a [Op],
    last: State,
    /// Operations that answered (applied or not): each must be placed.
    must: u128,
    seen: BTreeSet<(u128, State)>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Op], last: State) -> Self {
        let must = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| !matches!(o.effect, Effect::Unknown))
            .fold(0u128, |m, (i, _)| m | 1 << i);
        Search {
            ops,
            last,
            must,
            seen: BTreeSet::new(),
        }
    }

    fn run(&mut self) -> bool {
        self.place(0, None)
    }

    fn place(&mut self, placed: u128, state: State) -> bool {
        if placed & self.must == self.must && state == self.last {
            return true;
        }
        if !self.seen.insert((placed, state.clone())) {
            return false;
        }
        // Nothing may be placed after an operation that completed before it was invoked:
        // the earliest completion among the unplaced answered ones bounds the candidates.
        let horizon = self
            .ops
            .iter()
            .enumerate()
            .filter(|(i, _)| placed & (1 << i) == 0)
            .filter_map(|(_, o)| o.completed_at)
            .min()
            .unwrap_or(Millis::MAX);
        for (i, op) in self.ops.iter().enumerate() {
            if placed & (1 << i) != 0 || op.invoked_at > horizon {
                continue;
            }
            let next = match &op.effect {
                Effect::Applied if holds(&op.condition, &state) => op.write.clone(),
                Effect::NotApplied(observed)
                    if !holds(&op.condition, &state) && *observed == state =>
                {
                    state.clone()
                }
                // An unknown outcome placed here applies (placing it where it would fail is
                // the same as leaving it out).
                Effect::Unknown if holds(&op.condition, &state) => op.write.clone(),
                _ => continue,
            };
            if self.place(placed | 1 << i, next) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::request::ReadValue;
    use crate::core::version_vector::VersionVector;

    fn cas(h: &mut History, at: Millis, value: Option<&str>, condition: Condition) -> OpId {
        h.invoke(
            1,
            b"k".to_vec(),
            OpKind::Conditional {
                value: value.map(|v| v.as_bytes().to_vec()),
                condition,
            },
            None,
            at,
        )
    }

    fn applied(h: &mut History, op: OpId, at: Millis) {
        h.complete(
            op,
            at,
            Outcome::Written {
                context: VersionVector::new(),
            },
        );
    }

    fn refused(h: &mut History, op: OpId, at: Millis, observed: Option<&str>) {
        let values = observed
            .map(|v| ReadValue {
                data: v.as_bytes().to_vec(),
                expires_at_ms: None,
            })
            .into_iter()
            .collect();
        h.complete(
            op,
            at,
            Outcome::Read {
                values,
                context: VersionVector::new(),
            },
        );
    }

    fn finals(value: Option<&str>) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
        let values = value.map(|v| v.as_bytes().to_vec()).into_iter().collect();
        [(b"k".to_vec(), values)].into_iter().collect()
    }

    fn verdict(h: &History, last: Option<&str>) -> usize {
        let report = check(h, &finals(last), &|_| false);
        assert_eq!(report.keys_checked, 1);
        report.violations.len()
    }

    #[test]
    fn a_correct_history_of_overlapping_writes_passes() {
        let mut h = History::new();
        let a = cas(&mut h, 0, Some("a"), Condition::Absent);
        let b = cas(&mut h, 5, Some("b"), Condition::Absent);
        // b completes first, having lost: it saw a, so a is placed before it.
        refused(&mut h, b, 20, Some("a"));
        applied(&mut h, a, 30);
        let c = cas(&mut h, 40, Some("c"), Condition::Equals(b"a".to_vec()));
        applied(&mut h, c, 50);
        assert_eq!(verdict(&h, Some("c")), 0);
    }

    #[test]
    fn two_creates_that_both_succeed_are_caught() {
        let mut h = History::new();
        let a = cas(&mut h, 0, Some("a"), Condition::Absent);
        let b = cas(&mut h, 1, Some("b"), Condition::Absent);
        applied(&mut h, a, 10);
        applied(&mut h, b, 11);
        assert_eq!(verdict(&h, Some("b")), 1);
    }

    #[test]
    fn a_success_on_a_stale_state_is_caught() {
        let mut h = History::new();
        let a = cas(&mut h, 0, Some("a"), Condition::Absent);
        applied(&mut h, a, 10);
        let b = cas(&mut h, 20, Some("b"), Condition::Equals(b"a".to_vec()));
        applied(&mut h, b, 30);
        // Invoked after b completed, yet succeeds on a, which b replaced.
        let c = cas(&mut h, 40, Some("c"), Condition::Equals(b"a".to_vec()));
        applied(&mut h, c, 50);
        assert_eq!(verdict(&h, Some("c")), 1);
    }

    #[test]
    fn an_unknown_outcome_may_apply_late_or_never() {
        let mut h = History::new();
        let a = cas(&mut h, 0, Some("a"), Condition::Absent);
        h.complete(a, 100, Outcome::Unknown);
        let b = cas(&mut h, 200, None, Condition::Absent);
        refused(&mut h, b, 210, Some("a"));
        assert_eq!(verdict(&h, Some("a")), 0, "applied late");
        let mut h2 = History::new();
        let a = cas(&mut h2, 0, Some("a"), Condition::Absent);
        h2.complete(a, 100, Outcome::Unknown);
        assert_eq!(verdict(&h2, None), 0, "never applied");
    }

    #[test]
    fn a_final_state_no_order_reaches_is_caught() {
        let mut h = History::new();
        let a = cas(&mut h, 0, Some("a"), Condition::Absent);
        applied(&mut h, a, 10);
        assert_eq!(verdict(&h, None), 1, "an applied write lost at the end");
        assert_eq!(verdict(&h, Some("a")), 0);
    }

    #[test]
    fn keys_with_lost_copies_are_skipped_not_passed() {
        let mut h = History::new();
        let a = cas(&mut h, 0, Some("a"), Condition::Absent);
        applied(&mut h, a, 10);
        let report = check(&h, &finals(None), &|_| true);
        assert_eq!((report.keys_checked, report.keys_skipped), (0, 1));
        assert!(report.violations.is_empty());
    }
}
