//! Answering in a conversation, for SSE and WebSocket alike: validate, claim the conversation, admit (limits),
//! open the provider stream, then persist the user's message and drive the stream; the answer is persisted
//! when it settles, whether it completed, was stopped, or failed mid-way. A refusal at any step before the
//! stream opens changes nothing.

use std::sync::Arc;

use axum::http::StatusCode;
use saaschat_platform::Problem;
use saaschat_platform::auth::Authenticated;
use serde::Deserialize;
use uuid::Uuid;

use super::live::{Attached, LiveEntry};
use super::store::NewAssistantMessage;
use super::title::title_from;
use crate::gateway::{Observer, Outcome, OutcomeStatus, Relay, Served, SettleHook};
use crate::providers::{ChatMessage, CompletionRequest, Role};
use crate::state::AppState;

pub const MAX_MESSAGE_CHARS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMessage {
    pub content: String,
    /// Another allowed model for this answer; the conversation's model otherwise.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

pub fn validate(message: &NewMessage) -> Result<(), Problem> {
    let invalid = |detail: &str| {
        Problem::typed(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", "The request body is not valid")
            .with_detail(detail.to_string())
    };
    if message.content.trim().is_empty() {
        return Err(invalid("content must not be empty"));
    }
    if message.content.chars().count() > MAX_MESSAGE_CHARS {
        return Err(invalid(&format!("content must be at most {MAX_MESSAGE_CHARS} characters")));
    }
    if message.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(invalid("temperature must be between 0 and 2"));
    }
    if message.max_tokens == Some(0) {
        return Err(invalid("maxTokens must be at least 1"));
    }
    Ok(())
}

pub fn internal(error: sqlx::Error) -> Problem {
    Problem::internal(&error)
}

pub fn not_found() -> Problem {
    Problem::typed(StatusCode::NOT_FOUND, "conversation-not-found", "Conversation not found")
        .with_detail("no conversation with this id belongs to you")
}

pub struct StartedReply {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub served: Served,
    pub relay: Relay,
}

pub async fn start_reply(
    state: &AppState,
    user: &Authenticated,
    conversation_id: Uuid,
    message: NewMessage,
) -> Result<StartedReply, Problem> {
    validate(&message)?;
    let conversation =
        state.store.get(&user.user_id, conversation_id).await.map_err(internal)?.ok_or_else(not_found)?;
    let message_id = Uuid::now_v7();
    let entry = state.live.register(conversation_id, &user.user_id, message_id).ok_or_else(|| {
        Problem::typed(StatusCode::CONFLICT, "answer-in-progress", "An answer is already being generated")
            .with_detail("stop it or wait for it to end before sending another message")
    })?;
    let result = open(state, user, &conversation, message_id, &message, entry.clone()).await;
    if result.is_err() {
        state.live.remove(conversation_id);
    }
    result
}

async fn open(
    state: &AppState,
    user: &Authenticated,
    conversation: &super::store::Conversation,
    message_id: Uuid,
    message: &NewMessage,
    entry: Arc<LiveEntry>,
) -> Result<StartedReply, Problem> {
    let history = state.store.messages(&user.user_id, conversation.id).await.map_err(internal)?;
    let first_exchange = history.is_empty();
    let mut messages: Vec<ChatMessage> = history
        .iter()
        .filter(|stored| !(stored.role == "assistant" && stored.content.is_empty()))
        .map(|stored| {
            ChatMessage::text(if stored.role == "user" { Role::User } else { Role::Assistant }, stored.content.clone())
        })
        .collect();
    messages.push(ChatMessage::text(Role::User, message.content.clone()));
    let request = CompletionRequest {
        model: message.model.clone().unwrap_or_else(|| conversation.model.clone()),
        system: conversation.system_prompt.clone(),
        messages,
        temperature: message.temperature,
        top_p: None,
        max_tokens: message.max_tokens,
        stop: Vec::new(),
        tools: Vec::new(),
    };
    let admission = state.gateway.admit(&user.user_id, request).await.map_err(Problem::from)?;
    let open = state.gateway.open_stream(admission).await.map_err(Problem::from)?;
    if !state.store.add_user_message(&user.user_id, conversation.id, &message.content).await.map_err(internal)? {
        return Err(not_found());
    }
    let served = open.served.clone();
    let hook = persist_hook(
        state,
        &user.user_id,
        conversation.id,
        message_id,
        first_exchange.then(|| message.content.clone()),
    );
    let observer: Arc<dyn Observer> = entry.clone();
    let relay = state.gateway.relay(open, Some(&entry.stop), Some(observer), Some(hook));
    Ok(StartedReply { conversation_id: conversation.id, message_id, served, relay })
}

fn status_name(status: &OutcomeStatus) -> &'static str {
    match status {
        OutcomeStatus::Complete => "complete",
        OutcomeStatus::Stopped(_) => "stopped",
        OutcomeStatus::Failed(_) => "failed",
    }
}

