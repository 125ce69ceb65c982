//! The OpenAI-compatible API over HTTP, through every provider's wire format, with the failures real
//! providers have, and the plan limits, against real PostgreSQL and Redis.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::providers::{Behaviour, INPUT_TOKENS, MockProvider, OUTPUT_TOKENS, Wire};
use common::{API_KEY, MODELS_ONLY_API_KEY, Plan, World, client, parse_sse, test_options};
use serde_json::{Value, json};

fn completion(model: &str, stream: bool) -> Value {
    json!({
        "model": model, "stream": stream, "stream_options": if stream { json!({ "include_usage": true }) } else { Value::Null },
        "messages": [{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "Say hello" }],
        "temperature": 0.5, "max_tokens": 50,
    })
}

async fn post(chat: &common::Chat, token: &str, body: &Value) -> reqwest::Response {
    client().post(format!("{}/v1/chat/completions", chat.url)).bearer_auth(token).json(body).send().await.expect("post")
}

/// The text and usage of a streamed completion, checking the chunk shapes on the way.
fn read_stream(body: &str) -> (String, Option<Value>, Vec<Value>) {
    let (events, _) = parse_sse(body);
    assert_eq!(events.last().map(|event| event.data.as_str()), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(common::SseEvent::json).collect();
    let mut text = String::new();
    let mut usage = None;
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        let choices = chunk["choices"].as_array().expect("choices is always an array");
        if choices.is_empty() {
            usage = Some(chunk["usage"].clone());
        } else {
            assert!(chunk.get("usage").is_some_and(Value::is_null), "usage is null on content chunks: {chunk}");
            text.push_str(choices[0]["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    (text, usage, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wire_format_answers_whole_and_streamed_with_the_providers_usage() {
    let world = World::new().await;
    let openai = MockProvider::start(Wire::OpenAi).await;
    let anthropic = MockProvider::start(Wire::Anthropic).await;
    let gemini = MockProvider::start(Wire::Gemini).await;
    let groq = MockProvider::start(Wire::OpenAi).await;
    let vllm = MockProvider::start(Wire::OpenAi).await;
    let mut groq_spec = world.provider_spec("groq", &groq, Wire::OpenAi, &["llama-3.3-70b"]);
    groq_spec.kind = "groq";
    let mut vllm_spec = world.provider_spec("vllm", &vllm, Wire::OpenAi, &["qwen"]);
    vllm_spec.kind = "openaiCompatible";
    let specs = [
        world.provider_spec("openai", &openai, Wire::OpenAi, &["gpt-4o-mini"]),
        world.provider_spec("anthropic", &anthropic, Wire::Anthropic, &["claude-sonnet-4-5"]),
        world.provider_spec("gemini", &gemini, Wire::Gemini, &["gemini-2.5-flash"]),
        groq_spec,
        vllm_spec,
    ];
    let chat = world.start_chat(&specs, &Plan::default(), "gpt-4o-mini", test_options()).await;
    let token = world.auth.token("alice");

    let models: Value = client()
        .get(format!("{}/v1/models", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> =
        models["data"].as_array().expect("data").iter().filter_map(|model| model["id"].as_str()).collect();
    assert_eq!(ids, ["gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash", "llama-3.3-70b", "qwen"]);
    assert_eq!(models["object"], "list");

    for model in ids {
        let whole: Value = post(&chat, &token, &completion(model, false)).await.json().await.expect("json");
        assert_eq!(whole["object"], "chat.completion", "{model}: {whole}");
        assert_eq!(whole["model"], model);
        assert_eq!(whole["choices"][0]["message"]["content"], "Hello there!", "{model}");
        assert_eq!(whole["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            whole["usage"],
            json!({ "prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS }),
            "{model}"
        );

        let response = post(&chat, &token, &completion(model, true)).await;
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let (text, usage, chunks) = read_stream(&response.text().await.expect("body"));
        assert_eq!(text, "Hello there!", "{model}");
        assert_eq!(
            usage,
            Some(
                json!({ "prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS })
            ),
            "{model}"
        );
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(chunks.iter().any(|chunk| chunk["choices"][0]["finish_reason"] == "stop"), "{model}");
    }
    let rows = chat.wait_for_usage(10).await;
    assert!(rows.iter().all(|row| row.3 == INPUT_TOKENS as i64 && row.4 == OUTPUT_TOKENS as i64), "{rows:?}");

    // Each provider got its own wire format, and its key only in its own header.
    let anthropic_request = &anthropic.requests()[0];
    assert_eq!(anthropic_request.path, "/v1/messages");
    assert_eq!(anthropic_request.headers["x-api-key"], "sk-upstream-secret-key-42");
    assert_eq!(anthropic_request.headers["anthropic-version"], "2023-06-01");
    assert_eq!(anthropic_request.body["system"], "Be brief.");
    assert_eq!(anthropic_request.body["max_tokens"], 50);
    let gemini_requests = gemini.requests();
    assert_eq!(gemini_requests[0].path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(gemini_requests[1].path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_eq!(gemini_requests[1].query.as_deref(), Some("alt=sse"));
    assert_eq!(gemini_requests[1].headers["x-goog-api-key"], "sk-upstream-secret-key-42");
    assert_eq!(gemini_requests[1].body["systemInstruction"], json!({ "parts": [{ "text": "Be brief." }] }));
    let openai_request = &openai.requests()[1];
    assert_eq!(openai_request.headers["authorization"], "Bearer sk-upstream-secret-key-42");
    assert_eq!(openai_request.body["stream_options"], json!({ "include_usage": true }));
    assert_eq!(openai_request.body["max_completion_tokens"], 50);
    assert_eq!(groq.requests()[0].body["max_tokens"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_fall_back_and_surface_as_the_error_model() {
    let world = World::new().await;
    let primary = MockProvider::start(Wire::Anthropic).await;
    let backup = MockProvider::start(Wire::OpenAi).await;
    let specs = [
        world.provider_spec("anthropic", &primary, Wire::Anthropic, &["shared-model"]),
        world.provider_spec("backup", &backup, Wire::OpenAi, &["shared-model"]),
    ];
    // The breaker is tested on its own below; here every failure must reach the provider.
    let mut options = test_options();
    options.resilience.breaker.failure_threshold = 1000;
    let chat = world.start_chat(&specs, &Plan::default(), "shared-model", options).await;
    let token = world.auth.token("alice");
    let overloaded = json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } });
    let rate_limited = json!({ "type": "error", "error": { "type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit" } });

    // A 429 with a short retry-after is retried on the same provider.
    primary.then(Behaviour::Status { status: 429, retry_after: Some("0"), body: rate_limited.clone() });
    let response = post(&chat, &token, &completion("shared-model", true)).await;
    assert_eq!(read_stream(&response.text().await.expect("body")).0, "Hello there!");
    assert_eq!((primary.request_count(), backup.request_count()), (2, 0));

    // A provider that keeps failing (529 overloaded) is left for the next one.
    primary.always(Behaviour::Status { status: 529, retry_after: None, body: overloaded });
    let response = post(&chat, &token, &completion("shared-model", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!((primary.request_count(), backup.request_count()), (2 + 3, 1));
    let rows = chat.wait_for_usage(2).await;
    assert_eq!(rows[1].2, "backup", "usage is recorded for the provider that answered");

    // Failures before the first byte (a stall, a reset, an error event) fall back too: the client sees one answer.
    primary.always(Behaviour::answer(&["unused"]));
    for failure in [Behaviour::StallBeforeFirst, Behaviour::ResetAfterFirst, Behaviour::ErrorMidStream] {
        let before = backup.request_count();
        for _ in 0..3 {
            primary.then(failure.clone());
        }
        let label = format!("{failure:?}");
        if matches!(failure, Behaviour::StallBeforeFirst) {
            let response = post(&chat, &token, &completion("shared-model", true)).await;
            assert_eq!(read_stream(&response.text().await.expect("body")).0, "Hello there!", "{label}");
            assert_eq!(backup.request_count(), before + 1, "{label}");
        } else {
            // These produce a first chunk, so the answer is committed to the primary and fails mid-stream.
            let response = post(&chat, &token, &completion("shared-model", true)).await;
            let (events, _) = parse_sse(&response.text().await.expect("body"));
            let last = events.last().expect("event").json();
            assert!(last["error"]["message"].is_string(), "{label}: {events:?}");
            assert_ne!(
                events.last().map(|event| event.data.as_str()),
                Some("[DONE]"),
                "{label}: no [DONE] after an error"
            );
            let text: String = events
                .iter()
                .map(|event| event.json()["choices"][0]["delta"]["content"].as_str().unwrap_or_default().to_string())
                .collect();
            assert_eq!(text, "Partial", "{label}: the partial text is not silently dropped");
            primary.clear_script();
        }
    }

    // Every candidate failing: the caller gets the last error as a problem with the OpenAI error member.
    primary.always(Behaviour::Status {
        status: 401,
        retry_after: None,
        body: json!({ "type": "error", "error": { "type": "authentication_error", "message": "invalid x-api-key" } }),
    });
    let response = post(&chat, &token, &completion("shared-model", false)).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let problem: Value = response.json().await.expect("json");
    assert_eq!(problem["reason"], "authentication_failed");
    assert_eq!(problem["error"]["type"], "api_error");
    assert!(problem["error"]["message"].is_string());

    // A context-length refusal is the caller's problem: no fallback, a 400 that says so.
    let before = backup.request_count();
    primary.always(Behaviour::Status { status: 400, retry_after: None, body: json!({ "type": "error", "error": { "type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum" } }) });
    let response = post(&chat, &token, &completion("shared-model", false)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.expect("json")["type"], "https://saaschat.io/problems/context-too-long");
    assert_eq!(backup.request_count(), before);

    // After a stream started, a stall ends it with an error once the idle timeout passes.
    primary.always(Behaviour::StallAfterFirst);
    let started = std::time::Instant::now();
    let response = post(&chat, &token, &completion("shared-model", true)).await;
    let (events, _) = parse_sse(&response.text().await.expect("body"));
    assert_eq!(events.last().expect("event").json()["error"]["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_against_a_limit_of_ten_yield_exactly_ten_successes() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let specs = [world.provider_spec("openai", &mock, Wire::OpenAi, &["gpt-4o-mini"])];
    let plan = Plan { requests_per_minute: 10, ..Plan::default() };
    let chat = world.start_chat(&specs, &plan, "gpt-4o-mini", test_options()).await;
    let token = world.auth.token("alice");
    // The limit counts per calendar minute: start the burst well inside one, or two minutes' worth would pass.
    let into_minute = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() % 60;
    if into_minute > 40 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    let requests = (0..50).map(|_| {
        let (url, token) = (chat.url.clone(), token.clone());
        tokio::spawn(async move {
            let response = client()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(token)
                .json(&completion("gpt-4o-mini", false))
                .send()
                .await
                .expect("post");
            let status = response.status();
            let retry_after = response.headers().get("retry-after").is_some();
            (status, retry_after, response.json::<Value>().await.expect("json"))
        })
    });
    let results = futures::future::join_all(requests).await;
    let ok =
        results.iter().filter(|result| result.as_ref().is_ok_and(|(status, _, _)| *status == StatusCode::OK)).count();
    assert_eq!(ok, 10);
    for (status, retry_after, body) in
        results.into_iter().map(|result| result.expect("task")).filter(|(status, _, _)| *status != StatusCode::OK)
    {
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(retry_after);
        assert_eq!(body["limit"], "requestsPerMinute", "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }
    assert_eq!(mock.request_count(), 10, "refused requests never reached the provider");
    // Another user has a minute of their own.
    let other = post(&chat, &world.auth.token("bob"), &completion("gpt-4o-mini", false)).await;
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_token_quota_and_the_allowed_models_are_enforced_before_any_provider_is_called() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let specs = [world.provider_spec("openai", &mock, Wire::OpenAi, &["gpt-4o-mini", "gpt-4o"])];
    // Each request reserves about 60 tokens (its messages plus max_tokens 50) and uses 18.
    let plan = Plan { tokens_per_month: 100, allowed_models: vec!["gpt-4o-mini".into()], ..Plan::default() };
    let chat = world.start_chat(&specs, &plan, "gpt-4o-mini", test_options()).await;
    let token = world.auth.token("alice");

    let forbidden = post(&chat, &token, &completion("gpt-4o", false)).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let problem: Value = forbidden.json().await.expect("json");
    assert_eq!(problem["limit"], "allowedModels");
    assert_eq!(problem["error"]["type"], "permission_error");
    let unknown = post(&chat, &token, &completion("gpt-5", false)).await;
    assert_eq!(unknown.status(), StatusCode::FORBIDDEN, "a model outside the plan is refused, known or not");

    // The settled usage (18) replaces each reservation, so the quota is spent by real use.
    let mut successes = 0;
    let refusal = loop {
        let response = post(&chat, &token, &completion("gpt-4o-mini", false)).await;
        if response.status() != StatusCode::OK {
            break response;
        }
        successes += 1;
        assert!(successes < 10, "the quota never ran out");
        // Settling runs beside the answer; its usage row is written right after it.
        chat.wait_for_usage(successes).await;
    };
    assert_eq!(successes, 3, "18 + 18 + 18 used, and a fourth reservation of 60 would pass 100");
    assert_eq!(refusal.status(), StatusCode::PAYMENT_REQUIRED);
    let problem: Value = refusal.json().await.expect("json");
    assert_eq!(problem["limit"], "tokensPerMonth");
    assert_eq!(problem["used"], 54);
    assert_eq!(problem["error"]["type"], "insufficient_quota");
    assert_eq!(mock.request_count(), 3);
    let no_models: Value = client()
        .get(format!("{}/v1/models", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(no_models["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_verified_by_the_auth_service_and_bad_input_gets_problems() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let specs = [world.provider_spec("openai", &mock, Wire::OpenAi, &["gpt-4o-mini"])];
    let chat = world.start_chat(&specs, &Plan::default(), "gpt-4o-mini", test_options()).await;

    let response = post(&chat, API_KEY, &completion("gpt-4o-mini", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(chat.wait_for_usage(1).await[0].0, "api-user");
    // A key is held to its scopes: this one may list the models and nothing else.
    let listed =
        client().get(format!("{}/v1/models", chat.url)).bearer_auth(MODELS_ONLY_API_KEY).send().await.expect("models");
    assert_eq!(listed.status(), StatusCode::OK);
    let no_chat = post(&chat, MODELS_ONLY_API_KEY, &completion("gpt-4o-mini", false)).await;
    assert_eq!(no_chat.status(), StatusCode::FORBIDDEN);
    let problem: Value = no_chat.json().await.expect("problem");
    assert_eq!((problem["scope"].as_str(), problem["error"]["type"].is_string()), (Some("chat"), true), "{problem}");
    let no_conversations = client()
        .post(format!("{}/v1/conversations", chat.url))
        .bearer_auth(MODELS_ONLY_API_KEY)
        .json(&json!({}))
        .send()
        .await
        .expect("create");
    assert_eq!(no_conversations.status(), StatusCode::FORBIDDEN);
    assert_eq!(chat.wait_for_usage(1).await.len(), 1, "nothing refused reached a provider");

    let refused = post(&chat, "sk-saaschat-not-a-real-key", &completion("gpt-4o-mini", false)).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let body = refused.text().await.expect("body");
    assert!(!body.contains("not-a-real-key"), "{body}");

    let token = world.auth.token("alice");
    let cases = [
        (json!({ "model": "gpt-4o-mini", "messages": [] }), StatusCode::BAD_REQUEST),
        (
            json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "x" }], "n": 3 }),
            StatusCode::BAD_REQUEST,
        ),
        (json!({ "messages": [{ "role": "user", "content": "x" }] }), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({ "model": "gpt-4o-mini", "messages": "x" }), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, status) in cases {
        let response = post(&chat, &token, &body).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    let malformed = client()
        .post(format!("{}/v1/chat/completions", chat.url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("post");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    // Nothing in a request can point the service at another upstream or add headers to its calls.
    let sneaky = json!({
        "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "x" }],
        "base_url": "http://169.254.169.254/latest", "baseUrl": "http://evil.example", "extra_headers": { "x-evil": "1" },
    });
    let response = client()
        .post(format!("{}/v1/chat/completions", chat.url))
        .bearer_auth(&token)
        .header("x-forwarded-host", "evil.example")
        .json(&sneaky)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);
    let last = mock.requests().pop().expect("request");
    assert!(last.headers.get("x-evil").is_none() && last.headers.get("x-forwarded-host").is_none());
    assert!(last.body.get("base_url").is_none() && last.body.get("extra_headers").is_none());
    assert_eq!(mock.request_count(), 2, "only the two valid requests reached the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_cache_answers_identical_opted_in_requests_and_the_config_reloads() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let specs = [world.provider_spec("openai", &mock, Wire::OpenAi, &["gpt-4o-mini", "gpt-4o"])];
    let chat = world.start_chat(&specs, &Plan::default(), "gpt-4o-mini", test_options()).await;
    let token = world.auth.token("alice");
    let mut body = completion("gpt-4o-mini", false);
    body["temperature"] = json!(0);
    let cached = |body: Value| {
        let (url, token) = (chat.url.clone(), token.clone());
        async move {
            client()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(token)
                .header("x-saaschat-cache", "on")
                .json(&body)
                .send()
                .await
                .expect("post")
        }
    };
    let first = cached(body.clone()).await;
    assert_eq!(first.headers()["x-saaschat-cache"], "miss");
    let first: Value = first.json().await.expect("json");
    let second = cached(body.clone()).await;
    assert_eq!(second.headers()["x-saaschat-cache"], "hit");
    let second: Value = second.json().await.expect("json");
    assert_eq!(first["choices"], second["choices"]);
    assert_eq!(mock.request_count(), 1);
    // Not opted in, another temperature, or another user: the provider answers.
    post(&chat, &token, &body).await.text().await.expect("body");
    let mut warmer = body.clone();
    warmer["temperature"] = json!(0.7);
    cached(warmer).await.text().await.expect("body");
    client()
        .post(format!("{}/v1/chat/completions", chat.url))
        .bearer_auth(world.auth.token("bob"))
        .header("x-saaschat-cache", "on")
        .json(&body)
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("body");
    assert_eq!(mock.request_count(), 4);
    chat.wait_for_usage(4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(chat.usage_rows().await.len(), 4, "a cache hit costs nothing");

    // The operator narrows the plan: the mounted file changes and the service follows without a restart.
    let mut document: Value =
        serde_json::from_str(&std::fs::read_to_string(&chat.config_file).expect("read")).expect("json");
    document["plan"]["allowedModels"] = json!(["gpt-4o"]);
    std::fs::write(&chat.config_file, document.to_string()).expect("write");
    let mut models = Vec::new();
    for _ in 0..50 {
        let listed: Value = client()
            .get(format!("{}/v1/models", chat.url))
            .bearer_auth(&token)
            .send()
            .await
            .expect("models")
            .json()
            .await
            .expect("json");
        models = listed["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|model| model["id"].as_str().map(str::to_string))
            .collect();
        if models == ["gpt-4o"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(models, ["gpt-4o"]);
    assert_eq!(post(&chat, &token, &completion("gpt-4o-mini", false)).await.status(), StatusCode::FORBIDDEN);
    // A broken document keeps the last good configuration.
    std::fs::write(&chat.config_file, "{ not json").expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(post(&chat, &token, &completion("gpt-4o", false)).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_is_skipped_while_its_breaker_is_open_and_tried_again_after() {
    let world = World::new().await;
    let primary = MockProvider::start(Wire::OpenAi).await;
    let backup = MockProvider::start(Wire::Gemini).await;
    let specs = [
        world.provider_spec("primary", &primary, Wire::OpenAi, &["model"]),
        world.provider_spec("backup", &backup, Wire::Gemini, &["model"]),
    ];
    let mut options = test_options();
    options.resilience.breaker.failure_threshold = 2;
    options.resilience.breaker.open_for = Duration::from_millis(600);
    let chat = world.start_chat(&specs, &Plan::default(), "model", options).await;
    let token = world.auth.token("alice");
    primary.always(Behaviour::Status {
        status: 500,
        retry_after: None,
        body: json!({ "error": { "message": "boom", "type": "server_error" } }),
    });

    assert_eq!(post(&chat, &token, &completion("model", false)).await.status(), StatusCode::OK);
    assert_eq!(primary.request_count(), 2, "the second failure opened the breaker before a third attempt");
    assert_eq!(post(&chat, &token, &completion("model", false)).await.status(), StatusCode::OK);
    assert_eq!(primary.request_count(), 2, "an open breaker sends nothing to the provider");
    assert_eq!(backup.request_count(), 2);

    tokio::time::sleep(Duration::from_millis(700)).await;
    primary.always(Behaviour::answer(&["recovered"]));
    let whole: Value = post(&chat, &token, &completion("model", false)).await.json().await.expect("json");
    assert_eq!(
        whole["choices"][0]["message"]["content"], "recovered",
        "the trial call after the open period closes it"
    );
    assert_eq!(primary.request_count(), 3);
    let metrics =
        client().get(format!("{}/metrics", chat.url)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains(r#"chat_upstream_attempts_total{provider="primary",result="circuit_open"}"#), "{metrics}");
    // The first reservation finds no lease and is decided in Redis.
    assert!(metrics.contains(r#"chat_limit_checks_total{decided="redis"}"#), "{metrics}");
}

/// A primary provider with room for one call at a time, and a backup in another wire format.
async fn single_slot_primary_and_backup(world: &World) -> (MockProvider, MockProvider, common::Chat) {
    let primary = MockProvider::start(Wire::OpenAi).await;
    let backup = MockProvider::start(Wire::Anthropic).await;
    let mut primary_spec = world.provider_spec("primary", &primary, Wire::OpenAi, &["model"]);
    primary_spec.max_concurrent = 1;
    let specs = [primary_spec, world.provider_spec("backup", &backup, Wire::Anthropic, &["model"])];
    let chat = world.start_chat(&specs, &Plan::default(), "model", test_options()).await;
    (primary, backup, chat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_a_providers_concurrency_limit_go_to_the_next_candidate() {
    let world = World::new().await;
    let (primary, backup, chat) = single_slot_primary_and_backup(&world).await;
    let token = world.auth.token("alice");
    primary.then(Behaviour::slow(10, Duration::from_millis(50)));
    let mut long = common::SseReader::new(post(&chat, &token, &completion("model", true)).await);
    long.next().await.expect("first chunk");
    assert_eq!(post(&chat, &token, &completion("model", false)).await.status(), StatusCode::OK);
    assert_eq!((primary.request_count(), backup.request_count()), (1, 1));
    while long.next().await.is_some() {}
    assert_eq!(post(&chat, &token, &completion("model", false)).await.status(), StatusCode::OK);
    assert_eq!(
        (primary.request_count(), backup.request_count()),
        (2, 1),
        "the slot is free again once the stream ended"
    );
}

/// The stream is read at the client's pace, by the response itself: a client that leaves mid-answer ends the
/// upstream call at once (its provider slot is free for the next request) and is charged for what it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_frees_the_provider_and_is_charged_for_what_it_got() {
    let world = World::new().await;
    let (primary, backup, chat) = single_slot_primary_and_backup(&world).await;
    let token = world.auth.token("alice");
    primary.then(Behaviour::slow(100, Duration::from_millis(30)));
    let mut stream = common::SseReader::new(post(&chat, &token, &completion("model", true)).await);
    let role = stream.next().await.expect("role chunk").json();
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
    let first = stream.next().await.expect("first content").json();
    assert!(first["choices"][0]["delta"]["content"].as_str().is_some_and(|text| text.starts_with("word0")), "{first}");
    drop(stream);

    let rows = chat.wait_for_usage(1).await;
    assert_eq!(rows[0].2, "primary");
    assert!(rows[0].4 > 0, "the tokens of the abandoned answer are counted: {rows:?}");
    let whole: Value = post(&chat, &token, &completion("model", false)).await.json().await.expect("json");
    assert_eq!(whole["choices"][0]["message"]["content"], "Hello there!");
    assert_eq!(
        (primary.request_count(), backup.request_count()),
        (2, 0),
        "the abandoned stream gave its provider slot back"
    );
    let metrics =
        client().get(format!("{}/metrics", chat.url)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("\nchat_live_streams 0\n"), "{metrics}");
    assert!(
        metrics.contains(r#"chat_completions_total{model="model",outcome="stopped",provider="primary"} 1"#),
        "{metrics}"
    );
}

/// A provider's `requestsPerMinute` counts across the tenant's users; calls beyond it go to the next
/// candidate, and when no candidate has room the caller gets a 429 that names the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_requests_per_minute_sends_the_rest_to_the_next_candidate() {
    let world = World::new().await;
    let primary = MockProvider::start(Wire::OpenAi).await;
    let backup = MockProvider::start(Wire::Anthropic).await;
    let mut primary_spec = world.provider_spec("primary", &primary, Wire::OpenAi, &["model"]);
    primary_spec.requests_per_minute = 3;
    let mut backup_spec = world.provider_spec("backup", &backup, Wire::Anthropic, &["model"]);
    backup_spec.requests_per_minute = 2;
    let chat = world.start_chat(&[primary_spec, backup_spec], &Plan::default(), "model", test_options()).await;
    // Two users: the provider's limit is the tenant's, not a user's. The test must not straddle a minute.
    let wait = 60 - chrono::Utc::now().timestamp().rem_euclid(60);
    if wait < 10 {
        tokio::time::sleep(Duration::from_secs(wait as u64 + 1)).await;
    }
    let (alice, bob) = (world.auth.token("alice"), world.auth.token("bob"));
    let mut statuses = Vec::new();
    for turn in 0..6 {
        let token = if turn % 2 == 0 { &alice } else { &bob };
        statuses.push(post(&chat, token, &completion("model", false)).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429], "three to the primary, two to the backup, then none left");
    assert_eq!((primary.request_count(), backup.request_count()), (3, 2));
    let refused = statuses.pop().expect("last");
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.expect("problem");
    assert!(problem["type"].as_str().is_some_and(|t| t.ends_with("/provider-limit-reached")), "{problem}");
    assert_eq!(problem["limit"], "requestsPerMinute", "{problem}");
}
