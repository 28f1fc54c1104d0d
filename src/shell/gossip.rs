//! Membership and failure detection through chitchat, over sealed UDP.
//!
//! Each peer publishes its QUIC and HTTP addresses as chitchat key-values. A [`Gossip`] turns
//! chitchat's state (live and dead nodes, per-generation) into a [`ClusterView`]: one entry per
//! peer name, up if any generation of it is live. The driver hands the core the
//! [`MembershipView`] part and keeps the addresses for itself.
//!
//! # Who may gossip
//! Every datagram is sealed: a keyed BLAKE3 MAC under a key derived from the cluster secret,
//! with a timestamp window and a per-sender sequence against replays
//! ([`crate::shell::gossip_seal`]). chitchat runs over [`SealedTransport`], which hands chitchat's
//! decoder only datagrams whose seal opens, so a sender without the secret cannot add, alter or
//! remove members, crash chitchat with a crafted message, or make it decompress anything.
//! chitchat's cluster id, also derived from the secret, keeps clusters apart before that.
//! Behind the seal, every peer also publishes a *membership tag* (a MAC under another derived
//! key over its name, generation and addresses); a member whose tag does not verify never
//! enters the view, and one whose entry stops verifying keeps its last good entry.
//!
//! # What a holder of the secret can still do
//! chitchat applies any member's deltas, including deltas about the receiving peer itself
//! (its codec and delta types are private, so they cannot be filtered before it applies them).
//! Instead, each view poll checks this peer's own key-values and re-publishes them at a higher
//! version if another member overwrote them, so the peer's true entry wins again everywhere
//! within a poll. The view holds at most [`GossipTiming::max_members`] members (members already
//! in it first), whatever chitchat has been told, and believes a member's entry only while it
//! holds at most [`GossipTiming::max_member_keys`] key-values of at most
//! [`GossipTiming::max_member_bytes`] bytes in all (a peer publishes four, a few hundred bytes):
//! past that the entry is treated like one whose tag fails (its last good entry is kept, or it
//! stays out), logged once and counted in [`GossipViewStats::members_over_bound`]. chitchat 0.13
//! has no such limit of its own (`ChitchatConfig` has none; only the datagram size bounds one
//! delta), so chitchat itself still keeps what a member sends in memory.
//!
//! # When the gossip task dies
//! A member can still hit chitchat's assertions (or the socket can fail), which ends chitchat's
//! task. A supervisor then marks [`Health`] down (`GET /health` answers 503) and starts a new
//! chitchat on the same address, with the same name, seeds and sealed transport and a higher
//! generation (so the others take it for a new life of this peer rather than a replay of the
//! old one), then marks it up again. Until the new instance has heard from every member of the
//! last view (or [`REJOIN_GRACE_INTERVALS`] gossip intervals pass), members it has not heard of
//! yet keep their last entry, so a restart does not look to the core like the whole cluster
//! leaving. At most [`GossipTiming::max_restarts`] restarts are made within
//! [`GossipTiming::restart_window`]; past that the supervisor gives up: [`Health`] fails for
//! good and [`Gossip::gave_up`] resolves, on which `serve` exits with an error — never a zombie
//! peer serving a frozen view.

use crate::core::membership::{Liveness, MembershipView};
use crate::core::types::NodeId;
use crate::shell::gossip_entry::tag_is_valid;
pub use crate::shell::gossip_entry::{check_entry_size, member_tag, EntryTooLarge};
use crate::shell::gossip_transport::{wall_clock_ms, GossipWireStats, SealedTransport};
use crate::shell::health::Health;
use crate::shell::restart_budget::RestartBudget;
use crate::shell::seed_addr::SeedAddr;
use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

