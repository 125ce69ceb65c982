//! One provider interface and one event and error model for every upstream.
//!
//! Deciding lives in the adapters ([`openai`], [`anthropic`], [`gemini`]): each turns a [`CompletionRequest`]
//! into the provider's HTTP request ([`UpstreamRequest`]), its stream into [`ProviderEvent`]s, its whole
//! response into a [`Completion`] and its errors into a [`ProviderError`]. They are pure and unit-tested
//! against recorded wire samples. Doing (HTTP, timeouts) lives in [`client`]; the SSE framing in [`sse`].

pub mod anthropic;
pub mod client;
pub mod gemini;
pub mod openai;
pub mod sse;

use std::fmt;
use std::time::Duration;

use saaschat_platform::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

/// The kinds of upstream the operator can configure (`AIProvider.spec.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Gemini,
    Groq,
    OpenAiCompatible,
}

impl ProviderKind {
    pub fn from_config(name: &str) -> Option<ProviderKind> {
        match name {
            "openai" => Some(ProviderKind::OpenAi),
            "anthropic" => Some(ProviderKind::Anthropic),
            "gemini" => Some(ProviderKind::Gemini),
            "groq" => Some(ProviderKind::Groq),
            "openaiCompatible" => Some(ProviderKind::OpenAiCompatible),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Groq => "groq",
            ProviderKind::OpenAiCompatible => "openaiCompatible",
        }
    }

    /// The adapter that speaks this kind's wire format.
    pub fn adapter(self) -> &'static dyn Provider {
        match self {
            ProviderKind::OpenAi => &openai::OpenAi { dialect: openai::Dialect::OpenAi },
            ProviderKind::Groq => &openai::OpenAi { dialect: openai::Dialect::Groq },
            ProviderKind::OpenAiCompatible => &openai::OpenAi { dialect: openai::Dialect::Compatible },
            ProviderKind::Anthropic => &anthropic::Anthropic,
            ProviderKind::Gemini => &gemini::Gemini,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    /// The result of a tool call, answering the assistant message that asked for it.
    Tool,
}

/// A tool call the model asked for; `arguments` is the JSON text of the arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// For assistant messages that called tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For tool messages: the call they answer, and its function name (Gemini matches results by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

impl ChatMessage {
    pub fn text(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None, tool_name: None }
    }
}

/// What to ask a model, independent of the provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The model as the provider names it.
    pub model: String,
    pub system: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub tools: Vec<ToolDefinition>,
}

/// Token counts as the provider reported them (totals so far, never increments).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// A reason this service has no name for, as the provider spelled it.
    Other(String),
}

impl FinishReason {
    /// The OpenAI spelling, which the compatible API and the SSE events use.
    pub fn as_openai(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Other(other) => other,
        }
    }
}

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderEvent {
    Text(String),
    /// A fragment of a tool call: `id` and `name` come with the first fragment of call `index`.
    ToolCallDelta {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// The latest totals; replaces any earlier usage event.
    Usage(Usage),
    Finished(FinishReason),
}

/// A whole answer (non-streaming).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Option<Usage>,
}

/// Where a timeout struck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Idle,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            TimeoutPhase::Connect => "connecting",
            TimeoutPhase::FirstByte => "waiting for the first byte",
            TimeoutPhase::Idle => "waiting for the next chunk",
        })
    }
}

/// Every way an upstream can fail, whatever the provider. Messages never contain a key or a header value;
/// upstream texts are cut short, since they are shown to callers.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("the provider is rate limiting requests")]
    RateLimited { retry_after: Option<Duration> },
    /// A spend limit or exhausted quota: waiting does not help, so it is never retried.
    #[error("the provider account's quota or spend limit is exhausted")]
    QuotaExhausted,
    #[error("the provider is overloaded")]
    Overloaded { retry_after: Option<Duration> },
    #[error("the conversation is too long for the model's context window")]
    ContextTooLong,
    #[error("the provider refused the service's credentials")]
    AuthenticationFailed,
    #[error("the provider refused the request: {0}")]
    InvalidRequest(String),
    #[error("the provider failed with HTTP {status}")]
    Upstream { status: u16 },
    #[error("the provider timed out {0}")]
    Timeout(TimeoutPhase),
    #[error("the connection to the provider failed: {0}")]
    Connection(String),
    #[error("the provider reported an error mid-stream: {0}")]
    Stream(String),
    #[error("the provider's response could not be understood: {0}")]
    Protocol(String),
    #[error("the provider is failing and its circuit breaker is open")]
    CircuitOpen,
    /// One of the tenant's own limits on the provider (`requestsPerMinute`, `maxConcurrentRequests` of the
    /// AIProvider) is reached; the provider was not called.
    #[error("the tenant's {limit} limit for this provider is reached")]
    Throttled { limit: &'static str, retry_after: Option<Duration> },
}

