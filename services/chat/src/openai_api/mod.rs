//! The OpenAI-compatible API for tenants' own tools: `POST /v1/chat/completions` (whole or streamed, with
//! `stream_options.include_usage`) and `GET /v1/models`, authenticated with an API key or an access token,
//! routed to the tenant's allowed models through the same gateway (limits, fallback, usage) as the chat.
//! Errors are RFC 9457 problems that also carry the `error` member OpenAI clients read.

pub mod wire;

use std::convert::Infallible;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use futures::stream;
use saaschat_platform::Problem;
use saaschat_platform::auth::{ChatScope, ModelsScope, Scoped};
use saaschat_platform::problem::Json;
use serde_json::json;
use uuid::Uuid;

use self::wire::{ChatCompletionRequest, ChunkWriter, completion_json, error_member};
use crate::cache::{self, CachedAnswer};
use crate::gateway::error::provider_problem;
use crate::gateway::{OutcomeStatus, StopReason, StreamMessage};
use crate::limits::estimate;
use crate::state::AppState;
use crate::streaming::sse;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(chat_completions)).route("/v1/models", get(models))
}

/// A problem with the OpenAI `error` member beside its own members.
pub struct OpenAiError(pub Problem);

impl From<Problem> for OpenAiError {
    fn from(problem: Problem) -> OpenAiError {
        OpenAiError(problem)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let error = error_member(&self.0);
        self.0.with_extension("error", error).into_response()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn models(
    State(state): State<AppState>,
    user: Result<Scoped<ModelsScope>, Problem>,
) -> Result<Response, OpenAiError> {
    user?;
    let catalog = state.gateway.catalog.current();
    let data: Vec<_> = catalog
        .allowed_models()
        .into_iter()
        .map(|(model, upstream)| json!({ "id": model, "object": "model", "created": 0, "owned_by": upstream.name }))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })).into_response())
}

async fn chat_completions(
    State(state): State<AppState>,
    user: Result<Scoped<ChatScope>, Problem>,
    headers: HeaderMap,
    body: Result<Json<ChatCompletionRequest>, Problem>,
) -> Result<Response, OpenAiError> {
    let user = user?;
    let Json(body) = body?;
    let stream = body.stream;
    let include_usage = body.stream_options.as_ref().is_some_and(|options| options.include_usage);
    let request = wire::to_completion_request(body)?;
    let opted_in = headers
        .get(cache::OPT_IN_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("on"));
    let cache_key = cache::is_cacheable(&request, stream, opted_in)
        .then(|| cache::key(&state.gateway.catalog.current().tenant, &user.user_id, &request));
    let admission = state.gateway.admit(&user.user_id, request).await.map_err(Problem::from)?;
    let id = format!("chatcmpl-{}", Uuid::now_v7().simple());

    if let Some(key) = &cache_key {
        if let Some(cached) = state.cache.get(key).await {
            state.gateway.metrics.cache.with_label_values(&["hit"]).inc();
            state.gateway.release(admission).await;
            let usage = cached.completion.usage.unwrap_or_default();
            let mut response =
                Json(completion_json(&id, now(), &cached.model, &cached.completion, usage)).into_response();
            response.headers_mut().insert(cache::OPT_IN_HEADER, HeaderValue::from_static("hit"));
            return Ok(response);
        }
        state.gateway.metrics.cache.with_label_values(&["miss"]).inc();
    }

    if !stream {
        let request = admission.request.clone();
        let (completion, served) = state.gateway.complete(admission).await.map_err(Problem::from)?;
        let usage = estimate::settle_usage(&request, completion.usage, &completion.text);
        let mut response = Json(completion_json(&id, now(), &served.offer.name, &completion, usage)).into_response();
        if let Some(key) = &cache_key {
            let answer = CachedAnswer {
                completion: crate::providers::Completion { usage: Some(usage), ..completion },
                provider: served.provider,
                model: served.offer.name,
            };
            state.cache.put(key, &answer).await;
            response.headers_mut().insert(cache::OPT_IN_HEADER, HeaderValue::from_static("miss"));
        }
        return Ok(response);
    }

    let open = state.gateway.open_stream(admission).await.map_err(Problem::from)?;
    let writer = ChunkWriter { id, created: now(), model: open.served.offer.name.clone(), include_usage };
    let relay = state.gateway.relay(open, None, None, None);
    let head = stream::iter([Ok::<Event, Infallible>(Event::default().data(writer.role()))]);
    let body = relay.into_stream().flat_map(move |message| {
        let events: Vec<Result<Event, Infallible>> = match message {
            StreamMessage::Event(event) => {
                writer.event(&event).map(|chunk| Ok(Event::default().data(chunk))).into_iter().collect()
            }
            StreamMessage::Finished(outcome) => match &outcome.status {
                OutcomeStatus::Complete => {
                    let mut events = Vec::new();
                    if outcome.finish_reason.is_none() {
                        events.push(Ok(Event::default().data(
                            writer
                                .event(&crate::providers::ProviderEvent::Finished(crate::providers::FinishReason::Stop))
                                .unwrap_or_default(),
                        )));
                    }
                    if writer.include_usage {
                        events.push(Ok(Event::default().data(writer.usage(outcome.usage))));
                    }
                    events.push(Ok(Event::default().data("[DONE]")));
                    events
                }
                OutcomeStatus::Failed(error) => {
                    let problem = provider_problem(error);
                    vec![Ok(Event::default().data(json!({ "error": error_member(&problem) }).to_string()))]
                }
                OutcomeStatus::Stopped(StopReason::Shutdown) => {
                    let problem = Problem::typed(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "shutting-down",
                        "The service is shutting down",
                    )
                    .with_detail("the answer was cut short because the service is restarting; retry");
                    vec![Ok(Event::default().data(json!({ "error": error_member(&problem) }).to_string()))]
                }
                OutcomeStatus::Stopped(_) => Vec::new(),
            },
        };
        stream::iter(events)
    });
    Ok(sse::response(head.chain(body), state.streaming.keep_alive))
}
