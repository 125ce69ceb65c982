//! The OpenAI Chat Completions wire format as this service serves it: requests in, completions and chunks
//! out. Pure translation, unit-tested; the handlers are in `mod.rs`.

use std::collections::HashMap;

use axum::http::StatusCode;
use saaschat_platform::Problem;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::providers::openai::{OpenAiToolCall, assistant_content};
use crate::providers::{
    ChatMessage, Completion, CompletionRequest, ProviderEvent, Role, ToolCall, ToolDefinition, Usage,
};

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub part_type: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WireFunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Deserialize)]
pub struct WireToolCall {
    pub id: String,
    pub function: WireFunctionCall,
}

#[derive(Debug, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WireFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct WireTool {
    #[serde(rename = "type")]
    pub tool_type: String,
    pub function: WireFunction,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The request. Fields the service does not use (`user`, `seed`, `tool_choice`, `response_format`, ...) are
/// accepted and ignored, as OpenAI-compatible servers do; `n` other than 1 is refused.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<WireMessage>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub tools: Option<Vec<WireTool>>,
    #[serde(default)]
    pub n: Option<u32>,
}

fn invalid(param: &str, message: impl Into<String>) -> Problem {
    Problem::typed(StatusCode::BAD_REQUEST, "invalid-request", "The request is not valid")
        .with_detail(message)
        .with_extension("param", param)
}

fn text_of(content: Option<Content>, index: usize) -> Result<String, Problem> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(text)) => Ok(text),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.part_type.as_str(), part.text) {
                    ("text", Some(part_text)) => text.push_str(&part_text),
                    (other, _) => {
                        return Err(invalid(
                            &format!("messages[{index}].content"),
                            format!("content parts of type {other:?} are not supported"),
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

/// Translates and checks a request.
pub fn to_completion_request(request: ChatCompletionRequest) -> Result<CompletionRequest, Problem> {
    if request.n.is_some_and(|n| n != 1) {
        return Err(invalid("n", "only n=1 is supported"));
    }
    if request.messages.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    if request.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(invalid("temperature", "temperature must be between 0 and 2"));
    }
    if request.top_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err(invalid("top_p", "top_p must be between 0 and 1"));
    }
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    if max_tokens == Some(0) {
        return Err(invalid("max_tokens", "max_tokens must be at least 1"));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (index, message) in request.messages.into_iter().enumerate() {
        let content = text_of(message.content, index)?;
        match message.role.as_str() {
            "system" | "developer" => system.push(content),
            "user" => messages.push(ChatMessage::text(Role::User, content)),
            "assistant" => {
                let tool_calls: Vec<ToolCall> = message
                    .tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .map(|call| ToolCall { id: call.id, name: call.function.name, arguments: call.function.arguments })
                    .collect();
                for call in &tool_calls {
                    call_names.insert(call.id.clone(), call.name.clone());
                }
                messages.push(ChatMessage { tool_calls, ..ChatMessage::text(Role::Assistant, content) });
            }
            "tool" => {
                let id = message.tool_call_id.ok_or_else(|| {
                    invalid(&format!("messages[{index}].tool_call_id"), "tool messages need tool_call_id")
                })?;
                let name = call_names.get(&id).cloned();
                messages.push(ChatMessage {
                    tool_call_id: Some(id),
                    tool_name: name,
                    ..ChatMessage::text(Role::Tool, content)
                });
            }
            other => return Err(invalid(&format!("messages[{index}].role"), format!("unknown role {other:?}"))),
        }
    }
    if messages.is_empty() {
        return Err(invalid("messages", "at least one non-system message is required"));
    }
    let mut tools = Vec::new();
    for (index, tool) in request.tools.unwrap_or_default().into_iter().enumerate() {
        if tool.tool_type != "function" {
            return Err(invalid(&format!("tools[{index}].type"), "only function tools are supported"));
        }
        tools.push(ToolDefinition {
            name: tool.function.name,
            description: tool.function.description,
            parameters: tool.function.parameters.unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
        });
    }
    Ok(CompletionRequest {
        model: request.model,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens,
        stop: match request.stop {
            None => Vec::new(),
            Some(Stop::One(stop)) => vec![stop],
            Some(Stop::Many(stops)) => stops,
        },
        tools,
    })
}

/// OpenAI's `usage` object.
#[derive(Serialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<Usage> for WireUsage {
    fn from(usage: Usage) -> WireUsage {
        WireUsage {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens + usage.output_tokens,
        }
    }
}

/// A whole `chat.completion`, serialized straight from borrowed fields, like the chunks below.
#[derive(Serialize)]
pub struct WholeCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [WholeChoice<'a>; 1],
    usage: WireUsage,
}

#[derive(Serialize)]
struct WholeChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    /// `null` when the answer is tool calls alone.
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OpenAiToolCall<'a>>,
}

pub fn completion_json<'a>(
    id: &'a str,
    created: i64,
    model: &'a str,
    completion: &'a Completion,
    usage: Usage,
) -> WholeCompletion<'a> {
    WholeCompletion {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [WholeChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: assistant_content(&completion.text, &completion.tool_calls),
                refusal: None,
                tool_calls: OpenAiToolCall::all(&completion.tool_calls),
            },
            logprobs: None,
            finish_reason: completion.finish_reason.as_openai(),
        }],
        usage: WireUsage::from(usage),
    }
}