pub const KEY_PEER_ADDR: &str = "peer_addr";
pub const KEY_HTTP_ADDR: &str = "http_addr";
pub const KEY_TAG: &str = "member_tag";
/// Published by a peer that is leaving the cluster: the others take it off their rings.
pub const KEY_LEAVING: &str = "leaving";
/// The part of [`Health`] gossip marks down while it restarts.
const HEALTH_PART: &str = "gossip";
/// After a restart, members the new chitchat has not heard of keep their last entry for at
/// most this many gossip intervals (a member is live after two heartbeats).
pub const REJOIN_GRACE_INTERVALS: u32 = 30;
/// The longest pause between two attempts to restart gossip (the first waits one interval).
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(5);

/// One peer as gossip sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    pub up: bool,
    /// The peer announced it is leaving (it holds no place on the ring).
    pub leaving: bool,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub peer_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
}

/// Every peer gossip knows of, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    pub members: BTreeMap<NodeId, MemberInfo>,
}

impl ClusterView {
    pub fn membership(&self) -> MembershipView {
        let mut view = MembershipView::new();
        for (id, info) in &self.members {
            let liveness = if info.leaving {
                Liveness::Leaving
            } else if info.up {
                Liveness::Up
            } else {
                Liveness::Down
            };
            view.set(id.clone(), liveness);
        }
        view
    }

    pub fn peer_addr(&self, node: &NodeId) -> Option<SocketAddr> {
        self.members.get(node).and_then(|m| m.peer_addr)
    }
}

/// Failure-detection timing and gossip limits. Defaults suit a LAN; tests shorten them.
#[derive(Clone, Debug)]
pub struct GossipTiming {
    pub interval: Duration,
    pub phi_threshold: f64,
    /// How long a dead peer stays a ring member before gossip forgets it.
    pub dead_node_grace: Duration,
    /// How far a sealed datagram's timestamp may be from this peer's clock (either way): the
    /// cluster's clocks must agree within it. Also how long a sender's sequence is remembered.
    pub replay_window: Duration,
    /// The most members the view holds; members already in it are kept first.
    pub max_members: usize,
    /// The most live key-values a member's entry may hold and be believed (a peer publishes
    /// four).
    pub max_member_keys: usize,
    /// The most bytes (keys and values) a member's entry may hold and be believed.
    pub max_member_bytes: usize,
    /// How many times a dead gossip task is restarted within `restart_window` before the peer
    /// gives up (and `serve` exits).
    pub max_restarts: usize,
    /// The sliding window `max_restarts` is counted in.
    pub restart_window: Duration,
}

impl Default for GossipTiming {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            phi_threshold: 8.0,
            dead_node_grace: Duration::from_secs(24 * 3600),
            replay_window: Duration::from_secs(30),
            max_members: 256,
            max_member_keys: 16,
            max_member_bytes: 4096,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, Error)]
pub enum GossipError {
    #[error("starting gossip on {addr}: {reason}")]
    Start { addr: SocketAddr, reason: String },
    #[error(
        "the gossip task ended {restarts} times within {window:?} (last: {last}); \
         not restarting it again: this peer's view of the cluster would be stale"
    )]
    GaveUp {
        restarts: usize,
        window: Duration,
        last: String,
    },
}

/// Counters of what the view refused and how often gossip was restarted.
#[derive(Debug, Default)]
pub struct GossipViewStats {
    /// Times a member's entry was found over the key-value or byte bound (once per member
    /// generation each time it goes over).
    pub members_over_bound: AtomicU64,
    /// Times the gossip task was restarted after it ended.
    pub restarts: AtomicU64,
}

/// Everything gossip needs to start.
pub struct GossipSetup {
    /// Where to gossip; a concrete port (the sealed transport binds it).
    pub listen_addr: SocketAddr,
    /// Where the others reach `listen_addr`: the same, unless it is unspecified (`0.0.0.0`).
    pub advertise_addr: SocketAddr,
    pub node: NodeId,
    /// Distinguishes this start of the peer from earlier ones (boot time in ms).
    pub generation: u64,
    /// Where to join: addresses, or names chitchat resolves (again every minute).
    pub seeds: Vec<SeedAddr>,
    pub cluster_id: String,
    /// The key of membership tags (`ClusterSecret::gossip_key`).
    pub gossip_key: [u8; 32],
    /// The key of datagram seals (`ClusterSecret::gossip_seal_key`).
    pub seal_key: [u8; 32],
    pub timing: GossipTiming,
    /// Published so others can reach this peer's QUIC endpoint and HTTP API; never
    /// unspecified (`0.0.0.0`, `::`): the server replaces such a bind with `--advertise`.
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Down while the gossip task is being restarted; failed if it cannot be.
    pub health: Health,
}

