//! `serve --config FILE` and `config print`, through the real binary: a peer started from a
//! file runs with its settings, flags and environment variables beat the file, bad files are
//! refused naming the key, `config print` masks secrets and its output starts a peer, and the
//! annotated example in docs/ parses and validates (so it cannot rot).
//!
//! Peers bind loopback with port 0 and are stopped by every test (and killed on drop if a test
//! fails first).

use ringcache::config::{ConfigFile, ServeArgs};
use ringcache::server::PeerAddresses;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const SECRET: &str = "the-cluster-secret-of-this-test";
const FILE_TOKEN: &str = "token-from-the-config-file";
const ENV_TOKEN: &str = "token-from-the-environment";

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringcache-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ringcache.example.toml")
}

/// `ringcache ARGS` with a clean environment for the settings (no token, the test's secret,
/// plus `env`).
fn ringcache(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ringcache"));
    command
        .args(args)
        .env_remove("RINGCACHE_CLIENT_TOKEN")
        .env_remove("RINGCACHE_CONFIG")
        .env("RINGCACHE_CLUSTER_SECRET", SECRET);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the binary runs")
}

/// A config file for a one-peer cluster on loopback, free ports, with a client token.
fn peer_file(dir: &Path) -> PathBuf {
    let path = dir.join("peer.toml");
    std::fs::write(
        &path,
        format!(
            "id = \"T\"\ngossip = \"127.0.0.1:0\"\npeer-addr = \"127.0.0.1:0\"\n\
             http = \"127.0.0.1:0\"\nresp = \"127.0.0.1:0\"\nreplicas = 1\nshards = 1\n\
             max-memory = \"64MiB\"\nclient-token = \"{FILE_TOKEN}\"\n"
        ),
    )
    .unwrap();
    path
}

/// A running `serve` child, killed when dropped.
struct Peer {
    child: tokio::process::Child,
    addresses: PeerAddresses,
}

impl Peer {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Peer {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringcache"));
        command
            .arg("serve")
            .args(args)
            .env_remove("RINGCACHE_CLIENT_TOKEN")
            .env_remove("RINGCACHE_CONFIG")
            .env("RINGCACHE_CLUSTER_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addresses = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(json) = line.strip_prefix("READY ") {
                    return serde_json::from_str::<PeerAddresses>(json).unwrap();
                }
            }
            panic!("the peer exited before it was ready")
        })
        .await
        .expect("the peer was ready in time");
        Peer { child, addresses }
    }

    /// The status of `GET /v1/cluster` sent with `token`.
    async fn status_with(&self, token: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("http://{}/v1/cluster", self.addresses.http))
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id().unwrap() as i32, libc::SIGINT) };
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await.unwrap();
        }
    }
}