/// Builds the chunks of one streamed completion.
pub struct ChunkWriter {
    pub id: String,
    pub created: i64,
    pub model: String,
    pub include_usage: bool,
}

/// One `chat.completion.chunk`, serialized straight from borrowed fields: a stream sends one per event, and
/// building a `serde_json::Value` tree for each cost a dozen allocations.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    /// `null` on every chunk before the usage chunk when the client asked for usage; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<()>,
}

/// The usage-only chunk that ends a stream whose client asked for usage.
#[derive(Serialize)]
struct UsageChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [Choice<'a>; 0],
    usage: WireUsage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[Value; 1]>,
}

impl ChunkWriter {
    fn chunk(&self, delta: Delta<'_>, finish_reason: Option<&str>) -> String {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: [Choice { index: 0, delta, logprobs: None, finish_reason }],
            usage: self.include_usage.then_some(()),
        };
        // Serializing borrowed strings and numbers into a String cannot fail.
        serde_json::to_string(&chunk).unwrap_or_default()
    }

    pub fn role(&self) -> String {
        self.chunk(Delta { role: Some("assistant"), content: Some(""), ..Delta::default() }, None)
    }

    /// The chunk for an event, if it has one (usage is sent once, at the end).
    pub fn event(&self, event: &ProviderEvent) -> Option<String> {
        match event {
            ProviderEvent::Text(text) => Some(self.chunk(Delta { content: Some(text), ..Delta::default() }, None)),
            ProviderEvent::ToolCallDelta { index, id, name, arguments } => {
                let mut call = json!({ "index": index, "function": { "arguments": arguments } });
                if let Some(id) = id {
                    call["id"] = json!(id);
                    call["type"] = json!("function");
                }
                if let Some(name) = name {
                    call["function"]["name"] = json!(name);
                }
                Some(self.chunk(Delta { tool_calls: Some([call]), ..Delta::default() }, None))
            }
            ProviderEvent::Finished(reason) => Some(self.chunk(Delta::default(), Some(reason.as_openai()))),
            ProviderEvent::Usage(_) => None,
        }
    }

    /// The usage-only chunk: `choices` is an empty array (never null or missing, which strict clients reject).
    pub fn usage(&self, usage: Usage) -> String {
        let chunk = UsageChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: [],
            usage: usage.into(),
        };
        // Serializing borrowed strings and numbers into a String cannot fail.
        serde_json::to_string(&chunk).unwrap_or_default()
    }
}

