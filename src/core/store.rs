//! The storage engine of one peer: per-key versioned state with expiry, a memory limit and
//! eviction, all driven by the time the caller passes in.
//!
//! Promises:
//! - `merge` is the join of [`Siblings`], so replaying or reordering replicated states cannot
//!   lose a write.
//! - Lookups are O(1) (a hash map with a fixed hasher, so even memory layout is reproducible
//!   under simulation); eviction and active expiry sample a bounded number of random keys
//!   (O(1) by index), as Redis does, so no step does work proportional to the store.
//! - [`Store::used_bytes`] counts keys, values, version metadata and the engine's per-entry
//!   overhead (an estimate of the heap the entry occupies), and never exceeds the limit after
//!   a write returns, except under `noeviction`, where the write is refused instead.
//! - **Evictions are local.** An evicted key is simply absent here: no tombstone is written, so
//!   eviction never spreads as a delete. Repair traffic (read repair today, anti-entropy later)
//!   goes through [`Store::merge_repair`], which only re-adds an absent key while the store is
//!   below its low-water mark, so repair never keeps pulling evicted keys back into a full peer.
//! - **Expiry.** A value's expiry is an absolute instant fixed by its coordinator. Reads never
//!   see expired values (`Siblings::visible_values`); [`Store::expire_step`] reclaims the bytes
//!   of expired values in the background by turning them into tombstones under the same dot,
//!   which replicas merge as tombstones (see `Siblings::merge`).

use crate::core::eviction::{eviction_rank, AccessRecord, EvictionPolicy};
use crate::core::siblings::{Payload, Siblings};
use crate::core::types::Millis;
use crate::core::version_vector::{Actor, Dot, VersionVector};
use indexmap::IndexMap;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use thiserror::Error;

type KeyMap = IndexMap<Vec<u8>, Entry, BuildHasherDefault<DefaultHasher>>;

/// Keys ranked per eviction (Redis's `maxmemory-samples`).
pub const EVICTION_SAMPLES: usize = 5;
/// Keys with an expiry examined per active-expiry round.
pub const EXPIRY_SAMPLES: usize = 20;
/// Repair may re-add a key this store does not hold only below this share of the limit.
pub const REPAIR_LOW_WATER_PERCENT: u64 = 90;
/// Evicted keys an epoch remembers before it ends (8 bytes each).
const EPOCH_MEMORY: usize = 4096;
/// Heap bookkeeping per entry beyond its contents: the map slot and index, allocation headers.
const ENTRY_OVERHEAD: u64 = 144;
/// Per allocation made by an entry (malloc header and rounding, on average).
const ALLOCATION_OVERHEAD: u64 = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreLimits {
    /// Bytes the store may hold; `None` for no limit.
    pub max_memory_bytes: Option<u64>,
    pub policy: EvictionPolicy,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("out of memory: the write needs {needed} bytes, {used} of {limit} are in use and the eviction policy is noeviction")]