#[test]
fn the_example_file_names_every_key_parses_and_validates() {
    let text = std::fs::read_to_string(example()).unwrap();
    for key in ServeArgs::keys() {
        let set = text.lines().any(|l| l.starts_with(&format!("{key} = ")));
        let shown = text.lines().any(|l| l.starts_with(&format!("# {key} = ")));
        assert!(set || shown, "docs/ringcache.example.toml lacks `{key}`");
        if ServeArgs::is_secret(&key) {
            assert!(!set, "the example must not set the secret `{key}`");
        }
    }
    let file = ConfigFile::read(&example()).expect("the example parses");
    let mut args = file.args().unwrap();
    // The secret comes from the environment in real use.
    args.cluster_secret = Some(SECRET.into());
    let config = args
        .into_config()
        .expect("the example is a whole configuration");
    config.validate().expect("the example validates");
    assert_eq!(config.core.max_memory_bytes, Some(512 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_started_from_a_file_runs_with_its_settings() {
    let dir = scratch("config-peer");
    let file = peer_file(&dir);
    let peer = Peer::start(&["--config", file.to_str().unwrap()], &[]).await;
    assert!(peer.addresses.http.ip().is_loopback());
    assert_eq!(peer.addresses.id, "T");
    // The token from the file guards the API.
    let with_file_token = peer.status_with(FILE_TOKEN).await;
    let with_other = peer.status_with(ENV_TOKEN).await;
    peer.stop().await;
    assert_eq!(with_file_token, 200);
    assert_eq!(with_other, 401);

    // The environment beats the file: the same file, with the variable set.
    let peer = Peer::start(
        &["--config", file.to_str().unwrap()],
        &[("RINGCACHE_CLIENT_TOKEN", ENV_TOKEN)],
    )
    .await;
    let (env, file_token) = (
        peer.status_with(ENV_TOKEN).await,
        peer.status_with(FILE_TOKEN).await,
    );
    peer.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((env, file_token), (200, 401));
}

/// The runtime worker threads of process `pid` (tokio names them `tokio-rt-worker`).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_runs_on_the_worker_threads_it_was_given() {
    let dir = scratch("config-threads");
    let file = peer_file(&dir);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("threads = 3\n");
    std::fs::write(&file, text).unwrap();
    // From the file, then from the flag, which beats it.
    for (args, expected) in [
        (vec!["--config", file.to_str().unwrap()], 3),
        (
            vec!["--config", file.to_str().unwrap(), "--threads", "1"],
            1,
        ),
    ] {
        let peer = Peer::start(&args, &[]).await;
        let threads = worker_threads(peer.child.id().unwrap());
        peer.stop().await;
        assert_eq!(threads, expected, "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_print_masks_secrets_and_its_output_starts_a_peer() {
    let dir = scratch("config-print");
    let file = peer_file(&dir);
    let out = ringcache(
        &["config", "print", "--config", file.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(!printed.contains(SECRET), "{printed}");
    assert!(!printed.contains(FILE_TOKEN), "{printed}");
    assert!(
        printed.contains("# cluster-secret: set, masked (environment RINGCACHE_CLUSTER_SECRET)")
    );
    assert!(
        printed.contains("# client-token: set, masked (file)"),
        "{printed}"
    );
    assert!(printed.contains("replicas = 1"), "{printed}");

    // The printout is a config file: a peer starts from it (the token now given by a flag).
    let printed_file = dir.join("printed.toml");
    std::fs::write(&printed_file, &printed).unwrap();
    let peer = Peer::start(
        &[
            "--config",
            printed_file.to_str().unwrap(),
            "--client-token",
            ENV_TOKEN,
        ],
        &[],
    )
    .await;
    let status = peer.status_with(ENV_TOKEN).await;
    let id = peer.addresses.id.clone();
    peer.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((status, id.as_str()), (200, "T"));
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file() {
    let dir = scratch("config-precedence");
    let file = peer_file(&dir);
    let file = file.to_str().unwrap();
    let print = |args: &[&str], env: &[(&str, &str)]| {
        let mut argv = vec!["config", "print", "--config", file];
        argv.extend_from_slice(args);
        let out = ringcache(&argv, env);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let line = |printed: &str, key: &str| {
        printed
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key}:")))
            .unwrap_or_else(|| panic!("no {key} in {printed}"))
            .to_string()
    };
    let env = [("RINGCACHE_CLIENT_TOKEN", ENV_TOKEN)];
    let from_file = print(&[], &[]);
    assert!(line(&from_file, "replicas").ends_with("# file"));
    assert!(line(&from_file, "client-token").ends_with("(file)"));
    assert!(line(&from_file, "partitions").ends_with("# default"));
    let from_env = print(&[], &env);
    assert!(line(&from_env, "client-token").ends_with("(environment RINGCACHE_CLIENT_TOKEN)"));
    let from_flags = print(
        &["--client-token", "a-token-from-the-flag", "--replicas", "3"],
        &env,
    );
    assert!(line(&from_flags, "client-token").ends_with("(flag)"));
    let replicas = line(&from_flags, "replicas");
    assert!(replicas.starts_with("replicas = 3") && replicas.ends_with("# flag"));
    // The file itself can come from RINGCACHE_CONFIG.
    let out = ringcache(&["config", "print"], &[("RINGCACHE_CONFIG", file)]);
    assert!(line(&String::from_utf8_lossy(&out.stdout), "replicas").ends_with("# file"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_refuses_a_file_with_an_unknown_key_or_a_wrong_type_naming_the_key() {
    let dir = scratch("config-bad");
    for (text, key) in [
        ("id = \"A\"\nreplica = 2\n", "`replica`"),
        ("id = \"A\"\nhttp = 7070\n", "`http`"),
        ("id = \"A\"\nmax-memory = \"plenty\"\n", "`max-memory`"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = ringcache(&["serve", "--config", path.to_str().unwrap()], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: {out:?}");
        assert!(stderr.contains(key), "{text}: {stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{text}: {stderr}");
    }
    let missing = dir.join("missing.toml");
    let out = ringcache(&["serve", "--config", missing.to_str().unwrap()], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    let _ = std::fs::remove_dir_all(&dir);
}
