//! Stampede protection for cache-aside reads: [`LoadOptions`] and the `get_or_load` walk that
//! `Client::get_or_load` and `ClusterClient::get_or_load` share.
//!
//! When a popular key expires, every reader misses at once and, done naively (get, load,
//! put), every one of them runs the expensive loader. `get_or_load` lets one of them do it:
//!
//! - **Lease.** On a miss the reader tries a create-only write (`If-None-Match: *`, decided by
//!   a Paxos round among the lease key's replicas) of the key's lease, [`lease_key`], with a
//!   short TTL (`lease_ttl`). The one that creates it runs the loader, writes the value with
//!   the caller's TTL and deletes the lease. The others poll the key with a small jittered
//!   backoff and return the value once it appears; if the lease disappears first (its holder
//!   died or gave up: it expires after `lease_ttl`), they race for it again. Nobody waits
//!   longer than `max_wait`.
//! - **Probabilistic early refresh (XFetch).** A hit whose remaining TTL is short may refresh
//!   the value before it expires: with `δ` the loader's expected duration (`expected_load`)
//!   and `β` the eagerness (`beta`), a reader refreshes when
//!   `remaining ≤ -δ·β·ln(u)` for a uniform `u` in (0, 1] — the XFetch rule
//!   `now − δ·β·ln(u) ≥ expiry` (Vattani, Chierichetti, Lowenstein, VLDB 2015). The refresh
//!   takes the lease too, so at most one reader refreshes; everyone else, the refresher's
//!   losers included, returns the value it read.
//! - **Stale-while-revalidate.** With `stale_ok`, a read may be answered with a value expired
//!   less than that long ago (the peers keep expired values for `--stale-window-ms`). A reader
//!   that gets a stale value tries the lease: the winner reloads, the others return the stale
//!   value at once instead of waiting.
//!
//! # Promises
//! - At most one loader runs per key per lease TTL while a majority of the lease key's
//!   replicas are reachable (the create-only write is linearizable per key). A lease whose
//!   holder is slower than `lease_ttl` expires and lets a second loader in: pick `lease_ttl`
//!   above the loader's worst case.
//! - Every call returns a value (hit, loaded, or loaded by another) or an error; a waiter
//!   gives up with [`LoadError::TimedOut`] after `max_wait`, never loops forever. An early or
//!   stale refresh is best effort: if taking the lease, the loader or the write fails, the
//!   reader returns the value it read (so a failing loader is only reported on a miss).
//! - A write this walk makes is a plain overwrite (`?overwrite=true`) with the caller's TTL: a
//!   cache-aside value, not a session write.
//!
//! # Why the lease has its own key
//! The lease must not be a value of the cached key itself: readers of the key would see it.
//! `{key}\0lease` sits elsewhere on the ring and expires on its own.

// The client is no part of the deterministic core: it waits on the wall clock and draws its
// jitter, XFetch draws and lease tokens from the thread's RNG.
#![allow(clippy::disallowed_methods)]

use crate::client::http_client::{CachedRead, CasOutcome, Client, ClientError, Expected};
use crate::client::http_client::{ReadResult, WriteOptions};
use std::future::Future;
use std::time::{Duration, Instant};
use thiserror::Error;

/// What is appended to a key to name its lease (`{key}\0lease`).
pub const LEASE_SUFFIX: &[u8] = b"\0lease";

/// The lease key of `key`.
pub fn lease_key(key: &[u8]) -> Vec<u8> {
    [key, LEASE_SUFFIX].concat()
}

/// How `get_or_load` behaves. `LoadOptions::default()` suits a loader of up to a few seconds.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// How long a lease lasts: longer than the loader's worst case, or a second loader may
    /// start while the first still runs.
    pub lease_ttl: Duration,
    /// How long a reader waits for another's load before giving up.
    pub max_wait: Duration,
    /// The loader's expected duration: XFetch's δ. Zero turns early refresh off.
    pub expected_load: Duration,
    /// XFetch's β: above 1 refreshes earlier, below 1 later; 0 turns early refresh off.
    pub beta: f64,
    /// Accept a value expired less than this long ago (stale-while-revalidate); `None` never.
    pub stale_ok: Option<Duration>,
    /// Read quorum (`one`, `quorum`, `all` or a number); the peer's default when `None`.
    pub r: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            lease_ttl: Duration::from_secs(5),
            max_wait: Duration::from_secs(10),
            expected_load: Duration::from_millis(100),
            beta: 1.0,
            stale_ok: None,
            r: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum LoadError<E> {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The loader failed; nothing was written and the lease was released.
    #[error("loader failed: {0}")]
    Loader(E),
    /// Another reader held the lease for longer than `max_wait` and wrote nothing.
    #[error("waited {0:?} for another reader's load")]
    TimedOut(Duration),
}

