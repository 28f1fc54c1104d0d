//! The request table: every request this node coordinates or forwarded that waits for another
//! peer, by request number (one this node's own replica decides is answered in the event that
//! brought it, and never enters the table).
//!
//! It numbers requests, remembers who waits for each outcome (one [`Waiter`] type for all
//! kinds; a client's waiter also carries its trace and times the replicas asked, see
//! `replica_timings`) and each request's deadline. Every request has a deadline; `tick` fails
//! those past it with `Timeout { needed, got }`, finding them through a deadline index rather
//! than by scanning the table, and handles them in request-number order. A request that cannot
//! reach its quorum among live replicas fails at once with `Unavailable { needed, got }` and
//! writes nothing.
//!
//! Request numbers advance by the shard count, keeping their residue (see `Node::new_shard`),
//! and start from a scramble of the incarnation, so a reply meant for an earlier incarnation
//! of this peer cannot match one of this incarnation's requests.

use super::conditional::ConditionalFlight;
use super::forward::ForwardFlight;
use super::read::ReadFlight;
use super::replica_timings::ReplicaTimings;
use super::write::WriteFlight;
use super::{Completion, Outgoing, Outputs};
use crate::core::config::CoreConfig;
use crate::core::message::PeerMessage;
use crate::core::request::{ClientReply, RequestError};
use crate::core::types::{ClientRequestId, Millis, NodeId, Quorum, TraceId};
use std::collections::{BTreeMap, BTreeSet};

/// Who is waiting for a request's outcome, and the trace its messages carry.
#[derive(Clone, Debug)]
pub(super) enum Waiter {
    Client {
        id: ClientRequestId,
        trace: Option<TraceId>,
        /// The replicas asked on the client's behalf, handed back with its reply.
        replicas: ReplicaTimings,
    },
    /// A peer that forwarded a write for us to coordinate.
    Peer {
        node: NodeId,
        req: u64,
        trace: Option<TraceId>,
    },
    /// Nobody: the node itself (confirming tombstones before collecting them), or a waiter
    /// already answered. Its replies are dropped, and it is not counted as a hit or a miss.
    Nobody,
}

impl Waiter {
    pub(super) fn client(id: ClientRequestId, trace: Option<TraceId>) -> Waiter {
        Waiter::Client {
            id,
            trace,
            replicas: ReplicaTimings::default(),
        }
    }

    /// The trace of the client request this waiter stands for, if any.
    pub(super) fn trace(&self) -> Option<&TraceId> {
        match self {
            Waiter::Client { trace, .. } | Waiter::Peer { trace, .. } => trace.as_ref(),
            Waiter::Nobody => None,
        }
    }

    /// Sends `message`, a request to `to`, on this waiter's behalf: it carries the waiter's
    /// trace, and for a client, `to` is timed from `now` until it answers.
    pub(super) fn send(
        &mut self,
        now: Millis,
        to: NodeId,
        message: PeerMessage,
        out: &mut Outputs,
    ) {
        if let Waiter::Client { replicas, .. } = self {
            replicas.asked(&to, now);
        }
        let trace = self.trace().cloned();
        out.messages.push(Outgoing { to, message, trace });
    }

    /// `from` answered one of this waiter's requests at `now`.
    pub(super) fn answered(&mut self, from: &NodeId, now: Millis) {
        if let Waiter::Client { replicas, .. } = self {
            replicas.answered(from, now);
        }
    }

    /// One of this waiter's requests could not be handed to `to`.
    pub(super) fn unreachable(&mut self, to: &NodeId) {
        if let Waiter::Client { replicas, .. } = self {
            replicas.unreachable(to);
        }
    }

    /// Hands `reply` to whoever waits: a client reply (with how each replica asked fared),
    /// or a `CoordinateReply` to the peer.
    pub(super) fn reply(self, reply: ClientReply, out: &mut Outputs) {
        match self {
            Waiter::Client { id, replicas, .. } => out.replies.push(Completion {
                id,
                reply,
                replicas: replicas.summary(),
            }),
            Waiter::Peer { node, req, trace } => out.messages.push(Outgoing {
                to: node,
                message: PeerMessage::CoordinateReply { req, reply },
                trace,
            }),
            Waiter::Nobody => {}
        }
    }

    pub(super) fn fail(self, error: RequestError, out: &mut Outputs) {
        self.reply(ClientReply::Failed(error), out)
    }
}

/// What a request is waiting for; each subsystem owns its kind.
#[derive(Debug)]
pub(super) enum Flight {
    Write(WriteFlight),
    Read(ReadFlight),
    Forward(ForwardFlight),
    Conditional(ConditionalFlight),
}

