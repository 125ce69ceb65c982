//! Local stand-ins for the providers, speaking each real wire format: OpenAI Chat Completions (also Groq and
//! OpenAI-compatible servers), Anthropic Messages and Gemini `generateContent` / `streamGenerateContent?alt=sse`.
//! Streams include keep-alive comments and `ping` events; a script of behaviours makes them fail the ways real
//! providers do (429 with retry-after, 5xx, overload, an error event mid-stream, a stall, a reset connection).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

pub const INPUT_TOKENS: u64 = 11;
pub const OUTPUT_TOKENS: u64 = 7;

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answers with these text chunks, each after `delay`.
    Answer { chunks: Vec<String>, delay: Duration },
    /// An HTTP error with this body and optional `retry-after`.
    Status { status: u16, retry_after: Option<&'static str>, body: Value },
    /// One chunk, then an error event in the stream.
    ErrorMidStream,
    /// Response headers, then nothing.
    StallBeforeFirst,
    /// One chunk, then nothing.
    StallAfterFirst,
    /// One chunk, then the connection breaks.
    ResetAfterFirst,
}

impl Behaviour {
    pub fn answer(chunks: &[&str]) -> Behaviour {
        Behaviour::Answer { chunks: chunks.iter().map(|chunk| chunk.to_string()).collect(), delay: Duration::ZERO }
    }

    pub fn slow(chunks: usize, delay: Duration) -> Behaviour {
        Behaviour::Answer { chunks: (0..chunks).map(|index| format!("word{index} ")).collect(), delay }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct MockState {
    wire: Wire,
    script: Mutex<VecDeque<Behaviour>>,
    fallback: Mutex<Behaviour>,
    pub requests: Mutex<Vec<Recorded>>,
}

#[derive(Clone)]
pub struct MockProvider {
    pub base_url: String,
    pub state: Arc<MockState>,
}

impl MockProvider {
    pub async fn start(wire: Wire) -> MockProvider {
        let state = Arc::new(MockState {
            wire,
            script: Mutex::new(VecDeque::new()),
            fallback: Mutex::new(Behaviour::answer(&["Hello", " there", "!"])),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/messages", post(handle))
            .route("/v1beta/models/{action}", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let base_url = match wire {
            Wire::OpenAi => format!("http://{address}/v1"),
            Wire::Anthropic | Wire::Gemini => format!("http://{address}"),
        };
        MockProvider { base_url, state }
    }

    /// The behaviour of every request not covered by the script.
    pub fn always(&self, behaviour: Behaviour) {
        *self.state.fallback.lock().expect("lock") = behaviour;
    }

    /// The behaviours of the next requests, in order.
    pub fn then(&self, behaviour: Behaviour) {
        self.state.script.lock().expect("lock").push_back(behaviour);
    }

    /// Forgets the scripted behaviours not used yet.
    pub fn clear_script(&self) {
        self.state.script.lock().expect("lock").clear();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().expect("lock").len()
    }
}

async fn handle(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let stream = match state.wire {
        Wire::Gemini => parts.uri.path().ends_with(":streamGenerateContent"),
        _ => body["stream"] == json!(true),
    };
    let include_usage = body["stream_options"]["include_usage"] == json!(true);
    state.requests.lock().expect("lock").push(Recorded {
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let behaviour =
        state.script.lock().expect("lock").pop_front().unwrap_or_else(|| state.fallback.lock().expect("lock").clone());
    let model = match state.wire {
        Wire::Gemini => {
            parts.uri.path().rsplit('/').next().unwrap_or_default().split(':').next().unwrap_or_default().to_string()
        }
        _ => body["model"].as_str().unwrap_or_default().to_string(),
    };
    match behaviour {
        Behaviour::Status { status, retry_after, body } => {
            let mut response = (StatusCode::from_u16(status).expect("status"), axum::Json(body)).into_response();
            if let Some(retry_after) = retry_after {
                response.headers_mut().insert("retry-after", retry_after.parse().expect("header"));
            }
            response
        }
        Behaviour::Answer { chunks, delay } if !stream => {
            let text: String = chunks.concat();
            let _ = delay;
            axum::Json(whole(state.wire, &model, &text)).into_response()
        }
        behaviour => sse(stream_frames(state.wire, &model, behaviour, include_usage)),
    }
}

fn whole(wire: Wire, model: &str, text: &str) -> Value {
    match wire {
        Wire::OpenAi => json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS},
        }),
        Wire::Anthropic => json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS},
        }),
        Wire::Gemini => json!({
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS, "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS},
            "modelVersion": model,
        }),
    }
}

/// One piece of a mock stream.
enum Frame {
    Bytes(String, Duration),
    Hang,
    Break,
}

fn data(value: Value) -> String {
    format!("data: {value}\n\n")
}

fn event(name: &str, value: Value) -> String {
    format!("event: {name}\ndata: {value}\n\n")
}

fn text_frame(wire: Wire, model: &str, text: &str) -> String {
    match wire {
        Wire::OpenAi => {
            data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}]}))
        }
        Wire::Anthropic => event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ),
        Wire::Gemini => {
            data(json!({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
            "usageMetadata": {"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": 1, "totalTokenCount": INPUT_TOKENS + 1}, "modelVersion": model}))
        }
    }
}

