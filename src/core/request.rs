//! What clients ask of a peer and what the core answers.
//!
//! These are the core's client-facing values: the HTTP layer and the simulator's workload
//! build [`ClientRequest`]s, and turn [`ClientReply`]s back into responses.

use crate::core::counter::CounterError;
use crate::core::paxos::Condition;
use crate::core::siblings::Payload;
use crate::core::types::{Millis, Quorum};
use crate::core::version_vector::VersionVector;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    Get {
        key: Vec<u8>,
        r: Quorum,
        /// A session read: the causal context the client last saw for the key (read or
        /// written). The answer never covers less: the coordinator waits past R for a replica
        /// that covers it, and fails with [`RequestError::SessionBehind`] if none does in time.
        /// Read-your-writes and monotonic reads at any R.
        #[serde(default)]
        session: Option<VersionVector>,
        /// Stale-while-revalidate: when no value is live, a value that expired less than this
        /// long ago is still answered (0: only live values, the default). Such a value is only
        /// there while active expiry has not reclaimed it (`CoreConfig::stale_window_ms`).
        #[serde(default)]
        stale_ok_ms: Millis,
    },
    /// A write of a value, or (with `Payload::Tombstone`) a delete.
    Write(WriteRequest),
    /// A write applied only if the key's current state meets `condition`, decided by a
    /// consensus round among the key's replicas (see `core::paxos`): linearizable per key.
    Conditional(ConditionalWrite),
}

impl ClientRequest {
    /// The key the request is about.
    pub fn key(&self) -> &[u8] {
        match self {
            ClientRequest::Get { key, .. } => key,
            ClientRequest::Write(w) => &w.key,
            ClientRequest::Conditional(w) => &w.key,
        }
    }
}

/// A compare-and-set: a put (or delete) applied only if the key's state meets a condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionalWrite {
    pub key: Vec<u8>,
    /// `Put` or `Delete` (an `Expire` or `Increment` is refused).
    pub write: WriteKind,
    pub condition: Condition,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    pub key: Vec<u8>,
    pub write: WriteKind,
    /// The causal context the client read; `None` for a blind write.
    pub context: Option<VersionVector>,
    pub w: Quorum,
    /// Sloppy quorum: whether replicas believed down may be stood in for by the next healthy
    /// peers clockwise, whose acks (hints) count toward W. `None`: the receiving peer's default
    /// (`--sloppy-quorum`), which it fixes before forwarding, so a forwarded write keeps it.
    pub sloppy: Option<bool>,
    /// For a put without a context: replace every version the coordinating replica holds of
    /// the key (Redis's `SET`: the last of the writes that saw one another wins) instead of
    /// standing beside them as a sibling. Writes the coordinator has not seen, concurrent
    /// ones, still stand beside it: nothing acknowledged is dropped unseen. Ignored when a
    /// context is given (the context says what is replaced) and for deletes (a blind delete
    /// already removes what its coordinator has seen).
    #[serde(default)]
    pub overwrite: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteKind {
    Put {
        value: Vec<u8>,
        /// Time to live; the coordinator turns it into an absolute expiry.
        ttl_ms: Option<Millis>,
    },
    Delete,
    /// Give the key's value a new time to live (`expire`/`touch`), or none (`persist`). A
    /// versioned write of the same bytes: the coordinator rewrites the one value its replica
    /// holds, replacing it; a key with siblings must be resolved first.
    Expire {
        ttl_ms: Option<Millis>,
    },
    /// Add `by` (negative to subtract) to the key's counter (see `core::counter`): a counter
    /// CRDT, so increments at any coordinators, on any side of a partition, all count. The
    /// coordinator increments the counter its replica holds (a key holding a canonical
    /// integer counts from it; no value counts from zero) and answers the new value.
    Increment {
        by: i64,
    },
}

