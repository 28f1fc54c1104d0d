//! The peer-to-peer protocol: every message one peer's core sends another's.
//!
//! Messages are plain values; the shell frames them with [`encode`] / [`decode`] (bincode, with
//! a protocol version and the trace of the client request it serves in every frame) and moves
//! the bytes. Requests carry a `req` number chosen
//! by the sender, and replies echo it, so the core never needs a connection to match them.

use crate::core::paxos::{Ballot, Promise};
use crate::core::request::{ClientReply, WriteRequest};
use crate::core::siblings::Siblings;
use crate::core::types::{NodeId, TraceId};
use crate::core::version_vector::VersionVector;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bumped on any incompatible change to [`PeerMessage`] or [`Envelope`] (6: the envelope
/// carries a trace id; Paxos ballots name incarnations and rounds name their replicas; 7: an
/// acceptor that just gained a partition answers `Promise::Incomplete`, and a handoff receiver
/// pacing its intake says when to send again; 8: anti-entropy steps and handoff batches say
/// whether their sender is busy serving clients).
pub const PROTOCOL_VERSION: u16 = 8;

/// Largest frame a peer accepts: the largest value plus generous room for siblings and clocks.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Merge this state of `key` into yours (the coordinator's state after a write).
    Store {
        req: u64,
        key: Vec<u8>,
        state: Siblings,
    },
    StoreAck {
        req: u64,
    },
    /// The replica could not store the write (it is full and its policy leaves nothing to evict).
    StoreRefused {
        req: u64,
    },
    /// Read repair: merge this state of `key` if you hold the key or have room. No reply.
    Repair {
        req: u64,
        key: Vec<u8>,
        state: Siblings,
    },
    /// Every replica held this tombstone-only state of `key` a grace period ago: drop it if
    /// it is still exactly that. No reply.
    Forget {
        req: u64,
        key: Vec<u8>,
        clock: VersionVector,
    },
    /// Send me your state of `key`.
    Fetch {
        req: u64,
        key: Vec<u8>,
    },
    FetchReply {
        req: u64,
        state: Option<Siblings>,
        /// The replier gained the key's partition moments ago and may not hold its data yet
        /// (a handoff or anti-entropy is filling it): its answer does not count toward R.
        warming: bool,
    },
    /// Coordinate this write for me: I am not one of the key's replicas.
    Coordinate {
        req: u64,
        write: WriteRequest,
    },
    CoordinateReply {
        req: u64,
        reply: ClientReply,
    },
    /// One step of a Merkle anti-entropy exchange (see `node/anti_entropy`).
    AntiEntropy {
        req: u64,
        message: AntiEntropyMessage,
        /// The sender is busy serving clients: states it moves cost the receiver more of its
        /// budget (see `node/client_load`).
        busy: bool,
    },
    /// Handoff: states of a partition the sender no longer replicates, for you to merge (see
    /// `node/handoff`).
    Handoff {
        req: u64,
        partition: u32,
        states: Vec<KeyState>,
        /// The sender is busy serving clients (see `AntiEntropy`'s).
        busy: bool,
    },
    /// Whether every state of the `Handoff` was stored. A receiver pacing its intake refuses
    /// a batch with states it lacks that arrives while its budget is overdrawn: `stored` false and
    /// `retry_after_ms` (above 0) when it will have room again.
    HandoffAck {
        req: u64,
        partition: u32,
        stored: bool,
        retry_after_ms: u32,
    },
    // Hinted handoff (see `node/hints.rs`).
    /// Keep this state of `key` for `owner`, a replica believed down, and hand it over once
    /// `owner` is up again (a sloppy write). Answered like a `Store`: `StoreAck` once kept,
    /// `StoreRefused` at the holder's bound.
    HintStore {
        req: u64,
        key: Vec<u8>,
        owner: NodeId,
        state: Siblings,
    },
    /// A hint held for you: merge this state of `key` into your store and answer.
    HintDeliver {
        req: u64,
        key: Vec<u8>,
        state: Siblings,
    },
    /// The hint delivered under `req` is in the owner's store: the holder may drop it.
    HintAck {
        req: u64,
    },
    /// The owner's store is full and may not evict: it cannot take the hint.
    HintRefused {
        req: u64,
    },
    // Conditional writes: one single-decree Paxos round per write (see `node/conditional`).
    /// Phase 1: promise `ballot` for `key`. `replicas`: the key's replicas by the proposer's
    /// ring; an acceptor whose ring names others does not take part (see `node/conditional`).
    PaxosPrepare {
        req: u64,
        key: Vec<u8>,
        ballot: Ballot,
        replicas: Vec<NodeId>,
    },
    /// The acceptor's promise (or refusal), and its state of the key: the round's read.
    /// `warming`: the replier may not hold the key's data yet; its promise does not count.
    PaxosPromise {
        req: u64,
        promise: Promise,
        state: Option<Siblings>,
        warming: bool,
    },
    /// Phase 2: accept `state`, the key's state the write would install, in `ballot`, among
    /// `replicas` (as in the prepare).
    PaxosPropose {
        req: u64,
        key: Vec<u8>,
        ballot: Ballot,
        state: Siblings,
        replicas: Vec<NodeId>,
    },
    /// Accepted, or refused for the higher ballot promised.
    PaxosAccepted {
        req: u64,
        refused_by: Option<Ballot>,
    },
    /// Phase 3: `ballot`'s proposal was chosen: merge `state` and note it committed.
    PaxosCommit {
        req: u64,
        key: Vec<u8>,
        ballot: Ballot,
        state: Siblings,
    },
    /// Whether the committed state is in the replier's store.
    PaxosCommitted {
        req: u64,
        stored: bool,
    },
    /// Pub/sub: a message a client published on the sender, for this peer's subscribers. The
    /// shell hands it to its pub/sub hub (`shell::pubsub`); no core ever sees it, and it is
    /// never forwarded further.
    /// `stream` names the sender's run and `seq` numbers its messages to this peer, so the
    /// receiver can hand them to subscribers in the order they were published.
    Publish {
        stream: u64,
        seq: u64,
        channel: Vec<u8>,
        payload: Vec<u8>,
    },
}

