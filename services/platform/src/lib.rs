//! The service platform every saaschat service stands on.
//!
//! | module | what it gives a service |
//! |---|---|
//! | [`config`] | typed settings from the environment the operator writes and the tenant file it mounts |
//! | [`secret`] | a wrapper that keeps secret values out of `Debug` output, logs and errors |
//! | [`problem`] | RFC 9457 problem responses and the mapping of every bad-input rejection to one |
//! | [`http`] | the router builder: `/healthz`, `/readyz`, `/metrics`, limits, timeouts, tracing, graceful shutdown |
//! | [`db`] | the PostgreSQL pool and migrations under an advisory lock |
//! | [`email`] | the email request that outboxes append to the Redis stream the email worker consumes |
//! | [`outbox`] | the transactional outbox and the relay that publishes it to the email stream |
//! | [`redis`] | the Redis connection manager and its readiness probe |
//! | [`auth`] | JWT (EdDSA) verification against the auth service's JWKS and the `Authenticated` extractor |
//! | [`telemetry`] | JSON logs, OTLP trace export, errors and panics to Sentry, and the guard `main` keeps |
//!
//! Inside each module, deciding (pure functions, exhaustively unit-tested) is kept apart from doing (I/O,
//! covered by the integration tests in `tests/`).

pub mod auth;
pub mod config;
pub mod db;
pub mod email;
pub mod http;
pub mod outbox;
pub mod problem;
pub mod redis;
pub mod secret;
pub mod telemetry;

pub use problem::Problem;
pub use secret::Secret;
