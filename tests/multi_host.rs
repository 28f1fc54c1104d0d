//! Peers on separate hosts form a cluster and keep serving when one of them dies: the
//! multi-host path of `docs/deploy.md`, run on one machine with a network namespace per host.
//!
//! Why: every other test runs its peers on 127.0.0.1, where a peer that advertises the wrong
//! address, binds the wrong interface, or only works because everything shares one loopback
//! still passes. Here each peer has a host of its own — a network namespace with one address
//! on 10.77.0.0/24, reachable only over a veth pair to a bridge in a fifth namespace — and is
//! started the way the deploy guide says: `serve --config FILE` with its own address in every
//! socket (not 0.0.0.0), seeds given by host name (resolved through the namespace's own
//! `/etc/hosts`, as a headless Service's name would be), the cluster secret and the client
//! token from the environment. A sixth role, the client, is one more namespace that runs the
//! `ringcache` CLI with `--url` and the token: it writes keys at W = all, reads them back,
//! kills one peer with SIGKILL, and reads every key again at R = quorum (2 of N = 3).
//!
//! Cleanup: every namespace, link and file is this run's own (names carry the test's pid), and
//! a drop guard kills the peers and deletes the namespaces (their veths go with them) whether
//! the test passes or panics; the peers also die with the thread that started them
//! (PR_SET_PDEATHSIG). Nothing touches the host's own namespace but `/etc/netns/NAME/`, the
//! per-namespace files `ip netns exec` mounts over `/etc`, removed by the guard.
//!
//! Needs root and `ip` (iproute2); elsewhere it says why and passes. Takes about 10 s.

// A test of processes: it waits on wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

use ringcache::server::PeerAddresses;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SECRET: &str = "the-cluster-secret-of-the-multi-host-test";
const TOKEN: &str = "the-client-token-of-the-multi-host-test";
/// The hosts' network; each namespace gets one address in it.
const SUBNET: &str = "10.77.0";
/// The peers: name, host name (in every namespace's `/etc/hosts`), last octet of the address.
const PEERS: [(&str, &str, u8); 3] = [("A", "peer-a", 1), ("B", "peer-b", 2), ("C", "peer-c", 3)];
const CLIENT_OCTET: u8 = 100;
const KEYS: usize = 6;
/// Deadline of one CLI call; the peers' own request timeout is 1.5 s.
const CLI_DEADLINE: Duration = Duration::from_secs(20);

fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need it)".into());
    }
    if !command_works("ip", &["-V"]) {
        return Some("`ip` not found (apt-get install iproute2)".into());
    }
    None
}

/// Runs `ip ARGS`, panicking with its error output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// This run's hosts: a bridge namespace, one namespace per peer and one for the client, and
/// the peer processes in them. Dropping it kills the peers and deletes everything it made.
struct Lab {
    /// Every namespace name starts with it: unique per test process.
    prefix: String,
    namespaces: Vec<String>,
    peers: Vec<(&'static str, Child)>,
    dir: PathBuf,
}

impl Lab {
    /// Builds the network: `NS-sw` holds the bridge; every other namespace gets `eth0`, the
    /// far end of a veth pair whose near end is a port of the bridge, with its one address.
    fn new() -> Result<Lab, String> {
        let prefix = format!("rcmh{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("ringcache-{prefix}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
            peers: Vec::new(),
            dir,
        };
        // The first namespace tells whether namespaces can be made here at all (a container
        // without the privilege cannot): say so and skip, rather than fail.
        let switch = lab.add_namespace("sw")?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        let hosts: String = PEERS
            .iter()
            .map(|(_, host, octet)| format!("{SUBNET}.{octet} {host}\n"))
            .collect();
        let roles = PEERS
            .iter()
            .map(|(name, _, octet)| (name.to_ascii_lowercase(), *octet))
            .chain([("client".to_string(), CLIENT_OCTET)]);
        for (role, octet) in roles {
            let ns = lab.add_namespace(&role)?;
            let port = format!("v{role}");
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{SUBNET}.{octet}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            // `ip netns exec` mounts /etc/netns/NS/hosts over /etc/hosts.
            let etc = Path::new("/etc/netns").join(&ns);
            std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
            std::fs::write(etc.join("hosts"), format!("127.0.0.1 localhost\n{hosts}"))
                .map_err(|e| e.to_string())?;
        }
        Ok(lab)
    }

