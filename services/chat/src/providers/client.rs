//! Sending requests upstream (the doing half of the providers): one HTTP client with no redirects and no
//! retries of its own (the resilience layer is the one retry layer), and three timeouts: connect, first byte
//! (until the response headers), and idle (between chunks of a stream).

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::sse::{SseDecoder, SseItem};
use super::{
    Completion, CompletionRequest, Endpoint, Provider, ProviderError, ProviderEvent, StreamDecoder, TimeoutPhase,
    parse_retry_after,
};

/// The most of an error body read to classify it.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most of a whole (non-streaming) response accepted.
const MAX_COMPLETION_BODY: usize = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub first_byte: Duration,
    pub idle: Duration,
}

#[derive(Clone, Debug)]
pub struct UpstreamClient {
    http: reqwest::Client,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> Result<UpstreamClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            // A redirect could point the key at another host.
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(UpstreamClient { http })
    }

    async fn send(
        &self,
        provider: &dyn Provider,
        endpoint: &Endpoint,
        request: &CompletionRequest,
        stream: bool,
        timeouts: Timeouts,
    ) -> Result<reqwest::Response, ProviderError> {
        let upstream = provider.build_request(endpoint, request, stream);
        let mut headers = HeaderMap::with_capacity(upstream.headers.len() + 1);
        for (name, value) in &upstream.headers {
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| ProviderError::Protocol(format!("the configured {name} is not a valid header value")))?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), value);
        }
        let body = serde_json::to_vec(&upstream.body).map_err(|error| ProviderError::Protocol(error.to_string()))?;
        let sent = self
            .http
            .post(upstream.url)
            .headers(headers)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send();
        let response = match tokio::time::timeout(timeouts.first_byte, sent).await {
            Err(_) => return Err(ProviderError::Timeout(TimeoutPhase::FirstByte)),
            Ok(Err(error)) => return Err(transport_error(error)),
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let header =
            |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_string);
        let retry_after = parse_retry_after(header("retry-after").as_deref(), header("retry-after-ms").as_deref());
        let body =
            tokio::time::timeout(timeouts.idle, read_limited(response, MAX_ERROR_BODY)).await.unwrap_or_default();
        Err(provider.classify_error(status, retry_after, &redact(&body, endpoint.api_key.expose())))
    }

    /// A whole completion (the upstream's non-streaming method).
    pub async fn complete(
        &self,
        provider: &dyn Provider,
        endpoint: &Endpoint,
        request: &CompletionRequest,
        timeouts: Timeouts,
    ) -> Result<Completion, ProviderError> {
        let response = self.send(provider, endpoint, request, false, timeouts).await?;
        let body = tokio::time::timeout(timeouts.first_byte, read_body(response, MAX_COMPLETION_BODY))
            .await
            .map_err(|_| ProviderError::Timeout(TimeoutPhase::Idle))??;
        provider.parse_completion(&body)
    }

    /// Opens a stream; its events are then read with [`UpstreamStream::next`].
    pub async fn stream(
        &self,
        provider: &dyn Provider,
        endpoint: &Endpoint,
        request: &CompletionRequest,
        timeouts: Timeouts,
    ) -> Result<UpstreamStream, ProviderError> {
        let response = self.send(provider, endpoint, request, true, timeouts).await?;
        Ok(UpstreamStream {
            response,
            sse: SseDecoder::new(),
            decoder: provider.decoder(),
            pending: VecDeque::new(),
            idle: timeouts.idle,
            finished: false,
            ended: false,
            deferred: None,
        })
    }
}

/// An upstream error body with every copy of the key cut out: some providers echo what they were sent, and
/// error texts reach callers and logs.
pub fn redact(body: &[u8], key: &str) -> Vec<u8> {
    if key.is_empty() {
        return body.to_vec();
    }
    let text = String::from_utf8_lossy(body);
    if !text.contains(key) {
        return body.to_vec();
    }
    text.replace(key, "[REDACTED]").into_bytes()
}

fn transport_error(error: reqwest::Error) -> ProviderError {
    if error.is_connect() && error.is_timeout() {
        return ProviderError::Timeout(TimeoutPhase::Connect);
    }
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    ProviderError::Connection(message)
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    body
}

async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(ProviderError::Protocol(format!("the response exceeds {limit} bytes")));
        }
    }
    Ok(body)
}

/// An open upstream stream, decoded into provider events.
pub struct UpstreamStream {
    response: reqwest::Response,
    sse: SseDecoder,
    decoder: Box<dyn StreamDecoder>,
    pending: VecDeque<ProviderEvent>,
    idle: Duration,
    /// A finish reason was seen: a close after it is a clean end.
    finished: bool,
    ended: bool,
    /// An error decoded after events that have not been handed out yet.
    deferred: Option<ProviderError>,
}

impl UpstreamStream {
    /// The next event; `None` once the stream has ended cleanly. A stream that closes before it said it was
    /// complete, stalls longer than the idle timeout, or carries an error event, yields an error.
    pub async fn next(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if matches!(event, ProviderEvent::Finished(_)) {
                    self.finished = true;
                }
                return Some(Ok(event));
            }
            if let Some(error) = self.deferred.take() {
                return self.fail(error);
            }
            if self.ended || self.decoder.is_done() {
                self.ended = true;
                return None;
            }
            let chunk = match tokio::time::timeout(self.idle, self.response.chunk()).await {
                Err(_) => return self.fail(ProviderError::Timeout(TimeoutPhase::Idle)),
                Ok(Err(error)) => return self.fail(transport_error(error)),
                Ok(Ok(None)) => {
                    self.ended = true;
                    if self.finished {
                        return None;
                    }
                    return Some(Err(ProviderError::Connection(
                        "the stream closed before the answer was complete".into(),
                    )));
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            for item in self.sse.push(&chunk) {
                let SseItem::Event(event) = item else { continue };
                if self.decoder.is_done() {
                    break;
                }
                match self.decoder.decode(event.event.as_deref(), &event.data) {
                    Ok(events) => self.pending.extend(events),
                    Err(error) => {
                        // Events decoded before the error still reach the caller first.
                        if self.pending.is_empty() {
                            return self.fail(error);
                        }
                        self.deferred = Some(error);
                        break;
                    }
                }
            }
        }
    }

    /// The text events already decoded and waiting, joined; `None` if the next waiting event is not text.
    pub fn take_ready_text(&mut self) -> Option<String> {
        let mut joined: Option<String> = None;
        while let Some(ProviderEvent::Text(_)) = self.pending.front() {
            if let Some(ProviderEvent::Text(text)) = self.pending.pop_front() {
                joined.get_or_insert_with(String::new).push_str(&text);
            }
        }
        joined
    }

    fn fail(&mut self, error: ProviderError) -> Option<Result<ProviderEvent, ProviderError>> {
        self.ended = true;
        Some(Err(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_echoed_in_error_bodies_are_cut_out() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-live-123. Key sk-live-123 is revoked."}}"#;
        let redacted = String::from_utf8(redact(body, "sk-live-123")).expect("utf8");
        assert!(!redacted.contains("sk-live-123"));
        assert_eq!(redacted.matches("[REDACTED]").count(), 2);
        assert_eq!(redact(b"plain", "sk-live-123"), b"plain");
        assert_eq!(redact(b"plain", ""), b"plain");
    }
}
