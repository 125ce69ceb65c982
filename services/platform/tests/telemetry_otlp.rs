//! OTLP trace export over real HTTP to a fake collector. Its own test binary, because `telemetry::init`
//! installs the process's one global subscriber and exporter; only the first test calls it, the others drive an
//! `Exporter` of their own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use saaschat_platform::http::{HttpSettings, RouterBuilder, Shutdown, TraceContext, serve};
use saaschat_platform::telemetry::Exporter;
use saaschat_platform::telemetry::otlp::{FinishedSpan, SpanKind};
use saaschat_platform::telemetry::settings::{OtlpSettings, Sampler};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Clone, Default)]
struct Collector {
    exports: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

impl Collector {
    fn spans(&self) -> Vec<Value> {
        let exports = self.exports.lock().expect("lock");
        exports
            .iter()
            .flat_map(|(_, body)| body["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|resource| resource["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until `count` spans have arrived; the exporter sends a batch 50 ms after it starts filling.
    async fn wait_for_spans(&self, count: usize) -> Vec<Value> {
        for _ in 0..200 {
            let spans = self.spans();
            if spans.len() >= count {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {count} spans, the collector has {:?}", self.spans());
    }
}

async fn receive_traces(State(collector): State<Collector>, headers: HeaderMap, Json(body): Json<Value>) -> StatusCode {
    collector.exports.lock().expect("lock").push((headers, body));
    StatusCode::OK
}

async fn listen(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    let attributes = span["attributes"].as_array().expect("attributes");
    let found = attributes.iter().find(|attribute| attribute["key"] == key);
    &found.unwrap_or_else(|| panic!("no attribute {key} in {span}"))["value"]
}

fn traceparent(response: &reqwest::Response) -> TraceContext {
    TraceContext::parse(response.headers()["traceparent"].to_str().expect("ascii")).expect("valid traceparent")
}

fn find<'a>(spans: &'a [Value], span_id: &str) -> &'a Value {
    spans.iter().find(|span| span["spanId"] == span_id).unwrap_or_else(|| panic!("no span {span_id} in {spans:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_with_the_callers_trace_and_outgoing_calls_continue_it() {
    let collector = Collector::default();
    let collector_address =
        listen(Router::new().route("/v1/traces", post(receive_traces)).with_state(collector.clone())).await;
    let endpoint = format!("http://{collector_address}");
    let _guard = saaschat_platform::telemetry::init_from_lookup("platform-test", |name| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("x-collector-key=k%3D1".into()),
        "OTEL_BSP_SCHEDULE_DELAY" => Some("50".into()),
        _ => None,
    })
    .expect("telemetry starts");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let service_address = listener.local_addr().expect("address");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let outgoing = client.clone();
    let api = Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .route("/broken", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route(
            "/call",
            get(move |Extension(trace): Extension<TraceContext>| async move {
                let response = trace.send(outgoing.get(format!("http://{service_address}/items/7"))).await;
                response
                    .map(|response| response.status().as_u16().to_string())
                    .unwrap_or_else(|error| error.to_string())
            }),
        );
    let shutdown = Shutdown::new();
    let app = RouterBuilder::new(HttpSettings::default(), shutdown.signal()).build(api).expect("router");
    tokio::spawn(serve(listener, app, shutdown.signal(), Duration::from_secs(5)));

    let continued = client
        .get(format!("http://{service_address}/items/42"))
        .header("traceparent", INCOMING)
        .send()
        .await
        .expect("items");
    assert_eq!(continued.status(), StatusCode::OK);
    let continued = traceparent(&continued);
    let broken = client.get(format!("http://{service_address}/broken")).send().await.expect("broken");
    assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let broken = traceparent(&broken);
    let calling = client
        .get(format!("http://{service_address}/call"))
        .header("traceparent", INCOMING)
        .send()
        .await
        .expect("call");
    assert_eq!(calling.status(), StatusCode::OK);
    let calling = traceparent(&calling);
    assert_eq!(calling.to_header().len(), INCOMING.len());

    // The three requests, the outgoing call's client span and the server span of the call it made.
    let spans = collector.wait_for_spans(5).await;
    assert_eq!(spans.len(), 5, "{spans:?}");

    let server = find(&spans, &continued.span_id_hex());
    assert_eq!(server["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(server["kind"], 2);
    assert_eq!(server["name"], "GET /items/{id}");
    assert_eq!(attribute(server, "http.route")["stringValue"], "/items/{id}");
    assert_eq!(attribute(server, "http.request.method")["stringValue"], "GET");
    assert_eq!(attribute(server, "http.response.status_code")["intValue"], "200");
    assert!(server.get("status").is_none(), "{server}");
    let start: u128 = server["startTimeUnixNano"].as_str().expect("string").parse().expect("nanos");
    let end: u128 = server["endTimeUnixNano"].as_str().expect("string").parse().expect("nanos");
    assert!(start > 1_600_000_000_000_000_000 && start <= end, "{start} {end}");

    let failed = find(&spans, &broken.span_id_hex());
    assert_eq!(failed["traceId"], broken.trace_id_hex());
    assert!(failed.get("parentSpanId").is_none(), "a new trace has no parent: {failed}");
    assert_eq!(failed["status"]["code"], 2);
    assert_eq!(attribute(failed, "http.response.status_code")["intValue"], "500");

    let caller = find(&spans, &calling.span_id_hex());
    assert_eq!(caller["parentSpanId"], "00f067aa0ba902b7");
    let client_span = spans.iter().find(|span| span["kind"] == 3).expect("a client span");
    assert_eq!(client_span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(client_span["parentSpanId"], caller["spanId"]);
    assert_eq!(attribute(client_span, "server.address")["stringValue"], "127.0.0.1");
    assert_eq!(attribute(client_span, "http.response.status_code")["intValue"], "200");
    let callee = spans
        .iter()
        .find(|span| span["kind"] == 2 && span["parentSpanId"] == client_span["spanId"])
        .expect("the callee's server span is the client span's child");
    assert_eq!(callee["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(callee["name"], "GET /items/{id}");

    let exports = collector.exports.lock().expect("lock");
    for (headers, body) in exports.iter() {
        assert_eq!(headers["x-collector-key"], "k=1");
        assert_eq!(headers["content-type"], "application/json");
        let resource = &body["resourceSpans"][0]["resource"]["attributes"][0];
        assert_eq!(resource["value"]["stringValue"], "platform-test");
        let text = body.to_string();
        assert!(!text.contains("/items/42") && !text.contains("/items/7"), "raw paths are never exported: {text}");
    }
    assert_eq!(saaschat_platform::telemetry::exporter().expect("exporter").dropped(), 0);
    shutdown.trigger();
}

fn settings(collector: SocketAddr, schedule_delay: Duration, queue: usize) -> OtlpSettings {
    OtlpSettings {
        traces_url: format!("http://{collector}/v1/traces").parse().expect("url"),
        headers: HeaderMap::new(),
        timeout: Duration::from_secs(10),
        sampler: Sampler::AlwaysOn,
        schedule_delay,
        max_queue_size: queue,
        max_export_batch_size: 1,
    }
}

fn span(name: &str) -> FinishedSpan {
    let context = TraceContext::new_root();
    FinishedSpan {
        trace_id: context.trace_id,
        span_id: context.span_id,
        parent_span_id: None,
        flags: context.flags,
        name: name.into(),
        kind: SpanKind::Server,
        start: SystemTime::now(),
        end: SystemTime::now(),
        attributes: Vec::new(),
        error: false,
    }
}

fn names(collector: &Collector) -> Vec<String> {
    collector.spans().iter().map(|span| span["name"].as_str().expect("name").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_sends_what_is_queued_without_waiting_for_the_schedule() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let collector = Collector::default();
    let address = listen(Router::new().route("/v1/traces", post(receive_traces)).with_state(collector.clone())).await;
    let exporter = Exporter::start("flush-test", &settings(address, Duration::from_secs(600), 16)).expect("starts");
    exporter.record(span("first"));
    exporter.record(span("second"));
    let flushing = exporter.clone();
    let flushed = tokio::task::spawn_blocking(move || flushing.flush(Duration::from_secs(10))).await.expect("flush");
    assert!(flushed);
    assert_eq!(names(&collector), ["first", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_spans_instead_of_waiting() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let collector = Collector::default();
    // The collector answers only when the test lets it, so the export of the first span hangs.
    let (arrived, released) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let slow = {
        let (arrived, released) = (arrived.clone(), released.clone());
        post(move |state: State<Collector>, headers: HeaderMap, body: Json<Value>| async move {
            arrived.add_permits(1);
            released.acquire().await.expect("open").forget();
            receive_traces(state, headers, body).await
        })
    };
    let address = listen(Router::new().route("/v1/traces", slow).with_state(collector.clone())).await;
    let exporter = Exporter::start("queue-test", &settings(address, Duration::from_millis(10), 1)).expect("starts");

    exporter.record(span("exporting"));
    arrived.acquire().await.expect("open").forget();
    let started = std::time::Instant::now();
    exporter.record(span("queued"));
    exporter.record(span("dropped"));
    assert!(started.elapsed() < Duration::from_secs(1), "recording never waits for the collector");
    assert_eq!(exporter.dropped(), 1);

    released.add_permits(2);
    collector.wait_for_spans(2).await;
    assert_eq!(names(&collector), ["exporting", "queued"]);
}
