//! W3C Trace Context (`traceparent`) parsing and propagation, and the request span.
//!
//! Written by hand rather than with `opentelemetry` + `tracing-opentelemetry` + `opentelemetry-otlp`: those
//! (with `tonic`/`prost` for OTLP) roughly double this crate's build on two cores, and the services need only
//! what is here: continue the caller's trace, give every request a span id, log both, and pass the context on to
//! outgoing calls. An OTLP exporter can be added behind this module without changing its callers.

use std::fmt::Write;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

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
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 1
    }
}

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
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
/// outcome. Neither headers nor bodies are logged.
pub async fn trace_requests(mut request: Request, next: Next) -> Response {
    let incoming =
        request.headers().get(TRACEPARENT).and_then(|value| value.to_str().ok()).and_then(TraceContext::parse);
    let context = incoming.map(|parent| parent.child()).unwrap_or_else(TraceContext::new_root);
    let parent_span_id = incoming.map(|parent| parent.span_id_hex()).unwrap_or_default();
    let route = route_label(request.extensions().get::<MatchedPath>()).to_string();
    let span = tracing::info_span!(
        "request",
        http.request.method = %request.method(),
        http.route = %route,
        trace_id = %context.trace_id_hex(),
        span_id = %context.span_id_hex(),
        parent_span_id = %parent_span_id,
        http.response.status_code = tracing::field::Empty,
    );
    request.extensions_mut().insert(context);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&context.to_header()) {
        // Lets a caller without tracing find this request in the logs.
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
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
}
