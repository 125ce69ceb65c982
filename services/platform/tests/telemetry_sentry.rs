//! Error reporting to a fake Sentry over real HTTP. Its own test binary with a single test, because
//! `telemetry::init` installs the process's one global subscriber and Sentry client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Router};
use saaschat_platform::http::{HttpSettings, RouterBuilder, Shutdown, TraceContext, serve};
use serde_json::Value;
use tokio::net::TcpListener;

const PUBLIC_KEY: &str = "5e7c1fa1c0ffee0ddba11dea5e7c1fa1";
const BEARER: &str = "eyJhbGciOiJFZERTQSJ9.c2VjcmV0LXVzZXI.c2lnbmF0dXJl";

#[derive(Clone, Default)]
struct FakeSentry {
    envelopes: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

impl FakeSentry {
    /// The event items of every envelope received so far, with the raw envelope each came in.
    fn events(&self) -> Vec<(Value, String)> {
        let envelopes = self.envelopes.lock().expect("lock");
        let mut events = Vec::new();
        for (_, body) in envelopes.iter() {
            // An envelope is a header line, then item header and payload lines in turn.
            let lines: Vec<&str> = body.lines().collect();
            for pair in lines[1..].chunks(2) {
                let header: Value = serde_json::from_str(pair[0]).expect("item header");
                if header["type"] == "event" && pair.len() == 2 {
                    events.push((serde_json::from_str(pair[1]).expect("event"), body.clone()));
                }
            }
        }
        events
    }

    async fn wait_for_event(&self, matches: impl Fn(&Value) -> bool) -> (Value, String) {
        for _ in 0..200 {
            if let Some(found) = self.events().into_iter().find(|(event, _)| matches(event)) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no matching event among {:?}", self.events());
    }
}

async fn receive_envelope(State(sentry): State<FakeSentry>, headers: HeaderMap, body: Bytes) -> StatusCode {
    sentry.envelopes.lock().expect("lock").push((headers, String::from_utf8_lossy(&body).into_owned()));
    StatusCode::OK
}

async fn listen(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// A handler that fails the way real ones do: it logs what it had, headers included.
async fn rejecting_handler(Extension(trace): Extension<TraceContext>, headers: HeaderMap) -> StatusCode {
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).unwrap_or_default();
    tracing::warn!(authorization, "upstream is slow");
    tracing::error!(
        trace_id = %trace.trace_id_hex(),
        authorization,
        request_headers = ?headers,
        attempt = 2,
        "upstream rejected the request sent with {authorization}"
    );
    StatusCode::BAD_GATEWAY
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_panics_are_reported_without_credentials() {
    let sentry = FakeSentry::default();
    let sentry_address =
        listen(Router::new().route("/api/42/envelope/", post(receive_envelope)).with_state(sentry.clone())).await;
    let dsn = format!("http://{PUBLIC_KEY}@{sentry_address}/42");
    let guard = saaschat_platform::telemetry::init_from_lookup("platform-test", |name| match name {
        "SENTRY_DSN" => Some(dsn.clone()),
        "SENTRY_ENVIRONMENT" => Some("ci".into()),
        _ => None,
    })
    .expect("telemetry starts");

    let shutdown = Shutdown::new();
    let api = Router::new().route("/reject", get(rejecting_handler));
    let app = RouterBuilder::new(HttpSettings::default(), shutdown.signal()).build(api).expect("router");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let service_address = listener.local_addr().expect("address");
    tokio::spawn(serve(listener, app, shutdown.signal(), Duration::from_secs(5)));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let response = client
        .get(format!("http://{service_address}/reject"))
        .header("authorization", format!("Bearer {BEARER}"))
        .send()
        .await
        .expect("reject");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);

    let (event, envelope) =
        sentry.wait_for_event(|event| event["message"].as_str().is_some_and(|m| m.starts_with("upstream"))).await;
    // Sentry leaves out the level when it is the default, error.
    assert!(event.get("level").is_none_or(|level| level == "error"), "{event}");
    assert_eq!(event["release"], format!("platform-test@{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(event["environment"], "ci");
    assert_eq!(event["tags"]["service"], "platform-test");
    assert_eq!(event["contexts"]["Rust Tracing Fields"]["attempt"], 2);
    assert_eq!(event["contexts"]["Rust Tracing Fields"]["authorization"], "[redacted]");
    assert!(event["breadcrumbs"].to_string().contains("upstream is slow"), "{event}");
    assert!(event.get("request").is_none(), "{event}");
    for secret in [PUBLIC_KEY, BEARER, "c2VjcmV0LXVzZXI"] {
        assert!(!envelope.contains(secret), "{secret} reached Sentry: {envelope}");
    }

    // The key authenticates the envelope; it travels in the auth header, not in what is stored.
    let envelopes = sentry.envelopes.lock().expect("lock").clone();
    assert!(
        envelopes.iter().all(|(headers, _)| headers["x-sentry-auth"].to_str().expect("ascii").contains(PUBLIC_KEY))
    );

    let panicked = std::thread::spawn(|| panic!("the ledger is inconsistent")).join();
    assert!(panicked.is_err());
    let (panic_event, _) =
        sentry.wait_for_event(|event| event["exception"].to_string().contains("the ledger is inconsistent")).await;
    assert_eq!(panic_event["level"], "fatal");
    assert_eq!(panic_event["exception"]["values"][0]["mechanism"]["type"], "panic");

    assert!(tokio::task::spawn_blocking(move || guard.flush(Duration::from_secs(5))).await.expect("flush"));
    shutdown.trigger();
}
