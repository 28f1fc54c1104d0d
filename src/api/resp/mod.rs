//! The Redis protocol (RESP2 and RESP3) on every peer, over the same quorum core as HTTP.
//!
//! Three layers that never blur, after mini-redis: [`frame`] and [`request`] are pure values
//! and parsers; [`connection`] is the only code that touches a socket; the command modules
//! translate a request into [`ClientRequest`](crate::core::request::ClientRequest)s for the
//! driver and the replies back into frames. What a Redis client sees, command by command, is
//! in `docs/resp.md`.
//!
//! # Layout
//! - [`frame`]: [`frame::Frame`], its RESP2/RESP3 encoding and a decoder of any frame.
//! - [`request`]: the incremental, bounded request parser (arrays and inline commands).
//! - [`connection`]: one socket: pipelining, bounded buffers, deadlines.
//! - [`server`]: the accept loop and the connection cap.
//! - [`session`]: one client's state and the dispatch of its commands; [`command_table`]
//!   lists every command with its arity.
//! - [`keyspace`]: reads and writes through the quorum core, siblings and errors.
//! - [`conn_commands`], [`server_commands`], [`string_commands`], [`key_commands`],
//!   [`pubsub_commands`], [`ringcache_commands`]: the commands, by family; [`args`] helps
//!   them read arguments.
pub mod args;
pub mod command_table;
pub mod conn_commands;
pub mod connection;
pub mod frame;
pub mod key_commands;
pub mod keyspace;
pub mod pubsub_commands;
pub mod request;
pub mod ringcache_commands;
pub mod server;
pub mod server_commands;
pub mod session;
pub mod shared;
pub mod string_commands;
