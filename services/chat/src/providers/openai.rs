//! OpenAI Chat Completions, spoken by OpenAI, Groq and the OpenAI-compatible servers (vLLM, Ollama,
//! llama.cpp). The base URL ends in `/v1`; requests go to `{base}/chat/completions`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ChatMessage, Completion, CompletionRequest, Endpoint, FinishReason, Provider, ProviderError, ProviderEvent, Role,
    StreamDecoder, ToolCall, UpstreamRequest, Usage, classify_status, json_body, mentions_context_length,
    upstream_text,
};
use saaschat_platform::Secret;

/// The servers differ in what they accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    /// Rejects `n != 1`, `logprobs`, `logit_bias` and `messages[].name` with 400: none of them is ever sent.
    Groq,
    /// vLLM, Ollama, llama.cpp: `max_tokens` rather than `max_completion_tokens`, which older servers ignore.
    Compatible,
}

pub struct OpenAi {
    pub dialect: Dialect,
}

pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

/// A request body, serialized straight from the borrowed request: every call builds one, and a
/// `serde_json::Value` tree cost a few dozen allocations.
#[derive(Serialize)]
struct OutgoingRequest<'a> {
    model: &'a str,
    messages: Vec<OutgoingMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    /// OpenAI's name for the limit; it deprecated `max_tokens`, which its reasoning models refuse.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    /// Groq's and the compatible servers' name for it, which older servers need.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutgoingTool<'a>>,
    stream: bool,
    /// Usage is only reported on streams that ask for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum OutgoingMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        /// `null` when the message is tool calls alone.
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<OpenAiToolCall<'a>>,
    },
    Tool {
        tool_call_id: Option<&'a str>,
        content: &'a str,
    },
}

/// A tool call as OpenAI's Chat Completions writes it, in the assistant messages of requests and in answers.
#[derive(Serialize)]
pub struct OpenAiToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    call_type: &'static str,
    function: OpenAiFunctionCall<'a>,
}

#[derive(Serialize)]
struct OpenAiFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl<'a> OpenAiToolCall<'a> {
    pub fn all(calls: &'a [ToolCall]) -> Vec<OpenAiToolCall<'a>> {
        calls
            .iter()
            .map(|call| OpenAiToolCall {
                id: &call.id,
                call_type: "function",
                function: OpenAiFunctionCall { name: &call.name, arguments: &call.arguments },
            })
            .collect()
    }
}

/// An assistant message's `content`: `null` when the message is tool calls alone.
pub fn assistant_content<'a>(text: &'a str, calls: &[ToolCall]) -> Option<&'a str> {
    (calls.is_empty() || !text.is_empty()).then_some(text)
}

#[derive(Serialize)]
struct OutgoingTool<'a> {
    #[serde(rename = "type")]
    tool_type: &'static str,
    function: OutgoingToolFunction<'a>,
}

#[derive(Serialize)]
struct OutgoingToolFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

fn outgoing_message(message: &ChatMessage) -> OutgoingMessage<'_> {
    match message.role {
        Role::User => OutgoingMessage::User { content: &message.content },
        Role::Assistant => OutgoingMessage::Assistant {
            content: assistant_content(&message.content, &message.tool_calls),
            tool_calls: OpenAiToolCall::all(&message.tool_calls),
        },
        Role::Tool => {
            OutgoingMessage::Tool { tool_call_id: message.tool_call_id.as_deref(), content: &message.content }
        }
    }
}

/// The request body in `dialect`.
fn request_body(dialect: Dialect, request: &CompletionRequest, stream: bool) -> OutgoingRequest<'_> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(OutgoingMessage::System { content: system });
    }
    messages.extend(request.messages.iter().map(outgoing_message));
    let (max_completion_tokens, max_tokens) =
        if dialect == Dialect::OpenAi { (request.max_tokens, None) } else { (None, request.max_tokens) };
    OutgoingRequest {
        model: &request.model,
        messages,
        temperature: request.temperature,
        top_p: request.top_p,
        max_completion_tokens,
        max_tokens,
        stop: &request.stop,
        tools: request
            .tools
            .iter()
            .map(|tool| OutgoingTool {
                tool_type: "function",
                function: OutgoingToolFunction {
                    name: &tool.name,
                    description: tool.description.as_deref(),
                    parameters: &tool.parameters,
                },
            })
            .collect(),
        stream,
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
    }
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Usage {
        Usage { input_tokens: usage.prompt_tokens, output_tokens: usage.completion_tokens }
    }
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    error_type: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: WireError,
}

