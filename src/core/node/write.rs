//! Client writes (put, delete or increment), their coordination and their replication acks.
//!
//! The receiving peer coordinates if it is one of the key's N replicas, otherwise it forwards
//! to the first live replica (`Coordinate`, see `forward`). The coordinator applies the write
//! to its own store (new dot, context applied), sends the resulting state to the other
//! replicas (`Store`), and replies once W distinct replicas hold it. An expire is coordinated
//! here too, but reads first (see `expire`). An increment raises this replica's tally on the
//! counter it holds (`PayloadPlan::Increment`, see `core::counter`), and a put of an integer
//! or a delete that replaces a counter becomes a reset that keeps the tallies it saw
//! (`PayloadPlan::Reset`). Conditional writes are not coordinated here (see `conditional`).
//!
//! A sloppy write (`WriteRequest::sloppy`, puts and deletes) does not give up on a replica
//! believed down: the state goes, with a hint naming that replica, to the next healthy peer
//! clockwise past the preference list, whose ack counts toward W (see `hints`). It still needs
//! a live replica to coordinate it; a strict write with fewer than W live replicas fails at
//! once with `Unavailable`, as it always did.

use super::requests::{resolve_quorum, validate_key, Flight, Request, Waiter};
use super::{Node, Outputs};
use crate::core::config::CoreConfig;
use crate::core::counter::{self, Counter};
use crate::core::message::PeerMessage;
use crate::core::planted::PlantedBug;
use crate::core::quorum::{QuorumOutcome, QuorumTracker};
use crate::core::request::{ClientReply, RequestError, WriteKind, WriteRequest};
use crate::core::ring::PartitionId;
use crate::core::siblings::{Payload, Siblings};
use crate::core::types::{ClientRequestId, Millis, NodeId};
use crate::core::version_vector::{Dot, VersionVector};

/// A write waiting for its replicas' acks.
#[derive(Debug)]
pub(super) struct WriteFlight {
    tracker: QuorumTracker,
    /// The key's clock once the write applied here: what the client gets back.
    context: VersionVector,
    /// For an increment, the counter's value once it applied here.
    counted: Option<i64>,
}

/// What a coordinated write stores, made once its dot is minted (a counter's increment
/// raises the tally of the dot's actor; a reset names its own dot).
pub(super) enum PayloadPlan {
    Fixed(Payload),
    /// Add `by` to `counter`, the counter the coordinator's replica holds.
    Increment {
        counter: Counter,
        by: i64,
        expires_at_ms: Option<u64>,
    },
    /// A put of an integer (`Some`) or a delete (`None`) over `seen`, a counter the write
    /// replaces: a reset that keeps the tallies it saw as its floor.
    Reset {
        seen: Counter,
        value: Option<i64>,
        expires_at_ms: Option<u64>,
    },
}

impl PayloadPlan {
    /// The payload under `dot`, and for an increment the counter's new value.
    fn at(self, dot: &Dot) -> (Payload, Option<i64>) {
        match self {
            PayloadPlan::Fixed(payload) => (payload, None),
            PayloadPlan::Increment {
                mut counter,
                by,
                expires_at_ms,
            } => {
                // Checked before the write was accepted (`plan_increment`).
                let value = counter
                    .add(dot, by)
                    .expect("the increment was checked to fit");
                let payload = Payload::Counter {
                    counter,
                    expires_at_ms,
                };
                (payload, Some(value))
            }
            PayloadPlan::Reset {
                seen,
                value,
                expires_at_ms,
            } => {
                let counter = Counter::reset_over(&seen, dot, value);
                let payload = Payload::Counter {
                    counter,
                    expires_at_ms,
                };
                (payload, None)
            }
        }
    }
}

/// A write as the coordinator applies it: the payload and the context it replaces.
pub(super) struct CoordinatedWrite {
    pub(super) key: Vec<u8>,
    /// The key's partition, found once per write: its replicas and stand-ins follow from it.
    pub(super) partition: PartitionId,
    pub(super) payload: PayloadPlan,
    pub(super) context: VersionVector,
    pub(super) needed: usize,
    /// Whether replicas believed down are stood in for by hint holders.
    pub(super) sloppy: bool,
}

