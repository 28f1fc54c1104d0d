//! One peer's whole configuration, made of per-area parts.
//!
//! `main` builds a [`PeerConfig`] from the command line; tests build one with
//! [`PeerConfig::for_test`]. Each component receives only its own part, by value.

use crate::core::config::CoreConfig;
use crate::core::types::NodeId;
use crate::shell::auth::ClusterSecret;
use crate::shell::gossip::GossipTiming;
use std::net::SocketAddr;

#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// This peer's name, unique in the cluster and kept across restarts.
    pub id: NodeId,
    /// UDP address for gossip (port 0 picks a free one).
    pub gossip_addr: SocketAddr,
    /// UDP address for QUIC peer traffic (port 0 picks a free one).
    pub peer_addr: SocketAddr,
    /// TCP address for the HTTP API (port 0 picks a free one).
    pub http_addr: SocketAddr,
    /// Gossip addresses of peers to join through; empty for the first peer.
    pub seeds: Vec<SocketAddr>,
    /// Shared by every peer of the cluster; authenticates gossip and QUIC.
    pub secret: ClusterSecret,
    /// Placement, quorum and limit settings of the protocol core.
    pub core: CoreConfig,
    /// Gossip and failure-detection timing.
    pub gossip: GossipTiming,
    /// Engine shards (one driver task each); the keyspace is dealt to them by partition.
    pub shards: u32,
}

/// One shard per available core.
pub fn default_shards() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .clamp(1, 64)
}

impl PeerConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.id.as_str().is_empty(),
            "the peer id must not be empty"
        );
        self.core.validate()?;
        Ok(())
    }

    /// Loopback, free ports, fast gossip and the small core test configuration.
    pub fn for_test(id: &str, secret: &str, seeds: Vec<SocketAddr>) -> Self {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self {
            id: NodeId::from(id),
            gossip_addr: loopback,
            peer_addr: loopback,
            http_addr: loopback,
            seeds,
            secret: ClusterSecret::new(secret).expect("test secrets are long enough"),
            core: CoreConfig::for_test(),
            gossip: GossipTiming {
                interval: std::time::Duration::from_millis(100),
                ..GossipTiming::default()
            },
            shards: 2,
        }
    }
}
