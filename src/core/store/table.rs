//! The store's map from key to entry: a dense vector of entries (so eviction and expiry can
//! sample a random one in O(1) by index) and a hash index of 32-bit positions into it.
//!
//! Why not a general map: an entry is 32 bytes (its packed state and access record), and the
//! index costs 5 bytes per bucket; a standard map of owned keys to state would spend several
//! times that per key. The hash is SipHash with fixed keys, so layout and sampling are
//! reproducible under simulation.
//!
//! Promises: lookups, inserts and removals are O(1); positions are dense (`0..len`), and
//! removing an entry moves the last one into its place (the index follows).

use super::packed;
use crate::core::eviction::AccessRecord;
use hashbrown::HashTable;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// One stored key: its packed key and state, and what the eviction policies know of it.
#[derive(Debug)]
pub struct Slot {
    pub packed: Box<[u8]>,
    pub access: AccessRecord,
}

impl Slot {
    pub fn key(&self) -> &[u8] {
        packed::key(&self.packed)
    }
}

#[derive(Debug, Default)]
pub struct EntryTable {
    index: HashTable<u32>,
    slots: Vec<Slot>,
}

pub fn hash_key(key: &[u8]) -> u64 {
    let mut h = DefaultHasher::default();
    key.hash(&mut h);
    h.finish()
}

impl EntryTable {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The position of `key`, if stored.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash_key(key), |&i| slots[i as usize].key() == key)
            .map(|&i| i as usize)
    }

    pub fn get(&self, position: usize) -> &Slot {
        &self.slots[position]
    }

    pub fn get_mut(&mut self, position: usize) -> &mut Slot {
        &mut self.slots[position]
    }

    /// Adds a slot whose key is not stored yet; returns its position.
    pub fn push(&mut self, slot: Slot) -> usize {
        debug_assert!(self.find(slot.key()).is_none(), "key already stored");
        let position = self.slots.len();
        let hash = hash_key(slot.key());
        self.slots.push(slot);
        let slots = &self.slots;
        self.index.insert_unique(
            hash,
            u32::try_from(position).expect("fewer than 2^32 keys per store"),
            |&i| hash_key(slots[i as usize].key()),
        );
        position
    }

    /// Removes the slot at `position`; the last slot takes its place.
    pub fn swap_remove(&mut self, position: usize) -> Slot {
        let last = self.slots.len() - 1;
        let hash = hash_key(self.slots[position].key());
        if let Ok(entry) = self.index.find_entry(hash, |&i| i as usize == position) {
            entry.remove();
        }
        if position != last {
            let hash = hash_key(self.slots[last].key());
            if let Some(i) = self.index.find_mut(hash, |&i| i as usize == last) {
                *i = position as u32;
            }
        }
        self.slots.swap_remove(position)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::siblings::Siblings;
    use crate::core::store::actors::ActorTable;

    fn slot(key: &str, actors: &mut ActorTable) -> Slot {
        let mut buf = Vec::new();
        packed::encode_into(&mut buf, key.as_bytes(), 0, &Siblings::new(), actors);
        Slot {
            packed: buf.into(),
            access: AccessRecord::new(0, 0),
        }
    }

    #[test]
    fn positions_stay_dense_and_findable_through_removals() {
        let mut actors = ActorTable::default();
        let mut table = EntryTable::default();
        for i in 0..1_000 {
            table.push(slot(&format!("k{i}"), &mut actors));
        }
        // Remove every third key, from the front, so last slots keep moving into holes.
        for i in (0..1_000).step_by(3) {
            let key = format!("k{i}");
            let at = table.find(key.as_bytes()).unwrap();
            assert_eq!(table.swap_remove(at).key(), key.as_bytes());
        }
        assert_eq!(table.len(), 1_000 - 334);
        for i in 0..1_000 {
            let key = format!("k{i}");
            match table.find(key.as_bytes()) {
                Some(at) => {
                    assert!(i % 3 != 0);
                    assert_eq!(table.get(at).key(), key.as_bytes());
                }
                None => assert_eq!(i % 3, 0),
            }
        }
    }

    #[test]
    fn an_entry_costs_32_bytes_beside_its_packed_state() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }
}
