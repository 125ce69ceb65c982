//! Accounts in PostgreSQL: users, sessions (refresh-token families), single-use email tokens. Every function
//! takes the connection or transaction it runs on, so a handler composes them into one transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use saaschat_platform::auth::Role;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::tokens;

/// How long a session (and so its refresh tokens) lasts from sign-in, however often it is refreshed.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
pub const VERIFY_EMAIL_LIFETIME: Duration = Duration::from_secs(48 * 3600);
pub const RESET_PASSWORD_LIFETIME: Duration = Duration::from_secs(3600);
pub const INVITATION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The advisory lock that serializes sign-ups, so the first user (and only the first) becomes the owner.
const SIGN_UP_LOCK: i64 = 0x5341_4153_4348_4154; // "SAASCHAT"

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

pub fn parse_role(name: &str) -> Option<Role> {
    match name {
        "owner" => Some(Role::Owner),
        "admin" => Some(Role::Admin),
        "member" => Some(Role::Member),
        _ => None,
    }
}

/// A user as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    #[schema(value_type = String, example = "member")]
    #[serde(serialize_with = "serialize_role")]
    pub role: Role,
    pub email_verified: bool,
    pub disabled: bool,
    /// False while an invitation is not accepted.
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

fn serialize_role<S: serde::Serializer>(role: &Role, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(role_name(*role))
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    password_hash: Option<String>,
    role: String,
    email_verified_at: Option<DateTime<Utc>>,
    disabled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// A user with the stored password hash, for sign-in.
pub struct StoredUser {
    pub user: User,
    pub password_hash: Option<String>,
}

impl From<UserRow> for StoredUser {
    fn from(row: UserRow) -> StoredUser {
        StoredUser {
            user: User {
                id: row.id,
                email: row.email,
                // The CHECK constraint allows nothing else; an unknown value reads as the least privilege.
                role: parse_role(&row.role).unwrap_or(Role::Member),
                email_verified: row.email_verified_at.is_some(),
                disabled: row.disabled_at.is_some(),
                active: row.password_hash.is_some(),
                created_at: row.created_at,
            },
            password_hash: row.password_hash,
        }
    }
}

const USER_COLUMNS: &str = "id, email, password_hash, role, email_verified_at, disabled_at, created_at";

pub async fn find_by_email(conn: &mut PgConnection, email: &str) -> Result<Option<StoredUser>, sqlx::Error> {
    let row: Option<UserRow> = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"))
        .bind(email)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(StoredUser::from))
}

pub async fn find_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<StoredUser>, sqlx::Error> {
    let row: Option<UserRow> = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(StoredUser::from))
}

/// Locks a user row for the rest of the transaction.
pub async fn lock_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<StoredUser>, sqlx::Error> {
    let row: Option<UserRow> = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(StoredUser::from))
}

/// A page of users, oldest first, after the `after` id.
pub async fn list(conn: &mut PgConnection, after: Option<Uuid>, limit: i64) -> Result<Vec<User>, sqlx::Error> {
    let rows: Vec<UserRow> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| StoredUser::from(row).user).collect())
}

/// Takes the sign-up lock for the rest of the transaction.
pub async fn lock_sign_ups(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SIGN_UP_LOCK).execute(conn).await.map(|_| ())
}

/// Users that count against the plan's seats: everyone not disabled, invited ones included.
pub async fn seats_taken(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE disabled_at IS NULL").fetch_one(conn).await
}

pub async fn any_user(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)").fetch_one(conn).await
}

/// Inserts a user; `password_hash` is `None` for an invitation.
pub async fn insert(
    conn: &mut PgConnection,
    email: &str,
    password_hash: Option<&str>,
    role: Role,
) -> Result<StoredUser, sqlx::Error> {
    let row: UserRow = sqlx::query_as(&format!(
        "INSERT INTO users (id, email, password_hash, role) VALUES ($1, $2, $3, $4) RETURNING {USER_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(password_hash)
    .bind(role_name(role))
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

pub async fn set_password(conn: &mut PgConnection, id: Uuid, password_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1")
        .bind(id)
        .bind(password_hash)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn mark_email_verified(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET email_verified_at = coalesce(email_verified_at, now()) WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn set_role(conn: &mut PgConnection, id: Uuid, role: Role) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
        .bind(id)
        .bind(role_name(role))
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn set_disabled(conn: &mut PgConnection, id: Uuid, disabled: bool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END WHERE id = $1")
        .bind(id)
        .bind(disabled)
        .execute(conn)
        .await
        .map(|_| ())
}

/// A new session and its first refresh token.
pub struct NewSession {
    pub session_id: Uuid,
    pub refresh_token: String,
}

pub async fn start_session(conn: &mut PgConnection, user_id: Uuid) -> Result<NewSession, sqlx::Error> {
    let session_id = Uuid::now_v7();
    let expires_at = Utc::now() + SESSION_LIFETIME;
    sqlx::query("INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(session_id)
        .bind(user_id)
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
    let refresh_token = insert_refresh_token(conn, session_id).await?;
    Ok(NewSession { session_id, refresh_token })
}

async fn insert_refresh_token(conn: &mut PgConnection, session_id: Uuid) -> Result<String, sqlx::Error> {
    let token = tokens::random_token();
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
        .bind(tokens::digest(&token))
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(token)
}

/// What a presented refresh token turned out to be.
pub enum Refresh {
    /// Exchanged: the new token of the same session.
    Rotated { session_id: Uuid, user: User, refresh_token: String },
    /// Not ours, or its session ended, or its user is disabled.
    Invalid,
    /// Already exchanged before: someone holds a copy. The session is now revoked.
    Reused { session_id: Uuid },
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    session_id: Uuid,
    rotated_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    user_id: Uuid,
}

/// Exchanges a refresh token inside the caller's transaction (which must commit for any outcome to hold).
pub async fn refresh(conn: &mut PgConnection, token: &str) -> Result<Refresh, sqlx::Error> {
    let row: Option<RefreshRow> = sqlx::query_as(
        "SELECT r.session_id, r.rotated_at, s.revoked_at, s.expires_at, s.user_id \
         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
         WHERE r.token_hash = $1 FOR UPDATE OF r, s",
    )
    .bind(tokens::digest(token))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Refresh::Invalid) };
    if row.revoked_at.is_some() || row.expires_at <= Utc::now() {
        return Ok(Refresh::Invalid);
    }
    if row.rotated_at.is_some() {
        revoke_session(conn, row.session_id, "refresh-token-reused").await?;
        return Ok(Refresh::Reused { session_id: row.session_id });
    }
    let Some(stored) = find_by_id(conn, row.user_id).await? else { return Ok(Refresh::Invalid) };
    if stored.user.disabled {
        return Ok(Refresh::Invalid);
    }
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1")
        .bind(tokens::digest(token))
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE sessions SET last_used_at = now() WHERE id = $1")
        .bind(row.session_id)
        .execute(&mut *conn)
        .await?;
    let refresh_token = insert_refresh_token(conn, row.session_id).await?;
    Ok(Refresh::Rotated { session_id: row.session_id, user: stored.user, refresh_token })
}

pub async fn revoke_session(conn: &mut PgConnection, session_id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(session_id)
        .bind(reason)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Revokes every live session of a user; returns their ids so they can be announced as ended.
pub async fn revoke_all_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    reason: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 \
         WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
    )
    .bind(user_id)
    .bind(reason)
    .fetch_all(conn)
    .await
}

/// Whether a session is live (not revoked, not expired).
pub async fn session_is_live(conn: &mut PgConnection, session_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > now())",
    )
    .bind(session_id)
    .fetch_one(conn)
    .await
}

/// The purposes of single-use email tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailPurpose {
    VerifyEmail,
    ResetPassword,
    Invitation,
}

