//! The simulator's command line, as CI and a developer replaying a seed use it: a clean
//! sweep exits 0, a sweep with a planted bug exits non-zero and names the failing seed, and
//! `run --seed` replays one seed with the same report every time.
//!
//! Being an integration test also makes `cargo test --workspace` build
//! `target/debug/simulations` with the same features as the rest of the test build, so
//! `.ci/run` runs that binary instead of `cargo run -p simulations`, which would resolve
//! features afresh and compile a second copy of the dependency tree.

use std::process::{Command, Output};

fn simulations(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simulations"))
        .args(args)
        .output()
        .expect("run the simulations binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_clean_sweep_exits_zero_and_counts_its_seeds() {
    let output = simulations(&["sweep", "--seeds", "3", "--first", "7"]);
    let text = stdout(&output);
    assert!(output.status.success(), "sweep failed:\n{text}");
    assert!(text.contains("seeds: 3,"), "summary missing:\n{text}");
    assert!(text.contains("violations: 0"), "{text}");
}

#[test]
fn a_sweep_with_a_planted_bug_exits_non_zero_and_names_the_seed() {
    let output = simulations(&["sweep", "--seeds", "20", "--plant", "ack-after-w-minus-one"]);
    let text = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "a planted bug went unnoticed:\n{text}"
    );
    assert!(text.contains("violations in seeds ["), "{text}");
}

#[test]
fn replaying_a_seed_prints_the_same_report() {
    let report = |output: Output| {
        assert!(output.status.success());
        // Everything but the wall-clock line is a function of the seed.
        stdout(&output)
            .lines()
            .filter(|line| !line.starts_with("wall time"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = report(simulations(&["run", "--seed", "42", "--no-shrink"]));
    let second = report(simulations(&["run", "--seed", "42", "--no-shrink"]));
    assert!(first.contains("violations: 0"), "{first}");
    assert_eq!(first, second);
}
