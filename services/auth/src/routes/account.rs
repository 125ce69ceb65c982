//! Sign-up, email verification, sign-in, refresh, sign-out, the caller's account, password change and reset,
//! and accepting an invitation.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use saaschat_platform::auth::{Authenticated, Credential};
use saaschat_platform::email::EmailContent;
use saaschat_platform::outbox;
use saaschat_platform::problem::Json;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use saaschat_platform::Problem;

use super::caller_id;
use crate::accounts::{self, EmailPurpose, Refresh, User};
use crate::error::{ApiError, ApiResult, conflict, forbidden, unauthorized, unprocessable};
use crate::passwords::check_policy;
use crate::state::{AppState, ClientAddress};
use crate::tokens;

/// The producer name of this service's outbox.
pub const PRODUCER: &str = "auth";

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// 8 to 128 characters; not one of the most common passwords.
    pub password: String,
}

/// A signed-in session.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    /// An EdDSA JWT for `Authorization: Bearer`, valid for `expiresIn` seconds.
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: u64,
    /// Opaque; exchange it once at `/v1/auth/refresh` for new tokens.
    pub refresh_token: String,
    pub user: User,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignOutRequest {
    /// End every session of the account, not only this one.
    #[serde(default)]
    pub all_sessions: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetRequest {
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetConfirmation {
    /// The token from the reset email.
    pub token: String,
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailToken {
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvitationAcceptance {
    pub token: String,
    pub password: String,
}

fn email_or_refuse(raw: &str) -> ApiResult<String> {
    accounts::normalize_email(raw)
        .map_err(|reason| unprocessable("invalid-email", "The email address is not valid", reason))
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn link(state: &AppState, page: &str, token: &str) -> String {
    format!("{}/{page}?token={token}", state.tenant.url.trim_end_matches('/'))
}

/// Issues the access token of a session; called after its transaction committed.
fn session_tokens(state: &AppState, user: User, session_id: Uuid, refresh_token: String) -> ApiResult<Tokens> {
    let access = state.keys.issue(&user.id.to_string(), &state.tenant.name, user.role, &session_id.to_string())?;
    Ok(Tokens { access_token: access.token, token_type: "Bearer", expires_in: access.expires_in, refresh_token, user })
}

/// Writes a verification email for `user` into the outbox, in the caller's transaction.
async fn send_verification(conn: &mut PgConnection, state: &AppState, user: &User) -> ApiResult<()> {
    let (token, expires_at) = accounts::issue_email_token(conn, user.id, EmailPurpose::VerifyEmail).await?;
    let content = EmailContent::VerifyEmail {
        tenant_name: state.tenant.display_name.clone(),
        verify_url: link(state, "verify-email", &token),
        expires_at: rfc3339(expires_at),
    };
    outbox::enqueue(conn, PRODUCER, &user.email, &content).await?;
    Ok(())
}

/// Sign up with an email address and a password; the first user of the tenant becomes its owner.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "account", request_body = Credentials,
    responses(
        (status = 201, description = "Signed up and signed in; a verification email is on its way", body = Tokens),
        (status = 403, description = "The plan has no seat left", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The email address has an account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid email address or unacceptable password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many sign-ups from this address", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_up(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Json(body): Json<Credentials>,
) -> ApiResult<(StatusCode, Json<Tokens>)> {
    let email = email_or_refuse(&body.email)?;
    check_policy(&body.password)?;
    state.limiter.check_sign_up(&address).await?;
    let hash = state.hasher.hash(&body.password).await?;

    let mut transaction = state.pool.begin().await?;
    accounts::lock_sign_ups(&mut transaction).await?;
    if accounts::find_by_email(&mut transaction, &email).await?.is_some() {
        return Err(conflict("account-exists", "The email address has an account", "sign in, or reset the password"));
    }
    if accounts::seats_taken(&mut transaction).await? >= state.tenant.seats {
        return Err(forbidden(format!("the plan's {} seats are taken; ask an owner to upgrade", state.tenant.seats)));
    }
    let role = if accounts::any_user(&mut transaction).await? {
        saaschat_platform::auth::Role::Member
    } else {
        saaschat_platform::auth::Role::Owner
    };
    let stored = accounts::insert(&mut transaction, &email, Some(&hash), role).await?;
    send_verification(&mut transaction, &state, &stored.user).await?;
    let session = accounts::start_session(&mut transaction, stored.user.id).await?;
    transaction.commit().await?;
    tracing::info!(user = %stored.user.id, role = accounts::role_name(role), "signed up");
    let tokens = session_tokens(&state, stored.user, session.session_id, session.refresh_token)?;
    Ok((StatusCode::CREATED, Json(tokens)))
}

/// Confirms an email address with the token from the verification email.
#[utoipa::path(post, path = "/v1/auth/verify-email", tag = "account", request_body = EmailToken,
    responses(
        (status = 204, description = "Verified"),
        (status = 400, description = "The token is invalid, expired or used", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify_email(State(state): State<AppState>, Json(body): Json<EmailToken>) -> ApiResult<StatusCode> {
    let invalid = || bad_token("verification");
    if !tokens::looks_like_token(&body.token) {
        return Err(invalid());
    }
    let mut transaction = state.pool.begin().await?;
    let user = accounts::consume_email_token(&mut transaction, &body.token, EmailPurpose::VerifyEmail).await?;
    let user = user.ok_or_else(invalid)?;
    accounts::mark_email_verified(&mut transaction, user).await?;
    transaction.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

fn bad_token(kind: &str) -> ApiError {
    ApiError::from(
        saaschat_platform::Problem::typed(StatusCode::BAD_REQUEST, "invalid-token", "The token is not valid")
            .with_detail(format!("the {kind} token is invalid, expired or already used")),
    )
}

/// Sends a new verification email to the caller.
#[utoipa::path(post, path = "/v1/auth/verify-email/resend", tag = "account", security(("bearer" = [])),
    responses(
        (status = 202, description = "A new verification email is on its way"),
        (status = 409, description = "The address is already verified", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many emails for this account", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resend_verification(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    caller: Authenticated,
) -> ApiResult<StatusCode> {
    let mut transaction = state.pool.begin().await?;
    let stored = accounts::lock_by_id(&mut transaction, caller_id(&caller)?)
        .await?
        .ok_or_else(|| unauthorized("no such user"))?;
    if stored.user.email_verified {
        return Err(conflict("already-verified", "The email address is verified", "nothing to do"));
    }
    state.limiter.check_reset(&stored.user.email, &address).await?;
    send_verification(&mut transaction, &state, &stored.user).await?;
    transaction.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

/// Signs in with an email address and password.
#[utoipa::path(post, path = "/v1/auth/signin", tag = "account", request_body = Credentials,
    responses(
        (status = 200, description = "Signed in", body = Tokens),
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The account is disabled", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_in(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Json(body): Json<Credentials>,
) -> ApiResult<Json<Tokens>> {
    let wrong = || unauthorized("the email address or the password is wrong");
    // A malformed address cannot have an account; answer as for a wrong password, after the same work.
    let email = accounts::normalize_email(&body.email).unwrap_or_default();
    state.limiter.check_sign_in(&email, &address).await?;
    let mut connection = state.pool.acquire().await?;
    let stored = if email.is_empty() { None } else { accounts::find_by_email(&mut connection, &email).await? };
    drop(connection);
    let hash = stored.as_ref().and_then(|stored| stored.password_hash.as_deref());
    if !state.hasher.verify(&body.password, hash).await? {
        state.limiter.record_sign_in_failure(&email, &address).await;
        return Err(wrong());
    }
    let Some(stored) = stored else { return Err(wrong()) };
    if stored.user.disabled {
        return Err(forbidden("the account is disabled; ask an owner or admin"));
    }
    state.limiter.record_sign_in_success(&email, &address).await;
    let mut transaction = state.pool.begin().await?;
    let session = accounts::start_session(&mut transaction, stored.user.id).await?;
    transaction.commit().await?;
    Ok(Json(session_tokens(&state, stored.user, session.session_id, session.refresh_token)?))
}

/// Exchanges a refresh token for new tokens. Each refresh token works once; presenting one again ends its session.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "account", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the presented refresh token is used up", body = Tokens),
        (status = 401, description = "Invalid, expired or reused refresh token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refresh(State(state): State<AppState>, Json(body): Json<RefreshRequest>) -> ApiResult<Json<Tokens>> {
    if !tokens::looks_like_token(&body.refresh_token) {
        return Err(unauthorized("the refresh token is not valid"));
    }
    let mut transaction = state.pool.begin().await?;
    let outcome = accounts::refresh(&mut transaction, &body.refresh_token).await?;
    transaction.commit().await?;
    match outcome {
        Refresh::Rotated { session_id, user, refresh_token } => {
            Ok(Json(session_tokens(&state, user, session_id, refresh_token)?))
        }
        Refresh::Invalid => Err(unauthorized("the refresh token is not valid")),
        Refresh::Reused { session_id } => {
            tracing::warn!(session = %session_id, "refresh token reused; session revoked");
            state.announce_ended_sessions(&[session_id]).await;
            Err(unauthorized("the refresh token was already used; the session has been ended, sign in again"))
        }
    }
}

/// Ends the caller's session (or all of the account's sessions).
#[utoipa::path(post, path = "/v1/auth/signout", tag = "account", security(("bearer" = [])), request_body(content = Option<SignOutRequest>),
    responses((status = 204, description = "Signed out: the session's tokens stop working everywhere")))]
pub async fn sign_out(State(state): State<AppState>, caller: Authenticated, body: Bytes) -> ApiResult<StatusCode> {
    // The body is optional: an empty one signs out of this session only.
    let request: SignOutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SignOutRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            saaschat_platform::Problem::typed(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "The request body is not valid JSON",
            )
            .with_detail(error.to_string())
        })?
    };
    let all = request.all_sessions;
    let user = caller_id(&caller)?;
    let mut transaction = state.pool.begin().await?;
    let ended = match (all, session_of(&caller)) {
        (false, Some(session)) => {
            accounts::revoke_session(&mut transaction, session, "signed-out").await?;
            vec![session]
        }
        _ => accounts::revoke_all_sessions(&mut transaction, user, "signed-out").await?,
    };
    transaction.commit().await?;
    state.announce_ended_sessions(&ended).await;
    Ok(StatusCode::NO_CONTENT)
}

fn session_of(caller: &Authenticated) -> Option<Uuid> {
    caller.session_id.as_deref().and_then(|session| Uuid::parse_str(session).ok())
}

/// The caller's account.
#[utoipa::path(get, path = "/v1/auth/me", tag = "account", security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = User),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn me(State(state): State<AppState>, caller: Authenticated) -> ApiResult<Json<User>> {
    let mut connection = state.pool.acquire().await?;
    let stored = accounts::find_by_id(&mut connection, caller_id(&caller)?).await?;
    match stored {
        Some(stored) if !stored.user.disabled => Ok(Json(stored.user)),
        Some(_) => Err(forbidden("the account is disabled")),
        None => Err(unauthorized("the account no longer exists")),
    }
}

/// Changes the caller's password; every session ends and a new one starts.
#[utoipa::path(post, path = "/v1/auth/password", tag = "account", security(("bearer" = [])), request_body = ChangePasswordRequest,
    responses(
        (status = 200, description = "Changed; these are the tokens of the new session", body = Tokens),
        (status = 403, description = "The current password is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The new password is not acceptable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    caller: Authenticated,
    Json(body): Json<ChangePasswordRequest>,
) -> ApiResult<Json<Tokens>> {
    if caller.credential != Credential::AccessToken {
        return Err(forbidden("sign in to change the password"));
    }
    check_policy(&body.new_password)?;
    let user_id = caller_id(&caller)?;
    let mut connection = state.pool.acquire().await?;
    let stored = accounts::find_by_id(&mut connection, user_id).await?.ok_or_else(|| unauthorized("no such user"))?;
    drop(connection);
    state.limiter.check_sign_in(&stored.user.email, &address).await?;
    if !state.hasher.verify(&body.current_password, stored.password_hash.as_deref()).await? {
        state.limiter.record_sign_in_failure(&stored.user.email, &address).await;
        return Err(forbidden("the current password is wrong"));
    }
    let hash = state.hasher.hash(&body.new_password).await?;
    let mut transaction = state.pool.begin().await?;
    accounts::set_password(&mut transaction, user_id, &hash).await?;
    let ended = accounts::revoke_all_sessions(&mut transaction, user_id, "password-changed").await?;
    let session = accounts::start_session(&mut transaction, user_id).await?;
    transaction.commit().await?;
    state.announce_ended_sessions(&ended).await;
    Ok(Json(session_tokens(&state, stored.user, session.session_id, session.refresh_token)?))
}

/// Asks for a password-reset email. The answer is the same whether or not the address has an account.
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "account", request_body = ResetRequest,
    responses(
        (status = 202, description = "If the address has an account, a reset email is on its way"),
        (status = 422, description = "The email address is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many resets", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn request_password_reset(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Json(body): Json<ResetRequest>,
) -> ApiResult<StatusCode> {
    let email = email_or_refuse(&body.email)?;
    state.limiter.check_reset(&email, &address).await?;
    let mut transaction = state.pool.begin().await?;
    if let Some(stored) = accounts::find_by_email(&mut transaction, &email).await?
        && !stored.user.disabled
        && stored.user.active
    {
        let (token, expires_at) =
            accounts::issue_email_token(&mut transaction, stored.user.id, EmailPurpose::ResetPassword).await?;
        let content = EmailContent::ResetPassword {
            tenant_name: state.tenant.display_name.clone(),
            reset_url: link(&state, "reset-password", &token),
            expires_at: rfc3339(expires_at),
        };
        outbox::enqueue(&mut transaction, PRODUCER, &stored.user.email, &content).await?;
    }
    transaction.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

/// Sets a new password with the token from the reset email; every session ends.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "account", request_body = ResetConfirmation,
    responses(
        (status = 204, description = "The password is changed; sign in with it"),
        (status = 400, description = "The token is invalid, expired or used", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The new password is not acceptable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reset_password(
    State(state): State<AppState>,
    Json(body): Json<ResetConfirmation>,
) -> ApiResult<StatusCode> {
    if !tokens::looks_like_token(&body.token) {
        return Err(bad_token("reset"));
    }
    check_policy(&body.new_password)?;
    let hash = state.hasher.hash(&body.new_password).await?;
    let mut transaction = state.pool.begin().await?;
    let user = accounts::consume_email_token(&mut transaction, &body.token, EmailPurpose::ResetPassword).await?;
    let user = user.ok_or_else(|| bad_token("reset"))?;
    accounts::set_password(&mut transaction, user, &hash).await?;
    // Receiving the email proves the address.
    accounts::mark_email_verified(&mut transaction, user).await?;
    let ended = accounts::revoke_all_sessions(&mut transaction, user, "password-reset").await?;
    transaction.commit().await?;
    state.announce_ended_sessions(&ended).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Accepts an invitation: sets the password and signs in.
#[utoipa::path(post, path = "/v1/auth/invitations/accept", tag = "account", request_body = InvitationAcceptance,
    responses(
        (status = 200, description = "Signed in", body = Tokens),
        (status = 400, description = "The token is invalid, expired or used", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The password is not acceptable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    Json(body): Json<InvitationAcceptance>,
) -> ApiResult<Json<Tokens>> {
    if !tokens::looks_like_token(&body.token) {
        return Err(bad_token("invitation"));
    }
    check_policy(&body.password)?;
    let hash = state.hasher.hash(&body.password).await?;
    let mut transaction = state.pool.begin().await?;
    let user = accounts::consume_email_token(&mut transaction, &body.token, EmailPurpose::Invitation).await?;
    let user = user.ok_or_else(|| bad_token("invitation"))?;
    let stored = accounts::lock_by_id(&mut transaction, user).await?.ok_or_else(|| bad_token("invitation"))?;
    if stored.user.disabled {
        return Err(forbidden("the account is disabled"));
    }
    accounts::set_password(&mut transaction, user, &hash).await?;
    accounts::mark_email_verified(&mut transaction, user).await?;
    let session = accounts::start_session(&mut transaction, user).await?;
    transaction.commit().await?;
    let user = User { email_verified: true, active: true, ..stored.user };
    Ok(Json(session_tokens(&state, user, session.session_id, session.refresh_token)?))
}
