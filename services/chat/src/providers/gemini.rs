//! Google Gemini: `POST {base}/v1beta/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`
//! for a stream, with the key in the `x-goog-api-key` header (never in the URL, where it would reach logs).
//! Each SSE `data:` is a whole `GenerateContentResponse`; `usageMetadata` holds totals (never summed); the
//! stream ends when the connection closes.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Completion, CompletionRequest, Endpoint, FinishReason, Provider, ProviderError, ProviderEvent, Role, StreamDecoder,
    ToolCall, UpstreamRequest, Usage, classify_status, json_body, mentions_context_length, upstream_text,
};
pub struct Gemini;

pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

/// Model names may be configured with the API's `models/` prefix.
fn model_path(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

pub fn request_body(request: &CompletionRequest) -> Value {
    let contents: Vec<Value> = request
        .messages
        .iter()
        .map(|message| match message.role {
            Role::User => json!({ "role": "user", "parts": [{ "text": message.content }] }),
            Role::Assistant => {
                let mut parts = Vec::new();
                if !message.content.is_empty() {
                    parts.push(json!({ "text": message.content }));
                }
                for call in &message.tool_calls {
                    let args: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
                    parts.push(json!({ "functionCall": { "name": call.name, "args": args } }));
                }
                json!({ "role": "model", "parts": parts })
            }
            Role::Tool => {
                // functionResponse.response must be an object; a plain-text result is wrapped.
                let response = serde_json::from_str::<Value>(&message.content)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({ "result": message.content }));
                json!({ "role": "user", "parts": [{ "functionResponse": {
                    "name": message.tool_name.as_deref().unwrap_or_default(), "response": response,
                }}]})
            }
        })
        .collect();
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if let Some(system) = &request.system {
        body.insert("systemInstruction".into(), json!({ "parts": [{ "text": system }] }));
    }
    let mut generation = Map::new();
    if let Some(temperature) = request.temperature {
        generation.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        generation.insert("topP".into(), json!(top_p));
    }
    if let Some(max_tokens) = request.max_tokens {
        generation.insert("maxOutputTokens".into(), json!(max_tokens));
    }
    if !request.stop.is_empty() {
        generation.insert("stopSequences".into(), json!(request.stop));
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut declaration = json!({ "name": tool.name, "parameters": tool.parameters });
                if let Some(description) = &tool.description {
                    declaration["description"] = json!(description);
                }
                declaration
            })
            .collect();
        body.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
    }
    Value::Object(body)
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: WireError,
}

fn classify_wire_error(status: u16, retry_after: Option<Duration>, error: &WireError) -> ProviderError {
    let status = if status == 200 && error.code != 0 { error.code } else { status };
    let lower = error.message.to_ascii_lowercase();
    match error.status.as_str() {
        "RESOURCE_EXHAUSTED" if lower.contains("quota") && lower.contains("billing") => ProviderError::QuotaExhausted,
        "RESOURCE_EXHAUSTED" => ProviderError::RateLimited { retry_after },
        "UNAVAILABLE" => ProviderError::Overloaded { retry_after },
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => ProviderError::AuthenticationFailed,
        "INVALID_ARGUMENT" if lower.contains("api key") => ProviderError::AuthenticationFailed,
        "INVALID_ARGUMENT" if mentions_context_length(&error.message) => ProviderError::ContextTooLong,
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" => {
            ProviderError::InvalidRequest(upstream_text(&error.message))
        }
        _ if status == 200 => ProviderError::Stream(upstream_text(&error.message)),
        _ => classify_status(status, retry_after),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
}

