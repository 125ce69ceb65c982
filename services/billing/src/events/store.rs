//! The `stripe_events` table.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// A verified event as the webhook received it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    pub object_id: Option<String>,
    pub created: DateTime<Utc>,
    pub payload: serde_json::Value,
}

/// Stores the event; `false` when it was stored before (a redelivery or a replay), which then has no effect.
pub async fn insert(conn: &mut PgConnection, event: &NewEvent) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO stripe_events (id, event_type, object_id, payload, stripe_created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(&event.object_id)
    .bind(&event.payload)
    .bind(event.created)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedEvent {
    pub id: String,
    pub event_type: String,
    pub object_id: Option<String>,
    pub attempts: i32,
}

/// The oldest event due for processing, locked until the transaction ends; events other workers hold are skipped.
pub async fn claim(conn: &mut PgConnection) -> Result<Option<ClaimedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_type, object_id, attempts FROM stripe_events \
         WHERE processed_at IS NULL AND next_attempt_at <= now() \
         ORDER BY next_attempt_at, stripe_created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(conn)
    .await
}

pub async fn finish(conn: &mut PgConnection, id: &str, outcome: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE stripe_events SET processed_at = now(), outcome = $2, attempts = attempts + 1 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn retry_later(conn: &mut PgConnection, id: &str, error: &str, wait: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE stripe_events SET attempts = attempts + 1, last_error = $2, \
         next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(wait.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn give_up(conn: &mut PgConnection, id: &str, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE stripe_events SET processed_at = now(), attempts = attempts + 1, last_error = $2, \
         outcome = 'failed' WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}
