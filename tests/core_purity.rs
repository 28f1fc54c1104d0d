//! The protocol core stays deterministic: no clock reads, ambient randomness, spawning or
//! randomly seeded hash maps in `src/core` (or the history checker in `src/history`), and no
//! opting out of the clippy lints that forbid them (see `clippy.toml`).
//!
//! The clippy lints are the first line; this scan is the second, for code clippy is told to
//! ignore. It reads source lines, so it also resolves the two ways a line can hide a
//! forbidden call from a plain text search: a renamed import (`use std::time::Instant as
//! Clock;` then `Clock::now()`) or a type alias, and a turbofish (`HashMap::<K, V>::new()`).
//! Hash maps with a fixed hasher stay allowed: only the constructors that exist for the
//! randomly seeded `RandomState` alone (`new`, `with_capacity`, `from`) are forbidden.

use std::collections::BTreeSet;
use std::path::Path;

/// Text that may not appear in core code at all.
const FORBIDDEN: &[&str] = &[
    "thread_rng",
    "rand::random",
    "rand::rng",
    "tokio::",
    "std::thread::spawn",
    "RandomState",
    "allow(clippy::disallowed",
];

/// Calls `Type::function` that may not appear, under the type's own name or any alias of it.
const FORBIDDEN_CALLS: &[(&str, &[&str])] = &[
    ("Instant", &["now"]),
    ("SystemTime", &["now"]),
    ("HashMap", &["new", "with_capacity", "from"]),
    ("HashSet", &["new", "with_capacity", "from"]),
];

/// Functions that may not be imported under another name (`use rand::random as r;`).
const FORBIDDEN_FUNCTIONS: &[&str] = &["random", "rng", "thread_rng", "spawn"];

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The line without its comment and without turbofish generics (`A::<B>::c` becomes `A::c`).
fn normalise(line: &str) -> String {
    let code = line.split("//").next().unwrap_or("");
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("::<") {
        out.push_str(&rest[..at]);
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest[at + 2..].char_indices() {
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + 2 + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Whether `code` contains `word` as a whole path segment sequence (not inside a longer name).
fn contains_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

/// The identifier ending just before byte `end` of `code`, and the path segment before it.
fn path_before(code: &str, end: usize) -> &str {
    let start = code[..end]
        .rfind(|c: char| !(is_ident_char(c) || c == ':'))
        .map_or(0, |i| i + 1);
    &code[start..end]
}

/// Names a file gives the sensitive types and functions: `X as Alias` in a `use` (grouped
/// imports included, since the pattern is matched wherever it appears) and
/// `type Alias = ...X...;`. Returns `(alias, original)` pairs.
fn aliases(text: &str) -> Vec<(String, String)> {
    let sensitive: BTreeSet<&str> = FORBIDDEN_CALLS
        .iter()
        .map(|(ty, _)| *ty)
        .chain(FORBIDDEN_FUNCTIONS.iter().copied())
        .collect();
    let mut found = Vec::new();
    for line in text.lines() {
        let code = normalise(line);
        for (at, _) in code.match_indices(" as ") {
            let original = path_before(&code, at).rsplit("::").next().unwrap_or("");
            let alias: String = code[at + 4..]
                .trim_start()
                .chars()
                .take_while(|c| is_ident_char(*c))
                .collect();
            if sensitive.contains(original) && !alias.is_empty() {
                found.push((alias, original.to_string()));
            }
        }
        let item = code.trim_start();
        let item = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|vis| item.strip_prefix(vis))
            .unwrap_or(item);
        if let Some(rest) = item.strip_prefix("type ") {
            if let Some((name, target)) = rest.split_once('=') {
                let alias: String = name.chars().take_while(|c| is_ident_char(*c)).collect();
                for ty in &sensitive {
                    if contains_word(target, ty) && !alias.is_empty() {
                        found.push((alias.clone(), ty.to_string()));
                    }
                }
            }
        }
    }
    found
}

/// Every forbidden use in one file's text, as `(line number, reason)`.
fn forbidden_uses(text: &str) -> Vec<(usize, String)> {
    let aliases = aliases(text);
    let mut calls: Vec<(String, String)> = Vec::new();
    for (ty, functions) in FORBIDDEN_CALLS {
        let names = std::iter::once(ty.to_string()).chain(
            aliases
                .iter()
                .filter(|(_, original)| original == ty)
                .map(|(alias, _)| alias.clone()),
        );
        for name in names {
            for f in *functions {
                calls.push((format!("{name}::{f}"), format!("{ty}::{f}")));
            }
        }
    }
    let mut hits = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = normalise(line);
        for word in FORBIDDEN {
            if code.contains(word) {
                hits.push((n + 1, word.to_string()));
            }
        }
        for (call, meaning) in &calls {
            if contains_word(&code, call) {
                hits.push((n + 1, format!("{call} ({meaning})")));
            }
        }
        for (alias, original) in &aliases {
            if FORBIDDEN_FUNCTIONS.contains(&original.as_str())
                && contains_word(&code, &format!("{original} as {alias}"))
            {
                hits.push((n + 1, format!("{original} imported as {alias}")));
            }
        }
    }
    hits
}

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
        for (n, why) in forbidden_uses(&text) {
            let line = text.lines().nth(n - 1).unwrap_or("").trim();
            hits.push(format!("{}:{n}: {why}: {line}", file.display()));
        }
    }
    assert!(
        hits.is_empty(),
        "the core must stay deterministic:\n{}",
        hits.join("\n")
    );
}

