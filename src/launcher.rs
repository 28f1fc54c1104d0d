//! The run-N-peers launcher: a local cluster in one command, and the same code for tests.
//!
//! Each peer is a child process (`ringcache serve`) started on loopback with port 0 for every
//! socket; the child binds, then prints one `READY {json}` line with the addresses it got, so
//! two launchers (or parallel tests) can never collide on a port. The first peer seeds the rest.
//! The cluster secret is generated fresh and passed through the environment, not argv, and so
//! is the client token when there is one.
//!
//! Children die with the launcher: `kill_on_drop`, plus `PR_SET_PDEATHSIG` so even a launcher
//! killed with SIGKILL leaves no peer behind.

// Process management waits on wall-clock deadlines and spawns tasks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use crate::api::auth::TOKEN_ENV;
use crate::client::Client;
use crate::server::PeerAddresses;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use crate::config::serve_args::SECRET_ENV;
const READY_PREFIX: &str = "READY ";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start peers.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    /// The `ringcache` binary to run.
    pub binary: PathBuf,
    pub secret: String,
    /// Extra `serve` arguments given to every peer (e.g. `--replicas 3`).
    pub serve_args: Vec<String>,
    /// Let the peers' logs through to this process's stderr.
    pub show_logs: bool,
    /// Write each peer's logs to `<dir>/<peer id>.log` instead (for tests that read them).
    pub log_dir: Option<PathBuf>,
    /// Environment variables set for every peer (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// The client token every peer requires (and the launcher sends); `None`: open peers.
    pub client_token: Option<String>,
    /// For peers serving HTTPS: the PEM certificate the launcher trusts to reach them (their
    /// own `--http-tls-cert`, or its CA's). `None`: the system's roots, or plain HTTP.
    pub tls_ca: Option<PathBuf>,
}

impl LaunchOptions {
    pub fn new(binary: impl AsRef<Path>) -> Self {
        Self {
            binary: binary.as_ref().to_path_buf(),
            secret: crate::shell::auth::ClusterSecret::generate_hex(),
            serve_args: Vec::new(),
            show_logs: false,
            log_dir: None,
            env: Vec::new(),
            client_token: None,
            tls_ca: None,
        }
    }

    /// A client of `url` that sends this cluster's client token, if any, and trusts
    /// `tls_ca`, if set.
    pub fn client(&self, url: &str) -> anyhow::Result<Client> {
        let token = self.client_token.as_deref();
        Ok(match &self.tls_ca {
            None => Client::with_token(url, token)?,
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the TLS CA {}", path.display()))?;
                Client::with_tls(url, token, &pem)?
            }
        })
    }
}

/// The certificate file given to `serve` as `--http-tls-cert` in `serve_args` (either as
/// `--http-tls-cert=PATH` or as two arguments), if any: the peers serve HTTPS with it.
pub fn http_tls_cert(serve_args: &[String]) -> Option<PathBuf> {
    const FLAG: &str = "--http-tls-cert";
    let mut args = serve_args.iter();
    let mut found = None;
    while let Some(arg) = args.next() {
        if arg == FLAG {
            found = args.next().map(PathBuf::from);
        } else if let Some(path) = arg.strip_prefix(FLAG).and_then(|a| a.strip_prefix('=')) {
            found = Some(PathBuf::from(path));
        }
    }
    found
}

/// A fresh random client token: 32 bytes, hex.
/// Where `ringcache up` records the cluster it runs, for the CLI to find without `--url`:
/// `$XDG_RUNTIME_DIR/ringcache/cluster.json`, or `~/.local/state/ringcache/cluster.json`.
pub fn local_cluster_file() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })?;
    Some(base.join("ringcache").join("cluster.json"))
}

/// What `up` records of a running local cluster (the file is readable by its owner only: it
/// may hold the client token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalClusterRecord {
    /// The peers' HTTP URLs, in `up`'s order; a peer `ringcache kill` stopped is taken out.
    pub urls: Vec<String>,
    pub client_token: Option<String>,
    pub tls_ca: Option<std::path::PathBuf>,
    /// Each peer's name and process, for `ringcache kill` (absent in older records).
    #[serde(default)]
    pub peers: Vec<RecordedPeer>,
}