/// A state of one key, as anti-entropy ships it.
pub type KeyState = (Vec<u8>, Siblings);

/// The steps of an anti-entropy exchange. The initiator sends the requests (`Summary`,
/// `Branches`, `Keys`, `Push`); the responder answers each from its store at once and keeps no
/// state, so an exchange can stop anywhere and the next one picks up what is still different.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AntiEntropyMessage {
    /// "Over the partitions we both replicate (in my shard), my roots hash to `digest`."
    /// `partitions` is a digest of which partitions those are, so the responder can tell when
    /// the two peers disagree on the ring or on shards.
    Summary { partitions: u64, digest: u64 },
    /// The responder's roots for the summary's partitions, in order; `None` when the digests
    /// agreed. `mismatch` when the responder computes another partition list.
    SummaryReply {
        roots: Option<Vec<u64>>,
        mismatch: bool,
    },
    /// The initiator's branch hashes of one partition.
    Branches { partition: u32, branches: Vec<u64> },
    /// The responder's leaf hashes under every branch that differed: (leaf, hash).
    BranchesReply {
        partition: u32,
        leaves: Vec<(u8, u64)>,
    },
    /// Every key the initiator holds in these leaves: (ring position, state digest).
    Keys {
        partition: u32,
        leaves: Vec<u8>,
        keys: Vec<(u64, u64)>,
    },
    /// The responder's states the initiator lacks or holds otherwise, and the ring positions
    /// it wants the initiator's states of (with whether it holds a key there at all).
    KeysReply {
        partition: u32,
        states: Vec<KeyState>,
        wants: Vec<(u64, bool)>,
        /// States it did not ask for: it is full, and does not hold those keys.
        declined: u32,
        /// States it did not send: past their expiry or deleted, for keys the initiator lacks.
        skipped: u32,
        /// Its partition root.
        root: u64,
    },
    /// The initiator's states the responder wanted.
    Push {
        partition: u32,
        states: Vec<KeyState>,
    },
    /// The responder's partition root once it merged them, and how many it could not store.
    PushReply {
        partition: u32,
        root: u64,
        declined: u32,
    },
}