/// A write this node coordinated and stored: who asked for it, and the dot it minted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRan {
    /// The client request, when a client asked this node directly.
    pub client: Option<ClientRequestId>,
    /// The forwarding peer and its request number, when a peer asked.
    pub forwarded_by: Option<(NodeId, u64)>,
    pub key: Vec<u8>,
    pub dot: Dot,
    /// Whether hint holders stood in for replicas believed down (a sloppy write): its W acks
    /// may not all come from the key's replicas.
    pub hinted: bool,
}

/// When enabled, the writes this node coordinated since the last `take`, with the dot each
/// minted (for the simulator, which must know what every write did).
#[derive(Default)]
pub(super) struct WriteLog(Option<Vec<WriteRan>>);

impl WriteLog {
    pub(super) fn enable(&mut self) {
        self.0.get_or_insert_with(Vec::new);
    }

    pub(super) fn take(&mut self) -> Vec<WriteRan> {
        self.0.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn record(&mut self, waiter: &Waiter, key: &[u8], dot: Dot, hinted: bool) {
        if let Some(log) = self.0.as_mut() {
            let (client, forwarded_by) = match waiter {
                Waiter::Client { id, .. } => (Some(*id), None),
                Waiter::Peer { node, req, .. } => (None, Some((node.clone(), *req))),
                Waiter::Nobody => (None, None),
            };
            log.push(WriteRan {
                client,
                forwarded_by,
                key: key.to_vec(),
                dot,
                hinted,
            });
        }
    }
}

fn validate_write(config: &CoreConfig, write: &WriteRequest) -> Result<usize, RequestError> {
    validate_key(config, &write.key)?;
    if let WriteKind::Put { value, .. } = &write.write {
        if value.len() > config.max_value_bytes {
            return Err(RequestError::ValueTooLarge {
                size: value.len(),
                limit: config.max_value_bytes,
            });
        }
    }
    resolve_quorum(config, write.w)
}

impl Node {
    /// A write from a client (`Waiter::Client`) or forwarded by a peer (`Waiter::Peer`).
    pub(super) fn start_write(
        &mut self,
        now: Millis,
        origin: Waiter,
        write: WriteRequest,
        out: &mut Outputs,
    ) {
        let mut write = write;
        if matches!(origin, Waiter::Client { .. }) {
            // Fixed here, so a forwarded write keeps this peer's default.
            write.sloppy.get_or_insert(self.config.sloppy_quorum);
        }
        let needed = match validate_write(&self.config, &write) {
            Ok(needed) => needed,
            Err(e) => return origin.fail(e, out),
        };
        let partition = self.ring.partition_of(&write.key);
        // A forwarded write is coordinated here even if our view disagrees that we are a
        // replica: forwarding again could bounce between peers with different views.
        if self.ring.preference_list(partition).contains(&self.id)
            || matches!(origin, Waiter::Peer { .. })
        {
            return self.coordinate_write(now, origin, write, needed, partition, out);
        }
        self.forward_write(now, origin, write, needed, out);
    }

