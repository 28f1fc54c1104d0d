//! The simulator's own tests: fixed seeds pass, a run is reproducible bit for bit, every kind
//! of fault is exercised, and the checker catches each planted bug within a bounded number of
//! seeds.

use crate::scenario::Scenario;
use crate::world::run;
use ringcache::core::planted::PlantedBug;
use ringcache::history::check::ViolationKind;

const OPS: usize = 300;

#[test]
fn fixed_seeds_keep_every_promise() {
    for seed in 1..=40 {
        let scenario = Scenario::generate(seed, OPS);
        let result = run(&scenario, None);
        assert!(
            result.check.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: cargo run -p simulations -- run --seed {seed} --ops {OPS}",
            result.check.violations
        );
        assert!(
            result.history.len() > OPS / 10,
            "seed {seed} ran too little"
        );
    }
}

/// Seeds that once failed, each for a bug since fixed: a hint delivered after the delete that
/// covered it was collected (1795797059), a create-if-absent decided by replicas that had all
/// just gained the key's partition (3325), and conditional keys most of whose replicas evicted
/// them (4458), or one of whose replicas left the cluster without handing them off (737, 13546,
/// 52292): excuses the checker lacked.
#[test]
fn seeds_that_once_failed_keep_every_promise() {
    let seeds = [
        (1_795_797_059, 600),
        (3325, 600),
        (4458, 600),
        (737, OPS),
        (13546, 600),
        (52292, 600),
    ];
    for (seed, ops) in seeds {
        let result = run(&Scenario::generate(seed, ops), None);
        assert!(
            result.check.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: cargo run --release -p simulations -- run --seed {seed} --ops {ops}",
            result.check.violations
        );
    }
}

#[test]
fn the_same_seed_replays_bit_for_bit() {
    for seed in [3, 17] {
        let scenario = Scenario::generate(seed, OPS);
        let a = run(&scenario, None);
        let b = run(&scenario, None);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.history, b.history);
    }
    let a = run(&Scenario::generate(3, OPS), None).trace_hash;
    let b = run(&Scenario::generate(4, OPS), None).trace_hash;
    assert_ne!(a, b, "different seeds give different runs");
}

#[test]
fn fixed_seeds_exercise_every_kind_of_fault() {
    let mut seen = std::collections::BTreeSet::new();
    let (mut evicted, mut expired, mut collected) = (0, 0, 0);
    let (mut sharded, mut expires) = (0, 0);
    for seed in 1..=60 {
        let scenario = Scenario::generate(seed, OPS);
        sharded += usize::from(scenario.shards > 1);
        let result = run(&scenario, None);
        expires += result
            .history
            .ops()
            .iter()
            .filter(|op| {
                matches!(op.kind, ringcache::history::OpKind::Expire { .. })
                    && op.is_acknowledged_write()
            })
            .count();
        seen.extend(result.faults_injected.keys().copied());
        evicted += result.evicted;
        expired += result.expired;
        collected += result.tombstones_collected;
    }
    // Peers of several shards route requests, replies and views as real peers do, and TTL
    // changes rewrite values under new dots.
    assert!(
        sharded >= 10,
        "only {sharded} of 60 seeds ran sharded peers"
    );
    assert!(
        expires > 50,
        "only {expires} expires or persists acknowledged"
    );
    // The cache's own ways of losing a copy run alongside the faults.
    assert!(evicted > 20, "memory limits evicted only {evicted} keys");
    assert!(
        expired > 10,
        "active expiry reclaimed only {expired} values"
    );
    assert!(
        collected > 10,
        "only {collected} tombstone-only keys collected"
    );
    for kind in [
        "partition",
        "partition-one-way",
        "partition-isolate",
        "partition-majority",
        "partition-flapping",
        "crash-restart",
        "pause",
        "false-suspicion",
        "join",
        "leave",
    ] {
        assert!(seen.contains(kind), "no seed injected {kind}: {seen:?}");
    }
}

fn caught_within(bug: PlantedBug, seeds: u64) -> Option<u64> {
    (1..=seeds).find(|seed| {
        !run(&Scenario::generate(*seed, OPS), Some(bug))
            .check
            .violations
            .is_empty()
    })
}

/// The first of `seeds` seeds whose run of `scenario` with `bug` planted has a violation of
/// `kind`, if any.
fn caught_as(
    scenario: impl Fn(u64) -> Scenario,
    bug: PlantedBug,
    kind: ViolationKind,
    seeds: u64,
) -> Option<u64> {
    (1..=seeds).find(|seed| {
        run(&scenario(*seed), Some(bug))
            .check
            .violations
            .iter()
            .any(|v| v.kind == kind)
    })
}