/// Persists the answer (and the title, after the first exchange) and frees the conversation.
fn persist_hook(
    state: &AppState,
    user_id: &str,
    conversation_id: Uuid,
    message_id: Uuid,
    first_message: Option<String>,
) -> SettleHook {
    let (store, live, user_id) = (state.store.clone(), state.live.clone(), user_id.to_string());
    Box::new(move |mut outcome: Outcome| {
        Box::pin(async move {
            let title = first_message.as_deref().map(|first| title_from(first, &outcome.text));
            let to_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            let message = NewAssistantMessage {
                id: message_id,
                content: &outcome.text,
                status: status_name(&outcome.status),
                model: &outcome.served.offer.name,
                provider: &outcome.served.provider,
                input_tokens: to_i64(outcome.usage.input_tokens),
                output_tokens: to_i64(outcome.usage.output_tokens),
            };
            match store.add_answer(&user_id, conversation_id, message, title.as_deref()).await {
                Ok(title) => outcome.conversation_title = title,
                Err(error) => tracing::error!(%error, %conversation_id, "the answer could not be saved"),
            }
            live.remove(conversation_id);
            outcome
        })
    })
}

/// The caller's answer being generated in this conversation, to follow it from another connection.
pub async fn attach(
    state: &AppState,
    user: &Authenticated,
    conversation_id: Uuid,
) -> Result<(Uuid, Attached), Problem> {
    state.store.get(&user.user_id, conversation_id).await.map_err(internal)?.ok_or_else(not_found)?;
    let entry = state.live.get(conversation_id, &user.user_id).ok_or_else(no_live_answer)?;
    Ok((entry.message_id, entry.attach()))
}

pub async fn stop(state: &AppState, user: &Authenticated, conversation_id: Uuid) -> Result<(), Problem> {
    state.store.get(&user.user_id, conversation_id).await.map_err(internal)?.ok_or_else(not_found)?;
    let entry = state.live.get(conversation_id, &user.user_id).ok_or_else(no_live_answer)?;
    entry.stop.stop();
    Ok(())
}

fn no_live_answer() -> Problem {
    Problem::typed(StatusCode::CONFLICT, "no-answer-in-progress", "No answer is being generated")
        .with_detail("this conversation has no answer in progress")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(content: &str) -> NewMessage {
        NewMessage { content: content.into(), model: None, temperature: None, max_tokens: None }
    }

    #[test]
    fn messages_are_validated_with_reasons() {
        assert!(validate(&message("Hi")).is_ok());
        assert_eq!(validate(&message("  ")).expect_err("empty").detail.as_deref(), Some("content must not be empty"));
        assert!(validate(&message(&"x".repeat(MAX_MESSAGE_CHARS + 1))).is_err());
        assert!(validate(&NewMessage { temperature: Some(2.5), ..message("Hi") }).is_err());
        assert!(validate(&NewMessage { max_tokens: Some(0), ..message("Hi") }).is_err());
    }
}
