//! The peer binary never carries the simulator's planted bugs, however the workspace is built.
//!
//! Integration tests are compiled with the same features as the `ringcache` binary of the same
//! cargo invocation, so `cargo test --workspace` (which also builds `simulations`) fails here if
//! feature unification ever turns `planted-bugs` on for the peer again. `.ci/run` also builds
//! `cargo build --release --workspace` and looks for a planted bug's code in the binary.

#[test]
// A test rather than a `const` assertion, so a failure names itself in the test report.
#[allow(clippy::assertions_on_constants)]
fn the_peer_package_is_built_without_planted_bugs() {
    assert!(
        !cfg!(feature = "planted-bugs"),
        "the `ringcache` package was compiled with `planted-bugs`: something enables the \
         feature on it (the simulator must depend on `ringcache-planted`)"
    );
}

/// The planted copy of the library (`simulations/planted`) compiles the same sources, so it
/// needs the same dependencies: their `[dependencies]` tables must be the same text.
#[test]
fn the_planted_copy_has_the_same_dependencies() {
    fn dependencies(path: &str) -> Vec<String> {
        let text = std::fs::read_to_string(path).expect("manifest readable");
        text.split("\n[dependencies]\n")
            .nth(1)
            .expect("a [dependencies] table")
            .lines()
            .take_while(|l| !l.starts_with('['))
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect()
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    assert_eq!(
        dependencies(&format!("{dir}/Cargo.toml")),
        dependencies(&format!("{dir}/simulations/planted/Cargo.toml")),
        "simulations/planted/Cargo.toml must list the root package's [dependencies]"
    );
}