impl ProviderError {
    /// Whether the same request may succeed if sent again to the same provider.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Overloaded { .. }
                | ProviderError::Upstream { .. }
                | ProviderError::Timeout(_)
                | ProviderError::Connection(_)
                | ProviderError::Stream(_)
        )
    }

    /// Whether the next model or provider may succeed where this one failed.
    pub fn allows_fallback(&self) -> bool {
        self.is_transient()
            || matches!(
                self,
                ProviderError::QuotaExhausted | ProviderError::CircuitOpen | ProviderError::Throttled { .. }
            )
    }

    /// Whether the failure says the provider is unhealthy (what the circuit breaker counts). Refusals of the
    /// request itself (too long, invalid) say nothing about the provider.
    pub fn counts_against_provider(&self) -> bool {
        matches!(
            self,
            ProviderError::Overloaded { .. }
                | ProviderError::Upstream { .. }
                | ProviderError::Timeout(_)
                | ProviderError::Connection(_)
                | ProviderError::Stream(_)
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after }
            | ProviderError::Overloaded { retry_after }
            | ProviderError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::QuotaExhausted => "quota_exhausted",
            ProviderError::Overloaded { .. } => "overloaded",
            ProviderError::ContextTooLong => "context_too_long",
            ProviderError::AuthenticationFailed => "authentication_failed",
            ProviderError::InvalidRequest(_) => "invalid_request",
            ProviderError::Upstream { .. } => "upstream_error",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Connection(_) => "connection",
            ProviderError::Stream(_) => "stream_error",
            ProviderError::Protocol(_) => "protocol",
            ProviderError::CircuitOpen => "circuit_open",
            ProviderError::Throttled { .. } => "throttled",
        }
    }
}

/// The longest upstream text carried into an error message.
const MAX_UPSTREAM_TEXT: usize = 300;

/// Upstream error text fit to show a caller: one line, cut short.
pub fn upstream_text(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_UPSTREAM_TEXT) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// The HTTP request an adapter wants sent. Headers that carry the key are [`Secret`]s.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub url: Url,
    pub headers: Vec<(&'static str, Secret<String>)>,
    /// The JSON body, serialized.
    pub body: Vec<u8>,
}

/// Serializes a request body. Only a map with keys that are not strings could fail, and no body has one.
pub fn json_body(body: &impl Serialize) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(body).map_err(|error| ProviderError::Protocol(format!("the request body: {error}")))
}

/// What a configured upstream is: its wire format, where it is, and its key.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Parsed and checked once, when the configuration is loaded.
    pub base_url: Url,
    pub api_key: Secret<String>,
}

impl Endpoint {
    /// The base URL with `path` after its own path and with `query`. Only those two parts are set, so the
    /// scheme and host, parsed when the configuration was loaded, are not parsed again for every request.
    pub fn url(&self, path: &str, query: Option<&str>) -> Url {
        let mut url = self.base_url.clone();
        let joined = format!("{}/{}", url.path().trim_end_matches('/'), path.trim_start_matches('/'));
        url.set_path(&joined);
        url.set_query(query);
        url
    }
}

/// Turns the bytes of one SSE event into provider events. Stateful: Anthropic sends input tokens in its first
/// event and output tokens in a later one.
pub trait StreamDecoder: Send {
    /// `event` is the SSE `event:` field, if any.
    fn decode(&mut self, event: Option<&str>, data: &str) -> Result<Vec<ProviderEvent>, ProviderError>;

    /// Whether the stream has said it is over (`[DONE]`, `message_stop`); more bytes are then ignored.
    fn is_done(&self) -> bool;
}

/// The provider interface: pure translation between this service's model and one wire format.
pub trait Provider: Send + Sync {
    fn build_request(
        &self,
        endpoint: &Endpoint,
        request: &CompletionRequest,
        stream: bool,
    ) -> Result<UpstreamRequest, ProviderError>;

    fn decoder(&self) -> Box<dyn StreamDecoder>;

    fn parse_completion(&self, body: &[u8]) -> Result<Completion, ProviderError>;

