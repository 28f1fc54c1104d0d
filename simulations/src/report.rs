//! What a run (or a sweep of runs) tells its user: operations by outcome, faults injected,
//! violations by kind, latency percentiles in simulated time, convergence time.

use crate::world::RunResult;
use ringcache::history::Outcome;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Totals over one or many runs.
#[derive(Default)]
pub struct Summary {
    pub seeds: u64,
    pub failed_seeds: Vec<u64>,
    pub ops: usize,
    pub outcomes: BTreeMap<&'static str, usize>,
    pub faults: BTreeMap<&'static str, usize>,
    pub violations: BTreeMap<&'static str, usize>,
    pub latencies: Vec<u64>,
    pub convergence_ms: Vec<u64>,
    pub writes_checked: usize,
    pub writes_excused: BTreeMap<&'static str, usize>,
    pub resurrections_excused: usize,
    pub ryw_strict_checked: usize,
    pub monotonic_checked: usize,
    pub counters_checked: usize,
    pub increments_checked: usize,
    pub conditional_keys_checked: usize,
    pub conditional_ops_checked: usize,
    pub conditional_keys_skipped: usize,
    pub ryw_weak_checked: usize,
    pub ryw_weak_misses: usize,
    pub false_siblings_after_pruning: usize,
    pub read_repairs: u64,
    pub sim_ms: u64,
    pub messages: u64,
    pub evicted: u64,
    pub expired: u64,
    pub tombstones_collected: u64,
    /// Losses only in-flight reads held for a while before they were recorded (all causes).
    pub losses_held_by_reads: u64,
    pub hinted_writes: usize,
    pub hints_delivered: u64,
    pub hints_dropped: u64,
    pub hints_refused: u64,
    pub hints_expired: u64,
}

impl Summary {
    pub fn add(&mut self, seed: u64, r: &RunResult) {
        self.seeds += 1;
        if !r.check.violations.is_empty() {
            self.failed_seeds.push(seed);
        }
        self.ops += r.history.len();
        for op in r.history.ops() {
            let name = match &op.outcome {
                Outcome::Read { .. } => "read ok",
                Outcome::Written { .. } => "write ok",
                Outcome::Failed { error, .. }
                    if error.contains("concurrent values, more than the limit") =>
                {
                    "refused by the sibling cap"
                }
                Outcome::Failed { .. } => "failed",
                Outcome::Unknown => "unknown",
            };
            *self.outcomes.entry(name).or_insert(0) += 1;
        }
        for (k, n) in &r.faults_injected {
            *self.faults.entry(k).or_insert(0) += n;
        }
        for v in &r.check.violations {
            *self.violations.entry(v.kind.name()).or_insert(0) += 1;
        }
        self.latencies.extend(&r.latencies);
        if let Some(t) = r.convergence.took_ms {
            self.convergence_ms.push(t);
        }
        self.writes_checked += r.check.writes_checked;
        for (excuse, n) in &r.check.writes_excused {
            *self.writes_excused.entry(excuse.name()).or_insert(0) += n;
        }
        self.resurrections_excused += r.check.resurrections_excused;
        self.ryw_strict_checked += r.check.ryw_strict_checked;
        self.monotonic_checked += r.check.monotonic_checked;
        self.counters_checked += r.check.counters_checked;
        self.increments_checked += r.check.increments_checked;
        self.conditional_keys_checked += r.check.conditional_keys_checked;
        self.conditional_ops_checked += r.check.conditional_ops_checked;
        self.conditional_keys_skipped += r.check.conditional_keys_skipped;
        self.ryw_weak_checked += r.check.ryw_weak_checked;
        self.ryw_weak_misses += r.check.ryw_weak_misses;
        self.false_siblings_after_pruning += r.check.false_siblings_after_pruning;
        self.read_repairs += r.read_repairs;
        self.sim_ms += r.sim_ms;
        self.evicted += r.evicted;
        self.expired += r.expired;
        self.tombstones_collected += r.tombstones_collected;
        self.losses_held_by_reads += r.pending_losses_recorded.values().sum::<u64>();
        self.hinted_writes += r.hinted_writes;
        self.hints_delivered += r.hints_delivered;
        self.hints_dropped += r.hints_dropped;
        self.hints_refused += r.hints_refused;
        self.hints_expired += r.hints_expired;
        self.messages += r.messages;
    }

