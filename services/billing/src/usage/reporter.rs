//! The usage reporter: every tick, settles the due windows in order. A window is recorded only after Stripe has
//! accepted its meter event, inside a transaction that holds an advisory lock so only one replica reports at a
//! time; a Stripe error ends the tick and the same window (same identifier, same idempotency key) is tried again
//! on the next, so no window is skipped and none is counted twice.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use prometheus::IntCounterVec;
use saaschat_platform::http::ShutdownSignal;
use sqlx::PgPool;

use super::store::{self, SettledWindow};
use super::window::{self, WindowAction};
use crate::account;
use crate::stripe::requests::NewMeterEvent;
use crate::stripe::{StripeClient, StripeError};

/// The advisory lock key of the reporter (an arbitrary constant, distinct from the migration lock keys).
const REPORTER_LOCK: i64 = 0x6269_6c6c_7573_6167;
/// Windows settled per tick at most, so a long backlog does not hold the lock for long.
const WINDOWS_PER_TICK: usize = 48;
const TICK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("meter event {identifier} not accepted: {source}")]
    Stripe {
        identifier: String,
        #[source]
        source: StripeError,
    },
}

pub struct Reporter {
    pub pool: PgPool,
    pub stripe: StripeClient,
    pub tenant: String,
    pub event_name: String,
    pub window: Duration,
    pub settle: Duration,
    pub reported: IntCounterVec,
}

impl Reporter {
    /// Settles every window due at `now` (up to a bound); returns how many were settled.
    pub async fn settle_due(&self, now: DateTime<Utc>) -> Result<usize, ReportError> {
        let mut settled = 0;
        while settled < WINDOWS_PER_TICK {
            if !self.settle_next(now).await? {
                break;
            }
            settled += 1;
        }
        Ok(settled)
    }

    /// Settles the next due window; `false` when none is due or another replica is reporting.
    async fn settle_next(&self, now: DateTime<Utc>) -> Result<bool, ReportError> {
        let mut transaction = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(REPORTER_LOCK)
            .fetch_one(&mut *transaction)
            .await?;
        if !locked {
            return Ok(false);
        }
        let last = store::last_settled(&mut transaction).await?;
        let earliest = if last.is_none() { store::earliest_usage(&mut transaction).await? } else { None };
        let Some(start) = window::next_due(last, earliest, self.window, self.settle, now) else {
            // Ended now, not when the pool next uses the connection, so the lock is free for the next replica.
            transaction.rollback().await?;
            return Ok(false);
        };
        let end = start + TimeDelta::from_std(self.window).unwrap_or(TimeDelta::hours(1));
        let tokens = store::window_tokens(&mut transaction, start, end).await?;
        let customer = account::load(&mut *transaction, &self.tenant).await?.customer_id;
        let identifier = window::identifier(&self.tenant, start);
        let outcome = match window::decide(end, tokens, customer.as_deref(), now) {
            WindowAction::Send { customer, tokens, timestamp } => {
                let event = NewMeterEvent {
                    event_name: self.event_name.clone(),
                    identifier: identifier.clone(),
                    timestamp,
                    customer,
                    value: tokens,
                };
                if let Err(source) = self.stripe.create_meter_event(&event, &identifier).await {
                    // Ended now too, so the lock is free for the next attempt at once.
                    transaction.rollback().await?;
                    return Err(ReportError::Stripe { identifier, source });
                }
                "sent"
            }
            WindowAction::Record(outcome) => outcome,
        };
        let window =
            SettledWindow { start, end, identifier: &identifier, tokens, customer_id: customer.as_deref(), outcome };
        store::record(&mut transaction, &window).await?;
        transaction.commit().await?;
        self.reported.with_label_values(&[outcome]).inc();
        tracing::info!(%identifier, tokens, outcome, "usage window settled");
        Ok(true)
    }

    pub async fn run(self, shutdown: ShutdownSignal) {
        while !shutdown.is_triggered() {
            if let Err(error) = self.settle_due(Utc::now()).await {
                self.reported.with_label_values(&["error"]).inc();
                tracing::warn!(%error, "usage not reported; retrying next tick");
            }
            tokio::select! {
                () = shutdown.clone().triggered() => break,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }
}
