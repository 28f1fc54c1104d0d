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
    /// Right after a peer is seen going down, every peer forgets the oldest value of each key
    /// it holds but keeps the clock that covers it, so the loss spreads by merging to replicas
    /// that still held the value: aimed at excuses that cover a key after an unrelated crash.
    DropValueAfterCrash,
    /// A replica that merges a state holding a tombstone drops its own values the tombstone
    /// never saw: aimed at excuses that let a delete supersede writes it could not have seen.
    DeleteCoversUnseen,
    /// A `Forget` drops the key whatever it holds now, live values written since included, and
    /// collection sends it without its confirming read (which alone leaves a live value only
    /// one message's time to slip in): aimed at excuses around tombstone collection.
    ForgetDropsLive,
    /// A peer whose ring changes drops its copies of every partition whose replicas changed,
    /// not only those it regained, data no one else holds included: aimed at excuses for
    /// ring changes.
    RingChangeDropsHeld,
    /// Anti-entropy never compares the odd leaves of a partition's tree: aimed at the
    /// convergence check, which must not pass on read repair alone.
    AntiEntropySkipsLeaf,
    /// A peer handing a partition off drops each batch as it sends it, before any new replica
    /// confirmed it: aimed at the handoff's drop rule.
    HandoffDropsEarly,
    /// A write past the sibling cap makes room by dropping the key's older siblings instead
    /// of being refused: aimed at the cap, which must never cost an acknowledged sibling.
    SiblingCapDropsSiblings,
    /// A hint holder drops a hint when it sends it to the owner rather than when the owner
    /// acknowledges it, so a delivery lost on the way takes the hint with it.
    HintDroppedBeforeAck,
    /// An owner acknowledges a delivered hint without merging it into its store.
    HintAckWithoutStoring,
    /// An overwrite (a put without context that replaces what its coordinator has seen)
    /// also covers each actor's next counter: a concurrent write the coordinator never saw is
    /// dropped when the states merge.
    OverwriteCoversNextDot,
    /// A session read answers after R replicas like any other, whatever its context.
    SessionIgnored,
    /// An increment reads the coordinator's value, adds, and writes the sum back as a plain
    /// value (read-add-write): increments racing at two coordinators lose one of them.
    IncrementReadAddWrite,
    /// A conditional write's proposer goes on to propose after a single promise (its own or
    /// the first to arrive) instead of a majority's: two compare-and-sets on one expected
    /// state can both apply.
    PaxosWithoutMajority,
    /// A peer that restarted empty acts as a Paxos acceptor at once: it promises and accepts
    /// as if it remembered nothing because nothing happened, and its proposals reuse the
    /// ballots (and dots) of its previous incarnation.
    PaxosAmnesia,
    /// Hints never expire: a hint held past the tombstone grace is still handed to its owner,
    /// which may hold nothing of the key because a delete since was collected everywhere.
    HintOutlivesGrace,
    /// Tombstone collection forgets a key once its grace ends without reading every replica
    /// again, so a value that reached a replica holding nothing during the grace (a late
    /// hint, a delayed message) outlives the tombstones that covered it.
    ForgetWithoutConfirming,
    /// A read counts the spare replicas it did not ask (see `node::read`) as having answered,
    /// so it answers after fewer than R replicas: aimed at the spares, which may only ever be
    /// asked, never stand in for an answer.
    ReadCountsSpares,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 20] = [
        PlantedBug::AckAfterWMinusOne,
        PlantedBug::MergeDropsSibling,
        PlantedBug::LastWriteWins,
        PlantedBug::DropValueAfterCrash,
        PlantedBug::DeleteCoversUnseen,
        PlantedBug::ForgetDropsLive,
        PlantedBug::RingChangeDropsHeld,
        PlantedBug::AntiEntropySkipsLeaf,
        PlantedBug::HandoffDropsEarly,
        PlantedBug::SiblingCapDropsSiblings,
        PlantedBug::HintDroppedBeforeAck,
        PlantedBug::HintAckWithoutStoring,
        PlantedBug::OverwriteCoversNextDot,
        PlantedBug::SessionIgnored,
        PlantedBug::IncrementReadAddWrite,
        PlantedBug::PaxosWithoutMajority,
        PlantedBug::PaxosAmnesia,
        PlantedBug::HintOutlivesGrace,
        PlantedBug::ForgetWithoutConfirming,
        PlantedBug::ReadCountsSpares,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::AckAfterWMinusOne => "ack-after-w-minus-one",
            PlantedBug::MergeDropsSibling => "merge-drops-sibling",
            PlantedBug::LastWriteWins => "last-write-wins",
            PlantedBug::DropValueAfterCrash => "drop-value-after-crash",
            PlantedBug::DeleteCoversUnseen => "delete-covers-unseen",
            PlantedBug::ForgetDropsLive => "forget-drops-live",
            PlantedBug::RingChangeDropsHeld => "ring-change-drops-held",
            PlantedBug::AntiEntropySkipsLeaf => "anti-entropy-skips-leaf",
            PlantedBug::HandoffDropsEarly => "handoff-drops-early",
            PlantedBug::SiblingCapDropsSiblings => "sibling-cap-drops-siblings",
            PlantedBug::HintDroppedBeforeAck => "hint-dropped-before-ack",
            PlantedBug::HintAckWithoutStoring => "hint-ack-without-storing",
            PlantedBug::OverwriteCoversNextDot => "overwrite-covers-next-dot",
            PlantedBug::SessionIgnored => "session-ignored",
            PlantedBug::IncrementReadAddWrite => "increment-read-add-write",
            PlantedBug::PaxosWithoutMajority => "paxos-without-majority",
            PlantedBug::PaxosAmnesia => "paxos-amnesia",
            PlantedBug::HintOutlivesGrace => "hint-outlives-grace",
            PlantedBug::ForgetWithoutConfirming => "forget-without-confirming",
            PlantedBug::ReadCountsSpares => "read-counts-spares",
        }
    }
}
