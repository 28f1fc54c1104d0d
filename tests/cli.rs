//! The CLI's own surface: `--version` names the peer protocol, and completion scripts come out
//! for every shell clap knows.

use std::process::Command;

fn ringcache(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn version_names_the_release_and_the_peer_protocol() {
    let version = ringcache(&["--version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let protocol = ringcache::core::message::PROTOCOL_VERSION;
    assert!(
        version.contains(&format!("peer protocol {protocol}")),
        "{version} should name protocol {protocol}"
    );
}

#[test]
fn completion_scripts_cover_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ringcache(&["completions", shell]);
        for word in ["serve", "up", "get", "put", "cluster", "leave"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
}

#[test]
fn a_missing_cluster_is_one_readable_line_with_a_hint_and_exit_code_3() {
    // Port 1 on loopback: nothing listens there.
    let output = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["get", "hello", "--url", "http://127.0.0.1:1"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("ringcache: "), "{stderr}");
    assert!(stderr.contains("ringcache up"), "{stderr}");
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("Stack"),
        "{stderr}"
    );
    assert!(stderr.lines().count() <= 2, "{stderr}");
}
