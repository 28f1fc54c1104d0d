//! Hand-written histories: each violation kind fires on a history that has it, and a correct
//! history passes.

use super::*;
use crate::core::request::ReadValue;
use crate::core::types::Quorum;
use crate::core::version_vector::{Actor, Dot};

fn vv(entries: &[(&str, u64)]) -> VersionVector {
    entries
        .iter()
        .map(|(a, n)| (Actor((*a).into()), *n))
        .collect()
}

fn put(h: &mut History, client: u32, value: &str, ctx: Option<VersionVector>, at: Millis) -> OpId {
    h.invoke(
        client,
        b"k".to_vec(),
        OpKind::Put {
            value: value.as_bytes().to_vec(),
            ttl_ms: None,
            w: Quorum::Quorum,
            overwrite: false,
        },
        ctx,
        at,
    )
}

fn get(h: &mut History, client: u32, at: Millis) -> OpId {
    h.invoke(
        client,
        b"k".to_vec(),
        OpKind::Get {
            r: Quorum::Quorum,
            stale_ok_ms: 0,
        },
        None,
        at,
    )
}

fn written(h: &mut History, id: OpId, at: Millis, ctx: VersionVector) {
    h.complete(id, at, Outcome::Written { context: ctx });
}

fn read(h: &mut History, id: OpId, at: Millis, values: &[&str], ctx: VersionVector) {
    let values = values
        .iter()
        .map(|v| ReadValue {
            data: v.as_bytes().to_vec(),
            expires_at_ms: None,
        })
        .collect();
    h.complete(
        id,
        at,
        Outcome::Read {
            values,
            context: ctx,
        },
    );
}

fn final_with(values: &[(&str, &str, u64)]) -> FinalState {
    // Builds a state holding `values` as siblings with the given dots.
    let mut s = Siblings::new();
    for (v, actor, n) in values {
        let mut one = Siblings::new();
        let actor = Actor((*actor).into());
        let ctx = if *n > 1 {
            vv(&[(&*actor.0, n - 1)])
        } else {
            VersionVector::new()
        };
        one.update(
            &actor,
            &ctx,
            Payload::Value {
                data: v.as_bytes().to_vec(),
                expires_at_ms: None,
            },
            64,
        );
        s.merge(&one);
    }
    FinalState {
        keys: [(b"k".to_vec(), values_of(&s))].into_iter().collect(),
        versions: None,
        at: 1_000,
        counters: BTreeMap::new(),
    }
}

/// What the simulator would report each write did: (op, when it ran, its dot, what it was
/// entitled to replace, the value it stored). Runs in the same millisecond ran in the order
/// listed.
type RunSpec<'a> = (
    OpId,
    Millis,
    (&'a str, u64),
    &'a [(&'a str, u64)],
    Option<&'a str>,
);

fn runs(specs: &[RunSpec]) -> BTreeMap<OpId, WriteRun> {
    let mut by_time: Vec<usize> = (0..specs.len()).collect();
    by_time.sort_by_key(|&i| (specs[i].1, i));
    by_time
        .into_iter()
        .enumerate()
        .map(|(order, i)| (order as u64, &specs[i]))
        .map(|(order, (op, at, (actor, n), replaced, value))| {
            (
                *op,
                WriteRun {
                    at: *at,
                    order,
                    dot: Dot {
                        actor: Actor((*actor).into()),
                        counter: *n,
                    },
                    replaced: vv(replaced),
                    value: value.map(|v| v.as_bytes().to_vec()),
                },
            )
        })
        .collect()
}

fn circumstances() -> Circumstances {
    Circumstances {
        replicas: 3,
        ..Circumstances::default()
    }
}

fn kinds(report: &CheckReport) -> Vec<ViolationKind> {
    report.violations.iter().map(|v| v.kind).collect()
}