/// Conditional writes judged over `seeds` clean runs of `scenario`; panics on any violation.
fn judged_without_violations(scenario: impl Fn(u64) -> Scenario, seeds: u64) -> usize {
    let mut judged = 0;
    for seed in 1..=seeds {
        let result = run(&scenario(seed), None);
        assert!(
            result.check.violations.is_empty(),
            "seed {seed}: {:?}",
            result.check.violations
        );
        judged += result.check.conditional_ops_checked;
    }
    judged
}

#[test]
fn the_checker_catches_an_early_ack() {
    let seed = caught_within(PlantedBug::AckAfterWMinusOne, 30);
    assert!(seed.is_some(), "ack after W-1 went unnoticed for 30 seeds");
}

#[test]
fn the_checker_catches_a_merge_that_drops_siblings() {
    let seed = caught_within(PlantedBug::MergeDropsSibling, 30);
    assert!(
        seed.is_some(),
        "dropped siblings went unnoticed for 30 seeds"
    );
}

#[test]
fn the_checker_catches_last_write_wins() {
    let seed = caught_within(PlantedBug::LastWriteWins, 30);
    assert!(
        seed.is_some(),
        "last-write-wins went unnoticed for 30 seeds"
    );
}

// Bugs aimed at the checker's excuses: each loses or brings back data in circumstances an
// over-wide excuse would cover (a crash elsewhere, a blind delete, a tombstone collection, a
// ring change). Each must be caught within 100 seeds.

#[test]
fn the_checker_catches_a_value_dropped_after_an_unrelated_crash() {
    let seed = caught_within(PlantedBug::DropValueAfterCrash, 100);
    assert!(
        seed.is_some(),
        "values dropped after a crash went unnoticed for 100 seeds"
    );
}

#[test]
fn the_checker_catches_a_delete_applied_to_writes_it_never_saw() {
    let seed = caught_within(PlantedBug::DeleteCoversUnseen, 100);
    assert!(
        seed.is_some(),
        "a delete covering unseen writes went unnoticed for 100 seeds"
    );
}

#[test]
fn the_checker_catches_a_forget_that_drops_a_live_value() {
    let seed = caught_within(PlantedBug::ForgetDropsLive, 100);
    assert!(
        seed.is_some(),
        "a Forget dropping live values went unnoticed for 100 seeds"
    );
}

#[test]
fn the_checker_catches_a_ring_change_that_drops_data_no_one_else_holds() {
    let seed = caught_within(PlantedBug::RingChangeDropsHeld, 100);
    assert!(
        seed.is_some(),
        "drops on ring changes went unnoticed for 100 seeds"
    );
}

#[test]
fn the_checker_catches_a_read_that_counts_its_spares_as_answers() {
    let seed = caught_within(PlantedBug::ReadCountsSpares, 100);
    assert!(
        seed.is_some(),
        "reads counting unasked spares went unnoticed for 100 seeds"
    );
}

// Self-healing: convergence comes from anti-entropy alone, and a handoff drops a copy only
// once a new replica holds it.

#[test]
fn the_checker_catches_anti_entropy_that_skips_part_of_a_tree() {
    let seed = caught_within(PlantedBug::AntiEntropySkipsLeaf, 100);
    assert!(
        seed.is_some(),
        "anti-entropy skipping leaves went unnoticed for 100 seeds"
    );
}

#[test]
fn the_checker_catches_a_handoff_that_drops_copies_before_they_are_confirmed() {
    let seed = caught_within(PlantedBug::HandoffDropsEarly, 100);
    assert!(
        seed.is_some(),
        "handoffs dropping unconfirmed copies went unnoticed for 100 seeds"
    );
}

#[test]
fn the_checker_catches_a_sibling_cap_that_drops_siblings() {
    let seed = caught_within(PlantedBug::SiblingCapDropsSiblings, 100);
    assert!(
        seed.is_some(),
        "a sibling cap dropping siblings went unnoticed for 100 seeds"
    );
}

// Overwrites (Redis's SET): a put without context replaces only what its coordinator saw.

#[test]
fn the_checker_catches_an_overwrite_that_replaces_writes_its_coordinator_never_saw() {
    let seed = caught_within(PlantedBug::OverwriteCoversNextDot, 100);
    assert!(
        seed.is_some(),
        "an overwrite covering unseen writes went unnoticed for 100 seeds"
    );
}

