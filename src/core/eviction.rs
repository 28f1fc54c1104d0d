//! Which key a full store gives up first: the eviction policies and the per-key access record
//! they rank by.
//!
//! Policies follow Redis: approximate LRU and LFU by sampling (the store ranks a handful of
//! random keys and evicts the lowest), LFU with a logarithmic 8-bit counter that decays with
//! idle time, FIFO by insertion order, random, volatile-TTL (soonest expiry first, only keys
//! that have one), and no eviction. Under every policy, a write the store cannot make room for
//! by evicting what the policy allows is refused (as Redis answers OOM); under `noeviction`
//! that is every write past the limit. Everything here is a pure function of the record, the
//! time and a random draw handed in — never an ambient random source.

use crate::core::types::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EvictionPolicy {
    /// Least recently used (sampled).
    #[default]
    Lru,
    /// Least frequently used (sampled; counters decay with idle time).
    Lfu,
    /// Oldest insertion first.
    Fifo,
    Random,
    /// Soonest expiry first; keys without a TTL are never evicted.
    VolatileTtl,
    /// Never evict: writes that would exceed the limit fail, reads keep working.
    NoEviction,
}

impl EvictionPolicy {
    pub const ALL: [EvictionPolicy; 6] = [
        EvictionPolicy::Lru,
        EvictionPolicy::Lfu,
        EvictionPolicy::Fifo,
        EvictionPolicy::Random,
        EvictionPolicy::VolatileTtl,
        EvictionPolicy::NoEviction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::Lru => "lru",
            EvictionPolicy::Lfu => "lfu",
            EvictionPolicy::Fifo => "fifo",
            EvictionPolicy::Random => "random",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
            EvictionPolicy::NoEviction => "noeviction",
        }
    }

    /// Whether the policy may evict a key at all, given whether the key has an expiry:
    /// exactly when [`eviction_rank`] ranks it. A full store counts the bytes it could free
    /// by this, so it knows before a write whether room can be made.
    pub fn evicts(self, has_expiry: bool) -> bool {
        match self {
            EvictionPolicy::VolatileTtl => has_expiry,
            EvictionPolicy::NoEviction => false,
            _ => true,
        }
    }
}

impl fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown eviction policy {0:?}: one of lru, lfu, fifo, random, volatile-ttl, noeviction")]
pub struct UnknownPolicy(pub String);

impl FromStr for EvictionPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EvictionPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// A new key's LFU counter, so it is not evicted before it had a chance to be read again.
pub const LFU_INITIAL: u8 = 5;
/// Redis's `lfu-log-factor`: higher makes the counter grow more slowly.
pub const LFU_LOG_FACTOR: u64 = 10;
/// Idle time that takes one off an LFU counter (Redis's `lfu-decay-time`, one minute).
pub const LFU_DECAY_MS: Millis = 60_000;

/// What the policies know about one key, in 16 bytes: the last access (LRU, and the instant
/// the LFU counter was last brought up to date: both move together), and the insertion order
/// (FIFO, 56 bits) packed with the LFU counter (8 bits). A key's expiry, which volatile-TTL
/// ranks by, lives with its versions and is handed to [`eviction_rank`] separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    last_access_ms: Millis,
    order_and_lfu: u64,
}

impl AccessRecord {
    pub fn new(now: Millis, inserted: u64) -> Self {
        Self::from_parts(now, LFU_INITIAL, inserted)
    }

    /// A record as of its last access at `last_access_ms` (insertion orders wrap at 2^56).
    pub fn from_parts(last_access_ms: Millis, lfu: u8, inserted: u64) -> Self {
        Self {
            last_access_ms,
            order_and_lfu: (inserted << 8) | lfu as u64,
        }
    }

    pub fn last_access_ms(&self) -> Millis {
        self.last_access_ms
    }

    /// Insertion order (FIFO).
    pub fn inserted(&self) -> u64 {
        self.order_and_lfu >> 8
    }

    /// Logarithmic access counter (LFU), as of the last access.
    pub fn lfu(&self) -> u8 {
        self.order_and_lfu as u8
    }

    /// The LFU counter after decaying for the idle time up to `now`.
    pub fn decayed_lfu(&self, now: Millis) -> u8 {
        let periods = now.saturating_sub(self.last_access_ms) / LFU_DECAY_MS;
        self.lfu().saturating_sub(periods.min(255) as u8)
    }

    /// Records an access at `now`; `draw` is a uniform random number for the counter's
    /// probabilistic increment (Redis's: p = 1 / ((counter - initial) * factor + 1)).
    pub fn touch(&mut self, now: Millis, draw: u64) {
        let mut counter = self.decayed_lfu(now);
        if counter < u8::MAX {
            let base = counter.saturating_sub(LFU_INITIAL) as u64;
            let p_inverse = base * LFU_LOG_FACTOR + 1;
            if draw % p_inverse == 0 {
                counter += 1;
            }
        }
        *self = Self::from_parts(now, counter, self.inserted());
    }
}

