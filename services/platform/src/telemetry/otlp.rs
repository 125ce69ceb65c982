//! OTLP/HTTP trace export with JSON bodies (the OTLP specification's JSON encoding), posted to
//! `<endpoint>/v1/traces`.
//!
//! Written by hand rather than with `opentelemetry` 0.33 + `opentelemetry_sdk` + `opentelemetry-otlp` +
//! `tracing-opentelemetry` 0.34. Build cost, measured on this project's two-core machine (a copy of the
//! workspace and its lock file, `nice cargo build -p saaschat-platform --timings`, a separate target directory,
//! other builds running): a clean build of this crate took 467 s (910 s summed over its 343 units); adding those
//! crates (features `trace`, `http-proto`, `reqwest-client`) adds 15 units and 32 s summed (`opentelemetry_sdk`
//! 11 s, `prost-derive` 3 s, `opentelemetry-proto` 3 s, `opentelemetry-otlp` 3 s, the rest under 2 s each), about
//! 4 %, but changes the features of `futures-util` and others, so every existing build cache recompiles all 343
//! units once (181 s). Build time is therefore no longer a strong reason. The reasons that decided:
//!
//! - The ids. [`crate::http::trace`] makes, logs and propagates the trace and span ids whether export is on or
//!   off. The SDK makes its own; using it means either feeding it ours span by span, so that it is only an
//!   exporter for spans that are already complete, or letting it make the ids, so that they exist only when a
//!   tracer provider is installed and trace.rs's tested guarantees move into SDK configuration.
//! - The runtime. The SDK's batch processor runs exports on its own thread without a Tokio reactor, where the
//!   asynchronous `reqwest` client cannot run; that needs the blocking client or the experimental async-runtime
//!   processor. The exporter below owns a thread with a small runtime and the workspace's `reqwest`.
//! - The size. Two span kinds with fixed attributes, encoded to OTLP/JSON, batched, flushed: the code below and
//!   its tests, against an SDK whose metrics, logs and span-processor machinery would go unused.
//!
//! Deciding: [`encode`] turns finished spans into the request body. Doing: [`Exporter`] owns a thread with its
//! own small runtime, so export never competes with request handling and flushing at exit cannot deadlock on the
//! caller's runtime. Spans reach it through a bounded channel; when the channel is full (the collector is slow or
//! down) a span is dropped and counted, never waited for, so a request is never blocked or failed by export.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::settings::{OtlpSettings, Sampler};

/// OTLP's `SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server = 2,
    Client = 3,
}

/// An attribute value: OTLP's `AnyValue` for the types the spans use.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    String(String),
    Int(i64),
}

/// A finished span, ready to export.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub flags: u8,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, AttributeValue)>,
    /// Set for failures (5xx responses, failed outgoing calls); the span's status is then `ERROR`.
    pub error: bool,
}

/// OTLP's `Status.code` for an error.
const STATUS_CODE_ERROR: u8 = 2;