pub struct OutOfMemory {
    pub needed: u64,
    pub used: u64,
    pub limit: u64,
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
struct Entry {
    state: Siblings,
    access: AccessRecord,
    bytes: u64,
}

#[derive(Debug)]
pub struct Store {
    entries: KeyMap,
    max_clock_entries: usize,
    limits: StoreLimits,
    used_bytes: u64,
    inserted: u64,
    /// SplitMix64 state for sampling; seeded by the caller, so runs are reproducible.
    rng: u64,
    stats: StoreStats,
    /// When enabled, the states evicted since the last `take_evicted` (for the simulator,
    /// which accounts for what an eviction takes away).
    eviction_log: Option<Vec<(Vec<u8>, Siblings)>>,
    /// The dot-minting epoch (see [`Store::update`]) and the hashes of keys evicted in it.
    epoch: u64,
    evicted_this_epoch: HashSet<u64, BuildHasherDefault<DefaultHasher>>,
}

impl Store {
    pub fn new(max_clock_entries: usize, limits: StoreLimits, seed: u64) -> Self {
        Self {
            entries: KeyMap::default(),
            max_clock_entries,
            limits,
            used_bytes: 0,
            inserted: 0,
            rng: seed,
            stats: StoreStats::default(),
            eviction_log: None,
            epoch: 0,
            evicted_this_epoch: HashSet::default(),
        }
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
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The state of `key` without counting an access (inspection, replication).
    pub fn peek(&self, key: &[u8]) -> Option<&Siblings> {
        self.entries.get(key).map(|e| &e.state)
    }

    /// The state of `key`, counted as an access for LRU and LFU.
    pub fn read(&mut self, key: &[u8], now: Millis) -> Option<&Siblings> {
        let draw = self.draw();
        let entry = self.entries.get_mut(key)?;
        entry.access.touch(now, draw);
        Some(&entry.state)
    }

    /// Applies a client write coordinated by this peer (`actor` is its incarnation); returns
    /// the key's new state and the write's dot.
    ///
    /// A dot's counter claims every lower counter of its actor for this key as seen, so a
    /// store must never mint a dot for a key whose earlier events by the same actor it has
    /// forgotten — which eviction does. Dots are therefore minted under an *epoch* actor,
    /// `{actor}` in epoch 0 and `{actor}.e{epoch}` after: a write to a key evicted during the
    /// current epoch first starts a new epoch, whose actor has no events for any key yet. Every
    /// event of the current epoch's actor for a key is thus still in the store (forgetting it
    /// would have ended the epoch).
    pub fn update(
        &mut self,
        key: &[u8],
        actor: &Actor,
        context: &VersionVector,
        payload: Payload,
        now: Millis,
    ) -> Result<(Siblings, Dot), OutOfMemory> {
        if self.evicted_this_epoch.contains(&key_hash(key)) {
            self.epoch += 1;
            self.evicted_this_epoch.clear();
        }
        let actor = if self.epoch == 0 {
            actor.clone()
        } else {
            Actor(format!("{}.e{}", actor.0, self.epoch))
        };
        let mut state = self.peek(key).cloned().unwrap_or_default();
        let dot = state.update(&actor, context, payload, self.max_clock_entries);
        self.put(key, state.clone(), now)?;
        Ok((state, dot))
    }

    /// Joins a state replicated from another peer (a write's `Store`) into the local one.
    pub fn merge(
        &mut self,
        key: &[u8],
        incoming: &Siblings,
        now: Millis,
    ) -> Result<(), OutOfMemory> {
        let state = match self.peek(key) {
            Some(local) => {
                let merged = local.merged(incoming);
                if merged == *local {
                    return Ok(()); // nothing new
                }
                merged
            }
            None => incoming.clone(),
        };
        self.put(key, state, now)
    }

    /// Joins a repaired state. A key this store does not hold is only added while the store is
    /// below its low-water mark: it may have been evicted, and repair must not refill a full
    /// peer with what it chose to forget. Returns whether the state was applied.
    pub fn merge_repair(&mut self, key: &[u8], incoming: &Siblings, now: Millis) -> bool {
        if !self.entries.contains_key(key) {
            if let Some(limit) = self.limits.max_memory_bytes {
                if self.used_bytes * 100 >= limit * REPAIR_LOW_WATER_PERCENT {
                    self.stats.repairs_declined += 1;
                    return false;
                }
            }
        }
        self.merge(key, incoming, now).is_ok()
    }

    /// Stores `state` for `key`, then evicts other keys until the store is under its limit.
    fn put(&mut self, key: &[u8], state: Siblings, now: Millis) -> Result<(), OutOfMemory> {
        let bytes = footprint(key, &state);
        let old = self.entries.get(key).map(|e| e.bytes).unwrap_or(0);
        if let Some(limit) = self.limits.max_memory_bytes {
            let after = self.used_bytes - old + bytes;
            if self.limits.policy == EvictionPolicy::NoEviction && after > limit && bytes > old {
                return Err(OutOfMemory {
                    needed: bytes - old,
                    used: self.used_bytes,
                    limit,
                });
            }
        }
        let expires_at_ms = state.earliest_expiry();
        let draw = self.draw();
        match self.entries.get_mut(key) {
            Some(entry) => {
                entry.state = state;
                entry.bytes = bytes;
                entry.access.expires_at_ms = expires_at_ms;
                entry.access.touch(now, draw);
            }
            None => {
                self.inserted += 1;
                let mut access = AccessRecord::new(now, self.inserted);
                access.expires_at_ms = expires_at_ms;
                self.entries.insert(
                    key.to_vec(),
                    Entry {
                        state,
                        access,
                        bytes,
                    },
                );
            }
        }
        self.used_bytes = self.used_bytes - old + bytes;
        self.make_room(key, now);
        Ok(())
    }

    /// Evicts sampled keys (never `keep`, the key just written) until under the limit.
    fn make_room(&mut self, keep: &[u8], now: Millis) {
        let Some(limit) = self.limits.max_memory_bytes else {
            return;
        };
        while self.used_bytes > limit && self.entries.len() > 1 {
            let mut best: Option<(u64, usize)> = None;
            for _ in 0..EVICTION_SAMPLES {
                let index = (self.draw() % self.entries.len() as u64) as usize;
                let draw = self.draw();
                let (key, entry) = self.entries.get_index(index).expect("index in range");
                if key.as_slice() == keep {
                    continue;
                }
                if let Some(rank) = eviction_rank(self.limits.policy, &entry.access, now, draw) {
                    if best.is_none_or(|(r, _)| rank < r) {
                        best = Some((rank, index));
                    }
                }
            }
            let Some((_, index)) = best else {
                // Nothing evictable in the sample (volatile-ttl with no expiring keys, or
                // noeviction): the limit is exceeded only by the write just made.
                break;
            };
            let (key, entry) = self
                .entries
                .swap_remove_index(index)
                .expect("index in range");
            self.used_bytes -= entry.bytes;
            self.stats.evicted += 1;
            self.remember_forgotten(&key);
            if let Some(log) = self.eviction_log.as_mut() {
                log.push((key, entry.state));
            }
        }
    }

    /// Drops `key` if its state is still exactly the tombstone-only state `clock` describes
    /// (every replica was seen holding it, a grace period ago). A newer write keeps the key.
    /// Like an eviction, forgetting a key ends the dot-minting epoch if the key is written
    /// again (see [`Store::update`]).
    pub fn forget(&mut self, key: &[u8], clock: &VersionVector) -> bool {
        let Some(entry) = self.entries.get(key) else {
            return false;
        };
        if !entry.state.is_tombstones_only() || entry.state.context() != clock {
            return false;
        }
        let (key, entry) = self.entries.swap_remove_entry(key).expect("present");
        self.used_bytes -= entry.bytes;
        self.stats.tombstones_collected += 1;
        self.remember_forgotten(&key);
        true
    }

    fn remember_forgotten(&mut self, key: &[u8]) {
        if self.evicted_this_epoch.len() >= EPOCH_MEMORY {
            // Forgetting which keys were dropped is safe only in a new epoch.
            self.epoch += 1;
            self.evicted_this_epoch.clear();
        }
        self.evicted_this_epoch.insert(key_hash(key));
    }

    /// Drops every key `doomed` selects, as evictions (logged, and ending the dot-minting
    /// epoch for them); returns how many. Used when a peer regains a partition it may hold
    /// stale copies of.
    pub fn drop_where(&mut self, doomed: impl Fn(&[u8]) -> bool) -> usize {
        let keys: Vec<Vec<u8>> = self.entries.keys().filter(|k| doomed(k)).cloned().collect();
        for key in &keys {
            if let Some((key, entry)) = self.entries.swap_remove_entry(key.as_slice()) {
                self.used_bytes -= entry.bytes;
                self.stats.dropped_stale += 1;
                self.remember_forgotten(&key);
                if let Some(log) = self.eviction_log.as_mut() {
                    log.push((key, entry.state));
                }
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
            let index = (self.draw() % self.entries.len() as u64) as usize;
            let (key, entry) = self.entries.get_index_mut(index).expect("index in range");
            if entry.access.expires_at_ms.is_none_or(|t| t > now) {
                continue;
            }
            let n = entry.state.expire(now);
            if n == 0 {
                continue;
            }
            expired += n;
            let bytes = footprint(key, &entry.state);
            self.used_bytes = self.used_bytes - entry.bytes + bytes;
            entry.bytes = bytes;
            entry.access.expires_at_ms = entry.state.earliest_expiry();
            if entry.state.is_tombstones_only() {
                emptied.push(key.clone());
            }
        }
        self.stats.expired += expired;
        emptied
    }

    /// Every key held, in no particular order (the simulator's final inspection).
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Siblings)> {
        self.entries.iter().map(|(k, e)| (k, &e.state))
    }

    /// Number of keys held (including tombstoned ones).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
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
        let _ = self.put(key, state, now);
    }

    /// Planted bug: forgets every sibling of `key` but the one with the greatest dot.
    #[cfg(feature = "planted-bugs")]
    pub fn keep_only_newest_sibling(&mut self, key: &[u8], now: Millis) {
        if let Some(mut state) = self.peek(key).cloned() {
            state.keep_only_newest();
            let _ = self.put(key, state, now);
        }
    }
}

/// A key's hash for the epoch's eviction memory (a collision only starts an epoch early).
fn key_hash(key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = DefaultHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// Estimated heap bytes an entry occupies: key, state contents, and per-allocation and
/// per-entry overhead.
pub fn footprint(key: &[u8], state: &Siblings) -> u64 {
    let allocations = 1 + state.allocations() as u64;
    ENTRY_OVERHEAD
        + key.len() as u64
        + state.heap_bytes() as u64
        + allocations * ALLOCATION_OVERHEAD
}

#[cfg(test)]
mod tests;
