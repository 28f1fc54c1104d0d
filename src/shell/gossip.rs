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
//! in it first), whatever chitchat has been told. A member can still make chitchat keep
//! nodes and key-values in memory, decompress what it sends, or hit chitchat's assertions; if
//! that ends the gossip task, [`Health`] is failed and `GET /health` answers 503.

use crate::core::membership::{Liveness, MembershipView};
use crate::core::types::NodeId;
use crate::shell::gossip_transport::{GossipWireStats, SealedTransport};
use crate::shell::health::Health;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

pub const KEY_PEER_ADDR: &str = "peer_addr";
pub const KEY_HTTP_ADDR: &str = "http_addr";
pub const KEY_TAG: &str = "member_tag";
/// Published by a peer that is leaving the cluster: the others take it off their rings.
pub const KEY_LEAVING: &str = "leaving";

/// The MAC a member publishes to prove it holds the cluster secret.
pub fn member_tag(
    gossip_key: &[u8; 32],
    id: &ChitchatId,
    peer_addr: &str,
    http_addr: &str,
) -> String {
    let text = format!(
        "{}\n{}\n{}\n{peer_addr}\n{http_addr}",
        id.node_id, id.generation_id, id.gossip_advertise_addr
    );
    blake3::keyed_hash(gossip_key, text.as_bytes())
        .to_hex()
        .to_string()
}

fn tag_is_valid(gossip_key: &[u8; 32], id: &ChitchatId, state: &chitchat::NodeState) -> bool {
    let (Some(peer), Some(http), Some(tag)) = (
        state.get(KEY_PEER_ADDR),
        state.get(KEY_HTTP_ADDR),
        state.get(KEY_TAG),
    ) else {
        return false;
    };
    let expected = member_tag(gossip_key, id, peer, http);
    // Compare as blake3 hashes: their equality is constant-time.
    match (
        blake3::Hash::from_hex(tag),
        blake3::Hash::from_hex(&expected),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

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
}

impl Default for GossipTiming {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            phi_threshold: 8.0,
            dead_node_grace: Duration::from_secs(24 * 3600),
            replay_window: Duration::from_secs(30),
            max_members: 256,
        }
    }
}

#[derive(Debug, Error)]
pub enum GossipError {
    #[error("starting gossip on {addr}: {reason}")]
    Start { addr: SocketAddr, reason: String },
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
    pub seeds: Vec<SocketAddr>,
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
    /// Failed if the gossip task ends before [`Gossip::shutdown`].
    pub health: Health,
}

pub struct Gossip {
    handle: ChitchatHandle,
    self_name: NodeId,
    gossip_key: [u8; 32],
    /// This peer's own key-values, as it published them.
    own: std::sync::Mutex<Vec<(String, String)>>,
    max_members: usize,
    /// The last view handed out: members whose entry stops verifying keep theirs from it, and
    /// its members are kept first when there are more than `max_members`.
    last_view: Mutex<ClusterView>,
    /// How many members were over the cap when that was last logged (0: not over).
    over_cap_logged: AtomicUsize,
    stopping: Arc<AtomicBool>,
    wire_stats: Arc<GossipWireStats>,
}

impl Gossip {
    /// Starts gossiping on `setup.listen_addr` (a concrete port), publishing this peer's
    /// addresses and membership tag.
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
        let node = &node;
        let chitchat_id = ChitchatId::new(node.as_str(), generation, advertise_addr);
        let config = ChitchatConfig {
            chitchat_id,
            cluster_id,
            gossip_interval: timing.interval,
            listen_addr,
            seed_nodes: seeds.iter().map(|s| s.to_string()).collect(),
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
        let (peer, http) = (peer_addr.to_string(), http_addr.to_string());
        let own = vec![
            (
                KEY_TAG.to_string(),
                member_tag(&gossip_key, &config.chitchat_id, &peer, &http),
            ),
            (KEY_PEER_ADDR.to_string(), peer),
            (KEY_HTTP_ADDR.to_string(), http),
        ];
        let wire_stats = Arc::new(GossipWireStats::default());
        // Senders are counted per start of a peer; a few starts per member fit.
        let transport = SealedTransport::new(
            seal_key,
            timing.replay_window,
            timing.max_members.saturating_mul(4),
            wire_stats.clone(),
        );
        let handle = chitchat::spawn_chitchat(config, own.clone(), &transport)
            .await
            .map_err(|e| GossipError::Start {
                addr: listen_addr,
                reason: format!("{e:#}"),
            })?;
        let stopping = Arc::new(AtomicBool::new(false));
        let ended = handle.termination_watcher();
        let watch_stopping = stopping.clone();
        tokio::spawn(async move {
            let outcome = ended.await;
            if !watch_stopping.load(Ordering::SeqCst) {
                let why = match outcome {
                    Ok(()) => "it returned".to_string(),
                    Err(e) => format!("{e:#}"),
                };
                health.fail(format!("the gossip task ended: {why}"));
            }
        });
        Ok(Gossip {
            handle,
            self_name: node.clone(),
            gossip_key,
            own: own.into(),
            max_members: timing.max_members.max(1),
            last_view: Mutex::new(ClusterView::default()),
            over_cap_logged: AtomicUsize::new(0),
            stopping,
            wire_stats,
        })
    }