    /// The error an unsuccessful HTTP response stands for. `retry_after` is the parsed `Retry-After` header.
    fn classify_error(&self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> ProviderError;
}

/// Parses `Retry-After` (seconds; an HTTP date counts as unknown) or OpenAI's `retry-after-ms`.
pub fn parse_retry_after(seconds: Option<&str>, milliseconds: Option<&str>) -> Option<Duration> {
    if let Some(ms) = milliseconds.and_then(|value| value.trim().parse::<f64>().ok()).filter(|ms| *ms >= 0.0) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    seconds
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The classification shared by providers for statuses whose meaning does not depend on the body.
fn classify_status(status: u16, retry_after: Option<Duration>) -> ProviderError {
    match status {
        401 | 403 => ProviderError::AuthenticationFailed,
        408 => ProviderError::Timeout(TimeoutPhase::FirstByte),
        413 => ProviderError::ContextTooLong,
        429 => ProviderError::RateLimited { retry_after },
        503 | 529 => ProviderError::Overloaded { retry_after },
        status if status >= 500 => ProviderError::Upstream { status },
        status => ProviderError::InvalidRequest(format!("HTTP {status}")),
    }
}

/// Whether an error message says the input was too long (every provider words it differently).
fn mentions_context_length(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "context length",
        "context_length",
        "context window",
        "prompt is too long",
        "too many tokens",
        "exceeds the maximum number of tokens",
        "input token count",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_extend_the_base_path_with_one_slash_and_set_the_query() {
        let endpoint =
            |base: &str| Endpoint { base_url: base.parse().expect("url"), api_key: Secret::new(String::new()) };
        for base in ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/"] {
            let url = endpoint(base).url("chat/completions", None);
            assert_eq!(url.as_str(), "http://127.0.0.1:8000/v1/chat/completions");
        }
        let url = endpoint("https://example.com").url("/v1beta/models/m:streamGenerateContent", Some("alt=sse"));
        assert_eq!(url.as_str(), "https://example.com/v1beta/models/m:streamGenerateContent?alt=sse");
        let url = endpoint("https://example.com/v1?stale=1").url("chat/completions", None);
        assert_eq!(url.as_str(), "https://example.com/v1/chat/completions", "a query in the base is not carried over");
    }

    #[test]
    fn retry_after_prefers_milliseconds_and_ignores_dates() {
        assert_eq!(parse_retry_after(Some("2"), None), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some("2"), Some("150")), Some(Duration::from_millis(150)));
        assert_eq!(parse_retry_after(Some("0.5"), None), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), None), None);
        assert_eq!(parse_retry_after(Some("-1"), None), None);
        assert_eq!(parse_retry_after(None, None), None);
    }

    #[test]
    fn statuses_map_to_the_error_model() {
        assert_eq!(classify_status(401, None), ProviderError::AuthenticationFailed);
        assert_eq!(
            classify_status(429, Some(Duration::from_secs(3))),
            ProviderError::RateLimited { retry_after: Some(Duration::from_secs(3)) }
        );
        assert_eq!(classify_status(529, None), ProviderError::Overloaded { retry_after: None });
        assert_eq!(classify_status(502, None), ProviderError::Upstream { status: 502 });
        assert_eq!(classify_status(413, None), ProviderError::ContextTooLong);
        assert_eq!(classify_status(404, None), ProviderError::InvalidRequest("HTTP 404".into()));
    }

    #[test]
    fn which_errors_retry_fall_back_and_trip_the_breaker() {
        let rate_limited = ProviderError::RateLimited { retry_after: None };
        assert!(
            rate_limited.is_transient() && rate_limited.allows_fallback() && !rate_limited.counts_against_provider()
        );
        assert!(!ProviderError::QuotaExhausted.is_transient() && ProviderError::QuotaExhausted.allows_fallback());
        assert!(ProviderError::Upstream { status: 500 }.counts_against_provider());
        for refusal in [
            ProviderError::ContextTooLong,
            ProviderError::InvalidRequest("x".into()),
            ProviderError::AuthenticationFailed,
        ] {
            assert!(
                !refusal.is_transient() && !refusal.allows_fallback() && !refusal.counts_against_provider(),
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn upstream_text_is_one_short_line() {
        assert_eq!(upstream_text("bad\n  request "), "bad request");
        let long = "x".repeat(1000);
        assert_eq!(upstream_text(&long).chars().count(), MAX_UPSTREAM_TEXT + 1);
    }

    #[test]
    fn context_length_wordings_are_recognised() {
        assert!(mentions_context_length("This model's maximum context length is 128000 tokens."));
        assert!(mentions_context_length("prompt is too long: 210000 tokens > 200000 maximum"));
        assert!(mentions_context_length(
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
        ));
        assert!(!mentions_context_length("invalid temperature"));
    }
}
