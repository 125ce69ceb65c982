//! Processing queued events: one transaction per event, so the state change, the outbox email and the event's
//! outcome commit together, and a crash before the commit leaves the event to be processed again.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus::IntCounterVec;
use saaschat_platform::http::ShutdownSignal;
use saaschat_platform::outbox;
use sqlx::{Acquire, PgConnection, PgPool};
use tokio::sync::Notify;

use super::decide::{
    self, CheckoutDecision, EventKind, InvoiceDecision, MAX_ATTEMPTS, SubscriptionDecision, apply_subscription,
};
use super::store::{self, ClaimedEvent};
use crate::account;
use crate::stripe::{StripeClient, StripeError};

/// The producer name of this service's emails (idempotency ids `billing:<uuid>`).
pub const EMAIL_PRODUCER: &str = "billing";

const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ProcessError {
    /// Errors that no retry can cure: an id that cannot be Stripe's, or an object Stripe does not have.
    fn is_permanent(&self) -> bool {
        match self {
            ProcessError::Stripe(error) => matches!(error, StripeError::BadId(_)) || error.is_not_found(),
            ProcessError::Database(_) => false,
        }
    }
}

pub struct Processor {
    pub pool: PgPool,
    pub stripe: StripeClient,
    pub tenant: String,
    pub tenant_name: String,
    /// Woken after a subscription change so the Kubernetes status follows at once.
    pub status_changed: Arc<Notify>,
    pub processed: IntCounterVec,
}

impl Processor {
    /// Processes one due event; `false` when none was due.
    pub async fn process_one(&self) -> Result<bool, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        let Some(event) = store::claim(&mut transaction).await? else {
            return Ok(false);
        };
        // The work runs in a savepoint: on failure it is undone and the attempt is still recorded.
        let mut work = transaction.begin().await?;
        let result = self.handle(&mut work, &event).await;
        let changed_subscription = matches!(result, Ok(Handled { subscription_changed: true, .. }));
        match result {
            Ok(handled) => {
                work.commit().await?;
                store::finish(&mut transaction, &event.id, &handled.outcome).await?;
                self.processed.with_label_values(&["done"]).inc();
                tracing::info!(event = %event.id, event_type = %event.event_type, outcome = %handled.outcome, "event processed");
            }
            Err(error) => {
                work.rollback().await?;
                let attempts = event.attempts + 1;
                let message = error.to_string();
                if error.is_permanent() || attempts >= MAX_ATTEMPTS {
                    store::give_up(&mut transaction, &event.id, &message).await?;
                    self.processed.with_label_values(&["failed"]).inc();
                    tracing::error!(event = %event.id, event_type = %event.event_type, attempts, error = %message, "event given up");
                } else {
                    let wait = decide::backoff(attempts);
                    store::retry_later(&mut transaction, &event.id, &message, wait).await?;
                    self.processed.with_label_values(&["retry"]).inc();
                    tracing::warn!(event = %event.id, attempts, retry_in = ?wait, error = %message, "event processing failed");
                }
            }
        }
        transaction.commit().await?;
        if changed_subscription {
            self.status_changed.notify_one();
        }
        Ok(true)
    }

    async fn handle(&self, conn: &mut PgConnection, event: &ClaimedEvent) -> Result<Handled, ProcessError> {
        let kind = EventKind::of(&event.event_type);
        if kind == EventKind::Unhandled {
            return Ok(Handled::outcome(format!("ignored: {} is not handled", event.event_type)));
        }
        let Some(object_id) = event.object_id.as_deref() else {
            return Ok(Handled::outcome("ignored: the event names no object".into()));
        };
        match kind {
            EventKind::CheckoutCompleted => self.checkout_completed(conn, object_id).await,
            EventKind::SubscriptionChanged => self.sync_subscription(conn, object_id, None).await,
            EventKind::InvoicePaid | EventKind::InvoicePaymentFailed => self.invoice(conn, kind, object_id).await,
            EventKind::Unhandled => Ok(Handled::outcome("ignored".into())),
        }
    }

    async fn checkout_completed(&self, conn: &mut PgConnection, session_id: &str) -> Result<Handled, ProcessError> {
        let ours: Option<String> = sqlx::query_scalar("SELECT id FROM checkout_sessions WHERE id = $1")
            .bind(session_id)
            .fetch_optional(&mut *conn)
            .await?;
        if ours.is_none() {
            return Ok(Handled::outcome(format!("ignored: {session_id} was not opened by this tenant")));
        }
        let session = self.stripe.retrieve_checkout_session(session_id).await?;
        match decide::checkout_completed(&session) {
            CheckoutDecision::Wait(reason) => Ok(Handled::outcome(format!("waiting: {reason} ({session_id})"))),
            CheckoutDecision::FetchSubscription { customer, subscription } => {
                self.sync_subscription(conn, &subscription, customer).await
            }
        }
    }

    /// Locks the account first, then fetches, so two workers never store two fetches in the wrong order.
    async fn sync_subscription(
        &self,
        conn: &mut PgConnection,
        subscription_id: &str,
        checkout_customer: Option<String>,
    ) -> Result<Handled, ProcessError> {
        let mut stored = account::lock(conn, &self.tenant).await?;
        if stored.customer_id.is_none() {
            stored.customer_id = checkout_customer;
        }
        let fetched = self.stripe.retrieve_subscription(subscription_id).await?;
        match apply_subscription(&stored, &fetched, Utc::now()) {
            SubscriptionDecision::Apply(updated) => {
                account::save(conn, &updated).await?;
                Ok(Handled {
                    outcome: format!("applied {} ({}) as fetched from Stripe", fetched.id, fetched.status),
                    subscription_changed: true,
                })
            }
            SubscriptionDecision::Foreign => Ok(Handled::outcome(format!(
                "ignored: {} belongs to customer {}, not this tenant",
                fetched.id, fetched.customer
            ))),
            SubscriptionDecision::Superseded { current } => {
                Ok(Handled::outcome(format!("ignored: {} ended and {current} is the current one", fetched.id)))
            }
        }
    }

    async fn invoice(
        &self,
        conn: &mut PgConnection,
        kind: EventKind,
        invoice_id: &str,
    ) -> Result<Handled, ProcessError> {
        // Read, not locked: invoices do not change the account, so they need not wait for one another.
        let stored = account::load(&mut *conn, &self.tenant).await?;
        let fetched = self.stripe.retrieve_invoice(invoice_id).await?;
        match decide::invoice_email(kind, &stored, &fetched, &self.tenant_name) {
            InvoiceDecision::Email { to, content } => {
                let id = outbox::enqueue(conn, EMAIL_PRODUCER, &to, &content).await?;
                Ok(Handled::outcome(format!("queued email {} ({id}) for {invoice_id}", content.template())))
            }
            InvoiceDecision::Skip(reason) => Ok(Handled::outcome(format!("no email for {invoice_id}: {reason}"))),
        }
    }

    /// Processes events until the shutdown; `wake` is notified by the webhook when it stores one.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, shutdown: ShutdownSignal) {
        while !shutdown.is_triggered() {
            match self.process_one().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "event queue unavailable"),
            }
            tokio::select! {
                () = shutdown.clone().triggered() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}

struct Handled {
    outcome: String,
    subscription_changed: bool,
}

impl Handled {
    fn outcome(outcome: String) -> Handled {
        Handled { outcome, subscription_changed: false }
    }
}
