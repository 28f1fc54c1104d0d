//! Deterministic simulation of ringcache: the real protocol core of every peer on a simulated
//! network and clock, with faults, a client workload, a recorded history and a checker — all
//! decided by one seed.
//!
//! - `run --seed S` replays one seed and prints its report; on a violation it shrinks the run
//!   and prints the small history that still fails (`--no-shrink`: this run's own).
//! - `sweep --seeds K [--first S] [--time-limit-secs T]` runs many seeds.
//! - `--plant BUG` switches on a known bug in every peer (the checker's self-test).
//!
//! Both exit non-zero on any violation and end with
//! `seeds: K, ops: …, faults: …, violations: N`.

mod report;
mod rng;
mod scenario;
mod shrink;
mod world;

use clap::{Parser, Subcommand};
use report::Summary;
use ringcache::core::planted::PlantedBug;
use ringcache::history::OpId;
use scenario::Scenario;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Deterministic simulation of ringcache peers, with faults and a history checker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed and print its report.
    Run {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 600)]
        ops: usize,
        /// Plant a known bug (see `PlantedBug::name`), e.g. last-write-wins or
        /// hint-dropped-before-ack.
        #[arg(long, value_parser = parse_bug)]
        plant: Option<PlantedBug>,
        /// Print the scenario (cluster, network, clocks, faults) before running.
        #[arg(long)]
        verbose: bool,
        /// On a violation, print this run's violations and histories instead of shrinking.
        #[arg(long)]
        no_shrink: bool,
        /// After healing, read every key so read repair converges replicas, instead of waiting
        /// for anti-entropy alone.
        #[arg(long)]
        read_sweep: bool,
    },
    /// Run `seeds` consecutive seeds starting at `first`.
    Sweep {
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        first: u64,
        #[arg(long, default_value_t = 600)]
        ops: usize,
        /// Stop starting new seeds after this many seconds (the summary says how many ran).
        #[arg(long)]
        time_limit_secs: Option<u64>,
        #[arg(long, value_parser = parse_bug)]
        plant: Option<PlantedBug>,
    },
}

fn parse_bug(s: &str) -> Result<PlantedBug, String> {
    PlantedBug::ALL
        .into_iter()
        .find(|b| b.name() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug {s:?}; one of {}", names.join(", "))
        })
}

fn replay_command(seed: u64, ops: usize, plant: Option<PlantedBug>) -> String {
    let plant = plant
        .map(|b| format!(" --plant {}", b.name()))
        .unwrap_or_default();
    format!("cargo run --release -p simulations -- run --seed {seed} --ops {ops}{plant}")
}

// The wall clock here only reports the sweep's speed and bounds its length; simulated runs
// never see it.
#[allow(clippy::disallowed_methods)]
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let started = Instant::now();
    let mut summary = Summary::default();
    match cli.command {
        Command::Run {
            seed,
            ops,
            plant,
            verbose,
            no_shrink,
            read_sweep,
        } => {
            let mut scenario = Scenario::generate(seed, ops);
            scenario.read_sweep = read_sweep;
            if verbose {
                print_scenario(&scenario);
            }
            let result = world::run(&scenario, plant);
            summary.add(seed, &result);
            print!("{}", summary.render());
            println!("trace hash: {:016x}", result.trace_hash);
            if let Some(d) = &result.divergence {
                println!("replicas that differ: {d}");
            }
            if !result.check.violations.is_empty() {
                if no_shrink {
                    print_violations(&result);
                } else {
                    explain_failure(&scenario, plant);
                }
            }
        }
        Command::Sweep {
            seeds,
            first,
            ops,
            time_limit_secs,
            plant,
        } => {
            let limit = time_limit_secs.map(Duration::from_secs);
            for seed in first..first.saturating_add(seeds) {
                if limit.is_some_and(|l| started.elapsed() >= l) {
                    break;
                }
                let scenario = Scenario::generate(seed, ops);
                let result = world::run(&scenario, plant);
                summary.add(seed, &result);
                if !result.check.violations.is_empty() {
                    eprintln!(
                        "seed {seed}: {} violations, first: {}",
                        result.check.violations.len(),
                        result.check.violations[0]
                    );
                    eprintln!("  replay: {}", replay_command(seed, ops, plant));
                }
            }
            print!("{}", summary.render());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wall time: {secs:.1} s ({:.0} simulated ops per second)",
        summary.ops as f64 / secs.max(1e-9)
    );
    println!("{}", summary.one_line());
    if !summary.failed_seeds.is_empty() {
        eprintln!("violations in seeds {:?}", summary.failed_seeds);
        std::process::exit(1);
    }
    Ok(())
}

fn print_scenario(s: &Scenario) {
    println!(
        "seed {}: {} peers of {} shard(s), N={}, {} clients, {} ops over {} ms, {:?}, keys {:?}",
        s.seed,
        s.nodes,
        s.shards,
        s.replicas,
        s.clients,
        s.ops,
        s.workload_ms,
        s.consistency,
        s.keys
    );
    println!("network: {:?}", s.net);
    println!(
        "clocks (offset ms, drift ppm): {:?}; detector: heartbeat {} ms, suspect after {} ms",
        &s.clocks[..s.nodes],
        s.heartbeat_ms,
        s.suspect_after_ms
    );
    if let Some((bytes, policy)) = s.memory {
        println!("memory limit: {bytes} bytes per peer, eviction {policy}");
    }
    for f in &s.faults {
        println!("fault: {f}");
    }
}

/// Shrinks a failing scenario and prints the small history around its violations.
fn explain_failure(scenario: &Scenario, plant: Option<PlantedBug>) {
    println!("\nshrinking...");
    let (small, result) = shrink::shrink(scenario, plant);
    println!(
        "smallest failing run: seed {}, {} ops, {} of {} faults",
        small.seed,
        small.ops,
        small.faults.len(),
        scenario.faults.len()
    );
    print_scenario(&small);
    print_violations(&result);
    println!(
        "replay the original: {}",
        replay_command(scenario.seed, scenario.ops, plant)
    );
}

/// Prints a run's first violations and the history of the keys they involve.
fn print_violations(result: &world::RunResult) {
    let mut keys = BTreeSet::new();
    for v in result.check.violations.iter().take(3) {
        println!("violation: {v}");
        keys.insert(v.key.clone());
        for id in &v.ops {
            println!("  involves: {}", result.history.get(*id));
        }
    }
    for key in keys {
        println!("history of key {} (sim ms):", String::from_utf8_lossy(&key));
        for (i, op) in result.history.ops().iter().enumerate() {
            if op.key == key {
                println!("  #{:<4} {}", OpId(i).0, op);
            }
        }
    }
}

#[cfg(test)]
mod tests;
