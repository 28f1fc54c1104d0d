//! Forwarding a write to a replica that coordinates it, and coordinating forwarded writes once.
//!
//! A peer that is not one of a key's replicas sends a client's write to the first live one
//! (`Coordinate`) and relays its `CoordinateReply`; if the send fails, the client gets
//! `Unavailable` at once. The coordinator remembers the forwarded writes it coordinated
//! recently: a duplicated `Coordinate` must not apply the write twice, since a second dot for
//! the same value would survive a later overwrite whose context covers the first.

use super::requests::{Flight, Request, Waiter};
use super::{Node, Outputs};
use crate::core::message::PeerMessage;
use crate::core::request::{ClientReply, RequestError, WriteRequest};
use crate::core::types::{Millis, NodeId, TraceId};
use std::collections::BTreeMap;

/// A write forwarded to a coordinator, waiting for its reply.
#[derive(Debug)]
pub(super) struct ForwardFlight {
    needed: usize,
}

impl ForwardFlight {
    /// The error a forward past its deadline fails with.
    pub(super) fn timeout(&self) -> RequestError {
        RequestError::Timeout {
            needed: self.needed,
            got: 0,
        }
    }
}

/// Forwarded writes coordinated recently, by (forwarder, its request number), with the time
/// each arrived.
#[derive(Default)]
pub(super) struct RecentForwards(BTreeMap<(NodeId, u64), Millis>);

impl RecentForwards {
    /// Records a forwarded write; false if it was already recorded (a duplicate).
    fn first_time(&mut self, from: NodeId, req: u64, now: Millis) -> bool {
        self.0.insert((from, req), now).is_none()
    }

    /// Forgets the forwards that arrived before `horizon`.
    pub(super) fn forget_before(&mut self, horizon: Millis) {
        self.0.retain(|_, at| *at >= horizon);
    }
}

impl Node {
    /// Sends a client's write (`client` waits for it) to the first live replica of its key to
    /// coordinate.
    pub(super) fn forward_write(
        &mut self,
        now: Millis,
        mut client: Waiter,
        write: WriteRequest,
        needed: usize,
        out: &mut Outputs,
    ) {
        let replicas = self.ring.replicas_of(&write.key);
        let Some(target) = replicas.iter().find(|r| self.view.is_up(r)).cloned() else {
            let error = RequestError::Unavailable { needed, got: 0 };
            return client.fail(error, out);
        };
        let req = self.requests.fresh();
        self.counters.writes_forwarded += 1;
        client.send(now, target, PeerMessage::Coordinate { req, write }, out);
        self.requests.insert(
            req,
            Request {
                waiter: client,
                deadline: now + self.config.request_timeout_ms,
                flight: Flight::Forward(ForwardFlight { needed }),
            },
        );
    }

    /// A peer asks us to coordinate a write (sent with `trace`, which the write's messages
    /// keep); a duplicate of one already seen is ignored.
    pub(super) fn on_coordinate(
        &mut self,
        now: Millis,
        (from, trace): (NodeId, Option<TraceId>),
        req: u64,
        write: WriteRequest,
        out: &mut Outputs,
    ) {
        if !self.recent_forwards.first_time(from.clone(), req, now) {
            return; // a duplicate: the first copy is being (or was) coordinated
        }
        let origin = Waiter::Peer {
            node: from,
            req,
            trace,
        };
        self.start_write(now, origin, write, out);
    }

    /// The coordinator's answer to a write we forwarded: relayed to the client.
    pub(super) fn on_coordinate_reply(&mut self, req: u64, reply: ClientReply, out: &mut Outputs) {
        if let Some(Flight::Forward(_)) = self.requests.flight_mut(req) {
            if let Some(request) = self.requests.remove(req) {
                request.waiter.reply(reply, out);
            }
        }
    }

    /// A `Coordinate` that could not be sent: the client learns at once.
    pub(super) fn on_forward_undeliverable(&mut self, req: u64, out: &mut Outputs) {
        if let Some(Flight::Forward(forward)) = self.requests.flight_mut(req) {
            let error = RequestError::Unavailable {
                needed: forward.needed,
                got: 0,
            };
            if let Some(request) = self.requests.remove(req) {
                request.waiter.fail(error, out);
            }
        }
    }
}
