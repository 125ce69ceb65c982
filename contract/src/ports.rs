//! Ports and the operational paths on them.
//!
//! The API, `/healthz` and `/readyz` share [`HTTP`], the only port the Ingress and the other services reach.
//! Metrics have a port of their own, [`METRICS`], which no Ingress rule names and whose NetworkPolicy admits
//! only the monitoring namespace: `/metrics` is never reachable from the internet.

/// The API, health and readiness port of every service, and of its Kubernetes Service.
pub const HTTP: u16 = 8080;
/// The Prometheus metrics port of every service.
pub const METRICS: u16 = 9090;

/// The container and Service port names (probes and PodMonitors refer to ports by name).
pub const HTTP_NAME: &str = "http";
pub const METRICS_NAME: &str = "metrics";

/// Liveness, on [`HTTP`].
pub const HEALTH_PATH: &str = "/healthz";
/// Readiness, on [`HTTP`].
pub const READY_PATH: &str = "/readyz";
/// Prometheus metrics, on [`METRICS`] only.
pub const METRICS_PATH: &str = "/metrics";
