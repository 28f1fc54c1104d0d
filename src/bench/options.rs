//! [`BenchOptions`]: what one `ringcache bench` run does. The same struct is the CLI's flags
//! (clap) and the library's input, so the tests drive exactly what users type.
//!
//! Promises: [`BenchOptions::validate`] rejects every combination the runner cannot honour
//! (a quorum for Redis, a `WAIT` for HTTP, a negative θ…) before anything
//! connects.

use crate::api::auth::TOKEN_ENV;
use std::path::PathBuf;
use thiserror::Error;

/// What went wrong before or around the measurement (failed requests during it are counted
/// in the report, not raised).
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("invalid option: {0}")]
    Invalid(String),
    /// The target could not be connected to, or failed the first request (a read made
    /// before the run, so a wrong URL or token fails at once instead of as a report of errors).
    #[error("{url} did not answer a first read: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("preloading the keys failed: {0}")]
    Preload(String),
    #[error("writing the report: {0}")]
    Output(String),
}

/// Which server speaks which protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A ringcache peer's HTTP API.
    Http,
    /// Any Redis server (or anything speaking RESP).
    Redis,
    /// ringcache's own RESP endpoint: the same client as `redis`.
    Resp,
}

/// The flags of `ringcache bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchOptions {
    /// What to load: `http` (a ringcache peer), `redis` (any Redis server over RESP) or `resp`
    /// (ringcache's RESP endpoint; the same client as `redis`).
    #[arg(long, value_enum, default_value_t = TargetKind::Http)]
    pub target: TargetKind,
    /// Where: `http://host:port` for http (default `http://127.0.0.1:7070`),
    /// `redis://[[user]:password@]host:port` for redis and resp (default
    /// `redis://127.0.0.1:6379`).
    #[arg(long)]
    pub url: Option<String>,
    /// The cluster's client token (http), sent as `Authorization: Bearer`.
    #[arg(long = "client-token", env = TOKEN_ENV, hide_env_values = true)]
    pub client_token: Option<String>,
    /// For an `https://` URL: trust this PEM certificate (the peer's own, or its CA's).
    #[arg(long = "tls-ca")]
    pub tls_ca: Option<PathBuf>,
    /// (http) Send each key to one of its replicas, learning the ring from `--url`, instead of
    /// sending everything to `--url` (which forwards what it does not hold).
    #[arg(long)]
    pub ring: bool,
    /// (http, with --ring) Which live replica of a key coordinates each read: `spread` takes
    /// them in turn, `first` always asks the first in ring order (as writes do).
    #[arg(long = "read-from", value_enum, default_value_t = crate::client::ReadRouting::Spread)]
    pub read_from: crate::client::ReadRouting,
    /// Concurrent connections, each with one request in flight at a time.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub connections: usize,
    /// Open loop: start requests at this fixed rate (ops/s) whatever the latency, and measure
    /// each from the moment it was due. Without it: closed loop, each connection sending its
    /// next request as soon as the last one is answered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measurement starts (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// How many distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Pick keys with a Zipf law of this exponent θ >= 0, e.g. 0.99 (YCSB's) or 1.2 (heavier);
    /// uniform without it.
    #[arg(long)]
    pub zipf: Option<f64>,
    /// Share of requests that are reads, in [0, 1]; the rest are writes.
    #[arg(long, default_value_t = 0.9)]
    pub reads: f64,
    /// Bytes per value written.
    #[arg(long = "value-size", default_value_t = 100)]
    pub value_size: usize,
    /// (http) Read quorum of every read: one, quorum, all or a number.
    #[arg(long)]
    pub r: Option<String>,
    /// (http) Write quorum of every write: one, quorum, all or a number.
    #[arg(long)]
    pub w: Option<String>,
    /// (redis, resp) Send `WAIT K 0` after every SET, so the write counts only once K replicas
    /// have it, as a quorum write does.
    #[arg(long)]
    pub wait: Option<u32>,
    /// Write every key once before the warm-up, so reads find values.
    #[arg(long)]
    pub preload: bool,
    /// Seeds every connection's random stream: the same seed makes the same requests.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keys are named `{prefix}{number}`.
    #[arg(long = "key-prefix", default_value = "bench:")]
    pub key_prefix: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (there is none either when stderr is not a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl BenchOptions {
    /// The options a user gets with no flags, aimed at `url` of `target`.
    pub fn new(target: TargetKind, url: &str) -> BenchOptions {
        BenchOptions {
            target,
            url: Some(url.to_string()),
            client_token: None,
            tls_ca: None,
            ring: false,
            read_from: crate::client::ReadRouting::Spread,
            connections: 50,
            rate: None,
            duration: 10.0,
            warmup: 2.0,
            keys: 10_000,
            zipf: None,
            reads: 0.9,
            value_size: 100,
            r: None,
            w: None,
            wait: None,
            preload: false,
            seed: 1,
            key_prefix: "bench:".into(),
            json: false,
            quiet: false,
        }
    }

    /// `--url`, or the target's usual local address.
    pub fn url(&self) -> String {
        match (&self.url, self.target) {
            (Some(url), _) => url.clone(),
            (None, TargetKind::Http) => "http://127.0.0.1:7070".into(),
            (None, TargetKind::Redis | TargetKind::Resp) => "redis://127.0.0.1:6379".into(),
        }
    }

    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |m: &str| Err(BenchError::Invalid(m.into()));
        if self.connections == 0 {
            return invalid("--connections must be at least 1");
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return invalid("--rate must be a positive number of ops/s");
            }
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            return invalid("--duration must be positive");
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return invalid("--warmup must be zero or more");
        }
        if self.keys == 0 {
            return invalid("--keys must be at least 1");
        }
        if let Some(theta) = self.zipf {
            if !(theta >= 0.0 && theta.is_finite()) {
                return invalid("--zipf takes θ >= 0 (e.g. 0.99 or 1.2)");
            }
            if theta >= 1.0 && self.keys > crate::bench::zipfian::MAX_TABLE_ITEMS {
                return invalid("--zipf θ >= 1 takes at most 10,000,000 --keys");
            }
        }
        if !(0.0..=1.0).contains(&self.reads) {
            return invalid("--reads is a share in [0, 1]");
        }
        match self.target {
            TargetKind::Http => {
                if self.wait.is_some() {
                    return invalid("--wait is for Redis targets; ringcache writes take --w");
                }
                let url = self.url();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return invalid("the http target's --url is http://host:port");
                }
            }
            TargetKind::Redis | TargetKind::Resp => {
                if self.r.is_some() || self.w.is_some() || self.ring {
                    return invalid("--r, --w and --ring are for the http target");
                }
                if self.tls_ca.is_some() {
                    return invalid("--tls-ca is for the http target");
                }
                let url = self.url();
                if !(url.starts_with("redis://") || url.starts_with("resp://")) {
                    return invalid("a Redis target's --url is redis://host:port");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contradictions_are_refused_before_connecting() {
        let http = BenchOptions::new(TargetKind::Http, "http://127.0.0.1:1");
        assert!(http.validate().is_ok());
        let redis = BenchOptions::new(TargetKind::Redis, "redis://127.0.0.1:1");
        assert!(redis.validate().is_ok());
        let bad: Vec<BenchOptions> = vec![
            BenchOptions {
                wait: Some(1),
                ..http.clone()
            },
            BenchOptions {
                w: Some("quorum".into()),
                ..redis.clone()
            },
            BenchOptions {
                zipf: Some(-0.5),
                ..http.clone()
            },
            BenchOptions {
                zipf: Some(1.2),
                keys: 20_000_000,
                ..http.clone()
            },
            BenchOptions {
                reads: 1.5,
                ..http.clone()
            },
            BenchOptions {
                rate: Some(0.0),
                ..http.clone()
            },
            BenchOptions {
                connections: 0,
                ..http.clone()
            },
            BenchOptions {
                url: Some("redis://x:1".into()),
                ..http.clone()
            },
        ];
        for options in bad {
            assert!(options.validate().is_err(), "{options:?}");
        }
    }
}
