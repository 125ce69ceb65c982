//! Resilience, decided by pure functions: [`retry`] (capped exponential backoff with full jitter, only before
//! the first byte reached the client), [`breaker`] (one circuit breaker per provider) and [`fallback`] (the
//! ordered candidates for a model). The gateway applies them; there is no other retry layer (the HTTP client's
//! own retries are off).

pub mod breaker;
pub mod fallback;
pub mod retry;

use std::time::Duration;

/// The knobs, with production defaults; tests shorten them.
#[derive(Clone, Debug)]
pub struct ResilienceSettings {
    pub connect_timeout: Duration,
    /// Until the response headers; a provider's `timeoutSeconds` overrides it when smaller.
    pub first_byte_timeout: Duration,
    /// Between two chunks of a stream.
    pub idle_timeout: Duration,
    pub retry: retry::RetryPolicy,
    pub breaker: breaker::BreakerSettings,
}

impl Default for ResilienceSettings {
    fn default() -> Self {
        ResilienceSettings {
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            retry: retry::RetryPolicy::default(),
            breaker: breaker::BreakerSettings::default(),
        }
    }
}