impl PeerMessage {
    /// The shard (of `shards` on the receiving peer) that must handle this message: messages
    /// about a key go to the key's shard; replies go to the shard that numbered the request
    /// (a shard's request numbers are its index modulo `shards`, see `Node::new_shard`).
    pub fn shard(&self, partitions: u32, shards: u32) -> u32 {
        let by_key = |key: &[u8]| crate::core::ring::shard_of_key(key, partitions, shards);
        match self {
            PeerMessage::Store { key, .. }
            | PeerMessage::Repair { key, .. }
            | PeerMessage::Forget { key, .. }
            | PeerMessage::Fetch { key, .. }
            | PeerMessage::HintStore { key, .. }
            | PeerMessage::HintDeliver { key, .. }
            | PeerMessage::PaxosPrepare { key, .. }
            | PeerMessage::PaxosPropose { key, .. }
            | PeerMessage::PaxosCommit { key, .. } => by_key(key),
            PeerMessage::Coordinate { write, .. } => by_key(&write.key),
            PeerMessage::AntiEntropy { req, message, .. } => match message {
                AntiEntropyMessage::Branches { partition, .. }
                | AntiEntropyMessage::Keys { partition, .. }
                | AntiEntropyMessage::Push { partition, .. } => partition % shards.max(1),
                // A summary names no partition: it goes to the shard numbered like the
                // sender's (peers of a cluster run the same shard count; when they do not, the
                // reply says so and the sender compares partition by partition).
                AntiEntropyMessage::Summary { .. }
                | AntiEntropyMessage::SummaryReply { .. }
                | AntiEntropyMessage::BranchesReply { .. }
                | AntiEntropyMessage::KeysReply { .. }
                | AntiEntropyMessage::PushReply { .. } => (*req % shards.max(1) as u64) as u32,
            },
            PeerMessage::Handoff { partition, .. } => partition % shards.max(1),
            PeerMessage::StoreAck { req }
            | PeerMessage::StoreRefused { req }
            | PeerMessage::HandoffAck { req, .. }
            | PeerMessage::FetchReply { req, .. }
            | PeerMessage::CoordinateReply { req, .. }
            | PeerMessage::HintAck { req }
            | PeerMessage::HintRefused { req }
            | PeerMessage::PaxosPromise { req, .. }
            | PeerMessage::PaxosAccepted { req, .. }
            | PeerMessage::PaxosCommitted { req, .. } => (*req % shards.max(1) as u64) as u32,
            // Never dealt to a shard: the router gives it to the pub/sub hub.
            PeerMessage::Publish { .. } => 0,
        }
    }

    /// Whether this is on a client request's path: small, and waited on by a client (the
    /// shell runs these on the stream task that read them, except in their shard driver's
    /// turn). Batches
    /// (anti-entropy, handoff, hint delivery), tombstone collection and pub/sub are not.
    pub fn is_request_path(&self) -> bool {
        match self {
            PeerMessage::Store { .. }
            | PeerMessage::StoreAck { .. }
            | PeerMessage::StoreRefused { .. }
            | PeerMessage::Repair { .. }
            | PeerMessage::Fetch { .. }
            | PeerMessage::FetchReply { .. }
            | PeerMessage::Coordinate { .. }
            | PeerMessage::CoordinateReply { .. }
            | PeerMessage::HintStore { .. }
            | PeerMessage::HintAck { .. }
            | PeerMessage::HintRefused { .. }
            | PeerMessage::PaxosPrepare { .. }
            | PeerMessage::PaxosPromise { .. }
            | PeerMessage::PaxosPropose { .. }
            | PeerMessage::PaxosAccepted { .. }
            | PeerMessage::PaxosCommit { .. }
            | PeerMessage::PaxosCommitted { .. } => true,
            PeerMessage::Forget { .. }
            | PeerMessage::AntiEntropy { .. }
            | PeerMessage::Handoff { .. }
            | PeerMessage::HandoffAck { .. }
            | PeerMessage::HintDeliver { .. }
            | PeerMessage::Publish { .. } => false,
        }
    }

