//! W3C Trace Context (`traceparent`) parsing and propagation, the request span, and the client span of outgoing
//! calls.
//!
//! The ids are made here, by hand, whether or not traces are exported: continue the caller's trace, give every
//! request a span id, log both, pass the context on to outgoing calls. When OTLP export is configured, the
//! sampler decides each span's sampled flag and every sampled span is handed to [`crate::telemetry::exporter`]
//! with exactly the ids this module logs and propagates. [`crate::telemetry::otlp`] says why this is not the
//! OpenTelemetry SDK (with measured build costs).

use std::time::{Instant, SystemTime};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::telemetry::otlp::{AttributeValue, FinishedSpan, SpanKind};

pub const TRACEPARENT: &str = "traceparent";

/// One hop of a trace: the trace id, the id of the span that is the parent of the next hop, and the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` header (version 00 and, as the spec asks, later versions by their first four
    /// fields). `None` for anything malformed, including all-zero ids.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let header = header.trim();
        let mut fields = header.split('-');
        let version = fields.next()?;
        let trace_id = fields.next()?;
        let span_id = fields.next()?;
        let flags = fields.next()?;
        if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && fields.next().is_some() {
            return None;
        }
        let context = TraceContext {
            trace_id: decode_hex(trace_id)?,
            span_id: decode_hex(span_id)?,
            flags: decode_hex::<1>(flags)?[0],
        };
        (context.trace_id != [0; 16] && context.span_id != [0; 8]).then_some(context)
    }

    /// A new trace, sampled.
    pub fn new_root() -> TraceContext {
        TraceContext { trace_id: random_id(), span_id: random_id(), flags: 0x01 }
    }

    /// The context of a new span whose parent is this one: same trace and flags, new span id.
    pub fn child(&self) -> TraceContext {
        TraceContext { span_id: random_id(), ..*self }
    }

    /// The header value to send on an outgoing request made within this span.
    pub fn to_header(&self) -> String {
        let mut header = String::with_capacity(55);
        header.push_str("00-");
        push_hex(&mut header, &self.trace_id);
        header.push('-');
        push_hex(&mut header, &self.span_id);
        header.push('-');
        push_hex(&mut header, &[self.flags]);
        header
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED == SAMPLED
    }

    /// This context with the sampled flag set to `sampled`, the other flags kept.
    pub fn with_sampled(self, sampled: bool) -> TraceContext {
        TraceContext { flags: (self.flags & !SAMPLED) | if sampled { SAMPLED } else { 0 }, ..self }
    }

    /// Adds the `traceparent` of a new child span (the client span of this call) to an outgoing request. Use
    /// [`TraceContext::send`] instead when traces are exported, so that the child span is exported too and the
    /// callee's span has a parent in the trace.
    pub fn inject(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&self.child().to_header()) {
            headers.insert(TRACEPARENT, value);
        }
        // `headers` replaces a traceparent the request already has; `header` would add a second one.
        request.headers(headers)
    }

    /// Sends an outgoing request as a child span of this one: adds its `traceparent` and, when OTLP export is on
    /// and the trace is sampled, exports it as a client span (method, server address and port, status; never the
    /// URL's path or query, which may carry identifiers or keys). The span ends when the response headers arrive.
    /// The request's outcome is returned unchanged.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, reqwest::Error> {
        let call = self.child();
        let (client, request) = request.build_split();
        let mut request = request?;
        if let Ok(value) = HeaderValue::from_str(&call.to_header()) {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        let Some(exporter) = crate::telemetry::exporter().filter(|_| call.sampled()) else {
            return client.execute(request).await;
        };
        let method = request.method().clone();
        let server = ServerAddress {
            host: request.url().host_str().unwrap_or_default().to_string(),
            port: request.url().port_or_known_default(),
        };
        let start = SystemTime::now();
        let started = Instant::now();
        let outcome = client.execute(request).await;
        let end = start + started.elapsed();
        let status = outcome.as_ref().ok().map(|response| response.status().as_u16());
        exporter.record(client_span(self, &call, &method, &server, status, start, end));
        outcome
    }
}

