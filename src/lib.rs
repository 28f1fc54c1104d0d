//! ringcache: a leaderless, Dynamo-style, peer-to-peer distributed in-memory cache.
//!
//! Any peer coordinates any request: a write goes to the key's N ring successors and is
//! acknowledged after W of them; a read asks the replicas and answers after R. Versions carry
//! dotted version vectors, so concurrent writes survive as siblings until a client writes back
//! with the context it read.
//!
//! # Layout
//! - [`core`] — the deterministic protocol core, free of I/O: ring placement, version vectors,
//!   siblings, quorum tracking, storage, the peer protocol and the [`core::node::Node`] state
//!   machine, which dispatches each input to one subsystem of `core::node` (writes, reads,
//!   forwarding, replica side, read repair, tombstone collection, placement). Time and
//!   randomness come in as inputs.
//! - [`shell`] — tokio, quinn and chitchat around the core: authenticated QUIC transport,
//!   gossip membership over sealed datagrams, the shard drivers that run each node (behind a
//!   lock, on whichever task an event arrived on), peer health.
//! - [`api`] — the HTTP API (axum routes, served by its own accept loop with read deadlines, a
//!   connection cap and optional TLS), its wire formats (causal-context tokens, key encoding),
//!   and the Redis protocol endpoint ([`api::resp`]: our own RESP2/RESP3 parser, pipelined
//!   connections, Redis's commands over the same quorum core).
//! - [`client`] — a Rust HTTP client used by the CLI and the tests, with `get_or_load`
//!   (stampede protection: a cluster-wide lease, early refresh, stale reads).
//! - [`server`] — assembles one peer from the layers above: sockets, gossip, QUIC, driver, HTTP,
//!   RESP.
//! - [`launcher`] — starts N peers as child processes: `ringcache up`.
//! - [`bench`] — the load generator: `ringcache bench` against ringcache (HTTP) or Redis (RESP).
//! - [`config`] — one peer's whole configuration.
//!
//! Layers run one way: `main`/[`launcher`]/[`bench`] → [`client`] → [`server`] → [`api`] →
//! [`shell`] → [`core`] (and [`config`] gathers the shell's and core's settings);
//! `tests/layers.rs` checks it.

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod core;
pub mod glob;
pub mod history;
pub mod launcher;
pub mod server;
pub mod shell;
