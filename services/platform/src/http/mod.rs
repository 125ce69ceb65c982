//! The HTTP side of every service: a router builder that adds the operational endpoints and the middleware
//! every request goes through, and a server loop with graceful shutdown.
//!
//! ```no_run
//! # async fn run(api: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! use saaschat_platform::http::{HttpSettings, RouterBuilder, Shutdown, serve};
//! let shutdown = Shutdown::new();
//! shutdown.trigger_on_os_signals();
//! let settings = HttpSettings::default();
//! let app = RouterBuilder::new(settings.clone(), shutdown.signal()).build(api)?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! serve(listener, app, shutdown.signal(), settings.shutdown_grace).await?;
//! # Ok(()) }
//! ```

pub mod health;
pub mod metrics;
pub mod openapi;
pub mod shutdown;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use prometheus::Registry;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;

pub use health::{ProbeFuture, ReadinessProbe};
pub use shutdown::{Shutdown, ShutdownSignal};
pub use trace::TraceContext;

use crate::problem::{self, Problem};

/// Limits and deadlines of the HTTP server.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// The largest request body accepted; larger ones get a 413 problem. Default 1 MiB.
    pub body_limit: usize,
    /// How long a handler may take to produce its response headers (a stream may then run longer). Default 30 s.
    pub request_timeout: Duration,
    /// How long each readiness probe may take. Default 2 s.
    pub readiness_timeout: Duration,
    /// How long in-flight requests get to finish once shutdown starts. Default 20 s, within Kubernetes' 30 s
    /// grace period after a preStop delay.
    pub shutdown_grace: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            readiness_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Builds a service's router: its own routes plus `/healthz`, `/readyz` and `/metrics`, wrapped (outermost
/// first) in tracing, metrics, problem normalization, the request timeout and the body limit. Handlers can
/// extract `Extension<ShutdownSignal>` to end long-lived streams and `Extension<TraceContext>` to propagate the
/// trace to outgoing calls.
pub struct RouterBuilder {
    settings: HttpSettings,
    shutdown: ShutdownSignal,
    probes: Vec<Arc<dyn ReadinessProbe>>,
    registry: Registry,
}

impl RouterBuilder {
    pub fn new(settings: HttpSettings, shutdown: ShutdownSignal) -> RouterBuilder {
        RouterBuilder { settings, shutdown, probes: Vec::new(), registry: Registry::new() }
    }

    /// The registry `/metrics` exposes; pass the one the service registers its own metrics in.
    pub fn registry(mut self, registry: Registry) -> RouterBuilder {
        self.registry = registry;
        self
    }

    pub fn readiness_probe(mut self, probe: impl ReadinessProbe) -> RouterBuilder {
        self.probes.push(Arc::new(probe));
        self
    }

    pub fn build(self, app: Router) -> Result<Router, prometheus::Error> {
        let http_metrics = metrics::HttpMetrics::register(&self.registry)?;
        #[cfg(target_os = "linux")]
        match self.registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(error) => return Err(error),
        }
        let readiness = health::Readiness {
            probes: self.probes,
            timeout: self.settings.readiness_timeout,
            shutdown: self.shutdown.clone(),
        };
        let operations = Router::new()
            .route("/healthz", get(health::healthz))
            .route("/readyz", get(health::readyz).with_state(readiness))
            .route("/metrics", get(metrics::expose).with_state(self.registry));
        Ok(app
            .merge(operations)
            // The layer below is the one limit; extractors must not apply their own 2 MB default on top.
            .layer(DefaultBodyLimit::disable())
            .layer(RequestBodyLimitLayer::new(self.settings.body_limit))
            .layer(from_fn_with_state(self.settings.request_timeout, request_timeout))
            .layer(from_fn(problem::normalize_errors))
            .layer(from_fn_with_state(http_metrics, metrics::record))
            .layer(from_fn(trace::trace_requests))
            .layer(Extension(self.shutdown)))
    }
}