#[test]
fn a_correct_history_passes() {
    let mut h = History::new();
    let p = put(&mut h, 1, "a", None, 10);
    written(&mut h, p, 20, vv(&[("A", 1)]));
    let r = get(&mut h, 1, 30);
    read(&mut h, r, 40, &["a"], vv(&[("A", 1)]));
    let q = put(&mut h, 1, "b", Some(vv(&[("A", 1)])), 50);
    written(&mut h, q, 60, vv(&[("A", 2)]));
    let report = check(&h, &final_with(&[("b", "A", 2)]), &circumstances());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    // "b" is there; "a" is missing and excused because "b" replaced it: not counted as checked.
    assert_eq!(report.writes_checked, 1);
    assert_eq!(report.writes_excused[&Excuse::Superseded], 1);
    assert_eq!(report.ryw_strict_checked, 1);
}

#[test]
fn an_acknowledged_write_missing_from_the_end_is_lost() {
    let mut h = History::new();
    let p = put(&mut h, 1, "a", None, 10);
    written(&mut h, p, 20, vv(&[("A", 1)]));
    let q = put(&mut h, 2, "b", None, 15); // blind: does not supersede "a"
    written(&mut h, q, 25, vv(&[("B", 1)]));
    let report = check(&h, &final_with(&[("b", "B", 1)]), &circumstances());
    assert_eq!(kinds(&report), vec![ViolationKind::LostWrite]);
    // The same loss is excused when every copy of its dot went down with a crashed peer.
    let mut c = circumstances();
    c.writes_run = Some(runs(&[
        (p, 15, ("A", 1), &[], Some("a")),
        (q, 20, ("B", 1), &[], Some("b")),
    ]));
    c.losses.insert(
        b"k".to_vec(),
        vec![Loss {
            at: 30,
            cause: LossCause::Crash,
            held: vv(&[("A", 1)]),
            survived: vv(&[("B", 1)]),
        }],
    );
    let report = check(&h, &final_with(&[("b", "B", 1)]), &c);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.writes_excused[&Excuse::Lost(LossCause::Crash)], 1);
    assert_eq!(
        report.writes_checked, 1,
        "only the surviving write counts as checked"
    );
}

#[test]
fn values_nobody_wrote_are_phantoms() {
    let mut h = History::new();
    let r = get(&mut h, 1, 30);
    read(&mut h, r, 40, &["ghost"], vv(&[("A", 1)]));
    let report = check(&h, &FinalState::default(), &circumstances());
    assert_eq!(kinds(&report), vec![ViolationKind::Phantom]);
}

#[test]
fn a_superseded_value_in_the_final_state_is_a_resurrection() {
    let mut h = History::new();
    let p = put(&mut h, 1, "a", None, 10);
    written(&mut h, p, 20, vv(&[("A", 1)]));
    let d = h.invoke(
        1,
        b"k".to_vec(),
        OpKind::Delete { w: Quorum::Quorum },
        Some(vv(&[("A", 1)])),
        30,
    );
    written(&mut h, d, 40, vv(&[("A", 2)]));
    let report = check(&h, &final_with(&[("a", "A", 1)]), &circumstances());
    assert_eq!(kinds(&report), vec![ViolationKind::Resurrection]);
}

#[test]
fn a_value_beside_its_successor_is_a_false_sibling() {
    let mut h = History::new();
    let p = put(&mut h, 1, "a", None, 10);
    written(&mut h, p, 20, vv(&[("A", 1)]));
    let q = put(&mut h, 1, "b", Some(vv(&[("A", 1)])), 30);
    written(&mut h, q, 40, vv(&[("A", 2)]));
    let r = get(&mut h, 2, 50);
    read(&mut h, r, 60, &["a", "b"], vv(&[("A", 2)]));
    let report = check(&h, &final_with(&[("b", "A", 2)]), &circumstances());
    assert_eq!(kinds(&report), vec![ViolationKind::FalseSiblings]);
}

#[test]
fn a_read_that_misses_the_clients_own_write_breaks_read_your_writes() {
    let mut h = History::new();
    let p = put(&mut h, 1, "a", None, 10);
    written(&mut h, p, 20, vv(&[("A", 1)]));
    let r = get(&mut h, 1, 30);
    read(&mut h, r, 40, &[], VersionVector::new());
    let report = check(&h, &final_with(&[("a", "A", 1)]), &circumstances());
    assert_eq!(kinds(&report), vec![ViolationKind::ReadYourWrites]);
    // With a crash in between it is only counted.
    let mut c = circumstances();
    c.disruptions.push((25, 25));
    let report = check(&h, &final_with(&[("a", "A", 1)]), &c);
    assert!(report.violations.is_empty());
    assert_eq!(report.ryw_weak_misses, 1);
}

