//! Whether this peer is whole: a fatal failure of a background task, or a part that is down
//! for now and being brought back.
//!
//! Why: a peer whose gossip task has died keeps serving HTTP with a frozen view of the cluster;
//! answering `GET /health` with 200 then would hide it from every load balancer and operator.
//! A task that must run for the peer's whole life reports its end here. A part that can be
//! restarted (gossip) reports itself [`Health::set_down`] while it is being restarted and
//! [`Health::set_up`] once it is back; a part that cannot (or gave up restarting) calls
//! [`Health::fail`]. The health check answers 503 with the reason while either holds.
//!
//! Promises: once failed, a [`Health`] stays failed (the first reason is kept, and it wins over
//! any part being down); a part that is down is reported until that same part is set up again;
//! clones share one state; reading it takes one short lock and never waits on I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A shared health state: a sticky fatal failure, and the parts down for now.
#[derive(Clone, Debug, Default)]
pub struct Health {
    state: Arc<Mutex<HealthState>>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// The first fatal failure; never cleared.
    fatal: Option<String>,
    /// Parts down for now, by name, with why.
    down: BTreeMap<String, String>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the peer unhealthy for good, unless it already is (then the first reason stays).
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut state = self.lock();
        if state.fatal.is_none() {
            tracing::error!(%reason, "peer unhealthy");
            state.fatal = Some(reason);
        }
    }

    /// Marks `part` down until [`Health::set_up`] is called for it (a newer reason replaces
    /// an older one).
    pub fn set_down(&self, part: &str, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::warn!(part, %reason, "peer unhealthy until the part is back");
        self.lock().down.insert(part.to_string(), reason);
    }

    /// `part` is back; the peer is healthy again unless another part is down or it failed.
    pub fn set_up(&self, part: &str) {
        if self.lock().down.remove(part).is_some() {
            tracing::info!(part, "part back: no longer unhealthy on its account");
        }
    }

    /// Why the peer is unhealthy — the fatal failure if any, else the first part down — or
    /// `None` while it is whole.
    pub fn failure(&self) -> Option<String> {
        let state = self.lock();
        state
            .fatal
            .clone()
            .or_else(|| state.down.values().next().cloned())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_sticks_and_is_shared() {
        let health = Health::new();
        let clone = health.clone();
        assert_eq!(health.failure(), None);
        clone.fail("gossip stopped");
        clone.fail("something else");
        assert_eq!(health.failure().as_deref(), Some("gossip stopped"));
        clone.set_up("gossip");
        assert_eq!(health.failure().as_deref(), Some("gossip stopped"));
    }

    #[test]
    fn a_part_down_is_reported_until_it_is_up_again() {
        let health = Health::new();
        health.set_down("gossip", "restarting gossip");
        assert_eq!(health.failure().as_deref(), Some("restarting gossip"));
        health.set_up("other");
        assert_eq!(health.failure().as_deref(), Some("restarting gossip"));
        health.set_up("gossip");
        assert_eq!(health.failure(), None);
        // A fatal failure wins over a part down.
        health.set_down("gossip", "restarting gossip");
        health.fail("gossip gave up");
        assert_eq!(health.failure().as_deref(), Some("gossip gave up"));
    }
}