    /// Whether this answers a request of the receiver's (its `req` is the receiver's number),
    /// rather than asking something or informing.
    pub fn is_reply(&self) -> bool {
        match self {
            PeerMessage::StoreAck { .. }
            | PeerMessage::StoreRefused { .. }
            | PeerMessage::FetchReply { .. }
            | PeerMessage::CoordinateReply { .. }
            | PeerMessage::HandoffAck { .. }
            | PeerMessage::HintAck { .. }
            | PeerMessage::HintRefused { .. }
            | PeerMessage::PaxosPromise { .. }
            | PeerMessage::PaxosAccepted { .. }
            | PeerMessage::PaxosCommitted { .. } => true,
            PeerMessage::AntiEntropy { message, .. } => matches!(
                message,
                AntiEntropyMessage::SummaryReply { .. }
                    | AntiEntropyMessage::BranchesReply { .. }
                    | AntiEntropyMessage::KeysReply { .. }
                    | AntiEntropyMessage::PushReply { .. }
            ),
            PeerMessage::Store { .. }
            | PeerMessage::Repair { .. }
            | PeerMessage::Forget { .. }
            | PeerMessage::Fetch { .. }
            | PeerMessage::Coordinate { .. }
            | PeerMessage::Handoff { .. }
            | PeerMessage::HintStore { .. }
            | PeerMessage::HintDeliver { .. }
            | PeerMessage::PaxosPrepare { .. }
            | PeerMessage::PaxosPropose { .. }
            | PeerMessage::PaxosCommit { .. }
            | PeerMessage::Publish { .. } => false,
        }
    }

    /// A short name of the message's kind, for log lines (`Store`, `FetchReply`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Store { .. } => "Store",
            PeerMessage::StoreAck { .. } => "StoreAck",
            PeerMessage::StoreRefused { .. } => "StoreRefused",
            PeerMessage::Repair { .. } => "Repair",
            PeerMessage::Forget { .. } => "Forget",
            PeerMessage::Fetch { .. } => "Fetch",
            PeerMessage::FetchReply { .. } => "FetchReply",
            PeerMessage::Coordinate { .. } => "Coordinate",
            PeerMessage::CoordinateReply { .. } => "CoordinateReply",
            PeerMessage::AntiEntropy { .. } => "AntiEntropy",
            PeerMessage::Handoff { .. } => "Handoff",
            PeerMessage::HandoffAck { .. } => "HandoffAck",
            PeerMessage::HintStore { .. } => "HintStore",
            PeerMessage::HintDeliver { .. } => "HintDeliver",
            PeerMessage::HintAck { .. } => "HintAck",
            PeerMessage::HintRefused { .. } => "HintRefused",
            PeerMessage::PaxosPrepare { .. } => "PaxosPrepare",
            PeerMessage::PaxosPromise { .. } => "PaxosPromise",
            PeerMessage::PaxosPropose { .. } => "PaxosPropose",
            PeerMessage::PaxosAccepted { .. } => "PaxosAccepted",
            PeerMessage::PaxosCommit { .. } => "PaxosCommit",
            PeerMessage::PaxosCommitted { .. } => "PaxosCommitted",
            PeerMessage::Publish { .. } => "Publish",
        }
    }

    /// The request number the message carries, for matching replies and undelivered sends.
    pub fn req(&self) -> u64 {
        match self {
            PeerMessage::Store { req, .. }
            | PeerMessage::StoreAck { req }
            | PeerMessage::StoreRefused { req }
            | PeerMessage::Repair { req, .. }
            | PeerMessage::Forget { req, .. }
            | PeerMessage::Fetch { req, .. }
            | PeerMessage::FetchReply { req, .. }
            | PeerMessage::Coordinate { req, .. }
            | PeerMessage::CoordinateReply { req, .. }
            | PeerMessage::AntiEntropy { req, .. }
            | PeerMessage::Handoff { req, .. }
            | PeerMessage::HandoffAck { req, .. }
            | PeerMessage::HintStore { req, .. }
            | PeerMessage::HintDeliver { req, .. }
            | PeerMessage::HintAck { req }
            | PeerMessage::HintRefused { req }
            | PeerMessage::PaxosPrepare { req, .. }
            | PeerMessage::PaxosPromise { req, .. }
            | PeerMessage::PaxosPropose { req, .. }
            | PeerMessage::PaxosAccepted { req, .. }
            | PeerMessage::PaxosCommit { req, .. }
            | PeerMessage::PaxosCommitted { req, .. } => *req,
            PeerMessage::Publish { .. } => 0,
        }
    }
}

