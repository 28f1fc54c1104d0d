//! The core's view of cluster membership: who is a member and who is believed alive.
//!
//! The shell derives a [`MembershipView`] from gossip (the simulator from its stand-in for
//! gossip) and hands it to the core as an input. Members place keys on the ring whether or not
//! they are alive, so a peer that is briefly down keeps its place; liveness only decides whom a
//! coordinator bothers to contact.

use crate::core::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    Up,
    Down,
    /// Up, but leaving the cluster: it holds no place on the ring and hands its data off.
    Leaving,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    members: BTreeMap<NodeId, Liveness>,
}

impl MembershipView {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, node: impl Into<NodeId>, liveness: Liveness) -> Self {
        self.set(node.into(), liveness);
        self
    }

    pub fn set(&mut self, node: NodeId, liveness: Liveness) {
        self.members.insert(node, liveness);
    }

    /// Whether `node` is believed reachable (up, or leaving).
    pub fn is_up(&self, node: &NodeId) -> bool {
        matches!(
            self.members.get(node),
            Some(Liveness::Up | Liveness::Leaving)
        )
    }

    pub fn members(&self) -> BTreeSet<NodeId> {
        self.members.keys().cloned().collect()
    }

    /// The members that hold a place on the ring: every member but those leaving.
    pub fn ring_members(&self) -> BTreeSet<NodeId> {
        self.members
            .iter()
            .filter(|(_, l)| **l != Liveness::Leaving)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, Liveness)> {
        self.members.iter().map(|(n, l)| (n, *l))
    }
}
