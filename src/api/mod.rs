//! Client-facing protocols. Today: HTTP ([`http`]); the Redis protocol comes later.
pub mod auth;
pub mod causal_context;
pub mod http;
pub mod keys;
