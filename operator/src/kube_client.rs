//! The operator's Kubernetes client, over HTTP/2.
//!
//! kube's own client speaks HTTP/1.1, one request per connection: a tenant's first reconcile applies some thirty
//! objects at once, and at 16 tenants in flight the operator held 523 connections to the API server, each with
//! its TLS session and buffers (12 of its 123 MiB peak at 1,000 tenants) and goroutines on the other side.
//! client-go, like kubectl and every built-in controller, multiplexes its requests and watches over one HTTP/2
//! connection instead; this client does the same, with the layers of kube's (server URL, retries of 429, 503
//! and 504 answers as the server asks, credentials that refresh, impersonation headers). The connection is pinged when idle, as client-go does, so that a dead peer
//! is noticed instead of hanging every request that shares it.
//!
//! A kubeconfig with a proxy or an exec credential plugin (which may hand out client certificates that expire)
//! gets kube's own client, which handles both.
//!
//! Either way every request passes the leader election's [`WriteFence`] first: a request that is not a read
//! fails at once, before it leaves the process, unless this replica surely holds the Lease.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_rustls::FixedServerNameResolver;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::{ClientBuilder, ConfigExt};
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder};

use crate::leader::WriteFence;

/// How often an idle connection is pinged, and how long an answer may take (client-go's values).
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Which client a configuration gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One multiplexed HTTP/2 connection (HTTP/1.1 if the server does not offer HTTP/2).
    Http2,
    /// kube's own client: the configuration needs what only it handles.
    KubeDefault,
}

impl Transport {
    pub fn for_config(config: &Config) -> Transport {
        if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
            Transport::KubeDefault
        } else {
            Transport::Http2
        }
    }
}

/// Builds the client for `config`, whose writes pass `fence`.
pub fn client(config: Config, fence: WriteFence) -> Result<Client, kube::Error> {
    if Transport::for_config(&config) == Transport::KubeDefault {
        return Ok(ClientBuilder::try_from(config)?.with_layer(&FenceLayer(fence)).build());
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let tls =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config.rustls_client_config()?).https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => {
            let name = name
                .clone()
                .try_into()
                .map_err(|error| kube::Error::Service(format!("invalid tls-server-name {name:?}: {error}").into()))?;
            tls.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => tls,
    };
    let connector = tls.enable_http1().enable_http2().wrap_connector(http);
    let hyper = HyperClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(FenceLayer(fence))
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

/// Refuses writes while the [`WriteFence`] is closed.
#[derive(Clone)]
struct FenceLayer(WriteFence);

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced { inner, fence: self.0.clone() }
    }
}

#[derive(Clone)]
struct Fenced<S> {
    inner: S,
    fence: WriteFence,
}

/// Refused because this replica may not write now.
#[derive(Debug, thiserror::Error)]
#[error("not the leader: this replica may not write to the API server now")]
pub struct NotLeader;

