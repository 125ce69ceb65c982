//! The events of a conversation's answer, as JSON, shared by SSE (`event:` name + `data:`) and WebSocket
//! (`type` + the same fields).

use serde_json::{Value, json};
use uuid::Uuid;

use crate::gateway::error::provider_problem;
use crate::gateway::{Outcome, OutcomeStatus, Served, StopReason, StreamMessage};
use crate::providers::ProviderEvent;

/// The first event of an answer: `userMessageId` is the stored user message (what an edit replaces),
/// `messageId` the answer's.
pub fn start(conversation_id: Uuid, user_message_id: Uuid, message_id: Uuid, served: &Served) -> (&'static str, Value) {
    (
        "start",
        json!({
            "conversationId": conversation_id, "userMessageId": user_message_id, "messageId": message_id,
            "provider": served.provider, "model": served.offer.name,
        }),
    )
}

pub fn delta(conversation_id: Uuid, text: &str) -> (&'static str, Value) {
    ("delta", json!({ "conversationId": conversation_id, "text": text }))
}

pub fn end(conversation_id: Uuid, message_id: Uuid, outcome: &Outcome) -> (&'static str, Value) {
    let (status, stop_reason, error) = match &outcome.status {
        OutcomeStatus::Complete => ("complete", None, None),
        OutcomeStatus::Stopped(reason) => {
            let reason = match reason {
                StopReason::Requested => "requested",
                StopReason::Disconnected => "disconnected",
                StopReason::Shutdown => "shutdown",
            };
            ("stopped", Some(reason), None)
        }
        OutcomeStatus::Failed(error) => ("failed", None, serde_json::to_value(provider_problem(error)).ok()),
    };
    let mut body = json!({
        "conversationId": conversation_id, "messageId": message_id, "status": status,
        "finishReason": outcome.finish_reason.as_ref().map(|reason| reason.as_openai().to_string()),
        "provider": outcome.served.provider, "model": outcome.served.offer.name,
        "usage": { "inputTokens": outcome.usage.input_tokens, "outputTokens": outcome.usage.output_tokens },
    });
    if let Some(reason) = stop_reason {
        body["stopReason"] = json!(reason);
    }
    if let Some(error) = error {
        body["error"] = error;
    }
    if let Some(title) = &outcome.conversation_title {
        body["title"] = json!(title);
    }
    ("end", body)
}

/// The frame for one message of the stream; tool-call fragments have none (conversations offer no tools).
pub fn frame(conversation_id: Uuid, message_id: Uuid, message: &StreamMessage) -> Option<(&'static str, Value)> {
    match message {
        StreamMessage::Event(ProviderEvent::Text(text)) => Some(delta(conversation_id, text)),
        StreamMessage::Event(_) => None,
        StreamMessage::Finished(outcome) => Some(end(conversation_id, message_id, outcome)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ModelOffer;
    use crate::providers::{FinishReason, ProviderError, Usage};
    use crate::usage::cost::Price;

    fn outcome(status: OutcomeStatus) -> Outcome {
        Outcome {
            status,
            finish_reason: Some(FinishReason::Stop),
            text: "Hi".into(),
            tool_calls: vec![],
            usage: Usage { input_tokens: 3, output_tokens: 1 },
            served: Served {
                provider: "openai".into(),
                offer: ModelOffer {
                    name: "gpt-4o-mini".into(),
                    input_price: Price::default(),
                    output_price: Price::default(),
                    context_window: None,
                },
            },
            conversation_title: Some("Hello".into()),
        }
    }

    #[test]
    fn end_events_say_how_the_answer_ended_and_what_it_used() {
        let (conversation, message) = (Uuid::now_v7(), Uuid::now_v7());
        let (name, body) = end(conversation, message, &outcome(OutcomeStatus::Stopped(StopReason::Requested)));
        assert_eq!(name, "end");
        assert_eq!(body["status"], "stopped");
        assert_eq!(body["stopReason"], "requested");
        assert_eq!(body["usage"], json!({"inputTokens": 3, "outputTokens": 1}));
        assert_eq!(body["title"], "Hello");
        let (_, body) = end(
            conversation,
            message,
            &outcome(OutcomeStatus::Failed(ProviderError::Overloaded { retry_after: None })),
        );
        assert_eq!(body["status"], "failed");
        assert_eq!(body["error"]["status"], 503);
        assert!(frame(conversation, message, &StreamMessage::Event(ProviderEvent::Usage(Usage::default()))).is_none());
    }
}
