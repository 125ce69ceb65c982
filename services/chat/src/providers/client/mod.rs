//! Sending requests upstream (the doing half of the providers): one HTTP/1.1 client with no redirects and no
//! retries of its own (the resilience layer is the one retry layer), and three timeouts: connect, first byte
//! (until the response headers), and idle (between chunks of a stream).
//!
//! hyper's client is used directly rather than through reqwest: reqwest parsed the upstream URL three times per
//! request and kept redirect and retry layers that were switched off, about a tenth of the service's CPU per
//! request (docs/benchmarks-chat.md).

mod connect;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHORIZATION};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;

use self::connect::ProxyConnector;
use super::sse::{SseDecoder, SseItem};
use super::{
    Completion, CompletionRequest, Endpoint, Provider, ProviderError, ProviderEvent, StreamDecoder, TimeoutPhase,
    parse_retry_after,
};

/// The most of an error body read to classify it.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most of a whole (non-streaming) response accepted.
const MAX_COMPLETION_BODY: usize = 16 * 1024 * 1024;
/// How long an unused upstream connection is kept for the next request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub first_byte: Duration,
    pub idle: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up TLS with the platform's certificate roots: {0}")]
    Tls(#[from] rustls::Error),
}

#[derive(Clone)]
pub struct UpstreamClient {
    http: Client<HttpsConnector<ProxyConnector>, Full<Bytes>>,
    connector: ProxyConnector,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// A client that reads its proxies from the environment, as curl and reqwest do.
    pub fn new(connect_timeout: Duration) -> Result<UpstreamClient, ClientError> {
        UpstreamClient::with_proxies(connect_timeout, Matcher::from_env())
    }

