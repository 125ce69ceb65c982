//! The chat service's own Prometheus metrics. Labels are provider and model names from the tenant
//! configuration and fixed outcome names: never a user id, a key or a URL.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub completions: IntCounterVec,
    pub upstream_attempts: IntCounterVec,
    pub tokens: IntCounterVec,
    pub live_streams: IntGauge,
    pub limit_refusals: IntCounterVec,
    /// Plan-limit checks by where they were decided: `lease`, `lease-after-wait` (for a top-up), `redis`.
    pub limit_checks: IntCounterVec,
    pub cache: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let completions = IntCounterVec::new(
            Opts::new("chat_completions_total", "Completions by provider, model and outcome"),
            &["provider", "model", "outcome"],
        )?;
        let upstream_attempts = IntCounterVec::new(
            Opts::new("chat_upstream_attempts_total", "Calls to providers by provider and result"),
            &["provider", "result"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new("chat_tokens_total", "Tokens used by provider, model and direction"),
            &["provider", "model", "direction"],
        )?;
        let live_streams = IntGauge::new("chat_live_streams", "Streams being answered right now")?;
        let limit_refusals =
            IntCounterVec::new(Opts::new("chat_limit_refusals_total", "Requests refused by a plan limit"), &["limit"])?;
        let limit_checks = IntCounterVec::new(
            Opts::new("chat_limit_checks_total", "Plan-limit checks by where they were decided (lease or Redis)"),
            &["decided"],
        )?;
        let cache = IntCounterVec::new(Opts::new("chat_response_cache_total", "Response cache lookups"), &["result"])?;
        registry.register(Box::new(completions.clone()))?;
        registry.register(Box::new(upstream_attempts.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(live_streams.clone()))?;
        registry.register(Box::new(limit_refusals.clone()))?;
        registry.register(Box::new(limit_checks.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        Ok(Metrics { completions, upstream_attempts, tokens, live_streams, limit_refusals, limit_checks, cache })
    }
}
