//! `/healthz` (the process is alive) and `/readyz` (every readiness probe answers in time, and the process is
//! not shutting down).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::task::JoinSet;

use super::shutdown::ShutdownSignal;
use crate::problem::Problem;

pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// A dependency that must answer for the service to be ready (PostgreSQL `SELECT 1`, Redis `PING`).
pub trait ReadinessProbe: Send + Sync + 'static {
    /// A short name for the readiness report (`postgres`).
    fn name(&self) -> &str;
    /// Checks the dependency once. The error is logged, not shown to callers.
    fn check(&self) -> ProbeFuture<'_>;
}

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Ok,
    Failed(String),
    TimedOut,
}

impl ProbeOutcome {
    fn label(&self) -> &'static str {
        match self {
            ProbeOutcome::Ok => "ok",
            ProbeOutcome::Failed(_) => "failed",
            ProbeOutcome::TimedOut => "timed out",
        }
    }
}

/// Decides the readiness answer from the probes' outcomes.
pub fn readiness_response(outcomes: &BTreeMap<String, ProbeOutcome>, shutting_down: bool) -> Response {
    let checks: serde_json::Map<String, serde_json::Value> =
        outcomes.iter().map(|(name, outcome)| (name.clone(), outcome.label().into())).collect();
    let failing: Vec<&str> =
        outcomes.iter().filter(|(_, outcome)| **outcome != ProbeOutcome::Ok).map(|(name, _)| name.as_str()).collect();
    if shutting_down {
        return Problem::typed(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Service not ready")
            .with_detail("shutting down")
            .with_extension("checks", checks)
            .into_response();
    }
    if !failing.is_empty() {
        return Problem::typed(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Service not ready")
            .with_detail(format!("unavailable: {}", failing.join(", ")))
            .with_extension("checks", checks)
            .into_response();
    }
    (StatusCode::OK, Json(json!({ "status": "ready", "checks": checks }))).into_response()
}

#[derive(Clone)]
pub(crate) struct Readiness {
    pub probes: Vec<Arc<dyn ReadinessProbe>>,
    pub timeout: Duration,
    pub shutdown: ShutdownSignal,
}

impl Readiness {
    /// Runs every probe at once, each within the timeout.
    pub async fn check(&self) -> BTreeMap<String, ProbeOutcome> {
        let mut tasks = JoinSet::new();
        for probe in &self.probes {
            let (probe, timeout) = (probe.clone(), self.timeout);
            tasks.spawn(async move {
                let outcome = match tokio::time::timeout(timeout, probe.check()).await {
                    Ok(Ok(())) => ProbeOutcome::Ok,
                    Ok(Err(error)) => ProbeOutcome::Failed(error),
                    Err(_) => ProbeOutcome::TimedOut,
                };
                (probe.name().to_string(), outcome)
            });
        }
        let mut outcomes = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((name, outcome)) = joined {
                match &outcome {
                    ProbeOutcome::Failed(error) => tracing::warn!(probe = %name, %error, "readiness probe failed"),
                    ProbeOutcome::TimedOut => tracing::warn!(probe = %name, "readiness probe timed out"),
                    ProbeOutcome::Ok => {}
                }
                outcomes.insert(name, outcome);
            }
        }
        outcomes
    }
}

pub(crate) async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({ "status": "alive" }))).into_response()
}

pub(crate) async fn readyz(State(readiness): State<Readiness>) -> Response {
    let outcomes = readiness.check().await;
    readiness_response(&outcomes, readiness.shutdown.is_triggered())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::read_problem;

    fn outcomes(list: &[(&str, ProbeOutcome)]) -> BTreeMap<String, ProbeOutcome> {
        list.iter().map(|(name, outcome)| (name.to_string(), outcome.clone())).collect()
    }

    #[tokio::test]
    async fn ready_when_every_probe_is_ok() {
        let response =
            readiness_response(&outcomes(&[("postgres", ProbeOutcome::Ok), ("redis", ProbeOutcome::Ok)]), false);
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn not_ready_names_the_failing_probes_but_not_their_errors() {
        let response = readiness_response(
            &outcomes(&[
                ("postgres", ProbeOutcome::Failed("password authentication failed".into())),
                ("redis", ProbeOutcome::TimedOut),
                ("stripe", ProbeOutcome::Ok),
            ]),
            false,
        );
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let problem = read_problem(response.into_body()).await.expect("problem");
        assert_eq!(problem.detail.as_deref(), Some("unavailable: postgres, redis"));
        assert_eq!(problem.extensions["checks"], json!({"postgres": "failed", "redis": "timed out", "stripe": "ok"}));
    }

    #[tokio::test]
    async fn not_ready_while_shutting_down() {
        let response = readiness_response(&outcomes(&[("postgres", ProbeOutcome::Ok)]), true);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let problem = read_problem(response.into_body()).await.expect("problem");
        assert_eq!(problem.detail.as_deref(), Some("shutting down"));
    }

    struct Slow;
    impl ReadinessProbe for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn check(&self) -> ProbeFuture<'_> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn a_hanging_probe_times_out() {
        let readiness = Readiness {
            probes: vec![Arc::new(Slow)],
            timeout: Duration::from_millis(50),
            shutdown: super::super::Shutdown::new().signal(),
        };
        assert_eq!(readiness.check().await, outcomes(&[("slow", ProbeOutcome::TimedOut)]));
    }
}