    pub fn faults_total(&self) -> usize {
        self.faults.values().sum()
    }

    pub fn violations_total(&self) -> usize {
        self.violations.values().sum()
    }

    /// The multi-line report.
    pub fn render(&mut self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "operations: {} {:?}", self.ops, self.outcomes);
        let _ = writeln!(
            out,
            "faults injected: {} {:?}",
            self.faults_total(),
            self.faults
        );
        let _ = writeln!(
            out,
            "violations: {} {:?}",
            self.violations_total(),
            self.violations
        );
        let _ = writeln!(
            out,
            "acknowledged writes checked: {}; missing and excused: {} {:?}; resurrections excused (the replacing write lost): {}",
            self.writes_checked,
            self.writes_excused.values().sum::<usize>(),
            self.writes_excused,
            self.resurrections_excused
        );
        let _ = writeln!(
            out,
            "read-your-writes: {} checked strictly; {} unguaranteed pairs (R+W<=N without a session context, or a crash/ring change between) of which {} missed; monotonic reads: {} session read pairs checked",
            self.ryw_strict_checked, self.ryw_weak_checked, self.ryw_weak_misses, self.monotonic_checked
        );
        let _ = writeln!(
            out,
            "counters: {} final sums checked over {} increments",
            self.counters_checked, self.increments_checked
        );
        let _ = writeln!(
            out,
            "conditional writes: {} keys judged linearizable over {} operations ({} keys passed over: a copy lost, or most of their replicas crashed or evicted them, or one left without handing them off, before their last write)",
            self.conditional_keys_checked,
            self.conditional_ops_checked,
            self.conditional_keys_skipped
        );
        let _ = writeln!(
            out,
            "spurious siblings on keys whose clocks reached the pruning limit (counted, not failed): {}",
            self.false_siblings_after_pruning
        );
        let _ = writeln!(
            out,
            "latency (simulated ms, successful ops): {}",
            percentiles(&mut self.latencies)
        );
        let _ = writeln!(
            out,
            "convergence after healing (simulated ms): {}; read repairs: {}",
            percentiles(&mut self.convergence_ms),
            self.read_repairs
        );
        let _ = writeln!(
            out,
            "cache: {} keys evicted, {} values expired by active expiry, {} tombstone-only keys collected; {} losses held only by in-flight reads before they were recorded",
            self.evicted, self.expired, self.tombstones_collected, self.losses_held_by_reads
        );
        let _ = writeln!(
            out,
            "sloppy quorum: {} writes hinted; hints delivered {}, dropped at the bound {}, refused by full owners {}, expired {} (by peers running at the end)",
            self.hinted_writes, self.hints_delivered, self.hints_dropped, self.hints_refused, self.hints_expired
        );
        let _ = writeln!(
            out,
            "simulated time: {:.1} s, peer messages: {}",
            self.sim_ms as f64 / 1000.0,
            self.messages
        );
        out
    }

    pub fn one_line(&self) -> String {
        format!(
            "seeds: {}, ops: {}, faults: {}, violations: {}",
            self.seeds,
            self.ops,
            self.faults_total(),
            self.violations_total()
        )
    }
}

fn percentiles(values: &mut [u64]) -> String {
    if values.is_empty() {
        return "n/a".into();
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {} p90 {} p99 {} max {}",
        at(0.5),
        at(0.9),
        at(0.99),
        values[values.len() - 1]
    )
}
