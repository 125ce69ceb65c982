//! `/metrics`, `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use saaschat_crds::ChatTenant;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the controllers run.
    pub leading: Arc<AtomicBool>,
    /// With leader election: whether the replica takes part in it (has had an answer about the Lease within a
    /// lease duration). A replica that cannot lead, because it cannot reach the Lease, is not ready.
    pub participating: Arc<OnceLock<Arc<AtomicBool>>>,
    pub tenants: Arc<OnceLock<Store<ChatTenant>>>,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    if let Some(tenants) = health.tenants.get() {
        let mut tally: BTreeMap<(String, String), i64> = BTreeMap::new();
        for tenant in tenants.state() {
            for condition in tenant.status.iter().flat_map(|s| s.conditions.iter()) {
                *tally.entry((condition.type_.clone(), condition.status.clone())).or_default() += 1;
            }
        }
        health.metrics.set_tenant_conditions(tally);
    }
    ([("content-type", "text/plain; version=0.0.4")], health.metrics.render())
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    match health.participating.get() {
        Some(participating) if participating.load(Ordering::Relaxed) => (StatusCode::OK, "ready"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "cannot take part in the leader election"),
        None if health.leading.load(Ordering::Relaxed) => (StatusCode::OK, "ready"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
    }
}
