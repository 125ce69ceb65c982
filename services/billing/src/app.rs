//! Wiring: the shared state of the handlers, the routes, the metrics, and the background tasks (event workers,
//! usage reporter, outbox relay, Kubernetes status writer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::routing::{get, post};
use prometheus::{IntCounterVec, Opts, Registry};
use redis::aio::ConnectionManager;
use saaschat_platform::auth::Authenticator;
use saaschat_platform::config::TenantConfig;
use saaschat_platform::http::ShutdownSignal;
use saaschat_platform::outbox::{Relay, RelaySettings};
use saaschat_platform::{Problem, Secret};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::events::worker::{EMAIL_PRODUCER, Processor};
use crate::kubernetes::writer::StatusWriter;
use crate::settings::{BillingSettings, StripeCredentials};
use crate::stripe::{ClientError, StripeClient};
use crate::usage::reporter::Reporter;
use crate::webhook::signature::DEFAULT_TOLERANCE_SECONDS;
use crate::{api, webhook};

/// Everything Stripe-related; absent when the tenant has no Stripe configuration.
pub struct StripeSetup {
    pub client: StripeClient,
    pub webhook_secrets: Vec<Secret<String>>,
    /// Plan name to Stripe price id.
    pub prices: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct Metrics {
    pub webhooks: IntCounterVec,
    pub events: IntCounterVec,
    pub usage_windows: IntCounterVec,
    pub status_writes: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let counter = |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
            let counter = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        Ok(Metrics {
            webhooks: counter("billing_webhooks_total", "Stripe webhook deliveries by result", "result")?,
            events: counter("billing_events_processed_total", "Queued Stripe events processed by result", "result")?,
            usage_windows: counter("billing_usage_windows_total", "Usage windows settled by outcome", "outcome")?,
            status_writes: counter("billing_status_syncs_total", "Subscription status syncs by result", "result")?,
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub tenant: Arc<TenantConfig>,
    pub pool: PgPool,
    pub stripe: Option<Arc<StripeSetup>>,
    pub authenticator: Authenticator,
    /// Notified when the webhook stores an event, so a worker of this replica picks it up at once.
    pub event_stored: Arc<Notify>,
    pub metrics: Metrics,
    pub webhook_tolerance_seconds: i64,
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Authenticator {
        state.authenticator.clone()
    }
}

/// The answer to Stripe-only requests when the tenant has no Stripe configuration.
pub fn not_configured() -> Problem {
    Problem::typed(StatusCode::SERVICE_UNAVAILABLE, "billing-not-configured", "Billing is not configured")
        .with_detail("this tenant has no Stripe configuration (ChatTenant spec.stripe)")
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/billing/checkout", post(api::create_checkout))
        .route("/v1/billing/portal", post(api::create_portal))
        .route("/v1/billing/subscription", get(api::show_subscription))
        .route("/v1/billing/webhooks/stripe", post(webhook::receive))
        .with_state(state)
}

/// What the service is started with.
pub struct Parts {
    pub tenant: TenantConfig,
    pub settings: BillingSettings,
    pub credentials: Option<StripeCredentials>,
    pub pool: PgPool,
    pub redis: ConnectionManager,
    pub authenticator: Authenticator,
    /// A client and the namespace whose Subscription status to write; `None` when that is switched off.
    pub kubernetes: Option<(kube::Client, String)>,
    pub registry: Registry,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("Stripe client: {0}")]
    Stripe(#[from] ClientError),
}

/// The API router and the background tasks, which end when `shutdown` triggers.
pub fn start(parts: Parts, shutdown: &ShutdownSignal) -> Result<(Router, Vec<JoinHandle<()>>), StartError> {
    let metrics = Metrics::register(&parts.registry)?;
    let tenant = Arc::new(parts.tenant);
    let stripe = match (parts.credentials, tenant.stripe.as_ref()) {
        (Some(credentials), Some(config)) => Some(Arc::new(StripeSetup {
            client: StripeClient::new(
                parts.settings.stripe_api_base.clone(),
                &credentials.secret_key,
                Duration::from_secs(20),
            )?,
            webhook_secrets: credentials.webhook_secrets,
            prices: config.prices.clone(),
        })),
        _ => None,
    };
    let event_stored = Arc::new(Notify::new());
    let status_changed = Arc::new(Notify::new());
    let mut tasks = Vec::new();

    let relay = Relay::new(parts.pool.clone(), parts.redis, EMAIL_PRODUCER, RelaySettings::default());
    tasks.push(tokio::spawn(relay.run(shutdown.clone())));
    if let Some(stripe) = &stripe {
        let processor = Arc::new(Processor {
            pool: parts.pool.clone(),
            stripe: stripe.client.clone(),
            tenant: tenant.tenant.clone(),
            tenant_name: tenant.display_name.clone(),
            status_changed: status_changed.clone(),
            processed: metrics.events.clone(),
        });
        for _ in 0..parts.settings.workers {
            tasks.push(tokio::spawn(processor.clone().run(event_stored.clone(), shutdown.clone())));
        }
        if parts.settings.usage_reporting {
            let reporter = Reporter {
                pool: parts.pool.clone(),
                stripe: stripe.client.clone(),
                tenant: tenant.tenant.clone(),
                event_name: parts.settings.meter_event_name.clone(),
                window: parts.settings.usage_window,
                settle: parts.settings.usage_settle,
                reported: metrics.usage_windows.clone(),
            };
            tasks.push(tokio::spawn(reporter.run(shutdown.clone())));
        } else {
            tracing::info!("usage reporting to Stripe is switched off");
        }
    } else {
        tracing::info!("no Stripe configuration: checkout, portal, webhooks and usage reporting are off");
    }
    match parts.kubernetes {
        Some((client, namespace)) => {
            let writer = StatusWriter::new(
                parts.pool.clone(),
                client,
                &namespace,
                &tenant.tenant,
                metrics.status_writes.clone(),
            );
            tasks.push(tokio::spawn(writer.run(status_changed, shutdown.clone())));
        }
        None => tracing::info!("Kubernetes status writing is switched off"),
    }

    let state = AppState {
        tenant,
        pool: parts.pool,
        stripe,
        authenticator: parts.authenticator,
        event_stored,
        metrics,
        webhook_tolerance_seconds: DEFAULT_TOLERANCE_SECONDS,
    };
    Ok((routes(state), tasks))
}
