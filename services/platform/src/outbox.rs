//! The transactional outbox: a service that must send an email writes it into its own `outbox` table in the same
//! transaction as the change that causes it ([`enqueue`]), so the email exists if and only if the change
//! committed. A [`Relay`] then appends pending rows to the tenant's Redis stream ([`crate::email::STREAM`]) and
//! marks them published. Delivery is at least once: a relay that dies between `XADD` and its commit publishes the
//! row again, and the email worker drops the duplicate by its id (`<producer>:<row id>`).
//!
//! Every producing service creates the table in its own schema (same DDL, see `migrations/auth/`):
//!
//! ```sql
//! CREATE TABLE outbox (id uuid PRIMARY KEY, recipient text NOT NULL, template text NOT NULL, data jsonb NOT NULL,
//!     created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz);
//! CREATE INDEX outbox_pending ON outbox (created_at) WHERE published_at IS NULL;
//! ```

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::email::{self, EmailContent};
use crate::http::ShutdownSignal;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot append to the email stream: {0}")]
    Redis(#[from] ::redis::RedisError),
}

/// The `LISTEN` channel a producer's relay waits on; `NOTIFY` is delivered at commit, so the relay wakes exactly
/// when there is something committed to publish.
fn channel(producer: &str) -> String {
    let sanitized: String =
        producer.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    format!("saaschat_outbox_{sanitized}")
}

/// Writes an email into the outbox. Call it on the transaction that makes the change the email is about.
pub async fn enqueue(
    conn: &mut PgConnection,
    producer: &str,
    to: &str,
    content: &EmailContent,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO outbox (id, recipient, template, data) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(to)
        .bind(content.template())
        .bind(content.data())
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify($1, '')").bind(channel(producer)).execute(&mut *conn).await?;
    Ok(id)
}

#[derive(Clone, Debug)]
pub struct RelaySettings {
    /// How often the relay looks for pending rows when no notification arrives (a lost `LISTEN` connection, or
    /// rows whose publication failed).
    pub poll_interval: Duration,
    /// Rows published per transaction.
    pub batch_size: i64,
    /// Published rows are deleted after this long; they are kept a while to answer "was it sent?".
    pub retention: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            poll_interval: Duration::from_secs(5),
            batch_size: 100,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Publishes a producer's outbox to the email stream.
pub struct Relay {
    pool: PgPool,
    redis: ConnectionManager,
    producer: String,
    settings: RelaySettings,
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    id: Uuid,
    recipient: String,
    template: String,
    data: serde_json::Value,
    created_at: DateTime<Utc>,
}

impl Relay {
    pub fn new(pool: PgPool, redis: ConnectionManager, producer: &str, settings: RelaySettings) -> Relay {
        Relay { pool, redis, producer: producer.to_string(), settings }
    }

    /// Publishes one batch of pending rows; returns how many. Rows another relay replica is publishing are
    /// skipped, not waited for.
    pub async fn publish_pending(&self) -> Result<usize, OutboxError> {
        let mut transaction = self.pool.begin().await?;
        let rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT id, recipient, template, data, created_at FROM outbox WHERE published_at IS NULL \
             ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut pipeline = ::redis::pipe();
        pipeline.atomic();
        for row in &rows {
            let fields = email::entry_fields(
                &format!("{}:{}", self.producer, row.id),
                &row.recipient,
                &row.template,
                &row.data.to_string(),
                &row.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            );
            pipeline.xadd(email::STREAM, "*", &fields).ignore();
        }
        let mut redis = self.redis.clone();
        pipeline.query_async::<()>(&mut redis).await?;
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(rows.len())
    }

    async fn delete_expired(&self) -> Result<u64, sqlx::Error> {
        let cutoff = Utc::now() - self.settings.retention;
        let deleted =
            sqlx::query("DELETE FROM outbox WHERE published_at < $1").bind(cutoff).execute(&self.pool).await?;
        Ok(deleted.rows_affected())
    }

    /// Publishes until the shutdown: whenever a producer commits (`NOTIFY`), and every poll interval.
    pub async fn run(self, shutdown: ShutdownSignal) {
        let mut listener = self.listen().await;
        let mut last_cleanup = std::time::Instant::now();
        while !shutdown.is_triggered() {
            loop {
                match self.publish_pending().await {
                    Ok(published) if published as i64 == self.settings.batch_size => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, producer = %self.producer, "outbox not published; retrying later");
                        break;
                    }
                }
            }
            if last_cleanup.elapsed() >= Duration::from_secs(3600) {
                last_cleanup = std::time::Instant::now();
                if let Err(error) = self.delete_expired().await {
                    tracing::warn!(%error, "published outbox rows not deleted");
                }
            }
            let wait = tokio::time::sleep(self.settings.poll_interval);
            tokio::select! {
                () = shutdown.clone().triggered() => break,
                () = wait => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                }
                notified = wait_for_notification(listener.as_mut()) => {
                    if let Err(error) = notified {
                        tracing::warn!(%error, "outbox notifications lost; polling until reconnected");
                        listener = self.listen().await;
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let listen = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(&channel(&self.producer)).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listen.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for outbox notifications; polling");
                None
            }
        }
    }
}

/// Waits for the next notification, forever when there is no listener (the poll interval wakes the relay).
async fn wait_for_notification(listener: Option<&mut PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_per_producer_and_plain_identifiers() {
        assert_eq!(channel("auth"), "saaschat_outbox_auth");
        assert_eq!(channel("Email-Worker"), "saaschat_outbox_email_worker");
        assert_ne!(channel("auth"), channel("billing"));
    }
}
