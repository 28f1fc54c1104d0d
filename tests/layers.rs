//! Layers run one way: `main`/`launcher`/`bench` → `client` → `server` → `api` → `shell` → `core`, with
//! `config` gathering the shell's and the core's settings. A module that imports one above it
//! (the shell building the HTTP router, the API calling the Rust client) ties the layers into a
//! knot that no part can be understood, tested or replaced without the others.

use std::path::{Path, PathBuf};

/// What each layer must not name, by the directory or file that holds it.
const RULES: &[(&str, &[&str])] = &[
    (
        "src/core",
        &[
            "crate::shell",
            "crate::api",
            "crate::client",
            "crate::server",
            "crate::config",
            "crate::launcher",
            "crate::history",
        ],
    ),
    (
        "src/shell",
        &[
            "crate::api",
            "crate::client",
            "crate::server",
            "crate::config",
            "crate::launcher",
        ],
    ),
    (
        "src/api",
        &["crate::client", "crate::server", "crate::launcher"],
    ),
    (
        "src/config",
        &[
            "crate::api",
            "crate::client",
            "crate::server",
            "crate::launcher",
        ],
    ),
    (
        "src/config.rs",
        &[
            "crate::api",
            "crate::client",
            "crate::server",
            "crate::launcher",
        ],
    ),
    ("src/server.rs", &["crate::client", "crate::launcher"]),
    (
        "src/client",
        &["crate::server", "crate::launcher", "crate::shell"],
    ),
    // The load generator sees a cluster only as its clients do.
    (
        "src/bench",
        &[
            "crate::server",
            "crate::launcher",
            "crate::shell",
            "crate::core",
        ],
    ),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(path).unwrap() {
        rust_files(&entry.unwrap().path(), out);
    }
}

/// Every `crate::…` path a source text names outside comments, as `crate::module`.
fn named_layers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + "crate::".len()..];
            let module: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(format!("crate::{module}"));
            rest = tail;
        }
    }
    out
}

fn violations(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (place, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&root.join(place), &mut files);
        assert!(!files.is_empty(), "no sources under {place}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for named in named_layers(&text) {
                if forbidden.contains(&named.as_str()) {
                    found.push(format!("{} names {named}", file.display()));
                }
            }
        }
    }
    found
}

#[test]
fn layers_import_only_downwards() {
    let found = violations(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(
        found.is_empty(),
        "imports up the layers:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scanner_sees_paths_in_use_lines_and_expressions_but_not_comments() {
    let text = "use crate::api::http;\nlet c = crate::client::Client::new(u); // crate::server\n";
    assert_eq!(named_layers(text), vec!["crate::api", "crate::client"]);
}
