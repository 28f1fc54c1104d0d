//! Hot-key detection: which keys this peer is asked about most, by reads and by writes, over
//! the last minute or two.
//!
//! Why: in a cache one key can draw a large share of all requests (a celebrity's profile, a
//! config blob) and overload the few peers that replicate it. An operator must be able to see
//! such keys before relieving them (`GET /v1/hotkeys`).
//!
//! How: a Space-Saving sketch (Metwally, Agrawal and El Abbadi, 2005) of [`CAPACITY`] counters
//! per window. Every key the peer coordinates for a client is counted; when the sketch is full, the
//! least counted key is replaced and its estimate inherited as the newcomer's possible
//! undercount (`error`). Any key making up more than 1/[`CAPACITY`] of a window's requests is
//! guaranteed to be in it; its true count lies between `reads + writes` (counted since it
//! entered) and that plus `error`. Windows rotate every [`WINDOW`]; a report sums the current window and the
//! previous one, so it always covers between one and two windows.
//!
//! Promises: memory is bounded ([`CAPACITY`] entries per window, each key kept to at most
//! [`KEY_BYTES_KEPT`] bytes for display and identified by a 64-bit hash); counting a request is
//! a hash, an index lookup and, for a key new to the sketch, a replacement at O(1) amortized
//! (reusing the replaced key's buffer), under a lock held for nothing else
//! (`benches/hot_keys.rs`).

use serde::{Deserialize, Serialize};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters per window.
pub const CAPACITY: usize = 128;
/// How long one window lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Bytes of a key kept for display.
pub const KEY_BYTES_KEPT: usize = 256;

/// Whether a request read or wrote its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One hot key as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotKey {
    /// The key, when it is UTF-8 (first [`KEY_BYTES_KEPT`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key's first [`KEY_BYTES_KEPT`] bytes, base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// Whether the key is longer than what is shown.
    #[serde(default)]
    pub truncated: bool,
    pub reads: u64,
    pub writes: u64,
    /// How many more requests the key may have had than `reads + writes` (0: exact).
    pub error: u64,
}

impl HotKey {
    /// The estimate keys are ranked by: counted requests plus the possible undercount.
    pub fn estimate(&self) -> u64 {
        self.reads + self.writes + self.error
    }
}

#[derive(Clone, Debug)]
struct Counter {
    shown: Vec<u8>,
    truncated: bool,
    reads: u64,
    writes: u64,
    error: u64,
}

impl Counter {
    fn total(&self) -> u64 {
        self.reads + self.writes
    }
}

/// The sketch index's hasher: a key's id is already SipHash under secret keys, so it is used
/// as it is rather than hashed again.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// One window's Space-Saving sketch: counters in a vector, found by key hash through an index.
///
/// Finding the least counted key must not cost a scan of every counter per new key (a
/// cache's keys are mostly new to the sketch). Within a window no estimate ever decreases, and
/// a replaced counter starts above the minimum, so the set of counters at the minimum only
/// shrinks until it is empty: `at_min` lists them (lowest slot last), a counter that has
/// since been counted is skipped when it comes up, and one scan refills the list when it runs
/// out. The victim is the same as a full scan's (the lowest slot at the minimum), at O(1)
/// amortized.
#[derive(Default)]
struct Sketch {
    slots: Vec<(u64, Counter)>,
    index: HashMap<u64, usize, BuildHasherDefault<IdHasher>>,
    /// The least estimate among the slots, as of the last scan (no slot is below it).
    min_estimate: u64,
    /// Slots that had `min_estimate` at the last scan, the lowest last.
    at_min: Vec<usize>,
}

impl Sketch {
    fn observe(&mut self, id: u64, key: &[u8], access: Access) {
        let slot = match self.index.get(&id) {
            Some(&slot) => slot,
            None => {
                let shown = &key[..key.len().min(KEY_BYTES_KEPT)];
                let truncated = shown.len() < key.len();
                let slot = if self.slots.len() < CAPACITY {
                    let counter = Counter {
                        shown: shown.to_vec(),
                        truncated,
                        reads: 0,
                        writes: 0,
                        error: 0,
                    };
                    // `at_min` is empty until the sketch is full, and a full sketch stays full.
                    self.slots.push((id, counter));
                    self.slots.len() - 1
                } else {
                    let slot = self.least_counted();
                    let min = self.min_estimate;
                    let (victim, counter) = &mut self.slots[slot];
                    self.index.remove(victim);
                    *victim = id;
                    // The victim's buffer is reused: no allocation per new key.
                    counter.shown.clear();
                    counter.shown.extend_from_slice(shown);
                    counter.truncated = truncated;
                    counter.reads = 0;
                    counter.writes = 0;
                    // The least counted key's count, inherited as a possible overestimate.
                    counter.error = min;
                    slot
                };
                self.index.insert(id, slot);
                slot
            }
        };
        let counter = &mut self.slots[slot].1;
        match access {
            Access::Read => counter.reads += 1,
            Access::Write => counter.writes += 1,
        }
    }

