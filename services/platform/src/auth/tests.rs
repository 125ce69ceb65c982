//! Specifications of token and credential checks, with Ed25519 keys generated here.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::WWW_AUTHENTICATE;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::jwks::FetchFuture;
use super::*;
use crate::problem::read_problem;

const ISSUER: &str = "http://chat.tenant-acme.svc:8080";
const HOUR: Duration = Duration::from_secs(3600);

struct TestKey {
    kid: String,
    signing: SigningKey,
}

impl TestKey {
    fn generate(kid: &str) -> TestKey {
        let mut seed = [0u8; 32];
        fastrand::fill(&mut seed);
        TestKey { kid: kid.into(), signing: SigningKey::from_bytes(&seed) }
    }

    /// PKCS#8 v1 of an Ed25519 private key: the fixed prefix, then the 32-byte seed.
    fn encoding_key(&self) -> EncodingKey {
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&self.signing.to_bytes());
        EncodingKey::from_ed_der(&der)
    }

    fn public_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(self.public_bytes()),
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding_key()).expect("sign")
    }
}

/// A JWKS endpoint stand-in that counts its fetches.
struct FixedJwks {
    keys: Mutex<Vec<Value>>,
    fetches: AtomicUsize,
    fail: bool,
}

impl FixedJwks {
    fn new(keys: &[&TestKey]) -> Arc<FixedJwks> {
        Arc::new(FixedJwks {
            keys: Mutex::new(keys.iter().map(|key| key.jwk()).collect()),
            fetches: AtomicUsize::new(0),
            fail: false,
        })
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn add(&self, key: &TestKey) {
        self.keys.lock().expect("lock").push(key.jwk());
    }
}

impl JwksSource for FixedJwks {
    fn fetch(&self) -> FetchFuture<'_> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let result = if self.fail {
            Err("connection refused".to_string())
        } else {
            let keys = self.keys.lock().expect("lock").clone();
            Ok(serde_json::from_value(json!({ "keys": keys })).expect("jwks"))
        };
        Box::pin(async move { result })
    }
}