/// One entry of the table.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) waiter: Waiter,
    pub(super) deadline: Millis,
    pub(super) flight: Flight,
}

pub(super) struct Requests {
    next: u64,
    /// Request numbers advance by the shard count, keeping their residue.
    stride: u64,
    table: BTreeMap<u64, Request>,
    /// (deadline, request number) of every entry in `table`.
    deadlines: BTreeSet<(Millis, u64)>,
    /// (when, request number) of reads that ask their spare replicas then if still
    /// unanswered (see `read`); an entry may outlive its request, which `take_spares_due`
    /// skips.
    spares_due: BTreeSet<(Millis, u64)>,
}

impl Requests {
    pub(super) fn new(incarnation: u64) -> Requests {
        Requests {
            next: first_request_number(incarnation),
            stride: 1,
            table: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            spares_due: BTreeSet::new(),
        }
    }

    /// Numbers requests `shard` modulo `shards`.
    pub(super) fn shard(&mut self, shard: u32, shards: u64) {
        self.next = self.next / shards * shards + shard as u64;
        self.stride = shards;
    }

    /// A request number never used before (also a sequence number for other tables).
    pub(super) fn fresh(&mut self) -> u64 {
        self.next += self.stride;
        self.next
    }

    pub(super) fn insert(&mut self, req: u64, request: Request) {
        self.deadlines.insert((request.deadline, req));
        if let Some(old) = self.table.insert(req, request) {
            self.deadlines.remove(&(old.deadline, req));
        }
    }

    pub(super) fn get_mut(&mut self, req: u64) -> Option<&mut Request> {
        self.table.get_mut(&req)
    }

    pub(super) fn flight_mut(&mut self, req: u64) -> Option<&mut Flight> {
        self.table.get_mut(&req).map(|r| &mut r.flight)
    }

    pub(super) fn remove(&mut self, req: u64) -> Option<Request> {
        let request = self.table.remove(&req)?;
        self.deadlines.remove(&(request.deadline, req));
        Some(request)
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn flights(&self) -> impl Iterator<Item = &Flight> {
        self.table.values().map(|r| &r.flight)
    }

    /// Notes that read `req` asks its spare replicas at `at` if it is still unanswered.
    pub(super) fn spares_due_at(&mut self, at: Millis, req: u64) {
        self.spares_due.insert((at, req));
    }

    /// The requests still in the table whose spares came due at `now` or earlier, in
    /// request-number order.
    pub(super) fn take_spares_due(&mut self, now: Millis) -> Vec<u64> {
        let later = self.spares_due.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut self.spares_due, later);
        let mut due: Vec<u64> = due
            .into_iter()
            .map(|(_, req)| req)
            .filter(|req| self.table.contains_key(req))
            .collect();
        due.sort_unstable();
        due
    }

    /// Removes and returns every request whose deadline is `now` or earlier, in request-number
    /// order.
    pub(super) fn take_overdue(&mut self, now: Millis) -> Vec<(u64, Request)> {
        let mut overdue: Vec<u64> = self
            .deadlines
            .range(..=(now, u64::MAX))
            .map(|(_, req)| *req)
            .collect();
        overdue.sort_unstable();
        overdue
            .into_iter()
            .filter_map(|req| self.remove(req).map(|r| (req, r)))
            .collect()
    }
}

/// Scrambles an incarnation into a starting request number, so that a reply meant for an
/// earlier incarnation of this peer cannot match one of this incarnation's requests: the
/// ranges two incarnations use are 2^62 numbers apart on average.
pub(super) fn first_request_number(incarnation: u64) -> u64 {
    scramble(incarnation) >> 1
}

/// SplitMix64's finalizer: spreads numbers that differ in a few low bits over all 64.
pub(super) fn scramble(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn validate_key(config: &CoreConfig, key: &[u8]) -> Result<(), RequestError> {
    if key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    if key.len() > config.max_key_bytes {
        return Err(RequestError::KeyTooLarge {
            size: key.len(),
            limit: config.max_key_bytes,
        });
    }
    Ok(())
}

/// How many replicas `q` asks for, or an error if more than there are.
pub(super) fn resolve_quorum(config: &CoreConfig, q: Quorum) -> Result<usize, RequestError> {
    let needed = q.resolve(config.replicas);
    if needed > config.replicas {
        return Err(RequestError::QuorumTooLarge {
            asked: needed,
            replicas: config.replicas,
        });
    }
    Ok(needed)
}
