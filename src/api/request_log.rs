//! Request ids and the slow-request log, shared by the HTTP and RESP front ends.
//!
//! Why: a client request touches several peers — the one it arrived at coordinates, its
//! replicas store or answer — and when it is slow, the question is which of them was. Each
//! request gets a trace id here, at the edge (the core never makes one: it draws no
//! randomness); the core puts it on every peer message sent for the request, so the log lines
//! of the coordinator and of every replica name the same `trace_id`
//! (`RUST_LOG=ringcache::trace=debug` logs each peer's part). HTTP clients see it as
//! `X-Request-Id` (and may choose it, see [`trace_id_or_new`]).
//!
//! A request that takes [`run`]'s threshold or more (`serve --slow-request-ms`) is logged at
//! `warn` as `slow request`: its trace id, front end, operation, level, key (first 64 bytes),
//! outcome, time taken, and for each replica the coordinator asked, how long after it was
//! asked it answered, or that it did not answer or could not be reached (see
//! `core::node::ReplicaTiming`). Any other request is logged at debug under the trace target
//! as `request done`, with the same fields.

use crate::api::metrics::{self, RequestLabels, RequestMetrics};
use crate::core::node::ReplicaTiming;
use crate::core::request::{ClientReply, ClientRequest};
use crate::core::types::TraceId;
use crate::shell::driver::{Answer, DriverHandle, TRACE_TARGET};
use std::fmt;
use std::time::Duration;

/// The HTTP header that carries a request's trace id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A fresh trace id: 16 hex digits (64 random bits), unique in practice across a cluster.
#[allow(clippy::disallowed_methods)] // the API layer may draw randomness; the core may not
pub fn new_trace_id() -> TraceId {
    TraceId::hex(rand::random::<u64>())
}

/// The client's id when it is a sane one (1 to 64 ASCII letters, digits and `-_.:`), so a
/// client can follow its own ids through the logs; otherwise a fresh one.
pub fn trace_id_or_new(client: Option<&str>) -> TraceId {
    client
        .and_then(|id| TraceId::parse(id).ok())
        .unwrap_or_else(new_trace_id)
}

/// What running a request came to.
pub struct Ran {
    pub reply: ClientReply,
    pub took: Duration,
    /// Its operation and level, for the metrics.
    pub labels: RequestLabels,
}

/// Runs a key request through the driver under `trace`, and logs it: at `warn` as a slow
/// request when it took `slow` or more, else at debug under the trace target. `via` names the
/// front end (`http`, `resp`).
#[allow(clippy::disallowed_methods)] // the API layer times requests on the wall clock
pub async fn run(
    driver: &DriverHandle,
    request: ClientRequest,
    trace: &TraceId,
    slow: Duration,
    via: &'static str,
) -> Ran {
    let started = std::time::Instant::now();
    let labels = RequestMetrics::labels(&request);
    let key = shown_key(&request);
    let Answer { reply, replicas } = driver.request(request, trace).await;
    let took = started.elapsed();
    let outcome = metrics::outcome_of(&reply);
    let took_ms = took.as_millis() as u64;
    let replicas = Timings(&replicas);
    if took >= slow {
        tracing::warn!(
            trace_id = %trace,
            via,
            op = labels.op,
            consistency = %labels.consistency,
            key = %key,
            outcome,
            took_ms,
            replicas = %replicas,
            "slow request"
        );
    } else {
        tracing::debug!(
            target: TRACE_TARGET,
            trace_id = %trace,
            via,
            op = labels.op,
            consistency = %labels.consistency,
            key = %key,
            outcome,
            took_ms,
            replicas = %replicas,
            "request done"
        );
    }
    Ran {
        reply,
        took,
        labels,
    }
}

/// Bytes of a key a log line shows.
const SHOWN_KEY_BYTES: usize = 64;

/// A key as a log line shows it: its first [`SHOWN_KEY_BYTES`] bytes, as lossy UTF-8 when
/// formatted. Kept on the stack: most requests are never logged, and must not pay for a
/// string.
struct ShownKey {
    bytes: [u8; SHOWN_KEY_BYTES],
    len: usize,
}

fn shown_key(request: &ClientRequest) -> ShownKey {
    let key = request.key();
    let len = key.len().min(SHOWN_KEY_BYTES);
    let mut bytes = [0; SHOWN_KEY_BYTES];
    bytes[..len].copy_from_slice(&key[..len]);
    ShownKey { bytes, len }
}

impl fmt::Display for ShownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.bytes[..self.len]))
    }
}

/// The replicas a request asked, as a log field: `B 3ms, C no answer`, or `none`.
struct Timings<'a>(&'a [ReplicaTiming]);

impl fmt::Display for Timings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, timing) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{timing}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::node::ReplicaAnswer;
    use crate::core::types::NodeId;

    #[test]
    fn fresh_trace_ids_are_16_hex_digits_and_differ() {
        let a = new_trace_id();
        let b = new_trace_id();
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_sane_client_id_is_kept_and_any_other_replaced() {
        let kept = trace_id_or_new(Some("client-7:abc"));
        assert_eq!(kept.as_str(), "client-7:abc");
        for insane in [Some(""), Some("has space"), Some(&*"x".repeat(65)), None] {
            let made = trace_id_or_new(insane);
            assert_eq!(made.as_str().len(), 16, "{insane:?}");
        }
    }

    #[test]
    fn timings_show_every_replica_or_none() {
        let timing = |peer: &str, answer| ReplicaTiming {
            peer: NodeId::from(peer),
            answer,
        };
        let asked = [
            timing("B", ReplicaAnswer::After(3)),
            timing("C", ReplicaAnswer::NoAnswer),
        ];
        assert_eq!(Timings(&asked).to_string(), "B 3ms, C no answer");
        assert_eq!(Timings(&[]).to_string(), "none");
    }
}