/// Where a key stands in line for eviction under `policy`: lower goes first. `None` means the
/// policy never evicts this key. `draw` is a uniform random number (used by `Random`).
/// `expires_at_ms` is the key's earliest expiry, if it has one.
pub fn eviction_rank(
    policy: EvictionPolicy,
    record: &AccessRecord,
    expires_at_ms: Option<Millis>,
    now: Millis,
    draw: u64,
) -> Option<u64> {
    match policy {
        EvictionPolicy::Lru => Some(record.last_access_ms),
        // Least frequent first; among equals, least recently used.
        EvictionPolicy::Lfu => Some(
            ((record.decayed_lfu(now) as u64) << 48) | (record.last_access_ms() & ((1 << 48) - 1)),
        ),
        EvictionPolicy::Fifo => Some(record.inserted()),
        EvictionPolicy::Random => Some(draw),
        EvictionPolicy::VolatileTtl => expires_at_ms,
        EvictionPolicy::NoEviction => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Record = (AccessRecord, Option<Millis>);

    fn record(last: Millis, lfu: u8, inserted: u64, expires: Option<Millis>) -> Record {
        (AccessRecord::from_parts(last, lfu, inserted), expires)
    }

    /// Ranks three keys under a policy and returns the one it would evict.
    fn victim(policy: EvictionPolicy, keys: &[(&'static str, Record)]) -> Option<&'static str> {
        keys.iter()
            .enumerate()
            .filter_map(|(i, (name, (r, expires)))| {
                eviction_rank(policy, r, *expires, 1_000, i as u64).map(|k| (k, *name))
            })
            .min()
            .map(|(_, name)| name)
    }

    // A scripted pattern: "old" was inserted first and read often long ago; "hot" is read
    // constantly; "new" was inserted last, read once just now, and expires soonest.
    fn scripted() -> Vec<(&'static str, Record)> {
        vec![
            ("old", record(100, 20, 1, Some(9_000))),
            ("hot", record(900, 30, 2, None)),
            ("new", record(990, LFU_INITIAL, 3, Some(2_000))),
        ]
    }

    #[test]
    fn each_policy_picks_its_victim_on_a_scripted_pattern() {
        let keys = scripted();
        assert_eq!(victim(EvictionPolicy::Lru, &keys), Some("old"));
        assert_eq!(victim(EvictionPolicy::Lfu, &keys), Some("new"));
        assert_eq!(victim(EvictionPolicy::Fifo, &keys), Some("old"));
        assert_eq!(victim(EvictionPolicy::VolatileTtl, &keys), Some("new"));
        assert_eq!(
            victim(EvictionPolicy::Random, &keys),
            Some("old"),
            "lowest draw"
        );
        assert_eq!(victim(EvictionPolicy::NoEviction, &keys), None);
        // Volatile-TTL never picks a key without expiry.
        let no_ttl = vec![("hot", record(900, 30, 2, None))];
        assert_eq!(victim(EvictionPolicy::VolatileTtl, &no_ttl), None);
    }

    #[test]
    fn evicts_agrees_with_the_rank() {
        let r = AccessRecord::new(0, 0);
        for p in EvictionPolicy::ALL {
            for expiry in [None, Some(5)] {
                assert_eq!(
                    p.evicts(expiry.is_some()),
                    eviction_rank(p, &r, expiry, 1, 3).is_some(),
                    "{p}, {expiry:?}"
                );
            }
        }
    }

    #[test]
    fn lfu_counters_grow_logarithmically_and_decay_when_idle() {
        let mut r = AccessRecord::new(0, 0);
        // Every draw of 0 increments; the counter climbs one step per access.
        for _ in 0..10 {
            r.touch(0, 0);
        }
        assert_eq!(r.lfu(), LFU_INITIAL + 10);
        // Draws that are not multiples of the (growing) inverse probability do not.
        let before = r.lfu();
        r.touch(0, 1);
        assert_eq!(r.lfu(), before);
        // Three idle minutes take three off.
        assert_eq!(r.decayed_lfu(3 * LFU_DECAY_MS), before - 3);
    }

    #[test]
    fn policy_names_round_trip_and_bad_names_are_refused() {
        for p in EvictionPolicy::ALL {
            assert_eq!(p.name().parse::<EvictionPolicy>(), Ok(p));
        }
        assert!("mru".parse::<EvictionPolicy>().is_err());
    }
}
