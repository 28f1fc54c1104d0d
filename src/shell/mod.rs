//! The I/O shell around the deterministic core: tokio, quinn, chitchat.
//!
//! [`driver`] owns the core; [`transport`] moves peer messages over QUIC; [`gossip`] turns
//! chitchat into membership views of the entries [`gossip_entry`] believes, over
//! [`gossip_transport`], which seals every datagram with [`gossip_seal`], and restarts chitchat
//! within a [`restart_budget`] when its task dies; [`seed_addr`] is what a peer joins through
//! (an address or a name); [`auth`] derives all peer credentials from the cluster secret;
//! [`health`] records the failure of a task the peer cannot live without, or one down while it
//! is restarted.
// The shell is where clocks, spawning and randomness belong (see clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod auth;
pub mod driver;
pub mod gossip;
pub mod gossip_entry;
pub mod gossip_seal;
pub mod gossip_transport;
pub mod health;
pub mod hot_keys;
pub mod pubsub;
pub mod restart_budget;
pub mod seed_addr;
pub mod transport;
