//! Access-token verification (OWASP ASVS 5 V9): the signature is verified before any claim is read, the
//! algorithm is pinned to EdDSA (a token saying `none`, `HS256` or anything else is refused before a key is
//! looked up), keys come only from the configured JWKS (`jku`, `x5u` and `jwk` headers are never read), and
//! `exp`, `nbf`, `iss`, `aud`, the token type and the tenant are all checked.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::jwks::KeyCache;
use super::{AuthError, Authenticated, Credential};

/// The only signing algorithm: the operator generates Ed25519 keys for the auth service.
pub const ALGORITHM: &str = "EdDSA";
/// The `typ` claim of access tokens; refresh tokens carry `refresh` and are refused here.
pub const ACCESS_TOKEN_TYPE: &str = "access";
/// The audience of access tokens: the tenant's saaschat API (the issuer already names the tenant).
pub const AUDIENCE: &str = "saaschat";
/// Allowed clock skew between the auth service and this one, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// A user's role in the tenant, from least to most privileged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    /// Whether this role may do what `required` may.
    pub fn at_least(self, required: Role) -> bool {
        self >= required
    }
}

/// The claims of an access token (besides `iss`, `aud`, `exp`, `nbf`, which the validation checks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    pub tenant: String,
    pub role: Role,
    /// The token type: `access`.
    pub typ: String,
    /// The token id, for revocation lists.
    #[serde(default)]
    pub jti: Option<String>,
    /// The session (refresh-token family) the token belongs to.
    #[serde(default)]
    pub sid: Option<String>,
}

/// What a token must say to be accepted.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    pub tenant: String,
    pub leeway_seconds: u64,
}

impl JwtSettings {
    pub fn new(issuer: impl Into<String>, tenant: impl Into<String>) -> JwtSettings {
        JwtSettings {
            issuer: issuer.into(),
            audience: AUDIENCE.into(),
            tenant: tenant.into(),
            leeway_seconds: LEEWAY_SECONDS,
        }
    }

    /// The validation jsonwebtoken runs after the signature check. It requires only `exp` by default: the
    /// rest is configured here.
    pub fn validation(&self) -> Validation {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = self.leeway_seconds;
        validation
    }
}

/// Reads the key id from the token's header after checking that the header names EdDSA. The header is read
/// raw, so that an algorithm jsonwebtoken does not know (`none`) is refused for what it is. Nothing else of the
/// header is used.
pub fn key_id(token: &str) -> Result<String, AuthError> {
    let encoded = token.split('.').next().ok_or(AuthError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| AuthError::Malformed)?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    match header.get("alg").and_then(serde_json::Value::as_str) {
        Some(ALGORITHM) => {}
        Some(other) => return Err(AuthError::AlgorithmNotAllowed(other.chars().take(16).collect())),
        None => return Err(AuthError::Malformed),
    }
    match header.get("kid").and_then(serde_json::Value::as_str) {
        Some(kid) if !kid.is_empty() => Ok(kid.to_string()),
        _ => Err(AuthError::MissingKeyId),
    }
}

/// Checks the claims jsonwebtoken does not know about.
pub fn check_claims(claims: &AccessClaims, settings: &JwtSettings) -> Result<(), AuthError> {
    if claims.typ != ACCESS_TOKEN_TYPE {
        return Err(AuthError::WrongTokenType);
    }
    if claims.tenant != settings.tenant {
        return Err(AuthError::WrongTenant);
    }
    if claims.sub.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(())
}

fn from_jsonwebtoken(error: jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed("?".into()),
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        _ => AuthError::Malformed,
    }
}

/// Verifies access tokens with the keys of a [`KeyCache`].
///
/// A client sends the same token with every request for up to 15 minutes, so a token that passed every check
/// is remembered (under the SHA-256 of the whole token, which no other token can share) until it expires or its
/// signing key leaves the key set: the signature is checked once per token, not once per request.
pub struct JwtVerifier {
    keys: KeyCache,
    settings: JwtSettings,
    validation: Validation,
    verified: RwLock<HashMap<[u8; 32], VerifiedToken>>,
}

/// A token that passed every check, until `expires_at` (seconds since the epoch, leeway included).
struct VerifiedToken {
    authenticated: Authenticated,
    kid: String,
    expires_at: u64,
}

/// The claims read when a token is first verified: the access claims and the expiry, to know how long the
/// result may be remembered.
#[derive(Deserialize)]
struct ExpiringClaims {
    #[serde(flatten)]
    claims: AccessClaims,
    /// Optional here so that a missing `exp` is reported by the validation as the missing claim it is.
    exp: Option<u64>,
}

/// At most this many verified tokens are remembered; past it, expired ones are dropped, and if that is not
/// enough the memory starts over.
const VERIFIED_CAPACITY: usize = 50_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

impl JwtVerifier {
    pub fn new(keys: KeyCache, settings: JwtSettings) -> JwtVerifier {
        let validation = settings.validation();
        JwtVerifier { keys, settings, validation, verified: RwLock::default() }
    }

    pub async fn verify(&self, token: &str) -> Result<Authenticated, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(authenticated) = self.remembered(&digest, unix_now()) {
            return Ok(authenticated);
        }
        let kid = key_id(token)?;
        let key = self.keys.key(&kid).await?;
        let data = jsonwebtoken::decode::<ExpiringClaims>(token, &key, &self.validation).map_err(from_jsonwebtoken)?;
        check_claims(&data.claims.claims, &self.settings)?;
        let expiry = data.claims.exp;
        let claims = data.claims.claims;
        let authenticated = Authenticated {
            user_id: claims.sub,
            tenant: claims.tenant,
            role: claims.role,
            token_id: claims.jti,
            session_id: claims.sid,
            credential: Credential::AccessToken,
        };
        if let Some(expiry) = expiry {
            let expires_at = expiry.saturating_add(self.settings.leeway_seconds);
            self.remember(digest, VerifiedToken { authenticated: authenticated.clone(), kid, expires_at });
        }
        Ok(authenticated)
    }

    fn remembered(&self, digest: &[u8; 32], now: u64) -> Option<Authenticated> {
        let verified = self.verified.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = verified.get(digest)?;
        (now <= entry.expires_at && self.keys.contains(&entry.kid)).then(|| entry.authenticated.clone())
    }

    fn remember(&self, digest: [u8; 32], token: VerifiedToken) {
        let mut verified = self.verified.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            let now = unix_now();
            verified.retain(|_, entry| now <= entry.expires_at);
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(digest, token);
    }
}
