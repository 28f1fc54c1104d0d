//! The protocol core stays deterministic: no clock reads, ambient randomness or spawning in
//! `src/core` (or the history checker in `src/history`), and no opting out of the clippy lints that forbid them (see `clippy.toml`).

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "rand::random",
    "rand::rng",
    "tokio::",
    "std::thread::spawn",
    "RandomState",
    "allow(clippy::disallowed",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_core_reads_no_clock_draws_no_randomness_and_spawns_nothing() {
    let mut files = Vec::new();
    // The history checker judges simulated and real runs alike, so it is held to the same rule.
    for dir in ["src/core", "src/history"] {
        rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), &mut files);
    }
    assert!(
        files.len() >= 10,
        "expected the core's modules, found {files:?}"
    );
    let mut hits = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    hits.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "the core must stay deterministic:\n{}",
        hits.join("\n")
    );
}