// Session guarantees: a read carrying a context never answers older than it.

#[test]
fn the_checker_catches_session_reads_that_ignore_their_context() {
    let seed = caught_within(PlantedBug::SessionIgnored, 100);
    assert!(
        seed.is_some(),
        "session reads answering after R whatever their context went unnoticed for 100 seeds"
    );
}

// Hinted handoff: a hinted write is never lost while its holder keeps its memory.

#[test]
fn the_checker_catches_a_hint_dropped_before_its_owner_acknowledged_it() {
    let seed = caught_within(PlantedBug::HintDroppedBeforeAck, 100);
    assert!(
        seed.is_some(),
        "hints dropped when sent went unnoticed for 100 seeds"
    );
}

#[test]
fn the_checker_catches_an_owner_that_acknowledges_a_hint_without_storing_it() {
    let seed = caught_within(PlantedBug::HintAckWithoutStoring, 100);
    assert!(
        seed.is_some(),
        "hints acknowledged without being stored went unnoticed for 100 seeds"
    );
}

#[test]
fn fixed_seeds_run_sloppy_writes_through_hint_holders() {
    let (mut hinted, mut delivered) = (0, 0);
    for seed in 1..=40 {
        let result = run(&Scenario::generate(seed, OPS), None);
        hinted += result.hinted_writes;
        delivered += result.hints_delivered;
    }
    assert!(hinted > 50, "only {hinted} writes used hint holders");
    assert!(delivered > 20, "only {delivered} hints delivered");
}

#[test]
fn shrinking_keeps_the_failure_and_makes_the_run_smaller() {
    let bug = PlantedBug::LastWriteWins;
    let seed = caught_within(bug, 30).expect("caught (see above)");
    let original = Scenario::generate(seed, OPS);
    let (small, result) = crate::shrink::shrink(&original, Some(bug));
    assert!(!result.check.violations.is_empty());
    assert!(small.ops <= original.ops && small.faults.len() <= original.faults.len());
    assert!(
        small.ops < original.ops || small.faults.len() < original.faults.len(),
        "nothing was removed"
    );
}

/// Values whose last stored copy went (evicted at a full peer, or a store refused by one)
/// while only coordinators' in-flight reads still held them, and whose reads then ended
/// without any replica taking them: each loss is recorded when the last read ends, and the
/// writes are excused by it. Before, a loss part of which was covered only by a read was
/// recorded without that part, and the part was never recorded when the read ended: false
/// lost-writes. Seeds 30 and 763 each record such a loss (`pending_losses_recorded`) that
/// excuses a write, through an eviction and through a lost message: the first of each in the
/// simulator's ChaCha8 streams (found by searching from seed 1).
#[test]
fn values_lost_while_only_reads_held_them_are_excused() {
    use ringcache::history::check::{Excuse, LossCause};
    for (seed, cause) in [(30, LossCause::Eviction), (763, LossCause::Message)] {
        let result = run(&Scenario::generate(seed, OPS), None);
        assert!(
            result.check.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: cargo run -p simulations -- run --seed {seed} --ops {OPS}",
            result.check.violations
        );
        let through_reads = result
            .pending_losses_recorded
            .get(&cause)
            .copied()
            .unwrap_or(0);
        assert!(
            through_reads > 0,
            "seed {seed}: no loss ({cause:?}) held only by reads for a while"
        );
        let excused = result
            .check
            .writes_excused
            .get(&Excuse::Lost(cause))
            .copied()
            .unwrap_or(0);
        assert!(
            excused > 0,
            "seed {seed}: no write excused as lost ({cause:?})"
        );
    }
}

// Counters: no increment is lost or counted twice.

#[test]
fn the_checker_catches_a_read_add_write_increment() {
    // The sums themselves must fail, not only the phantom values the plain writes leave.
    let seed = caught_as(
        |seed| Scenario::generate(seed, OPS),
        PlantedBug::IncrementReadAddWrite,
        ViolationKind::CounterSum,
        100,
    );
    assert!(
        seed.is_some(),
        "read-add-write increments losing counts went unnoticed for 100 seeds"
    );
}

#[test]
fn fixed_seeds_check_counter_sums() {
    let checked: usize = (1..=10)
        .map(|seed| {
            run(&Scenario::generate(seed, OPS), None)
                .check
                .increments_checked
        })
        .sum();
    assert!(checked > 0, "no seed of ten incremented a counter");
}

