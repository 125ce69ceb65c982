//! Per-object exponential backoff with jitter for failed reconciles.
//!
//! kube-runtime's `error_policy` is told only the object and the error, so the attempt count lives here:
//! each failure of the same object doubles its delay (with ±25 % jitter so that many tenants failing
//! together do not retry in lockstep), and a success resets it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

pub struct Backoff<K> {
    base: Duration,
    max: Duration,
    attempts: Mutex<HashMap<K, u32>>,
}

impl<K: Eq + Hash> Backoff<K> {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, attempts: Mutex::new(HashMap::new()) }
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&self, key: K) -> Duration {
        let attempt = match self.attempts.lock() {
            Ok(mut attempts) => {
                let attempt = attempts.entry(key).or_insert(0);
                *attempt = attempt.saturating_add(1);
                *attempt
            }
            Err(_) => 1,
        };
        let exponential = self.base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
        let capped = exponential.min(self.max);
        capped.mul_f64(0.75 + fastrand::f64() * 0.5)
    }

    /// Forgets the failures of an object after it reconciled successfully (or was deleted).
    pub fn reset(&self, key: &K) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap_and_reset_on_success() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay("acme")).collect();
        for (attempt, delay) in delays.iter().enumerate() {
            let nominal = Duration::from_secs(1 << attempt.min(6)).min(Duration::from_secs(60));
            assert!(*delay >= nominal.mul_f64(0.75) && *delay <= nominal.mul_f64(1.25), "{attempt}: {delay:?}");
        }
        assert!(backoff.next_delay("other") <= Duration::from_millis(1250), "objects back off independently");
        backoff.reset(&"acme");
        assert!(backoff.next_delay("acme") <= Duration::from_millis(1250));
    }
}