    fn coordinate_write(
        &mut self,
        now: Millis,
        origin: Waiter,
        write: WriteRequest,
        needed: usize,
        partition: PartitionId,
        out: &mut Outputs,
    ) {
        let replicas = self.ring.preference_list(partition);
        let live = replicas.iter().filter(|r| self.view.is_up(r)).count();
        let self_counts = usize::from(!replicas.contains(&self.id));
        // An expire reads first and is kept strict.
        let sloppy = write.sloppy.unwrap_or(self.config.sloppy_quorum)
            && !matches!(write.write, WriteKind::Expire { .. });
        let stand_ins = if sloppy && live > 0 {
            self.stand_ins(partition).len()
        } else {
            0
        };
        if live + self_counts + stand_ins < needed {
            let error = RequestError::Unavailable { needed, got: live };
            return origin.fail(error, out);
        }
        let deadline = match origin {
            // Leave the forwarding peer time to relay our answer before its own deadline.
            Waiter::Peer { .. } => now + self.config.request_timeout_ms * 3 / 4,
            _ => now + self.config.request_timeout_ms,
        };
        if let WriteKind::Expire { .. } = write.write {
            return self.start_expire(now, origin, write, needed, deadline, out);
        }
        if let WriteKind::Increment { by } = write.write {
            let plan = match self.plan_increment(&write.key, by, now) {
                Ok(plan) => plan,
                Err(error) => return origin.fail(error, out),
            };
            let (payload, context) = plan;
            let write = CoordinatedWrite {
                key: write.key,
                partition,
                payload,
                context,
                needed,
                sloppy,
            };
            return self.store_and_replicate(now, origin, write, deadline, out);
        }
        // What this replica holds of the key, decoded once for the context, the sibling caps
        // and a counter the write may replace.
        let mut local = self.store.peek(&write.key);
        let context = match (&write.context, &write.write) {
            (Some(ctx), _) => ctx.clone(),
            // A delete without context removes everything this coordinator has seen.
            (None, WriteKind::Delete) => local
                .as_ref()
                .map(|s| s.context().clone())
                .unwrap_or_default(),
            // An overwrite replaces what this coordinator has seen, like a blind delete.
            (None, WriteKind::Put { .. }) if write.overwrite => {
                let mut seen = local
                    .as_ref()
                    .map(|s| s.context().clone())
                    .unwrap_or_default();
                if self.has_bug(PlantedBug::OverwriteCoversNextDot) {
                    // The planted bug: an off-by-one that also covers each actor's next write,
                    // which this coordinator has not seen.
                    let next: Vec<Dot> = seen
                        .iter()
                        .filter(|(actor, _)| **actor != self.actor)
                        .map(|(actor, counter)| Dot {
                            actor: actor.clone(),
                            counter: counter + 1,
                        })
                        .collect();
                    for dot in &next {
                        seen.add(dot);
                    }
                }
                seen
            }
            (None, WriteKind::Put { .. }) => VersionVector::new(),
            (None, WriteKind::Expire { .. } | WriteKind::Increment { .. }) => {
                unreachable!("expires and increments are coordinated above")
            }
        };
        let context = if self.has_bug(PlantedBug::LastWriteWins) {
            // The planted bug: the newest write replaces whatever the coordinator holds.
            let mut everything = context;
            if let Some(local) = &local {
                everything.merge(local.context());
            }
            everything
        } else {
            context
        };
        let payload = write
            .write
            .into_payload(now)
            .expect("puts and deletes carry a payload");
        if let Err(refused) = self.check_sibling_caps(local.as_ref(), &context, &payload) {
            if self.has_bug(PlantedBug::SiblingCapDropsSiblings) {
                // The planted bug: make room by dropping the key's older siblings.
                #[cfg(feature = "planted-bugs")]
                self.store.keep_only_newest_sibling(&write.key, now);
                local = self.store.peek(&write.key);
            } else {
                self.counters.refused_by_sibling_cap += 1;
                return origin.fail(refused, out);
            }
        }
        let payload = plan_over_counter(local.as_ref(), &context, payload);
        let write = CoordinatedWrite {
            key: write.key,
            partition,
            payload,
            context,
            needed,
            sloppy,
        };
        self.store_and_replicate(now, origin, write, deadline, out);
    }

    /// An increment of the counter this replica holds of `key`, under a context covering
    /// all it holds (so the new counter replaces the siblings it joined). Refused, with
    /// nothing stored, when the key holds a value that is not an integer or the sum would
    /// overflow.
    fn plan_increment(
        &self,
        key: &[u8],
        by: i64,
        now: Millis,
    ) -> Result<(PayloadPlan, VersionVector), RequestError> {
        let local = self.store.peek(key);
        let context = local
            .as_ref()
            .map(|s| s.context().clone())
            .unwrap_or_default();
        let held = match &local {
            Some(state) => counter::held(state, now)?,
            None => None,
        };
        let (counter, expires_at_ms) = held.unwrap_or_default();
        let current = counter.value()?.unwrap_or(0);
        let next = current.checked_add(by).ok_or(RequestError::Overflow)?;
        if self.has_bug(PlantedBug::IncrementReadAddWrite) {
            // The planted bug: write the sum back as a plain value.
            let payload = Payload::Value {
                data: next.to_string().into_bytes(),
                expires_at_ms,
            };
            return Ok((PayloadPlan::Fixed(payload), context));
        }
        let plan = PayloadPlan::Increment {
            counter,
            by,
            expires_at_ms,
        };
        Ok((plan, context))
    }

