//! How long each replica a client request asked took to answer, for the slow-request log.
//!
//! Why: a request that took long is explained by the replica that was slow, silent or out of
//! reach. The coordinator already learns when each answer arrives (on the clock the driver
//! passes in); [`ReplicaTimings`] keeps, per replica asked, when it was asked and when (or
//! whether) it answered, and the summary goes back to the shell with the client's reply
//! (`Completion::replicas`), which logs it when the request was slow.
//!
//! # Promises
//! - Cheap: one small `Vec` per client request, one entry per replica asked, filled as
//!   messages go out and answers come in. Nothing is kept for requests a peer forwarded to
//!   this one, nor for the node's own housekeeping (anti-entropy, hints, collection).
//! - A replica's entry describes the last round it was asked in: a request of several rounds
//!   (a conditional write's Paxos phases, an expire's read and then its write) asks again, and
//!   the new round starts its entry afresh. Within a round only the first answer counts.
//! - The summary is what the coordinator knew when it answered the client: a replica that
//!   answers later (a read keeps listening after R, to repair) shows as `NoAnswer`.

use crate::core::types::{Millis, NodeId};
use std::fmt;

/// How one replica the request asked fared, as of the client's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaTiming {
    pub peer: NodeId,
    pub answer: ReplicaAnswer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaAnswer {
    /// It answered this many milliseconds after it was asked.
    After(Millis),
    /// It had not answered when the client was.
    NoAnswer,
    /// The message could not be handed to it (no connection, stream refused).
    Unreachable,
}

impl fmt::Display for ReplicaTiming {
    /// `B 3ms`, `C no answer`, `D unreachable`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.answer {
            ReplicaAnswer::After(ms) => write!(f, "{} {ms}ms", self.peer),
            ReplicaAnswer::NoAnswer => write!(f, "{} no answer", self.peer),
            ReplicaAnswer::Unreachable => write!(f, "{} unreachable", self.peer),
        }
    }
}

/// The replicas one client request asked: when each was asked, and how it answered.
#[derive(Clone, Debug, Default)]
pub(super) struct ReplicaTimings(Vec<Asked>);

#[derive(Clone, Debug)]
struct Asked {
    peer: NodeId,
    /// When the last round that asked it started.
    asked_at: Millis,
    /// `NoAnswer` while the round waits for it.
    answer: ReplicaAnswer,
}

impl ReplicaTimings {
    /// `peer` was sent a request at `now`: a new round for it, waiting for its answer.
    pub(super) fn asked(&mut self, peer: &NodeId, now: Millis) {
        let fresh = Asked {
            peer: peer.clone(),
            asked_at: now,
            answer: ReplicaAnswer::NoAnswer,
        };
        match self.0.iter_mut().find(|a| a.peer == *peer) {
            Some(entry) => *entry = fresh,
            None => self.0.push(fresh),
        }
    }

    /// `peer` answered at `now`; counts only if its round still waits for it.
    pub(super) fn answered(&mut self, peer: &NodeId, now: Millis) {
        if let Some(entry) = self.waiting_for(peer) {
            entry.answer = ReplicaAnswer::After(now.saturating_sub(entry.asked_at));
        }
    }

    /// The request could not be handed to `peer`.
    pub(super) fn unreachable(&mut self, peer: &NodeId) {
        if let Some(entry) = self.waiting_for(peer) {
            entry.answer = ReplicaAnswer::Unreachable;
        }
    }

    fn waiting_for(&mut self, peer: &NodeId) -> Option<&mut Asked> {
        self.0
            .iter_mut()
            .find(|a| a.peer == *peer && a.answer == ReplicaAnswer::NoAnswer)
    }

    /// Each replica asked, in the order first asked, and how it fared.
    pub(super) fn summary(self) -> Vec<ReplicaTiming> {
        self.0
            .into_iter()
            .map(|a| ReplicaTiming {
                peer: a.peer,
                answer: a.answer,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nid(s: &str) -> NodeId {
        NodeId::from(s)
    }

    fn timing(peer: &str, answer: ReplicaAnswer) -> ReplicaTiming {
        ReplicaTiming {
            peer: nid(peer),
            answer,
        }
    }

    #[test]
    fn each_replica_shows_how_long_after_it_was_asked_it_answered() {
        let mut t = ReplicaTimings::default();
        t.asked(&nid("B"), 100);
        t.asked(&nid("C"), 100);
        t.asked(&nid("D"), 101);
        t.answered(&nid("C"), 103);
        t.unreachable(&nid("D"));
        t.answered(&nid("C"), 150); // a duplicate answer changes nothing
        assert_eq!(
            t.summary(),
            [
                timing("B", ReplicaAnswer::NoAnswer),
                timing("C", ReplicaAnswer::After(3)),
                timing("D", ReplicaAnswer::Unreachable),
            ]
        );
    }

    #[test]
    fn answers_from_replicas_never_asked_are_ignored() {
        let mut t = ReplicaTimings::default();
        t.asked(&nid("B"), 10);
        t.answered(&nid("X"), 12);
        t.unreachable(&nid("Y"));
        assert_eq!(t.summary(), [timing("B", ReplicaAnswer::NoAnswer)]);
    }

    #[test]
    fn a_new_round_times_a_replica_afresh() {
        let mut t = ReplicaTimings::default();
        t.asked(&nid("B"), 0);
        t.answered(&nid("B"), 5);
        t.asked(&nid("B"), 20);
        let waiting = t.clone().summary();
        assert_eq!(waiting, [timing("B", ReplicaAnswer::NoAnswer)]);
        t.answered(&nid("B"), 27);
        assert_eq!(t.summary(), [timing("B", ReplicaAnswer::After(7))]);
    }

    #[test]
    fn an_answer_after_the_unreachable_report_does_not_count() {
        let mut t = ReplicaTimings::default();
        t.asked(&nid("B"), 0);
        t.unreachable(&nid("B"));
        t.answered(&nid("B"), 9);
        assert_eq!(t.summary(), [timing("B", ReplicaAnswer::Unreachable)]);
    }

    #[test]
    fn timings_read_as_a_log_line_shows_them() {
        let shown: Vec<String> = [
            timing("B", ReplicaAnswer::After(3)),
            timing("C", ReplicaAnswer::NoAnswer),
            timing("D", ReplicaAnswer::Unreachable),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(shown, ["B 3ms", "C no answer", "D unreachable"]);
    }
}