/// The scanner itself, on sample lines: what it must catch and what it must let through.
#[test]
fn the_scanner_catches_renamed_and_hidden_calls_but_not_fixed_hashers() {
    let caught = |text: &str| !forbidden_uses(text).is_empty();
    for bad in [
        "let t = std::time::Instant::now();",
        "let t = SystemTime::now();",
        "let m: HashMap<u8, u8> = HashMap::new();",
        "let s = HashSet::with_capacity(4);",
        "let m = std::collections::HashMap::<u8, u8>::new();",
        "let m = HashMap::from([(1, 2)]);",
        "use std::time::Instant as Clock;\nfn f() { let _ = Clock::now(); }",
        "use std::collections::HashMap as M;\nfn f() { let _: M<u8, u8> = M::new(); }",
        "use std::{\n    collections::HashSet as Set,\n};\nfn f() { Set::<u8>::new(); }",
        "type Clock = std::time::SystemTime;\nfn f() { Clock::now(); }",
        "pub(crate) type Set = HashSet<u8>;\nfn f() { Set::with_capacity(2); }",
        "type Map<K, V> = std::collections::HashMap<K, V>;\nfn f() { Map::<u8, u8>::new(); }",
        "use rand::random as r;",
        "use std::collections::hash_map::RandomState;",
        "let x = rand::random::<u64>();",
        "#[allow(clippy::disallowed_methods)]",
    ] {
        assert!(caught(bad), "missed: {bad}");
    }
    for good in [
        // What the core legitimately does: fixed hashers and hashbrown's keyless table.
        "evicted_this_epoch: HashSet<u64, BuildHasherDefault<DefaultHasher>>,",
        "evicted_this_epoch: HashSet::default(),",
        "ids: HashMap<Actor, u32, BuildHasherDefault<DefaultHasher>>,",
        "let mut table = HashTable::new();",
        "use std::collections::hash_map::DefaultHasher;",
        // Names that merely contain a forbidden one, casts, and comments.
        "let n = MyHashMap::new();",
        "let p = (position >> 3) as PartitionId;",
        "// Instant::now is passed in by the shell",
        "let later = now + Duration::from_millis(5);",
    ] {
        assert!(!caught(good), "flagged: {good}: {:?}", forbidden_uses(good));
    }
}