    /// Refuses a put that would leave the key with more siblings, or more sibling bytes, than
    /// the caps allow, judged on this coordinator's state: the siblings its context does not
    /// cover stay, and the put adds one. Deletes are never refused (they only shrink a key).
    /// Replicas merging states from other coordinators may still go past the cap: a merge
    /// never drops an acknowledged sibling.
    fn check_sibling_caps(
        &self,
        local: Option<&Siblings>,
        context: &VersionVector,
        payload: &Payload,
    ) -> Result<(), RequestError> {
        let Payload::Value { data, .. } = payload else {
            return Ok(());
        };
        let Some(local) = local else {
            return Ok(());
        };
        let (mut siblings, mut bytes) = (1, data.len());
        for (_, kept) in local.versions().filter(|(d, _)| !context.covers(d)) {
            siblings += 1;
            if let Payload::Value { data, .. } = kept {
                bytes += data.len();
            }
        }
        if siblings > self.config.max_siblings {
            return Err(RequestError::TooManySiblings {
                siblings,
                limit: self.config.max_siblings,
            });
        }
        if bytes > self.config.max_state_bytes {
            return Err(RequestError::StateTooLarge {
                bytes,
                limit: self.config.max_state_bytes,
            });
        }
        Ok(())
    }

    /// Applies a write here and sends the key's new state to the other replicas; the write is
    /// acknowledged once `needed` replicas (this one included) hold it.
    pub(super) fn store_and_replicate(
        &mut self,
        now: Millis,
        mut origin: Waiter,
        write: CoordinatedWrite,
        deadline: Millis,
        out: &mut Outputs,
    ) {
        let CoordinatedWrite {
            key,
            partition,
            payload,
            context,
            needed,
            sloppy,
        } = write;
        let replicas: Vec<NodeId> = self.ring.preference_list(partition).to_vec();
        let self_counts = usize::from(!replicas.contains(&self.id));
        // Who holds a hint for which replica believed down (none for a strict write).
        let stand_ins = if sloppy {
            self.stand_ins(partition)
        } else {
            Vec::new()
        };
        let mut counted = None;
        let made = |dot: &Dot| {
            let (payload, value) = payload.at(dot);
            counted = value;
            payload
        };
        let state = match self
            .store
            .update_with(&key, &self.actor, &context, made, now)
        {
            Ok((state, dot)) => {
                self.counters.note_siblings(state.len());
                let hinted = !stand_ins.is_empty();
                self.write_log.record(&origin, &key, dot, hinted);
                state
            }
            Err(oom) => {
                let error = RequestError::OutOfMemory {
                    needed: oom.needed,
                    used: oom.used,
                    limit: oom.limit,
                };
                return origin.fail(error, out);
            }
        };
        let mut tracker = QuorumTracker::new(needed, replicas.len() + self_counts);
        tracker.record_success(&self.id);
        let req = self.requests.fresh();
        for replica in replicas.iter().filter(|r| **r != self.id) {
            if self.view.is_up(replica) {
                let message = PeerMessage::Store {
                    req,
                    key: key.clone(),
                    state: state.clone(),
                };
                origin.send(now, replica.clone(), message, out);
            } else if let Some((_, holder)) = stand_ins.iter().find(|(owner, _)| owner == replica) {
                // The holder takes the replica's place in the tracker: its ack counts.
                let message = PeerMessage::HintStore {
                    req,
                    key: key.clone(),
                    owner: replica.clone(),
                    state: state.clone(),
                };
                origin.send(now, holder.clone(), message, out);
            } else {
                tracker.record_failure(replica);
            }
        }
        let flight = WriteFlight {
            tracker,
            context: state.context().clone(),
            counted,
        };
        // A write its own replica's ack decides (W = 1, or no replica can answer) is answered
        // at once, without a place in the table: later acks find no request and are dropped,
        // as they are once any write has been answered.
        let ack_early = self.has_bug(PlantedBug::AckAfterWMinusOne);
        let outcome = write_outcome(&flight.tracker, ack_early);
        if outcome != QuorumOutcome::Pending {
            return origin.reply(flight.reply(outcome), out);
        }
        self.requests.insert(
            req,
            Request {
                waiter: origin,
                deadline,
                flight: Flight::Write(flight),
            },
        );
    }