/// The error an OpenAI-style error object stands for, given the HTTP status it came with (200 mid-stream).
fn classify_wire_error(status: u16, retry_after: Option<Duration>, error: &WireError) -> ProviderError {
    let message = error.message.as_deref().unwrap_or_default();
    let code = error.code.as_ref().and_then(Value::as_str).unwrap_or_default();
    let error_type = error.error_type.as_deref().unwrap_or_default();
    if code == "insufficient_quota" || error_type == "insufficient_quota" {
        return ProviderError::QuotaExhausted;
    }
    if code == "context_length_exceeded" || mentions_context_length(message) {
        return ProviderError::ContextTooLong;
    }
    if code == "rate_limit_exceeded" || error_type == "rate_limit_exceeded" || error_type == "tokens" {
        return ProviderError::RateLimited { retry_after };
    }
    if error_type == "server_error" || error_type == "overloaded" || message.to_ascii_lowercase().contains("overloaded")
    {
        return ProviderError::Overloaded { retry_after };
    }
    if code == "invalid_api_key" || error_type == "authentication_error" {
        return ProviderError::AuthenticationFailed;
    }
    match status {
        200 => ProviderError::Stream(upstream_text(message)),
        400 | 404 | 422 => ProviderError::InvalidRequest(upstream_text(message)),
        status => classify_status(status, retry_after),
    }
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCallDelta>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireChunk {
    /// vLLM has sent `null` on the usage-only chunk.
    #[serde(default)]
    choices: Option<Vec<WireChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Default)]
pub struct ChunkDecoder {
    done: bool,
}

impl StreamDecoder for ChunkDecoder {
    fn decode(&mut self, _event: Option<&str>, data: &str) -> Result<Vec<ProviderEvent>, ProviderError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        let chunk: WireChunk =
            serde_json::from_str(data).map_err(|error| ProviderError::Protocol(format!("chunk: {error}")))?;
        if let Some(error) = chunk.error {
            return Err(classify_wire_error(200, None, &error));
        }
        let mut events = Vec::new();
        for choice in chunk.choices.unwrap_or_default() {
            let delta = choice.delta.unwrap_or_default();
            if let Some(content) = delta.content.filter(|content| !content.is_empty()) {
                events.push(ProviderEvent::Text(content));
            }
            for call in delta.tool_calls {
                let function = call.function.unwrap_or(WireFunctionDelta { name: None, arguments: None });
                events.push(ProviderEvent::ToolCallDelta {
                    index: call.index,
                    id: call.id,
                    name: function.name,
                    arguments: function.arguments.unwrap_or_default(),
                });
            }
            if let Some(reason) = choice.finish_reason {
                events.push(ProviderEvent::Finished(finish_reason(&reason)));
            }
        }
        if let Some(usage) = chunk.usage {
            events.push(ProviderEvent::Usage(usage.into()));
        }
        Ok(events)
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireCompletion {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

impl Provider for OpenAi {
    fn build_request(
        &self,
        endpoint: &Endpoint,
        request: &CompletionRequest,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest {
            url: endpoint.url("chat/completions", None),
            headers: vec![("authorization", Secret::new(format!("Bearer {}", endpoint.api_key.expose())))],
            body: json_body(&request_body(self.dialect, request, stream))?,
        })
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChunkDecoder::default())
    }

