//! Expire and persist (TTL changes): a read, then a rewrite of the value it found.
//!
//! An expire rewrites the value the read finds: reading from as many replicas as the write
//! needs first means a stale coordinator cannot bring back a value a newer write replaced (it
//! would rewrite it as a new version). The rewrite is an ordinary coordinated write (see
//! `write`) of the one live value found, with the new expiry, under the read's context, so it
//! replaces that value; it fails if there is nothing to expire or the read found siblings.

use super::read::ReadSpec;
use super::requests::Waiter;
use super::write::{CoordinatedWrite, PayloadPlan};
use super::{Node, Outputs};
use crate::core::counter;
use crate::core::request::{RequestError, WriteKind, WriteRequest};
use crate::core::siblings::{Payload, Siblings};
use crate::core::types::{Millis, Quorum};
use crate::core::version_vector::VersionVector;

/// An expire waiting for its read.
#[derive(Debug)]
pub(super) struct PendingExpire {
    pub(super) write: WriteRequest,
    pub(super) needed: usize,
    /// The expire's deadline, which its read and its rewrite share.
    pub(super) deadline: Millis,
}

impl Node {
    /// The first half of an expire: a read of the key from as many replicas as the write
    /// needs, sharing the expire's deadline.
    pub(super) fn start_expire(
        &mut self,
        now: Millis,
        origin: Waiter,
        write: WriteRequest,
        needed: usize,
        deadline: Millis,
        out: &mut Outputs,
    ) {
        let key = write.key.clone();
        let pending = Box::new(PendingExpire {
            write,
            needed,
            deadline,
        });
        self.start_read(
            now,
            origin,
            Some(pending),
            ReadSpec::plain(key, Quorum::Exactly(needed)),
            out,
        );
    }

    /// The second half of an expire, once its read has an answer: rewrites the one live value
    /// found with the new expiry, under the read's context (so it replaces that value).
    pub(super) fn expire_after_read(
        &mut self,
        now: Millis,
        origin: Waiter,
        pending: PendingExpire,
        found: Result<Siblings, RequestError>,
        out: &mut Outputs,
    ) {
        let PendingExpire {
            write,
            needed,
            deadline,
        } = pending;
        let WriteKind::Expire { ttl_ms } = write.write else {
            unreachable!("only expires read first");
        };
        match found.and_then(|state| expire_rewrite(&state, ttl_ms, now)) {
            Ok((payload, context)) => {
                let write = CoordinatedWrite {
                    partition: self.ring.partition_of(&write.key),
                    key: write.key,
                    payload: PayloadPlan::Fixed(payload),
                    context,
                    needed,
                    sloppy: false,
                };
                self.store_and_replicate(now, origin, write, deadline, out);
            }
            Err(error) => origin.fail(error, out),
        }
    }
}

/// The rewrite an expire makes of the state its read found: the one live value, with the new
/// expiry, under a context covering the whole state (so it replaces that value).
fn expire_rewrite(
    state: &Siblings,
    ttl_ms: Option<Millis>,
    now: Millis,
) -> Result<(Payload, VersionVector), RequestError> {
    let expires_at_ms = ttl_ms.map(|t| now.saturating_add(t));
    // A counter is rewritten whole: its siblings and integers joined, tallies kept.
    let holds_counter = state
        .versions()
        .any(|(_, p)| matches!(p, Payload::Counter { .. }) && p.is_visible_at(now));
    if holds_counter {
        // A non-integer beside the counter is a conflict, as for any siblings (below).
        if let Ok(Some((counter, _))) = counter::held(state, now) {
            let payload = Payload::Counter {
                counter,
                expires_at_ms,
            };
            return Ok((payload, state.context().clone()));
        }
    }
    match state.visible_values(now).as_slice() {
        [] => Err(RequestError::NothingToExpire),
        [Payload::Value { data, .. }] => Ok((
            Payload::Value {
                data: data.clone(),
                expires_at_ms,
            },
            state.context().clone(),
        )),
        many => Err(RequestError::Conflict {
            siblings: many.len(),
        }),
    }
}