impl EmailPurpose {
    fn name(self) -> &'static str {
        match self {
            EmailPurpose::VerifyEmail => "verify-email",
            EmailPurpose::ResetPassword => "reset-password",
            EmailPurpose::Invitation => "invitation",
        }
    }

    pub fn lifetime(self) -> Duration {
        match self {
            EmailPurpose::VerifyEmail => VERIFY_EMAIL_LIFETIME,
            EmailPurpose::ResetPassword => RESET_PASSWORD_LIFETIME,
            EmailPurpose::Invitation => INVITATION_LIFETIME,
        }
    }
}

/// A new single-use token; earlier unused tokens of the same purpose stop working.
pub async fn issue_email_token(
    conn: &mut PgConnection,
    user_id: Uuid,
    purpose: EmailPurpose,
) -> Result<(String, DateTime<Utc>), sqlx::Error> {
    sqlx::query("UPDATE email_tokens SET used_at = now() WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL")
        .bind(user_id)
        .bind(purpose.name())
        .execute(&mut *conn)
        .await?;
    let token = tokens::random_token();
    let expires_at = Utc::now() + purpose.lifetime();
    sqlx::query("INSERT INTO email_tokens (token_hash, user_id, purpose, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(tokens::digest(&token))
        .bind(user_id)
        .bind(purpose.name())
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok((token, expires_at))
}

/// Uses a single-use token: the user it belongs to, if it is valid, unused and unexpired; it is used up either way.
pub async fn consume_email_token(
    conn: &mut PgConnection,
    token: &str,
    purpose: EmailPurpose,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE email_tokens SET used_at = now() \
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now() RETURNING user_id",
    )
    .bind(tokens::digest(token))
    .bind(purpose.name())
    .fetch_optional(conn)
    .await
}

/// Normalizes and checks an email address: trimmed, lower-cased, one `@` between a non-empty local part and a
/// domain with a dot, no whitespace or control characters, at most 254 characters (RFC 5321).
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("the email address is empty");
    }
    if email.chars().count() > 254 {
        return Err("the email address is longer than 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the email address contains whitespace or control characters");
    }
    if email.chars().any(is_invisible) {
        return Err("the email address contains invisible or text-direction characters");
    }
    let Some((local, domain)) = email.split_once('@') else { return Err("the email address has no @") };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err("the email address is not of the form name@domain");
    }
    if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err("the email address's domain is not valid");
    }
    if email.contains(['<', '>', '"', '\\', ',', ';']) {
        return Err("the email address contains characters that are not allowed");
    }
    Ok(email)
}

/// Characters that render as nothing or reorder text (Unicode format characters), which would let two
/// addresses look the same.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email("  Ada@Example.COM "), Ok("ada@example.com".to_string()));
        assert_eq!(normalize_email("ünï@exämple.de"), Ok("ünï@exämple.de".to_string()));
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada@@example.com",
            "a b@example.com",
            "ada@example.com\r\nBcc: eve@example.com",
            "ada@example..com",
            "\"ada\"@example.com",
            "ada@example.com, eve@example.com",
            "ada\u{200b}@example.com",
            "ada@exa\u{202e}mple.com",
            "\u{feff}ada@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(normalize_email(&format!("ada@{}.com", "d".repeat(250))).is_err());
    }

    #[test]
    fn role_names_round_trip() {
        for role in [Role::Owner, Role::Admin, Role::Member] {
            assert_eq!(parse_role(role_name(role)), Some(role));
        }
        assert_eq!(parse_role("root"), None);
    }
}