    fn parse_completion(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let completion: WireCompletion =
            serde_json::from_slice(body).map_err(|error| ProviderError::Protocol(format!("completion: {error}")))?;
        let choice = completion
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Protocol("the completion has no choices".into()))?;
        Ok(Completion {
            text: choice.message.content.unwrap_or_default(),
            tool_calls: choice
                .message
                .tool_calls
                .into_iter()
                .map(|call| ToolCall { id: call.id, name: call.function.name, arguments: call.function.arguments })
                .collect(),
            finish_reason: finish_reason(choice.finish_reason.as_deref().unwrap_or("stop")),
            usage: completion.usage.map(Usage::from),
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
    use crate::providers::ToolDefinition;
    use crate::providers::sse::{SseDecoder, SseItem};
    use serde_json::json;

    fn request() -> CompletionRequest {
        CompletionRequest {
            model: "gpt-4o-mini".into(),
            system: Some("Be brief.".into()),
            messages: vec![ChatMessage::text(Role::User, "Hi")],
            temperature: Some(0.2),
            top_p: None,
            max_tokens: Some(100),
            stop: vec!["END".into()],
            tools: Vec::new(),
        }
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            base_url: "https://api.openai.com/v1/".parse().expect("url"),
            api_key: Secret::new("sk-test-123".into()),
        }
    }

    /// Feeds a recorded stream through the SSE decoder and the chunk decoder.
    fn decode_stream(text: &str) -> Result<Vec<ProviderEvent>, ProviderError> {
        let mut sse = SseDecoder::new();
        let mut decoder = OpenAi { dialect: Dialect::OpenAi }.decoder();
        let mut events = Vec::new();
        for item in sse.push(text.as_bytes()) {
            if let SseItem::Event(event) = item {
                events.extend(decoder.decode(event.event.as_deref(), &event.data)?);
            }
        }
        assert!(decoder.is_done() || !text.contains("[DONE]"));
        Ok(events)
    }

    #[test]
    fn requests_carry_the_system_prompt_as_a_message_and_ask_for_stream_usage() {
        let built = OpenAi { dialect: Dialect::OpenAi }.build_request(&endpoint(), &request(), true).expect("request");
        assert_eq!(built.url.as_str(), "https://api.openai.com/v1/chat/completions");
        assert_eq!(built.headers[0].0, "authorization");
        assert_eq!(built.headers[0].1.expose(), "Bearer sk-test-123");
        assert_eq!(
            serde_json::from_slice::<Value>(&built.body).expect("json"),
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "temperature": 0.2, "max_completion_tokens": 100, "stop": ["END"],
                "stream": true, "stream_options": {"include_usage": true},
            })
        );
        assert!(!format!("{built:?}").contains("sk-test-123"));
    }

    #[test]
    fn groq_and_compatible_servers_get_max_tokens_and_no_stream_options_without_streaming() {
        for dialect in [Dialect::Groq, Dialect::Compatible] {
            let body = serde_json::to_value(request_body(dialect, &request(), false)).expect("json");
            assert_eq!(body["max_tokens"], 100);
            assert!(body.get("max_completion_tokens").is_none());
            assert!(body.get("stream_options").is_none());
            assert!(body.get("n").is_none() && body.get("logprobs").is_none());
        }
    }

    #[test]
    fn tool_definitions_calls_and_results_translate() {
        let mut request = request();
        request.tools = vec![ToolDefinition {
            name: "weather".into(),
            description: Some("Weather for a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }];
        request.messages.push(ChatMessage {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "weather".into(),
                arguments: "{\"city\":\"Oslo\"}".into(),
            }],
            tool_call_id: None,
            tool_name: None,
        });
        request.messages.push(ChatMessage {
            role: Role::Tool,
            content: "12C".into(),
            tool_calls: Vec::new(),
            tool_call_id: Some("call_1".into()),
            tool_name: Some("weather".into()),
        });
        let body = serde_json::to_value(request_body(Dialect::OpenAi, &request, false)).expect("json");
        assert_eq!(body["tools"][0]["function"]["name"], "weather");
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(body["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(body["messages"][3], json!({"role": "tool", "tool_call_id": "call_1", "content": "12C"}));
    }

    /// Recorded from the API (ids shortened), with a keep-alive comment and the usage-only final chunk.
    const STREAM: &str = r#": OPENROUTER PROCESSING

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" there"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}

data: [DONE]

"#;

    #[test]
    fn a_recorded_stream_decodes_to_text_finish_and_usage() {
        assert_eq!(
            decode_stream(STREAM).expect("decodes"),
            vec![
                ProviderEvent::Text("Hello".into()),
                ProviderEvent::Text(" there".into()),
                ProviderEvent::Finished(FinishReason::Stop),
                ProviderEvent::Usage(Usage { input_tokens: 9, output_tokens: 2 }),
            ]
        );
    }

    #[test]
    fn vllm_usage_chunks_with_null_choices_decode() {
        let events = decode_stream(
            "data: {\"choices\":null,\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(events.expect("decodes"), vec![ProviderEvent::Usage(Usage { input_tokens: 3, output_tokens: 4 })]);
    }

    #[test]
    fn streamed_tool_calls_decode_as_fragments() {
        let stream = r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: [DONE]

"#;
        assert_eq!(
            decode_stream(stream).expect("decodes"),
            vec![
                ProviderEvent::ToolCallDelta {
                    index: 0,
                    id: Some("call_1".into()),
                    name: Some("weather".into()),
                    arguments: String::new()
                },
                ProviderEvent::ToolCallDelta {
                    index: 0,
                    id: None,
                    name: None,
                    arguments: "{\"city\":\"Oslo\"}".into()
                },
                ProviderEvent::Finished(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn an_error_event_mid_stream_is_an_error_not_an_empty_answer() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"message\":\"Rate limit reached for gpt-4o\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}\n\n";
        assert_eq!(decode_stream(stream), Err(ProviderError::RateLimited { retry_after: None }));
        let stream = "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"internal\"}}\n\n";
        assert_eq!(decode_stream(stream), Err(ProviderError::Stream("The server had an error".into())));
        assert!(matches!(decode_stream("data: {not json}\n\n"), Err(ProviderError::Protocol(_))));
    }

    #[test]
    fn a_whole_completion_parses_with_usage_and_tool_calls() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        let completion = OpenAi { dialect: Dialect::OpenAi }.parse_completion(body).expect("parses");
        assert_eq!(completion.text, "");
        assert_eq!(completion.tool_calls[0].name, "weather");
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
        assert_eq!(completion.usage, Some(Usage { input_tokens: 5, output_tokens: 7 }));
    }

    #[test]
    fn error_bodies_map_to_the_error_model() {
        let adapter = OpenAi { dialect: Dialect::OpenAi };
        let body = |message: &str, error_type: &str, code: &str| {
            json!({"error": {"message": message, "type": error_type, "param": null, "code": code}}).to_string()
        };
        let retry = Some(Duration::from_secs(2));
        assert_eq!(
            adapter.classify_error(
                429,
                retry,
                body("Rate limit reached", "requests", "rate_limit_exceeded").as_bytes()
            ),
            ProviderError::RateLimited { retry_after: retry }
        );
        assert_eq!(
            adapter.classify_error(
                429,
                retry,
                body("You exceeded your current quota", "insufficient_quota", "insufficient_quota").as_bytes()
            ),
            ProviderError::QuotaExhausted
        );
        assert_eq!(
            adapter.classify_error(
                400,
                None,
                body(
                    "This model's maximum context length is 128000 tokens.",
                    "invalid_request_error",
                    "context_length_exceeded"
                )
                .as_bytes()
            ),
            ProviderError::ContextTooLong
        );
        assert_eq!(
            adapter.classify_error(
                401,
                None,
                body("Incorrect API key provided: sk-test***123.", "invalid_request_error", "invalid_api_key")
                    .as_bytes()
            ),
            ProviderError::AuthenticationFailed
        );
        assert_eq!(
            adapter.classify_error(
                400,
                None,
                body("Invalid value for temperature", "invalid_request_error", "").as_bytes()
            ),
            ProviderError::InvalidRequest("Invalid value for temperature".into())
        );
        assert_eq!(
            adapter.classify_error(502, None, b"<html>Bad gateway</html>"),
            ProviderError::Upstream { status: 502 }
        );
        assert_eq!(adapter.classify_error(503, None, b""), ProviderError::Overloaded { retry_after: None });
    }
}
