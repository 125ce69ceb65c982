//! Access-token verification (OWASP ASVS 5 V9): the signature is verified before any claim is read, the
//! algorithm is pinned to EdDSA (a token saying `none`, `HS256` or anything else is refused before a key is
//! looked up), keys come only from the configured JWKS (`jku`, `x5u` and `jwk` headers are never read), and
//! `exp`, `nbf`, `iss`, `aud`, the token type and the tenant are all checked.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

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
pub struct JwtVerifier {
    keys: KeyCache,
    settings: JwtSettings,
    validation: Validation,
}

impl JwtVerifier {
    pub fn new(keys: KeyCache, settings: JwtSettings) -> JwtVerifier {
        let validation = settings.validation();
        JwtVerifier { keys, settings, validation }
    }

    pub async fn verify(&self, token: &str) -> Result<Authenticated, AuthError> {
        let kid = key_id(token)?;
        let key = self.keys.key(&kid).await?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &self.validation).map_err(from_jsonwebtoken)?;
        check_claims(&data.claims, &self.settings)?;
        let claims = data.claims;
        Ok(Authenticated {
            user_id: claims.sub,
            tenant: claims.tenant,
            role: claims.role,
            token_id: claims.jti,
            session_id: claims.sid,
            credential: Credential::AccessToken,
        })
    }
}
