//! `/v1/ws`: the conversation stream over one WebSocket, authenticated at the upgrade (the same Bearer
//! credential as every route, in the `Authorization` header or, from a browser, as the subprotocol
//! `bearer.<credential>` next to [`PROTOCOL`]), carrying several conversations at once.
//!
//! Client → server (JSON text frames): `{"type":"send","conversationId":..,"content":..}` (plus the optional
//! `model`, `temperature`, `maxTokens` of the HTTP route), `{"type":"stop","conversationId":..}`,
//! `{"type":"attach","conversationId":..}`. Server → client: `start`, `delta`, `end` (the SSE events, with
//! their name in `type`) and `error` (with a `problem`).
//!
//! All frames go through one bounded queue to the socket: a client that reads slowly slows its streams'
//! providers down rather than growing memory. The server pings; a client that misses two pongs is dropped.
//! Closing the socket stops its streams (they are settled and saved as stopped); shutdown ends the session
//! after its streams have sent their end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use saaschat_platform::Problem;
use saaschat_platform::auth::{Authenticated, ChatScope};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::conversations::reply::{self, NewMessage};
use crate::gateway::StreamMessage;
use crate::state::AppState;
use crate::streaming::channels::broadcast_stream;
use crate::streaming::events;

const MAX_FRAME_BYTES: usize = 512 * 1024;
/// Frames queued for the socket before streams wait for it.
const OUTGOING_QUEUE: usize = 64;
/// How long a shutting-down session waits for its streams' last frames.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum ClientMessage {
    #[serde(rename_all = "camelCase")]
    Send {
        conversation_id: Uuid,
        #[serde(flatten)]
        message: NewMessage,
    },
    #[serde(rename_all = "camelCase")]
    Stop { conversation_id: Uuid },
    #[serde(rename_all = "camelCase")]
    Attach { conversation_id: Uuid },
}

/// The application subprotocol. A browser, which cannot set headers on a WebSocket, offers it together with
/// its credential as `bearer.<credential>` and gets it back in the answer.
pub const PROTOCOL: &str = "saaschat.v1";

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Problem> {
    let user = state.authenticator.authenticate_websocket::<ChatScope>(&headers).await?.into_inner();
    Ok(upgrade
        .protocols([PROTOCOL])
        .max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| session(state, user, socket)))
}

fn frame(kind: &str, mut body: Value) -> Message {
    body["type"] = json!(kind);
    Message::Text(Utf8Bytes::from(body.to_string()))
}

fn error_frame(conversation_id: Option<Uuid>, problem: &Problem) -> Message {
    frame("error", json!({ "conversationId": conversation_id, "problem": problem }))
}

async fn session(state: AppState, user: Authenticated, socket: WebSocket) {
    let _running = state.gateway.tasks.enter();
    let (mut sink, mut incoming) = socket.split();
    let (outgoing, mut queue) = mpsc::channel::<Message>(OUTGOING_QUEUE);
    let started = Instant::now();
    let last_pong = Arc::new(AtomicU64::new(0));
    let ping_every = state.streaming.ws_ping;

    let writer = {
        let last_pong = last_pong.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
            loop {
                tokio::select! {
                    message = queue.recv() => match message {
                        Some(message) => if sink.send(message).await.is_err() { break },
                        None => {
                            let close = CloseFrame { code: close_code::AWAY, reason: Utf8Bytes::from_static("shutting down") };
                            let _ = sink.send(Message::Close(Some(close))).await;
                            break;
                        }
                    },
                    _ = ticker.tick() => {
                        let silent_for = started.elapsed().saturating_sub(Duration::from_millis(last_pong.load(Ordering::Relaxed)));
                        if silent_for > ping_every * 2 + ping_every / 2 {
                            tracing::info!("WebSocket client stopped answering pings");
                            break;
                        }
                        if sink.send(Message::Ping(Default::default())).await.is_err() { break }
                    }
                }
            }
        })
    };

    let mut streams = JoinSet::new();
    let shutdown = state.shutdown.clone();
    loop {
        let message = tokio::select! {
            () = shutdown.clone().triggered() => break,
            message = incoming.next() => message,
        };
        let Some(Ok(message)) = message else { break };
        match message {
            Message::Text(text) => handle(&state, &user, text.as_str(), &outgoing, &mut streams).await,
            Message::Binary(_) => {
                let problem = Problem::bad_request("send JSON text frames");
                if outgoing.send(error_frame(None, &problem)).await.is_err() {
                    break;
                }
            }
            Message::Pong(_) => {
                let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                last_pong.store(elapsed, Ordering::Relaxed);
            }
            Message::Ping(_) => {}
            Message::Close(_) => break,
        }
        if writer.is_finished() {
            break;
        }
    }
    if shutdown.is_triggered() {
        // The relays end their streams on shutdown; their `end` frames go out before the close.
        let _ = tokio::time::timeout(DRAIN, async { while streams.join_next().await.is_some() {} }).await;
    } else {
        // The client left: dropping the relays settles their answers as disconnects.
        streams.abort_all();
    }
    drop(outgoing);
    let _ = writer.await;
}

