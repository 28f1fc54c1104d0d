//! The store's map from key to entry: a dense vector of entries (so eviction and expiry can
//! sample a random one in O(1) by index) and a hash index of 32-bit positions into it.
//!
//! Why not a general map: an entry is 32 bytes (its packed state and access record), and the
//! index costs 5 bytes per bucket; a standard map of owned keys to state would spend several
//! times that per key. The hash is SipHash-1-3 under keys the store's owner chooses
//! ([`IndexHasher`]): random on a real peer, so clients cannot pick keys that collide in the
//! index, and drawn from the seed under simulation, so layout and sampling are reproducible.
//!
//! Promises: lookups, inserts and removals are O(1); positions are dense (`0..len`), and
//! removing an entry moves the last one into its place (the index follows).

use super::packed;
use crate::core::eviction::AccessRecord;
use hashbrown::HashTable;
use siphasher::sip::SipHasher13;
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

/// SipHash-1-3 of a key under the two keys it was made with.
#[derive(Clone, Copy, Debug, Default)]
pub struct IndexHasher {
    keys: (u64, u64),
}

impl IndexHasher {
    pub fn new(keys: (u64, u64)) -> IndexHasher {
        IndexHasher { keys }
    }

    pub fn keys(&self) -> (u64, u64) {
        self.keys
    }

    pub fn hash(&self, key: &[u8]) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        key.hash(&mut h);
        h.finish()
    }
}

#[derive(Debug, Default)]
pub struct EntryTable {
    index: HashTable<u32>,
    slots: Vec<Slot>,
    hasher: IndexHasher,
}

impl EntryTable {
    /// An empty table hashing keys with `hasher`.
    pub fn new(hasher: IndexHasher) -> EntryTable {
        EntryTable {
            hasher,
            ..EntryTable::default()
        }
    }

    pub fn hasher(&self) -> IndexHasher {
        self.hasher
    }

    pub fn hash_key(&self, key: &[u8]) -> u64 {
        self.hasher.hash(key)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The position of `key`, if stored.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(self.hasher.hash(key), |&i| slots[i as usize].key() == key)
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
        let hasher = self.hasher;
        let hash = hasher.hash(slot.key());
        self.slots.push(slot);
        let slots = &self.slots;
        self.index.insert_unique(
            hash,
            u32::try_from(position).expect("fewer than 2^32 keys per store"),
            |&i| hasher.hash(slots[i as usize].key()),
        );
        position
    }

    /// Removes the slot at `position`; the last slot takes its place.
    pub fn swap_remove(&mut self, position: usize) -> Slot {
        let last = self.slots.len() - 1;
        let hash = self.hasher.hash(self.slots[position].key());
        if let Ok(entry) = self.index.find_entry(hash, |&i| i as usize == position) {
            entry.remove();
        }
        if position != last {
            let hash = self.hasher.hash(self.slots[last].key());
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

    /// Keys a client could find that share their low 12 bits of hash, and so one place in a
    /// small index, when the hash keys are known (here the fixed ones): under other keys they
    /// spread over the index like any keys.
    #[test]
    fn keys_colliding_under_known_hash_keys_spread_under_secret_ones() {
        let known = IndexHasher::new((0, 0));
        let secret = IndexHasher::new((0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210));
        let low = |h: u64| h & 0xFFF;
        let target = low(known.hash(b"k0"));
        let colliding: Vec<String> = (0u64..)
            .map(|i| format!("k{i}"))
            .filter(|k| low(known.hash(k.as_bytes())) == target)
            .take(64)
            .collect();
        let places: std::collections::HashSet<u64> = colliding
            .iter()
            .map(|k| low(secret.hash(k.as_bytes())))
            .collect();
        // 64 keys thrown at random into 4,096 places: a repeat or two at most, in practice.
        assert!(places.len() >= 60, "{} places", places.len());
        // And a table keyed either way finds every key.
        let mut actors = ActorTable::default();
        let mut table = EntryTable::new(secret);
        for k in &colliding {
            table.push(slot(k, &mut actors));
        }
        for k in &colliding {
            assert_eq!(
                table.get(table.find(k.as_bytes()).unwrap()).key(),
                k.as_bytes()
            );
        }
    }

    #[test]
    fn an_entry_costs_32_bytes_beside_its_packed_state() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }
}