impl WriteKind {
    /// The stored payload, with expiry made absolute against the coordinator's clock. An
    /// `Expire` needs the current value, so it has no payload of its own (`None`).
    pub fn into_payload(self, now: Millis) -> Option<Payload> {
        match self {
            WriteKind::Put { value, ttl_ms } => Some(Payload::Value {
                data: value,
                expires_at_ms: ttl_ms.map(|t| now.saturating_add(t)),
            }),
            WriteKind::Delete => Some(Payload::Tombstone),
            WriteKind::Expire { .. } | WriteKind::Increment { .. } => None,
        }
    }
}

/// A value as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadValue {
    pub data: Vec<u8>,
    pub expires_at_ms: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    /// One or more concurrent values (siblings) and the context that covers them all.
    Found {
        values: Vec<ReadValue>,
        context: VersionVector,
    },
    /// No visible value; `context` is non-empty when the key holds tombstones or expired values,
    /// so a client can write "after" the delete.
    NotFound {
        context: VersionVector,
    },
    /// The write reached W replicas; `context` covers it (read-your-writes for the client).
    Written {
        context: VersionVector,
    },
    /// A conditional write's condition did not hold: nothing was written. The key's values
    /// and context as the round read them (from a majority of its replicas).
    NotApplied {
        values: Vec<ReadValue>,
        context: VersionVector,
    },
    /// An increment reached W replicas: the counter's value as its coordinator held it right
    /// after the increment (increments elsewhere not merged there yet are not counted).
    Counted {
        value: i64,
        context: VersionVector,
    },
    Failed(RequestError),
}

/// Why a request failed. Every variant is safe to show a client.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestError {
    #[error("not enough replicas reachable: needed {needed}, got {got}")]
    Unavailable { needed: usize, got: usize },
    #[error("timed out waiting for replicas: needed {needed}, got {got}")]
    Timeout { needed: usize, got: usize },
    #[error("quorum {asked} is larger than the replication factor {replicas}")]
    QuorumTooLarge { asked: usize, replicas: usize },
    #[error("keys must not be empty")]
    EmptyKey,
    #[error("key is {size} bytes, the limit is {limit}")]
    KeyTooLarge { size: usize, limit: usize },
    #[error("value is {size} bytes, the limit is {limit}")]
    ValueTooLarge { size: usize, limit: usize },
    #[error("the peer is shutting down")]
    ShuttingDown,
    #[error("the key has {siblings} concurrent values: resolve them with a write before changing its TTL")]
    Conflict { siblings: usize },
    /// An `Expire` of a key the coordinating replica holds no live value for.
    #[error("no live value to change the TTL of")]
    NothingToExpire,
    #[error("out of memory: the write needs {needed} bytes, {used} of {limit} are in use and nothing more can be evicted")]
    OutOfMemory { needed: u64, used: u64, limit: u64 },
    /// A blind write would give the key more concurrent values than the cap allows.
    #[error("the key would have {siblings} concurrent values, more than the limit of {limit}: read it and write back with its causal context to resolve them")]
    TooManySiblings { siblings: usize, limit: usize },
    /// A session read found no reachable replica covering its context before the deadline.
    #[error("no reachable replica has caught up with the causal context this session saw: retry shortly")]
    SessionBehind,
    /// A write would make the key's concurrent values larger in all than the cap allows.
    #[error("the key's concurrent values would take {bytes} bytes, more than the limit of {limit}: read it and write back with its causal context to resolve them")]
    StateTooLarge { bytes: usize, limit: usize },
    /// An increment of a key whose value is not a (canonical decimal) integer.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// An increment whose result would not fit in a signed 64-bit integer.
    #[error("increment or decrement would overflow")]
    Overflow,
}

impl From<CounterError> for RequestError {
    fn from(error: CounterError) -> Self {
        match error {
            CounterError::NotAnInteger => RequestError::NotAnInteger,
            CounterError::Overflow => RequestError::Overflow,
        }
    }
}
