//! Conversations over HTTP with real PostgreSQL and Redis: the lifecycle, privacy between users, streaming,
//! stopping and disconnecting, attaching, and the WebSocket.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::providers::{Behaviour, MockProvider, OUTPUT_TOKENS, Wire};
use common::{Plan, SseReader, World, client, parse_sse, test_options};
use serde_json::{Value, json};

async fn one_provider(world: &World, mock: &MockProvider) -> common::Chat {
    let spec = world.provider_spec("openai", mock, Wire::OpenAi, &["gpt-4o-mini", "gpt-4o"]);
    world.start_chat(&[spec], &Plan::default(), "gpt-4o-mini", test_options()).await
}

async fn send(chat: &common::Chat, token: &str, conversation: &str, content: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/conversations/{conversation}/messages", chat.url))
        .bearer_auth(token)
        .json(&json!({ "content": content }))
        .send()
        .await
        .expect("send")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_streams_answers_gets_a_title_and_is_listed_searched_renamed_and_deleted() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let chat = one_provider(&world, &mock).await;
    let token = world.auth.token("alice");
    let conversation = chat.create_conversation(&token, json!({ "systemPrompt": "Be brief." })).await;
    let id = conversation["id"].as_str().expect("id").to_string();
    assert_eq!(conversation["model"], "gpt-4o-mini");
    assert_eq!(conversation["title"], Value::Null);

    let response = send(&chat, &token, &id, "How do I bake bread?").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let (events, _) = parse_sse(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().filter_map(|event| event.event.as_deref()).collect();
    assert_eq!(names, ["start", "delta", "delta", "delta", "end"]);
    let text: String = events
        .iter()
        .filter(|event| event.event.as_deref() == Some("delta"))
        .map(|event| event.json()["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(text, "Hello there!");
    let end = events.last().expect("end").json();
    assert_eq!(end["status"], "complete");
    assert_eq!(end["finishReason"], "stop");
    assert_eq!(end["usage"], json!({ "inputTokens": 11, "outputTokens": OUTPUT_TOKENS }));
    assert_eq!(end["title"], "How do I bake bread?");

    // The provider got the system prompt and the message; the history goes along on the next turn.
    let response = send(&chat, &token, &id, "And rye?").await;
    let _ = response.text().await;
    let upstream = mock.requests();
    assert_eq!(upstream.len(), 2);
    assert_eq!(
        upstream[1].body["messages"],
        json!([
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "How do I bake bread?" },
            { "role": "assistant", "content": "Hello there!" },
            { "role": "user", "content": "And rye?" },
        ])
    );

    let read: Value = client()
        .get(format!("{}/v1/conversations/{id}", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    assert_eq!(read["title"], "How do I bake bread?");
    let messages = read["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[1]["status"], "complete");
    assert_eq!(messages[1]["outputTokens"], OUTPUT_TOKENS);

    // Pagination and search.
    for title in ["Sourdough starter", "Tax return", "Sourdough scoring"] {
        chat.create_conversation(&token, json!({ "title": title })).await;
    }
    let page: Value = client()
        .get(format!("{}/v1/conversations?limit=3", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(page["items"].as_array().expect("items").len(), 3);
    let cursor = page["nextCursor"].as_str().expect("cursor");
    let rest: Value = client()
        .get(format!("{}/v1/conversations?limit=3&cursor={cursor}", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["items"].as_array().expect("items").len(), 1);
    assert_eq!(rest["nextCursor"], Value::Null);
    let found: Value = client()
        .get(format!("{}/v1/conversations?q=sourDOUGH", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let titles: Vec<&str> =
        found["items"].as_array().expect("items").iter().filter_map(|item| item["title"].as_str()).collect();
    assert_eq!(titles, ["Sourdough scoring", "Sourdough starter"]);
    let bad = client()
        .get(format!("{}/v1/conversations?cursor=nonsense", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");

    let renamed = client()
        .patch(format!("{}/v1/conversations/{id}", chat.url))
        .bearer_auth(&token)
        .json(&json!({ "title": "Bread" }))
        .send()
        .await
        .expect("rename");
    assert_eq!(renamed.status(), StatusCode::OK);
    assert_eq!(renamed.json::<Value>().await.expect("json")["title"], "Bread");
    let empty = client()
        .patch(format!("{}/v1/conversations/{id}", chat.url))
        .bearer_auth(&token)
        .json(&json!({ "title": "  " }))
        .send()
        .await
        .expect("rename");
    assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let deleted = client()
        .delete(format!("{}/v1/conversations/{id}", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone =
        client().get(format!("{}/v1/conversations/{id}", chat.url)).bearer_auth(&token).send().await.expect("read");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    // The usage of both answers stays recorded for billing.
    let rows = chat.wait_for_usage(2).await;
    assert!(rows.iter().all(|row| row.0 == "alice" && row.1 == "gpt-4o-mini" && row.2 == "openai"));
    // 11 input tokens at $2.50 per million (27.5 micro-dollars, rounded up) and 7 output tokens at $10 (70).
    assert_eq!(rows[0].5, 98);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_never_read_continue_rename_delete_stop_or_attach_to_a_conversation() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let chat = one_provider(&world, &mock).await;
    let (alice, bob) = (world.auth.token("alice"), world.auth.token("bob"));
    let conversation = chat.create_conversation(&alice, json!({ "title": "Alice's secrets" })).await;
    let id = conversation["id"].as_str().expect("id").to_string();
    // Alice's answer is being generated while Bob tries everything.
    mock.then(Behaviour::slow(40, Duration::from_millis(50)));
    let mut live = SseReader::new(send(&chat, &alice, &id, "Tell me a long story").await);
    live.until("delta").await;

    let url = |path: &str| format!("{}/v1/conversations/{id}{path}", chat.url);
    let attempts = [
        client().get(url("")).bearer_auth(&bob),
        client().patch(url("")).bearer_auth(&bob).json(&json!({ "title": "mine now" })),
        client().delete(url("")).bearer_auth(&bob),
        client().post(url("/messages")).bearer_auth(&bob).json(&json!({ "content": "continue" })),
        client().post(url("/stop")).bearer_auth(&bob),
        client().get(url("/stream")).bearer_auth(&bob),
    ];
    for attempt in attempts {
        let response = attempt.send().await.expect("request");
        let status = response.status();
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
        assert_eq!(problem["type"], "https://saaschat.io/problems/conversation-not-found");
    }
    let bobs: Value = client()
        .get(format!("{}/v1/conversations", chat.url))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(bobs["items"], json!([]));
    let bobs: Value = client()
        .get(format!("{}/v1/conversations?q=secrets", chat.url))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(bobs["items"], json!([]));
    // Without a credential, or with a forged one, nothing at all.
    let anonymous = client().get(url("")).send().await.expect("request");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let forged =
        client().get(url("")).bearer_auth("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.").send().await.expect("request");
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // Alice's answer went on untouched, and her conversation is as she left it.
    let end = live.until("end").await.json();
    assert_eq!(end["status"], "complete");
    let read: Value = client().get(url("")).bearer_auth(&alice).send().await.expect("read").json().await.expect("json");
    assert_eq!(read["title"], "Alice's secrets");
    assert_eq!(read["messages"].as_array().expect("messages").len(), 2);
    assert_eq!(mock.request_count(), 1, "Bob's message never reached a provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_keeps_the_partial_answer_and_counts_its_tokens_and_others_can_attach() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let chat = one_provider(&world, &mock).await;
    let token = world.auth.token("alice");
    let id = chat.create_conversation(&token, json!({})).await["id"].as_str().expect("id").to_string();
    mock.then(Behaviour::slow(200, Duration::from_millis(40)));
    let response = send(&chat, &token, &id, "Count slowly").await;
    let mut stream = SseReader::new(response);
    stream.until("delta").await;
    stream.until("delta").await;

    // A second connection of the same user follows the same answer.
    let attached = client()
        .get(format!("{}/v1/conversations/{id}/stream", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("attach");
    assert_eq!(attached.status(), StatusCode::OK);
    let mut attached = SseReader::new(attached);
    assert_eq!(attached.next().await.expect("attached").event.as_deref(), Some("attached"));
    let so_far = attached.until("delta").await.json()["text"].as_str().expect("text").to_string();
    assert!(so_far.starts_with("word0 word1 "), "{so_far}");

    // A second message while the answer runs is refused and changes nothing.
    let busy = send(&chat, &token, &id, "Another").await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);

    let stopped = client()
        .post(format!("{}/v1/conversations/{id}/stop", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("stop");
    assert_eq!(stopped.status(), StatusCode::ACCEPTED);
    let end = stream.until("end").await.json();
    assert_eq!(end["status"], "stopped");
    assert_eq!(end["stopReason"], "requested");
    let output_tokens = end["usage"]["outputTokens"].as_u64().expect("tokens");
    assert!(output_tokens > 0, "{end}");
    assert_eq!(attached.until("end").await.json()["status"], "stopped");

    let read: Value = client()
        .get(format!("{}/v1/conversations/{id}", chat.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    let answer = &read["messages"][1];
    assert_eq!(answer["status"], "stopped");
    let partial = answer["content"].as_str().expect("content");
    assert!(partial.starts_with("word0 word1 ") && !partial.contains("word199"), "{partial}");
    assert_eq!(answer["outputTokens"].as_u64(), Some(output_tokens));
    let rows = chat.wait_for_usage(1).await;
    assert_eq!(rows[0].4 as u64, output_tokens);
    // The provider never reported usage, so the input is estimated: "Count slowly" is 3 tokens, plus 4 of framing.
    assert_eq!(rows[0].3, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_is_treated_as_a_stop_and_keep_alives_flow_while_the_provider_is_quiet() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let chat = one_provider(&world, &mock).await;
    let token = world.auth.token("alice");
    let id = chat.create_conversation(&token, json!({})).await["id"].as_str().expect("id").to_string();

    // Chunks 400 ms apart, longer than the 150 ms keep-alive interval (and within the 700 ms idle timeout).
    mock.then(Behaviour::slow(3, Duration::from_millis(400)));
    let body = send(&chat, &token, &id, "Slowly").await.text().await.expect("body");
    let (events, comments) = parse_sse(&body);
    assert!(comments >= 2, "keep-alive comments: {comments} in {body}");
    assert!(body.contains(": keep-alive\n"), "{body}");
    assert_eq!(events.last().expect("end").json()["status"], "complete");

    mock.then(Behaviour::slow(100, Duration::from_millis(30)));
    let mut stream = SseReader::new(send(&chat, &token, &id, "Then go away").await);
    stream.until("delta").await;
    drop(stream);
    let mut answer = Value::Null;
    for _ in 0..100 {
        let read: Value = client()
            .get(format!("{}/v1/conversations/{id}", chat.url))
            .bearer_auth(&token)
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("json");
        if read["messages"].as_array().is_some_and(|messages| messages.len() == 4) {
            answer = read["messages"][3].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answer["status"], "stopped", "{answer}");
    assert!(
        answer["content"].as_str().is_some_and(|text| text.starts_with("word0") && !text.contains("word99")),
        "{answer}"
    );
    let rows = chat.wait_for_usage(2).await;
    assert!(rows[1].4 > 0, "the tokens of the abandoned answer are counted: {rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_cleanly_within_the_grace_period() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let chat = one_provider(&world, &mock).await;
    let token = world.auth.token("alice");
    let id = chat.create_conversation(&token, json!({})).await["id"].as_str().expect("id").to_string();
    mock.then(Behaviour::slow(1000, Duration::from_millis(20)));
    let mut stream = SseReader::new(send(&chat, &token, &id, "Go on forever").await);
    stream.until("delta").await;
    let started = std::time::Instant::now();
    chat.shutdown.trigger();
    let end = stream.until("end").await.json();
    assert_eq!(end["status"], "stopped");
    assert_eq!(end["stopReason"], "shutdown");
    assert!(stream.next().await.is_none(), "the stream ends after its end event");
    let drained = tokio::time::timeout(Duration::from_secs(5), chat.server)
        .await
        .expect("server ended")
        .expect("task")
        .expect("serve");
    assert_eq!(drained, saaschat_platform::http::Drained::Complete);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let answers: i64 = sqlx::query_scalar("SELECT count(*) FROM chat.messages WHERE status = 'stopped'")
        .fetch_one(&chat.pool)
        .await
        .expect("count");
    assert_eq!(answers, 1);
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chat.usage_events").fetch_one(&chat.pool).await.expect("count");
    assert_eq!(rows, 1, "the usage was written before the service ended");
}

mod websocket {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    use super::*;

    type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    async fn connect(
        chat: &common::Chat,
        token: Option<&str>,
    ) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{}/v1/ws", chat.address).into_client_request().expect("request");
        if let Some(token) = token {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
        }
        tokio_tungstenite::connect_async(request).await.map(|(socket, _)| socket)
    }

    /// Connects the way a browser must: the credential as the `bearer.` subprotocol next to the app's own.
    async fn connect_as_browser(
        chat: &common::Chat,
        credential: &str,
    ) -> Result<(Socket, String), tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{}/v1/ws", chat.address).into_client_request().expect("request");
        let protocols = format!("saaschat.v1, bearer.{credential}");
        request.headers_mut().insert("sec-websocket-protocol", protocols.parse().expect("header"));
        let (socket, response) = tokio_tungstenite::connect_async(request).await?;
        let chosen = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or("");
        Ok((socket, chosen.to_string()))
    }

    fn refusal_status(result: Result<(Socket, String), tokio_tungstenite::tungstenite::Error>) -> u16 {
        match result {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(other) => panic!("refused without an HTTP answer: {other}"),
            Ok(_) => panic!("the upgrade was accepted"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_browser_authenticates_with_the_bearer_subprotocol_and_keys_need_the_chat_scope() {
        let world = World::new().await;
        let mock = MockProvider::start(Wire::OpenAi).await;
        let chat = one_provider(&world, &mock).await;
        let alice = world.auth.token("alice");
        let conversation = chat.create_conversation(&alice, json!({})).await["id"].as_str().expect("id").to_string();

        let (mut socket, protocol) = connect_as_browser(&chat, &alice).await.expect("connect");
        assert_eq!(protocol, "saaschat.v1", "the app protocol is chosen, never the credential");
        let message = json!({ "type": "send", "conversationId": conversation, "content": "hello" });
        socket.send(Message::Text(message.to_string().into())).await.expect("send");
        loop {
            let frame = next_frame(&mut socket).await;
            if frame["type"] == "end" {
                assert_eq!(frame["status"], "complete", "{frame}");
                break;
            }
        }

        assert_eq!(refusal_status(connect_as_browser(&chat, "not-a-token").await), 401);
        assert_eq!(refusal_status(connect_as_browser(&chat, common::MODELS_ONLY_API_KEY).await), 403);
        let (_, protocol) = connect_as_browser(&chat, common::API_KEY).await.expect("a key with the chat scope");
        assert_eq!(protocol, "saaschat.v1");
    }

    /// The next JSON frame, answering pings on the way (tungstenite queues the pong; the next send flushes it).
    async fn next_frame(socket: &mut Socket) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("frame in time")
                .expect("open")
                .expect("frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("json"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_socket_carries_several_conversations_stops_one_and_refuses_strangers() {
        let world = World::new().await;
        let mock = MockProvider::start(Wire::OpenAi).await;
        let chat = one_provider(&world, &mock).await;
        let (alice, bob) = (world.auth.token("alice"), world.auth.token("bob"));
        assert!(connect(&chat, None).await.is_err(), "the upgrade needs a credential");

        let first = chat.create_conversation(&alice, json!({})).await["id"].as_str().expect("id").to_string();
        let second = chat.create_conversation(&alice, json!({})).await["id"].as_str().expect("id").to_string();
        let bobs = chat.create_conversation(&bob, json!({})).await["id"].as_str().expect("id").to_string();
        mock.then(Behaviour::slow(300, Duration::from_millis(20)));
        mock.then(Behaviour::slow(5, Duration::from_millis(20)));
        let mut socket = connect(&chat, Some(&alice)).await.expect("connect");
        for (conversation, content) in [(&first, "long"), (&second, "short")] {
            let message = json!({ "type": "send", "conversationId": conversation, "content": content });
            socket.send(Message::Text(message.to_string().into())).await.expect("send");
        }
        let stranger = json!({ "type": "send", "conversationId": bobs, "content": "hi" });
        socket.send(Message::Text(stranger.to_string().into())).await.expect("send");
        socket.send(Message::Text("not json".into())).await.expect("send");

        let mut ends = std::collections::HashMap::new();
        let mut errors = Vec::new();
        let mut stop_sent = false;
        let mut deltas_of_first = 0;
        while ends.len() < 2 {
            let frame = next_frame(&mut socket).await;
            match frame["type"].as_str() {
                Some("delta") if frame["conversationId"] == first.as_str() => {
                    deltas_of_first += 1;
                    if deltas_of_first == 3 && !stop_sent {
                        let stop = json!({ "type": "stop", "conversationId": first });
                        socket.send(Message::Text(stop.to_string().into())).await.expect("stop");
                        stop_sent = true;
                    }
                }
                Some("end") => {
                    ends.insert(frame["conversationId"].as_str().expect("id").to_string(), frame);
                }
                Some("error") => errors.push(frame),
                _ => {}
            }
        }
        assert_eq!(ends[&second]["status"], "complete");
        assert_eq!(ends[&first]["status"], "stopped");
        assert_eq!(ends[&first]["stopReason"], "requested");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors.iter().any(|error| error["conversationId"] == bobs.as_str() && error["problem"]["status"] == 404)
        );
        assert!(errors.iter().any(|error| error["conversationId"].is_null() && error["problem"]["status"] == 400));
        let read: Value = client()
            .get(format!("{}/v1/conversations/{bobs}", chat.url))
            .bearer_auth(&bob)
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("json");
        assert_eq!(read["messages"], json!([]), "nothing was added to Bob's conversation");

        // Closing the socket mid-answer stops that answer like a disconnect.
        mock.then(Behaviour::slow(300, Duration::from_millis(20)));
        let again = json!({ "type": "send", "conversationId": second, "content": "more" });
        socket.send(Message::Text(again.to_string().into())).await.expect("send");
        loop {
            if next_frame(&mut socket).await["type"] == "delta" {
                break;
            }
        }
        socket.close(None).await.expect("close");
        drop(socket);
        let mut status = Value::Null;
        for _ in 0..100 {
            let read: Value = client()
                .get(format!("{}/v1/conversations/{second}", chat.url))
                .bearer_auth(&alice)
                .send()
                .await
                .expect("read")
                .json()
                .await
                .expect("json");
            if let Some(answer) = read["messages"].as_array().and_then(|messages| messages.get(3)) {
                status = answer["status"].clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, "stopped");
    }
}

async fn get_json(url: &str, token: &str) -> (StatusCode, Value) {
    let response = client().get(url).bearer_auth(token).send().await.expect("get");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn send_json(chat: &common::Chat, token: &str, conversation: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/conversations/{conversation}/messages", chat.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("send")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_conversations_page_backwards_and_search_finds_message_text() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let chat = one_provider(&world, &mock).await;
    let token = world.auth.token("alice");
    let conversation = chat.create_conversation(&token, json!({ "title": "Long one" })).await;
    let id = conversation["id"].as_str().expect("id").to_string();
    // 120 stored messages, written directly: the page queries are what is tested here.
    sqlx::query(
        "INSERT INTO chat.messages (id, conversation_id, role, content, created_at) \
         SELECT gen_random_uuid(), $1, CASE WHEN n % 2 = 0 THEN 'user' ELSE 'assistant' END, 'message ' || n, \
                now() - make_interval(secs => 1000 - n) FROM generate_series(0, 119) AS n",
    )
    .bind(uuid_of(&id))
    .execute(&chat.pool)
    .await
    .expect("messages");

    let url = format!("{}/v1/conversations/{id}/messages", chat.url);
    let (status, newest) = get_json(&format!("{url}?limit=50"), &token).await;
    assert_eq!(status, StatusCode::OK);
    let contents = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["content"].as_str().expect("content").into())
            .collect()
    };
    let first = contents(&newest);
    assert_eq!(first.len(), 50);
    assert_eq!(first[0], "message 70", "oldest first within the page");
    assert_eq!(first[49], "message 119", "the page ends with the newest message");
    let cursor = newest["previousCursor"].as_str().expect("more before");
    let (_, older) = get_json(&format!("{url}?limit=50&before={cursor}"), &token).await;
    assert_eq!(contents(&older)[0], "message 20");
    let cursor = older["previousCursor"].as_str().expect("more before");
    let (_, oldest) = get_json(&format!("{url}?limit=50&before={cursor}"), &token).await;
    assert_eq!(contents(&oldest).len(), 20);
    assert_eq!(oldest["previousCursor"], Value::Null);

    for bad in ["?limit=0", "?limit=201", "?before=not-an-id"] {
        let (status, problem) = get_json(&format!("{url}{bad}"), &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
    // Another user, or another conversation's message as the cursor, finds nothing of it.
    let (status, _) = get_json(&url, &world.auth.token("mallory")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let elsewhere = chat.create_conversation(&token, json!({})).await;
    let (_, foreign_cursor) = get_json(
        &format!("{}/v1/conversations/{}/messages?before={cursor}", chat.url, elsewhere["id"].as_str().expect("id")),
        &token,
    )
    .await;
    assert_eq!(foreign_cursor["items"], json!([]));

    // Search covers message text as well as titles, case-insensitively, with LIKE wildcards taken literally.
    let (_, found) = get_json(&format!("{}/v1/conversations?q=MESSAGE%20117", chat.url), &token).await;
    let ids: Vec<&str> = found["items"].as_array().expect("items").iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, [id.as_str()]);
    let (_, none) = get_json(&format!("{}/v1/conversations?q=message%25117", chat.url), &token).await;
    assert_eq!(none["items"], json!([]));
    let (_, others) = get_json(&format!("{}/v1/conversations?q=message", chat.url), &world.auth.token("mallory")).await;
    assert_eq!(others["items"], json!([]), "another user's text is never searched");
}

fn uuid_of(text: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(text).expect("uuid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_message_can_be_edited_or_answered_again_and_the_model_switched() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let chat = one_provider(&world, &mock).await;
    let token = world.auth.token("alice");
    let conversation = chat.create_conversation(&token, json!({})).await;
    let id = conversation["id"].as_str().expect("id").to_string();
    let (first_events, _) = parse_sse(&send(&chat, &token, &id, "First question").await.text().await.expect("body"));
    let first_user = first_events[0].json()["userMessageId"].as_str().expect("user message id").to_string();
    let (events, _) = parse_sse(&send(&chat, &token, &id, "Second questoin").await.text().await.expect("body"));
    let second_user = events[0].json()["userMessageId"].as_str().expect("user message id").to_string();

    // Replacing an earlier message is refused, and changes nothing.
    let refused = send_json(&chat, &token, &id, json!({ "content": "Edited first", "replaces": first_user })).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(problem["type"], "https://saaschat.io/problems/not-last-user-message");
    let (_, read) = get_json(&format!("{}/v1/conversations/{id}", chat.url), &token).await;
    assert_eq!(read["messages"].as_array().expect("messages").len(), 4);

    // Edit and resend the last message: it and its answer are replaced; the provider sees the edited history.
    let edited = send_json(&chat, &token, &id, json!({ "content": "Second question", "replaces": second_user })).await;
    assert_eq!(edited.status(), StatusCode::OK);
    let (events, _) = parse_sse(&edited.text().await.expect("body"));
    let edited_user = events[0].json()["userMessageId"].as_str().expect("id").to_string();
    assert_eq!(events.last().expect("end").json()["status"], "complete");
    let upstream = mock.requests();
    assert_eq!(
        upstream.last().expect("request").body["messages"],
        json!([
            { "role": "user", "content": "First question" },
            { "role": "assistant", "content": "Hello there!" },
            { "role": "user", "content": "Second question" },
        ])
    );
    let (_, read) = get_json(&format!("{}/v1/conversations/{id}", chat.url), &token).await;
    let contents: Vec<&str> =
        read["messages"].as_array().expect("messages").iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(contents, ["First question", "Hello there!", "Second question", "Hello there!"]);

    // Switch the model mid-conversation, then regenerate (the same content replacing itself) with it.
    let switched = client()
        .patch(format!("{}/v1/conversations/{id}", chat.url))
        .bearer_auth(&token)
        .json(&json!({ "model": "gpt-4o" }))
        .send()
        .await
        .expect("patch");
    assert_eq!(switched.status(), StatusCode::OK);
    assert_eq!(switched.json::<Value>().await.expect("json")["model"], "gpt-4o");
    let not_allowed = client()
        .patch(format!("{}/v1/conversations/{id}", chat.url))
        .bearer_auth(&token)
        .json(&json!({ "model": "gpt-5-secret" }))
        .send()
        .await
        .expect("patch");
    assert!(not_allowed.status().is_client_error());
    let nothing = client()
        .patch(format!("{}/v1/conversations/{id}", chat.url))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("patch");
    assert_eq!(nothing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    mock.then(Behaviour::answer(&["A better answer."]));
    let again = send_json(&chat, &token, &id, json!({ "content": "Second question", "replaces": edited_user })).await;
    let (events, _) = parse_sse(&again.text().await.expect("body"));
    assert_eq!(events[0].json()["model"], "gpt-4o");
    assert_eq!(mock.requests().last().expect("request").body["model"], "gpt-4o");
    let (_, read) = get_json(&format!("{}/v1/conversations/{id}", chat.url), &token).await;
    let contents: Vec<&str> =
        read["messages"].as_array().expect("messages").iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(contents, ["First question", "Hello there!", "Second question", "A better answer."]);

    // A refusal before the answer starts (the provider is down) keeps the message that would have been replaced.
    let last_user = read["messages"][2]["id"].as_str().expect("id").to_string();
    mock.always(Behaviour::Status { status: 400, retry_after: None, body: json!({ "error": { "message": "bad" } }) });
    let failed = send_json(&chat, &token, &id, json!({ "content": "Third try", "replaces": last_user })).await;
    assert!(failed.status().is_client_error() || failed.status().is_server_error());
    let (_, read) = get_json(&format!("{}/v1/conversations/{id}", chat.url), &token).await;
    let contents: Vec<&str> =
        read["messages"].as_array().expect("messages").iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(contents, ["First question", "Hello there!", "Second question", "A better answer."]);
}
