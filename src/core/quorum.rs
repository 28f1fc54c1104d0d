//! Quorum bookkeeping for one replicated request.
//!
//! A [`QuorumTracker`] counts distinct replicas that succeeded or failed. It is a pure state
//! machine: the coordinator feeds it results and asks whether the request is decided.
//!
//! Promises: a replica counts at most once (a duplicated ack or a failure after an ack changes
//! nothing); the outcome is `Met` as soon as `needed` distinct replicas succeeded, and `Failed`
//! as soon as so many failed that `needed` can no longer be reached.

use crate::core::types::NodeId;
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumOutcome {
    Pending,
    Met,
    Failed,
}

#[derive(Clone, Debug)]
pub struct QuorumTracker {
    needed: usize,
    replicas: usize,
    succeeded: BTreeSet<NodeId>,
    failed: BTreeSet<NodeId>,
}

impl QuorumTracker {
    /// `needed` of `replicas` must succeed.
    pub fn new(needed: usize, replicas: usize) -> Self {
        Self {
            needed,
            replicas,
            succeeded: BTreeSet::new(),
            failed: BTreeSet::new(),
        }
    }

    pub fn record_success(&mut self, from: &NodeId) {
        if !self.failed.contains(from) {
            self.succeeded.insert(from.clone());
        }
    }

    pub fn record_failure(&mut self, from: &NodeId) {
        if !self.succeeded.contains(from) {
            self.failed.insert(from.clone());
        }
    }

    pub fn needed(&self) -> usize {
        self.needed
    }

    pub fn successes(&self) -> usize {
        self.succeeded.len()
    }

    pub fn has_answered(&self, from: &NodeId) -> bool {
        self.succeeded.contains(from) || self.failed.contains(from)
    }

    pub fn outcome(&self) -> QuorumOutcome {
        if self.succeeded.len() >= self.needed {
            QuorumOutcome::Met
        } else if self.replicas.saturating_sub(self.failed.len()) < self.needed {
            QuorumOutcome::Failed
        } else {
            QuorumOutcome::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId::from(s)
    }

    #[test]
    fn met_after_needed_distinct_successes() {
        let mut q = QuorumTracker::new(2, 3);
        q.record_success(&n("A"));
        assert_eq!(q.outcome(), QuorumOutcome::Pending);
        q.record_success(&n("A"));
        assert_eq!(
            q.outcome(),
            QuorumOutcome::Pending,
            "a duplicate ack must not count"
        );
        q.record_success(&n("B"));
        assert_eq!(q.outcome(), QuorumOutcome::Met);
    }

    #[test]
    fn failed_once_quorum_is_unreachable() {
        let mut q = QuorumTracker::new(2, 3);
        q.record_failure(&n("A"));
        assert_eq!(q.outcome(), QuorumOutcome::Pending);
        q.record_failure(&n("B"));
        assert_eq!(q.outcome(), QuorumOutcome::Failed);
    }

    #[test]
    fn a_replica_counts_once_whatever_it_says_later() {
        let mut q = QuorumTracker::new(3, 3);
        q.record_success(&n("A"));
        q.record_failure(&n("A"));
        q.record_success(&n("B"));
        q.record_success(&n("C"));
        assert_eq!(q.outcome(), QuorumOutcome::Met);
        assert!(q.has_answered(&n("A")));
    }

    #[test]
    fn needing_more_than_exist_fails_immediately() {
        let q = QuorumTracker::new(4, 3);
        assert_eq!(q.outcome(), QuorumOutcome::Failed);
    }
}
