//! A record of what clients asked a cluster and what they got back, and the checker that
//! judges it.
//!
//! The deterministic simulator and the real-process chaos run both record a [`History`] the
//! same way: every operation with its invoke and complete time, the causal context it was given
//! and the one it got, and the values it read. Every value written in one history is unique, so
//! a value read names the write that produced it. [`check::check`] then decides whether the
//! history is one ringcache promises (see `docs/guarantees.md`).
//!
//! Times are milliseconds on whatever clock the recorder uses (simulated or wall); the checker
//! only compares them with each other and with the clock uncertainty it is told.

pub mod check;
pub mod linearizable;

use crate::core::request::ReadValue;
use crate::core::types::{Millis, Quorum};
use crate::core::version_vector::VersionVector;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Index of an operation in its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub usize);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    Get {
        r: Quorum,
        /// How long past its expiry a value may be answered (`stale_ok`); 0 for none.
        #[serde(default)]
        stale_ok_ms: Millis,
    },
    Put {
        value: Vec<u8>,
        ttl_ms: Option<Millis>,
        w: Quorum,
        /// Sent without a context as an overwrite: replaces what its coordinator had seen.
        overwrite: bool,
    },
    Delete {
        w: Quorum,
    },
    /// A TTL change (`expire`) or its removal (`persist`, `ttl_ms: None`): the coordinator
    /// rewrites the key's one live value under a new dot.
    Expire {
        ttl_ms: Option<Millis>,
        w: Quorum,
    },
    /// Add `by` to the key's counter. The checker judges counters by their final sums.
    Increment {
        by: i64,
        w: Quorum,
    },
    /// A compare-and-set: write `value` (`None`: delete) if `condition` holds. Judged for
    /// linearizability (`linearizable`); a condition that failed answers as a read.
    Conditional {
        value: Option<Vec<u8>>,
        condition: crate::core::paxos::Condition,
    },
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get { .. })
    }

    /// The write quorum, for writes.
    pub fn w(&self) -> Option<Quorum> {
        match self {
            OpKind::Get { .. } => None,
            OpKind::Put { w, .. }
            | OpKind::Delete { w }
            | OpKind::Expire { w, .. }
            | OpKind::Increment { w, .. } => Some(*w),
            // Decided by a majority of the replicas, whatever the levels.
            OpKind::Conditional { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The client gave up or recording stopped first: the operation may or may not have taken
    /// effect.
    Unknown,
    /// A successful read: the visible values (empty for "not found") and their context.
    Read {
        values: Vec<ReadValue>,
        context: VersionVector,
    },
    /// A write acknowledged by W replicas; the context covers it.
    Written { context: VersionVector },
    /// The request failed. `definite` means it certainly had no effect (it never reached a
    /// peer, or was rejected before anything was stored); otherwise a failed write may
    /// still have reached some replicas.
    Failed { error: String, definite: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: u32,
    pub key: Vec<u8>,
    pub kind: OpKind,
    /// The causal context the client sent (writes only; `None` for a blind write).
    pub context_in: Option<VersionVector>,
    pub invoked_at: Millis,
    pub completed_at: Option<Millis>,
    pub outcome: Outcome,
}

impl Operation {
    /// Whether a write may have changed the cluster (anything but a definite failure).
    pub fn may_have_applied(&self) -> bool {
        self.kind.is_write() && !matches!(self.outcome, Outcome::Failed { definite: true, .. })
    }

    pub fn is_acknowledged_write(&self) -> bool {
        matches!(self.outcome, Outcome::Written { .. })
    }

    /// The context a successful read or write returned.
    pub fn context_out(&self) -> Option<&VersionVector> {
        match &self.outcome {
            Outcome::Read { context, .. } | Outcome::Written { context } => Some(context),
            _ => None,
        }
    }

    pub fn values_read(&self) -> &[ReadValue] {
        match &self.outcome {
            Outcome::Read { values, .. } => values,
            _ => &[],
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = String::from_utf8_lossy(&self.key);
        let done = self
            .completed_at
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into());
        write!(f, "[{}..{}] c{} ", self.invoked_at, done, self.client)?;
        match &self.kind {
            OpKind::Get { r, stale_ok_ms: 0 } => write!(f, "get {key} r={r}")?,
            OpKind::Get { r, stale_ok_ms } => {
                write!(f, "get {key} r={r} stale_ok={stale_ok_ms}ms")?
            }
            OpKind::Put {
                value,
                ttl_ms,
                w,
                overwrite,
            } => {
                let verb = if *overwrite { "set" } else { "put" };
                write!(f, "{verb} {key}={} w={w}", String::from_utf8_lossy(value))?;
                if let Some(ttl) = ttl_ms {
                    write!(f, " ttl={ttl}ms")?;
                }
            }
            OpKind::Delete { w } => write!(f, "del {key} w={w}")?,
            OpKind::Expire {
                ttl_ms: Some(ttl),
                w,
            } => write!(f, "expire {key} {ttl}ms w={w}")?,
            OpKind::Expire { ttl_ms: None, w } => write!(f, "persist {key} w={w}")?,
            OpKind::Increment { by, w } => write!(f, "incrby {key} {by} w={w}")?,
            OpKind::Conditional { value, condition } => {
                match value {
                    Some(v) => write!(f, "cas {key}={}", String::from_utf8_lossy(v))?,
                    None => write!(f, "cas-del {key}")?,
                }
                write!(f, " if {condition:?}")?;
            }
        }
        if let Some(ctx) = &self.context_in {
            write!(f, " ctx={ctx}")?;
        }
        match &self.outcome {
            Outcome::Unknown => write!(f, " -> unknown"),
            Outcome::Read { values, context } => {
                let shown: Vec<_> = values
                    .iter()
                    .map(|v| String::from_utf8_lossy(&v.data).into_owned())
                    .collect();
                write!(f, " -> {shown:?} ctx={context}")
            }
            Outcome::Written { context } => write!(f, " -> ok ctx={context}"),
            Outcome::Failed { error, .. } => write!(f, " -> failed: {error}"),
        }
    }
}

/// Every operation of one run, in invocation order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    ops: Vec<Operation>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the start of an operation; its outcome stays `Unknown` until completed.
    pub fn invoke(
        &mut self,
        client: u32,
        key: Vec<u8>,
        kind: OpKind,
        context_in: Option<VersionVector>,
        at: Millis,
    ) -> OpId {
        self.ops.push(Operation {
            client,
            key,
            kind,
            context_in,
            invoked_at: at,
            completed_at: None,
            outcome: Outcome::Unknown,
        });
        OpId(self.ops.len() - 1)
    }

    pub fn complete(&mut self, id: OpId, at: Millis, outcome: Outcome) {
        let op = &mut self.ops[id.0];
        op.completed_at = Some(at);
        op.outcome = outcome;
    }

    pub fn get(&self, id: OpId) -> &Operation {
        &self.ops[id.0]
    }

    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
