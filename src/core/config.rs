//! The core's slice of the configuration: placement, quorum defaults, limits and deadlines.
//!
//! The shell builds a [`CoreConfig`] from the command line and hands it to the core by value;
//! the simulator builds one per simulated peer. Every field is plain data.

use crate::core::eviction::EvictionPolicy;
use crate::core::ring::{RingError, RingParams};
use crate::core::types::Millis;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default virtual-node tokens per peer: enough that three peers share 100,000 keys within 15%
/// of the mean and a fourth peer takes close to a quarter (see the ring tests).
pub const DEFAULT_VNODES: u32 = 512;
/// Copies of each key (N) unless configured otherwise.
pub const DEFAULT_REPLICAS: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreConfig {
    /// Replicas per key (N). Must be the same on every peer of a cluster.
    pub replicas: usize,
    /// Equal keyspace ranges; a power of two, fixed for the cluster's life.
    pub partitions: u32,
    /// Ring tokens per peer.
    pub vnodes: u32,
    /// How long a coordinated request may wait for replicas before it fails.
    pub request_timeout_ms: Millis,
    /// Largest accepted key, in bytes.
    pub max_key_bytes: usize,
    /// Largest accepted value, in bytes.
    pub max_value_bytes: usize,
    /// Longest version vector kept per key before pruning (see `VersionVector::prune`).
    pub max_clock_entries: usize,
    /// Bytes the store may hold (keys, values, versions, overhead); `None` for no limit.
    pub max_memory_bytes: Option<u64>,
    /// What the store gives up when full.
    pub eviction: EvictionPolicy,
    /// How long after every replica was seen holding the same tombstones a key's state is
    /// collected (see `docs/architecture.md`, "Tombstones"). Must exceed how long a message can
    /// stay in flight.
    pub tombstone_grace_ms: Millis,
    /// How often a peer compares its partitions' hash trees with each other replica (0 turns
    /// anti-entropy off). A peer coming back up starts a round at once, a ring change within one
    /// interval.
    pub anti_entropy_interval_ms: Millis,
    /// Anti-entropy budget per peer: states moved per second (sent and received).
    pub anti_entropy_keys_per_sec: u64,
    /// Anti-entropy budget per peer: bytes moved per second (states and key lists).
    pub anti_entropy_bytes_per_sec: u64,
    /// Client requests per second (coordinated, or answered as a replica) from which a shard
    /// counts as busy serving clients; 0: never (background work always runs at the full
    /// budget). See `node/client_load`.
    pub anti_entropy_busy_requests: u64,
    /// Share of the anti-entropy budget, in percent, that a busy shard spends, and that a
    /// transfer with a busy peer runs at (1–100; 100: background work never yields).
    pub anti_entropy_busy_percent: u64,
    /// Whether writes that do not say are sloppy (`--sloppy-quorum`): a replica believed down
    /// is stood in for by a hint holder. Off by default: quorums are strict.
    pub sloppy_quorum: bool,
    /// Hints a peer holds for one intended owner; more are refused (and counted).
    pub max_hints_per_peer: usize,
    /// Bytes of hinted states a peer holds for one intended owner; more are refused.
    pub max_hint_bytes_per_peer: u64,
    /// Hints handed to their owners per tick, over all owners: delivery is paced so a
    /// returning peer is not flooded.
    pub hint_deliveries_per_tick: usize,
    /// Most concurrent values (siblings) a key may hold after a write this peer coordinates; a
    /// blind write past it is refused (409), never a sibling dropped.
    pub max_siblings: usize,
    /// Most bytes a key's concurrent values may take in all after a write this peer
    /// coordinates; a write past it is refused (409).
    pub max_state_bytes: usize,
    /// How long an expired value's bytes are kept before active expiry reclaims them, so a
    /// read with `stale_ok` can still be answered with it (stale-while-revalidate). 0, the
    /// default, reclaims them as soon as they expire. Readers that do not ask for staleness
    /// never see such a value either way.
    #[serde(default)]
    pub stale_window_ms: Millis,
    /// How long a read waits for the R replicas it asked before asking the key's other live
    /// replicas too (the spares), in milliseconds; less than the request timeout. A read asks
    /// only as many replicas as R needs (this peer's own copy first), so a quorum read costs
    /// one round trip to one other peer instead of two. A replica that answers warming or
    /// cannot be reached, a session read the answers do not cover, or a deleted key (whose
    /// collection needs every replica's word) brings the spares in at once; a slow replica,
    /// after this delay. A replica a read did not ask is not read-repaired by it (an `r=one`
    /// read at a replica repairs nothing): anti-entropy converges it. 0 asks every live
    /// replica at once.
    #[serde(default = "default_read_spare_after_ms")]
    pub read_spare_after_ms: Millis,
    /// The keys of the SipHash that places keys in the store's index. A client that knew
    /// them could choose keys that all land in one place of the index and make every lookup
    /// of them a scan (hash flooding): the shell draws them at random when a peer starts,
    /// the simulator from its seed. Never serialized, so no status or dump shows them.
    #[serde(skip)]
    pub index_hash_keys: (u64, u64),
}