/// One peer of a recorded local cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedPeer {
    pub id: String,
    pub url: String,
    pub pid: u32,
}

impl LocalClusterRecord {
    /// Writes the record (owner-only permissions), creating its directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(serde_json::to_string_pretty(self)?.as_bytes())
    }

    /// The record at `path`, if there is a readable one.
    pub fn read(path: &Path) -> Option<LocalClusterRecord> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// A client of `url` with the cluster's token and certificate.
    pub fn client(&self, url: &str) -> anyhow::Result<Client> {
        LaunchOptions {
            client_token: self.client_token.clone(),
            tls_ca: self.tls_ca.clone(),
            ..LaunchOptions::new("ringcache")
        }
        .client(url)
    }
}

/// A peer of the local cluster that [`kill_recorded_peer`] killed.
#[derive(Debug)]
pub struct KilledPeer {
    pub id: String,
    pub pid: u32,
    /// What is left of the record: the peers still running.
    pub rest: LocalClusterRecord,
}

/// Kills (SIGKILL) the peer named `id` of the local cluster recorded at `path`, and takes it
/// out of the record so the CLI stops talking to it. Refuses a recorded process that is not
/// that peer's `ringcache serve` (a stale record's pid may have been reused by anything).
pub async fn kill_recorded_peer(path: &Path, id: &str) -> anyhow::Result<KilledPeer> {
    let mut record = LocalClusterRecord::read(path).with_context(|| {
        format!(
            "no local cluster recorded at {}: is `ringcache up` running?",
            path.display()
        )
    })?;
    let names: Vec<&str> = record.peers.iter().map(|p| p.id.as_str()).collect();
    let index = record
        .peers
        .iter()
        .position(|p| p.id == id)
        .with_context(|| {
            format!("the local cluster has no running peer {id} (it has {names:?})")
        })?;
    let peer = record.peers[index].clone();
    anyhow::ensure!(
        is_serve_process(peer.pid, id),
        "process {} is not peer {id}'s `ringcache serve`: the record at {} is stale",
        peer.pid,
        path.display()
    );
    // SAFETY: kill(2) with a pid and a plain signal number has no memory effects.
    let rc = unsafe { libc::kill(peer.pid as i32, libc::SIGKILL) };
    anyhow::ensure!(
        rc == 0,
        "kill {} failed: {}",
        peer.pid,
        std::io::Error::last_os_error()
    );
    record.peers.remove(index);
    record.urls.retain(|u| *u != peer.url);
    record
        .write(path)
        .with_context(|| format!("updating {}", path.display()))?;
    Ok(KilledPeer {
        id: id.to_string(),
        pid: peer.pid,
        rest: record,
    })
}

/// Whether `pid` runs `ringcache serve --id ID` (read from /proc, so only on Linux).
fn is_serve_process(pid: u32, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.get(1) == Some(&b"serve".as_slice())
        && args
            .windows(2)
            .any(|w| w[0] == b"--id" && w[1] == id.as_bytes())
}