    /// A replica's `StoreAck` (`stored`) or `StoreRefused`, or an undeliverable `Store`.
    pub(super) fn on_store_answer(
        &mut self,
        from: &NodeId,
        req: u64,
        stored: bool,
        out: &mut Outputs,
    ) {
        if let Some(Flight::Write(write)) = self.requests.flight_mut(req) {
            if stored {
                write.tracker.record_success(from);
            } else {
                write.tracker.record_failure(from);
            }
            self.settle_write(req, out);
        }
    }

    /// Replies and forgets write `req` if its quorum is met or can no longer be.
    fn settle_write(&mut self, req: u64, out: &mut Outputs) {
        let ack_early = self.has_bug(PlantedBug::AckAfterWMinusOne);
        let Some(Flight::Write(write)) = self.requests.flight_mut(req) else {
            return;
        };
        let outcome = write_outcome(&write.tracker, ack_early);
        if outcome == QuorumOutcome::Pending {
            return;
        }
        let Some(Request {
            waiter,
            flight: Flight::Write(write),
            ..
        }) = self.requests.remove(req)
        else {
            unreachable!("a write was just found under this number")
        };
        waiter.reply(write.reply(outcome), out);
    }
}

/// A put of an integer or a delete that replaces a counter this replica holds (`local`)
/// becomes a reset of it (see `core::counter`); any other write stores its payload as it is.
fn plan_over_counter(
    local: Option<&Siblings>,
    context: &VersionVector,
    payload: Payload,
) -> PayloadPlan {
    let Some(seen) = local.and_then(|state| counter::replaced(state, context)) else {
        return PayloadPlan::Fixed(payload);
    };
    match &payload {
        Payload::Value {
            data,
            expires_at_ms,
        } => match counter::parse_integer(data) {
            Some(value) => PayloadPlan::Reset {
                seen,
                value: Some(value),
                expires_at_ms: *expires_at_ms,
            },
            None => PayloadPlan::Fixed(payload),
        },
        Payload::Tombstone => PayloadPlan::Reset {
            seen,
            value: None,
            expires_at_ms: None,
        },
        Payload::Counter { .. } => PayloadPlan::Fixed(payload),
    }
}

/// Whether a write's quorum is met, can no longer be, or is still pending. `ack_early` is
/// the planted bug that counts one ack short of W as met.
fn write_outcome(tracker: &QuorumTracker, ack_early: bool) -> QuorumOutcome {
    if ack_early && tracker.successes() + 1 >= tracker.needed() {
        return QuorumOutcome::Met;
    }
    tracker.outcome()
}

impl WriteFlight {
    /// The client's answer once the quorum is decided (`outcome` is not pending).
    fn reply(self, outcome: QuorumOutcome) -> ClientReply {
        if outcome != QuorumOutcome::Met {
            return ClientReply::Failed(RequestError::Unavailable {
                needed: self.tracker.needed(),
                got: self.tracker.successes(),
            });
        }
        match self.counted {
            Some(value) => ClientReply::Counted {
                value,
                context: self.context,
            },
            None => ClientReply::Written {
                context: self.context,
            },
        }
    }

    /// The error a write past its deadline fails with.
    pub(super) fn timeout(&self) -> RequestError {
        RequestError::Timeout {
            needed: self.tracker.needed(),
            got: self.tracker.successes(),
        }
    }
}
