//! The compact form of one stored entry: the key, its version vector and its siblings packed
//! into a single allocation, actors referred to by interned ids and numbers as varints.
//!
//! Why: a key's [`Siblings`] as plain Rust values takes five heap allocations (key, clock,
//! actor names, sibling list, value) and repeats the coordinator's name in the clock and in
//! each dot. Packed, a 16-byte key with a 100-byte value and one version is a 126-byte
//! buffer: one allocation, a few bytes of metadata.
//!
//! Layout (every number an unsigned LEB128 varint):
//! ```text
//! key_len key… epoch
//! clock_len (actor_id counter)*
//! versions_len (actor_id counter tag [expires_at_ms] [data_len data…])*
//!     tag: 0 tombstone, 1 value, 2 value with expiry, 3 counter, 4 counter with expiry
//!     (a counter's data is its state in bincode, actor names inline: counters are rare
//!     enough that interning their tallies' actors is not worth a second encoding)
//! ```
//!
//! Promises: `decode(encode(key, s)) == s` for every well-formed state (proptested), the key
//! is read without decoding the rest, and every actor id an encoding takes from the
//! [`ActorTable`] is listed by [`actor_ids`] so the store can give it back.

use super::actors::ActorTable;
use crate::core::counter::Counter;
use crate::core::siblings::{Payload, Siblings};
use crate::core::version_vector::{Dot, VersionVector};

const TOMBSTONE: u8 = 0;
const VALUE: u8 = 1;
const VALUE_WITH_EXPIRY: u8 = 2;
const COUNTER: u8 = 3;
const COUNTER_WITH_EXPIRY: u8 = 4;

fn has_expiry(tag: u8) -> bool {
    tag == VALUE_WITH_EXPIRY || tag == COUNTER_WITH_EXPIRY
}

fn counter_bytes(counter: &Counter) -> Vec<u8> {
    bincode::serde::encode_to_vec(counter, bincode::config::standard())
        .expect("a counter always encodes")
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A reader over an encoding this module wrote (so well-formed: no bounds errors expected).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn varint(&mut self) -> u64 {
        let mut n = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.bytes[self.at];
            self.at += 1;
            n |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return n;
            }
            shift += 7;
        }
    }

    fn byte(&mut self) -> u8 {
        let b = self.bytes[self.at];
        self.at += 1;
        b
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let out = &self.bytes[self.at..self.at + len];
        self.at += len;
        out
    }

    fn len_prefixed(&mut self) -> &'a [u8] {
        let len = self.varint() as usize;
        self.take(len)
    }
}

/// Packs `key` and `state` into `scratch` (cleared first), taking one actor reference per
/// clock entry and per dot. The caller copies the result into the entry's allocation.
/// `epoch` is the dot-minting epoch the entry writes under (see `Store::update`).
pub fn encode_into(
    scratch: &mut Vec<u8>,
    key: &[u8],
    epoch: u64,
    state: &Siblings,
    actors: &mut ActorTable,
) {
    scratch.clear();
    put_varint(scratch, key.len() as u64);
    scratch.extend_from_slice(key);
    put_varint(scratch, epoch);
    put_varint(scratch, state.context().len() as u64);
    for (actor, counter) in state.context().iter() {
        put_varint(scratch, actors.acquire(actor) as u64);
        put_varint(scratch, counter);
    }
    put_varint(scratch, state.len() as u64);
    for (dot, payload) in state.versions() {
        put_varint(scratch, actors.acquire(&dot.actor) as u64);
        put_varint(scratch, dot.counter);
        match payload {
            Payload::Tombstone => scratch.push(TOMBSTONE),
            Payload::Value {
                data,
                expires_at_ms,
            } => {
                match expires_at_ms {
                    None => scratch.push(VALUE),
                    Some(at) => {
                        scratch.push(VALUE_WITH_EXPIRY);
                        put_varint(scratch, *at);
                    }
                }
                put_varint(scratch, data.len() as u64);
                scratch.extend_from_slice(data);
            }
            Payload::Counter {
                counter,
                expires_at_ms,
            } => {
                match expires_at_ms {
                    None => scratch.push(COUNTER),
                    Some(at) => {
                        scratch.push(COUNTER_WITH_EXPIRY);
                        put_varint(scratch, *at);
                    }
                }
                let data = counter_bytes(counter);
                put_varint(scratch, data.len() as u64);
                scratch.extend_from_slice(&data);
            }
        }
    }
}