/// What every chitchat instance of this peer is started with: all of [`GossipSetup`] but the
/// generation and health.
struct Launch {
    listen_addr: SocketAddr,
    advertise_addr: SocketAddr,
    node: NodeId,
    seeds: Vec<SeedAddr>,
    cluster_id: String,
    gossip_key: [u8; 32],
    seal_key: [u8; 32],
    timing: GossipTiming,
    peer_addr: String,
    http_addr: String,
}

impl Launch {
    fn chitchat_id(&self, generation: u64) -> ChitchatId {
        ChitchatId::new(self.node.as_str(), generation, self.advertise_addr)
    }

    /// This peer's key-values for `generation` (the tag covers it), leaving or not.
    fn own_key_values(&self, generation: u64, leaving: bool) -> Vec<(String, String)> {
        let id = self.chitchat_id(generation);
        let mut own = vec![
            (
                KEY_TAG.to_string(),
                member_tag(&self.gossip_key, &id, &self.peer_addr, &self.http_addr),
            ),
            (KEY_PEER_ADDR.to_string(), self.peer_addr.clone()),
            (KEY_HTTP_ADDR.to_string(), self.http_addr.clone()),
        ];
        if leaving {
            own.push((KEY_LEAVING.to_string(), "1".to_string()));
        }
        own
    }

