//! API keys checked by asking the auth service, for every service but auth itself (which checks its own store).
//!
//! The contract: `POST {auth}/internal/v1/api-keys/verify` with `{"key": "sk-saaschat-…"}` answers 200 with the
//! key's owner ([`VerifiedKey`]) or 401. Answers are cached for [`HttpApiKeyVerifier::CACHE_TTL`] under the key's
//! SHA-256, never the key, so a burst of requests with one key costs one call; a revoked key therefore keeps
//! working for at most that long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ApiKeyVerifier, AuthError, Authenticated, Credential, Role, VerifyFuture};
use crate::config::Config;

/// The path of the verification endpoint on the auth service.
pub const VERIFY_PATH: &str = "/internal/v1/api-keys/verify";

/// The request body of the verification endpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub key: String,
}

/// The owner of a valid key, as the auth service answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedKey {
    pub user_id: String,
    pub tenant: String,
    pub role: Role,
    pub key_id: String,
    pub scopes: Vec<String>,
}

impl From<VerifiedKey> for Authenticated {
    fn from(key: VerifiedKey) -> Authenticated {
        Authenticated {
            user_id: key.user_id,
            tenant: key.tenant,
            role: key.role,
            token_id: None,
            session_id: None,
            credential: Credential::ApiKey { key_id: key.key_id, scopes: key.scopes },
        }
    }
}

type KeyDigest = [u8; 32];

/// Verifies keys against the auth service, with a short cache of valid answers.
#[derive(Clone)]
pub struct HttpApiKeyVerifier {
    client: reqwest::Client,
    url: String,
    tenant: String,
    cache: Arc<Mutex<HashMap<KeyDigest, (VerifiedKey, Instant)>>>,
}

impl HttpApiKeyVerifier {
    pub const CACHE_TTL: Duration = Duration::from_secs(30);
    /// Past this many cached keys the cache starts over, which bounds its memory.
    const CACHE_CAPACITY: usize = 10_000;

    /// `auth_url` is the auth service's base URL; `tenant` the tenant whose keys are accepted.
    pub fn new(auth_url: &str, tenant: &str, timeout: Duration) -> Result<HttpApiKeyVerifier, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(HttpApiKeyVerifier {
            client,
            url: format!("{}{VERIFY_PATH}", auth_url.trim_end_matches('/')),
            tenant: tenant.to_string(),
            cache: Arc::default(),
        })
    }

    pub fn from_config(config: &Config) -> Result<HttpApiKeyVerifier, reqwest::Error> {
        HttpApiKeyVerifier::new(&config.tenant.auth.url, &config.settings.tenant, Duration::from_secs(5))
    }

    fn cached(&self, digest: &KeyDigest) -> Option<VerifiedKey> {
        let cache = self.cache.lock().ok()?;
        cache.get(digest).filter(|(_, at)| at.elapsed() < Self::CACHE_TTL).map(|(key, _)| key.clone())
    }

    fn remember(&self, digest: KeyDigest, key: &VerifiedKey) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= Self::CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(digest, (key.clone(), Instant::now()));
        }
    }

    async fn ask(&self, key: &str) -> Result<VerifiedKey, AuthError> {
        let response = self.client.post(&self.url).json(&VerifyRequest { key: key.to_string() }).send().await.map_err(
            |error| {
                tracing::warn!(error = %error.without_url(), "auth service unreachable for API key verification");
                AuthError::KeysUnavailable
            },
        )?;
        match response.status() {
            status if status.is_success() => response.json().await.map_err(|error| {
                tracing::warn!(%error, "auth service answered API key verification with an unexpected body");
                AuthError::KeysUnavailable
            }),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::NOT_FOUND => Err(AuthError::InvalidApiKey),
            status => {
                tracing::warn!(%status, "auth service failed API key verification");
                Err(AuthError::KeysUnavailable)
            }
        }
    }
}

impl ApiKeyVerifier for HttpApiKeyVerifier {
    fn verify<'a>(&'a self, key: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move {
            let digest: KeyDigest = Sha256::digest(key.as_bytes()).into();
            let verified = match self.cached(&digest) {
                Some(verified) => verified,
                None => {
                    let verified = self.ask(key).await?;
                    self.remember(digest, &verified);
                    verified
                }
            };
            if verified.tenant != self.tenant {
                return Err(AuthError::WrongTenant);
            }
            Ok(verified.into())
        })
    }
}