/// The key an encoding holds.
pub fn key(packed: &[u8]) -> &[u8] {
    Reader::new(packed).len_prefixed()
}

/// The dot-minting epoch an encoding holds.
pub fn epoch(packed: &[u8]) -> u64 {
    let mut r = Reader::new(packed);
    r.len_prefixed();
    r.varint()
}

/// The state an encoding holds.
pub fn decode(packed: &[u8], actors: &ActorTable) -> Siblings {
    let mut r = Reader::new(packed);
    r.len_prefixed();
    r.varint();
    let clock_len = r.varint() as usize;
    let mut clock = Vec::with_capacity(clock_len);
    for _ in 0..clock_len {
        let actor = actors.name(r.varint() as u32).clone();
        clock.push((actor, r.varint()));
    }
    let versions_len = r.varint() as usize;
    let mut versions = Vec::with_capacity(versions_len);
    for _ in 0..versions_len {
        let actor = actors.name(r.varint() as u32).clone();
        let dot = Dot {
            actor,
            counter: r.varint(),
        };
        let payload = match r.byte() {
            TOMBSTONE => Payload::Tombstone,
            tag @ (COUNTER | COUNTER_WITH_EXPIRY) => {
                let expires_at_ms = has_expiry(tag).then(|| r.varint());
                let data = r.len_prefixed();
                let (counter, _) =
                    bincode::serde::decode_from_slice(data, bincode::config::standard())
                        .expect("the store decodes only counters it encoded");
                Payload::Counter {
                    counter,
                    expires_at_ms,
                }
            }
            tag => {
                let expires_at_ms = has_expiry(tag).then(|| r.varint());
                Payload::Value {
                    data: r.len_prefixed().to_vec(),
                    expires_at_ms,
                }
            }
        };
        versions.push((dot, payload));
    }
    Siblings::from_parts(VersionVector::from(clock), versions)
}

/// Walks the versions of an encoding: `(actor_id, tag, expires_at_ms)` for each.
fn for_each_version(packed: &[u8], mut visit: impl FnMut(u32, u8, Option<u64>)) {
    let mut r = Reader::new(packed);
    r.len_prefixed();
    r.varint();
    for _ in 0..r.varint() {
        r.varint();
        r.varint();
    }
    for _ in 0..r.varint() {
        let actor = r.varint() as u32;
        r.varint();
        let tag = r.byte();
        let expires = has_expiry(tag).then(|| r.varint());
        if tag != TOMBSTONE {
            r.len_prefixed();
        }
        visit(actor, tag, expires);
    }
}

/// Whether any version of the encoding is a counter (without decoding them).
pub fn holds_counter(packed: &[u8]) -> bool {
    let mut found = false;
    for_each_version(packed, |_, tag, _| {
        found |= tag == COUNTER || tag == COUNTER_WITH_EXPIRY
    });
    found
}

