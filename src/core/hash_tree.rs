//! Hash trees over a store's key states, one per partition, for anti-entropy.
//!
//! Why this shape (after Riak 3.0's "Tictac" trees): every key state has a 64-bit digest
//! ([`state_digest`]), and a tree node's hash is the XOR of the digests of the keys below it.
//! XOR makes an update O(1) — take the old digest out, put the new one in — and makes a node's
//! hash independent of the order keys arrived in, so two replicas holding the same states have
//! the same trees whatever their histories, and no tree is ever rebuilt or rescanned.
//!
//! Layout: a key's 64-bit ring position (see [`crate::core::ring::key_position`]) names its
//! partition (the top bits) and, within the partition, one of [`LEAVES`] leaves (the next 8
//! bits); leaves are grouped [`FANOUT`] to a branch, branches into the partition's root. Only
//! leaves are stored; branches and roots are XORs of them, computed on demand.
//!
//! What a digest covers: the key, the state's causal context and the dots of its siblings —
//! not the payloads. Two replicas hold the same versions of a key exactly when these agree,
//! and active expiry (which turns an expired value into a tombstone under the same dot) leaves
//! the digest unchanged, so clock skew between replicas cannot make their trees differ.

use crate::core::ring::PartitionId;
use crate::core::siblings::Siblings;
use std::collections::BTreeMap;

/// Leaves per branch, and branches per partition.
pub const FANOUT: usize = 16;
/// Leaves per partition: a partition of a million-key, 1,024-partition store has about 4 keys
/// a leaf, so a difference costs one leaf's short key list (18 bytes a key) to locate.
pub const LEAVES: usize = FANOUT * FANOUT;
const LEAF_BITS: u32 = 8;

/// The 64-bit digest of one key's state (see the module comment for what it covers).
pub fn state_digest(key: &[u8], state: &Siblings) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    let clock = state.context();
    hasher.update(&(clock.len() as u64).to_le_bytes());
    for (actor, counter) in clock.iter() {
        hasher.update(&(actor.0.len() as u64).to_le_bytes());
        hasher.update(actor.0.as_bytes());
        hasher.update(&counter.to_le_bytes());
    }
    for (dot, _) in state.versions() {
        hasher.update(&(dot.actor.0.len() as u64).to_le_bytes());
        hasher.update(dot.actor.0.as_bytes());
        hasher.update(&dot.counter.to_le_bytes());
    }
    let bytes = hasher.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 of 32 bytes"))
}

/// Where a ring position falls: its partition and its leaf within the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub partition: PartitionId,
    pub leaf: u8,
}

/// The leaves of every partition a store holds keys of.
#[derive(Clone, Debug)]
pub struct HashTrees {
    partition_bits: u32,
    /// Per partition: its leaves' hashes and how many keys it holds (a tree with none is
    /// dropped, so an empty partition costs nothing).
    trees: BTreeMap<PartitionId, (Box<[u64; LEAVES]>, u64)>,
}

impl HashTrees {
    /// Trees for a ring of `partitions` (a power of two, as the ring requires).
    pub fn new(partitions: u32) -> HashTrees {
        HashTrees {
            partition_bits: partitions.max(1).trailing_zeros(),
            trees: BTreeMap::new(),
        }
    }

    pub fn partitions(&self) -> u32 {
        1 << self.partition_bits
    }

    /// The partition and leaf of a ring position.
    pub fn place(&self, position: u64) -> Placement {
        let partition = if self.partition_bits == 0 {
            0
        } else {
            (position >> (64 - self.partition_bits)) as PartitionId
        };
        let leaf = ((position << self.partition_bits) >> (64 - LEAF_BITS)) as u8;
        Placement { partition, leaf }
    }

    /// The ring positions (inclusive) a leaf of a partition covers.
    pub fn leaf_range(&self, partition: PartitionId, leaf: u8) -> (u64, u64) {
        let shift = 64 - self.partition_bits - LEAF_BITS;
        let start = ((partition as u64) << LEAF_BITS | leaf as u64) << shift;
        let width = if shift == 64 { u64::MAX } else { 1u64 << shift };
        (start, start.wrapping_add(width).wrapping_sub(1))
    }

    /// Adds a key state's digest at `position` (a key that arrives).
    pub fn insert(&mut self, position: u64, digest: u64) {
        let Placement { partition, leaf } = self.place(position);
        let (leaves, keys) = self
            .trees
            .entry(partition)
            .or_insert_with(|| (Box::new([0; LEAVES]), 0));
        leaves[leaf as usize] ^= digest;
        *keys += 1;
    }

    /// Takes a key state's digest out (a key that leaves).
    pub fn remove(&mut self, position: u64, digest: u64) {
        let Placement { partition, leaf } = self.place(position);
        if let Some((leaves, keys)) = self.trees.get_mut(&partition) {
            leaves[leaf as usize] ^= digest;
            *keys -= 1;
            if *keys == 0 {
                self.trees.remove(&partition);
            }
        }
    }

    /// Replaces a key's digest (a key whose state changed).
    pub fn replace(&mut self, position: u64, old: u64, new: u64) {
        if old == new {
            return;
        }
        let Placement { partition, leaf } = self.place(position);
        if let Some((leaves, _)) = self.trees.get_mut(&partition) {
            leaves[leaf as usize] ^= old ^ new;
        }
    }

