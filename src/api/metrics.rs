//! `GET /metrics`: the peer's figures in the Prometheus text format, for any monitoring
//! system that scrapes.
//!
//! Why: `/v1/stats` is JSON for people and scripts; operators run Prometheus (or anything that
//! reads its format) and need rates, latency percentiles and alerts, which take counters and
//! histograms with conventional names.
//!
//! What: request counters and latency histograms by operation, consistency level and outcome,
//! recorded by the HTTP handlers ([`RequestMetrics::observe`]); and, read at scrape time from
//! the peer's status, its store (keys, memory, evictions, expiries), repairs, anti-entropy,
//! hints, conflicts, forwards, conditional writes, membership and pub/sub. Names follow
//! Prometheus conventions (`ringcache_` prefix, `_total` for counters, `_seconds`, `_bytes`);
//! `docs/operations.md` lists them. Built on `prometheus-client` (the Prometheus project's own Rust client): one
//! registry per peer, so several peers in one process never mix their figures.

use crate::core::request::{ClientReply, ClientRequest, RequestError};
use crate::core::types::Quorum;
use crate::shell::driver::Status;
use crate::shell::pubsub::PubSubStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::time::Duration;

/// The labels of one kind of request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `put`, `delete` or `expire`.
    pub op: &'static str,
    /// The quorum asked for: `one`, `quorum`, `all` or a number.
    pub consistency: Cow<'static, str>,
}

/// The labels of one request's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub op: &'static str,
    pub consistency: Cow<'static, str>,
    /// `ok`, `not_found`, or the error's kind (`unavailable`, `timeout`, `bad_request`, ...).
    pub outcome: &'static str,
}

/// Counters and histograms the HTTP handlers feed; clones share them.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<OutcomeLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    /// HTTP key requests answered by the direct path past the router (`api::http`).
    direct: Counter,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s in 16 doubling steps.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            direct: Counter::default(),
        }
    }
}

impl RequestMetrics {
    /// What kind of request this is, for the labels.
    pub fn labels(request: &ClientRequest) -> RequestLabels {
        let (op, consistency) = match request {
            ClientRequest::Get { r, .. } => ("get", level(r)),
            ClientRequest::Write(w) => {
                let op = match w.write {
                    crate::core::request::WriteKind::Put { .. } => "put",
                    crate::core::request::WriteKind::Delete => "delete",
                    crate::core::request::WriteKind::Expire { .. } => "expire",
                    crate::core::request::WriteKind::Increment { .. } => "incr",
                };
                (op, level(&w.w))
            }
            // Decided by a Paxos round among a majority of the replicas.
            ClientRequest::Conditional(_) => ("cas", Cow::Borrowed("serial")),
        };
        RequestLabels { op, consistency }
    }

    /// Records one key request: its kind, how long it took and how it ended.
    /// Counts an HTTP key request answered by the direct path past the router.
    pub fn observe_direct(&self) {
        self.direct.inc();
    }

    pub fn observe(&self, labels: RequestLabels, reply: &ClientReply, took: Duration) {
        let RequestLabels { op, consistency } = labels;
        let outcome = outcome_of(reply);
        self.requests
            .get_or_create(&OutcomeLabels {
                op,
                consistency: consistency.clone(),
                outcome,
            })
            .inc();
        self.latency
            .get_or_create(&RequestLabels { op, consistency })
            .observe(took.as_secs_f64());
    }
}

/// A quorum as its label, spelt as `Quorum` displays it; no allocation for the levels
/// requests name (every one but a count above nine).
fn level(quorum: &Quorum) -> Cow<'static, str> {
    const COUNTS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match quorum {
        Quorum::One => Cow::Borrowed("one"),
        Quorum::Quorum => Cow::Borrowed("quorum"),
        Quorum::All => Cow::Borrowed("all"),
        Quorum::Exactly(k) => match COUNTS.get(*k) {
            Some(count) => Cow::Borrowed(count),
            None => Cow::Owned(k.to_string()),
        },
    }
}

/// A reply's outcome label: `ok`, `not_found` or the error's kind.
pub fn outcome_of(reply: &ClientReply) -> &'static str {
    match reply {
        ClientReply::Found { .. } | ClientReply::Written { .. } | ClientReply::Counted { .. } => {
            "ok"
        }
        ClientReply::NotFound { .. } => "not_found",
        ClientReply::NotApplied { .. } => "not_applied",
        ClientReply::Failed(e) => error_kind(e),
    }
}

fn error_kind(e: &RequestError) -> &'static str {
    match e {
        RequestError::Unavailable { .. } => "unavailable",
        RequestError::Timeout { .. } => "timeout",
        RequestError::SessionBehind => "session_behind",
        RequestError::ShuttingDown => "shutting_down",
        RequestError::OutOfMemory { .. } => "out_of_memory",
        RequestError::Conflict { .. }
        | RequestError::NothingToExpire
        | RequestError::NotAnInteger
        | RequestError::Overflow => "conflict",
        RequestError::TooManySiblings { .. } | RequestError::StateTooLarge { .. } => "sibling_cap",
        RequestError::QuorumTooLarge { .. }
        | RequestError::EmptyKey
        | RequestError::KeyTooLarge { .. }
        | RequestError::ValueTooLarge { .. } => "bad_request",
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstCounter::new(value));
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    registry.register(name, help, ConstGauge::new(value));
}

