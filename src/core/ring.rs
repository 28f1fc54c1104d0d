//! Consistent-hash placement: which peers hold a key.
//!
//! The keyspace is the 64-bit prefix of a key's SHA-1 digest, cut into `partitions` equal
//! ranges (a power of two, fixed for the cluster's life). Each peer owns `vnodes` tokens on the
//! same circle, placed by hashing `"{peer}#{i}"`. A partition's preference list is the first
//! `n` *distinct* peers met walking clockwise from the partition's start.
//!
//! Promises:
//! - The ring is a pure function of (member set, partitions, vnodes, n): peers that agree on
//!   membership agree on placement. Members are held in a `BTreeSet`, tokens are sorted, and ties
//!   between equal tokens break by peer name.
//! - Adding a peer only moves the partitions whose walk now meets the newcomer's tokens first;
//!   balance and movement figures are tested below.
//! - Placement per partition (not per key) keeps state partitioned, so later work can split
//!   partitions between CPU shards and hand whole partitions over on membership change.

use crate::core::types::NodeId;
use sha1::{Digest, Sha1};
use std::collections::BTreeSet;
use thiserror::Error;

/// Index of one of the ring's equal keyspace ranges.
pub type PartitionId = u32;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RingError {
    #[error("partition count must be a power of two between 1 and 2^20, got {0}")]
    BadPartitionCount(u32),
    #[error("virtual nodes per peer must be at least 1")]
    NoVirtualNodes,
    #[error("replication factor must be at least 1")]
    NoReplicas,
}

/// Placement parameters that every peer of a cluster must share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingParams {
    pub partitions: u32,
    pub vnodes: u32,
    pub replicas: usize,
}

impl RingParams {
    pub fn validate(&self) -> Result<(), RingError> {
        if !self.partitions.is_power_of_two() || self.partitions > (1 << 20) {
            return Err(RingError::BadPartitionCount(self.partitions));
        }
        if self.vnodes == 0 {
            return Err(RingError::NoVirtualNodes);
        }
        if self.replicas == 0 {
            return Err(RingError::NoReplicas);
        }
        Ok(())
    }
}

/// The 64-bit ring position of a key: the first eight bytes of its SHA-1 digest.
pub fn key_position(key: &[u8]) -> u64 {
    let digest = Sha1::digest(key);
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-1 digests are 20 bytes"))
}

/// Preference lists for every partition, computed once per membership.
#[derive(Clone, Debug)]
pub struct Ring {
    params: RingParams,
    members: BTreeSet<NodeId>,
    /// `preference[p]` is partition `p`'s preference list, at most `replicas` distinct peers.
    preference: Vec<Vec<NodeId>>,
    /// Every token in ring order, as (position, index into `members` in order), kept to walk
    /// past a preference list (see [`Ring::fallbacks`]).
    tokens: Vec<(u64, u32)>,
}

impl Ring {
    pub fn new(params: RingParams, members: BTreeSet<NodeId>) -> Result<Ring, RingError> {
        params.validate()?;
        let mut tokens: Vec<(u64, &NodeId)> =
            Vec::with_capacity(members.len() * params.vnodes as usize);
        for member in &members {
            for i in 0..params.vnodes {
                tokens.push((key_position(format!("{member}#{i}").as_bytes()), member));
            }
        }
        tokens.sort();
        let wanted = params.replicas.min(members.len());
        let width = partition_width(params.partitions);
        let mut preference = Vec::with_capacity(params.partitions as usize);
        for p in 0..params.partitions {
            let start = u64::from(p).wrapping_mul(width);
            let first = tokens.partition_point(|(t, _)| *t < start);
            let mut list: Vec<NodeId> = Vec::with_capacity(wanted);
            for step in 0..tokens.len() {
                if list.len() == wanted {
                    break;
                }
                let (_, node) = tokens[(first + step) % tokens.len()];
                if !list.contains(node) {
                    list.push(node.clone());
                }
            }
            preference.push(list);
        }
        let index: std::collections::BTreeMap<&NodeId, u32> = members.iter().zip(0u32..).collect();
        let tokens = tokens.iter().map(|(t, m)| (*t, index[m])).collect();
        Ok(Ring {
            params,
            members,
            preference,
            tokens,
        })
    }

