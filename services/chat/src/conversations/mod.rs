//! Conversations over HTTP: create, list (paginated, searchable by title and text), read (whole, or its
//! messages a page at a time), rename or switch model, delete, send a message (the answer streams back as SSE;
//! it may replace the last message and its answer), stop the answer, attach to it from another connection. Every
//! route finds conversations by the caller's user id and the path's id together: another user's id is 404.

pub mod live;
pub mod reply;
pub mod store;
pub mod title;

use std::convert::Infallible;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use futures::stream;
use saaschat_platform::Problem;
use saaschat_platform::auth::{ChatScope, Scoped};
use saaschat_platform::problem::Json;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use self::reply::{NewMessage, internal, not_found};
use self::store::Cursor;
use crate::state::AppState;
use crate::streaming::channels::broadcast_stream;
use crate::streaming::{events, sse};

pub const MAX_TITLE_CHARS: usize = 200;
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;
const DEFAULT_MESSAGE_PAGE: i64 = 50;
const MAX_MESSAGE_PAGE: i64 = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations", post(create).get(list))
        .route("/v1/conversations/{id}", get(read).patch(update).delete(delete))
        .route("/v1/conversations/{id}/messages", post(send).get(messages))
        .route("/v1/conversations/{id}/stop", post(stop))
        .route("/v1/conversations/{id}/stream", get(attach))
}

