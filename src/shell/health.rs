//! Whether this peer is whole: the first fatal failure of a background task, if any.
//!
//! Why: a peer whose gossip task has died keeps serving HTTP with a frozen view of the cluster;
//! answering `GET /health` with 200 then would hide it from every load balancer and operator.
//! A task that must run for the peer's whole life reports its end here, and the health check
//! answers 503 with the reason from then on.
//!
//! Promises: once failed, a [`Health`] stays failed (the first reason is kept); clones share
//! one state; reading it never blocks.

use std::sync::{Arc, OnceLock};

/// A shared, write-once health flag.
#[derive(Clone, Debug, Default)]
pub struct Health {
    failure: Arc<OnceLock<String>>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the peer unhealthy for good, unless it already is (then the first reason stays).
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.failure.set(reason.clone()).is_ok() {
            tracing::error!(%reason, "peer unhealthy");
        }
    }

    /// Why the peer is unhealthy, or `None` while it is whole.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
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
        assert_eq!(health.failure(), Some("gossip stopped"));
    }
}
