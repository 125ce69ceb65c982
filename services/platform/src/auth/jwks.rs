//! The auth service's signing keys, fetched from its JWKS endpoint and cached. A token with an unknown `kid`
//! (the auth service rotated its key) triggers a refetch, at most once per `min_refetch_interval`, so that
//! tokens with made-up key ids cannot turn every request into a call to the auth service.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};

use super::AuthError;

pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<JwkSet, String>> + Send + 'a>>;

/// Where the key set comes from: the auth service over HTTP, or a fixed set in tests.
pub trait JwksSource: Send + Sync + 'static {
    fn fetch(&self) -> FetchFuture<'_>;
}

/// The auth service's JWKS endpoint. Redirects are not followed: keys come only from the configured URL.
pub struct HttpJwks {
    client: reqwest::Client,
    url: String,
}

impl HttpJwks {
    pub fn new(url: impl Into<String>, timeout: Duration) -> Result<HttpJwks, reqwest::Error> {
        // reqwest is built without a default crypto provider for rustls; use ring, which the workspace builds.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("saaschat-platform/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpJwks { client, url: url.into() })
    }
}

impl JwksSource for HttpJwks {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let response = self.client.get(&self.url).send().await.map_err(|error| error.to_string())?;
            let response = response.error_for_status().map_err(|error| error.to_string())?;
            response.json::<JwkSet>().await.map_err(|error| error.to_string())
        })
    }
}

/// Whether a refetch is allowed now.
pub fn may_refetch(last_fetch: Option<Instant>, now: Instant, min_interval: Duration) -> bool {
    last_fetch.is_none_or(|last| now.saturating_duration_since(last) >= min_interval)
}

/// Whether a JWK is one this platform verifies with: an Ed25519 signing key with a key id. Keys of any other
/// type (RSA, EC, symmetric `oct`) are skipped so that no other algorithm can ever be used.
pub fn is_usable(jwk: &Jwk) -> bool {
    let ed25519 =
        matches!(&jwk.algorithm, AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519);
    let algorithm_ok = matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::EdDSA));
    let use_ok = matches!(jwk.common.public_key_use, None | Some(PublicKeyUse::Signature));
    ed25519 && algorithm_ok && use_ok && jwk.common.key_id.as_deref().is_some_and(|kid| !kid.is_empty())
}

/// The usable keys of a set, by key id.
pub fn usable_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter(|jwk| is_usable(jwk))
        .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
        .collect()
}

/// The cache of verification keys.
pub struct KeyCache {
    source: Arc<dyn JwksSource>,
    min_refetch_interval: Duration,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// When the last fetch started; held across the fetch so concurrent misses wait for one fetch.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyCache {
    pub fn new(source: Arc<dyn JwksSource>, min_refetch_interval: Duration) -> KeyCache {
        KeyCache {
            source,
            min_refetch_interval,
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(kid).cloned()
    }

    /// Whether the key with id `kid` is in the current set (without fetching).
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains_key(kid)
    }

    /// The key with id `kid`, refetching the set once if it is unknown and the rate limit allows.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let now = Instant::now();
        if !may_refetch(*last_fetch, now, self.min_refetch_interval) {
            return Err(AuthError::UnknownKey);
        }
        *last_fetch = Some(now);
        match self.source.fetch().await {
            Ok(set) => {
                let keys = usable_keys(&set);
                tracing::info!(keys = keys.len(), "fetched the auth service's signing keys");
                // Replace, not merge: a key the auth service withdrew stops verifying.
                *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot fetch the auth service's signing keys");
                return Err(AuthError::KeysUnavailable);
            }
        }
        self.cached(kid).ok_or(AuthError::UnknownKey)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(keys: serde_json::Value) -> JwkSet {
        serde_json::from_value(json!({ "keys": keys })).expect("jwks")
    }

    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn refetches_are_rate_limited() {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        assert!(may_refetch(None, now, minute));
        assert!(!may_refetch(Some(now), now + Duration::from_secs(59), minute));
        assert!(may_refetch(Some(now), now + minute, minute));
    }

    #[test]
    fn only_ed25519_signing_keys_with_a_kid_are_used() {
        let keys = usable_keys(&set(json!([
            {"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "good", "alg": "EdDSA", "use": "sig"},
            {"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "minimal"},
            {"kty": "OKP", "crv": "Ed25519", "x": X},
            {"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "encryption", "use": "enc"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {"kty": "RSA", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw", "e": "AQAB", "kid": "rsa"},
        ])));
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, ["good", "minimal"]);
    }
}