const SAMPLED: u8 = 0x01;

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !is_lower_hex(text) {
        return None;
    }
    let mut bytes = [0u8; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(bytes)
}

// By hand rather than with `write!`: every request formats three ids and a header, and the formatting machinery
// was a few per cent of the chat gateway's CPU.
fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    push_hex(&mut text, bytes);
    text
}

fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let mut id = [0u8; N];
        fastrand::fill(&mut id);
        if id != [0u8; N] {
            return id;
        }
    }
}

/// The label for a request's route: its template (`/conversations/{id}`), never the raw path, so metrics and
/// logs cannot be blown up (or fed identifiers) by arbitrary paths.
pub fn route_label(matched: Option<&MatchedPath>) -> &str {
    matched.map(MatchedPath::as_str).unwrap_or("<unmatched>")
}

/// Middleware: continues the caller's trace (or starts one), runs the request in a span that carries the trace
/// and span ids, stores this span's [`TraceContext`] in the request extensions for outgoing calls, and logs the
/// outcome. When OTLP export is on, the sampler sets the sampled flag and a sampled request's server span is
/// queued for export when its response headers are ready (a stream may run on). Neither headers nor bodies are
/// logged or exported.
pub async fn trace_requests(mut request: Request, next: Next) -> Response {
    let incoming =
        request.headers().get(TRACEPARENT).and_then(|value| value.to_str().ok()).and_then(TraceContext::parse);
    let mut context = incoming.map(|parent| parent.child()).unwrap_or_else(TraceContext::new_root);
    let exporter = crate::telemetry::exporter();
    if let Some(exporter) = exporter {
        let sampled = exporter.sampler().should_sample(incoming.map(|parent| parent.sampled()), &context.trace_id);
        context = context.with_sampled(sampled);
    }
    let parent_span_id = incoming.map(|parent| parent.span_id_hex()).unwrap_or_default();
    let matched_path = request.extensions().get::<MatchedPath>().cloned();
    let route = route_label(matched_path.as_ref()).to_string();
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        http.request.method = %method,
        http.route = %route,
        trace_id = %context.trace_id_hex(),
        span_id = %context.span_id_hex(),
        parent_span_id = %parent_span_id,
    );
    request.extensions_mut().insert(context);
    let start = SystemTime::now();
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    // The status goes in the closing line only: recording it in the span would format all its fields again.
    let status = response.status().as_u16();
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request finished");
        }
    });
    if let Some(exporter) = exporter.filter(|_| context.sampled()) {
        let parent = incoming.map(|parent| parent.span_id);
        let route = matched_path.as_ref().map(MatchedPath::as_str);
        exporter.record(server_span(&context, parent, &method, route, status, start, start + elapsed));
    }
    if let Ok(value) = HeaderValue::from_str(&context.to_header()) {
        // Lets a caller without tracing find this request in the logs.
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}

/// The exported server span of a request, named and described by the HTTP semantic conventions. `route` is the
/// matched template; an unmatched request is named by its method alone, never by its raw path.
pub fn server_span(
    context: &TraceContext,
    parent_span_id: Option<[u8; 8]>,
    method: &Method,
    route: Option<&str>,
    status: u16,
    start: SystemTime,
    end: SystemTime,
) -> FinishedSpan {
    let mut attributes = vec![("http.request.method", AttributeValue::String(method.to_string()))];
    if let Some(route) = route {
        attributes.push(("http.route", AttributeValue::String(route.to_string())));
    }
    attributes.push(("http.response.status_code", AttributeValue::Int(i64::from(status))));
    if status >= 500 {
        attributes.push(("error.type", AttributeValue::String(status.to_string())));
    }
    FinishedSpan {
        trace_id: context.trace_id,
        span_id: context.span_id,
        parent_span_id,
        flags: context.flags,
        name: route.map(|route| format!("{method} {route}")).unwrap_or_else(|| method.to_string()),
        kind: SpanKind::Server,
        start,
        end,
        attributes,
        error: status >= 500,
    }
}