/// Conversation ids in paths: anything but a UUID is a 404 like an id that does not exist.
fn conversation_id(text: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(text).map_err(|_| not_found())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewConversation {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system_prompt: Option<String>,
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::typed(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", "The request body is not valid")
        .with_detail(detail)
}

fn check_title(title: &str) -> Result<&str, Problem> {
    let title = title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Err(invalid(format!("title must have 1 to {MAX_TITLE_CHARS} characters")));
    }
    Ok(title)
}

async fn create(
    State(state): State<AppState>,
    user: Scoped<ChatScope>,
    Json(body): Json<NewConversation>,
) -> Result<Response, Problem> {
    let catalog = state.gateway.catalog.current();
    let model = body.model.unwrap_or_else(|| catalog.default_model.clone());
    crate::resilience::fallback::candidates(&catalog, &model)
        .map_err(|error| Problem::from(crate::gateway::GatewayError::from(error)))?;
    let title = body.title.as_deref().map(check_title).transpose()?;
    if body.system_prompt.as_ref().is_some_and(|prompt| prompt.chars().count() > reply::MAX_MESSAGE_CHARS) {
        return Err(invalid(format!("systemPrompt must be at most {} characters", reply::MAX_MESSAGE_CHARS)));
    }
    let conversation =
        state.store.create(&user.user_id, title, &model, body.system_prompt.as_deref()).await.map_err(internal)?;
    Ok((StatusCode::CREATED, Json(conversation)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
    /// Only conversations whose title or messages contain this text.
    #[serde(default)]
    q: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    user: Scoped<ChatScope>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let after = match query.cursor.as_deref() {
        Some(text) => {
            Some(Cursor::decode(text).ok_or_else(|| Problem::bad_request("cursor is not one this service gave out"))?)
        }
        None => None,
    };
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let mut items = state.store.list(&user.user_id, search, after, limit + 1).await.map_err(internal)?;
    let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next =
        if more { items.last().map(|last| Cursor { updated_at: last.updated_at, id: last.id }.encode()) } else { None };
    Ok(Json(json!({ "items": items, "nextCursor": next })).into_response())
}

async fn read(
    State(state): State<AppState>,
    user: Scoped<ChatScope>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = conversation_id(&id)?;
    let conversation = state.store.get(&user.user_id, id).await.map_err(internal)?.ok_or_else(not_found)?;
    let messages = state.store.messages(&user.user_id, id).await.map_err(internal)?;
    let answering = state.live.get(id, &user.user_id).is_some();
    let mut body = serde_json::to_value(conversation).map_err(|error| Problem::internal(&error))?;
    body["messages"] = json!(messages);
    body["answering"] = json!(answering);
    Ok(Json(body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    #[serde(default)]
    title: Option<String>,
    /// The model of the answers from now on; it must be allowed by the plan.
    #[serde(default)]
    model: Option<String>,
}

async fn update(
    State(state): State<AppState>,
    user: Scoped<ChatScope>,
    Path(id): Path<String>,
    Json(body): Json<Update>,
) -> Result<Response, Problem> {
    let id = conversation_id(&id)?;
    if body.title.is_none() && body.model.is_none() {
        return Err(invalid("give a title, a model, or both"));
    }
    let title = body.title.as_deref().map(check_title).transpose()?;
    if let Some(model) = &body.model {
        crate::resilience::fallback::candidates(&state.gateway.catalog.current(), model)
            .map_err(|error| Problem::from(crate::gateway::GatewayError::from(error)))?;
    }
    let conversation = state
        .store
        .update(&user.user_id, id, title, body.model.as_deref())
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    Ok(Json(conversation).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    #[serde(default)]
    limit: Option<i64>,
    /// A message id: the page ends just before it.
    #[serde(default)]
    before: Option<String>,
}

/// The newest messages (or those before `before`), oldest first, and the cursor of the page before them:
/// a long conversation opens with its end, and older messages load as the reader scrolls up.
async fn messages(
    State(state): State<AppState>,
    user: Scoped<ChatScope>,
    Path(id): Path<String>,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let id = conversation_id(&id)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_MESSAGE_PAGE);
    if !(1..=MAX_MESSAGE_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!("limit must be between 1 and {MAX_MESSAGE_PAGE}")));
    }
    let before = match query.before.as_deref() {
        Some(text) => Some(Uuid::try_parse(text).map_err(|_| Problem::bad_request("before must be a message id"))?),
        None => None,
    };
    state.store.get(&user.user_id, id).await.map_err(internal)?.ok_or_else(not_found)?;
    let mut items = state.store.messages_page(&user.user_id, id, before, limit + 1).await.map_err(internal)?;
    let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    if more {
        items.remove(0);
    }
    let previous = if more { items.first().map(|first| first.id.to_string()) } else { None };
    Ok(Json(json!({ "items": items, "previousCursor": previous })).into_response())
}

async fn delete(
    State(state): State<AppState>,
    user: Scoped<ChatScope>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = conversation_id(&id)?;
    if let Some(entry) = state.live.get(id, &user.user_id) {
        entry.stop.stop();
    }
    if !state.store.delete(&user.user_id, id).await.map_err(internal)? {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn send(
    State(state): State<AppState>,
    user: Scoped<ChatScope>,
    Path(id): Path<String>,
    Json(body): Json<NewMessage>,
) -> Result<Response, Problem> {
    let id = conversation_id(&id)?;
    let started = reply::start_reply(&state, &user, id, body).await?;
    let (conversation_id, message_id) = (started.conversation_id, started.message_id);
    let (name, data) = events::start(conversation_id, started.user_message_id, message_id, &started.served);
    let head = stream::iter([Ok::<Event, Infallible>(sse::event(name, &data))]);
    let body = started.relay.into_stream().filter_map(move |message| async move {
        events::frame(conversation_id, message_id, &message).map(|(name, data)| Ok(sse::event(name, &data)))
    });
    Ok(sse::response(head.chain(body), state.streaming.keep_alive))
}

async fn stop(
    State(state): State<AppState>,
    user: Scoped<ChatScope>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = conversation_id(&id)?;
    reply::stop(&state, &user, id).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn attach(
    State(state): State<AppState>,
    user: Scoped<ChatScope>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = conversation_id(&id)?;
    let (message_id, attached) = reply::attach(&state, &user, id).await?;
    let mut head = vec![Ok::<Event, Infallible>(sse::event(
        "attached",
        &json!({ "conversationId": id, "messageId": message_id }),
    ))];
    if !attached.text.is_empty() {
        let (name, data) = events::delta(id, &attached.text);
        head.push(Ok(sse::event(name, &data)));
    }
    let body = match attached.outcome {
        Some(outcome) => {
            let (name, data) = events::end(id, message_id, &outcome);
            head.push(Ok(sse::event(name, &data)));
            stream::empty().boxed()
        }
        None => broadcast_stream(attached.events)
            .filter_map(move |message| async move {
                events::frame(id, message_id, &message).map(|(name, data)| Ok(sse::event(name, &data)))
            })
            .boxed(),
    };
    Ok(sse::response(stream::iter(head).chain(body), state.streaming.keep_alive))
}