    /// A partition's root: 0 when it holds no key.
    pub fn root(&self, partition: PartitionId) -> u64 {
        self.branches(partition).iter().fold(0, |a, b| a ^ b)
    }

    /// Keys held in a partition.
    pub fn keys_in(&self, partition: PartitionId) -> u64 {
        self.trees.get(&partition).map_or(0, |(_, keys)| *keys)
    }

    /// A partition's branch hashes.
    pub fn branches(&self, partition: PartitionId) -> [u64; FANOUT] {
        let mut branches = [0; FANOUT];
        if let Some((leaves, _)) = self.trees.get(&partition) {
            for (i, leaf) in leaves.iter().enumerate() {
                branches[i / FANOUT] ^= leaf;
            }
        }
        branches
    }

    /// The leaf hashes of one branch of a partition.
    pub fn leaves(&self, partition: PartitionId, branch: usize) -> [u64; FANOUT] {
        let mut out = [0; FANOUT];
        if let Some((leaves, _)) = self.trees.get(&partition) {
            out.copy_from_slice(&leaves[branch * FANOUT..(branch + 1) * FANOUT]);
        }
        out
    }

    /// Partitions holding at least one key.
    pub fn partitions_held(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.trees.keys().copied()
    }

    /// Bytes one partition's tree takes: its leaf array, its count and its share of the map.
    pub const TREE_BYTES: u64 = LEAVES as u64 * 8 + 48;

    /// Bytes the trees take (a fixed cost per partition held, outside the store's limit).
    pub fn heap_bytes(&self) -> u64 {
        self.trees.len() as u64 * Self::TREE_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ring::key_position;
    use crate::core::siblings::Payload;
    use crate::core::version_vector::Actor;
    use proptest::prelude::*;

    fn state(actor: &str, writes: u64, value: &[u8]) -> Siblings {
        let mut s = Siblings::new();
        for _ in 0..writes {
            let ctx = s.context().clone();
            s.update(
                &Actor(actor.into()),
                &ctx,
                Payload::Value {
                    data: value.to_vec(),
                    expires_at_ms: Some(100),
                },
                16,
            );
        }
        s
    }

    #[test]
    fn digests_ignore_payloads_but_not_versions() {
        let a = state("A.1", 2, b"x");
        let mut expired = a.clone();
        expired.expire(1_000);
        assert_ne!(a, expired, "expiry turned the value into a tombstone");
        assert_eq!(state_digest(b"k", &a), state_digest(b"k", &expired));
        assert_ne!(
            state_digest(b"k", &a),
            state_digest(b"k", &state("A.1", 3, b"x"))
        );
        assert_ne!(state_digest(b"k", &a), state_digest(b"j", &a));
    }

    #[test]
    fn leaf_ranges_cover_exactly_their_positions() {
        for partitions in [1u32, 2, 64, 1024] {
            let trees = HashTrees::new(partitions);
            for key in 0..200u32 {
                let position = key_position(&key.to_le_bytes());
                let Placement { partition, leaf } = trees.place(position);
                let (start, end) = trees.leaf_range(partition, leaf);
                assert!(start <= position && position <= end, "{partitions}");
                if leaf > 0 {
                    assert!(trees.leaf_range(partition, leaf - 1).1 < start);
                }
            }
        }
    }

    proptest! {
        /// The trees depend on the set of (key, digest) pairs only, not on the order of the
        /// changes that led to it: equal stores have equal roots.
        #[test]
        fn roots_are_order_independent(
            keys in proptest::collection::btree_map(any::<u16>(), any::<u64>(), 0..60),
            churn in proptest::collection::vec((any::<u16>(), any::<u64>()), 0..40),
        ) {
            let mut direct = HashTrees::new(8);
            for (k, d) in &keys {
                direct.insert(key_position(&k.to_le_bytes()), *d);
            }
            // Another history: insert churn keys first, then the real ones, change churn
            // digests, then remove churn keys that are not real keys.
            let mut winding = HashTrees::new(8);
            let mut current: BTreeMap<u16, u64> = BTreeMap::new();
            for (k, d) in churn.iter().rev() {
                let p = key_position(&k.to_le_bytes());
                match current.get(k) {
                    Some(old) => winding.replace(p, *old, *d),
                    None => winding.insert(p, *d),
                }
                current.insert(*k, *d);
            }
            for (k, d) in &keys {
                let p = key_position(&k.to_le_bytes());
                match current.get(k) {
                    Some(old) => winding.replace(p, *old, *d),
                    None => winding.insert(p, *d),
                }
                current.insert(*k, *d);
            }
            for (k, d) in current.clone() {
                if !keys.contains_key(&k) {
                    winding.remove(key_position(&k.to_le_bytes()), d);
                }
            }
            for p in 0..8 {
                prop_assert_eq!(direct.root(p), winding.root(p));
                prop_assert_eq!(direct.branches(p), winding.branches(p));
                prop_assert_eq!(direct.keys_in(p), winding.keys_in(p));
            }
        }
    }
}