/// First and longest pause between two polls of a waiting reader.
const FIRST_POLL: Duration = Duration::from_millis(10);
const LONGEST_POLL: Duration = Duration::from_millis(100);

/// The walk, with `value_peer` answering for the key and `lease_peer` for its lease.
pub(crate) async fn get_or_load<F, Fut, E>(
    value_peer: &Client,
    lease_peer: &Client,
    key: &[u8],
    ttl: Duration,
    loader: F,
    options: &LoadOptions,
) -> Result<Vec<u8>, LoadError<E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<u8>, E>>,
{
    let started = Instant::now();
    let r = options.r.as_deref();
    let mut lease = Lease::new(lease_peer, key, options.lease_ttl);
    let first = value_peer.get_cached(key, r, options.stale_ok).await?;
    if let Some(value) = hit(&first) {
        // A fresh hit refreshes early only by the XFetch draw; a stale one always tries.
        let refresh = first.stale
            || first.ttl_ms.is_some_and(|left| {
                refresh_early(
                    Duration::from_millis(left),
                    options.expected_load,
                    options.beta,
                    1.0 - rand::random::<f64>(),
                )
            });
        // The refresh is best effort: whatever fails in it, the reader has a value to return.
        if refresh && lease.acquire().await.unwrap_or(false) {
            let refreshed = lease
                .load_unless_done(value_peer, Some(&first), key, ttl, loader, options)
                .await;
            return Ok(refreshed.unwrap_or(value));
        }
        return Ok(value);
    }
    let mut pause = FIRST_POLL;
    loop {
        if lease.acquire().await? {
            return lease
                .load_unless_done(value_peer, None, key, ttl, loader, options)
                .await;
        }
        // Someone else loads: wait for the value, or for the lease to go away.
        loop {
            if started.elapsed() >= options.max_wait {
                return Err(LoadError::TimedOut(options.max_wait));
            }
            tokio::time::sleep(jittered(pause)).await;
            pause = (pause * 2).min(LONGEST_POLL);
            let read = value_peer.get_cached(key, r, options.stale_ok).await?;
            if let Some(value) = hit(&read) {
                return Ok(value);
            }
            if !lease.held_by_anyone().await? {
                break;
            }
        }
    }
}

/// The XFetch rule: refresh a value with `left` to live when `left ≤ -δ·β·ln(u)`, for `u`
/// drawn uniformly from (0, 1]. The chance grows as expiry nears and with δ and β.
pub fn refresh_early(left: Duration, expected_load: Duration, beta: f64, u: f64) -> bool {
    if beta <= 0.0 || expected_load.is_zero() || u <= 0.0 {
        return false;
    }
    left.as_secs_f64() <= -expected_load.as_secs_f64() * beta * u.ln()
}

/// The value a read found: the single value, or (siblings of concurrent loads) the first.
fn hit(read: &CachedRead) -> Option<Vec<u8>> {
    match &read.read {
        ReadResult::Found { values, .. } => values.first().cloned(),
        ReadResult::NotFound { .. } => None,
    }
}

/// `pause` plus up to half of it again, so waiters do not poll in step.
fn jittered(pause: Duration) -> Duration {
    pause + pause.mul_f64(rand::random::<f64>() / 2.0)
}

/// One reader's claim on a key's lease.
struct Lease<'a> {
    peer: &'a Client,
    key: Vec<u8>,
    ttl: Duration,
    /// What this reader writes as the lease's value, to recognise its own lease after an
    /// answer it could not read.
    token: Vec<u8>,
    /// When this reader last tried to take it.
    taken_at: Option<Instant>,
}