#[test]
fn a_value_read_long_after_its_ttl_is_an_expired_read() {
    let mut h = History::new();
    let p = h.invoke(
        1,
        b"k".to_vec(),
        OpKind::Put {
            value: b"a".to_vec(),
            ttl_ms: Some(100),
            w: Quorum::Quorum,
            overwrite: false,
        },
        None,
        10,
    );
    written(&mut h, p, 20, vv(&[("A", 1)]));
    let r = get(&mut h, 2, 500);
    read(&mut h, r, 510, &["a"], vv(&[("A", 1)]));
    let late = FinalState {
        at: 1_000,
        ..FinalState::default()
    };
    let mut c = circumstances();
    c.clock_uncertainty_ms = 50;
    let report = check(&h, &late, &c);
    assert_eq!(kinds(&report), vec![ViolationKind::ExpiredRead]);
    // Within TTL plus clock uncertainty it is fine (and the expired write is not "lost").
    c.clock_uncertainty_ms = 400;
    let report = check(&h, &late, &c);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[test]
fn a_stale_ok_read_may_see_a_value_within_its_window_past_expiry_and_no_further() {
    let history = |stale_ok_ms: Millis| {
        let mut h = History::new();
        let p = h.invoke(
            1,
            b"k".to_vec(),
            OpKind::Put {
                value: b"a".to_vec(),
                ttl_ms: Some(100),
                w: Quorum::Quorum,
                overwrite: false,
            },
            None,
            10,
        );
        written(&mut h, p, 20, vv(&[("A", 1)]));
        let r = h.invoke(
            2,
            b"k".to_vec(),
            OpKind::Get {
                r: Quorum::Quorum,
                stale_ok_ms,
            },
            None,
            500,
        );
        read(&mut h, r, 510, &["a"], vv(&[("A", 1)]));
        h
    };
    let late = FinalState {
        at: 1_000,
        ..FinalState::default()
    };
    let mut c = circumstances();
    c.clock_uncertainty_ms = 50;
    // Expired by at most 20 + 100 + 50 = 170: read at 500, 330 ms past it.
    let report = check(&history(400), &late, &c);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let report = check(&history(300), &late, &c);
    assert_eq!(kinds(&report), vec![ViolationKind::ExpiredRead]);
}

#[test]
fn slow_or_absent_convergence_is_reported() {
    let mut c = circumstances();
    c.convergence = Some(Convergence {
        took_ms: None,
        bound_ms: 1_000,
        diverged_keys: vec![b"k".to_vec()],
    });
    let report = check(&History::new(), &FinalState::default(), &c);
    assert_eq!(kinds(&report), vec![ViolationKind::NotConverged]);
}

#[test]
fn an_unacknowledged_blind_delete_may_remove_a_later_write() {
    // The delete's forward was delayed past its client's timeout and ran after "a" was written.
    let mut h = History::new();
    let d = h.invoke(
        1,
        b"k".to_vec(),
        OpKind::Delete { w: Quorum::Quorum },
        None,
        10,
    );
    h.complete(
        d,
        20,
        Outcome::Failed {
            error: "timed out".into(),
            definite: false,
        },
    );
    let p = put(&mut h, 2, "a", None, 30);
    written(&mut h, p, 40, vv(&[("A", 1)]));
    let late = Circumstances {
        late_write_ms: 500,
        ..circumstances()
    };
    let report = check(&h, &FinalState::default(), &late);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    // But not at any time: a put invoked after the delete could last have run is not excused.
    let mut h3 = h.clone();
    let later = put(&mut h3, 2, "b", None, 600);
    written(&mut h3, later, 610, vv(&[("A", 2)]));
    let report = check(&h3, &FinalState::default(), &late);
    assert_eq!(kinds(&report), vec![ViolationKind::LostWrite]);
    // Had the delete been acknowledged before "a" was written, "a" would be lost.
    let mut h2 = History::new();
    let d = h2.invoke(
        1,
        b"k".to_vec(),
        OpKind::Delete { w: Quorum::Quorum },
        None,
        10,
    );
    written(&mut h2, d, 20, vv(&[("A", 1)]));
    let p = put(&mut h2, 2, "a", None, 30);
    written(&mut h2, p, 40, vv(&[("A", 2)]));
    let report = check(&h2, &FinalState::default(), &circumstances());
    assert_eq!(kinds(&report), vec![ViolationKind::LostWrite]);
}

#[test]
fn after_a_delete_is_collected_a_fresh_write_is_the_aftermath_not_a_miss() {
    // Client 1 writes "a"; it is deleted, the tombstones are collected, and a blind write
    // starts a new history (a new epoch actor). Client 1 then reads "b" with a context that
    // knows nothing of "a": its write is gone, not missed.
    let mut h = History::new();
    let p = put(&mut h, 1, "a", None, 10);
    written(&mut h, p, 20, vv(&[("A", 1)]));
    let d = h.invoke(
        2,
        b"k".to_vec(),
        OpKind::Delete { w: Quorum::Quorum },
        Some(vv(&[("A", 1)])),
        30,
    );
    written(&mut h, d, 40, vv(&[("A", 2)]));
    let q = put(&mut h, 3, "b", None, 100);
    written(&mut h, q, 110, vv(&[("A.e1", 1)]));
    let r = get(&mut h, 1, 120);
    read(&mut h, r, 130, &["b"], vv(&[("A.e1", 1)]));
    let report = check(&h, &final_with(&[("b", "A.e1", 1)]), &circumstances());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.ryw_strict_checked, 1);

    // But reading a value the client's write replaced is still a miss, deleted or not.
    let mut h = History::new();
    let old = put(&mut h, 2, "old", None, 1);
    written(&mut h, old, 5, vv(&[("A", 1)]));
    let p = put(&mut h, 1, "a", Some(vv(&[("A", 1)])), 10);
    written(&mut h, p, 20, vv(&[("A", 2)]));
    let d = h.invoke(
        2,
        b"k".to_vec(),
        OpKind::Delete { w: Quorum::Quorum },
        Some(vv(&[("A", 2)])),
        30,
    );
    written(&mut h, d, 40, vv(&[("A", 3)]));
    let r = get(&mut h, 1, 120);
    read(&mut h, r, 130, &["old"], vv(&[("A", 1)]));
    let report = check(&h, &FinalState::default(), &circumstances());
    assert!(
        kinds(&report).contains(&ViolationKind::ReadYourWrites),
        "{:?}",
        report.violations
    );
}

