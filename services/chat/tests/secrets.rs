//! Provider keys and callers' credentials never show up in logs, error responses or metrics, even when a
//! provider echoes the key back.

mod common;

use axum::http::StatusCode;
use common::providers::{Behaviour, MockProvider, Wire};
use common::{API_KEY, Captured, Plan, World, client, test_options};
use serde_json::json;

const PROVIDER_KEY: &str = "sk-upstream-secret-key-42";

/// Single-threaded, so that the log subscriber set for this thread sees every task of the service.
#[tokio::test(flavor = "current_thread")]
async fn a_provider_key_never_shows_up_in_captured_logs_responses_or_metrics() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let gemini = MockProvider::start(Wire::Gemini).await;
    let specs = [
        world.provider_spec("openai", &mock, Wire::OpenAi, &["gpt-4o-mini"]),
        world.provider_spec("gemini", &gemini, Wire::Gemini, &["gemini-2.5-flash"]),
    ];
    let chat = world.start_chat(&specs, &Plan::default(), "gpt-4o-mini", test_options()).await;
    let echo = |status: u16| Behaviour::Status {
        status,
        retry_after: None,
        body: json!({ "error": { "message": format!("Incorrect API key provided: {PROVIDER_KEY}."), "type": "invalid_request_error", "code": "invalid_api_key" } }),
    };
    let mut bodies = Vec::new();
    let request = |model: &str, stream: bool| json!({ "model": model, "stream": stream, "messages": [{ "role": "user", "content": "hi" }] });

    mock.always(echo(401));
    let response = client()
        .post(format!("{}/v1/chat/completions", chat.url))
        .bearer_auth(API_KEY)
        .json(&request("gpt-4o-mini", false))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    bodies.push(response.text().await.expect("body"));
    // A 400 whose message quotes the key: the message reaches the caller, the key does not.
    mock.always(Behaviour::Status { status: 400, retry_after: None, body: json!({ "error": { "message": format!("Bad value near {PROVIDER_KEY}"), "type": "invalid_request_error" } }) });
    let response = client()
        .post(format!("{}/v1/chat/completions", chat.url))
        .bearer_auth(API_KEY)
        .json(&request("gpt-4o-mini", true))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.text().await.expect("body");
    assert!(body.contains("Bad value near [REDACTED]"), "{body}");
    bodies.push(body);
    gemini.always(Behaviour::Status { status: 400, retry_after: None, body: json!({ "error": { "code": 400, "message": format!("API key not valid: {PROVIDER_KEY}"), "status": "INVALID_ARGUMENT" } }) });
    let response = client()
        .post(format!("{}/v1/chat/completions", chat.url))
        .bearer_auth(API_KEY)
        .json(&request("gemini-2.5-flash", true))
        .send()
        .await
        .expect("post");
    bodies.push(response.text().await.expect("body"));
    gemini.always(Behaviour::answer(&["fine"]));
    let response = client()
        .post(format!("{}/v1/chat/completions", chat.url))
        .bearer_auth(API_KEY)
        .json(&request("gemini-2.5-flash", true))
        .send()
        .await
        .expect("post");
    bodies.push(response.text().await.expect("body"));
    let metrics =
        client().get(format!("{}/metrics", chat.url)).send().await.expect("metrics").text().await.expect("text");
    chat.wait_for_usage(1).await;

    let logs = captured.text();
    assert!(logs.contains("provider attempt failed"), "the capture sees the service's logs: {logs}");
    assert!(metrics.contains("chat_upstream_attempts_total"));
    for (place, text) in
        [("logs", &logs), ("metrics", &metrics)].into_iter().chain(bodies.iter().map(|body| ("response", body)))
    {
        assert!(!text.contains(PROVIDER_KEY), "the provider key is in the {place}: {text}");
        assert!(!text.contains(API_KEY), "the caller's API key is in the {place}: {text}");
    }
    // Gemini's key went in its header, never in the URL.
    assert!(gemini.requests().iter().all(|request| !request.query.clone().unwrap_or_default().contains("key")));
}