    /// Starts one chitchat instance, over a fresh sealed socket on `listen_addr`.
    async fn spawn(
        &self,
        generation: u64,
        own: Vec<(String, String)>,
        wire_stats: Arc<GossipWireStats>,
    ) -> Result<ChitchatHandle, GossipError> {
        let timing = &self.timing;
        let config = ChitchatConfig {
            chitchat_id: self.chitchat_id(generation),
            cluster_id: self.cluster_id.clone(),
            gossip_interval: timing.interval,
            listen_addr: self.listen_addr,
            seed_nodes: self.seeds.iter().map(|s| s.as_str().to_string()).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: timing.phi_threshold,
                initial_interval: timing.interval,
                dead_node_grace_period: timing.dead_node_grace,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        // Senders are counted per start of a peer; a few starts per member fit.
        let transport = SealedTransport::new(
            self.seal_key,
            timing.replay_window,
            timing.max_members.saturating_mul(4),
            wire_stats,
        );
        chitchat::spawn_chitchat(config, own, &transport)
            .await
            .map_err(|e| GossipError::Start {
                addr: self.listen_addr,
                reason: format!("{e:#}"),
            })
    }
}

/// The chitchat instance running now.
struct Instance {
    handle: ChitchatHandle,
    generation: u64,
}

/// What the [`Gossip`] handle and its supervisor task share.
struct Shared {
    launch: Launch,
    current: Mutex<Instance>,
    /// This peer's own key-values, as the current instance published them.
    own: Mutex<Vec<(String, String)>>,
    /// The last view handed out: members whose entry stops verifying keep theirs from it, and
    /// its members are kept first when there are more than `max_members`.
    last_view: Mutex<ClusterView>,
    /// How many members were over the cap when that was last logged (0: not over).
    over_cap_logged: AtomicUsize,
    /// Members whose entry is over the size bound and has been logged as such.
    over_bound: Mutex<BTreeSet<ChitchatId>>,
    /// Set by a restart: until then, members the new instance has not heard from keep their
    /// last entry.
    rejoin_until: Mutex<Option<Instant>>,
    health: Health,
    wire_stats: Arc<GossipWireStats>,
    view_stats: GossipViewStats,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Gossip {
    shared: Arc<Shared>,
    /// Tells the supervisor to stop (true), before the current instance is shut down.
    stop: watch::Sender<bool>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set once the supervisor has given up restarting.
    gave_up: watch::Receiver<Option<GossipError>>,
}

impl Gossip {
    /// Starts gossiping on `setup.listen_addr` (a concrete port), publishing this peer's
    /// addresses and membership tag, and the supervisor that restarts gossip if its task ends.
    pub async fn start(setup: GossipSetup) -> Result<Gossip, GossipError> {
        let GossipSetup {
            listen_addr,
            advertise_addr,
            node,
            generation,
            seeds,
            cluster_id,
            gossip_key,
            seal_key,
            timing,
            peer_addr,
            http_addr,
            health,
        } = setup;
        let launch = Launch {
            listen_addr,
            advertise_addr,
            node,
            seeds,
            cluster_id,
            gossip_key,
            seal_key,
            timing,
            peer_addr: peer_addr.to_string(),
            http_addr: http_addr.to_string(),
        };
        let own = launch.own_key_values(generation, false);
        let wire_stats = Arc::new(GossipWireStats::default());
        let handle = launch
            .spawn(generation, own.clone(), wire_stats.clone())
            .await?;
        let shared = Arc::new(Shared {
            launch,
            current: Mutex::new(Instance { handle, generation }),
            own: Mutex::new(own),
            last_view: Mutex::new(ClusterView::default()),
            over_cap_logged: AtomicUsize::new(0),
            over_bound: Mutex::new(BTreeSet::new()),
            rejoin_until: Mutex::new(None),
            health,
            wire_stats,
            view_stats: GossipViewStats::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (gave_up_tx, gave_up) = watch::channel(None);
        let supervisor = tokio::spawn(supervise(shared.clone(), stop_rx, gave_up_tx));
        Ok(Gossip {
            shared,
            stop,
            supervisor: Mutex::new(Some(supervisor)),
            gave_up,
        })
    }

    /// Counters of the gossip socket: datagrams accepted and refused, by reason. Shared by
    /// every chitchat instance of this peer.
    pub fn wire_stats(&self) -> &GossipWireStats {
        &self.shared.wire_stats
    }

    /// Counters of the view: members over the size bound, restarts.
    pub fn view_stats(&self) -> &GossipViewStats {
        &self.shared.view_stats
    }

    /// The generation the current chitchat instance gossips (it grows with each restart).
    pub fn generation(&self) -> u64 {
        lock(&self.shared.current).generation
    }

    /// Resolves once gossip has ended more often than [`GossipTiming::max_restarts`] within
    /// [`GossipTiming::restart_window`] and will not be restarted: the peer must stop.
    pub async fn gave_up(&self) -> GossipError {
        let mut gave_up = self.gave_up.clone();
        let error = match gave_up.wait_for(Option::is_some).await {
            Ok(error) => error.clone(),
            Err(_) => None,
        };
        match error {
            Some(error) => error,
            // The supervisor stopped (shutdown) without giving up: nothing to report, ever.
            None => std::future::pending().await,
        }
    }

    /// The current instance's chitchat state.
    fn chitchat(&self) -> Arc<tokio::sync::Mutex<Chitchat>> {
        lock(&self.shared.current).handle.chitchat()
    }

    /// The current view of the cluster, self included and always up. Also puts this peer's own
    /// key-values back if another member overwrote them (see the module doc).
    pub async fn view(&self) -> ClusterView {
        self.shared.view().await
    }

    /// Tells the cluster this peer is leaving (see [`KEY_LEAVING`]).
    pub async fn announce_leaving(&self) {
        lock(&self.shared.own).push((KEY_LEAVING.to_string(), "1".to_string()));
        let chitchat = self.chitchat();
        let mut guard = chitchat.lock().await;
        guard.self_node_state().set(KEY_LEAVING, "1");
    }

    /// Ends the current gossip task at once, as a crash inside chitchat would: the peer's
    /// [`Health`] goes down and the supervisor restarts gossip. A hook for tests of what
    /// follows such a crash.
    #[doc(hidden)]
    pub fn abort(&self) {
        lock(&self.shared.current).handle.abort();
    }

    /// Stops the supervisor, then the current chitchat instance, and waits for both.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let supervisor = lock(&self.supervisor).take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
        let ended = {
            let current = lock(&self.shared.current);
            let _ = current.handle.initiate_shutdown();
            current.handle.termination_watcher()
        };
        let _ = ended.await;
    }
}

impl Shared {
    async fn view(&self) -> ClusterView {
        let chitchat = lock(&self.current).handle.chitchat();
        let mut guard = chitchat.lock().await;
        self.restore_own_entry(guard.self_node_state());
        let self_id = guard.self_chitchat_id().clone();
        let live: Vec<ChitchatId> = guard.live_nodes().cloned().collect();
        let last = lock(&self.last_view).clone();
        let timing = &self.launch.timing;
        let mut candidates: BTreeMap<NodeId, MemberInfo> = BTreeMap::new();
        for (id, state) in guard.node_states() {
            let name = NodeId::from(id.node_id.to_string());
            let up = live.contains(id) || name == self.launch.node;
            // This peer's own entry was just restored; anyone else's is checked.
            let size = if *id == self_id {
                Ok(())
            } else {
                check_entry_size(
                    state.key_values(),
                    timing.max_member_keys,
                    timing.max_member_bytes,
                )
            };
            self.note_entry_size(id, size);
            let info = if size.is_ok() && tag_is_valid(&self.launch.gossip_key, id, state) {
                MemberInfo {
                    up,
                    leaving: state.get(KEY_LEAVING).is_some(),
                    generation: id.generation_id,
                    gossip_addr: id.gossip_advertise_addr,
                    peer_addr: state.get(KEY_PEER_ADDR).and_then(|a| a.parse().ok()),
                    http_addr: state.get(KEY_HTTP_ADDR).and_then(|a| a.parse().ok()),
                }
            } else {
                // Keep the last good entry of this very generation, if there is one.
                match last.members.get(&name) {
                    Some(old)
                        if old.generation == id.generation_id
                            && old.gossip_addr == id.gossip_advertise_addr =>
                    {
                        tracing::debug!(
                            ?id,
                            "member entry stopped verifying: kept its last good one"
                        );
                        MemberInfo { up, ..old.clone() }
                    }
                    _ => {
                        tracing::debug!(
                            ?id,
                            "gossip member without a valid membership tag ignored"
                        );
                        continue;
                    }
                }
            };
            // Several generations of one name: the live one wins, then the newest.
            let replace = match candidates.get(&name) {
                None => true,
                Some(old) => (info.up, info.generation) > (old.up, old.generation),
            };
            if replace {
                candidates.insert(name, info);
            }
        }
        drop(guard);
        self.carry_over_while_rejoining(&mut candidates, &last);
        let view = self.capped(candidates, &last);
        *lock(&self.last_view) = view.clone();
        view
    }