fn authenticator(jwks: &Arc<FixedJwks>, min_refetch_interval: Duration) -> Authenticator {
    let keys = KeyCache::new(jwks.clone(), min_refetch_interval);
    Authenticator::new(JwtVerifier::new(keys, JwtSettings::new(ISSUER, "acme")))
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER, "aud": "saaschat", "sub": "user-1", "tenant": "acme", "role": "admin", "typ": "access",
        "iat": now, "nbf": now, "exp": now + 900, "jti": "token-1", "sid": "session-1",
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (name, value) in changes.as_object().expect("object") {
        if value.is_null() {
            claims.as_object_mut().expect("object").remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn bearer(credential: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {credential}")).expect("header"));
    headers
}

async fn check(authenticator: &Authenticator, token: &str) -> Result<Authenticated, AuthError> {
    authenticator.authenticate(&bearer(token)).await
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

#[tokio::test]
async fn a_valid_access_token_authenticates_its_user() {
    let key = TestKey::generate("key-1");
    let auth = authenticator(&FixedJwks::new(&[&key]), HOUR);
    let user = check(&auth, &key.sign(&claims())).await.expect("valid");
    assert_eq!(
        user,
        Authenticated {
            user_id: "user-1".into(),
            tenant: "acme".into(),
            role: Role::Admin,
            token_id: Some("token-1".into()),
            session_id: Some("session-1".into()),
            credential: Credential::AccessToken,
        }
    );
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let key = TestKey::generate("key-1");
    let auth = authenticator(&FixedJwks::new(&[&key]), HOUR);
    let token = key.sign(&with(claims(), json!({ "iat": now() - 7200, "nbf": now() - 7200, "exp": now() - 3600 })));
    assert_eq!(check(&auth, &token).await, Err(AuthError::Expired));
}

#[tokio::test]
async fn tokens_are_refused_before_their_nbf() {
    let key = TestKey::generate("key-1");
    let auth = authenticator(&FixedJwks::new(&[&key]), HOUR);
    let token = key.sign(&with(claims(), json!({ "nbf": now() + 3600, "exp": now() + 7200 })));
    assert_eq!(check(&auth, &token).await, Err(AuthError::NotYetValid));
}

#[tokio::test]
async fn clock_skew_within_the_leeway_is_tolerated() {
    let key = TestKey::generate("key-1");
    let auth = authenticator(&FixedJwks::new(&[&key]), HOUR);
    let token = key.sign(&with(claims(), json!({ "nbf": now() + 10 })));
    assert!(check(&auth, &token).await.is_ok());
}

#[tokio::test]
async fn the_issuer_audience_and_tenant_must_match() {
    let key = TestKey::generate("key-1");
    let auth = authenticator(&FixedJwks::new(&[&key]), HOUR);
    let wrong_issuer = key.sign(&with(claims(), json!({ "iss": "http://chat.tenant-globex.svc:8080" })));
    assert_eq!(check(&auth, &wrong_issuer).await, Err(AuthError::WrongIssuer));
    let wrong_audience = key.sign(&with(claims(), json!({ "aud": "billing-internal" })));
    assert_eq!(check(&auth, &wrong_audience).await, Err(AuthError::WrongAudience));
    let other_tenant = key.sign(&with(claims(), json!({ "tenant": "globex" })));
    assert_eq!(check(&auth, &other_tenant).await, Err(AuthError::WrongTenant));
}

#[tokio::test]
async fn required_claims_must_be_present() {
    let key = TestKey::generate("key-1");
    let auth = authenticator(&FixedJwks::new(&[&key]), HOUR);
    for claim in ["exp", "iss", "aud"] {
        let token = key.sign(&with(claims(), json!({ claim: null })));
        assert_eq!(check(&auth, &token).await, Err(AuthError::MissingClaim(claim.into())), "{claim}");
    }
    let no_subject = key.sign(&with(claims(), json!({ "sub": null })));
    assert_eq!(check(&auth, &no_subject).await, Err(AuthError::Malformed));
    let no_type = key.sign(&with(claims(), json!({ "typ": null })));
    assert_eq!(check(&auth, &no_type).await, Err(AuthError::Malformed));
}

#[tokio::test]
async fn refresh_tokens_are_not_access_tokens() {
    let key = TestKey::generate("key-1");
    let auth = authenticator(&FixedJwks::new(&[&key]), HOUR);
    let token = key.sign(&with(claims(), json!({ "typ": "refresh" })));
    assert_eq!(check(&auth, &token).await, Err(AuthError::WrongTokenType));
}

#[tokio::test]
async fn alg_none_is_refused_before_any_key_lookup() {
    let key = TestKey::generate("key-1");
    let jwks = FixedJwks::new(&[&key]);
    let auth = authenticator(&jwks, HOUR);
    for alg in ["none", "None", "NONE"] {
        let token = unsigned(json!({ "alg": alg, "kid": "key-1", "typ": "JWT" }), &claims());
        assert_eq!(check(&auth, &token).await, Err(AuthError::AlgorithmNotAllowed(alg.into())));
    }
    assert_eq!(jwks.fetches(), 0);
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let key = TestKey::generate("key-1");
    let jwks = FixedJwks::new(&[&key]);
    let auth = authenticator(&jwks, HOUR);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("key-1".into());
    let forged = encode(&header, &claims(), &EncodingKey::from_secret(&key.public_bytes())).expect("sign");
    assert_eq!(check(&auth, &forged).await, Err(AuthError::AlgorithmNotAllowed("HS256".into())));
    // The same with the public key as the JWK's base64 text, as some libraries use it.
    let text = URL_SAFE_NO_PAD.encode(key.public_bytes());
    let forged = encode(&header, &claims(), &EncodingKey::from_secret(text.as_bytes())).expect("sign");
    assert_eq!(check(&auth, &forged).await, Err(AuthError::AlgorithmNotAllowed("HS256".into())));
}

#[tokio::test]
async fn keys_offered_in_the_token_header_are_ignored() {
    let key = TestKey::generate("key-1");
    let attacker = TestKey::generate("key-1");
    let jwks = FixedJwks::new(&[&key]);
    let auth = authenticator(&jwks, HOUR);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("key-1".into());
    header.jwk = Some(serde_json::from_value(attacker.jwk()).expect("jwk"));
    header.jku = Some("https://attacker.example/jwks.json".into());
    header.x5u = Some("https://attacker.example/cert.pem".into());
    let forged = encode(&header, &claims(), &attacker.encoding_key()).expect("sign");
    assert_eq!(check(&auth, &forged).await, Err(AuthError::BadSignature));
    assert_eq!(jwks.fetches(), 1, "only the configured JWKS was fetched");
}

#[tokio::test]
async fn a_tampered_payload_fails_the_signature() {
    let key = TestKey::generate("key-1");
    let auth = authenticator(&FixedJwks::new(&[&key]), HOUR);
    let token = key.sign(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let owner = URL_SAFE_NO_PAD.encode(with(claims(), json!({ "role": "owner" })).to_string());
    parts[1] = &owner;
    assert_eq!(check(&auth, &parts.join(".")).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_refetch_then_fails() {
    let key = TestKey::generate("key-1");
    let jwks = FixedJwks::new(&[&key]);
    let auth = authenticator(&jwks, Duration::ZERO);
    assert!(check(&auth, &key.sign(&claims())).await.is_ok());
    assert_eq!(jwks.fetches(), 1);
    let stranger = TestKey::generate("key-unknown");
    assert_eq!(check(&auth, &stranger.sign(&claims())).await, Err(AuthError::UnknownKey));
    assert_eq!(jwks.fetches(), 2);
    // Known keys are served from the cache.
    assert!(check(&auth, &key.sign(&claims())).await.is_ok());
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_by_the_refetch() {
    let old = TestKey::generate("key-1");
    let jwks = FixedJwks::new(&[&old]);
    let auth = authenticator(&jwks, Duration::ZERO);
    assert!(check(&auth, &old.sign(&claims())).await.is_ok());
    let new = TestKey::generate("key-2");
    jwks.add(&new);
    assert!(check(&auth, &new.sign(&claims())).await.is_ok());
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn refetches_for_unknown_kids_are_rate_limited() {
    let key = TestKey::generate("key-1");
    let jwks = FixedJwks::new(&[&key]);
    let auth = authenticator(&jwks, HOUR);
    assert!(check(&auth, &key.sign(&claims())).await.is_ok());
    for kid in ["made-up-1", "made-up-2", "made-up-3"] {
        let stranger = TestKey::generate(kid);
        assert_eq!(check(&auth, &stranger.sign(&claims())).await, Err(AuthError::UnknownKey));
    }
    assert_eq!(jwks.fetches(), 1, "no refetch within the interval");
}

#[tokio::test]
async fn an_unreachable_jwks_is_a_503_not_a_401() {
    let key = TestKey::generate("key-1");
    let jwks = Arc::new(FixedJwks { keys: Mutex::new(vec![]), fetches: AtomicUsize::new(0), fail: true });
    let auth = authenticator(&jwks, HOUR);
    let error = check(&auth, &key.sign(&claims())).await.expect_err("no keys");
    assert_eq!(error, AuthError::KeysUnavailable);
    assert_eq!(Problem::from(error).status, 503);
}

#[test]
fn only_a_single_bearer_authorization_header_is_read() {
    assert_eq!(bearer_credential(&HeaderMap::new()), Err(AuthError::Missing));
    assert_eq!(bearer_credential(&bearer("abc.def.ghi")), Ok("abc.def.ghi"));
    let mut lower = HeaderMap::new();
    lower.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
    assert_eq!(bearer_credential(&lower), Ok("abc"));
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "Bearer  abc", "Token abc"] {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
        assert_eq!(bearer_credential(&headers), Err(AuthError::NotBearer), "{value}");
    }
    let mut two = bearer("first");
    two.append(AUTHORIZATION, HeaderValue::from_static("Bearer second"));
    assert_eq!(bearer_credential(&two), Err(AuthError::Ambiguous));
}

#[test]
fn a_websocket_credential_comes_from_the_header_or_one_bearer_subprotocol() {
    let protocols = |value: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(value));
        headers
    };
    assert_eq!(websocket_credential(&bearer("abc.def.ghi")), Ok("abc.def.ghi"));
    assert_eq!(websocket_credential(&protocols("saaschat.v1, bearer.abc.def.ghi")), Ok("abc.def.ghi"));
    assert_eq!(websocket_credential(&protocols("bearer.sk-saaschat-x1")), Ok("sk-saaschat-x1"));
    assert_eq!(websocket_credential(&protocols("saaschat.v1")), Err(AuthError::Missing));
    assert_eq!(websocket_credential(&protocols("bearer.a, bearer.b")), Err(AuthError::Ambiguous));
    assert_eq!(websocket_credential(&protocols("saaschat.v1, bearer.")), Err(AuthError::NotBearer));
    assert_eq!(websocket_credential(&HeaderMap::new()), Err(AuthError::Missing));
    // The header wins, and is held to its own rules.
    let mut both = protocols("bearer.from-protocol");
    both.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
    assert_eq!(websocket_credential(&both), Err(AuthError::NotBearer));
}

#[test]
fn api_keys_are_held_to_their_scopes_and_access_tokens_are_not() {
    let caller = |credential| Authenticated {
        user_id: "u1".into(),
        tenant: "acme".into(),
        role: Role::Member,
        token_id: None,
        session_id: None,
        credential,
    };
    let token = caller(Credential::AccessToken);
    assert_eq!(token.require_scope("chat"), Ok(()));
    let models_only = caller(Credential::ApiKey { key_id: "k1".into(), scopes: vec!["models".into()] });
    assert_eq!(models_only.require_scope("models"), Ok(()));
    let refused = models_only.require_scope("chat").expect_err("no chat scope");
    let problem = Problem::from(refused);
    assert_eq!(problem.status, 403);
    assert_eq!(problem.extensions.get("scope"), Some(&json!("chat")));
}

struct OneKey;

impl ApiKeyVerifier for OneKey {
    fn verify<'a>(&'a self, key: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move {
            if key != "sk-saaschat-k1-secretpart" {
                return Err(AuthError::InvalidApiKey);
            }
            Ok(Authenticated {
                user_id: "user-2".into(),
                tenant: "acme".into(),
                role: Role::Member,
                token_id: None,
                session_id: None,
                credential: Credential::ApiKey { key_id: "k1".into(), scopes: vec!["chat".into()] },
            })
        })
    }
}

#[tokio::test]
async fn api_keys_go_to_the_api_key_verifier() {
    let key = TestKey::generate("key-1");
    let jwks = FixedJwks::new(&[&key]);
    let without = authenticator(&jwks, HOUR);
    assert_eq!(check(&without, "sk-saaschat-k1-secretpart").await, Err(AuthError::ApiKeysNotAccepted));
    let with_keys = authenticator(&jwks, HOUR).with_api_keys(OneKey);
    let user = check(&with_keys, "sk-saaschat-k1-secretpart").await.expect("valid key");
    assert_eq!(user.credential, Credential::ApiKey { key_id: "k1".into(), scopes: vec!["chat".into()] });
    assert_eq!(check(&with_keys, "sk-saaschat-k1-wrong").await, Err(AuthError::InvalidApiKey));
    assert_eq!(jwks.fetches(), 0, "API keys never reach the JWT path");
}

#[tokio::test]
async fn the_extractor_refuses_with_a_401_problem_and_reads_no_other_header() {
    let key = TestKey::generate("key-1");
    let auth = authenticator(&FixedJwks::new(&[&key]), HOUR);
    let app = Router::new().route("/me", get(|user: Authenticated| async move { user.user_id })).with_state(auth);
    let token = key.sign(&claims());

    let ok = Request::get("/me").header(AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).expect("req");
    let response = app.clone().oneshot(ok).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);

    for (name, value) in [("x-api-key", token.clone()), ("cookie", format!("access_token={token}"))] {
        let request = Request::get("/me").header(name, value).body(Body::empty()).expect("req");
        let response = app.clone().oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
        let problem = read_problem(response.into_body()).await.expect("problem");
        assert_eq!(problem.detail.as_deref(), Some("no credential: send Authorization: Bearer <token>"));
    }

    let expired = key.sign(&with(claims(), json!({ "exp": now() - 3600 })));
    let request = Request::get("/me").header(AUTHORIZATION, format!("Bearer {expired}")).body(Body::empty());
    let response = app.oneshot(request.expect("req")).await.expect("response");
    let problem = read_problem(response.into_body()).await.expect("problem");
    assert_eq!(problem.detail.as_deref(), Some("the token has expired"));
    assert!(!serde_json::to_string(&problem).expect("json").contains(&expired));
}

#[test]
fn roles_are_ordered_by_privilege() {
    assert!(Role::Owner.at_least(Role::Admin));
    assert!(Role::Admin.at_least(Role::Admin));
    assert!(!Role::Member.at_least(Role::Admin));
    assert_eq!(serde_json::to_value(Role::Owner).expect("json"), json!("owner"));
}