// Conditional writes: linearizable per key.

#[test]
fn the_checker_catches_a_proposer_that_goes_on_without_a_majority() {
    let seed = caught_as(
        |seed| Scenario::generate(seed, OPS),
        PlantedBug::PaxosWithoutMajority,
        ViolationKind::NotLinearizable,
        // The first seed that shows it is 101.
        200,
    );
    assert!(
        seed.is_some(),
        "conditional writes decided on one promise went unnoticed for 200 seeds"
    );
}

#[test]
fn fixed_seeds_judge_conditional_writes() {
    let judged: usize = (1..=20)
        .map(|seed| {
            run(&Scenario::generate(seed, OPS), None)
                .check
                .conditional_ops_checked
        })
        .sum();
    assert!(judged > 0, "no seed of twenty judged a conditional write");
}

/// Seed `seed`'s scenario narrowed for one mechanism: `nodes` peers, `clients` clients at
/// `consistency`, every operation on `hot` keys, no memory limit. The caller sets the mix and
/// the faults.
fn focused(
    seed: u64,
    nodes: usize,
    clients: usize,
    consistency: crate::scenario::Consistency,
    hot: usize,
) -> Scenario {
    let mut scenario = Scenario::generate(seed, OPS);
    scenario.nodes = nodes;
    scenario.clients = clients;
    scenario.consistency = consistency;
    scenario.keys = crate::scenario::KeySpace {
        hot,
        cold: 0,
        hot_per_10k: 10_000,
    };
    scenario.memory = None;
    scenario
}

/// `count` crashes of C, one every `every` ms from about 300 ms on, each down for
/// `down.0` ms plus a seed-dependent part below `down.1`.
fn crashes_of_c(
    seed: u64,
    count: u64,
    every: u64,
    down: (u64, u64),
) -> Vec<crate::scenario::TimedFault> {
    use crate::scenario::{Fault, TimedFault};
    (0..count)
        .map(|i| TimedFault {
            at: 300 + i * every + seed % 200,
            fault: Fault::Crash {
                node: "C".into(),
                down_for: down.0 + (seed * 37 + i * 91) % down.1,
            },
        })
        .collect()
}

/// Three peers, every operation a conditional write on a few keys, and one peer (a minority
/// of every key's replicas) crashing and restarting again and again while rounds are in
/// flight: the shape in which an acceptor that forgot its promises can let two values be
/// chosen.
fn one_amnesic_acceptor(seed: u64) -> Scenario {
    use crate::scenario::{Consistency, Fault, PartitionShape, TimedFault};
    let mut scenario = focused(seed, 3, 8, Consistency::Quorum, 2);
    scenario.mix.conditional_per_10k = 10_000;
    scenario.net.tail_mean_ms = 20;
    scenario.faults = crashes_of_c(seed, 16, 300, (50, 250));
    // Nothing B sends reaches A, so A misses B's commits: at times only B and C hold the
    // last chosen value, and A with an amnesic C must not make a majority.
    scenario.faults.push(TimedFault {
        at: 100,
        fault: Fault::Partition {
            shape: PartitionShape::OneWay,
            cut: vec![("B".to_string(), "A".to_string())],
            duration: 6_000,
            flap_ms: None,
        },
    });
    scenario.faults.sort_by_key(|f| f.at);
    scenario
}

#[test]
fn the_checker_catches_an_acceptor_that_forgets_what_it_promised() {
    // Caught in 11 of seeds 1-30 when this test was written.
    let seed = caught_as(
        one_amnesic_acceptor,
        PlantedBug::PaxosAmnesia,
        ViolationKind::NotLinearizable,
        30,
    );
    assert!(
        seed.is_some(),
        "a restarted acceptor acting on promises it forgot went unnoticed for 30 seeds"
    );
}

/// Three peers, writes to all replicas and reads from one, on a few keys, and C crashing and
/// restarting empty again and again, its first views after each start showing the others
/// down (it has heard from none of them yet), as gossip's do.
fn restarts_under_write_all(seed: u64) -> Scenario {
    use crate::scenario::Consistency;
    let mut scenario = focused(seed, 3, 6, Consistency::WriteAll, 4);
    scenario.mix.conditional_per_10k = 0;
    scenario.mix.increment_per_10k = 0;
    scenario.mix.sloppy_per_10k = 0;
    scenario.faults = crashes_of_c(seed, 8, 600, (100, 300));
    scenario
}