/// What travels on the wire: the version, the sender, the trace of the client request the
/// message was sent for (if any; see `node`'s *Traces*), the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub from: NodeId,
    pub trace: Option<TraceId>,
    pub message: PeerMessage,
}

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("peer speaks protocol version {0}, this peer speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// An [`Envelope`] of borrowed parts: serde writes a reference as it writes the value, so
/// this encodes to the same bytes without copying the message (a write's value, a read's
/// siblings) into an envelope first.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    version: u16,
    from: &'a NodeId,
    trace: Option<&'a TraceId>,
    message: &'a PeerMessage,
}

pub fn encode(
    from: &NodeId,
    trace: Option<&TraceId>,
    message: &PeerMessage,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(from, trace, message, &mut out)?;
    Ok(out)
}

/// [`encode`], appended to `out` (what was in it stays): a caller can put a length prefix
/// before the envelope without a second buffer. On an error part of the envelope may have
/// been appended: the caller drops `out`.
pub fn encode_into(
    from: &NodeId,
    trace: Option<&TraceId>,
    message: &PeerMessage,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let envelope = EnvelopeRef {
        version: PROTOCOL_VERSION,
        from,
        trace,
        message,
    };
    bincode::serde::encode_into_std_write(&envelope, out, bincode_config())
        .map(drop)
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Bytes `message` takes on the wire (its encoding without the envelope).
pub fn encoded_len(message: &PeerMessage) -> u64 {
    let mut counter = ByteCounter(0);
    let _ = bincode::serde::encode_into_writer(message, &mut counter, bincode_config());
    counter.0
}

struct ByteCounter(u64);

impl bincode::enc::write::Writer for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0 += bytes.len() as u64;
        Ok(())
    }
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    // The version is the first field, so it can be read even when the rest is unknown.
    let (version, _): (u16, usize) = bincode::serde::decode_from_slice(bytes, bincode_config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(CodecError::Version(version));
    }
    let (envelope, used): (Envelope, usize) =
        bincode::serde::decode_from_slice(bytes, bincode_config())
            .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::siblings::Payload;
    use crate::core::version_vector::{Actor, VersionVector};

    #[test]
    fn round_trip() {
        let mut state = Siblings::new();
        state.update(
            &Actor("A.1".into()),
            &VersionVector::new(),
            Payload::Value {
                data: b"v".to_vec(),
                expires_at_ms: Some(9),
            },
            8,
        );
        let msg = PeerMessage::Store {
            req: 7,
            key: b"k".to_vec(),
            state,
        };
        let trace = TraceId::parse("4bf92f3577b34da6").unwrap();
        let bytes = encode(&NodeId::from("A"), Some(&trace), &msg).unwrap();
        let env = decode(&bytes).unwrap();
        assert_eq!(env.message, msg);
        assert_eq!(env.from, NodeId::from("A"));
        assert_eq!(env.trace, Some(trace.clone()));
        let untraced = decode(&encode(&NodeId::from("A"), None, &msg).unwrap()).unwrap();
        assert_eq!(untraced.trace, None);
        // The borrowed envelope is the owned one on the wire, byte for byte.
        for trace in [Some(trace), None] {
            let owned = Envelope {
                version: PROTOCOL_VERSION,
                from: NodeId::from("A"),
                trace: trace.clone(),
                message: msg.clone(),
            };
            let owned = bincode::serde::encode_to_vec(&owned, bincode_config()).unwrap();
            assert_eq!(
                encode(&NodeId::from("A"), trace.as_ref(), &msg).unwrap(),
                owned
            );
            let mut appended = b"head".to_vec();
            encode_into(&NodeId::from("A"), trace.as_ref(), &msg, &mut appended).unwrap();
            assert_eq!(appended[..4], *b"head");
            assert_eq!(appended[4..], owned);
        }
    }

    #[test]
    fn other_versions_and_garbage_are_rejected() {
        let mut bytes =
            encode(&NodeId::from("A"), None, &PeerMessage::StoreAck { req: 1 }).unwrap();
        bytes[0] = 9; // varint-encoded version 9
        assert!(matches!(decode(&bytes), Err(CodecError::Version(9))));
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
        let mut ok = encode(&NodeId::from("A"), None, &PeerMessage::StoreAck { req: 1 }).unwrap();
        ok.push(0);
        assert!(matches!(decode(&ok), Err(CodecError::Malformed(_))));
    }
}