    /// Creates `PREFIX-role`, recorded first so the guard deletes it even if the rest fails.
    fn add_namespace(&mut self, role: &str) -> Result<String, String> {
        let ns = format!("{}-{role}", self.prefix);
        let out = Command::new("ip")
            .args(["netns", "add", &ns])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "`ip netns add` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.namespaces.push(ns.clone());
        Ok(ns)
    }

    fn namespace(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Writes peer `index`'s config file: its own address in every socket, every peer's host
    /// name as a seed (its own too: the same file shape on every host), small and fast
    /// settings for a test.
    fn config_file(&self, index: usize) -> PathBuf {
        let (name, _, octet) = PEERS[index];
        let addr = format!("{SUBNET}.{octet}");
        let seeds: Vec<String> = PEERS
            .iter()
            .map(|(_, host, _)| format!("\"{host}:7000\""))
            .collect();
        let text = format!(
            "id = \"{name}\"\n\
             gossip = \"{addr}:7000\"\n\
             peer-addr = \"{addr}:7100\"\n\
             http = \"{addr}:7070\"\n\
             resp = \"{addr}:6380\"\n\
             seed = [{}]\n\
             replicas = 3\n\
             partitions = 64\n\
             vnodes = 64\n\
             shards = 1\n\
             max-memory = \"64MiB\"\n\
             gossip-interval-ms = 100\n\
             request-timeout-ms = 1500\n",
            seeds.join(", ")
        );
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("config written");
        path
    }

    /// Starts peer `index` in its namespace (`ip netns exec` execs the binary, so the child's
    /// pid is the peer's) and returns once it printed its READY line.
    fn start_peer(&mut self, index: usize) -> (mpsc::Receiver<PeerAddresses>, Child) {
        let (name, _, _) = PEERS[index];
        let config = self.config_file(index);
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(&name.to_ascii_lowercase())])
            .arg(env!("CARGO_BIN_EXE_ringcache"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RINGCACHE_CLUSTER_SECRET", SECRET)
            .env("RINGCACHE_CLIENT_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("ip netns exec runs");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(json) = line.strip_prefix("READY ") {
                    if let Ok(addresses) = serde_json::from_str(json) {
                        let _ = tx.send(addresses);
                    }
                }
            }
        });
        (rx, child)
    }

    /// Runs the CLI in the client's namespace: `ringcache ARGS`, with the client token unless
    /// `token` is false; killed if it outlasts [`CLI_DEADLINE`].
    fn cli(&self, args: &[&str], token: bool) -> Output {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace("client")])
            .arg(env!("CARGO_BIN_EXE_ringcache"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if token {
            command.env("RINGCACHE_CLIENT_TOKEN", TOKEN);
        }
        let mut child = command.spawn().expect("ip netns exec runs");
        let until = Instant::now() + CLI_DEADLINE;
        while child.try_wait().expect("waitpid").is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                panic!(
                    "`ringcache {}` took more than {CLI_DEADLINE:?}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    }

    /// The peer logs, for a failure message.
    fn logs(&self) -> String {
        PEERS
            .iter()
            .map(|(name, _, _)| {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- peer {name} (last lines) ---\n{}\n", tail.join("\n"))
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.peers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A namespace's links go with it: the veth pairs and the bridge.
        for ns in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url(octet: u8) -> String {
    format!("http://{SUBNET}.{octet}:7070")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// How many members the peer at `octet` sees up, asked from the client's host.
fn members_up(lab: &Lab, octet: u8) -> usize {
    let out = lab.cli(&["cluster", "--json", "--url", &url(octet)], true);
    if !out.status.success() {
        return 0;
    }
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    status["members"]["members"]
        .as_object()
        .map_or(0, |m| m.values().filter(|v| v["up"] == true).count())
}

#[test]
fn peers_on_three_hosts_serve_a_client_on_a_fourth_and_survive_a_kill_9() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("skipping the multi-host test: {why}");
        return;
    }
    let mut lab = match Lab::new() {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("skipping the multi-host test: cannot build network namespaces: {why}");
            return;
        }
    };
    let started = Instant::now();

    // Every peer starts at once, as on separate hosts: none is "the first", each joins
    // through the others' names.
    let ready: Vec<_> = (0..PEERS.len()).map(|i| lab.start_peer(i)).collect();
    for (i, (rx, child)) in ready.into_iter().enumerate() {
        lab.peers.push((PEERS[i].0, child));
        let addresses = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("peer {} was not ready\n{}", PEERS[i].0, lab.logs()));
        // Bound to its host's address, and published as such: not 0.0.0.0, not loopback.
        let own = format!("{SUBNET}.{}", PEERS[i].2);
        for addr in [addresses.gossip, addresses.peer, addresses.http] {
            assert_eq!(addr.ip().to_string(), own, "{addresses:?}");
        }
    }

    // From the client's host, every peer sees all three up.
    let until = Instant::now() + Duration::from_secs(30);
    for (name, _, octet) in PEERS {
        while members_up(&lab, octet) < PEERS.len() {
            assert!(
                Instant::now() < until,
                "peer {name} never saw all three up\n{}",
                lab.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // The fields docs/deploy.md's "settled" check reads with jq between restarts.
    let out = lab.cli(&["cluster", "--json", "--url", &url(2)], true);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cluster --json");
    assert!(status["handoff"].is_array(), "{status}");
    assert!(status["partitions_moving_in"].is_array(), "{status}");

    // The API is closed to a client without the token.
    let refused = lab.cli(&["get", "k0", "--url", &url(1)], false);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        text(&refused.stderr).contains("401"),
        "{}",
        text(&refused.stderr)
    );

    // Writes at W = all reach every host; reads at R = all come back from every replica.
    for k in 0..KEYS {
        let (key, value) = (format!("k{k}"), format!("value-{k}"));
        let via = url(PEERS[k % PEERS.len()].2);
        let out = lab.cli(&["put", &key, &value, "--w", "all", "--url", &via], true);
        assert!(out.status.success(), "put {key}: {out:?}\n{}", lab.logs());
    }
    for k in 0..KEYS {
        let out = lab.cli(
            &["get", &format!("k{k}"), "--r", "all", "--url", &url(2)],
            true,
        );
        assert!(out.status.success(), "get k{k}: {out:?}\n{}", lab.logs());
        assert_eq!(text(&out.stdout), format!("value-{k}"));
    }

    // Peer A dies at once, as a host would.
    let (_, mut a) = lab.peers.remove(0);
    a.kill().expect("SIGKILL peer A");
    a.wait().expect("peer A exits");

    // Two of three replicas answer: every key reads back at R = quorum through B, and a new
    // write at W = quorum through C succeeds and reads back through B.
    for k in 0..KEYS {
        let out = lab.cli(
            &["get", &format!("k{k}"), "--r", "quorum", "--url", &url(2)],
            true,
        );
        assert!(
            out.status.success(),
            "get k{k} with A dead: {out:?}\n{}",
            lab.logs()
        );
        assert_eq!(text(&out.stdout), format!("value-{k}"));
    }
    let out = lab.cli(
        &[
            "put",
            "after",
            "the-kill",
            "--w",
            "quorum",
            "--url",
            &url(3),
        ],
        true,
    );
    assert!(out.status.success(), "put after the kill: {out:?}");
    let out = lab.cli(&["get", "after", "--r", "quorum", "--url", &url(2)], true);
    assert_eq!(text(&out.stdout), "the-kill", "{out:?}");
    // And the kill was real: all three replicas can no longer answer.
    let out = lab.cli(&["get", "k0", "--r", "all", "--url", &url(2)], true);
    assert_eq!(out.status.code(), Some(3), "R = all with A dead: {out:?}");

    eprintln!(
        "multi-host: 3 peers on 3 hosts, {KEYS} keys written and read back across a kill -9 in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
