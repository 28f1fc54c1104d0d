//! Rust clients for the HTTP API, used by the CLI and the integration tests: [`Client`] talks
//! to one peer; [`ClusterClient`] knows the ring and sends each key to a live replica;
//! [`top`] samples every peer for `ringcache top`. `get_or_load` on either client is a
//! cache-aside read with stampede protection (see `stampede`).
//!
//! It speaks only the documented wire contract (`docs/http.md`), so it doubles as a check that
//! the contract is what the server does.

mod cluster_client;
pub mod cluster_table;
mod http_client;
mod stampede;
pub mod top;
pub use cluster_client::{ClusterClient, ReadRouting, REFRESH_EVERY};
pub use http_client::{
    CachedRead, CasOutcome, Client, ClientError, Expected, ReadResult, Ttl, WriteOptions,
};
pub use stampede::{lease_key, refresh_early, LoadError, LoadOptions, LEASE_SUFFIX};
