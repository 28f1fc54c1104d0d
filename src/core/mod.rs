//! The deterministic protocol core: everything that decides, nothing that waits.
//!
//! No module below reads a clock, draws ambient randomness, spawns a task or touches a socket;
//! `clippy.toml` forbids the usual ways to, and the shell and the simulator both drive the core
//! through [`node::Node`]. Dependency order (no cycles):
//! `types` → `version_vector` → `siblings` → `store`; `types` → `ring`, `quorum`, `membership`;
//! `request` → `message`; `config` → `node`, which uses them all. `node` keeps the `Node` and
//! its dispatch; each subsystem it dispatches to (request table, writes, reads, expires,
//! forwarding, the replica side, read repair, tombstone collection, placement, stats) owns
//! its state in a file of `node/`.

pub mod config;
pub mod counter;
pub mod eviction;
pub mod hash_tree;
pub mod membership;
pub mod message;
pub mod node;
pub mod paxos;
pub mod planted;
pub mod quorum;
pub mod request;
pub mod ring;
pub mod siblings;
pub mod store;
pub mod types;
pub mod version_vector;