    /// Logs a member's entry the first time it is over the bound (per generation, each time it
    /// goes over) and counts it.
    fn note_entry_size(&self, id: &ChitchatId, size: Result<(), EntryTooLarge>) {
        let mut over_bound = lock(&self.over_bound);
        match size {
            Ok(()) => {
                over_bound.remove(id);
            }
            Err(too_large) => {
                if over_bound.insert(id.clone()) {
                    self.view_stats
                        .members_over_bound
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        ?id,
                        %too_large,
                        "a member's gossip entry is over the bound: not believed"
                    );
                }
            }
        }
    }

    /// Right after a restart the new chitchat knows only what it has heard since: members of
    /// the last view it has not heard from (or not yet as live) keep their last entry, until
    /// it has heard from every one or the grace ends.
    fn carry_over_while_rejoining(
        &self,
        candidates: &mut BTreeMap<NodeId, MemberInfo>,
        last: &ClusterView,
    ) {
        let mut rejoin_until = lock(&self.rejoin_until);
        let Some(until) = *rejoin_until else {
            return;
        };
        if Instant::now() >= until {
            tracing::info!("gossip rejoin grace over");
            *rejoin_until = None;
            return;
        }
        let mut all_heard = true;
        for (name, old) in &last.members {
            if *name == self.launch.node {
                continue;
            }
            let heard = match candidates.get(name) {
                Some(new) => new.up || !old.up,
                None => false,
            };
            if !heard {
                all_heard = false;
                candidates.insert(name.clone(), old.clone());
            }
        }
        if all_heard {
            tracing::info!("restarted gossip has heard from every member");
            *rejoin_until = None;
        }
    }

