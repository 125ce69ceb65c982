//! Errors and panics reported to Sentry, through the `sentry` crate.
//!
//! `tracing` ERROR events become Sentry events and WARN events the breadcrumbs before them; panics are reported
//! by the panic integration. Nothing of a request is attached (no body, no headers, no user), and every event and
//! breadcrumb passes [`scrub_event`] / [`scrub_breadcrumb`] first, which blank fields with secret-sounding names
//! and credentials written into text (`Bearer ...`, `user:password@`).
//!
//! Deciding: the scrubbers. Doing: [`start`], which binds a client to the process's main hub.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use sentry::protocol::{Breadcrumb, Context, Event, Value};

use super::settings::SentrySettings;

const REDACTED: &str = "[redacted]";

/// Names (or parts of names, compared in lower case) of fields whose values are never sent.
const SECRET_NAMES: [&str; 13] = [
    "authorization",
    "auth_header",
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "cookie",
    "dsn",
    "credential",
    "private_key",
];

/// The reason Sentry could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings check the DSN's shape; this is what the `sentry` crate found beyond it. The DSN is not shown.
    #[error("SENTRY_DSN is invalid: {0}")]
    Dsn(#[source] sentry::types::ParseDsnError),
}

/// Binds a Sentry client for `service_name` to the main hub, so every thread reports through it.
pub fn start(service_name: &str, settings: &SentrySettings) -> Result<Arc<sentry::Client>, StartError> {
    let dsn = settings.dsn.expose().parse::<sentry::types::Dsn>().map_err(StartError::Dsn)?;
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(Cow::Owned(format!("{service_name}@{}", env!("CARGO_PKG_VERSION"))));
    options.environment = settings.environment.clone().map(Cow::Owned);
    options.send_default_pii = false;
    options.max_request_body_size = sentry::MaxRequestBodySize::None;
    options.before_send = Some(Arc::new(|event| Some(scrub_event(event))));
    options.before_breadcrumb = Some(Arc::new(|breadcrumb| Some(scrub_breadcrumb(breadcrumb))));
    let client = Arc::new(sentry::Client::from(sentry::apply_defaults(options)));
    let hub = sentry::Hub::main();
    hub.bind_client(Some(client.clone()));
    hub.configure_scope(|scope| scope.set_tag("service", service_name));
    Ok(client)
}

