//! Per-user API keys in PostgreSQL: stored as SHA-256 digests with a visible prefix, optional expiry,
//! revocable, with the time of last use. A key can only be used for its owner's current role, and only while
//! its owner is enabled.

use chrono::{DateTime, Utc};
use saaschat_platform::auth::VerifiedKey;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::accounts::parse_role;
use crate::tokens;

/// What a key may be used for (enforced by the services through `saaschat_platform::auth::Scoped`). Keys are
/// for the chat API; they never manage accounts or other keys.
pub use saaschat_platform::auth::SCOPES;
/// Active keys a user may hold.
pub const MAX_KEYS_PER_USER: i64 = 50;
/// `last_used_at` is written at most this often per key, so a busy key does not turn reads into writes.
const LAST_USED_RESOLUTION_SECONDS: i64 = 60;

/// A key as listings show it (never the key itself).
#[derive(Clone, Debug, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The start of the key, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const KEY_COLUMNS: &str = "id, name, prefix, scopes, created_at, expires_at, last_used_at, revoked_at";

pub async fn list(conn: &mut PgConnection, user_id: Uuid) -> Result<Vec<ApiKey>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC"))
        .bind(user_id)
        .fetch_all(conn)
        .await
}

pub async fn active_count(conn: &mut PgConnection, user_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(user_id)
    .fetch_one(conn)
    .await
}

/// Creates a key; returns it (the only time it exists in clear) with its listing.
pub async fn create(
    conn: &mut PgConnection,
    user_id: Uuid,
    name: &str,
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
) -> Result<(String, ApiKey), sqlx::Error> {
    let (key, prefix) = tokens::new_api_key();
    let created: ApiKey = sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(name)
    .bind(&prefix)
    .bind(tokens::digest(&key))
    .bind(scopes)
    .bind(expires_at)
    .fetch_one(conn)
    .await?;
    Ok((key, created))
}

/// Revokes one of the user's own keys; false when the user has no such key (whoever else might).
pub async fn revoke(conn: &mut PgConnection, user_id: Uuid, key_id: Uuid) -> Result<bool, sqlx::Error> {
    let found: Option<Uuid> = sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND user_id = $2 RETURNING id",
    )
    .bind(key_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

#[derive(sqlx::FromRow)]
struct VerifyRow {
    id: Uuid,
    user_id: Uuid,
    scopes: Vec<String>,
    role: String,
    last_used_at: Option<DateTime<Utc>>,
}

/// The owner of a valid key (not revoked, not expired, owner enabled), recording its use.
pub async fn verify(conn: &mut PgConnection, key: &str, tenant: &str) -> Result<Option<VerifiedKey>, sqlx::Error> {
    if !tokens::looks_like_api_key(key) {
        return Ok(None);
    }
    let row: Option<VerifyRow> = sqlx::query_as(
        "SELECT k.id, k.user_id, k.scopes, u.role, k.last_used_at FROM api_keys k JOIN users u ON u.id = k.user_id \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) \
         AND u.disabled_at IS NULL",
    )
    .bind(tokens::digest(key))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stale = row.last_used_at.is_none_or(|used| (Utc::now() - used).num_seconds() >= LAST_USED_RESOLUTION_SECONDS);
    if stale {
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1").bind(row.id).execute(conn).await?;
    }
    let Some(role) = parse_role(&row.role) else { return Ok(None) };
    Ok(Some(VerifiedKey {
        user_id: row.user_id.to_string(),
        tenant: tenant.to_string(),
        role,
        key_id: row.id.to_string(),
        scopes: row.scopes,
    }))
}
