//! The bridge from commands to the quorum core: one connection's reads and writes, at its
//! consistency levels, and the core's failures spelled as Redis errors.
//!
//! # Rules every command follows
//! - *One value from siblings*: a Redis client expects one value; when a read finds
//!   concurrent values (siblings), [`Read::chosen`] is the last one the core returns. The core
//!   lists siblings in dot order (actor name, then counter), so every reader of the same state
//!   gets the same one. Nothing is dropped: `RC.GETALL` shows them all, and they stay until a
//!   write that read them replaces them.
//! - *Plain writes overwrite*: SET and friends write without a context and with `overwrite`,
//!   replacing everything the coordinating replica has seen, so SET after SET never piles up
//!   siblings; only truly concurrent writes (unseen by each other's coordinator) do.
//! - *Read-modify-write replaces what it read*: APPEND, SETRANGE, GETSET, SET … XX GET,
//!   SET … KEEPTTL, GETDEL, GETEX write back with the context of their read.
//! - *Conditions are decided by consensus*: SET … NX/XX/IFEQ, SETNX, MSETNX (per key) and
//!   RC.CAS are conditional writes ([`Keyspace::conditional`]), each decided by a Paxos round
//!   among the key's replicas: two clients racing on one expected state never both win.

use crate::api::request_log;
use crate::api::resp::frame::Frame;
use crate::core::paxos::Condition;
use crate::core::request::{
    ClientReply, ClientRequest, ConditionalWrite, ReadValue, RequestError, WriteKind, WriteRequest,
};
use crate::core::types::{Millis, Quorum, TraceId};
use crate::core::version_vector::VersionVector;
use crate::shell::driver::{wall_clock_ms, DriverHandle};
use bytes::Bytes;
use std::time::Duration;

/// What a read found: the visible values (empty when the key is missing) and the context
/// that covers them (and any tombstones).
#[derive(Clone, Debug)]
pub struct Read {
    pub values: Vec<ReadValue>,
    pub context: VersionVector,
}

impl Read {
    pub fn exists(&self) -> bool {
        !self.values.is_empty()
    }

    /// The one value a Redis client is shown: the last sibling (see the module's rules).
    pub fn chosen(&self) -> Option<&ReadValue> {
        self.values.last()
    }

    /// The chosen value's bytes, or a nil reply.
    pub fn chosen_frame(&self) -> Frame {
        match self.chosen() {
            Some(v) => Frame::bulk(v.data.clone()),
            None => Frame::Null,
        }
    }

    /// The context to write back with, or `None` when the read saw nothing at all.
    pub fn write_context(&self) -> Option<VersionVector> {
        (!self.context.is_empty()).then(|| self.context.clone())
    }

    /// Milliseconds the chosen value has left, on this peer's clock; `None`: no expiry.
    pub fn ttl_ms(&self, now: Millis) -> Option<Millis> {
        self.chosen()?
            .expires_at_ms
            .map(|at| at.saturating_sub(now).max(1))
    }
}

/// A connection's view of the keyspace for one command: the driver, the connection's read
/// and write quorums, and the command's trace id (every request it makes carries it).
#[derive(Clone)]
pub struct Keyspace {
    pub driver: DriverHandle,
    pub r: Quorum,
    pub w: Quorum,
    pub trace: TraceId,
    /// Requests that take this long or more are logged as slow (`--slow-request-ms`).
    pub slow_request: Duration,
}

impl Keyspace {
    /// Runs one request of the command, logged when slow (see `request_log`).
    async fn run(&self, request: ClientRequest) -> ClientReply {
        request_log::run(
            &self.driver,
            request,
            &self.trace,
            self.slow_request,
            "resp",
        )
        .await
        .reply
    }

    pub async fn read(&self, key: &[u8]) -> Result<Read, Frame> {
        // Not a session read: a connection keeps no per-key contexts (they would grow with
        // every key it touches); its quorums give read-your-writes when R + W > N.
        let request = ClientRequest::Get {
            key: key.to_vec(),
            r: self.r,
            session: None,
            stale_ok_ms: 0,
        };
        match self.run(request).await {
            ClientReply::Found { values, context } => Ok(Read { values, context }),
            ClientReply::NotFound { context } => Ok(Read {
                values: Vec::new(),
                context,
            }),
            ClientReply::Written { .. }
            | ClientReply::Counted { .. }
            | ClientReply::NotApplied { .. } => Err(Frame::error("ERR unexpected reply to a read")),
            ClientReply::Failed(e) => Err(request_error(&e)),
        }
    }

    pub async fn write(
        &self,
        key: &[u8],
        write: WriteKind,
        context: Option<VersionVector>,
    ) -> Result<VersionVector, Frame> {
        let overwrite = context.is_none() && matches!(write, WriteKind::Put { .. });
        let request = ClientRequest::Write(WriteRequest {
            key: key.to_vec(),
            write,
            context,
            w: self.w,
            sloppy: None,
            overwrite,
        });
        match self.run(request).await {
            ClientReply::Written { context } => Ok(context),
            ClientReply::Failed(e) => Err(request_error(&e)),
            _ => Err(Frame::error("ERR unexpected reply to a write")),
        }
    }

    /// Adds `by` to the key's counter (`INCR` and its kin): the counter's new value.
    pub async fn increment(&self, key: &[u8], by: i64) -> Result<i64, Frame> {
        let request = ClientRequest::Write(WriteRequest {
            key: key.to_vec(),
            write: WriteKind::Increment { by },
            context: None,
            w: self.w,
            sloppy: None,
            overwrite: false,
        });
        match self.run(request).await {
            ClientReply::Counted { value, .. } => Ok(value),
            ClientReply::Failed(e) => Err(request_error(&e)),
            _ => Err(Frame::error("ERR unexpected reply to an increment")),
        }
    }