/// The earliest expiry among the encoded values, if any has one (without decoding them).
pub fn earliest_expiry(packed: &[u8]) -> Option<u64> {
    let mut earliest: Option<u64> = None;
    for_each_version(packed, |_, _, expires| {
        if let Some(at) = expires {
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    });
    earliest
}

/// Every actor id the encoding took (one per clock entry and per dot, repeats included).
pub fn actor_ids(packed: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut r = Reader::new(packed);
    r.len_prefixed();
    r.varint();
    for _ in 0..r.varint() {
        ids.push(r.varint() as u32);
        r.varint();
    }
    for_each_version(packed, |actor, _, _| ids.push(actor));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::version_vector::Actor;
    use proptest::prelude::*;

    fn state(writes: &[(&str, Option<&str>, Option<u64>)]) -> Siblings {
        // Concurrent blind writes by different actors become siblings.
        let mut merged = Siblings::new();
        for (actor, data, expiry) in writes {
            let mut s = Siblings::new();
            let payload = match data {
                Some(d) => Payload::Value {
                    data: d.as_bytes().to_vec(),
                    expires_at_ms: *expiry,
                },
                None => Payload::Tombstone,
            };
            s.update(&Actor((*actor).into()), &VersionVector::new(), payload, 64);
            merged.merge(&s);
        }
        merged
    }

    #[test]
    fn a_key_with_one_small_value_packs_into_a_few_bytes_more_than_its_payload() {
        let mut actors = ActorTable::default();
        let mut buf = Vec::new();
        let s = state(&[("A.1764000000000", Some(&"v".repeat(100)), None)]);
        encode_into(&mut buf, b"key:000000000001", 0, &s, &mut actors);
        assert_eq!(buf.len(), 16 + 100 + 10);
        assert_eq!(key(&buf), b"key:000000000001");
        assert_eq!(epoch(&buf), 0);
        assert_eq!(decode(&buf, &actors), s);
        assert_eq!(actors.len(), 1, "the clock entry and the dot share one id");
    }

    #[test]
    fn siblings_tombstones_and_expiries_round_trip() {
        let mut actors = ActorTable::default();
        let mut buf = Vec::new();
        let s = state(&[
            ("A.1", Some("x"), Some(1_764_000_000_000)),
            ("B.1", None, None),
            ("C.1", Some(""), None),
            ("D.1", Some("y"), Some(5)),
        ]);
        encode_into(&mut buf, b"k", 300, &s, &mut actors);
        assert_eq!(decode(&buf, &actors), s);
        assert_eq!(epoch(&buf), 300);
        assert_eq!(earliest_expiry(&buf), Some(5));
        let mut ids = actor_ids(&buf);
        ids.sort();
        assert_eq!(ids.len(), 8, "four clock entries and four dots");
        for id in ids {
            actors.release(id);
        }
        assert!(actors.is_empty(), "every reference given back");
    }

    #[test]
    fn counters_round_trip_with_and_without_expiry() {
        use crate::core::version_vector::Dot;
        let mut actors = ActorTable::default();
        let mut buf = Vec::new();
        let mut s = Siblings::new();
        for (actor, expiry) in [("A.1", None), ("B.1", Some(77))] {
            let mut one = Siblings::new();
            one.update_with(
                &Actor(actor.into()),
                &VersionVector::new(),
                |dot: &Dot, _: &Siblings| {
                    let mut counter = Counter::new();
                    counter.add(dot, -3).unwrap();
                    Payload::Counter {
                        counter,
                        expires_at_ms: expiry,
                    }
                },
                64,
            );
            s.merge(&one);
        }
        encode_into(&mut buf, b"hits", 2, &s, &mut actors);
        assert_eq!(decode(&buf, &actors), s);
        assert_eq!(earliest_expiry(&buf), Some(77));
        assert_eq!(actor_ids(&buf).len(), 4);
    }

    proptest! {
        #[test]
        fn encoding_round_trips(
            key in proptest::collection::vec(any::<u8>(), 0..300),
            epoch_n in any::<u64>(),
            writes in proptest::collection::vec(
                (0u8..4, proptest::option::of("[a-z]{0,200}"), proptest::option::of(any::<u64>())),
                0..5,
            ),
        ) {
            let mut s = Siblings::new();
            for (actor, data, expiry) in &writes {
                let payload = match data {
                    Some(d) => Payload::Value { data: d.clone().into_bytes(), expires_at_ms: *expiry },
                    None => Payload::Tombstone,
                };
                let ctx = if actor % 2 == 0 { s.context().clone() } else { VersionVector::new() };
                s.update(&Actor(format!("R{actor}").into()), &ctx, payload, 64);
            }
            let mut actors = ActorTable::default();
            let mut buf = Vec::new();
            encode_into(&mut buf, &key, epoch_n, &s, &mut actors);
            prop_assert_eq!(super::key(&buf), &key[..]);
            prop_assert_eq!(epoch(&buf), epoch_n);
            prop_assert_eq!(decode(&buf, &actors), s.clone());
            prop_assert_eq!(earliest_expiry(&buf), s.earliest_expiry());
            prop_assert_eq!(actor_ids(&buf).len(), s.context().len() + s.len());
        }
    }
}
