//! Known protocol bugs that the simulator can plant in a node on purpose.
//!
//! A checker that never fails proves nothing. The simulator's self-test runs the real core with
//! one of these bugs switched on and asserts that the history checker reports a violation within
//! a bounded number of seeds. Planting is only possible with the `planted-bugs` cargo feature
//! (`Node::plant`); without it every check of a bug compiles to `false`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlantedBug {
    /// The coordinator acknowledges a write once W-1 replicas hold it.
    AckAfterWMinusOne,
    /// A replica that merges a replicated state keeps only the newest sibling.
    MergeDropsSibling,
    /// Last write wins: a coordinator's write replaces every sibling it holds, whatever the
    /// client's context, and a replica overwrites its state with whatever arrives last.
    LastWriteWins,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 3] = [
        PlantedBug::AckAfterWMinusOne,
        PlantedBug::MergeDropsSibling,
        PlantedBug::LastWriteWins,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::AckAfterWMinusOne => "ack-after-w-minus-one",
            PlantedBug::MergeDropsSibling => "merge-drops-sibling",
            PlantedBug::LastWriteWins => "last-write-wins",
        }
    }
}