/// The `error` member OpenAI clients read, added beside the problem's own members.
pub fn error_member(problem: &Problem) -> Value {
    let error_type = match problem.status {
        400 | 404 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    let code =
        problem.extensions.get("limit").or_else(|| problem.extensions.get("reason")).cloned().unwrap_or(Value::Null);
    json!({
        "message": problem.detail.clone().unwrap_or_else(|| problem.title.clone()),
        "type": error_type,
        "param": problem.extensions.get("param").cloned().unwrap_or(Value::Null),
        "code": code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::FinishReason;

    fn parse(value: Value) -> Result<CompletionRequest, Problem> {
        to_completion_request(serde_json::from_value(value).expect("shape"))
    }

    #[test]
    fn system_and_developer_messages_become_the_system_prompt_and_parts_are_joined() {
        let request = parse(json!({
            "model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, "user": "ignored",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
            ],
            "max_tokens": 10, "max_completion_tokens": 20, "stop": "END", "temperature": 0,
        }))
        .expect("valid");
        assert_eq!(request.system.as_deref(), Some("Be brief.\n\nNo emoji."));
        assert_eq!(request.messages, vec![ChatMessage::text(Role::User, "Hi there")]);
        assert_eq!(request.max_tokens, Some(20));
        assert_eq!(request.stop, vec!["END".to_string()]);
        assert_eq!(request.temperature, Some(0.0));
    }

    #[test]
    fn tool_calls_and_results_carry_the_function_name() {
        let request = parse(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        }))
        .expect("valid");
        assert_eq!(request.messages[1].tool_calls[0].name, "weather");
        assert_eq!(request.messages[2].tool_name.as_deref(), Some("weather"));
        assert_eq!(request.tools[0].name, "weather");
    }

    #[test]
    fn invalid_requests_name_the_parameter() {
        let cases = [
            (json!({"model": "m", "messages": []}), "messages"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}), "n"),
            (json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}), "temperature"),
            (json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}), "messages[0].role"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content",
            ),
            (json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}), "messages"),
            (json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id"),
        ];
        for (body, param) in cases {
            let problem = parse(body.clone()).expect_err("invalid");
            assert_eq!(problem.status, 400, "{body}");
            assert_eq!(problem.extensions["param"], param, "{body}");
            assert_eq!(error_member(&problem)["type"], "invalid_request_error");
        }
    }

    #[test]
    fn chunks_follow_the_openai_shape_with_usage_null_until_the_usage_chunk() {
        let writer =
            ChunkWriter { id: "chatcmpl-1".into(), created: 7, model: "gpt-4o-mini".into(), include_usage: true };
        let role: Value = serde_json::from_str(&writer.role()).expect("json");
        assert_eq!(role["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(role["usage"], Value::Null);
        assert!(role.get("usage").is_some());
        let text: Value =
            serde_json::from_str(&writer.event(&ProviderEvent::Text("Hi".into())).expect("chunk")).expect("json");
        assert_eq!(
            text,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "gpt-4o-mini",
                "choices": [{ "index": 0, "delta": { "content": "Hi" }, "logprobs": null, "finish_reason": null }],
                "usage": null,
            })
        );
        let call = ProviderEvent::ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("weather".into()),
            arguments: "{\"city\"".into(),
        };
        let call: Value = serde_json::from_str(&writer.event(&call).expect("chunk")).expect("json");
        assert_eq!(
            call["choices"][0]["delta"],
            json!({ "tool_calls": [{ "index": 0, "id": "call_1", "type": "function",
                                     "function": { "name": "weather", "arguments": "{\"city\"" } }] })
        );
        let finish: Value =
            serde_json::from_str(&writer.event(&ProviderEvent::Finished(FinishReason::Length)).expect("chunk"))
                .expect("json");
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        let usage: Value =
            serde_json::from_str(&writer.usage(Usage { input_tokens: 3, output_tokens: 4 })).expect("json");
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 7);
        assert!(writer.event(&ProviderEvent::Usage(Usage::default())).is_none());
        let plain = ChunkWriter { include_usage: false, ..writer };
        let chunk: Value = serde_json::from_str(&plain.role()).expect("json");
        assert!(chunk.get("usage").is_none());
    }

    #[test]
    fn whole_completions_carry_tool_calls_and_usage() {
        let completion = Completion {
            text: String::new(),
            tool_calls: vec![ToolCall { id: "call_1".into(), name: "weather".into(), arguments: "{}".into() }],
            finish_reason: FinishReason::ToolCalls,
            usage: None,
        };
        let usage = Usage { input_tokens: 1, output_tokens: 2 };
        let body = serde_json::to_value(completion_json("chatcmpl-1", 7, "m", &completion, usage)).expect("json");
        assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(body["usage"], json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}));
    }

    #[test]
    fn whole_completions_of_text_match_openais_shape() {
        let completion =
            Completion { text: "Hello".into(), tool_calls: Vec::new(), finish_reason: FinishReason::Stop, usage: None };
        let usage = Usage { input_tokens: 1, output_tokens: 2 };
        let body = serde_json::to_value(completion_json("chatcmpl-1", 7, "m", &completion, usage)).expect("json");
        assert_eq!(
            body,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": "Hello", "refusal": null },
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": { "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3 },
            })
        );
    }
}
