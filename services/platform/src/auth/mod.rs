//! Authentication for every service: the [`Authenticated`] extractor reads the one credential header,
//! `Authorization: Bearer <credential>`, and accepts either an access token issued by the auth service (verified
//! locally, see [`jwt`]) or an API key (`sk-saaschat-…`), which it hands to an [`ApiKeyVerifier`] (implemented by
//! the auth service). The one exception is a WebSocket upgrade, because browsers cannot set headers on one: there
//! the credential may travel as a `bearer.<credential>` subprotocol ([`websocket_credential`]). No cookie or
//! query parameter is ever read as a credential, and credentials never appear in errors or logs.
//!
//! An access token acts for its user in full; an API key only within its scopes ([`Authenticated::require_scope`]).

pub mod api_keys;
pub mod jwks;
pub mod jwt;
pub mod revocation;

use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

pub use api_keys::{HttpApiKeyVerifier, VerifiedKey};
pub use jwks::{HttpJwks, JwksSource, KeyCache};
pub use jwt::{AccessClaims, JwtSettings, JwtVerifier, Role};
pub use revocation::{SessionRevocations, revoke_session};

use crate::config::Config;
use crate::problem::Problem;

/// The prefix that tells an API key from an access token.
pub const API_KEY_PREFIX: &str = "sk-saaschat-";

/// Why a credential was refused. The messages never contain the credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential: send Authorization: Bearer <token>")]
    Missing,
    #[error("more than one Authorization header")]
    Ambiguous,
    #[error("the Authorization header is not of the form Bearer <token>")]
    NotBearer,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("the token has no key id")]
    MissingKeyId,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the signing keys cannot be fetched")]
    KeysUnavailable,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the token is meant for someone else")]
    WrongAudience,
    #[error("the token is for another tenant")]
    WrongTenant,
    #[error("the token is not an access token")]
    WrongTokenType,
    #[error("the token lacks the {0} claim")]
    MissingClaim(String),
    #[error("API keys are not accepted here")]
    ApiKeysNotAccepted,
    #[error("the API key is not valid")]
    InvalidApiKey,
    #[error("the session has ended; sign in again")]
    SessionEnded,
    #[error("the API key lacks the {0:?} scope")]
    MissingScope(&'static str),
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Problem {
        match error {
            AuthError::KeysUnavailable => Problem::typed(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth-unavailable",
                "Credentials cannot be checked right now",
            )
            .with_detail(error.to_string()),
            AuthError::MissingScope(scope) => {
                Problem::typed(StatusCode::FORBIDDEN, "insufficient-scope", "The API key does not allow this")
                    .with_detail(error.to_string())
                    .with_extension("scope", scope)
            }
            error => Problem::unauthorized(error.to_string()),
        }
    }
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub user_id: String,
    pub tenant: String,
    pub role: Role,
    /// The access token's `jti`, if it has one.
    pub token_id: Option<String>,
    /// The session the access token belongs to, if it says.
    pub session_id: Option<String>,
    pub credential: Credential,
}

impl Authenticated {
    /// Refuses an API key that was not given `scope` when it was created; access tokens pass.
    pub fn require_scope(&self, scope: &'static str) -> Result<(), AuthError> {
        match &self.credential {
            Credential::ApiKey { scopes, .. } if !scopes.iter().any(|s| s == scope) => {
                Err(AuthError::MissingScope(scope))
            }
            _ => Ok(()),
        }
    }
}

/// A scope an API key must have been given for a route; access tokens have every scope.
pub trait Scope: Send + Sync + 'static {
    const NAME: &'static str;
}

/// Chatting: conversations, their streams and `POST /v1/chat/completions`.
pub struct ChatScope;

impl Scope for ChatScope {
    const NAME: &'static str = "chat";
}

/// Listing the models: `GET /v1/models`.
pub struct ModelsScope;

impl Scope for ModelsScope {
    const NAME: &'static str = "models";
}

/// Every scope an API key can be given.
pub const SCOPES: [&str; 2] = [ChatScope::NAME, ModelsScope::NAME];

/// The caller, as [`Authenticated`], refused with 403 when an API key lacks the scope `S`.
pub struct Scoped<S>(Authenticated, PhantomData<S>);

impl<S> Scoped<S> {
    pub fn into_inner(self) -> Authenticated {
        self.0
    }
}

impl<S> Deref for Scoped<S> {
    type Target = Authenticated;

    fn deref(&self) -> &Authenticated {
        &self.0
    }
}

impl<S, T> FromRequestParts<T> for Scoped<S>
where
    S: Scope,
    Authenticator: FromRef<T>,
    T: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &T) -> Result<Self, Self::Rejection> {
        let caller = Authenticated::from_request_parts(parts, state).await?;
        caller.require_scope(S::NAME)?;
        Ok(Scoped(caller, PhantomData))
    }
}