    /// The lowest slot holding the least estimate (the sketch is full).
    fn least_counted(&mut self) -> usize {
        let estimate = |c: &Counter| c.total() + c.error;
        while let Some(slot) = self.at_min.pop() {
            if estimate(&self.slots[slot].1) == self.min_estimate {
                return slot;
            }
        }
        self.min_estimate = self
            .slots
            .iter()
            .map(|(_, c)| estimate(c))
            .min()
            .expect("a full sketch has counters");
        let min = self.min_estimate;
        self.at_min = (0..self.slots.len())
            .rev()
            .filter(|&i| estimate(&self.slots[i].1) == min)
            .collect();
        self.at_min
            .pop()
            .expect("some slot holds the least estimate")
    }
}

struct Windows {
    current: Sketch,
    previous: Sketch,
    started: Instant,
}

/// A peer's hot-key sketch; clones share it.
#[derive(Clone)]
pub struct HotKeys {
    windows: Arc<Mutex<Windows>>,
    /// Keys' 64-bit identities: SipHash under this process's random keys (cheaper than a
    /// cryptographic hash on every request; unknown keys, so a client cannot pick keys that
    /// share an identity and so share a counter).
    ids: RandomState,
}

impl HotKeys {
    pub fn new(now: Instant) -> HotKeys {
        HotKeys {
            windows: Arc::new(Mutex::new(Windows {
                current: Sketch::default(),
                previous: Sketch::default(),
                started: now,
            })),
            ids: RandomState::new(),
        }
    }

    /// Counts one request for `key`.
    pub fn observe(&self, key: &[u8], access: Access, now: Instant) {
        let id = self.ids.hash_one(key);
        let mut w = self.windows.lock().expect("hot keys lock");
        if now.duration_since(w.started) >= WINDOW {
            // A window passed: the current one becomes the previous (or, after a long quiet
            // spell, both are stale and the previous one is cleared too).
            let stale = now.duration_since(w.started) >= 2 * WINDOW;
            w.previous = std::mem::take(&mut w.current);
            if stale {
                w.previous = Sketch::default();
            }
            w.started = now;
        }
        w.current.observe(id, key, access);
    }

    /// The `limit` hottest keys over the current and the previous window, hottest first.
    pub fn top(&self, limit: usize) -> Vec<HotKey> {
        let w = self.windows.lock().expect("hot keys lock");
        let mut merged: HashMap<u64, Counter> = HashMap::new();
        for (id, c) in w.previous.slots.iter().chain(&w.current.slots) {
            merged
                .entry(*id)
                .and_modify(|m| {
                    m.reads += c.reads;
                    m.writes += c.writes;
                    m.error += c.error;
                })
                .or_insert_with(|| c.clone());
        }
        drop(w);
        let mut keys: Vec<(u64, Counter)> = merged.into_iter().collect();
        keys.sort_by(|(ia, a), (ib, b)| {
            (b.total() + b.error)
                .cmp(&(a.total() + a.error))
                .then(ia.cmp(ib))
        });
        keys.into_iter()
            .take(limit)
            .map(|(_, c)| shown(c))
            .collect()
    }
}

/// Sums per-peer reports into one cluster-wide list (same key: counts and errors add up).
pub fn merge_reports(reports: &[Vec<HotKey>], limit: usize) -> Vec<HotKey> {
    let mut merged: Vec<HotKey> = Vec::new();
    for key in reports.iter().flatten() {
        match merged
            .iter_mut()
            .find(|m| m.key == key.key && m.key_base64 == key.key_base64)
        {
            Some(m) => {
                m.reads += key.reads;
                m.writes += key.writes;
                m.error += key.error;
            }
            None => merged.push(key.clone()),
        }
    }
    merged.sort_by_key(|k| std::cmp::Reverse(k.estimate()));
    merged.truncate(limit);
    merged
}