    pub fn params(&self) -> RingParams {
        self.params
    }

    pub fn members(&self) -> &BTreeSet<NodeId> {
        &self.members
    }

    /// The partition a key falls in: the top bits of its ring position.
    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        partition_of_position(key_position(key), self.params.partitions)
    }

    /// The peers that hold `partition`, coordinator-preferred first.
    pub fn preference_list(&self, partition: PartitionId) -> &[NodeId] {
        &self.preference[partition as usize]
    }

    /// The peers that hold `key`.
    pub fn replicas_of(&self, key: &[u8]) -> &[NodeId] {
        self.preference_list(self.partition_of(key))
    }

    /// The peers met walking clockwise past `partition`'s preference list, each once, in the
    /// order met: where a sloppy write places the replicas the preference list cannot take
    /// (see `node/hints.rs`). The walk is lazy; it never yields a preference-list peer.
    pub fn fallbacks(&self, partition: PartitionId) -> impl Iterator<Item = &NodeId> + '_ {
        let members: Vec<&NodeId> = self.members.iter().collect();
        let preference = self.preference_list(partition);
        let start = u64::from(partition).wrapping_mul(partition_width(self.params.partitions));
        let first = self.tokens.partition_point(|(t, _)| *t < start);
        let count = self.tokens.len();
        let mut seen = vec![false; members.len()];
        (0..count).filter_map(move |step| {
            let (_, m) = self.tokens[(first + step) % count];
            let node = members[m as usize];
            if seen[m as usize] || preference.contains(node) {
                return None;
            }
            seen[m as usize] = true;
            Some(node)
        })
    }

    /// How many partitions each member holds as first replica, and as any replica.
    pub fn ownership(&self) -> Vec<(NodeId, u32, u32)> {
        self.members
            .iter()
            .map(|m| {
                let primary = self
                    .preference
                    .iter()
                    .filter(|l| l.first() == Some(m))
                    .count();
                let any = self.preference.iter().filter(|l| l.contains(m)).count();
                (m.clone(), primary as u32, any as u32)
            })
            .collect()
    }
}

fn partition_width(partitions: u32) -> u64 {
    if partitions == 1 {
        0
    } else {
        1u64 << (64 - partitions.trailing_zeros())
    }
}

/// The engine shard (of `shards` on one peer) that owns `key`: partitions are dealt to shards
/// round-robin, so a partition belongs to exactly one shard.
pub fn shard_of_key(key: &[u8], partitions: u32, shards: u32) -> u32 {
    partition_of_position(key_position(key), partitions) % shards.max(1)
}

