//! Conditional writes (compare-and-set): each decided by a single-decree Paxos round among
//! the key's N replicas, in the manner of Cassandra's lightweight transactions.
//!
//! Any peer proposes (it need not replicate the key). A round:
//! 1. **Prepare**: a fresh ballot to every replica; each acceptor promises it (or refuses,
//!    naming the higher ballot it promised) and answers with its state of the key, the
//!    round's read. A replica that may not hold the key's data yet (warming: it restarted
//!    empty, or just gained the partition; or stale: it knows of a commit its store does not
//!    hold, refused when full or evicted since) counts only once every replica has promised,
//!    so a majority never rests on replicas that may miss what was committed. A replica that
//!    just gained the key's partition in a join or leave does not promise at all
//!    (`Promise::Incomplete`) until the ex-owners had time to hand it the data: otherwise,
//!    when every replica of the new ring is new to the partition (or warming), all of them
//!    promising would decide on nothing while the value is still on its way.
//! 2. With a majority of promises: if one of them holds a proposal accepted above the last
//!    commit any of them knows, that proposal may have been chosen: it is proposed again under
//!    this ballot and committed first, then the round starts over. Otherwise the promised
//!    states are joined and the condition judged on the join: if it fails, the client gets
//!    `NotApplied` with what was read; if it holds, the new state (the write under the
//!    ballot's own dot, replacing everything read) is proposed.
//! 3. **Propose**: with a majority of acceptances the proposal is chosen.
//! 4. **Commit**: every replica merges the state and notes the ballot committed; once a
//!    majority stored it the client gets `Written`.
//!
//! A refusal at any phase means a higher ballot is about: the round starts over above it,
//! after a short backoff that grows with each attempt (its jitter derived from the request
//! number, never from a random source), until the deadline. Fewer than a majority of live
//! replicas fails at once with `Unavailable`.
//!
//! Linearizable per key: every round reads from a majority, every commit reaches a majority,
//! and a chosen proposal is finished by whichever round comes next. Plain writes keep their
//! quorum semantics beside it: a plain write concurrent with a conditional one becomes a
//! sibling, and the next conditional write must name it (its context) or match it.

