//! Writes `Subscription.status` whenever the subscription changes (woken by the event workers) and every minute
//! (for usage). Server-side apply of the status subresource with this service's field manager; nothing is sent
//! when the status on the object is already the desired one.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::Api;
use kube::api::{Patch, PatchParams};
use prometheus::IntCounterVec;
use saaschat_crds::{SUBSCRIPTION_NAME, Subscription};
use saaschat_platform::http::ShutdownSignal;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;

use super::status;
use crate::account;
use crate::api::usage_period_start;
use crate::usage::store::period_usage;

pub const FIELD_MANAGER: &str = "saaschat-billing";
const INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("Kubernetes: {0}")]
    Kubernetes(#[from] kube::Error),
}

pub struct StatusWriter {
    pub pool: PgPool,
    pub api: Api<Subscription>,
    pub tenant: String,
    pub writes: IntCounterVec,
}

impl StatusWriter {
    pub fn new(
        pool: PgPool,
        client: kube::Client,
        namespace: &str,
        tenant: &str,
        writes: IntCounterVec,
    ) -> StatusWriter {
        StatusWriter { pool, api: Api::namespaced(client, namespace), tenant: tenant.to_string(), writes }
    }

    /// Brings the status in line; `true` when it had to be written.
    pub async fn sync(&self) -> Result<bool, StatusError> {
        let now = Utc::now();
        let stored = account::load(&self.pool, &self.tenant).await?;
        let usage = period_usage(&self.pool, usage_period_start(&stored, now), now).await?;
        let subscription = self.api.get(SUBSCRIPTION_NAME).await?;
        let previous = subscription.status.as_ref();
        let desired = status::desired(&stored, usage.tokens, subscription.metadata.generation, previous, now);
        if previous == Some(&desired) {
            return Ok(false);
        }
        let patch = json!({
            "apiVersion": "saaschat.io/v1alpha1",
            "kind": "Subscription",
            "metadata": { "name": SUBSCRIPTION_NAME },
            "status": desired,
        });
        self.api
            .patch_status(SUBSCRIPTION_NAME, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
        Ok(true)
    }

    pub async fn run(self, changed: Arc<Notify>, shutdown: ShutdownSignal) {
        while !shutdown.is_triggered() {
            match self.sync().await {
                Ok(true) => self.writes.with_label_values(&["written"]).inc(),
                Ok(false) => self.writes.with_label_values(&["unchanged"]).inc(),
                Err(error) => {
                    self.writes.with_label_values(&["error"]).inc();
                    tracing::warn!(%error, "Subscription status not written; retrying");
                }
            }
            tokio::select! {
                () = shutdown.clone().triggered() => break,
                () = changed.notified() => {}
                () = tokio::time::sleep(INTERVAL) => {}
            }
        }
    }
}
