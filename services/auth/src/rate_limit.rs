//! Guessing limits in Redis (shared by every replica).
//!
//! Failed sign-ins grow a delay before the next attempt is heard, counted twice: per account and client address
//! (strict: an attacker guessing from one place waits up to 15 minutes between tries), and per account over all
//! addresses (capped at one minute, so an attacker elsewhere can slow a real user's sign-in but never lock them
//! out). A successful sign-in clears its pair. Plain windows bound sign-ups and reset requests per address and
//! per account. If Redis is unreachable the limits are skipped with a warning: argon2 still slows guessing,
//! and an outage of the limiter must not become an outage of sign-in.

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

/// A growing delay after repeated failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Failures allowed before any delay.
    pub free_failures: u64,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Failures are forgotten this long after the last one.
    pub memory: Duration,
}

/// A fixed window: at most `limit` events per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub window: Duration,
}

pub const SIGN_IN_PER_ACCOUNT_AND_ADDRESS: Backoff = Backoff {
    free_failures: 5,
    first_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(15 * 60),
    memory: Duration::from_secs(3600),
};
pub const SIGN_IN_PER_ACCOUNT: Backoff = Backoff {
    free_failures: 20,
    first_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(60),
    memory: Duration::from_secs(3600),
};
pub const SIGN_IN_PER_ADDRESS: Window = Window { limit: 100, window: Duration::from_secs(600) };
pub const SIGN_UP_PER_ADDRESS: Window = Window { limit: 10, window: Duration::from_secs(3600) };
pub const RESET_PER_ACCOUNT: Window = Window { limit: 3, window: Duration::from_secs(3600) };
pub const RESET_PER_ADDRESS: Window = Window { limit: 20, window: Duration::from_secs(3600) };