fn partition_of_position(position: u64, partitions: u32) -> PartitionId {
    if partitions == 1 {
        0
    } else {
        (position >> (64 - partitions.trailing_zeros())) as PartitionId
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn members(names: &[&str]) -> BTreeSet<NodeId> {
        names.iter().map(|n| NodeId::from(*n)).collect()
    }

    fn params(n: usize) -> RingParams {
        RingParams {
            partitions: 1024,
            vnodes: crate::core::config::DEFAULT_VNODES,
            replicas: n,
        }
    }

    fn primary_counts(ring: &Ring, keys: &[Vec<u8>]) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for k in keys {
            *counts.entry(ring.replicas_of(k)[0].clone()).or_insert(0) += 1;
        }
        counts
    }

    fn keys(count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| format!("key-{i}").into_bytes())
            .collect()
    }

    #[test]
    fn three_peers_share_100k_keys_within_15_percent_of_the_mean() {
        let ring = Ring::new(params(3), members(&["A", "B", "C"])).unwrap();
        let keys = keys(100_000);
        let counts = primary_counts(&ring, &keys);
        let mean = keys.len() as f64 / 3.0;
        let max = *counts.values().max().unwrap() as f64;
        assert_eq!(counts.len(), 3);
        println!("ring balance: most loaded / mean = {:.3}", max / mean);
        assert!(
            max <= 1.15 * mean,
            "most loaded {max} vs mean {mean}: {counts:?}"
        );
    }

    #[test]
    fn adding_a_fourth_peer_moves_about_a_quarter_of_the_keys() {
        let before = Ring::new(params(3), members(&["A", "B", "C"])).unwrap();
        let after = Ring::new(params(3), members(&["A", "B", "C", "D"])).unwrap();
        let keys = keys(100_000);
        let moved = keys
            .iter()
            .filter(|k| before.replicas_of(k)[0] != after.replicas_of(k)[0])
            .count();
        let ideal = keys.len() as f64 / 4.0;
        println!(
            "ring movement: {moved} keys moved = {:.3} x ideal",
            moved as f64 / ideal
        );
        assert!(moved as f64 <= 1.1 * ideal, "moved {moved}, ideal {ideal}");
        // Every moved key moved to the newcomer, never between old peers.
        for k in &keys {
            let (b, a) = (&before.replicas_of(k)[0], &after.replicas_of(k)[0]);
            assert!(a == b || a.as_str() == "D");
        }
    }

    #[test]
    fn preference_lists_hold_n_distinct_peers() {
        let ring = Ring::new(params(3), members(&["A", "B", "C", "D", "E"])).unwrap();
        for p in 0..1024 {
            let list = ring.preference_list(p);
            assert_eq!(list.len(), 3);
            let distinct: BTreeSet<_> = list.iter().collect();
            assert_eq!(distinct.len(), 3);
        }
    }

    #[test]
    fn fewer_members_than_n_gives_every_member() {
        let ring = Ring::new(params(3), members(&["A", "B"])).unwrap();
        assert_eq!(ring.replicas_of(b"k").len(), 2);
        let empty = Ring::new(params(3), BTreeSet::new()).unwrap();
        assert!(empty.replicas_of(b"k").is_empty());
    }

    #[test]
    fn placement_is_a_pure_function_of_membership() {
        let a = Ring::new(params(3), members(&["C", "A", "B"])).unwrap();
        let b = Ring::new(params(3), members(&["A", "B", "C"])).unwrap();
        for p in 0..1024 {
            assert_eq!(a.preference_list(p), b.preference_list(p));
        }
    }

    #[test]
    fn fallbacks_continue_the_walk_past_the_preference_list() {
        let ring = Ring::new(params(3), members(&["A", "B", "C", "D", "E"])).unwrap();
        for p in 0..1024 {
            let list = ring.preference_list(p);
            let rest: Vec<&NodeId> = ring.fallbacks(p).collect();
            assert_eq!(rest.len(), 2, "every other member, once");
            assert!(rest.iter().all(|n| !list.contains(n)));
            assert_ne!(rest[0], rest[1]);
        }
        // With a larger N, the walk's first peers are the smaller list's fallbacks.
        let wide = Ring::new(params(5), members(&["A", "B", "C", "D", "E"])).unwrap();
        for p in 0..1024 {
            let rest: Vec<&NodeId> = ring.fallbacks(p).collect();
            assert_eq!(
                &wide.preference_list(p)[3..],
                &[rest[0].clone(), rest[1].clone()]
            );
        }
        let three = Ring::new(params(3), members(&["A", "B", "C"])).unwrap();
        assert_eq!(three.fallbacks(0).count(), 0);
    }

    #[test]
    fn partitions_must_be_a_power_of_two() {
        let bad = RingParams {
            partitions: 1000,
            ..params(3)
        };
        assert_eq!(
            Ring::new(bad, members(&["A"])).unwrap_err(),
            RingError::BadPartitionCount(1000)
        );
    }

    #[test]
    fn partition_of_uses_the_top_bits() {
        assert_eq!(partition_of_position(0, 1024), 0);
        assert_eq!(partition_of_position(u64::MAX, 1024), 1023);
        assert_eq!(partition_of_position(1 << 54, 1024), 1);
        assert_eq!(partition_of_position(12345, 1), 0);
    }
}
