//! Prometheus metrics of the HTTP server (requests by route template and status, latency) and the `/metrics`
//! endpoint that exposes them together with whatever the service registers in the same registry.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use super::trace::route_label;
use crate::problem::Problem;

/// Latency buckets in seconds: from a cache hit to a slow provider call's first byte.
const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
}

impl HttpMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<HttpMetrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered, by method, route template and status"),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time to answer HTTP requests (until the headers)")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let in_flight = IntGauge::new("http_requests_in_flight", "HTTP requests being handled")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(HttpMetrics { requests, latency, in_flight })
    }
}

/// Middleware recording every request.
pub async fn record(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_string();
    let route = route_label(request.extensions().get::<MatchedPath>()).to_string();
    metrics.in_flight.inc();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.in_flight.dec();
    metrics.latency.with_label_values(&[&method, &route]).observe(started.elapsed().as_secs_f64());
    metrics.requests.with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()]).inc();
    response
}

/// The `/metrics` handler: the registry in the Prometheus text format.
pub async fn expose(State(registry): State<Registry>) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => (StatusCode::OK, [(CONTENT_TYPE, encoder.format_type().to_string())], body).into_response(),
        Err(error) => Problem::internal(&error).into_response(),
    }
}
