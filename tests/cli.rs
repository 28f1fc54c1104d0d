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

/// `ringcache up` records its cluster, so the CLI needs no `--url` right after it; the record
/// goes when `up` stops.
#[test]
fn the_cli_finds_the_cluster_up_is_running_without_a_url() {
    use std::io::{BufRead, BufReader};
    let runtime = std::env::temp_dir().join(format!("ringcache-cli-{}", std::process::id()));
    std::fs::create_dir_all(&runtime).unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["up", "--peers", "1", "--max-memory", "64MiB"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("RINGCACHE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("up starts");
    // Kept open until `up` has stopped, so its last lines have somewhere to go.
    let mut stdout = BufReader::new(up.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    for line in stdout.by_ref() {
        let line = line.unwrap();
        let done = line.contains("Ctrl-C stops");
        banner.push(line);
        if done {
            break;
        }
    }
    let record = runtime.join("ringcache/cluster.json");
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ringcache"))
            .args(args)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env_remove("RINGCACHE_URL")
            .output()
            .expect("the CLI runs")
    };
    let put = cli(&["put", "hello", "world", "--w", "all"]);
    let get = cli(&["get", "hello"]);
    // SIGINT stops `up` and its peers at once.
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let _ = up.wait();
    drop(stdout);
    let record_left = record.exists();
    let _ = std::fs::remove_dir_all(&runtime);
    assert!(put.status.success(), "{banner:?} {put:?}");
    assert_eq!(String::from_utf8_lossy(&get.stdout), "world\n", "{get:?}");
    assert!(!record_left, "the record is removed when up stops");
}

/// `ringcache kill` kills only what the record says is that peer's `ringcache serve`: a stale
/// record whose pid now belongs to another process is refused, and an unknown peer is named.
#[test]
fn kill_refuses_a_process_that_is_not_the_recorded_peer() {
    let runtime = std::env::temp_dir().join(format!("ringcache-kill-{}", std::process::id()));
    let mut bystander = Command::new("sleep").arg("30").spawn().expect("sleep runs");
    let record = ringcache::launcher::LocalClusterRecord {
        urls: vec!["http://127.0.0.1:1".into()],
        client_token: None,
        tls_ca: None,
        peers: vec![ringcache::launcher::RecordedPeer {
            id: "C".into(),
            url: "http://127.0.0.1:1".into(),
            pid: bystander.id(),
        }],
    };
    record
        .write(&runtime.join("ringcache/cluster.json"))
        .unwrap();
    let kill = |peer: &str| {
        Command::new(env!("CARGO_BIN_EXE_ringcache"))
            .args(["kill", peer])
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .expect("the CLI runs")
    };
    let stale = kill("C");
    let unknown = kill("Z");
    let bystander_alive = bystander.try_wait().unwrap().is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    let _ = std::fs::remove_dir_all(&runtime);
    assert!(!stale.status.success());
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("stale"),
        "{stale:?}"
    );
    assert!(bystander_alive, "kill must not touch another process");
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no running peer Z"),
        "{unknown:?}"
    );
}