#[test]
fn peers_restarted_empty_under_write_all_keep_every_promise() {
    for seed in 1..=20 {
        let result = run(&restarts_under_write_all(seed), None);
        assert!(
            result.check.violations.is_empty(),
            "seed {seed}: {:?}",
            result.check.violations
        );
    }
}

#[test]
fn a_minority_that_keeps_crashing_is_judged_and_keeps_conditional_writes_linearizable() {
    let judged = judged_without_violations(one_amnesic_acceptor, 20);
    assert!(judged > 500, "only {judged} conditional writes judged");
}

/// Four peers, every operation a conditional write on a few keys, and peers joining and
/// leaving while rounds are in flight: proposers briefly disagree on a key's replicas.
fn replicas_on_the_move(seed: u64) -> Scenario {
    use crate::scenario::{Consistency, Fault, TimedFault};
    let mut scenario = focused(seed, 4, 8, Consistency::Quorum, 3);
    scenario.mix.conditional_per_10k = 10_000;
    scenario.net.tail_mean_ms = 60;
    scenario.net.spike_per_10k = 300;
    scenario.net.spike_ms = 400;
    let moves = [
        Fault::Join { node: "E".into() },
        Fault::Leave { node: "B".into() },
        Fault::Join { node: "F".into() },
        Fault::Leave { node: "C".into() },
    ];
    scenario.faults = moves
        .into_iter()
        .enumerate()
        .map(|(i, fault)| TimedFault {
            at: 500 + i as u64 * 1_100 + seed % 300,
            fault,
        })
        .collect();
    scenario
}

#[test]
fn joins_and_leaves_are_judged_and_keep_conditional_writes_linearizable() {
    let judged = judged_without_violations(replicas_on_the_move, 20);
    assert!(judged > 500, "only {judged} conditional writes judged");
}

/// Four peers, sloppy writes with short TTLs and deletes on a few keys, C crashing early and
/// nothing C sends reaching D for 1.5 to 5 s after it: D stands in for C during the crash and
/// holds its hints until it sees C again, while the others, who do see C, delete and expire
/// keys and collect their tombstones. The shape in which a hint delivered late brings back a
/// value a collected delete covered.
fn hints_held_through_a_collection(seed: u64) -> Scenario {
    // Reads ask every replica at once, as when the shape was tuned: in it the bug below
    // shows in about one seed of 150 either way.
    const SPARES: u64 = 0;
    use crate::scenario::{Consistency, Fault, PartitionShape, TimedFault};
    let mut scenario = focused(seed, 4, 6, Consistency::One, 12);
    scenario.replicas = 3;
    scenario.shards = 1;
    scenario.mix.sloppy_per_10k = 10_000;
    scenario.mix.delete_per_10k = 2_500;
    scenario.mix.ttl_per_10k = 3_000;
    scenario.mix.conditional_per_10k = 0;
    scenario.mix.increment_per_10k = 0;
    scenario.net.loss_per_10k = 0;
    scenario.net.spike_per_10k = 0;
    scenario.read_spare_after_ms = Some(SPARES);
    scenario.faults = vec![
        TimedFault {
            at: 150,
            fault: Fault::Partition {
                shape: PartitionShape::OneWay,
                cut: vec![("C".to_string(), "D".to_string())],
                duration: 1_500 + (seed * 211) % 3_500,
                flap_ms: None,
            },
        },
        TimedFault {
            at: 200,
            fault: Fault::Crash {
                node: "C".into(),
                down_for: 600 + (seed * 97) % 600,
            },
        },
    ];
    scenario
}

#[test]
fn the_checker_catches_a_hint_delivered_after_its_lifetime() {
    let seed = caught_as(
        hints_held_through_a_collection,
        PlantedBug::HintOutlivesGrace,
        ViolationKind::Resurrection,
        // About one seed in 150 shows it (see the scenario); the first is seed 64.
        150,
    );
    assert!(seed.is_some(), "a hint outliving the grace went unnoticed");
}

#[test]
fn hints_held_through_a_collection_keep_every_promise() {
    let (mut expired, mut collected) = (0, 0);
    for seed in 1..=30 {
        let result = run(&hints_held_through_a_collection(seed), None);
        assert!(
            result.check.violations.is_empty(),
            "seed {seed}: {:?}",
            result.check.violations
        );
        expired += result.hints_expired;
        collected += result.tombstones_collected;
    }
    // The shape does what it is for: hints outlive their lifetime, tombstones are collected.
    assert!(
        expired > 0 && collected > 0,
        "{expired} hints expired, {collected} collected"
    );
}
