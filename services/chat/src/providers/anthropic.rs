//! Anthropic Messages: `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`. The system prompt
//! is a top-level field and `max_tokens` is required. Streams are typed events (`message_start`, content
//! blocks, `message_delta`, `message_stop`, `ping`, `error`) and end without `[DONE]`.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Completion, CompletionRequest, Endpoint, FinishReason, Provider, ProviderError, ProviderEvent, Role, StreamDecoder,
    ToolCall, UpstreamRequest, Usage, classify_status, json_body, mentions_context_length, upstream_text,
};
use saaschat_platform::Secret;

pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; this is sent when the caller set none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

pub struct Anthropic;

pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

pub fn request_body(request: &CompletionRequest, stream: bool) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|message| match message.role {
            Role::User => json!({ "role": "user", "content": message.content }),
            Role::Assistant if message.tool_calls.is_empty() => {
                json!({ "role": "assistant", "content": message.content })
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !message.content.is_empty() {
                    blocks.push(json!({ "type": "text", "text": message.content }));
                }
                for call in &message.tool_calls {
                    let input: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": input }));
                }
                json!({ "role": "assistant", "content": blocks })
            }
            Role::Tool => json!({ "role": "user", "content": [{
                "type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content,
            }]}),
        })
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    body.insert("max_tokens".into(), json!(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)));
    if let Some(system) = &request.system {
        body.insert("system".into(), json!(system));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(temperature) = request.temperature {
        // Anthropic's range is 0..=1, OpenAI's 0..=2.
        body.insert("temperature".into(), json!(temperature.min(1.0)));
    }
    if let Some(top_p) = request.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut definition = json!({ "name": tool.name, "input_schema": tool.parameters });
                if let Some(description) = &tool.description {
                    definition["description"] = json!(description);
                }
                definition
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    Value::Object(body)
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    error_type: String,
    #[serde(default)]
    message: String,
}