#[test]
fn a_spurious_sibling_after_clock_pruning_is_counted_not_failed() {
    // The same false sibling as above, on a key whose clock grew to the pruning limit.
    let big: Vec<(String, u64)> = (0..64).map(|i| (format!("X.e{i}"), 1)).collect();
    let big = |extra: &[(&str, u64)]| {
        let mut entries: Vec<(&str, u64)> = big.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        entries.extend_from_slice(extra);
        vv(&entries)
    };
    let mut h = History::new();
    let p = put(&mut h, 1, "a", Some(big(&[])), 10);
    written(&mut h, p, 20, big(&[("A", 1)]));
    let q = put(&mut h, 1, "b", Some(big(&[("A", 1)])), 30);
    written(&mut h, q, 40, big(&[("A", 2)]));
    let r = get(&mut h, 2, 50);
    read(&mut h, r, 60, &["a", "b"], big(&[("A", 2)]));
    let fin = final_with(&[("b", "A", 2)]);
    let strict = check(&h, &fin, &circumstances());
    assert_eq!(kinds(&strict), vec![ViolationKind::FalseSiblings]);
    let c = Circumstances {
        clock_prune_limit: Some(64),
        ..circumstances()
    };
    let report = check(&h, &fin, &c);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.false_siblings_after_pruning, 1);
    // Below the limit the same history still fails.
    let c = Circumstances {
        clock_prune_limit: Some(100),
        ..circumstances()
    };
    assert_eq!(
        kinds(&check(&h, &fin, &c)),
        vec![ViolationKind::FalseSiblings]
    );
}

