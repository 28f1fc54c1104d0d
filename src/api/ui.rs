//! The ring page: `GET /ui` draws the hash ring (partitions as arcs coloured by replica, one
//! ring per replica), every peer with its state, keys, memory, live ops/s and the partitions
//! moving in and out, and the cluster's hot keys; `GET /v1/ring` is the JSON it refreshes from
//! every second.
//!
//! Why: an operator should see at a glance who owns what and what is moving, without installing
//! a dashboard. The page has no build step (one HTML file with its CSS and JavaScript, embedded
//! in the binary) and asks only the peer that served it: `/v1/ring` gathers the other peers'
//! figures server-side, so the browser never needs to reach them.
//!
//! Promises: `/v1/ring` answers from this peer's ring and view at once, and asks every other
//! live peer for its figures with the API's short timeout; a peer that does not answer is
//! listed as `unreachable`, never waited for longer.

use serde::{Deserialize, Serialize};

/// The page itself.
pub const PAGE: &str = include_str!("ui/index.html");

/// The body of `GET /v1/ring`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct RingBody {
    /// The peer that answered.
    pub id: String,
    pub replicas: usize,
    /// Each partition's replicas, first replica first, in partition order.
    pub owners: Vec<Vec<String>>,
    pub peers: Vec<RingPeer>,
}

/// One member as the page shows it.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RingPeer {
    pub id: String,
    /// `up`, `down`, `leaving` or `unreachable`.
    pub state: String,
    pub keys: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    /// Reads and writes it coordinated since it started (the page turns them into ops/s).
    pub requests: Option<u64>,
    pub primary_partitions: Option<u32>,
    /// Partitions it is handing off, and their keys still held.
    pub moving_out: Option<u64>,
    pub keys_left: Option<u64>,
    pub moving_in: Option<u64>,
}
