//! The chat service: conversations and messages in PostgreSQL, answers streamed over SSE and WebSocket from
//! five kinds of provider, an OpenAI-compatible API for tenants' own tools, usage recorded per completion and
//! plan limits enforced before any provider is called.
//!
//! | folder | concern |
//! |---|---|
//! | [`providers`] | one provider interface, the unified event and error model, the OpenAI, Anthropic and Gemini wire formats, SSE decoding, the upstream HTTP client |
//! | [`resilience`] | retry with backoff, fallback order, circuit breakers, timeouts |
//! | [`gateway`] | one completion from admission to settlement, for every transport |
//! | [`limits`] | requests per minute and tokens per month, reserved atomically in Redis |
//! | [`usage`] | costs, the `usage_events` rows billing reads, and the month's usage report |
//! | [`conversations`] | the conversation routes, their store, live answers |
//! | [`streaming`] | SSE responses and the WebSocket |
//! | [`openai_api`] | `/v1/chat/completions` and `/v1/models` |
//! | [`catalog`] | what the tenant configuration means for chat, reloaded on change |
//! | [`cache`] | the opt-in exact-match response cache |

// `Problem` (the platform's RFC 9457 response, with its headers) is the error of the request paths; it is built
// only on refusals, so boxing it would add noise without saving anything that matters.
#![allow(clippy::result_large_err)]

pub mod cache;
pub mod catalog;
pub mod conversations;
pub mod gateway;
pub mod limits;
pub mod metrics;
pub mod openai_api;
pub mod providers;
pub mod resilience;
pub mod service;
pub mod state;
pub mod streaming;
pub mod tracker;
pub mod usage;

use axum::Router;
use axum::routing::get;

pub use state::{AppState, StreamingSettings};

/// The service's own routes (the platform's router builder adds health, metrics and middleware).
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(conversations::routes())
        .merge(openai_api::routes())
        .merge(usage::report::routes())
        .route("/v1/ws", get(streaming::ws::upgrade))
        .with_state(state)
}
