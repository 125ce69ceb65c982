//! When to try the same provider again, and after how long.

use std::time::Duration;

use crate::providers::ProviderError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per candidate, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(4) }
    }
}

/// What to do after attempt number `attempt` (1-based) failed with `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    RetryAfter(Duration),
    /// Go to the next candidate (if the error allows a fallback).
    NextCandidate,
    /// Give up: the error is the caller's answer.
    GiveUp,
}

/// Decides the next step. `sent_to_client` is whether any of the answer has reached the client: from then on
/// nothing is retried, since the client would see the answer twice. `jitter` is uniform in `[0, 1)`.
pub fn next_step(policy: &RetryPolicy, attempt: u32, error: &ProviderError, sent_to_client: bool, jitter: f64) -> Next {
    if sent_to_client {
        return Next::GiveUp;
    }
    if error.is_transient() && attempt < policy.max_attempts {
        match error.retry_after() {
            // A provider asking for longer than we would wait is better served by the next candidate.
            Some(wait) if wait > policy.max_delay => {}
            Some(wait) => return Next::RetryAfter(wait),
            None => return Next::RetryAfter(backoff(policy, attempt, jitter)),
        }
    }
    if error.allows_fallback() { Next::NextCandidate } else { Next::GiveUp }
}

/// Full jitter: uniform in `[0, min(max, base * 2^(attempt-1))]`.
pub fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let ceiling = policy.base_delay.saturating_mul(1 << exponent).min(policy.max_delay);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::TimeoutPhase;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_is_jittered() {
        let policy = policy();
        assert_eq!(backoff(&policy, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(&policy, 2, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(&policy, 3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(&policy, 10, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&policy, 60, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&policy, 2, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(&policy, 2, 0.0), Duration::ZERO);
    }

    #[test]
    fn transient_errors_retry_until_the_attempts_run_out_then_fall_back() {
        let policy = policy();
        let error = ProviderError::Upstream { status: 502 };
        assert_eq!(next_step(&policy, 1, &error, false, 1.0), Next::RetryAfter(Duration::from_millis(100)));
        assert_eq!(next_step(&policy, 2, &error, false, 1.0), Next::RetryAfter(Duration::from_millis(200)));
        assert_eq!(next_step(&policy, 3, &error, false, 1.0), Next::NextCandidate);
        let timeout = ProviderError::Timeout(TimeoutPhase::Idle);
        assert_eq!(next_step(&policy, 1, &timeout, false, 0.0), Next::RetryAfter(Duration::ZERO));
    }

    #[test]
    fn nothing_is_retried_once_the_client_has_part_of_the_answer() {
        let error = ProviderError::Connection("reset".into());
        assert_eq!(next_step(&policy(), 1, &error, true, 1.0), Next::GiveUp);
    }

    #[test]
    fn retry_after_is_honoured_when_short_and_skipped_to_the_next_candidate_when_long() {
        let short = ProviderError::RateLimited { retry_after: Some(Duration::from_millis(300)) };
        assert_eq!(next_step(&policy(), 1, &short, false, 0.0), Next::RetryAfter(Duration::from_millis(300)));
        let long = ProviderError::Overloaded { retry_after: Some(Duration::from_secs(30)) };
        assert_eq!(next_step(&policy(), 1, &long, false, 0.0), Next::NextCandidate);
    }

    #[test]
    fn refusals_give_up_and_quota_goes_to_the_next_candidate_without_retrying() {
        assert_eq!(next_step(&policy(), 1, &ProviderError::ContextTooLong, false, 0.0), Next::GiveUp);
        assert_eq!(next_step(&policy(), 1, &ProviderError::AuthenticationFailed, false, 0.0), Next::GiveUp);
        assert_eq!(next_step(&policy(), 1, &ProviderError::QuotaExhausted, false, 0.0), Next::NextCandidate);
        assert_eq!(next_step(&policy(), 1, &ProviderError::CircuitOpen, false, 0.0), Next::NextCandidate);
    }
}