impl<S, B> Service<http::Request<B>> for Fenced<S>
where
    S: Service<http::Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let reads = matches!(*request.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
        if !reads && !self.fence.allows_writes() {
            return Box::pin(std::future::ready(Err(BoxError::from(NotLeader))));
        }
        let response = self.inner.call(request);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::server::conn::http2::Builder as ServerBuilder;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use saaschat_testkit::tls::LocalhostCertificate;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;

    fn config() -> Config {
        Config::new("https://127.0.0.1:6443".parse().expect("url"))
    }

    #[test]
    fn proxies_and_exec_plugins_keep_kubes_own_client() {
        assert_eq!(Transport::for_config(&config()), Transport::Http2);
        let mut proxied = config();
        proxied.proxy_url = Some("http://proxy.local:3128".parse().expect("url"));
        assert_eq!(Transport::for_config(&proxied), Transport::KubeDefault);
        let mut exec = config();
        exec.auth_info.exec =
            Some(kube::config::ExecConfig { command: Some("credential-helper".into()), ..Default::default() });
        assert_eq!(Transport::for_config(&exec), Transport::KubeDefault);
    }

    /// A TLS server offering HTTP/2 like the API server: answers `/version` (the first `throttled` requests with
    /// 429, as API Priority and Fairness does), counts connections and records the HTTP version of each request.
    async fn version_server(throttled: usize) -> (u16, Vec<u8>, Arc<AtomicUsize>, Arc<Mutex<Vec<http::Version>>>) {
        let generated = LocalhostCertificate::generate();
        let key = PrivateKeyDer::try_from(generated.server_key.serialize_der()).expect("key");
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![generated.server.der().clone()], key)
            .expect("server config");
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (connections, versions) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (counted, recorded) = (connections.clone(), versions.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, recorded) = (acceptor.clone(), recorded.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(socket).await else { return };
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let seen = {
                            let mut recorded = recorded.lock().expect("lock");
                            recorded.push(request.version());
                            recorded.len()
                        };
                        let body = r#"{"major":"1","minor":"36","gitVersion":"v1.36.3","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
                        let response = if seen <= throttled {
                            http::Response::builder()
                                .status(http::StatusCode::TOO_MANY_REQUESTS)
                                .header("Retry-After", "0")
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .expect("response")
                        } else {
                            http::Response::new(Full::new(Bytes::from(body)))
                        };
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ =
                        ServerBuilder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        (port, generated.ca.der().to_vec(), connections, versions)
    }

    #[tokio::test]
    async fn requests_share_one_http2_connection() {
        let (port, ca, connections, versions) = version_server(0).await;
        let mut config = Config::new(format!("https://localhost:{port}").parse().expect("url"));
        config.root_cert = Some(vec![ca]);
        let client = client(config, WriteFence::unfenced()).expect("client");
        // Which protocol a connection speaks is known once it is up (ALPN): requests sent before that each open
        // one, as at the operator's start. Later ones share it.
        assert_eq!(client.apiserver_version().await.expect("the version").git_version, "v1.36.3");
        let answers = futures::future::join_all((0..20).map(|_| client.apiserver_version())).await;
        for answer in answers {
            assert_eq!(answer.expect("the version").git_version, "v1.36.3");
        }
        let versions = versions.lock().expect("lock").clone();
        assert_eq!(versions.len(), 21);
        assert!(versions.iter().all(|v| *v == http::Version::HTTP_2), "{versions:?}");
        assert_eq!(connections.load(Ordering::SeqCst), 1, "twenty requests at once, one connection");
    }

    #[tokio::test]
    async fn a_throttled_request_is_retried_as_kubes_own_client_does() {
        let (port, ca, _, versions) = version_server(2).await;
        let mut config = Config::new(format!("https://localhost:{port}").parse().expect("url"));
        config.root_cert = Some(vec![ca]);
        let answer = client(config, WriteFence::unfenced()).expect("client").apiserver_version().await;
        assert_eq!(answer.expect("the version after two 429s").git_version, "v1.36.3");
        assert_eq!(versions.lock().expect("lock").len(), 3);
    }

    #[tokio::test]
    async fn a_closed_fence_stops_writes_before_they_leave_and_lets_reads_pass() {
        let (port, ca, _, versions) = version_server(0).await;
        let mut config = Config::new(format!("https://localhost:{port}").parse().expect("url"));
        config.root_cert = Some(vec![ca]);
        let client = client(config, WriteFence::closed()).expect("client");
        assert_eq!(client.apiserver_version().await.expect("a read").git_version, "v1.36.3");
        let configmaps = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, "default");
        let write = configmaps.create(&Default::default(), &Default::default()).await;
        let error = write.expect_err("no write without the Lease");
        assert!(format!("{error:?}").contains("NotLeader"), "{error:?}");
        assert_eq!(versions.lock().expect("lock").len(), 1, "only the read reached the server");
    }
}
