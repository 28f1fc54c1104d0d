//! The storage engine of one peer: per-key versioned state with expiry, a memory limit and
//! eviction, all driven by the time the caller passes in.
//!
//! Promises:
//! - `merge` is the join of [`Siblings`], so replaying or reordering replicated states cannot
//!   lose a write.
//! - Lookups are O(1) (a hash index keyed by its owner: at random on a peer, from the seed
//!   under simulation, so memory layout is reproducible there); eviction and active expiry sample a bounded number of random keys
//!   (O(1) by position), as Redis does. One exception: when a write must evict and its sample
//!   holds no key the policy may evict, but the store's byte counts say some exist (only
//!   `volatile-ttl`, with few keys that expire, makes this likely), a scan from a rotating
//!   cursor finds one; it visits the keys between evictable ones.
//! - Each key is one allocation: its key, clock and siblings packed together, actors as
//!   interned ids (`packed`, `actors`), in a dense table of 32-byte slots (`table`).
//! - [`Store::used_bytes`] counts keys, values, version metadata and the engine's own
//!   overhead (the packed allocation as the allocator rounds it, the slot, the indexes, the
//!   actor table). The hash trees anti-entropy compares are a fixed cost per partition held
//!   (`HashTrees::TREE_BYTES`, at most `partitions` of them whatever the data), reported
//!   apart (`HashTrees::heap_bytes`) and not counted against the limit.
//! - **Hash trees are always current**: every change to a key's state (client write, merge,
//!   repair, expiry, eviction, collection, drop) updates its partition's tree in O(1), and
//!   [`Store::keys_in_leaf`] lists a leaf's keys in ring order without a scan
//!   (see [`crate::core::hash_tree`]).
//! - **The memory limit always holds**: `used_bytes() <= limit` whenever no call is running,
//!   under every policy; the bound is exact, with no entry in flight. Before a write (client
//!   write, replicated merge or repair) is installed, the store compares what it would hold
//!   with the bytes it could free by evicting every key its policy allows (other than the key
//!   written: `evictable_bytes`, kept exact per write). If even that cannot make room, the
//!   write is refused with [`OutOfMemory`] and nothing changes — no key is evicted for a write
//!   that is then refused. Otherwise keys are evicted first and the write installed after, so
//!   a store holding evictable keys never refuses a write that fits once they are gone, and a
//!   store with none refuses every write that would grow it past the limit (as Redis answers
//!   OOM). Transiently, inside a write, the actor table holds the new encoding's actors; a
//!   refused write gives them back, capacity included (`ActorTable::compact`).
//! - **Evictions are local.** An evicted key is simply absent here: no tombstone is written, so
//!   eviction never spreads as a delete. Repair traffic (read repair today, anti-entropy later)
//!   goes through [`Store::merge_repair`], which only re-adds an absent key while the store is
//!   below its low-water mark, so repair never keeps pulling evicted keys back into a full peer.
//! - **Expiry.** A value's expiry is an absolute instant fixed by its coordinator. Reads never
//!   see expired values (`Siblings::visible_values`); [`Store::expire_step`] reclaims the bytes
//!   of expired values in the background by turning them into tombstones under the same dot,
//!   which replicas merge as tombstones (see `Siblings::merge`).
//! - **Dots are never reused**, though eviction forgets keys: each entry mints under the epoch
//!   actor it was created in, and a key forgotten in the current epoch is recreated in a new
//!   one (see [`Store::update`]).

use crate::core::eviction::{eviction_rank, AccessRecord, EvictionPolicy};
use crate::core::hash_tree::{state_digest, HashTrees, LEAVES};
use crate::core::ring::{key_position, PartitionId};
use crate::core::siblings::{Payload, Siblings};
use crate::core::types::Millis;
use crate::core::version_vector::{Actor, Dot, VersionVector};
use actors::ActorTable;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ring_order::RingOrder;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use table::{EntryTable, IndexHasher, Slot};
use thiserror::Error;

