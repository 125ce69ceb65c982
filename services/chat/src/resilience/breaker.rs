//! A circuit breaker per provider: after `failure_threshold` consecutive failures that say the provider is
//! unhealthy it opens and refuses calls for `open_for`; then one trial call is let through (half-open), whose
//! outcome closes or reopens it. The state machine is pure: time is passed in.

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { failure_threshold: 5, open_for: Duration::from_secs(30) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is in flight.
    HalfOpen,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    state: BreakerState,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: BreakerState::Closed { consecutive_failures: 0 } }
    }
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go out now; letting the trial call through moves an expired open breaker to
    /// half-open.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    pub fn record_success(&mut self) {
        self.state = BreakerState::Closed { consecutive_failures: 0 };
    }

    /// Records a failure that counts against the provider.
    pub fn record_failure(&mut self, settings: &BreakerSettings, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed { consecutive_failures } if consecutive_failures + 1 < settings.failure_threshold => {
                BreakerState::Closed { consecutive_failures: consecutive_failures + 1 }
            }
            _ => BreakerState::Open { until: now + settings.open_for },
        };
    }

    /// A call ended in a way that says nothing about the provider (a refused request): a trial call's slot
    /// is given back.
    pub fn record_neutral(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Closed { consecutive_failures: 0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings { failure_threshold: 3, open_for: Duration::from_secs(10) }
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let (settings, now) = (settings(), Instant::now());
        let mut breaker = Breaker::default();
        breaker.record_failure(&settings, now);
        breaker.record_failure(&settings, now);
        breaker.record_success();
        breaker.record_failure(&settings, now);
        breaker.record_failure(&settings, now);
        assert!(breaker.allow(now));
        breaker.record_failure(&settings, now);
        assert_eq!(breaker.state(), BreakerState::Open { until: now + settings.open_for });
        assert!(!breaker.allow(now + Duration::from_secs(9)));
    }

    #[test]
    fn after_the_open_period_one_trial_call_decides() {
        let (settings, now) = (settings(), Instant::now());
        let mut breaker = Breaker::default();
        for _ in 0..3 {
            breaker.record_failure(&settings, now);
        }
        let later = now + Duration::from_secs(10);
        assert!(breaker.allow(later));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(!breaker.allow(later), "only one trial call at a time");
        breaker.record_failure(&settings, later);
        assert_eq!(breaker.state(), BreakerState::Open { until: later + settings.open_for });

        let much_later = later + Duration::from_secs(10);
        assert!(breaker.allow(much_later));
        breaker.record_success();
        assert!(breaker.allow(much_later));
        assert_eq!(breaker.state(), BreakerState::Closed { consecutive_failures: 0 });
    }

    #[test]
    fn a_neutral_outcome_of_the_trial_call_closes_the_breaker() {
        let (settings, now) = (settings(), Instant::now());
        let mut breaker = Breaker::default();
        for _ in 0..3 {
            breaker.record_failure(&settings, now);
        }
        assert!(breaker.allow(now + Duration::from_secs(10)));
        breaker.record_neutral();
        assert!(breaker.allow(now + Duration::from_secs(10)));
    }
}
