//! Actor names interned as small numbers, so a stored entry refers to a coordinator in a byte
//! or two instead of carrying its name (`"A.1764000000000"`) in every clock entry and dot.
//!
//! Promises: an id names one actor for as long as some stored entry refers to it. Every id an
//! entry takes with [`ActorTable::acquire`] is given back with [`ActorTable::release`] when
//! the entry goes; an actor no entry refers to any more is dropped and its id reused, so the
//! table holds only the actors the store's entries name (incarnations and dot-minting epochs
//! come and go without the table growing for ever).

use crate::core::version_vector::Actor;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

#[derive(Debug, Default)]
pub struct ActorTable {
    /// By id: the actor and how many references stored entries hold to it (`None`: free id).
    names: Vec<Option<(Actor, u64)>>,
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
    /// accounting. O(1).
    pub fn heap_bytes(&self) -> usize {
        self.names.capacity() * std::mem::size_of::<Option<(Actor, u64)>>()
            + self.ids.capacity() * (std::mem::size_of::<(Actor, u32)>() + 1)
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
}
