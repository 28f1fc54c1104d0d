//! Client-facing protocols. Today: HTTP ([`http`]); the Redis protocol comes later.
pub mod auth;
pub mod batch;
pub mod causal_context;
pub mod conn_guard;
pub mod http;
pub mod http_server;
pub mod keys;
pub mod metrics;
pub mod pubsub_http;
pub mod ui;
