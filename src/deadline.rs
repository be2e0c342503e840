//! The overall time budget of one login. Dovecot never times out a checkpassword child, so the
//! program bounds itself: every network operation gets at most what is left of the budget.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
}

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Self::starting_at(Instant::now(), budget)
    }

    pub fn starting_at(start: Instant, budget: Duration) -> Self {
        Deadline {
            end: start + budget,
        }
    }

    /// `timeout` shortened to what is left, or `None` when nothing is left.
    pub fn cap(&self, timeout: Duration) -> Option<Duration> {
        let left = self.end.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| timeout.min(left))
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.end
    }

    pub fn end(&self) -> Instant {
        self.end
    }
}
