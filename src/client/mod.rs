//! A Rust client for the HTTP API, used by the CLI and the integration tests.
//!
//! It speaks only the documented wire contract (`docs/http.md`), so it doubles as a check that
//! the contract is what the server does.

mod http_client;
pub use http_client::{Client, ClientError, ReadResult, Ttl, WriteOptions};