/// Removes request data and secrets from an event.
pub fn scrub_event(mut event: Event<'static>) -> Event<'static> {
    event.request = None;
    event.user = None;
    if let Some(message) = event.message.as_mut() {
        *message = scrub_text(message);
    }
    if let Some(entry) = event.logentry.as_mut() {
        entry.message = scrub_text(&entry.message);
        entry.params.iter_mut().for_each(scrub_value);
    }
    for exception in &mut event.exception.values {
        if let Some(value) = exception.value.as_mut() {
            *value = scrub_text(value);
        }
    }
    scrub_map(&mut event.extra);
    for (name, value) in &mut event.tags {
        *value = if is_secret_name(name) { REDACTED.to_string() } else { scrub_text(value) };
    }
    for context in event.contexts.values_mut() {
        if let Context::Other(fields) = context {
            scrub_map(fields);
        }
    }
    for breadcrumb in &mut event.breadcrumbs.values {
        *breadcrumb = scrub_breadcrumb(breadcrumb.clone());
    }
    event
}

/// Removes secrets from a breadcrumb.
pub fn scrub_breadcrumb(mut breadcrumb: Breadcrumb) -> Breadcrumb {
    if let Some(message) = breadcrumb.message.as_mut() {
        *message = scrub_text(message);
    }
    scrub_map(&mut breadcrumb.data);
    breadcrumb
}

fn scrub_map(fields: &mut BTreeMap<String, Value>) {
    for (name, value) in fields.iter_mut() {
        if is_secret_name(name) {
            *value = Value::String(REDACTED.into());
        } else {
            scrub_value(value);
        }
    }
}

fn scrub_value(value: &mut Value) {
    match value {
        Value::String(text) => *text = scrub_text(text),
        Value::Array(items) => items.iter_mut().for_each(scrub_value),
        Value::Object(fields) => {
            for (name, value) in fields.iter_mut() {
                if is_secret_name(name) {
                    *value = Value::String(REDACTED.into());
                } else {
                    scrub_value(value);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|secret| name.contains(secret))
}

/// Blanks the credential after an authorization scheme (`Bearer abc` becomes `Bearer [redacted]`) and the
/// password of a URL's user info (`//user:pass@host` becomes `//user:[redacted]@host`).
pub fn scrub_text(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut scrubbed = Vec::with_capacity(words.len());
    let mut after_scheme = false;
    for word in words {
        if after_scheme && !word.is_empty() {
            scrubbed.push(Cow::Borrowed(REDACTED));
            after_scheme = false;
            continue;
        }
        let bare = word.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        after_scheme = ["bearer", "basic", "token"].iter().any(|scheme| bare.eq_ignore_ascii_case(scheme));
        scrubbed.push(scrub_url_password(word));
    }
    scrubbed.join(" ")
}

fn scrub_url_password(word: &str) -> Cow<'_, str> {
    let Some(authority_start) = word.find("://").map(|index| index + 3) else { return Cow::Borrowed(word) };
    let rest = &word[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return Cow::Borrowed(word) };
    let Some(colon) = rest[..at].find(':') else { return Cow::Borrowed(word) };
    Cow::Owned(format!("{}{}:{REDACTED}{}", &word[..authority_start], &rest[..colon], &rest[at..]))
}

#[cfg(test)]
mod tests {
    use sentry::protocol::{Exception, Request};

    use super::*;

    #[test]
    fn credentials_in_text_are_blanked() {
        assert_eq!(scrub_text("header was Bearer eyJhbGciOi.x.y here"), "header was Bearer [redacted] here");
        assert_eq!(scrub_text("authorization: basic dXNlcjpwYXNz"), "authorization: basic [redacted]");
        assert_eq!(
            scrub_text("cannot reach postgres://saaschat:hunter2@db:5432/app (refused)"),
            "cannot reach postgres://saaschat:[redacted]@db:5432/app (refused)"
        );
        assert_eq!(scrub_text("plain https://example.com/a@b words"), "plain https://example.com/a@b words");
        assert_eq!(scrub_text("a token"), "a token");
    }

    #[test]
    fn events_lose_request_data_and_secret_fields() {
        let mut fields = BTreeMap::new();
        fields.insert("authorization".to_string(), Value::from("Bearer abc"));
        fields.insert("user_password".to_string(), Value::from("hunter2"));
        fields.insert("attempt".to_string(), Value::from(3));
        fields.insert("detail".to_string(), serde_json::json!({"api_key": "k-123", "note": "Bearer xyz"}));
        let mut event = Event {
            message: Some("refused Bearer abc".into()),
            request: Some(Request { data: Some("{\"password\":\"hunter2\"}".into()), ..Request::default() }),
            ..Event::default()
        };
        event.contexts.insert("Rust Tracing Fields".into(), Context::Other(fields.clone()));
        event.extra = fields;
        event.tags.insert("session_token".into(), "t-1".into());
        event.exception.values.push(Exception { value: Some("token t-2 expired".into()), ..Exception::default() });
        let scrubbed = scrub_event(event);
        let text = serde_json::to_string(&scrubbed).expect("json");
        for secret in ["abc", "hunter2", "k-123", "xyz", "t-1", "t-2"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(scrubbed.request.is_none());
        assert_eq!(scrubbed.extra["attempt"], Value::from(3));
        assert_eq!(scrubbed.extra["authorization"], Value::from(REDACTED));
    }

    #[test]
    fn breadcrumbs_lose_secret_fields() {
        let mut breadcrumb = Breadcrumb { message: Some("signing in with Bearer abc".into()), ..Breadcrumb::default() };
        breadcrumb.data.insert("refresh_token".into(), Value::from("r-1"));
        breadcrumb.data.insert("route".into(), Value::from("/sign-in"));
        let scrubbed = scrub_breadcrumb(breadcrumb);
        assert_eq!(scrubbed.message.as_deref(), Some("signing in with Bearer [redacted]"));
        assert_eq!(scrubbed.data["refresh_token"], Value::from(REDACTED));
        assert_eq!(scrubbed.data["route"], Value::from("/sign-in"));
    }
}
