//! The signing key pair from the operator's `jwt-signing-key` Secret (files `private.pem`, `public.pem`, `kid`,
//! `algorithm` in the mounted directory), access-token signing, and the JWKS.
//!
//! Rotation logs nobody out: every key this service signs with is remembered in `signing_keys`, and the JWKS
//! publishes the current key plus the previous one for as long as tokens it signed can still be valid (the
//! access-token lifetime plus the verifiers' leeway), and no longer, because a key is usually rotated away for a
//! reason.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use saaschat_platform::auth::jwt::{ACCESS_TOKEN_TYPE, ALGORITHM, AUDIENCE, LEEWAY_SECONDS};
use saaschat_platform::auth::{AccessClaims, Role};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

/// How long an access token is valid.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow it.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing algorithm {0:?} is not supported (the operator generates EdDSA keys)")]
    Algorithm(String),
    #[error("{file} is not a valid Ed25519 key: {reason}")]
    Invalid { file: &'static str, reason: String },
    #[error("the key id must be 1 to 64 URL-safe characters")]
    KeyId,
    #[error("signing keys cannot be recorded: {0}")]
    Database(#[from] sqlx::Error),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// One key pair.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub public_key_pem: String,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Signs claims with this key.
    pub fn sign(&self, header: &Header, claims: &impl Serialize) -> Result<String, KeyError> {
        Ok(jsonwebtoken::encode(header, claims, &self.encoding)?)
    }

    /// Reads the key pair from the mounted Secret directory.
    pub fn load(dir: &Path) -> Result<SigningKey, KeyError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| KeyError::Read { path, source })
        };
        let algorithm = read("algorithm")?;
        SigningKey::from_parts(
            read("private.pem")?.as_str(),
            &read("public.pem")?,
            read("kid")?.trim(),
            algorithm.trim(),
        )
    }

    pub fn from_parts(private_pem: &str, public_pem: &str, kid: &str, algorithm: &str) -> Result<SigningKey, KeyError> {
        if algorithm != ALGORITHM {
            return Err(KeyError::Algorithm(algorithm.to_string()));
        }
        if kid.is_empty() || kid.len() > 64 || !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(KeyError::KeyId);
        }
        let public = public_key_bytes(public_pem)?;
        let invalid = |reason: &str| KeyError::Invalid { file: "private.pem", reason: reason.to_string() };
        let private = pem::parse(private_pem).map_err(|error| invalid(&error.to_string()))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(private.contents())
            .map_err(|_| invalid("not a PKCS#8 Ed25519 private key"))?;
        if pair.public_key().as_ref() != public.as_slice() {
            return Err(invalid("it does not match public.pem"));
        }
        let encoding = EncodingKey::from_ed_der(private.contents());
        Ok(SigningKey { kid: kid.to_string(), public_key_pem: public_pem.to_string(), encoding })
    }
}

/// The 32 bytes of an Ed25519 public key in PEM (SubjectPublicKeyInfo).
fn public_key_bytes(public_pem: &str) -> Result<[u8; 32], KeyError> {
    let invalid = |reason: &str| KeyError::Invalid { file: "public.pem", reason: reason.to_string() };
    let parsed = pem::parse(public_pem).map_err(|error| invalid(&error.to_string()))?;
    let der = parsed.contents();
    let key = der.strip_prefix(&ED25519_SPKI_PREFIX[..]).ok_or_else(|| invalid("not an Ed25519 public key"))?;
    key.try_into().map_err(|_| invalid("the key is not 32 bytes"))
}

/// The JWK of a public key.
pub fn jwk(kid: &str, public_pem: &str) -> Result<Value, KeyError> {
    let x = URL_SAFE_NO_PAD.encode(public_key_bytes(public_pem)?);
    Ok(json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig" }))
}

/// The key ids whose public keys the JWKS publishes: the current one, and the previous one while tokens it signed
/// may still be accepted. `known` is every recorded key with when it was last used.
pub fn published_kids(current: &str, known: &[(String, DateTime<Utc>)], now: DateTime<Utc>) -> Vec<String> {
    let validity = ACCESS_TOKEN_TTL + Duration::from_secs(LEEWAY_SECONDS);
    let previous =
        known.iter().filter(|(kid, _)| kid != current).max_by_key(|(_, last_used)| *last_used).filter(
            |(_, last_used)| now.signed_duration_since(*last_used).to_std().map_or(true, |age| age <= validity),
        );
    std::iter::once(current.to_string()).chain(previous.map(|(kid, _)| kid.clone())).collect()
}

/// The claims this service puts in an access token.
#[derive(Serialize)]
struct SignedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    #[serde(flatten)]
    claims: &'a AccessClaims,
}

/// The live signing key and JWKS, reloaded when the mounted Secret changes.
#[derive(Clone)]
pub struct KeyStore {
    dir: PathBuf,
    pool: PgPool,
    issuer: String,
    current: Arc<RwLock<Arc<SigningKey>>>,
    jwks: Arc<RwLock<Arc<Value>>>,
}

/// A freshly issued access token.
pub struct IssuedAccessToken {
    pub token: String,
    pub expires_in: u64,
}

impl KeyStore {
    /// Loads the key from `dir`, records it, and builds the JWKS.
    pub async fn open(dir: &Path, pool: PgPool, issuer: &str) -> Result<KeyStore, KeyError> {
        let key = SigningKey::load(dir)?;
        let store = KeyStore {
            dir: dir.to_path_buf(),
            pool,
            issuer: issuer.to_string(),
            current: Arc::new(RwLock::new(Arc::new(key))),
            jwks: Arc::new(RwLock::new(Arc::new(json!({ "keys": [] })))),
        };
        store.refresh().await?;
        Ok(store)
    }

