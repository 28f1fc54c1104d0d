//! The I/O shell around the deterministic core: tokio, quinn, chitchat.
//!
//! [`driver`] owns the core; [`transport`] moves peer messages over QUIC; [`gossip`] turns chitchat into membership views; [`auth`] derives
//! all peer credentials from the cluster secret.
// The shell is where clocks, spawning and randomness belong (see clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod auth;
pub mod driver;
pub mod gossip;
pub mod transport;