/// The server an outgoing call went to, as the client span names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: Option<u16>,
}

/// The exported client span of an outgoing call; `status` is `None` when no response arrived.
pub fn client_span(
    parent: &TraceContext,
    call: &TraceContext,
    method: &Method,
    server: &ServerAddress,
    status: Option<u16>,
    start: SystemTime,
    end: SystemTime,
) -> FinishedSpan {
    let mut attributes = vec![
        ("http.request.method", AttributeValue::String(method.to_string())),
        ("server.address", AttributeValue::String(server.host.clone())),
    ];
    if let Some(port) = server.port {
        attributes.push(("server.port", AttributeValue::Int(i64::from(port))));
    }
    let failed = match status {
        Some(status) => {
            attributes.push(("http.response.status_code", AttributeValue::Int(i64::from(status))));
            status >= 500
        }
        None => true,
    };
    if failed {
        let error_type = status.map(|status| status.to_string()).unwrap_or_else(|| "no_response".into());
        attributes.push(("error.type", AttributeValue::String(error_type)));
    }
    FinishedSpan {
        trace_id: call.trace_id,
        span_id: call.span_id,
        parent_span_id: Some(parent.span_id),
        flags: call.flags,
        name: method.to_string(),
        kind: SpanKind::Client,
        start,
        end,
        attributes,
        error: failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example_and_formats_it_back() {
        let context = TraceContext::parse(EXAMPLE).expect("valid");
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id_hex(), "00f067aa0ba902b7");
        assert!(context.sampled());
        assert_eq!(context.to_header(), EXAMPLE);
    }

    #[test]
    fn refuses_malformed_headers() {
        for header in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(header), None, "{header:?}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_first_four_fields() {
        let context = TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future")
            .expect("forward compatible");
        assert!(!context.sampled());
        assert_eq!(context.to_header(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_and_gets_a_new_span() {
        let parent = TraceContext::parse(EXAMPLE).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.flags, parent.flags);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(TraceContext::parse(&child.to_header()), Some(child));
    }

    #[test]
    fn new_roots_are_valid_and_distinct() {
        let (first, second) = (TraceContext::new_root(), TraceContext::new_root());
        assert_ne!(first.trace_id, second.trace_id);
        assert_eq!(TraceContext::parse(&first.to_header()), Some(first));
    }

    #[test]
    fn the_sampled_flag_can_be_switched_keeping_the_others() {
        let context = TraceContext { flags: 0x03, ..TraceContext::parse(EXAMPLE).expect("valid") };
        assert_eq!(context.with_sampled(false).flags, 0x02);
        assert_eq!(context.with_sampled(false).with_sampled(true).flags, 0x03);
        assert_eq!(context.with_sampled(true).span_id, context.span_id);
    }

    #[test]
    fn inject_adds_the_traceparent_of_a_child_span() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parent = TraceContext::parse(EXAMPLE).expect("valid");
        let client = reqwest::Client::new();
        let request = parent.inject(client.get("http://callee.invalid/v1/models")).build().expect("request");
        let header = request.headers()[TRACEPARENT].to_str().expect("ascii");
        let sent = TraceContext::parse(header).expect("valid traceparent");
        assert_eq!(sent.trace_id, parent.trace_id);
        assert_eq!(sent.flags, parent.flags);
        assert_ne!(sent.span_id, parent.span_id);
        let again = parent.inject(client.get("http://callee.invalid/")).build().expect("request");
        assert_ne!(again.headers()[TRACEPARENT], request.headers()[TRACEPARENT], "every call is its own span");
    }

    #[test]
    fn inject_replaces_a_traceparent_already_on_the_request() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parent = TraceContext::parse(EXAMPLE).expect("valid");
        let stale = "00-11111111111111111111111111111111-2222222222222222-01";
        let builder = reqwest::Client::new().get("http://callee.invalid/").header(TRACEPARENT, stale);
        let request = parent.inject(builder).build().expect("request");
        let values: Vec<_> = request.headers().get_all(TRACEPARENT).iter().collect();
        assert_eq!(values.len(), 1, "{values:?}");
        assert!(values[0].to_str().expect("ascii").contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    }

    fn times() -> (SystemTime, SystemTime) {
        let start = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        (start, start + std::time::Duration::from_millis(12))
    }

    fn attribute<'a>(span: &'a FinishedSpan, key: &str) -> Option<&'a AttributeValue> {
        span.attributes.iter().find(|(name, _)| *name == key).map(|(_, value)| value)
    }

    #[test]
    fn server_spans_carry_the_ids_route_and_status() {
        let parent = TraceContext::parse(EXAMPLE).expect("valid");
        let context = parent.child();
        let (start, end) = times();
        let span = server_span(&context, Some(parent.span_id), &Method::POST, Some("/items/{id}"), 201, start, end);
        assert_eq!(
            (span.trace_id, span.span_id, span.parent_span_id),
            (parent.trace_id, context.span_id, Some(parent.span_id))
        );
        assert_eq!(span.name, "POST /items/{id}");
        assert_eq!(span.kind, SpanKind::Server);
        assert_eq!((span.start, span.end), (start, end));
        assert_eq!(attribute(&span, "http.request.method"), Some(&AttributeValue::String("POST".into())));
        assert_eq!(attribute(&span, "http.route"), Some(&AttributeValue::String("/items/{id}".into())));
        assert_eq!(attribute(&span, "http.response.status_code"), Some(&AttributeValue::Int(201)));
        assert!(!span.error);
        assert_eq!(attribute(&span, "error.type"), None);
    }

    #[test]
    fn server_errors_mark_the_span_and_unmatched_paths_are_not_named() {
        let context = TraceContext::new_root();
        let (start, end) = times();
        let failed = server_span(&context, None, &Method::GET, Some("/items/{id}"), 503, start, end);
        assert!(failed.error);
        assert_eq!(attribute(&failed, "error.type"), Some(&AttributeValue::String("503".into())));
        let client_error = server_span(&context, None, &Method::GET, Some("/items/{id}"), 404, start, end);
        assert!(!client_error.error);
        let unmatched = server_span(&context, None, &Method::GET, None, 404, start, end);
        assert_eq!(unmatched.name, "GET");
        assert_eq!(attribute(&unmatched, "http.route"), None);
        assert_eq!(unmatched.parent_span_id, None);
    }

    #[test]
    fn client_spans_are_children_and_mark_failures() {
        let parent = TraceContext::parse(EXAMPLE).expect("valid");
        let call = parent.child();
        let server = ServerAddress { host: "api.openai.com".into(), port: Some(443) };
        let (start, end) = times();
        let span = client_span(&parent, &call, &Method::POST, &server, Some(200), start, end);
        assert_eq!((span.span_id, span.parent_span_id), (call.span_id, Some(parent.span_id)));
        assert_eq!((span.kind, span.name.as_str(), span.error), (SpanKind::Client, "POST", false));
        assert_eq!(attribute(&span, "server.address"), Some(&AttributeValue::String("api.openai.com".into())));
        assert_eq!(attribute(&span, "server.port"), Some(&AttributeValue::Int(443)));
        assert_eq!(attribute(&span, "http.response.status_code"), Some(&AttributeValue::Int(200)));
        let unanswered = client_span(&parent, &call, &Method::POST, &server, None, start, end);
        assert!(unanswered.error);
        assert_eq!(attribute(&unanswered, "error.type"), Some(&AttributeValue::String("no_response".into())));
        assert!(client_span(&parent, &call, &Method::GET, &server, Some(502), start, end).error);
    }
}