impl<'a> Lease<'a> {
    fn new(peer: &'a Client, key: &[u8], ttl: Duration) -> Lease<'a> {
        Lease {
            peer,
            key: lease_key(key),
            ttl,
            token: format!("{:032x}", rand::random::<u128>()).into_bytes(),
            taken_at: None,
        }
    }

    /// Tries to create the lease; whether this reader holds it now. A round that ran out of
    /// time (503) may still have written it: the lease is read back to see whose it is.
    async fn acquire(&mut self) -> Result<bool, ClientError> {
        self.taken_at = Some(Instant::now());
        let ttl = Some(self.ttl.as_secs_f64());
        match (self.peer)
            .put_if(&self.key, self.token.clone(), &Expected::Absent, ttl)
            .await
        {
            Ok(CasOutcome::Applied(_)) => Ok(true),
            Ok(CasOutcome::NotApplied { .. }) => Ok(false),
            Err(e) if e.status() == Some(503) => {
                let read = self.peer.get(&self.key, None).await?;
                Ok(read.values().contains(&self.token))
            }
            Err(e) => Err(e),
        }
    }

    async fn held_by_anyone(&self) -> Result<bool, ClientError> {
        Ok(matches!(
            self.peer.get(&self.key, None).await?,
            ReadResult::Found { .. }
        ))
    }

    /// As the lease's holder: unless another holder wrote a fresh value and released its
    /// lease between `before` (what this reader saw: a miss, a stale value or one close to
    /// expiry) and this lease — the key is read again to know (double-checked) — loads.
    async fn load_unless_done<F, Fut, E>(
        &self,
        value_peer: &Client,
        before: Option<&CachedRead>,
        key: &[u8],
        ttl: Duration,
        loader: F,
        options: &LoadOptions,
    ) -> Result<Vec<u8>, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        let now = value_peer
            .get_cached(key, options.r.as_deref(), None)
            .await?;
        let replaced = before.is_none_or(|b| b.read.context() != now.read.context());
        if let Some(value) = hit(&now).filter(|_| replaced) {
            self.release().await;
            return Ok(value);
        }
        self.load(value_peer, key, ttl, loader).await
    }

    /// Runs the loader as the lease's holder, writes its value with `ttl` and releases the
    /// lease (whatever the loader answered).
    async fn load<F, Fut, E>(
        &self,
        value_peer: &Client,
        key: &[u8],
        ttl: Duration,
        loader: F,
    ) -> Result<Vec<u8>, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        let loaded = loader().await;
        let written = match &loaded {
            Ok(value) => {
                let options = WriteOptions {
                    ttl_secs: Some(ttl.as_secs_f64()),
                    overwrite: true,
                    ..WriteOptions::default()
                };
                value_peer
                    .put(key, value.clone(), &options)
                    .await
                    .map(|_| ())
            }
            Err(_) => Ok(()),
        };
        self.release().await;
        written?;
        loaded.map_err(LoadError::Loader)
    }

    /// Deletes the lease if it is still this reader's: only while its TTL has not run out
    /// (past it, another reader may hold a new lease under the same key). A failed delete is
    /// harmless: the lease expires.
    async fn release(&self) {
        if self.taken_at.is_some_and(|at| at.elapsed() < self.ttl) {
            let _ = self.peer.delete(&self.key, &WriteOptions::default()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfetch_refreshes_more_often_as_expiry_nears() {
        let delta = Duration::from_millis(100);
        let draws: Vec<f64> = (1..=1000).map(|i| i as f64 / 1000.0).collect();
        let share = |left_ms: u64| {
            draws
                .iter()
                .filter(|u| refresh_early(Duration::from_millis(left_ms), delta, 1.0, **u))
                .count()
        };
        // P(refresh) = exp(-left / (δ·β)).
        assert_eq!(share(0), 1000);
        let near = share(10);
        let far = share(300);
        assert!((890..=920).contains(&near), "{near}");
        assert!((40..=60).contains(&far), "{far}");
        assert_eq!(share(5_000), 0);
    }

    #[test]
    fn xfetch_is_off_with_zero_beta_or_delta() {
        let zero = Duration::ZERO;
        assert!(!refresh_early(zero, Duration::from_millis(100), 0.0, 0.5));
        assert!(!refresh_early(zero, zero, 1.0, 0.5));
    }

    #[test]
    fn the_lease_key_differs_from_the_key_and_names_it() {
        assert_eq!(lease_key(b"user:1"), b"user:1\0lease".to_vec());
    }
}
