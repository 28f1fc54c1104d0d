//! Actor names interned as small numbers, so a stored entry refers to a coordinator in a byte
//! or two instead of carrying its name (`"A.1764000000000"`) in every clock entry and dot.
//!
//! Promises: an id names one actor for as long as some stored entry refers to it. Every id an
//! entry takes with [`ActorTable::acquire`] is given back with [`ActorTable::release`] when
//! the entry goes; an actor no entry refers to any more is dropped and its id reused, so the
//! table holds only the actors the store's entries name (incarnations and dot-minting epochs
//! come and go without the table growing for ever).
//! - [`ActorTable::release`] never allocates, so giving references back (an eviction, a
//!   replaced entry) never raises [`ActorTable::heap_bytes`]: the free list always has room
//!   for every id (`free.capacity() >= names.capacity()`).
//! - [`ActorTable::compact`] gives back capacity that acquiring and releasing actors left
//!   behind: after a refused write's actors are released, it brings `heap_bytes` back to at
//!   most what it was before they were acquired, so a refused write leaves the store no larger.

use crate::core::version_vector::Actor;
use hashbrown::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

#[derive(Debug, Default)]
pub struct ActorTable {
    /// By id: the actor and how many references stored entries hold to it (`None`: free id).
    names: Vec<Option<(Actor, u64)>>,
    /// Measured by its allocation, not `capacity()`: a hash map's `capacity()` is its items
    /// plus the inserts left before it must grow, which removals can lower (a removed item
    /// may leave a tombstone) and a rehash or `shrink_to_fit` raises again without the
    /// allocation changing, so it cannot bound what the table holds.
    ids: HashMap<Actor, u32, BuildHasherDefault<DefaultHasher>>,
    free: Vec<u32>,
    /// Total length of the names held.
    name_bytes: usize,
}

impl ActorTable {
    /// The id of `actor`, counting one more reference to it.
    pub fn acquire(&mut self, actor: &Actor) -> u32 {
        if let Some(&id) = self.ids.get(actor) {
            if let Some((_, refs)) = self.names[id as usize].as_mut() {
                *refs += 1;
            }
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.names.push(None);
                // Keep room in the free list for every id, so `release` never allocates.
                if self.free.capacity() < self.names.capacity() {
                    self.free
                        .reserve_exact(self.names.capacity() - self.free.len());
                }
                u32::try_from(self.names.len() - 1).expect("fewer than 2^32 actors")
            }
        };
        self.names[id as usize] = Some((actor.clone(), 1));
        self.name_bytes += actor.0.len();
        self.ids.insert(actor.clone(), id);
        id
    }

    /// Gives back one reference to `id`; the actor is forgotten when none is left.
    pub fn release(&mut self, id: u32) {
        let slot = &mut self.names[id as usize];
        let Some((actor, refs)) = slot.as_mut() else {
            debug_assert!(false, "release of a free actor id {id}");
            return;
        };
        *refs -= 1;
        if *refs == 0 {
            self.name_bytes -= actor.0.len();
            self.ids.remove(actor);
            *slot = None;
            self.free.push(id);
        }
    }

    /// Drops free ids at the end of the table and shrinks every index to what the actors
    /// held need. Ids in use keep their numbers. O(actors); the store calls it only when a
    /// refused write's actors left capacity behind.
    pub fn compact(&mut self) {
        while matches!(self.names.last(), Some(None)) {
            self.names.pop();
        }
        let len = self.names.len();
        self.free.retain(|&id| (id as usize) < len);
        self.names.shrink_to_fit();
        self.ids.shrink_to_fit();
        self.free.shrink_to(self.names.capacity());
        if self.free.capacity() < self.names.capacity() {
            self.free
                .reserve_exact(self.names.capacity() - self.free.len());
        }
    }

    /// The actor `id` names. Ids come from entries this table encoded, so they are live.
    pub fn name(&self, id: u32) -> &Actor {
        match &self.names[id as usize] {
            Some((actor, _)) => actor,
            None => panic!("actor id {id} is not in use"),
        }
    }

    /// Actors currently referenced by some entry.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Heap bytes the table occupies (names, stored twice, and both indexes), for
    /// accounting. O(1). Only acquiring an actor can raise it: releasing never reallocates,
    /// and `compact` only shrinks.
    pub fn heap_bytes(&self) -> usize {
        self.names.capacity() * std::mem::size_of::<Option<(Actor, u64)>>()
            + self.ids.allocation_size()
            + self.free.capacity() * 4
            + 2 * self.name_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_shared_counted_and_reused_once_released() {
        let mut table = ActorTable::default();
        let a = Actor("A.1".into());
        let b = Actor("B.1".into());
        let ia = table.acquire(&a);
        assert_eq!(table.acquire(&a), ia, "one id per actor");
        let ib = table.acquire(&b);
        assert_ne!(ia, ib);
        assert_eq!(table.name(ia), &a);
        table.release(ia);
        assert_eq!(table.name(ia), &a, "one reference is left");
        table.release(ia);
        assert_eq!(table.len(), 1, "a is forgotten");
        let c = Actor("C.1".into());
        assert_eq!(table.acquire(&c), ia, "its id is reused");
        assert_eq!(table.name(ib), &b);
    }

    #[test]
    fn release_never_grows_the_table_and_compact_undoes_a_refused_acquire() {
        let mut table = ActorTable::default();
        let held: Vec<u32> = (0..5)
            .map(|i| table.acquire(&Actor(format!("held-{i}").into())))
            .collect();
        let before = table.heap_bytes();
        // A refused write: new actors acquired (the indexes grow), then released.
        let taken: Vec<u32> = (0..40)
            .map(|i| table.acquire(&Actor(format!("new-{i}").into())))
            .collect();
        assert!(table.heap_bytes() > before);
        let mut last = table.heap_bytes();
        for id in taken {
            table.release(id);
            assert!(table.heap_bytes() <= last, "release allocated");
            last = table.heap_bytes();
        }
        table.compact();
        assert!(
            table.heap_bytes() <= before,
            "{} > {before}",
            table.heap_bytes()
        );
        for (i, id) in held.iter().enumerate() {
            assert_eq!(table.name(*id).0.as_ref(), format!("held-{i}"));
        }
        // Ids stay usable after compaction.
        let again = table.acquire(&Actor("again".into()));
        assert_eq!(table.name(again).0.as_ref(), "again");
    }

    #[test]
    fn compact_undoes_a_refused_acquire_even_when_released_actors_left_tombstones() {
        // Actors come and go, so the index holds tombstones of removed names; a refused
        // write's inserts then rehash or grow it. Compacting must still bring `heap_bytes`
        // back to at most what it was before the write, whatever the index's state.
        let mut table = ActorTable::default();
        let mut held = std::collections::VecDeque::new();
        for round in 0..400u32 {
            held.push_back(table.acquire(&Actor(format!("live-{round}").into())));
            if held.len() > 20 {
                table.release(held.pop_front().unwrap());
            }
            let before = table.heap_bytes();
            let taken: Vec<u32> = (0..1 + round % 9)
                .map(|i| table.acquire(&Actor(format!("new-{round}-{i}").into())))
                .collect();
            for id in taken {
                table.release(id);
            }
            table.compact();
            assert!(
                table.heap_bytes() <= before,
                "round {round}: {} > {before}",
                table.heap_bytes()
            );
        }
    }
}