// The narrowing: histories in which the old, wider excuses hid a real loss.

fn loss(cause: LossCause, held: &[(&str, u64)], survived: &[(&str, u64)]) -> Loss {
    Loss {
        at: 50,
        cause,
        held: vv(held),
        survived: vv(survived),
    }
}

fn blind_delete(h: &mut History, client: u32, at: Millis) -> OpId {
    h.invoke(
        client,
        b"k".to_vec(),
        OpKind::Delete { w: Quorum::Quorum },
        None,
        at,
    )
}

#[test]
fn a_crash_elsewhere_on_the_key_excuses_only_what_it_took() {
    // "v1" is on A, B and C. C alone takes a blind w=1 "v2" and crashes. A bug then drops
    // "v1" from A and B. The old checker marked the whole key damaged at the crash and excused
    // every put invoked before it, "v1" included; only "v2" was really lost.
    let mut h = History::new();
    let v1 = put(&mut h, 1, "v1", None, 10);
    written(&mut h, v1, 20, vv(&[("A", 1)]));
    let v2 = put(&mut h, 2, "v2", None, 30);
    written(&mut h, v2, 35, vv(&[("A", 1), ("C", 1)]));
    let mut c = circumstances();
    c.writes_run = Some(runs(&[
        (v1, 15, ("A", 1), &[], Some("v1")),
        (v2, 32, ("C", 1), &[], Some("v2")),
    ]));
    c.losses.insert(
        b"k".to_vec(),
        vec![loss(LossCause::Crash, &[("A", 1), ("C", 1)], &[("A", 1)])],
    );
    let report = check(&h, &FinalState::default(), &c);
    assert_eq!(kinds(&report), vec![ViolationKind::LostWrite]);
    assert_eq!(report.violations[0].ops, vec![v1]);
    assert_eq!(report.writes_excused[&Excuse::Lost(LossCause::Crash)], 1);
}

#[test]
fn a_blind_delete_supersedes_only_what_its_coordinator_had_seen_when_it_ran() {
    // A blind delete that timed out used to excuse every put on the key, at any time.
    let mut h = History::new();
    let d = blind_delete(&mut h, 1, 10);
    h.complete(
        d,
        2_010,
        Outcome::Failed {
            error: "timed out".into(),
            definite: false,
        },
    );
    let a = put(&mut h, 2, "a", None, 3_000);
    written(&mut h, a, 3_010, vv(&[("B", 1)]));
    // The delete never ran: it supersedes nothing.
    let mut c = circumstances();
    c.writes_run = Some(runs(&[(a, 3_005, ("B", 1), &[], Some("a"))]));
    let report = check(&h, &FinalState::default(), &c);
    assert_eq!(kinds(&report), vec![ViolationKind::LostWrite]);
    // It ran late, at a coordinator that had not seen "a": still nothing to excuse.
    c.writes_run = Some(runs(&[
        (d, 3_020, ("A", 1), &[], None),
        (a, 3_005, ("B", 1), &[], Some("a")),
    ]));
    let report = check(&h, &FinalState::default(), &c);
    assert_eq!(kinds(&report), vec![ViolationKind::LostWrite]);
    // It ran late at a coordinator that had seen "a": "a" was deleted.
    c.writes_run = Some(runs(&[
        (d, 3_020, ("A", 1), &[("B", 1)], None),
        (a, 3_005, ("B", 1), &[], Some("a")),
    ]));
    let report = check(&h, &FinalState::default(), &c);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.writes_excused[&Excuse::Superseded], 1);
}