use super::requests::{validate_key, Flight, Request, Waiter};
use super::{Node, Outputs};
use crate::core::message::PeerMessage;
use crate::core::paxos::{Ballot, Condition, Promise};
use crate::core::planted::PlantedBug;
use crate::core::request::{ClientReply, ConditionalWrite, RequestError, WriteKind};
use crate::core::siblings::{Payload, Siblings};
use crate::core::types::{Millis, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// A conditional write in flight at its proposer.
#[derive(Debug)]
pub(super) struct ConditionalFlight {
    key: Vec<u8>,
    condition: Condition,
    payload: Payload,
    ballot: Ballot,
    replicas: Vec<NodeId>,
    majority: usize,
    attempts: u32,
    /// The highest round any acceptor named: the next ballot goes above it.
    highest_round: u64,
    /// The dots this write was proposed under in earlier rounds: a round that finds one of
    /// them in progress and finishes it has applied this write.
    proposed: Vec<crate::core::version_vector::Dot>,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    Preparing {
        granted: BTreeMap<NodeId, Granted>,
        /// Promises from warming replicas: counted only with every other replica's.
        warming: BTreeMap<NodeId, Granted>,
        /// Refusals and unreachable replicas.
        not_granted: usize,
    },
    Proposing {
        state: Siblings,
        /// Whether the proposal is this write (else an earlier proposal being finished).
        own: bool,
        accepted: BTreeSet<NodeId>,
        refused: usize,
    },
    Committing {
        state: Siblings,
        own: bool,
        stored: BTreeSet<NodeId>,
        failed: usize,
    },
    /// Waiting out a backoff before the next prepare.
    Backoff { until: Millis },
}

#[derive(Debug)]
struct Granted {
    accepted: Option<(Ballot, Siblings)>,
    committed: Option<Ballot>,
    state: Option<Siblings>,
}

impl ConditionalFlight {
    pub(super) fn timeout(&self) -> RequestError {
        let got = match &self.stage {
            Stage::Preparing { granted, .. } => granted.len(),
            Stage::Proposing { accepted, .. } => accepted.len(),
            Stage::Committing { stored, .. } => stored.len(),
            Stage::Backoff { .. } => 0,
        };
        RequestError::Timeout {
            needed: self.majority,
            got,
        }
    }

    /// Whether the flight waits out a backoff that ends by `now`.
    pub(super) fn backoff_over(&self, now: Millis) -> bool {
        matches!(self.stage, Stage::Backoff { until } if until <= now)
    }
}

impl Node {
    pub(super) fn start_conditional(
        &mut self,
        now: Millis,
        origin: Waiter,
        write: ConditionalWrite,
        out: &mut Outputs,
    ) {
        if let Err(e) = validate_key(&self.config, &write.key) {
            return origin.fail(e, out);
        }
        if let WriteKind::Put { value, .. } = &write.write {
            if value.len() > self.config.max_value_bytes {
                let error = RequestError::ValueTooLarge {
                    size: value.len(),
                    limit: self.config.max_value_bytes,
                };
                return origin.fail(error, out);
            }
        }
        let Some(payload) = write.write.into_payload(now) else {
            return origin.fail(RequestError::Conflict { siblings: 0 }, out);
        };
        let replicas: Vec<NodeId> = self.ring.replicas_of(&write.key).to_vec();
        let majority = replicas.len() / 2 + 1;
        let live = replicas.iter().filter(|r| self.view.is_up(r)).count();
        if live < majority {
            let error = RequestError::Unavailable {
                needed: majority,
                got: live,
            };
            return origin.fail(error, out);
        }
        let flight = ConditionalFlight {
            key: write.key,
            condition: write.condition,
            payload,
            ballot: Ballot {
                round: 0,
                proposer: self.ballot_proposer(),
            },
            replicas,
            majority,
            attempts: 0,
            highest_round: 0,
            proposed: Vec::new(),
            stage: Stage::Backoff { until: now },
        };
        let deadline = now + self.config.request_timeout_ms;
        self.prepare(now, origin, deadline, flight, out);
    }

    /// Starts a round: a ballot above every round heard of, sent to every replica.
    fn prepare(
        &mut self,
        now: Millis,
        waiter: Waiter,
        deadline: Millis,
        mut flight: ConditionalFlight,
        out: &mut Outputs,
    ) {
        flight.attempts += 1;
        // Each round asks the key's replicas as this node's ring names them now.
        flight.replicas = self.ring.replicas_of(&flight.key).to_vec();
        flight.majority = flight.replicas.len() / 2 + 1;
        // A Lamport clock over every ballot this node has seen, on any key: a new round
        // starts above them all, so a proposer rarely meets a refusal it could have avoided.
        self.paxos_rounds = self
            .paxos_rounds
            .max(flight.highest_round)
            .max(flight.ballot.round)
            + 1;
        flight.ballot = Ballot {
            round: self.paxos_rounds,
            proposer: self.ballot_proposer(),
        };
        let stage = Stage::Preparing {
            granted: BTreeMap::new(),
            warming: BTreeMap::new(),
            not_granted: 0,
        };
        let phase = (waiter, deadline, flight, stage);
        self.send_phase(now, phase, out, |req, flight| PeerMessage::PaxosPrepare {
            req,
            key: flight.key.clone(),
            ballot: flight.ballot.clone(),
            replicas: flight.replicas.clone(),
        });
    }

    /// Starts a phase of `flight`'s round under a fresh request number (so late answers
    /// to an earlier phase match nothing) and sends its message to every replica.
    fn send_phase(
        &mut self,
        now: Millis,
        (waiter, deadline, mut flight, stage): (Waiter, Millis, ConditionalFlight, Stage),
        out: &mut Outputs,
        message: impl Fn(u64, &ConditionalFlight) -> PeerMessage,
    ) {
        flight.stage = stage;
        let req = self.requests.fresh();
        let messages: Vec<(NodeId, PeerMessage)> = flight
            .replicas
            .iter()
            .map(|r| (r.clone(), message(req, &flight)))
            .collect();
        self.requests.insert(
            req,
            Request {
                waiter,
                deadline,
                flight: Flight::Conditional(flight),
            },
        );
        for (replica, message) in messages {
            self.paxos_send(now, replica, message, out);
        }
    }

    /// Who this peer's ballots name: its incarnation, so a restarted peer never mints a
    /// ballot (or a dot) its previous incarnation used.
    fn ballot_proposer(&self) -> crate::core::version_vector::Actor {
        if self.has_bug(PlantedBug::PaxosAmnesia) {
            return crate::core::version_vector::Actor(self.id.to_string().into());
        }
        self.actor.clone()
    }

    /// Whether this node's ring names `replicas` as `key`'s replicas, as the proposer's did.
    fn same_replicas(&self, key: &[u8], replicas: &[NodeId]) -> bool {
        let mine = self.ring.replicas_of(key);
        mine.len() == replicas.len() && mine.iter().all(|r| replicas.contains(r))
    }

    /// Sends to a replica (a proposer's request on its waiter's behalf, see `Waiter::send`),
    /// or hands the message to this node's own acceptor.
    fn paxos_send(&mut self, now: Millis, to: NodeId, message: PeerMessage, out: &mut Outputs) {
        if to == self.id {
            let me = self.id.clone();
            self.on_paxos_message(now, me, message, out);
        } else if self.view.is_up(&to) {
            let proposing = !message.is_reply();
            match self.requests.get_mut(message.req()).filter(|_| proposing) {
                Some(request) => request.waiter.send(now, to, message, out),
                None => out.send(to, message),
            }
        } else {
            let req = message.req();
            self.on_paxos_unreachable(now, req, out);
        }
    }

    /// Every Paxos message, acceptor and proposer side.
    pub(super) fn on_paxos_message(
        &mut self,
        now: Millis,
        from: NodeId,
        message: PeerMessage,
        out: &mut Outputs,
    ) {
        match message {
            PeerMessage::PaxosPrepare {
                req,
                key,
                ballot,
                replicas,
            } => {
                self.paxos_rounds = self.paxos_rounds.max(ballot.round);
                // Every acceptor of a round agrees with its proposer on the key's replicas:
                // two proposers that disagree (one has seen a join or leave, the other not)
                // could otherwise each gather a majority of a different replica set, and the
                // two majorities need not meet.
                let promise = if !self.same_replicas(&key, &replicas) {
                    Promise::OtherReplicas
                } else if self.gained_recently(self.ring.partition_of(&key), now)
                    && !self.has_bug(PlantedBug::PaxosAmnesia)
                {
                    // Its data may still be at the ex-owners: every replica could be new to
                    // the partition, and all of them promising would decide on nothing.
                    Promise::Incomplete
                } else {
                    self.acceptor.prepare(&key, &ballot)
                };
                let state = self.store.peek(&key);
                // A replica that knows of a commit its store does not hold (it refused it when
                // full, or evicted the key since) answers from stale data: like a warming
                // replica, it counts only beside every other.
                let stale = self
                    .acceptor
                    .committed_clock(&key)
                    .is_some_and(|c| !state.as_ref().is_some_and(|s| s.context().descends_from(c)));
                let amnesic = self.paxos_recovering(now)
                    || (self.is_warming(self.ring.partition_of(&key), now)
                        && !self.has_bug(PlantedBug::PaxosAmnesia));
                let warming = stale || amnesic;
                let reply = PeerMessage::PaxosPromise {
                    req,
                    promise,
                    state,
                    warming,
                };
                self.paxos_send(now, from, reply, out);
            }
            PeerMessage::PaxosPropose {
                req,
                key,
                ballot,
                state,
                replicas,
            } => {
                let refused_by = if !self.same_replicas(&key, &replicas) {
                    Err(ballot.clone())
                } else if self.paxos_recovering(now) {
                    self.acceptor.accept_promised_only(&key, &ballot, &state)
                } else {
                    self.acceptor.accept(&key, &ballot, &state)
                }
                .err();
                let reply = PeerMessage::PaxosAccepted { req, refused_by };
                self.paxos_send(now, from, reply, out);
            }
            PeerMessage::PaxosCommit {
                req,
                key,
                ballot,
                state,
            } => {
                let stored = self.apply_replicated(&key, &state, now);
                // A commit the store refused (full) stays an accepted proposal here, so the
                // next round finds it and commits it again rather than building on a state
                // without it.
                if stored {
                    self.acceptor.committed(&key, &ballot, state.context());
                }
                let reply = PeerMessage::PaxosCommitted { req, stored };
                self.paxos_send(now, from, reply, out);
            }
            PeerMessage::PaxosPromise {
                req,
                promise,
                state,
                warming,
            } => self.on_promise(now, from, req, promise, state, warming, out),
            PeerMessage::PaxosAccepted { req, refused_by } => {
                self.on_accepted(now, from, req, refused_by, out)
            }
            PeerMessage::PaxosCommitted { req, stored } => {
                self.on_committed(now, from, req, stored, out)
            }
            _ => {}
        }
    }

    /// A Paxos message that could not reach its replica: an answer that cannot count.
    pub(super) fn on_paxos_unreachable(&mut self, now: Millis, req: u64, out: &mut Outputs) {
        let Some(Flight::Conditional(flight)) = self.requests.flight_mut(req) else {
            return;
        };
        match &mut flight.stage {
            Stage::Preparing { not_granted, .. } => *not_granted += 1,
            Stage::Proposing { refused, .. } => *refused += 1,
            Stage::Committing { failed, .. } => *failed += 1,
            Stage::Backoff { .. } => {}
        }
        self.advance(now, req, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_promise(
        &mut self,
        now: Millis,
        from: NodeId,
        req: u64,
        promise: Promise,
        state: Option<Siblings>,
        warming: bool,
        out: &mut Outputs,
    ) {
        let Some(Flight::Conditional(flight)) = self.requests.flight_mut(req) else {
            return;
        };
        let Stage::Preparing {
            granted,
            warming: granted_warming,
            not_granted,
        } = &mut flight.stage
        else {
            return;
        };
        match promise {
            Promise::Granted {
                accepted,
                committed,
            } => {
                let g = Granted {
                    accepted,
                    committed,
                    state,
                };
                if warming {
                    granted_warming.insert(from, g);
                } else {
                    granted.insert(from, g);
                }
            }
            Promise::Refused { promised } => {
                flight.highest_round = flight.highest_round.max(promised.round);
                *not_granted += 1;
            }
            Promise::OtherReplicas | Promise::Incomplete => *not_granted += 1,
        }
        self.advance(now, req, out);
    }

    fn on_accepted(
        &mut self,
        now: Millis,
        from: NodeId,
        req: u64,
        refused_by: Option<Ballot>,
        out: &mut Outputs,
    ) {
        let Some(Flight::Conditional(flight)) = self.requests.flight_mut(req) else {
            return;
        };
        let Stage::Proposing {
            accepted, refused, ..
        } = &mut flight.stage
        else {
            return;
        };
        match refused_by {
            None => {
                accepted.insert(from);
            }
            Some(promised) => {
                *refused += 1;
                flight.highest_round = flight.highest_round.max(promised.round);
            }
        }
        self.advance(now, req, out);
    }

    fn on_committed(
        &mut self,
        now: Millis,
        from: NodeId,
        req: u64,
        stored: bool,
        out: &mut Outputs,
    ) {
        let Some(Flight::Conditional(flight)) = self.requests.flight_mut(req) else {
            return;
        };
        let Stage::Committing {
            stored: done,
            failed,
            ..
        } = &mut flight.stage
        else {
            return;
        };
        if stored {
            done.insert(from);
        } else {
            *failed += 1;
        }
        self.advance(now, req, out);
    }

    /// Moves flight `req` on once its current phase has enough answers.
    fn advance(&mut self, now: Millis, req: u64, out: &mut Outputs) {
        let promises_needed = {
            let Some(Flight::Conditional(flight)) = self.requests.flight_mut(req) else {
                return;
            };
            flight.majority
        };
        let promises_needed = if self.has_bug(PlantedBug::PaxosWithoutMajority) {
            1 // the planted bug: one promise is enough
        } else {
            promises_needed
        };
        let Some(Flight::Conditional(flight)) = self.requests.flight_mut(req) else {
            return;
        };
        let n = flight.replicas.len();
        let majority = flight.majority;
        let next = match &flight.stage {
            Stage::Preparing {
                granted,
                warming,
                not_granted,
            } => {
                if granted.len() >= promises_needed || granted.len() + warming.len() == n {
                    Next::Decide
                } else if *not_granted > n - majority
                    || granted.len() + warming.len() + *not_granted == n
                {
                    // Too many refused, or every replica answered and the warming ones cannot
                    // count: try again after the backoff.
                    Next::Retry
                } else {
                    Next::Wait
                }
            }
            Stage::Proposing {
                accepted, refused, ..
            } => {
                if accepted.len() >= majority {
                    Next::Commit
                } else if *refused > n - majority {
                    Next::Retry
                } else {
                    Next::Wait
                }
            }
            Stage::Committing {
                stored,
                failed,
                own,
                ..
            } => {
                if stored.len() >= majority {
                    if *own {
                        Next::Done
                    } else {
                        Next::Restart
                    }
                } else if *failed > n - majority {
                    Next::Fail
                } else {
                    Next::Wait
                }
            }
            Stage::Backoff { .. } => Next::Wait,
        };
        if matches!(next, Next::Wait) {
            return;
        }
        let Some(Request {
            waiter,
            deadline,
            flight: Flight::Conditional(flight),
        }) = self.requests.remove(req)
        else {
            return;
        };
        match next {
            Next::Wait => unreachable!("returned above"),
            Next::Decide => self.decide(now, waiter, deadline, flight, out),
            // Past its deadline the client has its answer (a timeout): committing now could
            // land after rounds that never saw this one. A chosen proposal left uncommitted
            // is finished by the next round that finds it.
            Next::Commit if now >= deadline => waiter.fail(flight.timeout(), out),
            Next::Commit => self.commit(now, waiter, deadline, flight, out),
            Next::Retry => self.back_off(now, waiter, deadline, flight),
            // An earlier proposal was finished: no contention, the own round starts at once.
            Next::Restart => self.prepare(now, waiter, deadline, flight, out),
            Next::Done => {
                let Stage::Committing { state, .. } = &flight.stage else {
                    unreachable!("done after committing")
                };
                let context = state.context().clone();
                self.counters.conditional_applied += 1;
                waiter.reply(ClientReply::Written { context }, out);
            }
            Next::Fail => {
                let error = RequestError::Unavailable {
                    needed: flight.majority,
                    got: 0,
                };
                waiter.fail(error, out);
            }
        }
    }

    /// A majority promised: finish an earlier proposal, or judge the condition and propose.
    fn decide(
        &mut self,
        now: Millis,
        waiter: Waiter,
        deadline: Millis,
        mut flight: ConditionalFlight,
        out: &mut Outputs,
    ) {
        let Stage::Preparing {
            mut granted,
            warming,
            ..
        } = std::mem::replace(&mut flight.stage, Stage::Backoff { until: now })
        else {
            unreachable!("decide follows prepare")
        };
        if granted.len() < flight.majority {
            granted.extend(warming); // every replica promised
        }
        // The last commit any of them knows: their own notes, and the ballots the data's
        // clocks carry (a note may have been forgotten; a committed write's dot names it).
        let mut last_commit: Option<Ballot> = None;
        let mut merged = Siblings::new();
        for g in granted.values() {
            last_commit = last_commit.max(g.committed.clone());
            if let Some(state) = &g.state {
                merged.merge(state);
            }
        }
        for (actor, counter) in merged.context().iter() {
            let dot = crate::core::version_vector::Dot {
                actor: actor.clone(),
                counter,
            };
            last_commit = last_commit.max(Ballot::of_dot(&dot));
        }
        let in_progress = granted
            .values()
            .filter_map(|g| g.accepted.as_ref())
            .filter(|(b, _)| last_commit.as_ref().is_none_or(|c| b > c))
            .max_by(|a, b| a.0.cmp(&b.0))
            .cloned();
        // A proposal whose state does not hold everything committed since it was made cannot
        // have been chosen before those commits (their rounds would have found it): finishing
        // it now would undo them, so it is left, never applied.
        if let Some((_, state)) =
            in_progress.filter(|(_, s)| s.context().descends_from(merged.context()))
        {
            // It may have been chosen: finish it under this ballot before our own write. If
            // it is this write's own proposal from an earlier round, finishing it applies it.
            let own = state.versions().any(|(d, _)| flight.proposed.contains(d));
            return self.propose(now, waiter, deadline, flight, state, own, out);
        }
        // An earlier round of this write may have been chosen and finished by another
        // proposer. Its dot is unique ((proposer/cas, round): one flight per round), so a
        // clock whose entry for that actor is exactly the round has seen this write applied
        // (and maybe replaced since). An entry above it was raised by a later write of the
        // same proposer: whether this one applied before it cannot be told.
        let seen = |d: &crate::core::version_vector::Dot| merged.context().get(&d.actor);
        if flight.proposed.iter().any(|d| seen(d) == d.counter) {
            self.counters.conditional_applied += 1;
            let context = merged.context().clone();
            return waiter.reply(ClientReply::Written { context }, out);
        }
        if flight.proposed.iter().any(|d| seen(d) > d.counter) {
            return waiter.fail(flight.timeout(), out);
        }
        // The condition fails now. If an earlier round of this write was proposed in a ballot
        // above the last commit, that proposal may still be accepted somewhere and finished
        // later: the outcome is unknown, never a definite "not applied". Below the last
        // commit it never will be (rounds pass over proposals older than the last commit).
        let may_still_apply = flight
            .proposed
            .iter()
            .filter_map(Ballot::of_dot)
            .any(|b| last_commit.as_ref().is_none_or(|c| b > *c));
        if !flight.condition.holds(&merged, now) && may_still_apply {
            return waiter.fail(flight.timeout(), out);
        }
        if !flight.condition.holds(&merged, now) {
            self.counters.conditional_not_applied += 1;
            let values = super::read::reader_values(&merged, now);
            let context = merged.context().clone();
            return waiter.reply(ClientReply::NotApplied { values, context }, out);
        }
        let mut state = merged.clone();
        let context = merged.context().clone();
        let dot = flight.ballot.dot();
        if state.context().covers(&dot) {
            // A write of this proposer's at this round is already there (a ballot reused after
            // its acceptor forgot it): go above it.
            flight.highest_round = flight.highest_round.max(dot.counter);
            return self.back_off(now, waiter, deadline, flight);
        }
        flight.proposed.push(dot.clone());
        state.update_at(
            dot,
            &context,
            flight.payload.clone(),
            self.config.max_clock_entries,
        );
        self.propose(now, waiter, deadline, flight, state, true, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn propose(
        &mut self,
        now: Millis,
        waiter: Waiter,
        deadline: Millis,
        flight: ConditionalFlight,
        state: Siblings,
        own: bool,
        out: &mut Outputs,
    ) {
        let stage = Stage::Proposing {
            state: state.clone(),
            own,
            accepted: BTreeSet::new(),
            refused: 0,
        };
        let phase = (waiter, deadline, flight, stage);
        self.send_phase(now, phase, out, |req, flight| PeerMessage::PaxosPropose {
            req,
            key: flight.key.clone(),
            ballot: flight.ballot.clone(),
            state: state.clone(),
            replicas: flight.replicas.clone(),
        });
    }

    /// A majority accepted: the proposal is chosen; every replica gets it.
    fn commit(
        &mut self,
        now: Millis,
        waiter: Waiter,
        deadline: Millis,
        mut flight: ConditionalFlight,
        out: &mut Outputs,
    ) {
        let Stage::Proposing { state, own, .. } =
            std::mem::replace(&mut flight.stage, Stage::Backoff { until: now })
        else {
            unreachable!("commit follows propose")
        };
        let stage = Stage::Committing {
            state: state.clone(),
            own,
            stored: BTreeSet::new(),
            failed: 0,
        };
        let phase = (waiter, deadline, flight, stage);
        self.send_phase(now, phase, out, |req, flight| PeerMessage::PaxosCommit {
            req,
            key: flight.key.clone(),
            ballot: flight.ballot.clone(),
            state: state.clone(),
        });
    }

    /// A higher ballot is about (or an earlier proposal was just finished): wait a little,
    /// longer with each attempt, then start a new round (see `conditional_tick`).
    fn back_off(
        &mut self,
        now: Millis,
        waiter: Waiter,
        deadline: Millis,
        mut flight: ConditionalFlight,
    ) {
        self.counters.conditional_retries += 1;
        let req = self.requests.fresh();
        // Exponential, with jitter over the whole window taken from the request number (no
        // random source in the core): proposers that collided spread apart.
        let window = 10u64 << flight.attempts.min(4); // 20, 40, 80, 160 ms
        let jitter = req.wrapping_mul(0x9E37_79B9_7F4A_7C15) % window;
        let until = now + window / 2 + jitter / 2;
        flight.stage = Stage::Backoff { until };
        self.conditional_backoffs.insert((until, req));
        self.requests.insert(
            req,
            Request {
                waiter,
                deadline,
                flight: Flight::Conditional(flight),
            },
        );
    }

    /// Starts the next round of every conditional write whose backoff is over.
    pub(super) fn conditional_tick(&mut self, now: Millis, out: &mut Outputs) {
        let due: Vec<(Millis, u64)> = self
            .conditional_backoffs
            .range(..=(now, u64::MAX))
            .copied()
            .collect();
        for entry in due {
            self.conditional_backoffs.remove(&entry);
            let req = entry.1;
            let waiting = matches!(
                self.requests.flight_mut(req),
                Some(Flight::Conditional(f)) if f.backoff_over(now)
            );
            if !waiting {
                continue; // timed out meanwhile
            }
            if let Some(Request {
                waiter,
                deadline,
                flight: Flight::Conditional(flight),
            }) = self.requests.remove(req)
            {
                self.prepare(now, waiter, deadline, flight, out);
            }
        }
    }
}

enum Next {
    Wait,
    Restart,
    Decide,
    Commit,
    Retry,
    Done,
    Fail,
}