fn classify_wire_error(status: u16, retry_after: Option<Duration>, error: &WireError) -> ProviderError {
    let lower = error.message.to_ascii_lowercase();
    match error.error_type.as_str() {
        "overloaded_error" => ProviderError::Overloaded { retry_after },
        // A spend limit is not lifted by waiting: never retried.
        "rate_limit_error" if lower.contains("spend limit") || lower.contains("credit balance") => {
            ProviderError::QuotaExhausted
        }
        "rate_limit_error" => ProviderError::RateLimited { retry_after },
        "authentication_error" | "permission_error" => ProviderError::AuthenticationFailed,
        "request_too_large" => ProviderError::ContextTooLong,
        "invalid_request_error" if mentions_context_length(&error.message) => ProviderError::ContextTooLong,
        "invalid_request_error" if lower.contains("credit balance") => ProviderError::QuotaExhausted,
        "invalid_request_error" | "not_found_error" => ProviderError::InvalidRequest(upstream_text(&error.message)),
        _ if status == 200 => ProviderError::Stream(upstream_text(&error.message)),
        _ => classify_status(status, retry_after),
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: WireError,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Cached prompt tokens are input too (billed at other rates, counted here at the model's input price).
    fn input(&self) -> Option<u64> {
        let parts = [self.input_tokens, self.cache_creation_input_tokens, self.cache_read_input_tokens];
        parts.iter().any(Option::is_some).then(|| parts.iter().flatten().sum())
    }
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    block_type: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(rename = "type", default)]
    delta_type: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessageStart {
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    message: Option<WireMessageStart>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    content_block: Option<WireBlock>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

/// Keeps the input tokens of `message_start` (Anthropic sends them only there) and numbers tool-use blocks
/// from 0 as OpenAI does.
#[derive(Default)]
pub struct EventDecoder {
    usage: Usage,
    tool_indexes: HashMap<u32, u32>,
    done: bool,
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, event: Option<&str>, data: &str) -> Result<Vec<ProviderEvent>, ProviderError> {
        let parsed: WireEvent =
            serde_json::from_str(data).map_err(|error| ProviderError::Protocol(format!("event: {error}")))?;
        let event_type = event.unwrap_or(parsed.event_type.as_str());
        let mut events = Vec::new();
        match event_type {
            "message_start" => {
                if let Some(usage) = parsed.message.map(|message| message.usage) {
                    self.usage.input_tokens = usage.input().unwrap_or(0);
                    self.usage.output_tokens = usage.output_tokens.unwrap_or(0);
                    events.push(ProviderEvent::Usage(self.usage));
                }
            }
            "content_block_start" => {
                if let (Some(block), Some(index)) = (parsed.content_block, parsed.index) {
                    match block.block_type.as_str() {
                        "tool_use" => {
                            let tool_index = u32::try_from(self.tool_indexes.len()).unwrap_or(u32::MAX);
                            self.tool_indexes.insert(index, tool_index);
                            events.push(ProviderEvent::ToolCallDelta {
                                index: tool_index,
                                id: block.id,
                                name: block.name,
                                arguments: String::new(),
                            });
                        }
                        "text" => {
                            if let Some(text) = block.text.filter(|text| !text.is_empty()) {
                                events.push(ProviderEvent::Text(text));
                            }
                        }
                        _ => {}
                    }
                }
            }
            "content_block_delta" => {
                if let Some(delta) = parsed.delta {
                    match delta.delta_type.as_deref() {
                        Some("text_delta") => events.extend(delta.text.map(ProviderEvent::Text)),
                        Some("input_json_delta") => {
                            let index = parsed.index.and_then(|index| self.tool_indexes.get(&index)).copied();
                            if let (Some(index), Some(partial)) = (index, delta.partial_json) {
                                events.push(ProviderEvent::ToolCallDelta {
                                    index,
                                    id: None,
                                    name: None,
                                    arguments: partial,
                                });
                            }
                        }
                        // thinking_delta, signature_delta, citations_delta: not part of the answer text.
                        _ => {}
                    }
                }
            }
            "message_delta" => {
                if let Some(usage) = parsed.usage {
                    // Cumulative: replaces, never adds.
                    if let Some(output) = usage.output_tokens {
                        self.usage.output_tokens = output;
                    }
                    if let Some(input) = usage.input() {
                        self.usage.input_tokens = input;
                    }
                    events.push(ProviderEvent::Usage(self.usage));
                }
                if let Some(reason) = parsed.delta.and_then(|delta| delta.stop_reason) {
                    events.push(ProviderEvent::Finished(finish_reason(&reason)));
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let error =
                    parsed.error.unwrap_or(WireError { error_type: "api_error".into(), message: String::new() });
                return Err(classify_wire_error(200, None, &error));
            }
            // ping, content_block_stop, and event types added later: ignored, as the API asks.
            _ => {}
        }
        Ok(events)
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[derive(Deserialize)]
struct WireMessage {
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

impl Provider for Anthropic {
    fn build_request(
        &self,
        endpoint: &Endpoint,
        request: &CompletionRequest,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest {
            url: endpoint.url("v1/messages", None),
            headers: vec![
                ("x-api-key", endpoint.api_key.clone()),
                ("anthropic-version", Secret::new(API_VERSION.to_string())),
            ],
            body: json_body(&request_body(request, stream))?,
        })
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(EventDecoder::default())
    }

    fn parse_completion(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let message: WireMessage =
            serde_json::from_slice(body).map_err(|error| ProviderError::Protocol(format!("message: {error}")))?;
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in message.content {
            match block.block_type.as_str() {
                "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
                "tool_use" => tool_calls.push(ToolCall {
                    id: block.id.unwrap_or_default(),
                    name: block.name.unwrap_or_default(),
                    arguments: block.input.unwrap_or_else(|| json!({})).to_string(),
                }),
                _ => {}
            }
        }
        Ok(Completion {
            text,
            tool_calls,
            finish_reason: finish_reason(message.stop_reason.as_deref().unwrap_or("end_turn")),
            usage: Some(Usage {
                input_tokens: message.usage.input().unwrap_or(0),
                output_tokens: message.usage.output_tokens.unwrap_or(0),
            }),
        })
    }

    fn classify_error(&self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> ProviderError {
        match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(envelope) => classify_wire_error(status, retry_after, &envelope.error),
            Err(_) => classify_status(status, retry_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::sse::{SseDecoder, SseItem};
    use crate::providers::{ChatMessage, ToolDefinition};

    fn decode_stream(text: &str) -> Result<(Vec<ProviderEvent>, bool), ProviderError> {
        let mut sse = SseDecoder::new();
        let mut decoder = Anthropic.decoder();
        let mut events = Vec::new();
        for item in sse.push(text.as_bytes()) {
            if let SseItem::Event(event) = item {
                events.extend(decoder.decode(event.event.as_deref(), &event.data)?);
            }
        }
        Ok((events, decoder.is_done()))
    }

    #[test]
    fn the_system_prompt_is_top_level_max_tokens_is_always_sent_and_tools_translate() {
        let request = CompletionRequest {
            model: "claude-sonnet-4-5".into(),
            system: Some("Be brief.".into()),
            messages: vec![
                ChatMessage::text(Role::User, "Weather in Oslo?"),
                ChatMessage {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "toolu_1".into(),
                        name: "weather".into(),
                        arguments: "{\"city\":\"Oslo\"}".into(),
                    }],
                    tool_call_id: None,
                    tool_name: None,
                },
                ChatMessage {
                    role: Role::Tool,
                    content: "12C".into(),
                    tool_calls: vec![],
                    tool_call_id: Some("toolu_1".into()),
                    tool_name: Some("weather".into()),
                },
            ],
            temperature: Some(1.5),
            top_p: None,
            max_tokens: None,
            stop: vec!["END".into()],
            tools: vec![ToolDefinition {
                name: "weather".into(),
                description: None,
                parameters: json!({"type": "object"}),
            }],
        };
        let endpoint = Endpoint {
            base_url: "https://api.anthropic.com".parse().expect("url"),
            api_key: Secret::new("sk-ant-1".into()),
        };
        let built = Anthropic.build_request(&endpoint, &request, true).expect("request");
        assert_eq!(built.url.as_str(), "https://api.anthropic.com/v1/messages");
        assert_eq!(built.headers[0].0, "x-api-key");
        assert_eq!(built.headers[1].1.expose(), API_VERSION);
        assert_eq!(
            serde_json::from_slice::<Value>(&built.body).expect("json"),
            json!({
                "model": "claude-sonnet-4-5", "max_tokens": 4096, "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": "Weather in Oslo?"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C"}]},
                ],
                "temperature": 1.0, "stop_sequences": ["END"],
                "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
                "stream": true,
            })
        );
    }

    /// The documented example stream, with a `ping`, an unknown event type and a tool-use block.
    const STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: future_event
data: {"type":"future_event","whatever":1}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Oslo\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

"#;

    #[test]
    fn a_recorded_stream_keeps_the_input_tokens_of_message_start() {
        let (events, done) = decode_stream(STREAM).expect("decodes");
        assert!(done);
        assert_eq!(
            events,
            vec![
                ProviderEvent::Usage(Usage { input_tokens: 25, output_tokens: 1 }),
                ProviderEvent::Text("Hello".into()),
                ProviderEvent::Text("!".into()),
                ProviderEvent::ToolCallDelta {
                    index: 0,
                    id: Some("toolu_1".into()),
                    name: Some("weather".into()),
                    arguments: String::new()
                },
                ProviderEvent::ToolCallDelta {
                    index: 0,
                    id: None,
                    name: None,
                    arguments: "{\"city\": \"Oslo\"}".into()
                },
                ProviderEvent::Usage(Usage { input_tokens: 25, output_tokens: 15 }),
                ProviderEvent::Finished(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn an_overloaded_error_event_mid_stream_is_an_overload() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        assert_eq!(decode_stream(stream), Err(ProviderError::Overloaded { retry_after: None }));
    }

    #[test]
    fn error_bodies_map_to_the_error_model() {
        let body = |error_type: &str, message: &str| {
            json!({"type": "error", "error": {"type": error_type, "message": message}}).to_string()
        };
        let retry = Some(Duration::from_secs(7));
        assert_eq!(
            Anthropic.classify_error(529, retry, body("overloaded_error", "Overloaded").as_bytes()),
            ProviderError::Overloaded { retry_after: retry }
        );
        assert_eq!(
            Anthropic.classify_error(
                429,
                retry,
                body("rate_limit_error", "Number of requests has exceeded your rate limit").as_bytes()
            ),
            ProviderError::RateLimited { retry_after: retry }
        );
        assert_eq!(
            Anthropic.classify_error(
                429,
                retry,
                body("rate_limit_error", "You have reached your specified workspace API spend limit").as_bytes()
            ),
            ProviderError::QuotaExhausted
        );
        assert_eq!(
            Anthropic.classify_error(
                400,
                None,
                body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum").as_bytes()
            ),
            ProviderError::ContextTooLong
        );
        assert_eq!(
            Anthropic.classify_error(401, None, body("authentication_error", "invalid x-api-key").as_bytes()),
            ProviderError::AuthenticationFailed
        );
        assert_eq!(
            Anthropic.classify_error(500, None, body("api_error", "Internal server error").as_bytes()),
            ProviderError::Upstream { status: 500 }
        );
        assert_eq!(
            Anthropic.classify_error(
                413,
                None,
                body("request_too_large", "Request exceeds the maximum size").as_bytes()
            ),
            ProviderError::ContextTooLong
        );
    }

    #[test]
    fn a_whole_message_parses_with_cached_input_counted() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi"},{"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Oslo"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":3}}"#;
        let completion = Anthropic.parse_completion(body).expect("parses");
        assert_eq!(completion.text, "Hi");
        assert_eq!(completion.tool_calls[0].arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
        assert_eq!(completion.usage, Some(Usage { input_tokens: 15, output_tokens: 3 }));
    }
}
