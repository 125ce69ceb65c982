//! API keys: each user manages their own, signed in with an access token (a key cannot make or revoke keys);
//! other services verify keys through the internal endpoint; and the JWKS.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use saaschat_platform::auth::api_keys::VerifyRequest;
use saaschat_platform::auth::{Authenticated, Credential, VerifiedKey};
use saaschat_platform::problem::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use saaschat_platform::Problem;

use super::caller_id;
use crate::api_keys::{self, ApiKey, MAX_KEYS_PER_USER, SCOPES};
use crate::error::{ApiResult, forbidden, not_found, unauthorized, unprocessable};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewApiKey {
    /// 1 to 100 characters, to recognise the key by.
    pub name: String,
    /// Must be in the future.
    pub expires_at: Option<DateTime<Utc>>,
    /// A subset of `chat`, `models`; both by default.
    pub scopes: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    /// The key. It is shown this once and cannot be retrieved again.
    pub key: String,
    #[serde(flatten)]
    pub api_key: ApiKey,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub keys: Vec<ApiKey>,
}

/// Signed-in users manage their keys with an access token, never with a key.
fn signed_in(caller: &Authenticated) -> ApiResult<Uuid> {
    if caller.credential != Credential::AccessToken {
        return Err(forbidden("API keys are managed when signed in, not with an API key"));
    }
    caller_id(caller)
}

/// The checks on a new key; pure.
pub fn validate_new_key(request: &NewApiKey, now: DateTime<Utc>) -> Result<Vec<String>, String> {
    let name_length = request.name.trim().chars().count();
    if name_length == 0 || request.name.chars().count() > 100 {
        return Err("name must have 1 to 100 characters".into());
    }
    if request.name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    if request.expires_at.is_some_and(|expires| expires <= now) {
        return Err("expiresAt must be in the future".into());
    }
    let scopes = request.scopes.clone().unwrap_or_else(|| SCOPES.iter().map(ToString::to_string).collect());
    if scopes.is_empty() {
        return Err("scopes must not be empty".into());
    }
    if let Some(unknown) = scopes.iter().find(|scope| !SCOPES.contains(&scope.as_str())) {
        return Err(format!("unknown scope {unknown:?}; allowed: {}", SCOPES.join(", ")));
    }
    let mut scopes = scopes;
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// The caller's API keys.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", security(("bearer" = [])),
    responses((status = 200, description = "The keys, newest first", body = ApiKeyList)))]
pub async fn list_keys(State(state): State<AppState>, caller: Authenticated) -> ApiResult<Json<ApiKeyList>> {
    let user = signed_in(&caller)?;
    let mut connection = state.pool.acquire().await?;
    Ok(Json(ApiKeyList { keys: api_keys::list(&mut connection, user).await? }))
}

/// Creates an API key for the OpenAI-compatible chat API.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", security(("bearer" = [])), request_body = NewApiKey,
    responses(
        (status = 201, description = "Created; the key is in the response and nowhere else", body = CreatedApiKey),
        (status = 409, description = "Too many active keys", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, expiry or scopes", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(body): Json<NewApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let user = signed_in(&caller)?;
    let scopes = validate_new_key(&body, Utc::now())
        .map_err(|reason| unprocessable("invalid-api-key", "The API key request is not valid", reason))?;
    let mut transaction = state.pool.begin().await?;
    crate::accounts::lock_by_id(&mut transaction, user).await?.ok_or_else(|| unauthorized("no such user"))?;
    if api_keys::active_count(&mut transaction, user).await? >= MAX_KEYS_PER_USER {
        return Err(crate::error::conflict(
            "too-many-api-keys",
            "Too many API keys",
            format!("at most {MAX_KEYS_PER_USER} active keys; revoke one first"),
        ));
    }
    let (key, api_key) = api_keys::create(&mut transaction, user, body.name.trim(), &scopes, body.expires_at).await?;
    transaction.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { key, api_key })))
}

/// Revokes one of the caller's keys.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "The caller has no such key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let user = signed_in(&caller)?;
    let mut connection = state.pool.acquire().await?;
    if api_keys::revoke(&mut connection, user, id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(not_found()) }
}

/// For the other services: who owns this key? (`saaschat_platform::auth::HttpApiKeyVerifier` calls it.)
#[utoipa::path(post, path = "/internal/v1/api-keys/verify", tag = "internal",
    request_body(content = Object, description = r#"{"key": "sk-saaschat-…"}"#),
    responses(
        (status = 200, description = r#"The key is valid: {"userId", "tenant", "role", "keyId", "scopes"}"#, body = Object),
        (status = 401, description = "The key is not valid", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify_key(
    State(state): State<AppState>,
    Json(body): Json<VerifyRequest>,
) -> ApiResult<Json<VerifiedKey>> {
    let mut connection = state.pool.acquire().await?;
    match api_keys::verify(&mut connection, &body.key, &state.tenant.name).await? {
        Some(verified) => Ok(Json(verified)),
        None => Err(unauthorized("the API key is not valid")),
    }
}

/// The public keys that verify access tokens: the current key and, right after a rotation, the previous one.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "A JSON Web Key Set (RFC 7517)", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let jwks: Arc<serde_json::Value> = state.keys.jwks();
    ([(CACHE_CONTROL, "public, max-age=300")], axum::Json((*jwks).clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, scopes: Option<Vec<&str>>, expires_at: Option<DateTime<Utc>>) -> NewApiKey {
        NewApiKey { name: name.into(), expires_at, scopes: scopes.map(|s| s.into_iter().map(String::from).collect()) }
    }

    #[test]
    fn new_keys_are_checked() {
        let now = Utc::now();
        assert_eq!(validate_new_key(&request("ci", None, None), now), Ok(vec!["chat".into(), "models".into()]));
        assert_eq!(
            validate_new_key(&request("ci", Some(vec!["models", "chat", "chat"]), None), now).map(|s| s.len()),
            Ok(2)
        );
        assert!(validate_new_key(&request("", None, None), now).is_err());
        assert!(validate_new_key(&request("   ", None, None), now).is_err());
        assert!(validate_new_key(&request(&"n".repeat(101), None, None), now).is_err());
        assert!(validate_new_key(&request("a\nb", None, None), now).is_err());
        assert!(validate_new_key(&request("ci", Some(vec![]), None), now).is_err());
        assert!(validate_new_key(&request("ci", Some(vec!["admin"]), None), now).is_err(), "no wider scope");
        assert!(validate_new_key(&request("ci", None, Some(now - chrono::TimeDelta::seconds(1))), now).is_err());
        assert!(validate_new_key(&request("ci", None, Some(now + chrono::TimeDelta::days(30))), now).is_ok());
    }
}