    pub fn with_proxies(connect_timeout: Duration, proxies: Matcher) -> Result<UpstreamClient, ClientError> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        Ok(UpstreamClient::with_tls(connect_timeout, proxies, tls))
    }

    fn with_tls(connect_timeout: Duration, proxies: Matcher, tls: rustls::ClientConfig) -> UpstreamClient {
        let connector = ProxyConnector::new(connect_timeout, proxies);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector.clone());
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(https);
        UpstreamClient { http, connector }
    }

    async fn send(
        &self,
        provider: &dyn Provider,
        endpoint: &Endpoint,
        request: &CompletionRequest,
        stream: bool,
        timeouts: Timeouts,
    ) -> Result<Response<Incoming>, ProviderError> {
        let upstream = provider.build_request(endpoint, request, stream)?;
        let uri = Uri::try_from(upstream.url.as_str())
            .map_err(|_| ProviderError::Protocol("the upstream URL is not a valid request target".into()))?;
        let mut headers = HeaderMap::with_capacity(upstream.headers.len() + 2);
        for (name, value) in &upstream.headers {
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| ProviderError::Protocol(format!("the configured {name} is not a valid header value")))?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(mut credentials) = self.connector.forwarding_credentials(&uri) {
            credentials.set_sensitive(true);
            headers.insert(PROXY_AUTHORIZATION, credentials);
        }
        let mut outgoing = Request::new(Full::new(Bytes::from(upstream.body)));
        *outgoing.method_mut() = Method::POST;
        *outgoing.uri_mut() = uri;
        *outgoing.headers_mut() = headers;
        let response = match tokio::time::timeout(timeouts.first_byte, self.http.request(outgoing)).await {
            Err(_) => return Err(ProviderError::Timeout(TimeoutPhase::FirstByte)),
            Ok(Err(error)) => return Err(transport_error(&error)),
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
            body: response.into_body(),
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

/// A failure to reach the upstream or to read its answer. The connect timeout is told apart; the message is the
/// chain of causes, which never holds the key (it travels in a sensitive header, never in the URL).
fn transport_error(error: &(dyn std::error::Error + 'static)) -> ProviderError {
    let mut message = error.to_string();
    let mut timed_out = false;
    let mut source = error.source();
    while let Some(cause) = source {
        timed_out |= cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    let connecting = error.downcast_ref::<hyper_util::client::legacy::Error>().is_some_and(|error| error.is_connect());
    if connecting && timed_out {
        return ProviderError::Timeout(TimeoutPhase::Connect);
    }
    ProviderError::Connection(message)
}

/// The next chunk of data of a body: `None` at its end (trailers are skipped).
async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

async fn read_limited(response: Response<Incoming>, limit: usize) -> Vec<u8> {
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = next_chunk(&mut incoming).await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    body
}

async fn read_body(response: Response<Incoming>, limit: usize) -> Result<Vec<u8>, ProviderError> {
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    while let Some(chunk) = next_chunk(&mut incoming).await.map_err(|error| transport_error(&error))? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(ProviderError::Protocol(format!("the response exceeds {limit} bytes")));
        }
    }
    Ok(body)
}

/// An open upstream stream, decoded into provider events.
pub struct UpstreamStream {
    body: Incoming,
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
            let chunk = match tokio::time::timeout(self.idle, next_chunk(&mut self.body)).await {
                Err(_) => return self.fail(ProviderError::Timeout(TimeoutPhase::Idle)),
                Ok(Err(error)) => return self.fail(transport_error(&error)),
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

    mod connections {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;

        use super::super::*;
        use crate::providers::openai::{Dialect, OpenAi};
        use crate::providers::{ChatMessage, FinishReason, Role};
        use saaschat_platform::secret::Secret;
        use saaschat_testkit::tls::LocalhostCertificate;

        const TIMEOUTS: Timeouts = Timeouts { first_byte: Duration::from_secs(5), idle: Duration::from_secs(5) };
        const COMPLETION: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;

        fn request() -> CompletionRequest {
            CompletionRequest {
                model: "m".into(),
                system: None,
                messages: vec![ChatMessage::text(Role::User, "Hi")],
                temperature: None,
                top_p: None,
                max_tokens: None,
                stop: Vec::new(),
                tools: Vec::new(),
            }
        }

        impl UpstreamClient {
            /// One whole completion from the OpenAI-compatible server at `base`.
            async fn ask(&self, base: &str) -> Result<Completion, ProviderError> {
                self.complete(&OpenAi { dialect: Dialect::Compatible }, &endpoint(base), &request(), TIMEOUTS).await
            }
        }

        fn endpoint(base: &str) -> Endpoint {
            Endpoint { base_url: base.parse().expect("url"), api_key: Secret::new("sk-test".into()) }
        }

        /// A one-connection proxy: hands back the head of the first request it receives, after answering it
        /// with `answer`.
        async fn proxy(answer: &'static str) -> (String, tokio::task::JoinHandle<String>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            let served = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let head = read_head(&mut socket).await;
                socket.write_all(answer.as_bytes()).await.expect("write");
                socket.shutdown().await.ok();
                head
            });
            (format!("http://proxy-user:proxy-secret@{address}"), served)
        }

        /// A request's head, read a byte at a time so that nothing after it (a tunnel's traffic) is consumed.
        async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if socket.read(&mut byte).await.expect("read") == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            String::from_utf8_lossy(&head).into_owned()
        }

        fn forwarded_answer() -> &'static str {
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{COMPLETION}",
                COMPLETION.len()
            );
            Box::leak(answer.into_boxed_str())
        }

        #[tokio::test]
        async fn a_plain_http_upstream_is_forwarded_by_the_proxy_with_its_credentials() {
            let (proxy_url, served) = proxy(forwarded_answer()).await;
            let proxies = Matcher::builder().http(proxy_url).build();
            let client = UpstreamClient::with_proxies(Duration::from_secs(2), proxies).expect("client");
            let completion =
                client.ask("http://vllm.models.svc:8000/v1").await.expect("a completion through the proxy");
            assert_eq!(completion.text, "Hello");
            assert_eq!(completion.finish_reason, FinishReason::Stop);
            let head =
                tokio::time::timeout(Duration::from_secs(5), served).await.expect("the proxy was used").expect("proxy");
            assert!(head.starts_with("POST http://vllm.models.svc:8000/v1/chat/completions HTTP/1.1\r\n"), "{head}");
            // base64("proxy-user:proxy-secret")
            assert!(head.contains("proxy-authorization: Basic cHJveHktdXNlcjpwcm94eS1zZWNyZXQ=\r\n"), "{head}");
            assert!(head.contains("authorization: Bearer sk-test\r\n"), "{head}");
        }

        #[tokio::test]
        async fn an_https_upstream_is_tunnelled_so_the_proxy_sees_only_the_connect() {
            // The proxy accepts the tunnel and then closes it: TLS with the upstream cannot start, and the
            // request fails as a connection error, never as an answer.
            let (proxy_url, served) = proxy("HTTP/1.1 200 Connection established\r\n\r\n").await;
            let proxies = Matcher::builder().https(proxy_url).build();
            let client = UpstreamClient::with_proxies(Duration::from_secs(2), proxies).expect("client");
            let error = client.ask("https://api.openai.com/v1").await.expect_err("no TLS peer behind the tunnel");
            assert!(matches!(error, ProviderError::Connection(_)), "{error:?}");
            let head =
                tokio::time::timeout(Duration::from_secs(5), served).await.expect("the proxy was used").expect("proxy");
            assert!(head.starts_with("CONNECT api.openai.com:443 HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("Basic cHJveHktdXNlcjpwcm94eS1zZWNyZXQ="), "{head}");
            assert!(!head.contains("sk-test"), "the key travels inside the tunnel only: {head}");
        }

        #[tokio::test]
        async fn no_proxy_hosts_are_reached_directly() {
            let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = upstream.local_addr().expect("address");
            let answer = forwarded_answer();
            tokio::spawn(async move {
                let (mut socket, _) = upstream.accept().await.expect("accept");
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                socket.write_all(answer.as_bytes()).await.expect("write");
            });
            // The proxy would be a closed port: reaching it would fail the request.
            let proxies = Matcher::builder().http("http://127.0.0.1:9").no("127.0.0.1").build();
            let client = UpstreamClient::with_proxies(Duration::from_secs(2), proxies).expect("client");
            let completion = client.ask(&format!("http://{address}/v1")).await.expect("a direct completion");
            assert_eq!(completion.text, "Hello");
        }

        /// A test CA, and a TLS server for `localhost` with a certificate it signed that answers one request
        /// with a completion. Returns the CA's certificate and the server's port.
        async fn tls_upstream() -> (rustls::pki_types::CertificateDer<'static>, u16) {
            let LocalhostCertificate { ca, server, server_key } = LocalhostCertificate::generate();
            let config =
                rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("versions")
                    .with_no_client_auth()
                    .with_single_cert(
                        vec![server.der().clone()],
                        rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
                    )
                    .expect("server config");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("address").port();
            let answer = forwarded_answer();
            tokio::spawn(async move {
                let (socket, _) = listener.accept().await.expect("accept");
                // A refused handshake ends here; the client reports it.
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                let mut buffer = [0u8; 4096];
                let _ = tls.read(&mut buffer).await;
                tls.write_all(answer.as_bytes()).await.expect("write");
                tls.shutdown().await.ok();
            });
            (ca.der().clone(), port)
        }

        fn trusting(ca: rustls::pki_types::CertificateDer<'static>, proxies: Matcher) -> UpstreamClient {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).expect("root");
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            UpstreamClient::with_tls(Duration::from_secs(2), proxies, tls)
        }

        #[tokio::test]
        async fn an_https_upstream_is_reached_with_its_certificate_checked() {
            let (ca, port) = tls_upstream().await;
            let completion = trusting(ca, Matcher::builder().build())
                .ask(&format!("https://localhost:{port}/v1"))
                .await
                .expect("a completion over TLS");
            assert_eq!(completion.text, "Hello");

            // The platform's roots do not hold the test CA: the same server is refused.
            let (_, port) = tls_upstream().await;
            let error = UpstreamClient::with_proxies(Duration::from_secs(2), Matcher::builder().build())
                .expect("client")
                .ask(&format!("https://localhost:{port}/v1"))
                .await
                .expect_err("an untrusted certificate");
            let ProviderError::Connection(message) = error else { panic!("{error:?}") };
            assert!(message.contains("certificate"), "{message}");
        }

        #[tokio::test]
        async fn tls_runs_end_to_end_through_a_connect_tunnel() {
            let (ca, upstream_port) = tls_upstream().await;
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let proxy_address = listener.local_addr().expect("address");
            let tunnel = tokio::spawn(async move {
                let (mut client, _) = listener.accept().await.expect("accept");
                let head = read_head(&mut client).await;
                let mut upstream = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await.expect("connect");
                client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.expect("write");
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                head
            });
            let proxies = Matcher::builder().https(format!("http://{proxy_address}")).build();
            let completion = trusting(ca, proxies)
                .ask(&format!("https://localhost:{upstream_port}/v1"))
                .await
                .expect("a completion through the tunnel");
            assert_eq!(completion.text, "Hello");
            let head = tokio::time::timeout(Duration::from_secs(5), tunnel).await.expect("tunnel ends").expect("proxy");
            assert!(head.starts_with(&format!("CONNECT localhost:{upstream_port} HTTP/1.1\r\n")), "{head}");
        }

        #[tokio::test]
        async fn a_proxy_other_than_http_is_refused_by_name_without_its_credentials() {
            let proxies = Matcher::builder().https("socks5://user:hunter2@127.0.0.1:1080").build();
            let client = UpstreamClient::with_proxies(Duration::from_secs(2), proxies).expect("client");
            let error = client.ask("https://api.openai.com/v1").await.expect_err("socks is not supported");
            let ProviderError::Connection(message) = error else { panic!("{error:?}") };
            assert!(message.contains("only http:// proxies are supported"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}
