//! How the auth service's failures become responses: expected refusals are problems with a precise detail;
//! failures of the database, the hasher or the keys are logged and answered with a bare 500 or 503.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use saaschat_platform::Problem;

use crate::keys::KeyError;
use crate::passwords::{HashError, PasswordRejected};
use crate::rate_limit::Limited;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    /// Boxed: a problem is large, and results of it travel through every handler.
    Refused(Box<Problem>),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("password hashing: {0}")]
    Hash(#[from] HashError),
    #[error("signing: {0}")]
    Keys(#[from] KeyError),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> ApiError {
        ApiError::Refused(Box::new(problem))
    }
}

impl From<PasswordRejected> for ApiError {
    fn from(rejected: PasswordRejected) -> ApiError {
        ApiError::from(
            Problem::typed(StatusCode::UNPROCESSABLE_ENTITY, "weak-password", "The password is not acceptable")
                .with_detail(rejected.to_string()),
        )
    }
}

impl From<Limited> for ApiError {
    fn from(limited: Limited) -> ApiError {
        let seconds = limited.retry_after.as_secs_f64().ceil() as u64;
        ApiError::from(
            Problem::typed(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many attempts")
                .with_detail(format!("limit reached: {}; retry in {seconds} s", limited.limit))
                .with_extension("limit", limited.limit)
                .with_extension("retryAfterSeconds", seconds)
                .with_header(RETRY_AFTER, HeaderValue::from(seconds)),
        )
    }
}

/// Shorthands for the refusals handlers use.
pub fn unprocessable(slug: &str, title: &str, detail: impl Into<String>) -> ApiError {
    ApiError::from(Problem::typed(StatusCode::UNPROCESSABLE_ENTITY, slug, title).with_detail(detail))
}

pub fn conflict(slug: &str, title: &str, detail: impl Into<String>) -> ApiError {
    ApiError::from(Problem::typed(StatusCode::CONFLICT, slug, title).with_detail(detail))
}

pub fn forbidden(detail: impl Into<String>) -> ApiError {
    ApiError::from(Problem::forbidden(detail))
}

pub fn unauthorized(detail: impl Into<String>) -> ApiError {
    ApiError::from(Problem::unauthorized(detail))
}

pub fn not_found() -> ApiError {
    ApiError::from(Problem::not_found())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Refused(problem) => problem.into_response(),
            ApiError::Database(sqlx::Error::PoolTimedOut) => {
                tracing::warn!("no database connection available in time");
                Problem::typed(StatusCode::SERVICE_UNAVAILABLE, "database-busy", "Try again shortly").into_response()
            }
            error => Problem::internal(&error).into_response(),
        }
    }
}
