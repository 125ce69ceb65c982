//! The gateway's refusals and failures as problem responses. Provider errors never carry a key or an
//! upstream URL (see [`ProviderError`]).

use axum::http::{HeaderValue, StatusCode};
use saaschat_platform::Problem;

use crate::limits::LimitError;
use crate::providers::ProviderError;
use crate::resilience::fallback::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl From<GatewayError> for Problem {
    fn from(error: GatewayError) -> Problem {
        match error {
            GatewayError::Model(ModelError::NotAllowed(model)) => {
                Problem::typed(StatusCode::FORBIDDEN, "model-not-allowed", "Model not allowed by the plan")
                    .with_detail(format!("the model {model:?} is not allowed by the tenant's plan"))
                    .with_extension("limit", "allowedModels")
            }
            GatewayError::Model(error @ ModelError::Unknown(_)) => {
                Problem::typed(StatusCode::NOT_FOUND, "unknown-model", "Unknown model").with_detail(error.to_string())
            }
            GatewayError::Limit(error) => Problem::from(error),
            GatewayError::Provider(error) => provider_problem(&error),
        }
    }
}

/// The status a caller sees for a provider failure once every candidate has been tried.
pub fn provider_problem(error: &ProviderError) -> Problem {
    let (status, slug, title) = match error {
        ProviderError::Throttled { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "provider-limit-reached", "The tenant's limit for the provider is reached")
        }
        ProviderError::RateLimited { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "provider-rate-limited", "The provider is rate limiting")
        }
        ProviderError::Overloaded { .. } | ProviderError::CircuitOpen | ProviderError::QuotaExhausted => {
            (StatusCode::SERVICE_UNAVAILABLE, "provider-unavailable", "The provider is unavailable")
        }
        ProviderError::ContextTooLong => {
            (StatusCode::BAD_REQUEST, "context-too-long", "The conversation is too long for the model")
        }
        ProviderError::InvalidRequest(_) => {
            (StatusCode::BAD_REQUEST, "provider-refused-request", "The provider refused the request")
        }
        ProviderError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "provider-timeout", "The provider timed out"),
        ProviderError::AuthenticationFailed
        | ProviderError::Upstream { .. }
        | ProviderError::Connection(_)
        | ProviderError::Stream(_)
        | ProviderError::Protocol(_) => (StatusCode::BAD_GATEWAY, "provider-error", "The provider failed"),
    };
    let mut problem =
        Problem::typed(status, slug, title).with_detail(error.to_string()).with_extension("reason", error.kind());
    if let ProviderError::Throttled { limit, .. } = error {
        problem = problem.with_extension("limit", *limit);
    }
    if let Some(wait) = error.retry_after() {
        problem = problem.with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
    }
    problem
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn provider_failures_map_to_statuses_a_client_can_act_on() {
        let problem = provider_problem(&ProviderError::RateLimited { retry_after: Some(Duration::from_secs(3)) });
        assert_eq!((problem.status, problem.headers[axum::http::header::RETRY_AFTER].to_str().ok()), (429, Some("3")));
        assert_eq!(provider_problem(&ProviderError::ContextTooLong).status, 400);
        assert_eq!(provider_problem(&ProviderError::Timeout(crate::providers::TimeoutPhase::Idle)).status, 504);
        assert_eq!(provider_problem(&ProviderError::Overloaded { retry_after: None }).status, 503);
        assert_eq!(provider_problem(&ProviderError::AuthenticationFailed).status, 502);
        let throttled = provider_problem(&ProviderError::Throttled {
            limit: "requestsPerMinute",
            retry_after: Some(Duration::from_millis(1500)),
        });
        assert_eq!((throttled.status, throttled.extensions["limit"].as_str()), (429, Some("requestsPerMinute")));
        assert_eq!(throttled.headers[axum::http::header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_model_outside_the_plan_names_the_limit() {
        let problem = Problem::from(GatewayError::Model(ModelError::NotAllowed("gpt-4o".into())));
        assert_eq!(problem.status, 403);
        assert_eq!(problem.extensions["limit"], "allowedModels");
    }
}