mod actors;
mod packed;
mod ring_order;
mod table;

/// Keys ranked per eviction (Redis's `maxmemory-samples`).
pub const EVICTION_SAMPLES: usize = 5;
/// Keys with an expiry examined per active-expiry round.
pub const EXPIRY_SAMPLES: usize = 20;
/// Repair may re-add a key this store does not hold only below this share of the limit.
pub const REPAIR_LOW_WATER_PERCENT: u64 = 90;
/// Evicted keys an epoch remembers before it ends (8 bytes each).
const EPOCH_MEMORY: usize = 4096;
/// The indexes' share per entry: the hash index (5 bytes a bucket, between 1.14 and 2.3
/// buckets a key) and the ring-order index (20 bytes an entry in vectors grown an eighth at a
/// time, see `ring_order`; up to about 27 after many removals, before a chunk is refitted).
const INDEX_BYTES_PER_ENTRY: u64 = 9 + 22;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreLimits {
    /// Bytes the store may hold; `None` for no limit.
    pub max_memory_bytes: Option<u64>,
    pub policy: EvictionPolicy,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("out of memory: the write needs {needed} bytes, {used} of {limit} are in use and the eviction policy ({policy}) leaves nothing more to evict")]
pub struct OutOfMemory {
    pub needed: u64,
    pub used: u64,
    pub limit: u64,
    pub policy: EvictionPolicy,
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Values whose bytes active expiry reclaimed.
    pub expired: u64,
    /// Keys evicted to stay under the memory limit.
    pub evicted: u64,
    /// Repairs of absent keys skipped because the store was near its limit.
    pub repairs_declined: u64,
    /// Tombstone-only keys collected after every replica held them (see `forget`).
    pub tombstones_collected: u64,
    /// Possibly stale copies dropped when this peer became a replica again (see `drop_where`).
    pub dropped_stale: u64,
}

#[derive(Debug)]
pub struct Store {
    entries: EntryTable,
    actors: ActorTable,
    /// Where an entry is packed before it is copied into its own allocation.
    scratch: Vec<u8>,
    max_clock_entries: usize,
    limits: StoreLimits,
    /// Bytes of the entries (the actor table is added in `used_bytes`).
    entry_bytes: u64,
    /// Bytes of the entries that hold a value with an expiry (what `volatile-ttl` may evict).
    expiring_bytes: u64,
    /// Where the scan for an evictable key resumes when a sample finds none (`pick_victim`).
    scan_cursor: usize,
    inserted: u64,
    /// The generator of samples; seeded by the caller, so runs are reproducible.
    rng: ChaCha8Rng,
    stats: StoreStats,
    /// When enabled, the states evicted since the last `take_evicted` (for the simulator,
    /// which accounts for what an eviction takes away).
    eviction_log: Option<Vec<(Vec<u8>, Siblings)>>,
    /// The current dot-minting epoch (see [`Store::update`]) and the hashes of keys forgotten
    /// in it.
    epoch: u64,
    evicted_this_epoch: HashSet<u64, BuildHasherDefault<DefaultHasher>>,
    /// Every entry by ring position (ties broken by slot), with its state's digest: the
    /// per-partition and per-leaf iteration anti-entropy needs, and the digest to take out of
    /// `trees` when the state changes.
    order: RingOrder,
    /// The hash trees over `order`'s digests, kept current by every change.
    trees: HashTrees,
}

impl Store {
    pub fn new(max_clock_entries: usize, limits: StoreLimits, seed: u64) -> Self {
        Self {
            entries: EntryTable::default(),
            actors: ActorTable::default(),
            scratch: Vec::new(),
            max_clock_entries,
            limits,
            entry_bytes: 0,
            expiring_bytes: 0,
            scan_cursor: 0,
            inserted: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            stats: StoreStats::default(),
            eviction_log: None,
            epoch: 0,
            evicted_this_epoch: HashSet::default(),
            order: RingOrder::default(),
            trees: HashTrees::new(1),
        }
    }