    /// At most `max_members` of `candidates`: this peer, then those already in `last`, then the
    /// rest in name order.
    fn capped(&self, candidates: BTreeMap<NodeId, MemberInfo>, last: &ClusterView) -> ClusterView {
        let max = self.launch.timing.max_members.max(1);
        let total = candidates.len();
        if total <= max {
            self.over_cap_logged.store(0, Ordering::Relaxed);
            return ClusterView {
                members: candidates,
            };
        }
        if self.over_cap_logged.swap(total, Ordering::Relaxed) != total {
            tracing::warn!(
                members = total,
                max,
                "gossip knows more members than the cap: members not yet in the view are left out"
            );
        }
        cap_members(candidates, last, &self.launch.node, max)
    }

    /// Puts this peer's own key-values back if another member's delta changed them, and drops
    /// keys it never published. chitchat gives the re-published value a version above the
    /// forged one, so it wins on every peer.
    fn restore_own_entry(&self, state: &mut chitchat::NodeState) {
        let own = lock(&self.own).clone();
        let forged: Vec<String> = state
            .key_values()
            .filter(|(key, _)| !own.iter().any(|(own, _)| own == key))
            .map(|(key, _)| key.to_string())
            .collect();
        let changed: Vec<&(String, String)> = own
            .iter()
            .filter(|(key, value)| state.get(key) != Some(value.as_str()))
            .collect();
        if forged.is_empty() && changed.is_empty() {
            return;
        }
        // Re-publishing bumps the version; a forged version near the top would overflow it.
        if state.max_version() > u64::MAX / 2 {
            tracing::error!(
                max_version = state.max_version(),
                "another member set this peer's gossip entry to an absurd version: not restoring it"
            );
            return;
        }
        tracing::warn!(
            changed = changed.len(),
            foreign_keys = forged.len(),
            "another member rewrote this peer's gossip entry: restoring it"
        );
        for (key, value) in changed {
            state.set(key, value);
        }
        for key in forged {
            state.delete(&key);
        }
    }