#[test]
fn a_value_replaced_by_an_acknowledged_delete_may_come_back_only_if_the_delete_was_lost() {
    let mut h = History::new();
    let a = put(&mut h, 1, "a", None, 10);
    written(&mut h, a, 20, vv(&[("A", 1)]));
    let d = h.invoke(
        1,
        b"k".to_vec(),
        OpKind::Delete { w: Quorum::Quorum },
        Some(vv(&[("A", 1)])),
        30,
    );
    written(&mut h, d, 40, vv(&[("A", 2)]));
    let mut fin = final_with(&[("a", "A", 1)]);
    fin.versions = Some(
        [(
            b"k".to_vec(),
            vec![(
                Dot {
                    actor: Actor("A".into()),
                    counter: 1,
                },
                b"a".to_vec(),
            )],
        )]
        .into_iter()
        .collect(),
    );
    let mut c = circumstances();
    c.writes_run = Some(runs(&[
        (a, 15, ("A", 1), &[], Some("a")),
        (d, 35, ("A", 2), &[("A", 1)], None),
    ]));
    // The tombstones were collected (no loss): "a" is back, which must never happen.
    let report = check(&h, &fin, &c);
    assert_eq!(kinds(&report), vec![ViolationKind::Resurrection]);
    // Every copy of the delete died with its replicas: "a" coming back is excused.
    c.losses.insert(
        b"k".to_vec(),
        vec![loss(LossCause::Crash, &[("A", 2)], &[("A", 1)])],
    );
    let report = check(&h, &fin, &c);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.resurrections_excused, 1);
}

#[test]
fn an_expire_rewrite_is_a_new_write_of_the_same_bytes() {
    // "a" is written, an expire rewrites it under a new dot, and a write that saw only the
    // first dot stands beside the rewrite: concurrent, not a false sibling.
    let mut h = History::new();
    let a = put(&mut h, 1, "a", None, 10);
    written(&mut h, a, 20, vv(&[("A", 1)]));
    let e = h.invoke(
        2,
        b"k".to_vec(),
        OpKind::Expire {
            ttl_ms: None,
            w: Quorum::Quorum,
        },
        None,
        25,
    );
    written(&mut h, e, 30, vv(&[("A", 2)]));
    let b = put(&mut h, 1, "b", Some(vv(&[("A", 1)])), 26);
    written(&mut h, b, 31, vv(&[("A", 1), ("B", 1)]));
    let r = get(&mut h, 3, 40);
    read(&mut h, r, 45, &["a", "b"], vv(&[("A", 2), ("B", 1)]));
    let mut c = circumstances();
    c.writes_run = Some(runs(&[
        (a, 15, ("A", 1), &[], Some("a")),
        (e, 28, ("A", 2), &[], Some("a")),
        (b, 29, ("B", 1), &[("A", 1)], Some("b")),
    ]));
    let report = check(&h, &FinalState::default(), &c);
    assert!(
        !kinds(&report).contains(&ViolationKind::FalseSiblings),
        "{:?}",
        report.violations
    );
    // Without the rewrite, the same read is a false sibling.
    c.writes_run = Some(runs(&[
        (a, 15, ("A", 1), &[], Some("a")),
        (b, 29, ("B", 1), &[("A", 1)], Some("b")),
    ]));
    let report = check(&h, &FinalState::default(), &c);
    assert!(kinds(&report).contains(&ViolationKind::FalseSiblings));
}

#[test]
fn an_expire_run_in_the_same_millisecond_as_the_put_it_rewrote_supersedes_it() {
    // A paused peer catches up: it runs a put of "a" and then an expire that finds "a" and
    // rewrites it under a new dot, both in the same millisecond. The put's own dot is gone
    // from the end; the rewrite (same bytes) is there. The expire replaced the put.
    let mut h = History::new();
    let a = put(&mut h, 1, "a", None, 10);
    let e = h.invoke(
        2,
        b"k".to_vec(),
        OpKind::Expire {
            ttl_ms: None,
            w: Quorum::Quorum,
        },
        None,
        12,
    );
    written(&mut h, a, 40, vv(&[("A", 1)]));
    written(&mut h, e, 40, vv(&[("A", 2)]));
    let mut fin = final_with(&[("a", "A", 2)]);
    let dot = |n| Dot {
        actor: Actor("A".into()),
        counter: n,
    };
    fin.versions = Some(
        [(b"k".to_vec(), vec![(dot(2), b"a".to_vec())])]
            .into_iter()
            .collect(),
    );
    let mut c = circumstances();
    c.writes_run = Some(runs(&[
        (a, 30, ("A", 1), &[], Some("a")),
        (e, 30, ("A", 2), &[], Some("a")),
    ]));
    let report = check(&h, &fin, &c);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.writes_excused[&Excuse::Superseded], 1);
    // Listed the other way round, the expire ran first and cannot have replaced the put
    // (nor the put the expire): both are judged, and the put is lost.
    c.writes_run = Some(runs(&[
        (e, 30, ("A", 2), &[], Some("a")),
        (a, 30, ("A", 1), &[], Some("a")),
    ]));
    let report = check(&h, &fin, &c);
    assert_eq!(kinds(&report), vec![ViolationKind::LostWrite]);
}