fn opening(wire: Wire, model: &str) -> Vec<String> {
    match wire {
        Wire::OpenAi => vec![
            ": keep-alive\n\n".into(),
            data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]})),
        ],
        Wire::Anthropic => vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant",
                "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1}}}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
        ],
        Wire::Gemini => vec![],
    }
}

fn closing(wire: Wire, model: &str, include_usage: bool) -> Vec<String> {
    match wire {
        Wire::OpenAi => {
            let mut frames = vec![data(
                json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]}),
            )];
            if include_usage {
                frames.push(data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
                    "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}})));
            }
            frames.push("data: [DONE]\n\n".into());
            frames
        }
        Wire::Anthropic => vec![
            event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": OUTPUT_TOKENS}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ],
        Wire::Gemini => vec![data(
            json!({"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS, "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS}, "modelVersion": model}),
        )],
    }
}

fn error_frame(wire: Wire) -> String {
    match wire {
        Wire::OpenAi => data(
            json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}}),
        ),
        Wire::Anthropic => {
            event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        }
        Wire::Gemini => {
            data(json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}))
        }
    }
}

fn stream_frames(wire: Wire, model: &str, behaviour: Behaviour, include_usage: bool) -> Vec<Frame> {
    let now = |text: String| Frame::Bytes(text, Duration::ZERO);
    let mut frames: Vec<Frame> = opening(wire, model).into_iter().map(now).collect();
    match behaviour {
        Behaviour::Answer { chunks, delay } => {
            frames.extend(chunks.iter().map(|chunk| Frame::Bytes(text_frame(wire, model, chunk), delay)));
            frames.extend(closing(wire, model, include_usage).into_iter().map(now));
        }
        Behaviour::ErrorMidStream => {
            frames.push(now(text_frame(wire, model, "Partial")));
            frames.push(now(error_frame(wire)));
        }
        Behaviour::StallBeforeFirst => frames.push(Frame::Hang),
        Behaviour::StallAfterFirst => {
            frames.push(now(text_frame(wire, model, "Partial")));
            frames.push(Frame::Hang);
        }
        Behaviour::ResetAfterFirst => {
            frames.push(now(text_frame(wire, model, "Partial")));
            frames.push(Frame::Break);
        }
        Behaviour::Status { .. } => unreachable!("statuses are answered before streaming"),
    }
    frames
}

fn sse(frames: Vec<Frame>) -> Response {
    let stream = futures::stream::iter(frames).then(|frame| async move {
        match frame {
            Frame::Bytes(text, delay) => {
                tokio::time::sleep(delay).await;
                Some(Ok::<Bytes, std::io::Error>(Bytes::from(text)))
            }
            Frame::Hang => {
                std::future::pending::<()>().await;
                None
            }
            Frame::Break => {
                // Long enough for the chunk before to be flushed to the client first.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset")))
            }
        }
    });
    let stream = stream.take_while(|item| std::future::ready(item.is_some())).filter_map(std::future::ready);
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert("content-type", "text/event-stream".parse().expect("header"));
    response
}
