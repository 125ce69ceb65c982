//! The JSON log line, written straight into the line buffer.
//!
//! The line has the shape of tracing-subscriber's JSON format with flattened events and the current span:
//! `{"timestamp":…,"level":…,<the event's fields>,"target":…,"span":{<the span's fields>,"name":…}}`. That
//! format keeps each span's fields as a JSON object in a string and parses it back into a tree for every line
//! logged inside the span, and collects the span's fields in a map before writing them; with a line per
//! request, that was most of what the access log cost. Here a span's fields are kept as the members of an
//! object, ready to be copied into each line, and every value is escaped as it is written.
//!
//! A field recorded on a span that already has it is appended, not replaced: the span object then has the name
//! twice, and JSON readers take the last value.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats a whole line: the event, its target, and the span it happened in.
#[derive(Debug, Default)]
pub struct JsonLines;

/// Keeps a span's fields as JSON object members (`"a":1,"b":"x"`), without the braces.
#[derive(Debug, Default)]
pub struct SpanMembers;

impl<'writer> FormatFields<'writer> for SpanMembers {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut members = Members::new(&mut writer, true);
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut members = Members::new(&mut writer, first);
        fields.record(&mut members);
        members.result
    }
}

impl<S> FormatEvent<S, SpanMembers> for JsonLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, SpanMembers>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Records that came through the `log` crate carry their real level and target as `log.*` fields.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", metadata.level())?;
        let mut members = Members::new(&mut writer, false);
        event.record(&mut members);
        members.result?;
        writer.write_str(",\"target\":")?;
        write_string(&mut writer, metadata.target())?;
        let span = event.parent().and_then(|id| context.span(id)).or_else(|| context.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<SpanMembers>>().filter(|fields| !fields.is_empty()) {
                writer.write_str(fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes the fields it visits as JSON object members, each preceded by a comma unless it is the first.
struct Members<'a, W: Write> {
    writer: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<'a, W: Write> Members<'a, W> {
    fn new(writer: &'a mut W, first: bool) -> Self {
        Members { writer, first, result: Ok(()) }
    }

    /// Writes `"name":` and then the value, unless an earlier write failed or the field is `log` metadata.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) { "" } else { "," };
        self.result = self.writer.write_str(separator).and_then(|()| {
            write_string(self.writer, name.strip_prefix("r#").unwrap_or(name))?;
            self.writer.write_char(':')?;
            value(self.writer)
        });
    }
}

impl<W: Write> Visit for Members<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; serde_json writes them as null too.
        self.member(
            field,
            |writer| if value.is_finite() { write!(writer, "{value}") } else { writer.write_str("null") },
        );
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |writer| write_string(writer, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |writer| {
            writer.write_char('"')?;
            write!(Escaping(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }
}

/// `text` as a JSON string.
fn write_string<W: Write + ?Sized>(writer: &mut W, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaping(writer).write_str(text)?;
    writer.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string (RFC 8259 §7).
struct Escaping<'a, W: Write + ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut unwritten = 0;
        for (index, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Every byte escaped is ASCII, so `index` is on a character boundary.
            self.0.write_str(&text[unwritten..index])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            unwritten = index + 1;
        }
        self.0.write_str(&text[unwritten..])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::telemetry::captured::Captured;

    /// Logs the same things through this format and through tracing-subscriber's JSON format.
    fn log_both(log: impl Fn()) -> (Vec<Value>, Vec<Value>) {
        let ours = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .fmt_fields(SpanMembers)
            .event_format(JsonLines)
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &log);
        let theirs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(theirs.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &log);
        (ours.json_lines(), theirs.json_lines())
    }

    fn without_timestamp(mut lines: Vec<Value>) -> Vec<Value> {
        for line in &mut lines {
            let timestamp = line.as_object_mut().and_then(|line| line.remove("timestamp"));
            let timestamp = timestamp.as_ref().and_then(Value::as_str).expect("a timestamp");
            assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "RFC 3339: {timestamp}");
        }
        lines
    }

    #[derive(Debug)]
    #[allow(dead_code, reason = "read through Debug")]
    struct Upstream {
        host: &'static str,
        port: u16,
    }

    #[test]
    fn lines_read_the_same_as_tracing_subscribers_json_format() {
        let awkward = "quote \" backslash \\ newline \n tab \t bell \u{7} unicode é ✓";
        let (ours, theirs) = log_both(|| {
            tracing::info!(status = 200_u16, elapsed_ms = 1.25, "outside any span");
            let span =
                tracing::info_span!("request", http.route = "/v1/chat/completions", trace_id = %"4bf9", n = -3_i64);
            span.in_scope(|| {
                tracing::warn!(ok = true, missing = f64::NAN, upstream = ?Upstream { host: "127.0.0.1", port: 80 }, "in a span");
                tracing::error!(text = awkward, error = &std::io::Error::other("broken pipe") as &dyn std::error::Error, "{awkward}");
            });
            let empty = tracing::info_span!("empty");
            empty.in_scope(|| tracing::debug!(big = u64::MAX, "no span fields"));
        });
        assert_eq!(without_timestamp(ours), without_timestamp(theirs));
    }

    #[test]
    fn lines_carry_the_event_and_its_span() {
        let (ours, _) = log_both(|| {
            let span = tracing::info_span!("request", http.route = "/x", trace_id = %"4bf9");
            span.in_scope(|| tracing::info!(status = 200_u16, "request finished"));
        });
        let line = without_timestamp(ours).remove(0);
        assert_eq!(
            line,
            json!({
                "level": "INFO",
                "message": "request finished",
                "status": 200,
                "target": module_path!(),
                "span": { "http.route": "/x", "trace_id": "4bf9", "name": "request" },
            })
        );
    }

    #[test]
    fn a_field_recorded_later_joins_the_span() {
        let (ours, _) = log_both(|| {
            let span = tracing::info_span!("request", user = tracing::field::Empty, route = "/x");
            span.in_scope(|| tracing::info!("before"));
            span.record("user", "u1");
            span.in_scope(|| tracing::info!("after"));
        });
        assert_eq!(ours[0]["span"], json!({ "route": "/x", "name": "request" }));
        assert_eq!(ours[1]["span"], json!({ "route": "/x", "user": "u1", "name": "request" }));
    }

    #[test]
    fn records_of_the_log_crate_keep_their_level_and_target_without_log_fields() {
        let (ours, _) = log_both(|| {
            let record = log::Record::builder()
                .level(log::Level::Warn)
                .target("hyper::proto")
                .module_path(Some("hyper::proto::h1"))
                .file(Some("h1.rs"))
                .line(Some(7))
                .args(format_args!("connection reset"))
                .build();
            tracing_log::format_trace(&record).expect("log");
        });
        let line = without_timestamp(ours).remove(0);
        assert_eq!(line, json!({ "level": "WARN", "message": "connection reset", "target": "hyper::proto" }));
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        write_string(&mut out, "a\u{0}b\u{1f}c\"").expect("write");
        assert_eq!(out, r#""a\u0000b\u001fc\"""#);
        assert_eq!(serde_json::from_str::<String>(&out).expect("valid JSON"), "a\u{0}b\u{1f}c\"");
    }
}