    /// Counters of the gossip socket: datagrams accepted and refused, by reason.
    pub fn wire_stats(&self) -> &GossipWireStats {
        &self.wire_stats
    }

    /// The current view of the cluster, self included and always up. Also puts this peer's own
    /// key-values back if another member overwrote them (see the module doc).
    pub async fn view(&self) -> ClusterView {
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        self.restore_own_entry(guard.self_node_state());
        let live: Vec<ChitchatId> = guard.live_nodes().cloned().collect();
        let last = self
            .last_view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut candidates: BTreeMap<NodeId, MemberInfo> = BTreeMap::new();
        for (id, state) in guard.node_states() {
            let name = NodeId::from(id.node_id.to_string());
            let up = live.contains(id) || name == self.self_name;
            let info = if tag_is_valid(&self.gossip_key, id, state) {
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
        let view = self.capped(candidates, &last);
        *self.last_view.lock().unwrap_or_else(|e| e.into_inner()) = view.clone();
        view
    }

    /// At most `max_members` of `candidates`: this peer, then those already in `last`, then the
    /// rest in name order.
    fn capped(&self, candidates: BTreeMap<NodeId, MemberInfo>, last: &ClusterView) -> ClusterView {
        let total = candidates.len();
        if total <= self.max_members {
            self.over_cap_logged.store(0, Ordering::Relaxed);
            return ClusterView {
                members: candidates,
            };
        }
        if self.over_cap_logged.swap(total, Ordering::Relaxed) != total {
            tracing::warn!(
                members = total,
                max = self.max_members,
                "gossip knows more members than the cap: members not yet in the view are left out"
            );
        }
        cap_members(candidates, last, &self.self_name, self.max_members)
    }

    /// Puts this peer's own key-values back if another member's delta changed them, and drops
    /// keys it never published. chitchat gives the re-published value a version above the
    /// forged one, so it wins on every peer.
    /// Tells the cluster this peer is leaving (see [`KEY_LEAVING`]).
    pub async fn announce_leaving(&self) {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((KEY_LEAVING.to_string(), "1".to_string()));
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        guard.self_node_state().set(KEY_LEAVING, "1");
    }

    fn restore_own_entry(&self, state: &mut chitchat::NodeState) {
        let own = self.own.lock().unwrap_or_else(|e| e.into_inner()).clone();
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

    /// Ends the gossip task at once, as a crash inside chitchat would: the peer's [`Health`]
    /// fails. For tests of what follows such a crash.
    pub fn abort(&self) {
        self.handle.abort();
    }

    pub async fn shutdown(self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.handle.shutdown().await;
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
    fn tags_bind_the_member_to_the_secret_and_its_addresses() {
        let id = ChitchatId::new("A", 7, ([127, 0, 0, 1], 7000).into());
        let key = [1u8; 32];
        let tag = member_tag(&key, &id, "127.0.0.1:7100", "127.0.0.1:7070");
        assert_eq!(
            tag,
            member_tag(&key, &id, "127.0.0.1:7100", "127.0.0.1:7070")
        );
        assert_ne!(
            tag,
            member_tag(&[2u8; 32], &id, "127.0.0.1:7100", "127.0.0.1:7070")
        );
        assert_ne!(
            tag,
            member_tag(&key, &id, "127.0.0.1:9999", "127.0.0.1:7070")
        );
        let other = ChitchatId::new("B", 7, ([127, 0, 0, 1], 7000).into());
        assert_ne!(
            tag,
            member_tag(&key, &other, "127.0.0.1:7100", "127.0.0.1:7070")
        );
    }

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
            seeds,
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
        let id = victim.handle.chitchat_id().clone();
        let forged_peer = "127.0.0.1:9";
        forger
            .handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                for i in 0..10 {
                    state.set("pad", i);
                }
                state.set(KEY_PEER_ADDR, forged_peer);
                state.set(
                    KEY_TAG,
                    member_tag(&[5; 32], &id, forged_peer, "127.0.0.1:7070"),
                );
            })
            .await;
        let own_peer = |g: &Gossip| {
            let chitchat = g.handle.chitchat();
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
            forger.handle.gossip(v_addr).unwrap();
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
}
