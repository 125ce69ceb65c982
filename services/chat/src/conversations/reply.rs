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
    /// The id of the conversation's last user message, to replace it and its answer with this message: an
    /// edited message, or (with the same content) the answer asked for again. The replaced messages are deleted
    /// only once the new answer has started; a refusal before that changes nothing.
    #[serde(default)]
    pub replaces: Option<Uuid>,
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
    /// The user's message, as stored.
    pub user_message_id: Uuid,
    /// The answer, stored when it settles.
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
    let mut history = state.store.messages(&user.user_id, conversation.id).await.map_err(internal)?;
    if let Some(replaced) = message.replaces {
        history.truncate(replaced_from(&history, replaced)?);
    }
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
    let user_message_id = Uuid::now_v7();
    let stored = state
        .store
        .add_user_message(&user.user_id, conversation.id, user_message_id, &message.content, message.replaces)
        .await
        .map_err(internal)?;
    if !stored {
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
    Ok(StartedReply { conversation_id: conversation.id, user_message_id, message_id, served, relay })
}

/// Where the history is cut for a message that replaces `replaced`: only the last user message can be
/// replaced (with its answer), so that no later exchange is lost.
fn replaced_from(history: &[super::store::Message], replaced: Uuid) -> Result<usize, Problem> {
    let last_user = history.iter().rposition(|message| message.role == "user");
    match last_user {
        Some(index) if history[index].id == replaced => Ok(index),
        _ => {
            Err(Problem::typed(StatusCode::CONFLICT, "not-last-user-message", "Only the last message can be replaced")
                .with_detail(
                    "replaces must be the id of the conversation's last user message; reload the conversation",
                ))
        }
    }
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
        NewMessage { content: content.into(), model: None, temperature: None, max_tokens: None, replaces: None }
    }

    #[test]
    fn messages_are_validated_with_reasons() {
        assert!(validate(&message("Hi")).is_ok());
        assert_eq!(validate(&message("  ")).expect_err("empty").detail.as_deref(), Some("content must not be empty"));
        assert!(validate(&message(&"x".repeat(MAX_MESSAGE_CHARS + 1))).is_err());
        assert!(validate(&NewMessage { temperature: Some(2.5), ..message("Hi") }).is_err());
        assert!(validate(&NewMessage { max_tokens: Some(0), ..message("Hi") }).is_err());
    }

    fn stored(role: &str) -> super::super::store::Message {
        super::super::store::Message {
            id: Uuid::now_v7(),
            role: role.into(),
            content: "text".into(),
            status: "complete".into(),
            model: None,
            provider: None,
            input_tokens: None,
            output_tokens: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn only_the_last_user_message_can_be_replaced() {
        let history = [stored("user"), stored("assistant"), stored("user"), stored("assistant")];
        assert_eq!(replaced_from(&history, history[2].id).expect("last user message"), 2);
        for other in [history[0].id, history[1].id, history[3].id, Uuid::now_v7()] {
            let problem = replaced_from(&history, other).expect_err("refused");
            assert_eq!(problem.status, 409);
            assert!(problem.problem_type.ends_with("not-last-user-message"));
        }
        // An unanswered last message (its answer failed to open) can be replaced too.
        let unanswered = [stored("user"), stored("assistant"), stored("user")];
        assert_eq!(replaced_from(&unanswered, unanswered[2].id).expect("replaceable"), 2);
        assert!(replaced_from(&[], Uuid::now_v7()).is_err());
    }
}
