//! Reading chat's usage (`chat.usage_events`, contract 2) and the settled windows (`usage_windows`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// Usage since the start of a period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct PeriodUsage {
    pub since: DateTime<Utc>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub tokens: i64,
    /// US dollars in millionths, as chat prices completions.
    pub cost_micros: i64,
}

pub async fn period_usage(
    pool: &PgPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<PeriodUsage, sqlx::Error> {
    sqlx::query_as(
        "SELECT $1::timestamptz AS since, \
                COALESCE(sum(input_tokens), 0)::bigint AS input_tokens, \
                COALESCE(sum(output_tokens), 0)::bigint AS output_tokens, \
                COALESCE(sum(input_tokens + output_tokens), 0)::bigint AS tokens, \
                COALESCE(sum(cost_micros), 0)::bigint AS cost_micros \
         FROM chat.usage_events WHERE recorded_at >= $1 AND recorded_at < $2",
    )
    .bind(since)
    .bind(until)
    .fetch_one(pool)
    .await
}

pub async fn window_tokens(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(input_tokens + output_tokens), 0)::bigint FROM chat.usage_events \
         WHERE recorded_at >= $1 AND recorded_at < $2",
    )
    .bind(start)
    .bind(end)
    .fetch_one(conn)
    .await
}

pub async fn earliest_usage(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(recorded_at) FROM chat.usage_events").fetch_one(conn).await
}

pub async fn last_settled(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(window_start) FROM usage_windows").fetch_one(conn).await
}

pub struct SettledWindow<'a> {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub identifier: &'a str,
    pub tokens: i64,
    pub customer_id: Option<&'a str>,
    pub outcome: &'a str,
}

pub async fn record(conn: &mut PgConnection, window: &SettledWindow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO usage_windows (window_start, window_end, identifier, tokens, customer_id, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(window.start)
    .bind(window.end)
    .bind(window.identifier)
    .bind(window.tokens)
    .bind(window.customer_id)
    .bind(window.outcome)
    .execute(conn)
    .await?;
    Ok(())
}
