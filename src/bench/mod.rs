//! `ringcache bench`: a load generator for any ringcache cluster (over HTTP) and any Redis
//! server (over RESP), so the two can be measured with one tool in one run.
//!
//! Closed loop (N connections, back to back) or open loop at a fixed rate with latency taken
//! from each request's due time (no coordinated omission); uniform or zipfian keys, a
//! read:write mix, per-request quorums or Redis `WAIT`; HDR-histogram percentiles printed as a
//! table or JSON. It lives outside the core: it reads clocks and spawns tasks.
//!
//! # Layout
//! - [`options`] — [`BenchOptions`] (the CLI's flags) and [`BenchError`].
//! - [`zipfian`] and [`workload`] — which requests, on which keys; seeded.
//! - [`target`] — the server under load and one connection to it; [`http1`] is a worker's own
//!   HTTP/1.1 connection to a peer, [`resp`] the minimal RESP client behind the Redis target.
//! - [`runner`] — closed and open loops, warm-up, measurement; `progress` draws the bar.
//! - [`report`] — [`Report`], as a table and as JSON.

pub mod http1;
pub mod options;
mod progress;
pub mod report;
pub mod resp;
pub mod runner;
pub mod target;
pub mod workload;
pub mod zipfian;

pub use options::{BenchError, BenchOptions, TargetKind};
pub use report::{Latencies, LatencySummary, Report};
pub use runner::{run, run_and_print};
