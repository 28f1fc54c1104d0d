//! Membership and failure detection through chitchat, over authenticated UDP.
//!
//! Each peer publishes its QUIC and HTTP addresses as chitchat key-values. A [`Gossip`] turns
//! chitchat's state (live and dead nodes, per-generation) into a [`ClusterView`]: one entry per
//! peer name, up if any generation of it is live. The driver hands the core the
//! [`MembershipView`] part and keeps the addresses for itself.
//!
//! Who may join: chitchat's UDP gossip is plaintext and its only check is the cluster id, which
//! we derive from the cluster secret, so a peer with another secret is turned away with
//! `BadCluster`. As the cluster id can be sniffed, every peer also publishes a *membership tag*:
//! a keyed BLAKE3 MAC (key derived from the secret, see [`crate::shell::auth`]) over its name,
//! generation and addresses. A member whose tag does not verify never enters the view, so it
//! never joins the ring, and it could not talk to anyone anyway: peer traffic is mutual TLS.
//! (chitchat keeps its message encoding private, so MACs cannot be put on the datagrams
//! themselves; replaying a member's own tag only repeats that member.)

use crate::core::membership::{Liveness, MembershipView};
use crate::core::types::NodeId;
use anyhow::Context;
use chitchat::transport::UdpTransport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub const KEY_PEER_ADDR: &str = "peer_addr";
pub const KEY_HTTP_ADDR: &str = "http_addr";
pub const KEY_TAG: &str = "member_tag";

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
            let liveness = if info.up {
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

/// Failure-detection timing. Defaults suit a LAN; tests shorten them.
#[derive(Clone, Debug)]
pub struct GossipTiming {
    pub interval: Duration,
    pub phi_threshold: f64,
    /// How long a dead peer stays a ring member before gossip forgets it.
    pub dead_node_grace: Duration,
}

impl Default for GossipTiming {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            phi_threshold: 8.0,
            dead_node_grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// Everything gossip needs to start.
pub struct GossipSetup {
    /// Where to gossip; a concrete port (chitchat binds it itself).
    pub listen_addr: SocketAddr,
    /// Where the others reach `listen_addr`: the same, unless it is unspecified (`0.0.0.0`).
    pub advertise_addr: SocketAddr,
    pub node: NodeId,
    /// Distinguishes this start of the peer from earlier ones (boot time in ms).
    pub generation: u64,
    pub seeds: Vec<SocketAddr>,
    pub cluster_id: String,
    pub gossip_key: [u8; 32],
    pub timing: GossipTiming,
    /// Published so others can reach this peer's QUIC endpoint and HTTP API; never
    /// unspecified (`0.0.0.0`, `::`): the server replaces such a bind with `--advertise`.
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

pub struct Gossip {
    handle: ChitchatHandle,
    self_name: NodeId,
    gossip_key: [u8; 32],
}

impl Gossip {
    /// Starts gossiping on `setup.listen_addr` (a concrete port), publishing this peer's
    /// addresses and membership tag.
    pub async fn start(setup: GossipSetup) -> anyhow::Result<Gossip> {
        let GossipSetup {
            listen_addr,
            advertise_addr,
            node,
            generation,
            seeds,
            cluster_id,
            gossip_key,
            timing,
            peer_addr,
            http_addr,
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
        let key_values = vec![
            (
                KEY_TAG.to_string(),
                member_tag(&gossip_key, &config.chitchat_id, &peer, &http),
            ),
            (KEY_PEER_ADDR.to_string(), peer),
            (KEY_HTTP_ADDR.to_string(), http),
        ];
        let handle = chitchat::spawn_chitchat(config, key_values, &UdpTransport)
            .await
            .with_context(|| format!("starting gossip on {listen_addr}"))?;
        Ok(Gossip {
            handle,
            self_name: node.clone(),
            gossip_key,
        })
    }

    /// The current view of the cluster, self included and always up.
    pub async fn view(&self) -> ClusterView {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let live: Vec<ChitchatId> = guard.live_nodes().cloned().collect();
        let mut view = ClusterView::default();
        for (id, state) in guard.node_states() {
            let name = NodeId::from(id.node_id.to_string());
            if !tag_is_valid(&self.gossip_key, id, state) {
                tracing::debug!(?id, "gossip member without a valid membership tag ignored");
                continue;
            }
            let up = live.contains(id) || name == self.self_name;
            let info = MemberInfo {
                up,
                generation: id.generation_id,
                gossip_addr: id.gossip_advertise_addr,
                peer_addr: state.get(KEY_PEER_ADDR).and_then(|a| a.parse().ok()),
                http_addr: state.get(KEY_HTTP_ADDR).and_then(|a| a.parse().ok()),
            };
            // Several generations of one name: the live one wins, then the newest.
            let replace = match view.members.get(&name) {
                None => true,
                Some(old) => (info.up, info.generation) > (old.up, old.generation),
            };
            if replace {
                view.members.insert(name, info);
            }
        }
        view
    }

    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }
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
}