#[derive(Deserialize)]
struct WireContent {
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    /// Thinking tokens are billed as output.
    #[serde(default)]
    thoughts_token_count: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Usage {
        Usage {
            input_tokens: usage.prompt_token_count,
            output_tokens: usage.candidates_token_count + usage.thoughts_token_count,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

/// Gemini gives function calls no id; these are made up per stream, in order.
fn call_id(index: u32) -> String {
    format!("call_{index}")
}

#[derive(Default)]
pub struct ResponseDecoder {
    calls: u32,
}

impl StreamDecoder for ResponseDecoder {
    fn decode(&mut self, _event: Option<&str>, data: &str) -> Result<Vec<ProviderEvent>, ProviderError> {
        let response: WireResponse =
            serde_json::from_str(data).map_err(|error| ProviderError::Protocol(format!("response: {error}")))?;
        if let Some(error) = response.error {
            return Err(classify_wire_error(200, None, &error));
        }
        let mut events = Vec::new();
        let mut finish = None;
        if let Some(candidate) = response.candidates.into_iter().next() {
            for part in candidate.content.map(|content| content.parts).unwrap_or_default() {
                if part.thought == Some(true) {
                    continue;
                }
                if let Some(text) = part.text.filter(|text| !text.is_empty()) {
                    events.push(ProviderEvent::Text(text));
                }
                if let Some(call) = part.function_call {
                    let index = self.calls;
                    self.calls += 1;
                    events.push(ProviderEvent::ToolCallDelta {
                        index,
                        id: Some(call_id(index)),
                        name: Some(call.name),
                        arguments: call.args.unwrap_or_else(|| json!({})).to_string(),
                    });
                }
            }
            finish = candidate.finish_reason;
        }
        if let Some(usage) = response.usage_metadata {
            events.push(ProviderEvent::Usage(usage.into()));
        }
        if let Some(reason) = finish {
            let reason =
                if self.calls > 0 && reason == "STOP" { FinishReason::ToolCalls } else { finish_reason(&reason) };
            events.push(ProviderEvent::Finished(reason));
        }
        Ok(events)
    }

    fn is_done(&self) -> bool {
        false
    }
}

impl Provider for Gemini {
    fn build_request(
        &self,
        endpoint: &Endpoint,
        request: &CompletionRequest,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let (method, query) =
            if stream { ("streamGenerateContent", Some("alt=sse")) } else { ("generateContent", None) };
        Ok(UpstreamRequest {
            url: endpoint.url(&format!("v1beta/models/{}:{method}", model_path(&request.model)), query),
            headers: vec![("x-goog-api-key", endpoint.api_key.clone())],
            body: json_body(&request_body(request))?,
        })
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ResponseDecoder::default())
    }

    fn parse_completion(&self, body: &[u8]) -> Result<Completion, ProviderError> {
        let text = std::str::from_utf8(body).map_err(|_| ProviderError::Protocol("response is not UTF-8".into()))?;
        let mut decoder = ResponseDecoder::default();
        let mut completion =
            Completion { text: String::new(), tool_calls: Vec::new(), finish_reason: FinishReason::Stop, usage: None };
        let mut partial_calls: Vec<ToolCall> = Vec::new();
        for event in decoder.decode(None, text)? {
            match event {
                ProviderEvent::Text(text) => completion.text.push_str(&text),
                ProviderEvent::ToolCallDelta { id, name, arguments, .. } => partial_calls.push(ToolCall {
                    id: id.unwrap_or_default(),
                    name: name.unwrap_or_default(),
                    arguments,
                }),
                ProviderEvent::Usage(usage) => completion.usage = Some(usage),
                ProviderEvent::Finished(reason) => completion.finish_reason = reason,
            }
        }
        completion.tool_calls = partial_calls;
        Ok(completion)
    }

    fn classify_error(&self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> ProviderError {
        // Errors come as one object or, from the streaming method without alt=sse, an array of one.
        let envelope = serde_json::from_slice::<ErrorEnvelope>(body).ok().or_else(|| {
            serde_json::from_slice::<Vec<ErrorEnvelope>>(body).ok().and_then(|list| list.into_iter().next())
        });
        match envelope {
            Some(envelope) => classify_wire_error(status, retry_after, &envelope.error),
            None => classify_status(status, retry_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::sse::{SseDecoder, SseItem};
    use crate::providers::{ChatMessage, ToolDefinition};
    use saaschat_platform::Secret;

    fn decode_stream(text: &str) -> Result<Vec<ProviderEvent>, ProviderError> {
        let mut sse = SseDecoder::new();
        let mut decoder = Gemini.decoder();
        let mut events = Vec::new();
        for item in sse.push(text.as_bytes()) {
            if let SseItem::Event(event) = item {
                events.extend(decoder.decode(event.event.as_deref(), &event.data)?);
            }
        }
        Ok(events)
    }

    #[test]
    fn requests_use_the_header_for_the_key_and_translate_roles_and_settings() {
        let request = CompletionRequest {
            model: "models/gemini-2.5-flash".into(),
            system: Some("Be brief.".into()),
            messages: vec![
                ChatMessage::text(Role::User, "Hi"),
                ChatMessage::text(Role::Assistant, "Hello"),
                ChatMessage {
                    role: Role::Tool,
                    content: "12C".into(),
                    tool_calls: vec![],
                    tool_call_id: Some("call_0".into()),
                    tool_name: Some("weather".into()),
                },
            ],
            temperature: Some(0.0),
            top_p: None,
            max_tokens: Some(50),
            stop: vec![],
            tools: vec![ToolDefinition {
                name: "weather".into(),
                description: Some("w".into()),
                parameters: json!({"type": "object"}),
            }],
        };
        let endpoint = Endpoint {
            base_url: "https://generativelanguage.googleapis.com".parse().expect("url"),
            api_key: Secret::new("AIza-1".into()),
        };
        let built = Gemini.build_request(&endpoint, &request, true).expect("request");
        assert_eq!(
            built.url.as_str(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert!(!built.url.as_str().contains("AIza-1"));
        assert_eq!(built.headers[0].0, "x-goog-api-key");
        assert_eq!(
            serde_json::from_slice::<Value>(&built.body).expect("json"),
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "Hi"}]},
                    {"role": "model", "parts": [{"text": "Hello"}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"result": "12C"}}}]},
                ],
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "generationConfig": {"temperature": 0.0, "maxOutputTokens": 50},
                "tools": [{"functionDeclarations": [{"name": "weather", "description": "w", "parameters": {"type": "object"}}]}],
            })
        );
        assert!(
            Gemini
                .build_request(&endpoint, &request, false)
                .expect("request")
                .url
                .as_str()
                .ends_with("/models/gemini-2.5-flash:generateContent")
        );
    }

    /// A recorded stream: usage totals repeat on several frames and must not be summed.
    const STREAM: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"candidatesTokenCount\": 1,\"totalTokenCount\": 9},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"candidatesTokenCount\": 2,\"totalTokenCount\": 14,\"thoughtsTokenCount\": 4},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n";

    #[test]
    fn a_recorded_stream_reports_totals_and_counts_thoughts_as_output() {
        assert_eq!(
            decode_stream(STREAM).expect("decodes"),
            vec![
                ProviderEvent::Text("Hel".into()),
                ProviderEvent::Usage(Usage { input_tokens: 8, output_tokens: 1 }),
                ProviderEvent::Text("lo".into()),
                ProviderEvent::Usage(Usage { input_tokens: 8, output_tokens: 6 }),
                ProviderEvent::Finished(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn function_calls_get_ids_and_finish_as_tool_calls() {
        let stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"weather\",\"args\":{\"city\":\"Oslo\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\"}]}\n\n";
        assert_eq!(
            decode_stream(stream).expect("decodes"),
            vec![
                ProviderEvent::ToolCallDelta {
                    index: 0,
                    id: Some("call_0".into()),
                    name: Some("weather".into()),
                    arguments: "{\"city\":\"Oslo\"}".into()
                },
                ProviderEvent::Finished(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn errors_map_to_the_error_model() {
        let body = |code: u16, status: &str, message: &str| {
            json!({"error": {"code": code, "message": message, "status": status}}).to_string()
        };
        assert_eq!(
            Gemini.classify_error(429, None, body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted").as_bytes()),
            ProviderError::RateLimited { retry_after: None }
        );
        assert_eq!(
            Gemini.classify_error(503, None, body(503, "UNAVAILABLE", "The model is overloaded.").as_bytes()),
            ProviderError::Overloaded { retry_after: None }
        );
        assert_eq!(
            Gemini.classify_error(
                400,
                None,
                body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.").as_bytes()
            ),
            ProviderError::AuthenticationFailed
        );
        assert_eq!(
            Gemini.classify_error(
                400,
                None,
                body(
                    400,
                    "INVALID_ARGUMENT",
                    "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
                )
                .as_bytes()
            ),
            ProviderError::ContextTooLong
        );
        let listed = format!("[{}]", body(500, "INTERNAL", "An internal error has occurred."));
        assert_eq!(Gemini.classify_error(500, None, listed.as_bytes()), ProviderError::Upstream { status: 500 });
        let mid_stream =
            "data: {\"error\": {\"code\": 503, \"message\": \"overloaded\", \"status\": \"UNAVAILABLE\"}}\n\n";
        assert_eq!(decode_stream(mid_stream), Err(ProviderError::Overloaded { retry_after: None }));
    }

    #[test]
    fn a_whole_response_parses() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"Hi "},{"text":"there"}],"role":"model"},"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6}}"#;
        let completion = Gemini.parse_completion(body).expect("parses");
        assert_eq!(completion.text, "Hi there");
        assert_eq!(completion.finish_reason, FinishReason::Length);
        assert_eq!(completion.usage, Some(Usage { input_tokens: 4, output_tokens: 2 }));
    }
}