/// The Prometheus text exposition of the peer: `requests` plus `status` read now.
/// `peer_messages_shed`: peer messages dropped because their shard's inbox was full.
pub fn render(
    requests: &RequestMetrics,
    status: &Status,
    pubsub: PubSubStats,
    peer_messages_shed: u64,
) -> String {
    let mut registry = Registry::with_prefix("ringcache");
    registry.register(
        "requests",
        "Key requests coordinated for clients, by operation, consistency level and outcome",
        requests.requests.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from a key request's arrival to its answer, by operation and consistency level",
        requests.latency.clone(),
    );
    registry.register(
        "http_direct_key_requests",
        "HTTP key requests answered past the router, by the direct path of key requests",
        requests.direct.clone(),
    );
    let s = &status.stats;
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    gauge(
        &mut registry,
        "keys",
        "Keys in this peer's store",
        as_i64(s.keys),
    );
    gauge(
        &mut registry,
        "memory_used_bytes",
        "Bytes the store accounts for",
        as_i64(s.memory_used_bytes),
    );
    if let Some(limit) = s.memory_limit_bytes {
        gauge(
            &mut registry,
            "memory_limit_bytes",
            "The store's memory limit",
            as_i64(limit),
        );
    }
    gauge(
        &mut registry,
        "hash_tree_bytes",
        "Bytes of the anti-entropy hash trees",
        as_i64(s.hash_tree_bytes),
    );
    for (name, help, value) in [
        ("hits", "Reads coordinated that found a value", s.hits),
        ("misses", "Reads coordinated that found none", s.misses),
        (
            "evictions",
            "Keys evicted to stay under the memory limit",
            s.evicted,
        ),
        (
            "expirations",
            "Values whose bytes active expiry reclaimed",
            s.expired,
        ),
        (
            "read_repairs",
            "Replica states corrected by read repair",
            s.read_repairs,
        ),
        (
            "read_spares_asked",
            "Replicas reads asked beyond the R they first asked",
            s.read_spares_asked,
        ),
        (
            "repairs_declined",
            "Repairs not applied near the memory limit",
            s.repairs_declined,
        ),
        (
            "tombstones_collected",
            "Tombstone-only keys collected",
            s.tombstones_collected,
        ),
        (
            "anti_entropy_exchanges",
            "Anti-entropy exchanges finished",
            s.anti_entropy_exchanges,
        ),
        (
            "anti_entropy_keys_repaired",
            "Keys anti-entropy changed here",
            s.anti_entropy_keys_repaired,
        ),
        (
            "anti_entropy_keys_sent",
            "States sent in anti-entropy exchanges",
            s.anti_entropy_keys_sent,
        ),
        (
            "anti_entropy_sent_bytes",
            "Bytes of anti-entropy messages sent",
            s.anti_entropy_bytes_sent,
        ),
        (
            "siblings_created",
            "Writes that left their key with concurrent values",
            s.siblings_created,
        ),
        (
            "writes_refused_by_sibling_cap",
            "Writes refused by the sibling or state cap",
            s.writes_refused_by_sibling_cap,
        ),
        (
            "writes_forwarded",
            "Client writes forwarded to a replica",
            s.writes_forwarded,
        ),
        (
            "hints_delivered",
            "Hints handed to their owners",
            s.hints_delivered,
        ),
        (
            "hints_dropped",
            "Hints refused at this peer's bound",
            s.hints_dropped,
        ),
        (
            "hints_refused",
            "Hints given up after a full owner refused them",
            s.hints_refused,
        ),
        (
            "hints_expired",
            "Hints given up undelivered at the end of their lifetime",
            s.hints_expired,
        ),
        (
            "conditional_applied",
            "Conditional writes this peer proposed that applied",
            s.conditional_applied,
        ),
        (
            "conditional_not_applied",
            "Conditional writes this peer proposed whose condition did not hold",
            s.conditional_not_applied,
        ),
        (
            "conditional_retries",
            "Paxos rounds this peer started again (contention, or an earlier proposal finished)",
            s.conditional_retries,
        ),
        (
            "handoff_batches_deferred",
            "Handoff batches this peer deferred on arrival to pace its intake",
            s.handoff_batches_deferred,
        ),
        (
            "background_yield_ms",
            "Milliseconds this peer's shards spent busy serving clients, anti-entropy and handoff at the busy share of their budget",
            s.background_yield_ms,
        ),
        (
            "pubsub_published",
            "Messages published on this peer",
            pubsub.published,
        ),
        (
            "pubsub_delivered",
            "Deliveries to this peer's subscribers",
            pubsub.delivered,
        ),
        (
            "pubsub_subscribers_lagged",
            "Subscribers cut off for falling behind",
            pubsub.subscribers_lagged,
        ),
        (
            "peer_messages_shed",
            "Peer messages dropped on arrival because their shard's inbox was full (overload)",
            peer_messages_shed,
        ),
    ] {
        counter(&mut registry, name, help, value);
    }
    gauge(
        &mut registry,
        "hints_pending",
        "Hints held for replicas believed down",
        as_i64(s.hints_pending),
    );
    gauge(
        &mut registry,
        "largest_sibling_set",
        "Most siblings a key held after a write here",
        as_i64(s.largest_sibling_set),
    );
    let up = status.members.members.values().filter(|m| m.up).count();
    let total = status.members.members.len();
    gauge(
        &mut registry,
        "members_up",
        "Members gossip sees up",
        up as i64,
    );
    gauge(
        &mut registry,
        "members_down",
        "Members gossip sees down",
        (total - up) as i64,
    );
    gauge(
        &mut registry,
        "handoffs_in_flight",
        "Partitions this peer is handing off",
        status.handoff.len() as i64,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_label_is_spelt_as_the_quorum_displays() {
        let mut levels = vec![Quorum::One, Quorum::Quorum, Quorum::All];
        levels.extend((0..30).map(Quorum::Exactly));
        levels.push(Quorum::Exactly(usize::MAX));
        for quorum in levels {
            assert_eq!(level(&quorum), quorum.to_string());
        }
    }
}