fn shown(c: Counter) -> HotKey {
    use base64::Engine;
    let (key, key_base64) = match String::from_utf8(c.shown) {
        Ok(s) => (Some(s), None),
        Err(e) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
        ),
    };
    HotKey {
        key,
        key_base64,
        truncated: c.truncated,
        reads: c.reads,
        writes: c.writes,
        error: c.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heavy_hitters_of_a_skewed_stream_are_found_with_bounded_error() {
        let start = Instant::now();
        let hot = HotKeys::new(start);
        // 10,000 distinct cold keys seen once each, and three hot ones seen often.
        for i in 0..10_000u32 {
            hot.observe(format!("cold-{i}").as_bytes(), Access::Read, start);
            if i % 10 == 0 {
                hot.observe(b"hot-a", Access::Read, start);
            }
            if i % 20 == 0 {
                hot.observe(b"hot-b", Access::Write, start);
            }
            if i % 40 == 0 {
                hot.observe(b"hot-c", Access::Read, start);
            }
        }
        let top = hot.top(3);
        let names: Vec<_> = top.iter().map(|k| k.key.clone().unwrap()).collect();
        assert_eq!(names, ["hot-a", "hot-b", "hot-c"]);
        // The true count lies between what was counted and that plus the error.
        for (k, truth) in top.iter().zip([1_000u64, 500, 250]) {
            assert!(k.reads + k.writes <= truth, "{k:?}");
            assert!(truth <= k.estimate(), "{k:?}");
        }
    }

    #[test]
    fn memory_stays_bounded_and_long_keys_are_cut_for_display() {
        let start = Instant::now();
        let hot = HotKeys::new(start);
        let long = vec![b'x'; 10_000];
        for i in 0..50_000u32 {
            hot.observe(&i.to_le_bytes(), Access::Read, start);
        }
        for _ in 0..10 {
            hot.observe(&long, Access::Write, start);
        }
        let w = hot.windows.lock().unwrap();
        assert!(w.current.slots.len() <= CAPACITY);
        assert!(w.current.index.len() <= CAPACITY);
        assert!(w
            .current
            .slots
            .iter()
            .all(|(_, c)| c.shown.len() <= KEY_BYTES_KEPT));
        drop(w);
        let top = hot.top(1);
        assert!(top[0].truncated);
        assert_eq!(top[0].key.as_deref().map(str::len), Some(KEY_BYTES_KEPT));
        assert_eq!(top[0].writes, 10);
    }

    #[test]
    fn windows_rotate_and_old_traffic_fades_out() {
        let start = Instant::now();
        let hot = HotKeys::new(start);
        hot.observe(b"early", Access::Read, start);
        // One window later it is still reported (previous window)...
        hot.observe(b"late", Access::Read, start + WINDOW);
        let names: Vec<_> = hot.top(10).into_iter().map(|k| k.key.unwrap()).collect();
        assert!(names.contains(&"early".to_string()));
        // ...two windows later it is gone.
        hot.observe(b"later", Access::Read, start + 2 * WINDOW);
        let names: Vec<_> = hot.top(10).into_iter().map(|k| k.key.unwrap()).collect();
        assert!(!names.contains(&"early".to_string()), "{names:?}");
        assert!(names.contains(&"late".to_string()));
    }

    /// The sketch as first written: a scan of every counter for the least counted one.
    fn reference_observe(slots: &mut Vec<(u64, u64)>, id: u64) {
        if let Some(slot) = slots.iter().position(|(k, _)| *k == id) {
            slots[slot].1 += 1;
        } else if slots.len() < CAPACITY {
            slots.push((id, 1));
        } else {
            let (slot, min) = slots
                .iter()
                .enumerate()
                .map(|(i, (_, estimate))| (i, *estimate))
                .min_by_key(|&(i, estimate)| (estimate, i))
                .unwrap();
            slots[slot] = (id, min + 1);
        }
    }

    #[test]
    fn the_least_counted_key_is_the_one_a_full_scan_would_replace() {
        // A skewed stream of many keys, some of them hot: every replacement must pick the same
        // victim as a scan of all counters, so the sketches stay equal slot for slot.
        let mut sketch = Sketch::default();
        let mut reference = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = match state % 10 {
                0..=2 => state % 8,
                3..=5 => state % 300,
                _ => state % 50_000,
            };
            sketch.observe(id, &id.to_le_bytes(), Access::Read);
            reference_observe(&mut reference, id);
        }
        let estimates: Vec<(u64, u64)> = sketch
            .slots
            .iter()
            .map(|(id, c)| (*id, c.total() + c.error))
            .collect();
        assert_eq!(estimates, reference);
        assert!(sketch
            .slots
            .iter()
            .all(|(id, c)| c.shown == id.to_le_bytes()));
    }

    #[test]
    fn cluster_reports_add_up_per_key() {
        let k = |name: &str, reads| HotKey {
            key: Some(name.into()),
            key_base64: None,
            truncated: false,
            reads,
            writes: 0,
            error: 0,
        };
        let merged = merge_reports(&[vec![k("a", 5), k("b", 9)], vec![k("a", 7)]], 10);
        assert_eq!(merged[0].key.as_deref(), Some("a"));
        assert_eq!(merged[0].reads, 12);
        assert_eq!(merged[1].reads, 9);
    }
}
