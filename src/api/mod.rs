//! Client-facing protocols: HTTP ([`http`]) and the Redis protocol ([`resp`]).
pub mod auth;
pub mod batch;
pub mod causal_context;
pub mod conn_guard;
pub mod http;
pub mod http_server;
pub mod json_errors;
pub mod keys;
pub mod metrics;
pub mod pubsub_http;
pub mod request_log;
pub mod resp;
pub mod ui;