async fn handle(
    state: &AppState,
    user: &Authenticated,
    text: &str,
    outgoing: &mpsc::Sender<Message>,
    streams: &mut JoinSet<()>,
) {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(error) => {
            let problem = Problem::bad_request(format!("not a message this socket understands: {error}"));
            let _ = outgoing.send(error_frame(None, &problem)).await;
            return;
        }
    };
    match message {
        ClientMessage::Send { conversation_id, message } => {
            match reply::start_reply(state, user, conversation_id, message).await {
                Ok(started) => {
                    let (name, body) =
                        events::start(conversation_id, started.user_message_id, started.message_id, &started.served);
                    let outgoing = outgoing.clone();
                    let message_id = started.message_id;
                    let mut relay = started.relay;
                    // Aborting this task (the client left) drops the relay, which settles it as a disconnect.
                    streams.spawn(async move {
                        if outgoing.send(frame(name, body)).await.is_err() {
                            return;
                        }
                        while let Some(message) = relay.next().await {
                            if let Some((name, body)) = events::frame(conversation_id, message_id, &message)
                                && outgoing.send(frame(name, body)).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
                Err(problem) => {
                    let _ = outgoing.send(error_frame(Some(conversation_id), &problem)).await;
                }
            }
        }
        ClientMessage::Stop { conversation_id } => {
            if let Err(problem) = reply::stop(state, user, conversation_id).await {
                let _ = outgoing.send(error_frame(Some(conversation_id), &problem)).await;
            }
        }
        ClientMessage::Attach { conversation_id } => match reply::attach(state, user, conversation_id).await {
            Ok((message_id, attached)) => {
                let outgoing = outgoing.clone();
                streams.spawn(async move {
                    let head = frame("attached", json!({ "conversationId": conversation_id, "messageId": message_id }));
                    if outgoing.send(head).await.is_err() {
                        return;
                    }
                    if !attached.text.is_empty() {
                        let (name, body) = events::delta(conversation_id, &attached.text);
                        if outgoing.send(frame(name, body)).await.is_err() {
                            return;
                        }
                    }
                    if let Some(outcome) = attached.outcome {
                        let (name, body) = events::end(conversation_id, message_id, &outcome);
                        let _ = outgoing.send(frame(name, body)).await;
                        return;
                    }
                    let mut live = std::pin::pin!(broadcast_stream(attached.events));
                    while let Some(message) = live.next().await {
                        let message: StreamMessage = message;
                        if let Some((name, body)) = events::frame(conversation_id, message_id, &message)
                            && outgoing.send(frame(name, body)).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
            Err(problem) => {
                let _ = outgoing.send(error_frame(Some(conversation_id), &problem)).await;
            }
        },
    }
}
