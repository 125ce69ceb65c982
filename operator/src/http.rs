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
    /// Set once the controllers run (the leader) or the replica stands by (a follower).
    pub ready: Arc<AtomicBool>,
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
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