/// How the caller authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    /// An API key; `key_id` is the key's public identifier, never the key.
    ApiKey {
        key_id: String,
        scopes: Vec<String>,
    },
}

pub type VerifyFuture<'a> = Pin<Box<dyn Future<Output = Result<Authenticated, AuthError>> + Send + 'a>>;

/// Verifies API keys (`sk-saaschat-…`). The auth service implements it against its key store; other services
/// call the auth service. The key passed in has the prefix and must be treated as a secret.
pub trait ApiKeyVerifier: Send + Sync + 'static {
    fn verify<'a>(&'a self, key: &'a str) -> VerifyFuture<'a>;
}

/// The credential of a request: the value of its single `Authorization: Bearer` header.
pub fn bearer_credential(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Ambiguous);
    }
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, credential) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() || credential.contains(char::is_whitespace) {
        return Err(AuthError::NotBearer);
    }
    Ok(credential)
}

/// The subprotocol prefix that carries a credential on a WebSocket upgrade: a browser opens
/// `new WebSocket(url, ["<app protocol>", "bearer.<credential>"])`, and the server answers with the app protocol.
pub const WEBSOCKET_BEARER_PREFIX: &str = "bearer.";

/// The credential of a WebSocket upgrade: the `Authorization` header if there is one, else the single
/// `bearer.<credential>` entry of `Sec-WebSocket-Protocol`.
pub fn websocket_credential(headers: &HeaderMap) -> Result<&str, AuthError> {
    if headers.contains_key(AUTHORIZATION) {
        return bearer_credential(headers);
    }
    let mut credentials = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|protocol| protocol.trim().strip_prefix(WEBSOCKET_BEARER_PREFIX));
    let credential = credentials.next().ok_or(AuthError::Missing)?;
    if credentials.next().is_some() {
        return Err(AuthError::Ambiguous);
    }
    if credential.is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(credential)
}

/// The problem for a refused credential, logged with the reason (never the credential).
fn refused(error: AuthError) -> Problem {
    tracing::info!(reason = %error, "credential refused");
    Problem::from(error)
}

/// Checks credentials; put one in the router state (or make it `FromRef` of the state) to use [`Authenticated`].
#[derive(Clone)]
pub struct Authenticator {
    jwt: Arc<JwtVerifier>,
    api_keys: Option<Arc<dyn ApiKeyVerifier>>,
    revocations: Option<SessionRevocations>,
}

impl Authenticator {
    pub fn new(jwt: JwtVerifier) -> Authenticator {
        Authenticator { jwt: Arc::new(jwt), api_keys: None, revocations: None }
    }

    /// The authenticator for a service: keys from the tenant's JWKS URL, issuer from the tenant configuration,
    /// and a refetch on an unknown key id at most every `min_refetch_interval`.
    pub fn from_config(config: &Config, min_refetch_interval: Duration) -> Result<Authenticator, reqwest::Error> {
        let source = HttpJwks::new(config.tenant.auth.jwks_url.clone(), Duration::from_secs(5))?;
        let keys = KeyCache::new(Arc::new(source), min_refetch_interval);
        let settings = JwtSettings::new(config.tenant.auth.issuer.clone(), config.settings.tenant.clone());
        Ok(Authenticator::new(JwtVerifier::new(keys, settings)))
    }

    pub fn with_api_keys(mut self, verifier: impl ApiKeyVerifier) -> Authenticator {
        self.api_keys = Some(Arc::new(verifier));
        self
    }

    /// Refuses access tokens of sessions the auth service ended (see [`revocation`]).
    pub fn with_session_revocations(mut self, revocations: SessionRevocations) -> Authenticator {
        self.revocations = Some(revocations);
        self
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Authenticated, AuthError> {
        self.verify(bearer_credential(headers)?).await
    }

    /// Authenticates a WebSocket upgrade (see [`websocket_credential`]) for a route that needs the scope `S`.
    pub async fn authenticate_websocket<S: Scope>(&self, headers: &HeaderMap) -> Result<Scoped<S>, Problem> {
        let credential = websocket_credential(headers).map_err(refused)?;
        let caller = self.verify(credential).await.map_err(refused)?;
        caller.require_scope(S::NAME)?;
        Ok(Scoped(caller, PhantomData))
    }

    async fn verify(&self, credential: &str) -> Result<Authenticated, AuthError> {
        if credential.starts_with(API_KEY_PREFIX) {
            let verifier = self.api_keys.as_ref().ok_or(AuthError::ApiKeysNotAccepted)?;
            return verifier.verify(credential).await;
        }
        let authenticated = self.jwt.verify(credential).await?;
        if let Some(revocations) = &self.revocations {
            revocations.check(&authenticated).await?;
        }
        Ok(authenticated)
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Authenticator::from_ref(state).authenticate(&parts.headers).await.map_err(refused)
    }
}

#[cfg(test)]
mod tests;