    /// Gives the key's value a new TTL (or none) with the core's expire write.
    pub async fn expire(&self, key: &[u8], ttl_ms: Option<Millis>) -> Result<Expired, Frame> {
        let request = ClientRequest::Write(WriteRequest {
            key: key.to_vec(),
            write: WriteKind::Expire { ttl_ms },
            context: None,
            w: self.w,
            sloppy: None,
            overwrite: false,
        });
        match self.run(request).await {
            ClientReply::Written { .. } => Ok(Expired::Done),
            ClientReply::Failed(RequestError::NothingToExpire) => Ok(Expired::NoValue),
            ClientReply::Failed(RequestError::Conflict { .. }) => Ok(Expired::Siblings),
            ClientReply::Failed(e) => Err(request_error(&e)),
            _ => Err(Frame::error("ERR unexpected reply to a write")),
        }
    }

    /// Writes `value` (with `ttl_ms`, or none), replacing what `after` read, or for `None`
    /// whatever the coordinator has seen (a plain SET). A TTL already past deletes instead.
    pub async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        ttl: Ttl,
        after: Option<&Read>,
    ) -> Result<VersionVector, Frame> {
        let context = after.and_then(Read::write_context);
        match ttl {
            Ttl::Past => self.write(key, WriteKind::Delete, context).await,
            Ttl::None => {
                self.write(
                    key,
                    WriteKind::Put {
                        value,
                        ttl_ms: None,
                    },
                    context,
                )
                .await
            }
            Ttl::Ms(ms) => {
                self.write(
                    key,
                    WriteKind::Put {
                        value,
                        ttl_ms: Some(ms),
                    },
                    context,
                )
                .await
            }
        }
    }

    /// A write applied only if the key's state meets `condition` (a Paxos round among the
    /// key's replicas; see `core::paxos`).
    pub async fn conditional(
        &self,
        key: &[u8],
        value: Vec<u8>,
        ttl: Ttl,
        condition: Condition,
    ) -> Result<Conditional, Frame> {
        let write = match ttl {
            Ttl::Past => WriteKind::Delete,
            Ttl::None => WriteKind::Put {
                value,
                ttl_ms: None,
            },
            Ttl::Ms(ms) => WriteKind::Put {
                value,
                ttl_ms: Some(ms),
            },
        };
        let request = ClientRequest::Conditional(ConditionalWrite {
            key: key.to_vec(),
            write,
            condition,
        });
        match self.run(request).await {
            ClientReply::Written { context } => Ok(Conditional::Applied(context)),
            ClientReply::NotApplied { values, context } => {
                Ok(Conditional::NotApplied(Read { values, context }))
            }
            ClientReply::Failed(e) => Err(request_error(&e)),
            _ => Err(Frame::error("ERR unexpected reply to a conditional write")),
        }
    }

    /// Deletes what `read` saw; nothing to do when it saw no value.
    pub async fn delete_read(&self, key: &[u8], read: &Read) -> Result<bool, Frame> {
        if !read.exists() {
            return Ok(false);
        }
        self.write(key, WriteKind::Delete, read.write_context())
            .await?;
        Ok(true)
    }
}

/// What a conditional write did.
#[derive(Clone, Debug)]
pub enum Conditional {
    /// Written: the key's new context.
    Applied(VersionVector),
    /// The condition did not hold: the key as the round read it.
    NotApplied(Read),
}

/// What an expire write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    Done,
    /// The coordinator holds no live value of the key.
    NoValue,
    /// The key has siblings: resolve them first.
    Siblings,
}

/// A write's time to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// No expiry.
    None,
    /// Expires this many milliseconds from now (at least 1).
    Ms(Millis),
    /// An absolute expiry already past: the write deletes the key (as Redis does).
    Past,
}

impl Ttl {
    /// From an absolute expiry in Unix milliseconds.
    pub fn at(at_ms: i64) -> Ttl {
        let now = wall_clock_ms() as i64;
        if at_ms <= now {
            Ttl::Past
        } else {
            Ttl::Ms((at_ms - now) as Millis)
        }
    }

    /// What `read`'s chosen value has left (KEEPTTL).
    pub fn kept(read: &Read) -> Ttl {
        match read.ttl_ms(wall_clock_ms()) {
            None => Ttl::None,
            Some(ms) => Ttl::Ms(ms),
        }
    }
}

/// The core's failure as a Redis error. Codes clients act on: `OOM` (Redis's own for a full
/// store), `TRYAGAIN` (too few replicas answered: retrying may succeed), `CONFLICT` (siblings
/// must be resolved first), `ERR` for the rest.
pub fn request_error(error: &RequestError) -> Frame {
    match error {
        RequestError::OutOfMemory { .. } => Frame::error(format!(
            "OOM command not allowed when used memory > 'maxmemory' ({error})"
        )),
        RequestError::Unavailable { .. }
        | RequestError::Timeout { .. }
        | RequestError::ShuttingDown => Frame::error(format!("TRYAGAIN {error}")),
        RequestError::Conflict { .. }
        | RequestError::TooManySiblings { .. }
        | RequestError::StateTooLarge { .. } => Frame::error(format!("CONFLICT {error}")),
        RequestError::ValueTooLarge { .. } => {
            Frame::error(format!("ERR string exceeds maximum allowed size ({error})"))
        }
        _ => Frame::error(format!("ERR {error}")),
    }
}

/// Bytes of a bulk argument, copied out for a write.
pub fn owned(b: &Bytes) -> Vec<u8> {
    b.to_vec()
}