/// The delay owed after `failures` failures: none up to the free ones, then doubling up to the cap.
pub fn delay_after(failures: u64, backoff: &Backoff) -> Duration {
    if failures < backoff.free_failures {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(failures - backoff.free_failures).unwrap_or(u32::MAX).min(30);
    backoff.first_delay.saturating_mul(1u32 << doublings).min(backoff.max_delay)
}

/// How long until the next attempt is heard, given the failures and the time since the last one.
pub fn wait_remaining(failures: u64, since_last_failure: Duration, backoff: &Backoff) -> Option<Duration> {
    delay_after(failures, backoff).checked_sub(since_last_failure).filter(|wait| !wait.is_zero())
}

/// An account name for Redis keys: hashed, so Redis holds no email addresses.
fn account_key(email: &str) -> String {
    let digest = Sha256::digest(email.as_bytes());
    digest[..12].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The limiter.
#[derive(Clone)]
pub struct Limiter {
    redis: ConnectionManager,
}

/// The attempt must wait this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    pub limit: &'static str,
}

impl Limiter {
    pub fn new(redis: ConnectionManager) -> Limiter {
        Limiter { redis }
    }

    /// Whether a sign-in attempt for `email` from `address` may be heard now.
    pub async fn check_sign_in(&self, email: &str, address: &str) -> Result<(), Limited> {
        self.count_window("sign-in", address, &SIGN_IN_PER_ADDRESS, "sign-in attempts per client address").await?;
        let account = account_key(email);
        self.check_backoff(&format!("pair:{account}:{address}"), &SIGN_IN_PER_ACCOUNT_AND_ADDRESS, "failed sign-ins")
            .await?;
        self.check_backoff(&format!("account:{account}"), &SIGN_IN_PER_ACCOUNT, "failed sign-ins for this account")
            .await
    }

    pub async fn record_sign_in_failure(&self, email: &str, address: &str) {
        let account = account_key(email);
        for (key, backoff) in [
            (format!("pair:{account}:{address}"), &SIGN_IN_PER_ACCOUNT_AND_ADDRESS),
            (format!("account:{account}"), &SIGN_IN_PER_ACCOUNT),
        ] {
            self.record_failure(&key, backoff).await;
        }
    }

    /// A success forgets the failures from this address; those from elsewhere keep counting.
    pub async fn record_sign_in_success(&self, email: &str, address: &str) {
        let key = format!("auth:failures:pair:{}:{address}", account_key(email));
        let mut redis = self.redis.clone();
        if let Err(error) = ::redis::cmd("DEL").arg(&key).query_async::<()>(&mut redis).await {
            tracing::warn!(%error, "rate limiter unavailable");
        }
    }

    pub async fn check_sign_up(&self, address: &str) -> Result<(), Limited> {
        self.count_window("sign-up", address, &SIGN_UP_PER_ADDRESS, "sign-ups per client address").await
    }

    pub async fn check_reset(&self, email: &str, address: &str) -> Result<(), Limited> {
        self.count_window("reset-address", address, &RESET_PER_ADDRESS, "password resets per client address").await?;
        self.count_window("reset-account", &account_key(email), &RESET_PER_ACCOUNT, "password resets per account").await
    }

    async fn count_window(&self, scope: &str, key: &str, window: &Window, limit: &'static str) -> Result<(), Limited> {
        let key = format!("auth:window:{scope}:{key}");
        let mut redis = self.redis.clone();
        let counted: Result<(u64, i64), _> = ::redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window.window.as_millis() as u64)
            .arg("NX")
            .ignore()
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut redis)
            .await;
        match counted {
            Ok((count, ttl_ms)) if count > window.limit => {
                let retry_after = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)).max(Duration::from_secs(1));
                Err(Limited { retry_after, limit })
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "rate limiter unavailable; not limiting");
                Ok(())
            }
        }
    }

    async fn check_backoff(&self, key: &str, backoff: &Backoff, limit: &'static str) -> Result<(), Limited> {
        let key = format!("auth:failures:{key}");
        let mut redis = self.redis.clone();
        let state: Result<(Option<u64>, Option<u64>), _> =
            ::redis::cmd("HMGET").arg(&key).arg("count").arg("last_ms").query_async(&mut redis).await;
        match state {
            Ok((Some(failures), Some(last_ms))) => {
                let since = Duration::from_millis(now_ms().saturating_sub(last_ms));
                match wait_remaining(failures, since, backoff) {
                    Some(retry_after) => Err(Limited { retry_after, limit }),
                    None => Ok(()),
                }
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "rate limiter unavailable; not limiting");
                Ok(())
            }
        }
    }

    async fn record_failure(&self, key: &str, backoff: &Backoff) {
        let key = format!("auth:failures:{key}");
        let mut redis = self.redis.clone();
        let recorded: Result<(), _> = ::redis::pipe()
            .atomic()
            .cmd("HINCRBY")
            .arg(&key)
            .arg("count")
            .arg(1)
            .ignore()
            .cmd("HSET")
            .arg(&key)
            .arg("last_ms")
            .arg(now_ms())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(backoff.memory.as_millis() as u64)
            .ignore()
            .query_async(&mut redis)
            .await;
        if let Err(error) = recorded {
            tracing::warn!(%error, "rate limiter unavailable; failure not recorded");
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_and_double_up_to_the_cap() {
        let backoff = SIGN_IN_PER_ACCOUNT_AND_ADDRESS;
        assert_eq!(delay_after(0, &backoff), Duration::ZERO);
        assert_eq!(delay_after(4, &backoff), Duration::ZERO);
        assert_eq!(delay_after(5, &backoff), Duration::from_secs(1));
        assert_eq!(delay_after(6, &backoff), Duration::from_secs(2));
        assert_eq!(delay_after(10, &backoff), Duration::from_secs(32));
        assert_eq!(delay_after(15, &backoff), Duration::from_secs(900));
        assert_eq!(delay_after(u64::MAX, &backoff), Duration::from_secs(900), "no overflow");
    }

    #[test]
    fn an_attacker_elsewhere_can_only_slow_a_real_user_by_a_minute() {
        assert_eq!(delay_after(1_000_000, &SIGN_IN_PER_ACCOUNT), Duration::from_secs(60));
        const { assert!(SIGN_IN_PER_ACCOUNT.free_failures > SIGN_IN_PER_ACCOUNT_AND_ADDRESS.free_failures) };
    }

    #[test]
    fn the_wait_is_what_remains_of_the_delay() {
        let backoff = SIGN_IN_PER_ACCOUNT_AND_ADDRESS;
        assert_eq!(wait_remaining(6, Duration::from_millis(500), &backoff), Some(Duration::from_millis(1500)));
        assert_eq!(wait_remaining(6, Duration::from_secs(2), &backoff), None);
        assert_eq!(wait_remaining(3, Duration::ZERO, &backoff), None);
    }

    #[test]
    fn account_keys_do_not_contain_the_address() {
        let key = account_key("ada@example.com");
        assert_eq!(key.len(), 24);
        assert!(!key.contains("ada"));
        assert_eq!(key, account_key("ada@example.com"));
    }
}
