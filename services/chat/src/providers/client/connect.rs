//! Connections to upstreams: TCP with the connect timeout and `TCP_NODELAY`, directly or through the proxy the
//! environment names (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, read as curl reads them). An
//! `https` upstream is reached through a `CONNECT` tunnel, so TLS (added around this connector) runs end to end
//! with the upstream; a plain-`http` upstream is forwarded by the proxy, which then gets absolute URIs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::header::HeaderValue;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the TCP connection of one upstream request, through a proxy when the environment says so.
#[derive(Clone)]
pub struct ProxyConnector {
    tcp: HttpConnector,
    proxies: Arc<Matcher>,
}

impl ProxyConnector {
    pub fn new(connect_timeout: Duration, proxies: Matcher) -> ProxyConnector {
        let mut tcp = HttpConnector::new();
        // The scheme is checked by the configuration; TLS is layered on top of this connector.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        ProxyConnector { tcp, proxies: Arc::new(proxies) }
    }

    /// The `Proxy-Authorization` a request to `target` carries: only a plain-`http` request forwarded by a proxy
    /// that has credentials (a tunnelled request's proxy sees only the `CONNECT`, which carries them itself).
    pub fn forwarding_credentials(&self, target: &Uri) -> Option<HeaderValue> {
        if target.scheme_str() != Some("http") {
            return None;
        }
        self.proxies.intercept(target)?.basic_auth().cloned()
    }
}

impl Service<Uri> for ProxyConnector {
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Every call clones the TCP connector, which is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let tcp = self.tcp.clone();
        let Some(proxy) = self.proxies.intercept(&target) else {
            return Box::pin(
                async move { Ok(UpstreamIo { tcp: tcp.oneshot(target).await?, forwarded_by_proxy: false }) },
            );
        };
        let (proxy_uri, credentials) = (proxy.uri().clone(), proxy.basic_auth().cloned());
        Box::pin(async move {
            if proxy_uri.scheme_str() != Some("http") {
                // Never the whole URI: it may hold credentials.
                return Err(format!(
                    "the proxy at {} uses {}://; only http:// proxies are supported",
                    proxy_uri.host().unwrap_or_default(),
                    proxy_uri.scheme_str().unwrap_or_default()
                )
                .into());
            }
            if target.scheme_str() == Some("https") {
                let mut tunnel = Tunnel::new(proxy_uri, tcp);
                if let Some(credentials) = credentials {
                    tunnel = tunnel.with_auth(credentials);
                }
                Ok(UpstreamIo { tcp: tunnel.oneshot(target).await?, forwarded_by_proxy: false })
            } else {
                Ok(UpstreamIo { tcp: tcp.oneshot(proxy_uri).await?, forwarded_by_proxy: true })
            }
        })
    }
}

/// A TCP connection to the upstream, or to the proxy that forwards its plain-HTTP requests.
pub struct UpstreamIo {
    tcp: TokioIo<TcpStream>,
    forwarded_by_proxy: bool,
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        self.tcp.connected().proxy(self.forwarded_by_proxy)
    }
}

impl Read for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
