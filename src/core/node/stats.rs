//! What a peer reports about itself: [`NodeStats`], and the counters the node keeps for it.
//!
//! Hits and misses count the reads this node coordinated for clients (not those it makes
//! itself to collect tombstones, nor the reads of expires); the store keeps its own figures.

use super::Node;
use crate::core::request::ClientReply;
use serde::{Deserialize, Serialize};

/// What a peer reports at `GET /v1/stats`: its reads, its store, its repairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Reads this peer coordinated that found a value.
    pub hits: u64,
    /// Reads this peer coordinated that found none (absent, deleted or expired).
    pub misses: u64,
    /// Keys in this peer's store (tombstoned ones included).
    pub keys: u64,
    /// Values whose bytes active expiry reclaimed.
    pub expired: u64,
    /// Keys evicted to stay under the memory limit.
    pub evicted: u64,
    pub memory_used_bytes: u64,
    /// `None` when the store has no limit.
    pub memory_limit_bytes: Option<u64>,
    pub read_repairs: u64,
    /// Replicas a read asked beyond the R it first asked (see `CoreConfig::read_spare_after_ms`).
    #[serde(default)]
    pub read_spares_asked: u64,
    /// Repairs not applied because the store was near its limit.
    pub repairs_declined: u64,
    /// Tombstone-only keys collected after every replica held them.
    pub tombstones_collected: u64,
    /// Anti-entropy exchanges this peer started and finished.
    pub anti_entropy_exchanges: u64,
    /// Keys whose state anti-entropy changed here.
    pub anti_entropy_keys_repaired: u64,
    /// States this peer sent in anti-entropy exchanges.
    pub anti_entropy_keys_sent: u64,
    /// Bytes of anti-entropy messages this peer sent.
    pub anti_entropy_bytes_sent: u64,
    /// States not taken or not asked for because the store was full.
    pub anti_entropy_declined: u64,
    /// States not sent because they held no visible value and the peer lacked the key.
    pub anti_entropy_skipped: u64,
    /// Bytes of the hash trees (a fixed cost per partition held, outside the memory limit).
    pub hash_tree_bytes: u64,
    /// Writes this peer coordinated that left their key with concurrent values (siblings).
    #[serde(default)]
    pub siblings_created: u64,
    /// The most siblings a key held after a write this peer coordinated.
    #[serde(default)]
    pub largest_sibling_set: u64,
    /// Blind writes refused because the key would pass `--max-siblings` or
    /// `--max-state-bytes` (409).
    #[serde(default)]
    pub writes_refused_by_sibling_cap: u64,
    /// Hints this peer holds for replicas believed down (sloppy quorum), waiting for delivery.
    #[serde(default)]
    pub hints_pending: u64,
    /// Hints handed over to their owners and acknowledged.
    #[serde(default)]
    pub hints_delivered: u64,
    /// Hints refused because this peer's bound for their owner was reached.
    #[serde(default)]
    pub hints_dropped: u64,
    /// Hints given up because their owner's full store refused them.
    #[serde(default)]
    pub hints_refused: u64,
    /// Hints given up undelivered at the end of their lifetime (`CoreConfig::hint_lifetime_ms`).
    #[serde(default)]
    pub hints_expired: u64,
    /// Client writes this peer forwarded to a replica because it is not one of the key's
    /// replicas (the hop a ring-aware client saves).
    #[serde(default)]
    pub writes_forwarded: u64,
    /// Client writes (puts, deletes, expires) this peer received.
    #[serde(default)]
    pub client_writes: u64,
    /// Conditional writes this peer proposed that applied / whose condition did not hold.
    #[serde(default)]
    pub conditional_applied: u64,
    #[serde(default)]
    pub conditional_not_applied: u64,
    /// Paxos rounds this peer started again (contention, or an earlier proposal finished).
    #[serde(default)]
    pub conditional_retries: u64,
    /// Handoff batches this peer deferred on arrival to pace its intake (sent again later).
    #[serde(default)]
    pub handoff_batches_deferred: u64,
    /// Milliseconds its engine shards spent busy serving clients, their anti-entropy and
    /// handoff budget refilling at the busy share (summed over shards).
    #[serde(default)]
    pub background_yield_ms: u64,
}

impl NodeStats {
    /// Hits over reads, or `None` before the first read.
    pub fn hit_ratio(&self) -> Option<f64> {
        let reads = self.hits + self.misses;
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }

    /// Cluster-wide figures: the sum over peers (limits add up too).
    pub fn add(&mut self, other: &NodeStats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.keys += other.keys;
        self.expired += other.expired;
        self.evicted += other.evicted;
        self.memory_used_bytes += other.memory_used_bytes;
        self.memory_limit_bytes = match (self.memory_limit_bytes, other.memory_limit_bytes) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.read_repairs += other.read_repairs;
        self.read_spares_asked += other.read_spares_asked;
        self.repairs_declined += other.repairs_declined;
        self.tombstones_collected += other.tombstones_collected;
        self.anti_entropy_exchanges += other.anti_entropy_exchanges;
        self.anti_entropy_keys_repaired += other.anti_entropy_keys_repaired;
        self.anti_entropy_keys_sent += other.anti_entropy_keys_sent;
        self.anti_entropy_bytes_sent += other.anti_entropy_bytes_sent;
        self.anti_entropy_declined += other.anti_entropy_declined;
        self.anti_entropy_skipped += other.anti_entropy_skipped;
        self.hash_tree_bytes += other.hash_tree_bytes;
        self.siblings_created += other.siblings_created;
        self.largest_sibling_set = self.largest_sibling_set.max(other.largest_sibling_set);
        self.writes_refused_by_sibling_cap += other.writes_refused_by_sibling_cap;
        self.hints_pending += other.hints_pending;
        self.hints_delivered += other.hints_delivered;
        self.hints_dropped += other.hints_dropped;
        self.hints_refused += other.hints_refused;
        self.hints_expired += other.hints_expired;
        self.writes_forwarded += other.writes_forwarded;
        self.conditional_applied += other.conditional_applied;
        self.conditional_not_applied += other.conditional_not_applied;
        self.conditional_retries += other.conditional_retries;
        self.handoff_batches_deferred += other.handoff_batches_deferred;
        self.background_yield_ms += other.background_yield_ms;
        self.client_writes += other.client_writes;
    }
}

/// The node's own counters, since start.
#[derive(Default)]
pub(super) struct Counters {
    /// Reads this node coordinated that found a value / found none.
    pub(super) hits: u64,
    pub(super) misses: u64,
    /// Replicas sent a merged state by read repair.
    pub(super) read_repairs: u64,
    /// Replicas reads asked beyond the R they first asked.
    pub(super) read_spares_asked: u64,
    /// Writes this node coordinated that left their key with more than one sibling.
    pub(super) siblings_created: u64,
    /// The most siblings a key held after a write this node coordinated.
    pub(super) largest_sibling_set: u64,
    /// Writes refused by the sibling or state-size cap.
    pub(super) refused_by_sibling_cap: u64,
    /// Client writes forwarded to a replica to coordinate.
    pub(super) writes_forwarded: u64,
    /// Client writes received.
    pub(super) client_writes: u64,
    /// Conditional writes this node proposed that applied / whose condition failed.
    pub(super) conditional_applied: u64,
    pub(super) conditional_not_applied: u64,
    /// Paxos rounds started again (a higher ballot about, or an earlier proposal finished).
    pub(super) conditional_retries: u64,
    /// Handoff batches deferred on arrival to pace intake.
    pub(super) handoff_batches_deferred: u64,
}

impl Counters {
    /// Notes the sibling count a coordinated write left its key with.
    pub(super) fn note_siblings(&mut self, siblings: usize) {
        if siblings > 1 {
            self.siblings_created += 1;
        }
        self.largest_sibling_set = self.largest_sibling_set.max(siblings as u64);
    }

    /// Counts a client read's reply as a hit or a miss (a failure is neither).
    pub(super) fn count_read(&mut self, reply: &ClientReply) {
        match reply {
            ClientReply::Found { .. } => self.hits += 1,
            ClientReply::NotFound { .. } => self.misses += 1,
            _ => {}
        }
    }
}

impl Node {
    pub fn stats(&self) -> NodeStats {
        let store = self.store.stats();
        let ae = self.anti_entropy.stats();
        NodeStats {
            hits: self.counters.hits,
            misses: self.counters.misses,
            keys: self.store.len() as u64,
            expired: store.expired,
            evicted: store.evicted,
            memory_used_bytes: self.store.used_bytes(),
            memory_limit_bytes: self.store.limits().max_memory_bytes,
            read_repairs: self.counters.read_repairs,
            read_spares_asked: self.counters.read_spares_asked,
            repairs_declined: store.repairs_declined,
            tombstones_collected: store.tombstones_collected,
            anti_entropy_exchanges: ae.exchanges,
            anti_entropy_keys_repaired: ae.keys_repaired,
            anti_entropy_keys_sent: ae.keys_sent,
            anti_entropy_bytes_sent: ae.bytes_sent,
            anti_entropy_declined: ae.declined,
            anti_entropy_skipped: ae.skipped,
            hash_tree_bytes: self.store.trees().heap_bytes(),
            siblings_created: self.counters.siblings_created,
            largest_sibling_set: self.counters.largest_sibling_set,
            writes_refused_by_sibling_cap: self.counters.refused_by_sibling_cap,
            hints_pending: self.hints.len() as u64,
            hints_delivered: self.hints.counters.delivered,
            hints_dropped: self.hints.counters.dropped,
            hints_refused: self.hints.counters.refused,
            hints_expired: self.hints.counters.expired,
            writes_forwarded: self.counters.writes_forwarded,
            client_writes: self.counters.client_writes,
            conditional_applied: self.counters.conditional_applied,
            conditional_not_applied: self.counters.conditional_not_applied,
            conditional_retries: self.counters.conditional_retries,
            handoff_batches_deferred: self.counters.handoff_batches_deferred,
            background_yield_ms: ae.yield_ms,
        }
    }

    /// Anti-entropy's figures since start.
    pub fn anti_entropy_stats(&self) -> super::AntiEntropyStats {
        self.anti_entropy.stats()
    }

    /// How many replica states read repair has corrected since start.
    pub fn read_repairs(&self) -> u64 {
        self.counters.read_repairs
    }
}