#[test]
fn a_write_replaced_by_a_put_that_was_then_deleted_and_collected_is_gone_not_missed() {
    // Client 1 writes "a"; client 2 replaces it with "b" (context covering "a"), then deletes
    // "b"; the tombstones are collected, so client 1 reads nothing with an empty context.
    let build = |with_delete: bool| {
        let mut h = History::new();
        let p = put(&mut h, 1, "a", None, 10);
        written(&mut h, p, 20, vv(&[("A", 1)]));
        let q = put(&mut h, 2, "b", Some(vv(&[("A", 1)])), 30);
        written(&mut h, q, 40, vv(&[("A", 2)]));
        if with_delete {
            let d = h.invoke(
                2,
                b"k".to_vec(),
                OpKind::Delete { w: Quorum::Quorum },
                Some(vv(&[("A", 2)])),
                50,
            );
            written(&mut h, d, 60, vv(&[("A", 3)]));
        }
        let r = get(&mut h, 1, 120);
        read(&mut h, r, 130, &[], VersionVector::new());
        h
    };
    let report = check(&build(true), &FinalState::default(), &circumstances());
    let ryw: Vec<_> = report
        .violations
        .iter()
        .filter(|v| v.kind == ViolationKind::ReadYourWrites)
        .collect();
    assert!(ryw.is_empty(), "{ryw:?}");
    // Without the delete, reading nothing is a miss: "b" should still be there.
    let report = check(&build(false), &FinalState::default(), &circumstances());
    assert!(kinds(&report).contains(&ViolationKind::ReadYourWrites));
}

#[test]
fn a_write_an_expire_rewrote_with_a_ttl_is_gone_once_the_ttl_passed() {
    // Client 1 writes "a"; client 2's expire rewrites it with a 100 ms TTL; the value expires
    // and its tombstone is collected, so client 1 later reads nothing with an empty context
    // (seed 1795766142). Before the TTL has passed, the same read is a miss.
    let build = |read_at: Millis| {
        let mut h = History::new();
        let p = put(&mut h, 1, "a", None, 10);
        written(&mut h, p, 20, vv(&[("A", 1)]));
        let e = h.invoke(
            2,
            b"k".to_vec(),
            OpKind::Expire {
                ttl_ms: Some(100),
                w: Quorum::Quorum,
            },
            None,
            30,
        );
        written(&mut h, e, 40, vv(&[("A", 2)]));
        let r = get(&mut h, 1, read_at);
        read(&mut h, r, read_at + 2, &[], VersionVector::new());
        let mut c = circumstances();
        c.writes_run = Some(runs(&[
            (p, 15, ("A", 1), &[], Some("a")),
            (e, 35, ("A", 2), &[], Some("a")),
        ]));
        (h, c)
    };
    let ryw = |report: &CheckReport| {
        report
            .violations
            .iter()
            .filter(|v| v.kind == ViolationKind::ReadYourWrites)
            .count()
    };
    let (h, c) = build(1_000);
    assert_eq!(ryw(&check(&h, &FinalState::default(), &c)), 0);
    let (h, c) = build(60);
    assert_eq!(ryw(&check(&h, &FinalState::default(), &c)), 1);
}

