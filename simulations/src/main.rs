//! Deterministic simulation of ringcache peers: the real protocol core, a simulated network and
//! a simulated clock, all decided by one seed.
//!
//! This first version runs fault-free: N peers, random message delays, and clients that each
//! own some keys and write them with the context of their previous write, then read them back
//! at a random peer. With W + R > N every read must return exactly the client's latest value.
//! Faults, concurrent writers, shrinking and the full history checker build on this loop.
//!
//! `cargo run -p simulations -- run --seed S` replays one seed; `sweep --seeds K` runs many.

mod sim;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Deterministic simulation of ringcache's protocol core")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed.
    Run {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 400)]
        ops: usize,
    },
    /// Run `seeds` consecutive seeds starting at `first`.
    Sweep {
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        first: u64,
        #[arg(long, default_value_t = 400)]
        ops: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (first, count, ops) = match cli.command {
        Command::Run { seed, ops } => (seed, 1, ops),
        Command::Sweep { seeds, first, ops } => (first, seeds, ops),
    };
    let mut total_ops = 0;
    let mut failures = Vec::new();
    for seed in first..first + count {
        let report = sim::run(seed, ops);
        total_ops += report.completed;
        if !report.violations.is_empty() {
            eprintln!("seed {seed}: {} violations", report.violations.len());
            for v in report.violations.iter().take(5) {
                eprintln!("  {v}");
            }
            eprintln!("reproduce with: cargo run -p simulations -- run --seed {seed} --ops {ops}");
            failures.push(seed);
        }
    }
    println!(
        "seeds: {count}, ops: {total_ops}, faults: 0, violations: {}",
        failures.len()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("violations in seeds {failures:?}")
    }
}