/// Middleware: a handler that has not produced its response within the timeout gets a 503 problem.
async fn request_timeout(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::timeout().into_response(),
    }
}

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request finished.
    Complete,
    /// The grace period ended first; the remaining connections end with the process.
    DeadlineExceeded,
}

/// Serves until `shutdown` is triggered, then stops accepting connections and gives in-flight requests `grace`
/// to finish. Streams must watch a [`ShutdownSignal`] and end themselves, or they use up the grace period.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: ShutdownSignal,
    grace: Duration,
) -> std::io::Result<Drained> {
    // Connection info lets handlers see the peer address (rate limits per client address).
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(shutdown.clone().triggered()).into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map(|()| Drained::Complete),
        () = shutdown.triggered() => {}
    }
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result.map(|()| Drained::Complete),
        Err(_) => {
            tracing::warn!(grace_seconds = grace.as_secs_f64(), "in-flight requests did not finish in time");
            Ok(Drained::DeadlineExceeded)
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;
    use crate::problem::{CONTENT_TYPE_PROBLEM, read_problem};

    fn app(settings: HttpSettings) -> Router {
        let api = Router::new()
            .route("/echo", post(|body: String| async move { body.len().to_string() }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/items/{id}", get(|| async { "item" }));
        RouterBuilder::new(settings, Shutdown::new().signal()).build(api).expect("router")
    }

    async fn call(app: &Router, request: Request) -> Response {
        app.clone().oneshot(request).await.expect("response")
    }

    #[tokio::test]
    async fn healthz_is_alive() {
        let response =
            call(&app(HttpSettings::default()), Request::get("/healthz").body(Body::empty()).expect("req")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_get_a_413_problem_whether_announced_or_streamed() {
        let app = app(HttpSettings { body_limit: 16, ..HttpSettings::default() });
        let announced = Request::post("/echo").body(Body::from(vec![b'x'; 64])).expect("req");
        let response = call(&app, announced).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[CONTENT_TYPE], CONTENT_TYPE_PROBLEM);

        let chunks = futures_util::stream::iter([vec![b'x'; 10], vec![b'y'; 10]].map(Ok::<_, std::io::Error>));
        let streamed = Request::post("/echo").body(Body::from_stream(chunks)).expect("req");
        let response = call(&app, streamed).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let problem = read_problem(response.into_body()).await.expect("problem");
        assert_eq!(problem.problem_type, "https://saaschat.io/problems/body-too-large");

        let small = Request::post("/echo").body(Body::from("hello")).expect("req");
        assert_eq!(call(&app, small).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn slow_handlers_get_a_503_timeout_problem() {
        let app = app(HttpSettings { request_timeout: Duration::from_millis(50), ..HttpSettings::default() });
        let response = call(&app, Request::get("/slow").body(Body::empty()).expect("req")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let problem = read_problem(response.into_body()).await.expect("problem");
        assert_eq!(problem.problem_type, "https://saaschat.io/problems/timeout");
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route_template_and_status() {
        let app = app(HttpSettings::default());
        for id in ["1", "2"] {
            call(&app, Request::get(format!("/items/{id}")).body(Body::empty()).expect("req")).await;
        }
        call(&app, Request::get("/no/such/path").body(Body::empty()).expect("req")).await;
        let response = call(&app, Request::get("/metrics").body(Body::empty()).expect("req")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(r#"http_requests_total{method="GET",route="/items/{id}",status="200"} 2"#), "{text}");
        assert!(text.contains(r#"route="<unmatched>",status="404"} 1"#), "{text}");
        assert!(!text.contains("/no/such/path"));
        assert!(text.contains("http_request_duration_seconds_bucket"));
    }

    #[tokio::test]
    async fn responses_carry_a_traceparent_continuing_the_callers_trace() {
        let app = app(HttpSettings::default());
        let request = Request::get("/healthz")
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(Body::empty())
            .expect("req");
        let response = call(&app, request).await;
        let header = response.headers()["traceparent"].to_str().expect("ascii");
        let context = TraceContext::parse(header).expect("valid");
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(context.span_id_hex(), "00f067aa0ba902b7");
    }
}