fn default_read_spare_after_ms() -> Millis {
    CoreConfig::default().read_spare_after_ms
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("request timeout must be positive")]
    NoTimeout,
    #[error("key and value limits must be positive")]
    NoLimit,
    #[error("max clock entries must be at least 2")]
    ClockTooSmall,
    #[error("a key must be allowed at least one value (max siblings and max state bytes must be positive)")]
    NoSiblingRoom,
    #[error("anti-entropy needs a positive budget (keys and bytes per second) when it is on")]
    NoAntiEntropyBudget,
    #[error("the busy share of the anti-entropy budget is a percentage from 1 to 100, not {0}")]
    BusyShare(u64),
    #[error("hint bounds and delivery pace must be positive")]
    NoHints,
    #[error("reads must ask their spare replicas ({spare_ms} ms) before the request timeout ({timeout_ms} ms)")]
    SpareDelayTooLong {
        spare_ms: Millis,
        timeout_ms: Millis,
    },
    #[error("the tombstone grace period ({grace_ms} ms) must be at least the request timeout ({timeout_ms} ms)")]
    GraceTooShort {
        grace_ms: Millis,
        timeout_ms: Millis,
    },
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            replicas: DEFAULT_REPLICAS,
            partitions: 1024,
            vnodes: DEFAULT_VNODES,
            request_timeout_ms: 2_000,
            max_key_bytes: 64 * 1024,
            max_value_bytes: 16 * 1024 * 1024,
            max_clock_entries: 64,
            max_memory_bytes: None,
            eviction: EvictionPolicy::default(),
            tombstone_grace_ms: 60_000,
            anti_entropy_interval_ms: 10_000,
            anti_entropy_keys_per_sec: 3_000,
            anti_entropy_bytes_per_sec: 32 * 1024 * 1024,
            anti_entropy_busy_requests: 100,
            anti_entropy_busy_percent: 25,
            sloppy_quorum: false,
            max_hints_per_peer: 10_000,
            max_hint_bytes_per_peer: 64 * 1024 * 1024,
            hint_deliveries_per_tick: 64,
            max_siblings: 64,
            max_state_bytes: 64 * 1024 * 1024,
            stale_window_ms: 0,
            read_spare_after_ms: 50,
            index_hash_keys: (0, 0),
        }
    }
}

impl CoreConfig {
    pub fn ring_params(&self) -> RingParams {
        RingParams {
            partitions: self.partitions,
            vnodes: self.vnodes,
            replicas: self.replicas,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.ring_params().validate()?;
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::NoTimeout);
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err(ConfigError::NoLimit);
        }
        if self.max_clock_entries < 2 {
            return Err(ConfigError::ClockTooSmall);
        }
        if self.max_siblings == 0 || self.max_state_bytes < self.max_value_bytes {
            return Err(ConfigError::NoSiblingRoom);
        }
        if self.anti_entropy_interval_ms > 0
            && (self.anti_entropy_keys_per_sec == 0 || self.anti_entropy_bytes_per_sec == 0)
        {
            return Err(ConfigError::NoAntiEntropyBudget);
        }
        if !(1..=100).contains(&self.anti_entropy_busy_percent) {
            return Err(ConfigError::BusyShare(self.anti_entropy_busy_percent));
        }
        // Spares asked at the deadline could no longer answer in time.
        if self.read_spare_after_ms >= self.request_timeout_ms {
            return Err(ConfigError::SpareDelayTooLong {
                spare_ms: self.read_spare_after_ms,
                timeout_ms: self.request_timeout_ms,
            });
        }
        // A write's replication may still be in flight up to its deadline; tombstones
        // collected sooner could let it bring the deleted value back.
        if self.tombstone_grace_ms < self.request_timeout_ms {
            return Err(ConfigError::GraceTooShort {
                grace_ms: self.tombstone_grace_ms,
                timeout_ms: self.request_timeout_ms,
            });
        }
        if self.max_hints_per_peer == 0
            || self.max_hint_bytes_per_peer == 0
            || self.hint_deliveries_per_tick == 0
        {
            return Err(ConfigError::NoHints);
        }
        Ok(())
    }

    /// How long a hint may wait for its owner before it is given up: the tombstone grace less
    /// a request timeout, so a hint taken before a delete's tombstones were seen on every
    /// replica reaches its owner before the collection's confirming read (see
    /// `node::hints`).
    pub fn hint_lifetime_ms(&self) -> Millis {
        self.tombstone_grace_ms
            .saturating_sub(self.request_timeout_ms)
    }

    /// A small, fast configuration for tests: fewer partitions and tokens, short deadlines.
    pub fn for_test() -> Self {
        Self {
            partitions: 64,
            vnodes: 64,
            request_timeout_ms: 500,
            tombstone_grace_ms: 5_000,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_test_config_are_valid() {
        CoreConfig::default().validate().unwrap();
        CoreConfig::for_test().validate().unwrap();
    }

    #[test]
    fn bad_values_are_rejected() {
        let c = CoreConfig {
            request_timeout_ms: 0,
            ..CoreConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::NoTimeout));
        let c = CoreConfig {
            partitions: 3,
            ..CoreConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Ring(_))));
        let c = CoreConfig {
            read_spare_after_ms: 2_000,
            ..CoreConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SpareDelayTooLong { .. })
        ));
        let c = CoreConfig {
            tombstone_grace_ms: 1_999,
            ..CoreConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::GraceTooShort { .. })
        ));
    }
}