    fn current(&self) -> Arc<SigningKey> {
        self.current.read().map(|key| Arc::clone(&key)).unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    pub fn jwks(&self) -> Arc<Value> {
        self.jwks.read().map(|jwks| Arc::clone(&jwks)).unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// Re-reads the mounted key (picking up a rotation), records it as used now, and rebuilds the JWKS.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let loaded = SigningKey::load(&self.dir)?;
        if loaded.kid != self.current().kid {
            tracing::info!(kid = %loaded.kid, previous = %self.current().kid, "signing key rotated");
            if let Ok(mut current) = self.current.write() {
                *current = Arc::new(loaded);
            }
        }
        let key = self.current();
        sqlx::query(
            "INSERT INTO signing_keys (kid, public_key_pem) VALUES ($1, $2) \
             ON CONFLICT (kid) DO UPDATE SET last_used_at = now()",
        )
        .bind(&key.kid)
        .bind(&key.public_key_pem)
        .execute(&self.pool)
        .await?;
        let known: Vec<(String, String, DateTime<Utc>)> =
            sqlx::query_as("SELECT kid, public_key_pem, last_used_at FROM signing_keys").fetch_all(&self.pool).await?;
        let ages: Vec<(String, DateTime<Utc>)> = known.iter().map(|(kid, _, used)| (kid.clone(), *used)).collect();
        let mut keys = Vec::new();
        for kid in published_kids(&key.kid, &ages, Utc::now()) {
            if let Some((_, pem, _)) = known.iter().find(|(known_kid, _, _)| *known_kid == kid) {
                keys.push(jwk(&kid, pem)?);
            }
        }
        if let Ok(mut jwks) = self.jwks.write() {
            *jwks = Arc::new(json!({ "keys": keys }));
        }
        Ok(())
    }

    /// Refreshes every `interval` until the shutdown; a failed refresh keeps the last good key.
    pub async fn watch(self, interval: Duration, shutdown: saaschat_platform::http::ShutdownSignal) {
        loop {
            tokio::select! {
                () = shutdown.clone().triggered() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "signing key not refreshed; keeping the current one");
            }
        }
    }

    /// Signs an access token for a user's session.
    pub fn issue(
        &self,
        user_id: &str,
        tenant: &str,
        role: Role,
        session_id: &str,
    ) -> Result<IssuedAccessToken, KeyError> {
        let key = self.current();
        let now = Utc::now().timestamp();
        let ttl = ACCESS_TOKEN_TTL.as_secs();
        let claims = AccessClaims {
            sub: user_id.to_string(),
            tenant: tenant.to_string(),
            role,
            typ: ACCESS_TOKEN_TYPE.to_string(),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            sid: Some(session_id.to_string()),
        };
        let signed = SignedClaims {
            iss: &self.issuer,
            aud: AUDIENCE,
            iat: now,
            nbf: now,
            exp: now.saturating_add_unsigned(ttl),
            claims: &claims,
        };
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let token = key.sign(&header, &signed)?;
        Ok(IssuedAccessToken { token, expires_in: ttl })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    /// A new key pair as the operator writes it: PKCS#8 and SubjectPublicKeyInfo PEM.
    pub fn generated_pair() -> (String, String) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("generate");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
        let spki = [&ED25519_SPKI_PREFIX[..], pair.public_key().as_ref()].concat();
        (
            pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec())),
            pem::encode(&pem::Pem::new("PUBLIC KEY", spki)),
        )
    }

    #[test]
    fn the_jwk_carries_the_raw_public_key() {
        let (_, public) = generated_pair();
        let jwk = jwk("k1", &public).expect("jwk");
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["x"].as_str().map(str::len), Some(43), "32 bytes, base64url");
    }

    #[test]
    fn only_matching_ed25519_pairs_with_a_sane_kid_are_accepted() {
        let (private, public) = generated_pair();
        let (other_private, _) = generated_pair();
        assert!(SigningKey::from_parts(&private, &public, "k1", "EdDSA").is_ok());
        assert!(matches!(SigningKey::from_parts(&private, &public, "k1", "HS256"), Err(KeyError::Algorithm(_))));
        assert!(matches!(SigningKey::from_parts(&private, &public, "../etc", "EdDSA"), Err(KeyError::KeyId)));
        assert!(matches!(SigningKey::from_parts(&private, &public, "", "EdDSA"), Err(KeyError::KeyId)));
        assert!(matches!(
            SigningKey::from_parts(&private, "not a pem", "k1", "EdDSA"),
            Err(KeyError::Invalid { file: "public.pem", .. })
        ));
        assert!(matches!(
            SigningKey::from_parts(&public, &public, "k1", "EdDSA"),
            Err(KeyError::Invalid { file: "private.pem", .. })
        ));
        assert!(matches!(
            SigningKey::from_parts(&other_private, &public, "k1", "EdDSA"),
            Err(KeyError::Invalid { file: "private.pem", .. })
        ));
    }

    #[test]
    fn the_previous_key_is_published_only_while_its_tokens_can_be_valid() {
        let now = Utc::now();
        let just_rotated = vec![("new".to_string(), now), ("old".to_string(), now - TimeDelta::minutes(1))];
        assert_eq!(published_kids("new", &just_rotated, now), ["new", "old"]);
        let long_ago = vec![("new".to_string(), now), ("old".to_string(), now - TimeDelta::minutes(16))];
        assert_eq!(published_kids("new", &long_ago, now), ["new"]);
        let three = vec![
            ("new".to_string(), now),
            ("older".to_string(), now - TimeDelta::minutes(10)),
            ("old".to_string(), now - TimeDelta::minutes(2)),
        ];
        assert_eq!(published_kids("new", &three, now), ["new", "old"], "only the most recent previous key");
        assert_eq!(published_kids("new", &[], now), ["new"]);
    }
}