    /// The same store with hash trees cut by a ring of `partitions` (the store must be empty).
    pub fn partitioned(mut self, partitions: u32) -> Self {
        assert!(self.is_empty(), "partition the store before filling it");
        self.trees = HashTrees::new(partitions);
        self
    }

    /// The keys its index hashes keys under (see [`Store::with_index_keys`]).
    pub fn index_keys(&self) -> (u64, u64) {
        self.entries.hasher().keys()
    }

    /// The store, its index hashing keys under `keys` (see `table`; without this, fixed
    /// keys). A peer facing clients must pass secret random keys.
    pub fn with_index_keys(mut self, keys: (u64, u64)) -> Self {
        assert!(self.is_empty(), "key the index before filling the store");
        self.entries = EntryTable::new(IndexHasher::new(keys));
        self
    }

    /// The hash trees over the held states (see [`crate::core::hash_tree`]).
    pub fn trees(&self) -> &HashTrees {
        &self.trees
    }

    /// The digest of `key`'s state, if held.
    pub fn digest_of(&self, key: &[u8]) -> Option<u64> {
        let position = self.entries.find(key)?;
        self.order.get(key_position(key), position as u32)
    }

    /// The keys whose ring positions fall in `start..=end`, with their states' digests, in
    /// ring order.
    pub fn keys_between(&self, start: u64, end: u64) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        self.order
            .range(start, end)
            .map(|(_, slot, digest)| (self.entries.get(slot as usize).key(), digest))
    }

    /// The keys whose ring positions fall in `start..=end` and that hold a value visible at
    /// `now` (no tombstone-only or expired keys), with their positions, in ring order: what
    /// a client listing keys (RESP's SCAN) may see.
    pub fn live_keys_between(
        &self,
        start: u64,
        end: u64,
        now: Millis,
    ) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.order
            .range(start, end)
            .filter_map(move |(position, slot, _)| {
                let entry = self.entries.get(slot as usize);
                let state = packed::decode(&entry.packed, &self.actors);
                (!state.visible_values(now).is_empty()).then(|| (position, entry.key()))
            })
    }

    /// The keys of one leaf of a partition's hash tree, with their digests.
    pub fn keys_in_leaf(
        &self,
        partition: PartitionId,
        leaf: u8,
    ) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        let (start, end) = self.trees.leaf_range(partition, leaf);
        self.keys_between(start, end)
    }

    /// The keys of a partition, with their digests.
    pub fn keys_in_partition(
        &self,
        partition: PartitionId,
    ) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        let start = self.trees.leaf_range(partition, 0).0;
        let end = self.trees.leaf_range(partition, (LEAVES - 1) as u8).1;
        self.keys_between(start, end)
    }

    /// Starts keeping every evicted key and state until `take_evicted`.
    pub fn log_evictions(&mut self) {
        self.eviction_log.get_or_insert_with(Vec::new);
    }

    /// The keys evicted (with their states) since the last call, if logging is on.
    pub fn take_evicted(&mut self) -> Vec<(Vec<u8>, Siblings)> {
        self.eviction_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn draw(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// The state of `key` without counting an access (inspection, replication).
    pub fn peek(&self, key: &[u8]) -> Option<Siblings> {
        let position = self.entries.find(key)?;
        Some(packed::decode(
            &self.entries.get(position).packed,
            &self.actors,
        ))
    }

    /// Whether `key` holds a counter sibling, without decoding it.
    pub fn holds_counter(&self, key: &[u8]) -> bool {
        self.entries
            .find(key)
            .is_some_and(|p| packed::holds_counter(&self.entries.get(p).packed))
    }

    /// Whether `key` is held (tombstones included), without decoding it.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries.find(key).is_some()
    }

    /// The state of `key`, counted as an access for LRU and LFU.
    pub fn read(&mut self, key: &[u8], now: Millis) -> Option<Siblings> {
        let draw = self.draw();
        let position = self.entries.find(key)?;
        let slot = self.entries.get_mut(position);
        slot.access.touch(now, draw);
        Some(packed::decode(&slot.packed, &self.actors))
    }

    /// Applies a client write coordinated by this peer (`actor` is its incarnation); returns
    /// the key's new state and the write's dot.
    ///
    /// A dot's counter claims every lower counter of its actor for this key as seen, so a
    /// store must never mint a dot for a key whose earlier events by the same actor it has
    /// forgotten — which eviction does. Dots are therefore minted under an *epoch* actor,
    /// `{actor}` in epoch 0 and `{actor}.e{epoch}` after, and each entry keeps the epoch it
    /// was created in:
    /// - an entry is created in the current epoch, unless its key was forgotten during that
    ///   epoch, in which case a new epoch starts first (whose actor has no events yet);
    /// - an entry writes under its own epoch for as long as it stays, so a key that is never
    ///   evicted keeps one actor per peer, however often other keys come and go (a clock that
    ///   gained an entry at every epoch would grow until pruning produced spurious siblings).
    ///
    /// Every event of an entry's epoch actor for its key is thus in the entry: none existed
    /// before the entry (the key was not forgotten in that epoch before it was created), and
    /// the entry has held the key since.
    pub fn update(
        &mut self,
        key: &[u8],
        actor: &Actor,
        context: &VersionVector,
        payload: Payload,
        now: Millis,
    ) -> Result<(Siblings, Dot), OutOfMemory> {
        self.update_with(key, actor, context, |_| payload, now)
    }

    /// [`Self::update`] with the payload made from the new dot (a counter's increment raises
    /// the tally of the actor the dot is minted under, which only the store knows).
    pub fn update_with(
        &mut self,
        key: &[u8],
        actor: &Actor,
        context: &VersionVector,
        make: impl FnOnce(&Dot) -> Payload,
        now: Millis,
    ) -> Result<(Siblings, Dot), OutOfMemory> {
        let (position, epoch) = self.locate(key);
        let mut state = position
            .map(|p| packed::decode(&self.entries.get(p).packed, &self.actors))
            .unwrap_or_default();
        let actor = if epoch == 0 {
            actor.clone()
        } else {
            Actor(format!("{}.e{}", actor.0, epoch).into())
        };
        let dot = state.update_with(&actor, context, |dot, _| make(dot), self.max_clock_entries);
        self.put_at(key, position, epoch, &state, now)?;
        Ok((state, dot))
    }

    /// Where `key` is stored, and the epoch its entry mints under: the entry's own, or for a
    /// new entry the current epoch, after starting a new one if `key` was forgotten during it.
    fn locate(&mut self, key: &[u8]) -> (Option<usize>, u64) {
        if let Some(position) = self.entries.find(key) {
            return (
                Some(position),
                packed::epoch(&self.entries.get(position).packed),
            );
        }
        if self
            .evicted_this_epoch
            .contains(&self.entries.hash_key(key))
        {
            self.epoch += 1;
            self.evicted_this_epoch.clear();
        }
        (None, self.epoch)
    }

    /// Joins a state replicated from another peer (a write's `Store`) into the local one.
    pub fn merge(
        &mut self,
        key: &[u8],
        incoming: &Siblings,
        now: Millis,
    ) -> Result<(), OutOfMemory> {
        let (position, epoch) = self.locate(key);
        match position {
            Some(p) => {
                let local = packed::decode(&self.entries.get(p).packed, &self.actors);
                let merged = local.merged(incoming);
                if merged == local {
                    return Ok(()); // nothing new
                }
                self.put_at(key, position, epoch, &merged, now)
            }
            None => self.put_at(key, None, epoch, incoming, now),
        }
    }

    /// Joins a repaired state. A key this store does not hold is only added while the store is
    /// below its low-water mark: it may have been evicted, and repair must not refill a full
    /// peer with what it chose to forget. Returns whether the state was applied.
    pub fn merge_repair(&mut self, key: &[u8], incoming: &Siblings, now: Millis) -> bool {
        if !self.contains(key) && self.near_limit() {
            self.stats.repairs_declined += 1;
            return false;
        }
        self.merge(key, incoming, now).is_ok()
    }

    /// Whether the store is at or above its repair low-water mark (never, without a limit):
    /// repair adds no key it does not hold.
    pub fn near_limit(&self) -> bool {
        self.limits
            .max_memory_bytes
            .is_some_and(|limit| self.used_bytes() * 100 >= limit * REPAIR_LOW_WATER_PERCENT)
    }

    /// Stores `state` for `key` (at `position` and `epoch`, from [`Store::locate`]), after
    /// evicting other keys to make room for it; refuses it, changing nothing, if no room can
    /// be made.
    fn put_at(
        &mut self,
        key: &[u8],
        position: Option<usize>,
        epoch: u64,
        state: &Siblings,
        now: Millis,
    ) -> Result<(), OutOfMemory> {
        let before = self.used_bytes();
        let ring_position = key_position(key);
        let digest = state_digest(key, state);
        packed::encode_into(&mut self.scratch, key, epoch, state, &mut self.actors);
        let position = match self.make_room(key, position, before, now) {
            Ok(position) => position,
            Err(refused) => {
                release_actors(&mut self.actors, &self.scratch);
                if self
                    .limits
                    .max_memory_bytes
                    .is_some_and(|l| self.used_bytes() > l)
                {
                    // The encoding's new actors grew the table's indexes.
                    self.actors.compact();
                }
                return Err(refused);
            }
        };
        let draw = self.draw();
        match position {
            Some(p) => {
                self.entries.get_mut(p).access.touch(now, draw);
                self.install(p);
                let old = self
                    .order
                    .insert(ring_position, p as u32, digest)
                    .expect("held keys are ordered");
                self.trees.replace(ring_position, old, digest);
            }
            None => {
                self.inserted += 1;
                let p = self.entries.push(Slot {
                    packed: Box::from(self.scratch.as_slice()),
                    access: AccessRecord::new(now, self.inserted),
                });
                self.count(entry_sizes(&self.scratch), true);
                self.order.insert(ring_position, p as u32, digest);
                self.trees.insert(ring_position, digest);
            }
        }
        Ok(())
    }

    /// Evicts keys other than `keep` (held at `position`, if it is) until the encoding in
    /// `scratch` fits in its place, or refuses before evicting anything if it cannot fit
    /// even with every evictable key gone. `before` is `used_bytes` before the encoding took
    /// its actors. Returns where `keep` is now (an eviction may move it).
    ///
    /// Installing the encoding gives back the old one's actor references, and evicting gives
    /// back the victims', neither of which can grow the actor table: the bytes counted here
    /// are an upper bound of what the store holds after the write.
    fn make_room(
        &mut self,
        keep: &[u8],
        mut position: Option<usize>,
        before: u64,
        now: Millis,
    ) -> Result<Option<usize>, OutOfMemory> {
        let Some(limit) = self.limits.max_memory_bytes else {
            return Ok(position);
        };
        let bytes = entry_footprint(self.scratch.len());
        let (old, old_evictable) = position.map_or((0, 0), |p| {
            let packed = &self.entries.get(p).packed;
            let old = entry_footprint(packed.len());
            (old, if self.evictable(packed) { old } else { 0 })
        });
        let after = |store: &Self| store.used_bytes() - old + bytes;
        let projected = after(self);
        if projected <= limit {
            return Ok(position);
        }
        let freeable = self.evictable_bytes() - old_evictable;
        let refused = OutOfMemory {
            needed: projected.saturating_sub(before),
            used: before,
            limit,
            policy: self.limits.policy,
        };
        if projected - freeable > limit {
            return Err(refused);
        }
        while after(self) > limit {
            // The byte counts promise a victim; finding none would be a bookkeeping bug.
            let Some(victim) = self.pick_victim(keep, now) else {
                debug_assert!(false, "evictable bytes counted but no evictable key found");
                return Err(refused);
            };
            if position == Some(self.entries.len() - 1) {
                position = Some(victim); // the last slot moves into the victim's place
            }
            let key = self.remove_at(victim);
            self.stats.evicted += 1;
            self.remember_forgotten(&key);
        }
        Ok(position)
    }

    /// The position of a key to evict (never `keep`): the lowest ranked of a sample, as
    /// Redis does, or, if the sample holds no key the policy may evict, the next such key
    /// from a rotating cursor, so that a store holding one is never taken for one without.
    fn pick_victim(&mut self, keep: &[u8], now: Millis) -> Option<usize> {
        let len = self.entries.len();
        if len == 0 {
            return None;
        }
        let mut best: Option<(u64, usize)> = None;
        for _ in 0..EVICTION_SAMPLES {
            let position = (self.draw() % len as u64) as usize;
            let draw = self.draw();
            let slot = self.entries.get(position);
            if slot.key() == keep {
                continue;
            }
            let expiry = match self.limits.policy {
                EvictionPolicy::VolatileTtl => packed::earliest_expiry(&slot.packed),
                _ => None,
            };
            if let Some(rank) = eviction_rank(self.limits.policy, &slot.access, expiry, now, draw) {
                if best.is_none_or(|(r, _)| rank < r) {
                    best = Some((rank, position));
                }
            }
        }
        if let Some((_, position)) = best {
            return Some(position);
        }
        for i in 0..len {
            let position = (self.scan_cursor + i) % len;
            let slot = self.entries.get(position);
            if slot.key() != keep && self.evictable(&slot.packed) {
                self.scan_cursor = position;
                return Some(position);
            }
        }
        None
    }

    /// Whether the policy may evict the entry encoded as `packed`.
    fn evictable(&self, packed: &[u8]) -> bool {
        self.limits
            .policy
            .evicts(packed::earliest_expiry(packed).is_some())
    }

    /// Bytes the store would free by evicting every entry its policy may evict.
    fn evictable_bytes(&self) -> u64 {
        let policy = self.limits.policy;
        let mut bytes = 0;
        if policy.evicts(true) {
            bytes += self.expiring_bytes;
        }
        if policy.evicts(false) {
            bytes += self.entry_bytes - self.expiring_bytes;
        }
        bytes
    }

    /// Adds (or, with `added` false, takes away) the bytes of an entry, as [`entry_sizes`]
    /// gives them.
    fn count(&mut self, (bytes, expiring): (u64, u64), added: bool) {
        if added {
            self.entry_bytes += bytes;
            self.expiring_bytes += expiring;
        } else {
            self.entry_bytes -= bytes;
            self.expiring_bytes -= expiring;
        }
    }

    /// Replaces the state at `position` without counting an access (active expiry).
    fn restate(&mut self, position: usize, state: &Siblings) {
        let slot = self.entries.get(position);
        let (key, epoch) = (slot.key().to_vec(), packed::epoch(&slot.packed));
        packed::encode_into(&mut self.scratch, &key, epoch, state, &mut self.actors);
        self.install(position);
    }

    /// Moves the encoding in `scratch` into the slot at `position`, giving back the old
    /// encoding's bytes and actor references.
    fn install(&mut self, position: usize) {
        let packed: Box<[u8]> = Box::from(self.scratch.as_slice());
        let old = std::mem::replace(&mut self.entries.get_mut(position).packed, packed);
        self.count(entry_sizes(&old), false);
        self.count(entry_sizes(&self.scratch), true);
        release_actors(&mut self.actors, &old);
    }

    /// Takes the slot at `position` out of the store, giving back its bytes and actor
    /// references; returns its key and, if the eviction log is on, logs its state.
    fn remove_at(&mut self, position: usize) -> Vec<u8> {
        let last = self.entries.len() - 1;
        let slot = self.entries.swap_remove(position);
        self.count(entry_sizes(&slot.packed), false);
        let key = slot.key().to_vec();
        let ring_position = key_position(&key);
        let digest = self
            .order
            .remove(ring_position, position as u32)
            .expect("held keys are ordered");
        self.trees.remove(ring_position, digest);
        if position != last {
            // The last entry moved into `position`.
            let moved = key_position(self.entries.get(position).key());
            let digest = self
                .order
                .remove(moved, last as u32)
                .expect("held keys are ordered");
            self.order.insert(moved, position as u32, digest);
        }
        if let Some(log) = self.eviction_log.as_mut() {
            log.push((key.clone(), packed::decode(&slot.packed, &self.actors)));
        }
        release_actors(&mut self.actors, &slot.packed);
        key
    }

    /// Drops `key` if its state is still exactly the tombstone-only state `clock` describes
    /// (every replica was seen holding it, a grace period ago). A newer write keeps the key.
    /// Like an eviction, forgetting a key ends the dot-minting epoch if the key is written
    /// again (see [`Store::update`]).
    pub fn forget(&mut self, key: &[u8], clock: &VersionVector) -> bool {
        let Some(position) = self.entries.find(key) else {
            return false;
        };
        let state = packed::decode(&self.entries.get(position).packed, &self.actors);
        if !state.is_tombstones_only() || state.context() != clock {
            return false;
        }
        // Not an eviction: the simulator need not account for a collected tombstone.
        let log = self.eviction_log.take();
        let key = self.remove_at(position);
        self.eviction_log = log;
        self.stats.tombstones_collected += 1;
        self.remember_forgotten(&key);
        true
    }

    /// Drops `key` because another peer now holds it (a handoff confirmed, or abandoned):
    /// not an eviction, and not logged as one. Like any drop, it ends the dot-minting epoch if
    /// the key is written here again.
    pub fn hand_off(&mut self, key: &[u8]) -> bool {
        let Some(position) = self.entries.find(key) else {
            return false;
        };
        let log = self.eviction_log.take();
        let key = self.remove_at(position);
        self.eviction_log = log;
        self.remember_forgotten(&key);
        true
    }

    fn remember_forgotten(&mut self, key: &[u8]) {
        if self.evicted_this_epoch.len() >= EPOCH_MEMORY {
            // Forgetting which keys were dropped is safe only in a new epoch.
            self.epoch += 1;
            self.evicted_this_epoch.clear();
        }
        let hash = self.entries.hash_key(key);
        self.evicted_this_epoch.insert(hash);
    }

    /// Drops every key `doomed` selects, as evictions (logged, and ending the dot-minting
    /// epoch for them); returns how many. Used when a peer regains a partition it may hold
    /// stale copies of.
    pub fn drop_where(&mut self, doomed: impl Fn(&[u8]) -> bool) -> usize {
        let keys: Vec<Vec<u8>> = self
            .entries
            .iter()
            .map(Slot::key)
            .filter(|k| doomed(k))
            .map(<[u8]>::to_vec)
            .collect();
        for key in &keys {
            if let Some(position) = self.entries.find(key) {
                self.remove_at(position);
                self.stats.dropped_stale += 1;
                self.remember_forgotten(key);
            }
        }
        keys.len()
    }

    /// One round of active expiry: samples keys and turns their expired values into
    /// tombstones, reclaiming the values' bytes. Examines at most `EXPIRY_SAMPLES` keys.
    /// Returns the keys left holding nothing but tombstones (candidates for collection).
    pub fn expire_step(&mut self, now: Millis) -> Vec<Vec<u8>> {
        let mut expired = 0;
        let mut emptied = Vec::new();
        for _ in 0..EXPIRY_SAMPLES.min(self.entries.len()) {
            let position = (self.draw() % self.entries.len() as u64) as usize;
            let slot = self.entries.get(position);
            if packed::earliest_expiry(&slot.packed).is_none_or(|t| t > now) {
                continue;
            }
            let mut state = packed::decode(&slot.packed, &self.actors);
            let n = state.expire(now);
            if n == 0 {
                continue;
            }
            expired += n;
            self.restate(position, &state);
            if state.is_tombstones_only() {
                emptied.push(self.entries.get(position).key().to_vec());
            }
        }
        self.stats.expired += expired;
        emptied
    }

    /// Every key held with its state, in no particular order (the simulator's inspection).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Siblings)> + '_ {
        self.entries
            .iter()
            .map(|slot| (slot.key(), packed::decode(&slot.packed, &self.actors)))
    }

    /// Number of keys held (including tombstoned ones).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Bytes the store holds: its entries and the actor table they refer to.
    pub fn used_bytes(&self) -> u64 {
        self.entry_bytes + self.actors.heap_bytes() as u64
    }

    /// The current dot-minting epoch.
    #[cfg(test)]
    fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Actors the stored entries refer to.
    #[cfg(test)]
    fn actor_count(&self) -> usize {
        self.actors.len()
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Planted bug: overwrites the local state with a replicated one (last arrival wins).
    #[cfg(feature = "planted-bugs")]
    pub fn replace(&mut self, key: &[u8], state: Siblings, now: Millis) {
        let (position, epoch) = self.locate(key);
        let _ = self.put_at(key, position, epoch, &state, now);
    }

    /// Planted bug: drops `key` whatever it holds, as a collection does (not logged as an
    /// eviction).
    #[cfg(feature = "planted-bugs")]
    pub fn forget_unchecked(&mut self, key: &[u8]) {
        if let Some(position) = self.entries.find(key) {
            let log = self.eviction_log.take();
            let key = self.remove_at(position);
            self.eviction_log = log;
            self.remember_forgotten(&key);
        }
    }

    /// Planted bug: forgets every sibling of `key` but the one with the greatest dot.
    #[cfg(feature = "planted-bugs")]
    pub fn keep_only_newest_sibling(&mut self, key: &[u8], now: Millis) {
        if let Some(mut state) = self.peek(key) {
            state.keep_only_newest();
            let (position, epoch) = self.locate(key);
            let _ = self.put_at(key, position, epoch, &state, now);
        }
    }
}

