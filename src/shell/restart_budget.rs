//! How many times a task may be restarted within a sliding window before its owner gives up.
//!
//! Why: gossip that dies is restarted ([`crate::shell::gossip::Gossip`]), but a peer whose
//! gossip dies again and again — a member sending a datagram that trips chitchat each time, a
//! socket that keeps failing — should stop and say so rather than flap forever with a view that
//! is mostly stale. The budget is the rule that decides, kept apart so it can be tested alone.
//!
//! Promises: [`RestartBudget::try_restart`] allows at most `max_restarts` restarts within any
//! `window` (a restart at `t` stops counting at `t + window`); it is pure: the time is a
//! parameter, never read from a clock.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// At most `max_restarts` restarts within any `window`.
#[derive(Clone, Debug)]
pub struct RestartBudget {
    max_restarts: usize,
    window: Duration,
    /// When the restarts still inside the window happened, oldest first.
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub fn new(max_restarts: usize, window: Duration) -> Self {
        Self {
            max_restarts,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now` and returns true if it is within the budget; false (and
    /// nothing recorded) if `max_restarts` restarts already happened within the window.
    pub fn try_restart(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// The most restarts allowed within one window.
    pub fn max_restarts(&self) -> usize {
        self.max_restarts
    }

    /// The window restarts are counted in.
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_past_the_budget_are_refused_until_the_window_slides() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut budget = RestartBudget::new(3, Duration::from_secs(60));
        assert!(budget.try_restart(at(0)));
        assert!(budget.try_restart(at(10)));
        assert!(budget.try_restart(at(20)));
        assert!(!budget.try_restart(at(30)), "a fourth within 60 s");
        assert!(!budget.try_restart(at(59)));
        // The restart at 0 s leaves the window at 60 s: room for one more.
        assert!(budget.try_restart(at(60)));
        assert!(!budget.try_restart(at(61)));
        // Long after, the whole budget is back.
        for s in 200..203 {
            assert!(budget.try_restart(at(s)));
        }
        assert!(!budget.try_restart(at(203)));
    }

    #[test]
    fn a_zero_budget_never_restarts() {
        let mut budget = RestartBudget::new(0, Duration::from_secs(60));
        assert!(!budget.try_restart(Instant::now()));
    }
}