impl KilledPeer {
    /// Waits until a peer still running sees this one down; returns that peer's name.
    pub async fn wait_until_seen_down(&self, limit: Duration) -> anyhow::Result<String> {
        let witness = self
            .rest
            .peers
            .first()
            .context("no peer is left to see it")?;
        let client = self.rest.client(&witness.url)?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(live) = client.live_members().await {
                if !live.contains(&self.id) {
                    return Ok(witness.id.clone());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} still sees {} up after {limit:?}", witness.id, self.id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The replication factor `up` sets for a cluster of `peers` when the caller named none: a
/// cluster smaller than the default N = 3 keeps one copy per peer (otherwise `w=all` could
/// never succeed and `quorum` would need peers that do not exist). `None`: leave it alone.
pub fn replicas_for(peers: usize, serve_args: &[String]) -> Option<usize> {
    let named = serve_args.iter().any(|a| a.starts_with("--replicas"));
    (!named && peers < crate::core::config::DEFAULT_REPLICAS).then_some(peers.max(1))
}

/// The worker threads `up` gives each of `peers` peers on this machine: its cores divided among
/// them, at least one. Peers that each start a thread per core contend for every core and spend
/// their time switching between threads rather than serving.
pub fn threads_per_peer(peers: usize) -> usize {
    threads_for(crate::config::default_shards() as usize, peers)
}

fn threads_for(cores: usize, peers: usize) -> usize {
    (cores / peers.max(1)).max(1)
}

pub fn generate_client_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One peer process.
pub struct LaunchedPeer {
    pub addresses: PeerAddresses,
    child: Child,
}

impl LaunchedPeer {
    /// The peer's HTTP API: `https://` when it serves TLS.
    pub fn url(&self) -> String {
        self.addresses.http_url()
    }

    /// The port of the peer's Redis protocol endpoint (`redis-cli -p PORT`).
    pub fn resp_port(&self) -> Option<u16> {
        self.addresses.resp.map(|a| a.port())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal (e.g. `libc::SIGSTOP`) to the peer process.
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = self.pid().context("the peer has exited")?;
        // SAFETY: kill(2) with a pid we own and a plain signal number has no memory effects.
        let rc = unsafe { libc::kill(pid as i32, signal) };
        anyhow::ensure!(rc == 0, "kill({pid}, {signal}) failed");
        Ok(())
    }

    /// Stops the peer at once: SIGINT (SIGTERM would make it leave the cluster gracefully,
    /// handing its data off first), then SIGKILL if it has not exited within two seconds.
    pub async fn stop(mut self) {
        let _ = self.signal(libc::SIGINT);
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Kills the peer at once (SIGKILL), like a crash.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Starts one `ringcache serve` child and waits for its `READY` line.
pub async fn spawn_peer(
    options: &LaunchOptions,
    id: &str,
    seeds: &[std::net::SocketAddr],
) -> anyhow::Result<LaunchedPeer> {
    let mut command = Command::new(&options.binary);
    command
        .arg("serve")
        .args(["--id", id])
        .args([
            "--gossip",
            "127.0.0.1:0",
            "--peer-addr",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        // RESP on a free port too, unless the serve arguments choose (`--no-resp`, `--resp`).
        .args(["--resp", "127.0.0.1:0"].into_iter().filter(|_| {
            !options
                .serve_args
                .iter()
                .any(|a| a == "--resp" || a.starts_with("--resp=") || a == "--no-resp")
        }))
        .args(
            seeds
                .iter()
                .flat_map(|s| ["--seed".to_string(), s.to_string()]),
        )
        .args(&options.serve_args)
        .env(SECRET_ENV, &options.secret)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stderr(match &options.log_dir {
            Some(dir) => {
                let path = dir.join(format!("{id}.log"));
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                Stdio::from(file)
            }
            None if options.show_logs => Stdio::inherit(),
            None => Stdio::null(),
        })
        .kill_on_drop(true);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    match &options.client_token {
        Some(token) => command.env(TOKEN_ENV, token),
        // A token in the launcher's own environment must not close peers it cannot talk to.
        None => command.env_remove(TOKEN_ENV),
    };
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", options.binary.display()))?;
    let stdout = child.stdout.take().context("peer stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addresses = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(json) = line.strip_prefix(READY_PREFIX) {
                return Ok::<_, anyhow::Error>(serde_json::from_str::<PeerAddresses>(json)?);
            }
        }
        bail!("peer {id} exited before it was ready")
    })
    .await
    .with_context(|| format!("peer {id} was not ready within {READY_TIMEOUT:?}"))??;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(LaunchedPeer { addresses, child })
}

/// The line `serve` prints once its sockets are bound.
pub fn ready_line(addresses: &PeerAddresses) -> String {
    format!(
        "{READY_PREFIX}{}",
        serde_json::to_string(addresses).expect("addresses serialize")
    )
}

/// Peer names: A, B, C, … then P27, P28, …
pub fn peer_name(index: usize) -> String {
    if index < 26 {
        char::from(b'A' + index as u8).to_string()
    } else {
        format!("P{}", index + 1)
    }
}

/// A local cluster of child processes.
pub struct LocalCluster {
    pub options: LaunchOptions,
    pub peers: Vec<LaunchedPeer>,
}

impl LocalCluster {
    /// Starts `count` peers and waits until every one sees all of them up.
    pub async fn start(options: LaunchOptions, count: usize) -> anyhow::Result<LocalCluster> {
        anyhow::ensure!(count >= 1, "a cluster needs at least one peer");
        let mut peers = Vec::with_capacity(count);
        let first = spawn_peer(&options, &peer_name(0), &[]).await?;
        let seed = first.addresses.gossip;
        peers.push(first);
        for i in 1..count {
            peers.push(spawn_peer(&options, &peer_name(i), &[seed]).await?);
        }
        let cluster = LocalCluster { options, peers };
        cluster
            .wait_until_converged(count, Duration::from_secs(30))
            .await?;
        Ok(cluster)
    }

    pub fn seed(&self) -> std::net::SocketAddr {
        self.peers[0].addresses.gossip
    }

    /// Waits until every running peer sees exactly `up` members up.
    pub async fn wait_until_converged(&self, up: usize, limit: Duration) -> anyhow::Result<()> {
        let clients = self
            .peers
            .iter()
            .map(|p| Ok((p.url(), self.options.client(&p.url())?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        wait_for_clients(&clients, up, limit).await
    }

    pub async fn stop(self) {
        for peer in self.peers {
            peer.stop().await;
        }
    }
}

/// Polls each URL's `/v1/cluster` (sending `token`, if any) until it reports exactly `up` live
/// members.
pub async fn wait_for_live_members(
    urls: &[String],
    up: usize,
    limit: Duration,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let clients = urls
        .iter()
        .map(|url| Ok((url.clone(), Client::with_token(url, token)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    wait_for_clients(&clients, up, limit).await
}

/// Polls each client's `/v1/cluster` until it reports exactly `up` live members.
async fn wait_for_clients(
    clients: &[(String, Client)],
    up: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    for (url, client) in clients {
        loop {
            if let Ok(live) = client.live_members().await {
                if live.len() == up {
                    break;
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{url} did not see {up} live members within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_smaller_than_three_keeps_one_copy_per_peer_unless_told_otherwise() {
        assert_eq!(replicas_for(1, &[]), Some(1));
        assert_eq!(replicas_for(2, &[]), Some(2));
        assert_eq!(replicas_for(3, &[]), None);
        assert_eq!(replicas_for(5, &[]), None);
        assert_eq!(replicas_for(1, &["--replicas=1".to_string()]), None);
        assert_eq!(
            replicas_for(2, &["--replicas".to_string(), "1".to_string()]),
            None
        );
    }

    #[test]
    fn peers_on_one_machine_share_its_cores() {
        assert_eq!(threads_for(2, 1), 2);
        assert_eq!(threads_for(2, 3), 1);
        assert_eq!(threads_for(8, 3), 2);
        assert_eq!(threads_for(16, 4), 4);
        assert_eq!(threads_for(1, 0), 1);
    }

    #[test]
    fn the_tls_certificate_is_found_in_either_spelling() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(http_tls_cert(&args(&["--replicas", "2"])), None);
        assert_eq!(
            http_tls_cert(&args(&["--http-tls-cert=/tmp/c.pem", "--http-tls-key=k"])),
            Some(PathBuf::from("/tmp/c.pem"))
        );
        assert_eq!(
            http_tls_cert(&args(&["--http-tls-cert", "c.pem", "--http-tls-key", "k"])),
            Some(PathBuf::from("c.pem"))
        );
        assert_eq!(http_tls_cert(&args(&["--http-tls-certx=c.pem"])), None);
    }
}