/// Gives back the actor references an encoding took.
fn release_actors(actors: &mut ActorTable, packed: &[u8]) {
    for id in packed::actor_ids(packed) {
        actors.release(id);
    }
}

/// Bytes the allocator hands out for a request of `len` (glibc: an 8-byte header, rounded up
/// to 16, at least 32).
fn allocation_size(len: usize) -> u64 {
    ((len as u64 + 8 + 15) & !15).max(32)
}

/// Bytes one entry costs: its packed allocation, its slot, its share of the index.
fn entry_footprint(packed_len: usize) -> u64 {
    allocation_size(packed_len) + std::mem::size_of::<Slot>() as u64 + INDEX_BYTES_PER_ENTRY
}

/// Bytes one entry encoded as `packed` costs, and the same again if it holds a value with an
/// expiry (else 0): its share of `entry_bytes` and of `expiring_bytes`.
fn entry_sizes(packed: &[u8]) -> (u64, u64) {
    let bytes = entry_footprint(packed.len());
    let expiring = if packed::earliest_expiry(packed).is_some() {
        bytes
    } else {
        0
    };
    (bytes, expiring)
}

/// Bytes `key` holding `state` costs as one entry (actor table aside).
pub fn footprint(key: &[u8], state: &Siblings) -> u64 {
    let mut scratch = Vec::new();
    packed::encode_into(&mut scratch, key, 0, state, &mut ActorTable::default());
    entry_footprint(scratch.len())
}

#[cfg(test)]
mod tests;