    /// Starts a new chitchat instance in place of the dead one: a higher generation, this
    /// peer's key-values under a tag for it, the same address, seeds and seal.
    async fn restart(&self) -> Result<u64, GossipError> {
        let previous = lock(&self.current).generation;
        let generation = previous.saturating_add(1).max(wall_clock_ms());
        let leaving = lock(&self.own).iter().any(|(key, _)| key == KEY_LEAVING);
        let own = self.launch.own_key_values(generation, leaving);
        let handle = self
            .launch
            .spawn(generation, own.clone(), self.wire_stats.clone())
            .await?;
        *lock(&self.own) = own;
        *lock(&self.rejoin_until) =
            Some(Instant::now() + self.launch.timing.interval * REJOIN_GRACE_INTERVALS);
        // The dead instance's handle is dropped here.
        *lock(&self.current) = Instance { handle, generation };
        self.view_stats.restarts.fetch_add(1, Ordering::Relaxed);
        Ok(generation)
    }
}

/// Watches the current chitchat task; when it ends (not by shutdown), restarts it within the
/// budget, or gives up (see the module doc).
async fn supervise(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    gave_up: watch::Sender<Option<GossipError>>,
) {
    let timing = &shared.launch.timing;
    let mut budget = RestartBudget::new(timing.max_restarts, timing.restart_window);
    loop {
        let ended = lock(&shared.current).handle.termination_watcher();
        let mut why = tokio::select! {
            _ = stop.wait_for(|stopping| *stopping) => return,
            outcome = ended => match outcome {
                Ok(()) => "it returned".to_string(),
                Err(e) => format!("{e:#}"),
            },
        };
        if *stop.borrow() {
            return;
        }
        shared.health.set_down(
            HEALTH_PART,
            format!("the gossip task ended ({why}); restarting it"),
        );
        let mut pause = timing.interval;
        loop {
            if !budget.try_restart(Instant::now()) {
                let error = GossipError::GaveUp {
                    restarts: budget.max_restarts(),
                    window: budget.window(),
                    last: why,
                };
                shared.health.fail(error.to_string());
                gave_up.send_replace(Some(error));
                return;
            }
            // A pause against a tight loop, and for the dead task's socket to be released;
            // doubled after each failed attempt.
            tokio::select! {
                _ = stop.wait_for(|stopping| *stopping) => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_RESTART_PAUSE.max(timing.interval));
            match shared.restart().await {
                Ok(generation) => {
                    tracing::warn!(generation, "gossip restarted after its task ended");
                    shared.health.set_up(HEALTH_PART);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "restarting gossip failed");
                    why = e.to_string();
                }
            }
        }
    }
}

/// At most `max` of `candidates`: `self_name`, then the members of `last`, then the rest in
/// name order.
fn cap_members(
    mut candidates: BTreeMap<NodeId, MemberInfo>,
    last: &ClusterView,
    self_name: &NodeId,
    max: usize,
) -> ClusterView {
    let mut view = ClusterView::default();
    let preferred = std::iter::once(self_name).chain(last.members.keys());
    for name in preferred {
        if view.members.len() >= max {
            break;
        }
        if let Some(info) = candidates.remove(name) {
            view.members.insert(name.clone(), info);
        }
    }
    let room = max.saturating_sub(view.members.len());
    view.members.extend(candidates.into_iter().take(room));
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_cap_keeps_self_then_known_members() {
        let info = MemberInfo {
            up: true,
            leaving: false,
            generation: 1,
            gossip_addr: ([127, 0, 0, 1], 1).into(),
            peer_addr: None,
            http_addr: None,
        };
        let all: BTreeMap<NodeId, MemberInfo> = ["A", "B", "C", "D", "Z"]
            .iter()
            .map(|n| (NodeId::from(*n), info.clone()))
            .collect();
        let mut last = ClusterView::default();
        last.members.insert(NodeId::from("D"), info.clone());
        let names = |v: ClusterView| {
            v.members
                .into_keys()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(cap_members(all.clone(), &last, &NodeId::from("Z"), 3)),
            ["A", "D", "Z"]
        );
        assert_eq!(
            names(cap_members(all.clone(), &last, &NodeId::from("Z"), 1)),
            ["Z"]
        );
        assert_eq!(
            names(cap_members(all, &last, &NodeId::from("Z"), 9)).len(),
            5
        );
    }

    fn free_addr() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn setup(
        node: &str,
        listen: SocketAddr,
        advertise: SocketAddr,
        seeds: Vec<SocketAddr>,
    ) -> GossipSetup {
        GossipSetup {
            listen_addr: listen,
            advertise_addr: advertise,
            node: NodeId::from(node),
            generation: 42,
            seeds: seeds.into_iter().map(SeedAddr::from).collect(),
            cluster_id: "ringcache-test".into(),
            gossip_key: [5; 32],
            seal_key: [6; 32],
            timing: GossipTiming {
                interval: Duration::from_millis(50),
                ..GossipTiming::default()
            },
            peer_addr: "127.0.0.1:7100".parse().unwrap(),
            http_addr: "127.0.0.1:7070".parse().unwrap(),
            health: Health::new(),
        }
    }

    /// chitchat applies a member's deltas about the receiver itself. A member posing as V
    /// (same name, generation and address, the cluster's keys) publishes V's entry with another
    /// peer address and an extra key, at higher versions: V takes it, then its next view puts
    /// its own entry back above the forged versions.
    #[tokio::test]
    async fn a_peer_restores_its_own_entry_after_another_member_rewrites_it() {
        let v_addr = free_addr();
        let victim = Gossip::start(setup("V", v_addr, v_addr, vec![]))
            .await
            .unwrap();
        let forger = Gossip::start(setup("V", free_addr(), v_addr, vec![v_addr]))
            .await
            .unwrap();
        let id = lock(&victim.shared.current).handle.chitchat_id().clone();
        let forged_peer = "127.0.0.1:9";
        {
            let chitchat = forger.chitchat();
            let mut guard = chitchat.lock().await;
            let state = guard.self_node_state();
            for i in 0..10 {
                state.set("pad", i);
            }
            state.set(KEY_PEER_ADDR, forged_peer);
            state.set(
                KEY_TAG,
                member_tag(&[5; 32], &id, forged_peer, "127.0.0.1:7070"),
            );
        }
        let own_peer = |g: &Gossip| {
            let chitchat = g.chitchat();
            let id = id.clone();
            async move {
                let guard = chitchat.lock().await;
                let state = guard.node_state(&id).unwrap();
                (
                    state.get(KEY_PEER_ADDR).map(str::to_string),
                    state.get("pad").is_some(),
                    state.max_version(),
                )
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let forged_version = loop {
            let (peer, _, version) = own_peer(&victim).await;
            if peer.as_deref() == Some(forged_peer) {
                break version;
            }
            // chitchat does not gossip to a seed at its own advertised address: ask it to.
            lock(&forger.shared.current).handle.gossip(v_addr).unwrap();
            assert!(
                tokio::time::Instant::now() < deadline,
                "the forged entry never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let view = victim.view().await;
        assert_eq!(
            view.members[&NodeId::from("V")].peer_addr,
            Some("127.0.0.1:7100".parse().unwrap())
        );
        let (peer, pad, version) = own_peer(&victim).await;
        assert_eq!(peer.as_deref(), Some("127.0.0.1:7100"));
        assert!(!pad, "the forged extra key is deleted");
        assert!(version > forged_version);
        forger.shutdown().await;
        victim.shutdown().await;
    }

    /// A member whose entry holds more key-values than any peer publishes is not believed:
    /// it stays out of the view (logged and counted once however often the view is polled),
    /// and enters it once its entry is back within the bound.
    #[tokio::test]
    async fn a_member_over_the_entry_bound_stays_out_of_the_view() {
        let m_addr = free_addr();
        let member = Gossip::start(setup("M", m_addr, m_addr, vec![]))
            .await
            .unwrap();
        // Padded before anyone hears of it, so there is no good entry to fall back on.
        {
            let chitchat = member.chitchat();
            let mut guard = chitchat.lock().await;
            for i in 0..100 {
                guard.self_node_state().set(format!("pad{i}"), "x");
            }
        }
        let o_addr = free_addr();
        let observer = Gossip::start(setup("O", o_addr, o_addr, vec![m_addr]))
            .await
            .unwrap();
        let m_id = lock(&member.shared.current).handle.chitchat_id().clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let known = {
                let chitchat = observer.chitchat();
                let guard = chitchat.lock().await;
                guard
                    .node_state(&m_id)
                    .is_some_and(|state| state.num_key_values() >= 100)
            };
            if known {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the padded entry never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..5 {
            let view = observer.view().await;
            assert!(!view.members.contains_key(&NodeId::from("M")), "{view:?}");
        }
        let stats = observer.view_stats();
        assert_eq!(stats.members_over_bound.load(Ordering::Relaxed), 1);

        {
            let chitchat = member.chitchat();
            let mut guard = chitchat.lock().await;
            for i in 0..100 {
                guard.self_node_state().delete(&format!("pad{i}"));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !observer
            .view()
            .await
            .members
            .contains_key(&NodeId::from("M"))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the member never entered the view once within the bound"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stats.members_over_bound.load(Ordering::Relaxed), 1);
        observer.shutdown().await;
        member.shutdown().await;
    }
}