/// The `ExportTraceServiceRequest` body for spans of one service.
pub fn encode(service_name: &str, spans: &[FinishedSpan]) -> Value {
    json!({
        "resourceSpans": [{
            "resource": {
                "attributes": [
                    attribute("service.name", &AttributeValue::String(service_name.to_string())),
                    attribute("telemetry.sdk.name", &AttributeValue::String("saaschat-platform".into())),
                    attribute("telemetry.sdk.language", &AttributeValue::String("rust".into())),
                ],
            },
            "scopeSpans": [{
                "scope": { "name": "saaschat-platform", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(encode_span).collect::<Vec<_>>(),
            }],
        }],
    })
}

fn encode_span(span: &FinishedSpan) -> Value {
    let mut encoded = json!({
        // OTLP/JSON writes ids as hex, not base64 as protobuf's JSON mapping would.
        "traceId": hex(&span.trace_id),
        "spanId": hex(&span.span_id),
        "flags": span.flags,
        "name": span.name,
        "kind": span.kind as u8,
        // 64-bit integers are strings in OTLP/JSON.
        "startTimeUnixNano": unix_nanos(span.start).to_string(),
        "endTimeUnixNano": unix_nanos(span.end).to_string(),
        "attributes": span.attributes.iter().map(|(key, value)| attribute(key, value)).collect::<Vec<_>>(),
    });
    if let Some(parent) = span.parent_span_id {
        encoded["parentSpanId"] = json!(hex(&parent));
    }
    if span.error {
        encoded["status"] = json!({ "code": STATUS_CODE_ERROR });
    }
    encoded
}

fn attribute(key: &str, value: &AttributeValue) -> Value {
    let value = match value {
        AttributeValue::String(text) => json!({ "stringValue": text }),
        AttributeValue::Int(number) => json!({ "intValue": number.to_string() }),
    };
    json!({ "key": key, "value": value })
}

fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map(|since| since.as_nanos()).unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

enum Command {
    /// Export everything queued so far, then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The handle the request middleware records spans through. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Exporter {
    spans: mpsc::Sender<FinishedSpan>,
    commands: mpsc::UnboundedSender<Command>,
    dropped: Arc<AtomicU64>,
    sampler: Sampler,
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start the OTLP export thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl Exporter {
    /// Starts the export thread.
    pub fn start(service_name: &str, settings: &OtlpSettings) -> Result<Exporter, StartError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .default_headers(settings.headers.clone())
            .build()
            .map_err(StartError::Client)?;
        let (spans, span_receiver) = mpsc::channel(settings.max_queue_size);
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let batcher = Batcher {
            client,
            url: settings.traces_url.clone(),
            service_name: service_name.to_string(),
            schedule_delay: settings.schedule_delay,
            max_batch: settings.max_export_batch_size,
            spans: span_receiver,
            commands: command_receiver,
            dropped: dropped.clone(),
            dropped_reported: 0,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartError::Thread)?;
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || runtime.block_on(batcher.run()))
            .map_err(StartError::Thread)?;
        Ok(Exporter { spans, commands, dropped, sampler: settings.sampler })
    }

    pub fn sampler(&self) -> Sampler {
        self.sampler
    }

    /// Queues a span without waiting; drops and counts it when the queue is full.
    pub fn record(&self, span: FinishedSpan) {
        if self.spans.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Exports everything queued so far and waits up to `timeout` for it. Blocks the calling thread (the export
    /// runs on its own thread), so it suits the end of `main`. `false` when the time ran out.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, finished) = std::sync::mpsc::channel();
        if self.commands.send(Command::Flush(done)).is_err() {
            return false;
        }
        finished.recv_timeout(timeout).is_ok()
    }
}

struct Batcher {
    client: reqwest::Client,
    url: url::Url,
    service_name: String,
    schedule_delay: Duration,
    max_batch: usize,
    spans: mpsc::Receiver<FinishedSpan>,
    commands: mpsc::UnboundedReceiver<Command>,
    dropped: Arc<AtomicU64>,
    /// The dropped count at the last warning, so each drop is reported once and not per span.
    dropped_reported: u64,
}

impl Batcher {
    /// Sends a batch when it is full or when `schedule_delay` has passed since the last one while spans wait, and
    /// everything queued on a flush.
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            let deadline = tokio::time::sleep(self.schedule_delay);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    span = self.spans.recv() => match span {
                        Some(span) => {
                            batch.push(span);
                            if batch.len() >= self.max_batch {
                                break;
                            }
                        }
                        None => {
                            self.export(&mut batch).await;
                            return;
                        }
                    },
                    command = self.commands.recv() => match command {
                        Some(Command::Flush(done)) => {
                            while let Ok(span) = self.spans.try_recv() {
                                batch.push(span);
                                if batch.len() >= self.max_batch {
                                    self.export(&mut batch).await;
                                }
                            }
                            self.export(&mut batch).await;
                            let _ = done.send(());
                        }
                        None => {
                            self.export(&mut batch).await;
                            return;
                        }
                    },
                    () = &mut deadline, if !batch.is_empty() => break,
                }
            }
            self.export(&mut batch).await;
        }
    }

    async fn export(&mut self, batch: &mut Vec<FinishedSpan>) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_reported {
            tracing::warn!(
                spans = dropped - self.dropped_reported,
                total = dropped,
                "OTLP trace export queue was full; spans dropped"
            );
            self.dropped_reported = dropped;
        }
        if batch.is_empty() {
            return;
        }
        let body = encode(&self.service_name, batch);
        let count = batch.len();
        batch.clear();
        let sent = self.client.post(self.url.clone()).json(&body).send().await;
        // A failed export loses this batch and nothing else: no retry queue grows while the collector is down.
        if let Err(error) = sent.and_then(|response| response.error_for_status()) {
            tracing::warn!(spans = count, error = %error.without_url(), "OTLP trace export failed; spans dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> FinishedSpan {
        FinishedSpan {
            trace_id: [0x4b; 16],
            span_id: [0x01; 8],
            parent_span_id: Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]),
            flags: 1,
            name: "GET /items/{id}".into(),
            kind: SpanKind::Server,
            start: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            end: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_223_456_789),
            attributes: vec![
                ("http.request.method", AttributeValue::String("GET".into())),
                ("http.response.status_code", AttributeValue::Int(503)),
            ],
            error: true,
        }
    }

    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let body = encode("auth", &[span()]);
        let resource = &body["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "auth"}})
        );
        let encoded = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(encoded["traceId"], "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b");
        assert_eq!(encoded["spanId"], "0101010101010101");
        assert_eq!(encoded["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(encoded["kind"], 2);
        assert_eq!(encoded["name"], "GET /items/{id}");
        assert_eq!(encoded["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(encoded["endTimeUnixNano"], "1700000000223456789");
        assert_eq!(encoded["status"], json!({"code": 2}));
        assert_eq!(
            encoded["attributes"],
            json!([
                {"key": "http.request.method", "value": {"stringValue": "GET"}},
                {"key": "http.response.status_code", "value": {"intValue": "503"}},
            ])
        );
    }

    #[test]
    fn roots_have_no_parent_and_successes_no_status() {
        let root = FinishedSpan { parent_span_id: None, error: false, kind: SpanKind::Client, ..span() };
        let encoded = &encode("auth", &[root])["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert!(encoded.get("parentSpanId").is_none());
        assert!(encoded.get("status").is_none());
        assert_eq!(encoded["kind"], 3);
    }
}
