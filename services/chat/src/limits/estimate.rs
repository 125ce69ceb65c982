//! Token estimates for reservations and for streams that stop before the provider reports usage. About four
//! characters per token for English text, rounded up, plus the few tokens each message costs in framing.

use crate::providers::{CompletionRequest, Usage};

/// Reserved for the answer when the caller sets no `max_tokens`.
pub const DEFAULT_OUTPUT_RESERVATION: u64 = 1024;
const TOKENS_PER_MESSAGE: u64 = 4;

pub fn text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

pub fn input_tokens(request: &CompletionRequest) -> u64 {
    let system = request.system.as_deref().map_or(0, |system| text_tokens(system) + TOKENS_PER_MESSAGE);
    let messages: u64 = request
        .messages
        .iter()
        .map(|message| {
            let calls: u64 =
                message.tool_calls.iter().map(|call| text_tokens(&call.name) + text_tokens(&call.arguments)).sum();
            text_tokens(&message.content) + calls + TOKENS_PER_MESSAGE
        })
        .sum();
    let tools: u64 =
        request.tools.iter().map(|tool| text_tokens(&tool.name) + text_tokens(&tool.parameters.to_string())).sum();
    system + messages + tools
}

/// What a request may use at most, for the reservation.
pub fn reservation(request: &CompletionRequest) -> u64 {
    input_tokens(request) + request.max_tokens.map_or(DEFAULT_OUTPUT_RESERVATION, u64::from)
}

/// The usage to record: the provider's figures where it gave them, estimates where it did not (a stream
/// stopped before its usage arrived). Output is never counted lower than the text already produced.
pub fn settle_usage(request: &CompletionRequest, reported: Option<Usage>, produced: &str) -> Usage {
    let produced_tokens = text_tokens(produced);
    match reported {
        Some(usage) => Usage {
            input_tokens: if usage.input_tokens > 0 { usage.input_tokens } else { input_tokens(request) },
            output_tokens: usage.output_tokens.max(produced_tokens),
        },
        None => Usage { input_tokens: input_tokens(request), output_tokens: produced_tokens },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{ChatMessage, Role};

    fn request(max_tokens: Option<u32>) -> CompletionRequest {
        CompletionRequest {
            model: "m".into(),
            system: Some("12345678".into()),
            messages: vec![ChatMessage::text(Role::User, "123456789")],
            temperature: None,
            top_p: None,
            max_tokens,
            stop: vec![],
            tools: vec![],
        }
    }

    #[test]
    fn estimates_round_up_and_count_framing() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("éééé"), 1);
        assert_eq!(input_tokens(&request(None)), (2 + 4) + (3 + 4));
        assert_eq!(reservation(&request(Some(100))), 13 + 100);
        assert_eq!(reservation(&request(None)), 13 + DEFAULT_OUTPUT_RESERVATION);
    }

    #[test]
    fn reported_usage_wins_and_stopped_streams_are_estimated() {
        let request = request(None);
        let reported = Usage { input_tokens: 20, output_tokens: 50 };
        assert_eq!(settle_usage(&request, Some(reported), "abcd"), reported);
        // Anthropic's message_start reports input and 1 output token; the stream then stopped after 40 chars.
        let early = Usage { input_tokens: 20, output_tokens: 1 };
        assert_eq!(settle_usage(&request, Some(early), &"x".repeat(40)), Usage { input_tokens: 20, output_tokens: 10 });
        assert_eq!(settle_usage(&request, None, "abcdefgh"), Usage { input_tokens: 13, output_tokens: 2 });
    }
}