#[test]
fn a_session_read_that_loses_a_value_its_previous_read_saw_breaks_monotonic_reads() {
    // Client 1 reads "a" with context {A:1}, then reads again carrying that context and gets
    // nothing older-looking: a miss, unless something replaced "a".
    let build = |replaced: bool| {
        let mut h = History::new();
        let p = put(&mut h, 2, "a", None, 10);
        written(&mut h, p, 20, vv(&[("A", 1)]));
        let r1 = get(&mut h, 1, 30);
        read(&mut h, r1, 40, &["a"], vv(&[("A", 1)]));
        if replaced {
            let q = put(&mut h, 2, "b", Some(vv(&[("A", 1)])), 45);
            written(&mut h, q, 48, vv(&[("A", 2)]));
        }
        let r2 = h.invoke(
            1,
            b"k".to_vec(),
            OpKind::Get {
                r: Quorum::One,
                stale_ok_ms: 0,
            },
            Some(vv(&[("A", 1)])),
            50,
        );
        read(&mut h, r2, 60, &[], VersionVector::new());
        h
    };
    let mr = |report: &CheckReport| {
        report
            .violations
            .iter()
            .filter(|v| v.kind == ViolationKind::MonotonicReads)
            .count()
    };
    let report = check(&build(false), &FinalState::default(), &circumstances());
    assert_eq!(mr(&report), 1, "{:?}", report.violations);
    assert_eq!(report.monotonic_checked, 1);
    let report = check(&build(true), &FinalState::default(), &circumstances());
    assert_eq!(mr(&report), 0, "{:?}", report.violations);
}

fn incr(h: &mut History, by: i64, at: Millis) -> OpId {
    h.invoke(
        1,
        b"ctr".to_vec(),
        OpKind::Increment {
            by,
            w: Quorum::Quorum,
        },
        None,
        at,
    )
}

fn with_counter(value: i64) -> FinalState {
    FinalState {
        counters: [(b"ctr".to_vec(), value)].into_iter().collect(),
        ..FinalState::default()
    }
}

#[test]
fn a_counter_must_sum_its_acknowledged_increments_plus_some_of_the_uncertain_ones() {
    let mut h = History::new();
    let a = incr(&mut h, 2, 10);
    written(&mut h, a, 20, vv(&[("A", 1)]));
    let b = incr(&mut h, 3, 30);
    written(&mut h, b, 40, vv(&[("A", 2)]));
    // Unknown outcome: may or may not count.
    incr(&mut h, 4, 50);
    let refused = incr(&mut h, 100, 60);
    h.complete(
        refused,
        61,
        Outcome::Failed {
            error: "refused".into(),
            definite: true,
        },
    );
    let c = circumstances();
    for fine in [5, 9] {
        let report = check(&h, &with_counter(fine), &c);
        assert_eq!(kinds(&report), vec![], "{fine}");
        assert_eq!(report.increments_checked, 3);
    }
    // Short of an acknowledged increment, one counted twice, a definite failure counted.
    for wrong in [2, 7, 8, 105] {
        let report = check(&h, &with_counter(wrong), &c);
        assert_eq!(kinds(&report), vec![ViolationKind::CounterSum], "{wrong}");
    }
}

#[test]
fn an_acknowledged_increment_whose_every_copy_was_lost_may_be_missing() {
    let mut h = History::new();
    let a = incr(&mut h, 2, 10);
    written(&mut h, a, 20, vv(&[("A", 1)]));
    let b = incr(&mut h, 3, 30);
    written(&mut h, b, 40, vv(&[("B", 1)]));
    let mut c = circumstances();
    c.writes_run = Some(runs(&[
        (a, 15, ("A", 1), &[], None),
        (b, 35, ("B", 1), &[], None),
    ]));
    let short = with_counter(3);
    assert_eq!(
        kinds(&check(&h, &short, &c)),
        vec![ViolationKind::CounterSum]
    );
    c.losses.insert(
        b"ctr".to_vec(),
        vec![loss(LossCause::Crash, &[("A", 1)], &[])],
    );
    assert_eq!(kinds(&check(&h, &short, &c)), vec![]);
    assert_eq!(kinds(&check(&h, &with_counter(5), &c)), vec![]);
}
