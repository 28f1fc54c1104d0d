//! In-memory storage of per-key versioned state, split by ring partition.
//!
//! The store knows nothing of quorums or peers: it applies coordinator updates and merges
//! replicated state, one key at a time. State is held per partition so that a later shell can
//! give each CPU shard its own partitions, and hand whole partitions to other peers.
//!
//! Promises: `merge` is the join of [`Siblings`], so replaying or reordering replicated states
//! cannot lose a write; lookups never iterate, so the `HashMap` order never reaches an output
//! (it uses a fixed hasher so even memory layout is reproducible under simulation).

use crate::core::ring::PartitionId;
use crate::core::siblings::{Payload, Siblings};
use crate::core::version_vector::{Actor, VersionVector};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

type KeyMap = HashMap<Vec<u8>, Siblings, BuildHasherDefault<DefaultHasher>>;

#[derive(Debug)]
pub struct Store {
    partitions: Vec<KeyMap>,
    max_clock_entries: usize,
}

impl Store {
    pub fn new(partitions: u32, max_clock_entries: usize) -> Self {
        Self {
            partitions: (0..partitions).map(|_| KeyMap::default()).collect(),
            max_clock_entries,
        }
    }

    pub fn get(&self, partition: PartitionId, key: &[u8]) -> Option<&Siblings> {
        self.partitions[partition as usize].get(key)
    }

    /// Applies a client write coordinated by `actor`; returns the key's new state.
    pub fn update(
        &mut self,
        partition: PartitionId,
        key: &[u8],
        actor: &Actor,
        context: &VersionVector,
        payload: Payload,
    ) -> Siblings {
        let state = self.partitions[partition as usize]
            .entry(key.to_vec())
            .or_default();
        state.update(actor, context, payload, self.max_clock_entries);
        state.clone()
    }

    /// Joins a state replicated from another peer into the local one.
    pub fn merge(&mut self, partition: PartitionId, key: &[u8], incoming: &Siblings) {
        match self.partitions[partition as usize].get_mut(key) {
            Some(state) => state.merge(incoming),
            None => {
                self.partitions[partition as usize].insert(key.to_vec(), incoming.clone());
            }
        }
    }

    /// Planted bug: overwrites the local state with a replicated one (last arrival wins).
    #[cfg(feature = "planted-bugs")]
    pub fn replace(&mut self, partition: PartitionId, key: &[u8], state: Siblings) {
        self.partitions[partition as usize].insert(key.to_vec(), state);
    }

    /// Planted bug: forgets every sibling of `key` but the one with the greatest dot.
    #[cfg(feature = "planted-bugs")]
    pub fn keep_only_newest_sibling(&mut self, partition: PartitionId, key: &[u8]) {
        if let Some(state) = self.partitions[partition as usize].get_mut(key) {
            state.keep_only_newest();
        }
    }

    /// Every key held, in no particular order (the simulator's final inspection).
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Siblings)> {
        self.partitions.iter().flat_map(|p| p.iter())
    }

    /// Number of keys held (including tombstoned ones).
    pub fn len(&self) -> usize {
        self.partitions.iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Payload {
        Payload::Value {
            data: s.as_bytes().to_vec(),
            expires_at_ms: None,
        }
    }

    #[test]
    fn update_then_merge_of_a_stale_state_keeps_the_newer_value() {
        let mut store = Store::new(4, 16);
        let a = Actor("A".into());
        let first = store.update(1, b"k", &a, &VersionVector::new(), value("v1"));
        store.update(1, b"k", &a, first.context(), value("v2"));
        store.merge(1, b"k", &first);
        let now = store.get(1, b"k").unwrap();
        assert_eq!(now.visible_values(0), vec![&value("v2")]);
        assert_eq!(store.len(), 1);
        assert!(store.get(0, b"k").is_none(), "partitions are separate");
    }

    #[test]
    fn merge_into_an_empty_store_adopts_the_state() {
        let mut a = Store::new(1, 16);
        let mut b = Store::new(1, 16);
        let s = a.update(
            0,
            b"k",
            &Actor("A".into()),
            &VersionVector::new(),
            value("x"),
        );
        b.merge(0, b"k", &s);
        assert_eq!(b.get(0, b"k"), Some(&s));
    }
}
