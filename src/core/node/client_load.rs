//! How busy a shard is serving clients, so that background work yields to them.
//!
//! Anti-entropy and handoff move data at a budget of keys and bytes per second (see
//! `anti_entropy`). On a peer that serves clients that work competes with them for the
//! shard's lock and the machine's cores, and a join or a recovery then shows in the clients'
//! tail latency. So the node counts the client load it sees — the client requests it
//! coordinates and the request-path messages it answers as a replica — in windows of one
//! second of the time it is given, and calls itself *busy* while the current or the previous
//! window holds at least `anti_entropy_busy_requests` of them.
//!
//! Promises:
//! - A busy shard's budget refills at `anti_entropy_busy_percent` of its rate; an idle one
//!   at the full rate (a cluster nobody uses heals at full speed).
//! - A transfer with a busy peer runs at the busy share of the budget whichever side paces it
//!   (peers say whether they are busy in every anti-entropy step and handoff batch): a
//!   receiver that is not busy itself spends `100 / busy_percent` times as much of its budget
//!   on a busy sender's states, so a newcomer filling from replicas that serve clients does
//!   not pull at full speed. Two busy peers move data at the busy share, not at its square.
//! - Busy or not changes only how fast data moves, never what moves or where: convergence
//!   is delayed, never prevented (the budget never stops refilling).

use crate::core::types::Millis;

/// Length of a counting window.
const WINDOW_MS: Millis = 1_000;

/// Client requests counted per window, for the current window and the one before.
#[derive(Debug, Default)]
pub(super) struct ClientLoad {
    /// The current window's number (`now / WINDOW_MS`).
    window: u64,
    this: u64,
    previous: u64,
}

impl ClientLoad {
    /// Counts one client request (or request-path message) handled at `now`.
    pub(super) fn note(&mut self, now: Millis) {
        let window = now / WINDOW_MS;
        if window != self.window {
            self.previous = if window == self.window + 1 {
                self.this
            } else {
                0
            };
            self.this = 0;
            self.window = window;
        }
        self.this += 1;
    }

    /// Whether the current or the previous window at `now` holds at least `threshold`
    /// requests (never, when `threshold` is 0).
    pub(super) fn busy(&self, now: Millis, threshold: u64) -> bool {
        if threshold == 0 {
            return false;
        }
        let window = now / WINDOW_MS;
        let (this, previous) = if window == self.window {
            (self.this, self.previous)
        } else if window == self.window + 1 {
            (0, self.this)
        } else {
            (0, 0)
        };
        this.max(previous) >= threshold
    }
}

/// `rate` scaled to `percent` of itself (at least 1 unless `rate` is 0, so a budget never
/// stops refilling).
pub(super) fn share_of(rate: u64, percent: u64) -> u64 {
    if rate == 0 {
        return 0;
    }
    (rate.saturating_mul(percent) / 100).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_while_this_or_the_previous_window_reaches_the_threshold() {
        let mut load = ClientLoad::default();
        assert!(!load.busy(0, 3));
        for t in [10, 20] {
            load.note(t);
        }
        assert!(!load.busy(30, 3), "two requests are below three");
        load.note(999);
        assert!(load.busy(999, 3), "three within the window");
        assert!(load.busy(1_500, 3), "the previous window still counts");
        assert!(!load.busy(2_000, 3), "two windows on, nothing counts");
        load.note(1_200);
        assert!(
            load.busy(1_200, 3),
            "the window before the note's still counts"
        );
        load.note(3_100);
        assert!(
            !load.busy(3_100, 3),
            "a skipped window resets the previous count"
        );
    }

    #[test]
    fn a_zero_threshold_never_makes_a_shard_busy() {
        let mut load = ClientLoad::default();
        for t in 0..1_000 {
            load.note(t);
        }
        assert!(!load.busy(500, 0));
        assert!(load.busy(500, 1_000));
    }

    #[test]
    fn a_share_never_stops_the_budget() {
        assert_eq!(share_of(3_000, 50), 1_500);
        assert_eq!(share_of(3_000, 100), 3_000);
        assert_eq!(share_of(1, 10), 1);
        assert_eq!(share_of(0, 100), 0);
    }
}
