//! Shrinking: cut a failing scenario down to a small one that still fails.
//!
//! The seed stays the same, so the workload and network draw the same random streams; the
//! shrinker drops faults one at a time (keeping each removal that still fails), then halves the
//! operation budget while the run still fails. Every candidate is a full, deterministic run.

use crate::scenario::Scenario;
use crate::world::{run, RunResult};
use ringcache::core::planted::PlantedBug;

/// Upper bound on candidate runs, so shrinking a large scenario stays quick.
const MAX_ATTEMPTS: usize = 200;

pub fn shrink(original: &Scenario, plant: Option<PlantedBug>) -> (Scenario, RunResult) {
    let fails = |s: &Scenario| {
        let r = run(s, plant);
        (!r.check.violations.is_empty()).then_some(r)
    };
    let mut best = original.clone();
    let mut best_run = run(&best, plant);
    let mut attempts = 0;
    let mut i = best.faults.len();
    while i > 0 && attempts < MAX_ATTEMPTS {
        i -= 1;
        let mut candidate = best.clone();
        candidate.faults.remove(i);
        attempts += 1;
        if let Some(r) = fails(&candidate) {
            best = candidate;
            best_run = r;
        }
    }
    while best.ops > 1 && attempts < MAX_ATTEMPTS {
        let mut candidate = best.clone();
        candidate.ops = best.ops / 2;
        attempts += 1;
        match fails(&candidate) {
            Some(r) => {
                best = candidate;
                best_run = r;
            }
            None => break,
        }
    }
    (best, best_run)
}
