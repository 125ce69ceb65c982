//! The billing service over real HTTP against real PostgreSQL and Redis, stripe-mock behind a recording proxy,
//! and a local JWKS endpoint with a key generated here.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use prometheus::Registry;
use saaschat_billing::app::{self, Parts};
use saaschat_billing::settings::{BillingSettings, StripeCredentials};
use saaschat_billing::stripe::StripeClient;
use saaschat_billing::webhook::signature::sign;
use saaschat_platform::Secret;
use saaschat_platform::auth::{Authenticator, HttpJwks, JwtSettings, JwtVerifier, KeyCache};
use saaschat_platform::config::TenantConfig;
use saaschat_platform::db::{self, DbSettings};
use saaschat_platform::http::{HttpSettings, RouterBuilder, Shutdown, serve};
use saaschat_platform::redis::RedisSettings;
use saaschat_testkit::stripe_mock::StripeMock;
use saaschat_testkit::{Postgres, Redis};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub const TENANT: &str = "acme";
pub const ISSUER: &str = "http://auth.tenant-acme.svc:8080";
/// Two webhook secrets, as during a rotation.
pub const OLD_SECRET: &str = "whsec_old_0123456789";
pub const NEW_SECRET: &str = "whsec_new_9876543210";
/// The customer every stripe-mock subscription and invoice fixture belongs to (in its `-beta` fixtures).
pub const FIXTURE_CUSTOMER: &str = "cus_NNNslJKODLsLoG";

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

pub fn migrations(service: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(service)
}

async fn serve_router(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// One request that reached Stripe (through the recorder).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub form: Vec<(String, String)>,
}

impl Recorded {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// A proxy in front of stripe-mock that records every request and, when told to, answers like a failing Stripe
/// or shows an object in a later state than stripe-mock's fixture.
#[derive(Clone)]
pub struct Recorder {
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub failing: Arc<AtomicBool>,
    overlays: Arc<Mutex<HashMap<String, Value>>>,
    upstream: String,
    http: reqwest::Client,
}

impl Recorder {
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn requests_to(&self, method: &str, path_prefix: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == method && r.path.starts_with(path_prefix)).collect()
    }

    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// From now on, a successful answer for `path` has these top-level fields replaced. stripe-mock keeps no
    /// state, so this is how a test shows an object that has moved on (a Checkout Session the customer
    /// completed); every other field is still stripe-mock's own.
    pub fn overlay(&self, path: &str, fields: Value) {
        self.overlays.lock().expect("lock").insert(path.to_string(), fields);
    }
}

fn with_overlay(body: String, overlay: Option<Value>) -> String {
    let Some(Value::Object(fields)) = overlay else { return body };
    let mut object: Value = serde_json::from_str(&body).expect("stripe-mock answers JSON");
    let target = object.as_object_mut().expect("stripe-mock answers an object");
    target.extend(fields);
    object.to_string()
}

async fn forward(
    State(recorder): State<Recorder>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let form = url::form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    recorder.requests.lock().expect("lock").push(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        idempotency_key,
        form,
    });
    if recorder.failing.load(Ordering::SeqCst) {
        let error = json!({"error": {"type": "api_error", "message": "Stripe is having a bad day"}});
        return (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "application/json")], error.to_string());
    }
    let mut request = recorder.http.request(method, format!("{}{}", recorder.upstream, uri));
    for name in ["authorization", "content-type", "idempotency-key"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let response = request.body(body).send().await.expect("stripe-mock answers");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let body = response.text().await.expect("body");
    let overlay = status.is_success().then(|| recorder.overlays.lock().expect("lock").get(uri.path()).cloned());
    (status, [("content-type", "application/json")], with_overlay(body, overlay.flatten()))
}

pub struct TestKey {
    signing: SigningKey,
}

impl TestKey {
    fn generate() -> TestKey {
        let mut seed = [0u8; 32];
        fastrand::fill(&mut seed);
        TestKey { signing: SigningKey::from_bytes(&seed) }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "test-key",
            "x": URL_SAFE_NO_PAD.encode(self.signing.verifying_key().to_bytes()),
        })
    }

    /// An access token as the auth service issues it.
    pub fn token(&self, role: &str) -> String {
        // PKCS#8 v1 of an Ed25519 private key: the fixed prefix, then the 32-byte seed.
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&self.signing.to_bytes());
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("test-key".into());
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": ISSUER, "aud": "saaschat", "sub": format!("user-{role}"), "tenant": TENANT, "role": role,
            "typ": "access", "iat": now, "nbf": now, "exp": now + 900,
        });
        encode(&header, &claims, &EncodingKey::from_ed_der(&der)).expect("sign")
    }
}

pub struct Options {
    pub stripe: bool,
    pub workers: usize,
    /// The service's own usage reporter; off where a test drives reporters itself.
    pub usage_reporting: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { stripe: true, workers: 2, usage_reporting: true }
    }
}

pub struct Billing {
    pub pool: PgPool,
    pub address: SocketAddr,
    pub recorder: Recorder,
    pub stripe_url: String,
    pub redis_url: String,
    pub key: TestKey,
    pub shutdown: Shutdown,
    pub http: reqwest::Client,
    _postgres: Postgres,
    _redis: Redis,
    _stripe: StripeMock,
    _dir: tempfile::TempDir,
}

impl Billing {
    pub async fn start() -> Billing {
        Billing::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Billing {
        let postgres = Postgres::start();
        let redis = Redis::start();
        let stripe = StripeMock::start();
        let http = client();
        let recorder = Recorder {
            requests: Arc::default(),
            failing: Arc::default(),
            overlays: Arc::default(),
            upstream: stripe.url(),
            http: http.clone(),
        };
        let recorder_address = serve_router(Router::new().fallback(forward).with_state(recorder.clone())).await;

        let key = TestKey::generate();
        let jwks = json!({ "keys": [key.jwk()] });
        let jwks_address = serve_router(Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        ))
        .await;

        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("secretKey"), "sk_test_123\n").expect("key");
        std::fs::write(dir.path().join("webhookSecret"), format!("{OLD_SECRET}\n{NEW_SECRET}\n")).expect("secret");
        let mut document = json!({
            "tenant": TENANT, "displayName": "Acme", "namespace": "tenant-acme", "url": "https://chat.acme.example",
            "defaultModel": "gpt-4o-mini",
            "plan": {"name": "free", "tokensPerMonth": 1000000, "requestsPerMinute": 60, "seats": 5},
            "auth": {"url": "http://auth:8080", "jwksUrl": format!("http://{jwks_address}/.well-known/jwks.json"),
                     "issuer": ISSUER, "jwtKeyDir": "/var/run/secrets/saaschat/jwt"},
        });
        if options.stripe {
            document["stripe"] = json!({
                "prices": {"pro": "price_pro", "enterprise": "price_enterprise"},
                "credentialsDir": dir.path(),
            });
        }
        let tenant = TenantConfig::parse(&document.to_string(), Path::new("tenant.json")).expect("tenant");

        let database_url = Secret::new(postgres.url());
        let pool = db::connect(&database_url, &DbSettings::for_service("billing")).await.expect("connect");
        db::migrate(&pool, &migrations("billing"), "billing").await.expect("billing migrations");
        let chat = db::connect(&database_url, &DbSettings::for_service("chat")).await.expect("connect chat");
        db::migrate(&chat, &migrations("chat"), "chat").await.expect("chat migrations");
        chat.close().await;
        let redis_connection = saaschat_platform::redis::connect(&Secret::new(redis.url()), &RedisSettings::default())
            .await
            .expect("redis");

        let jwks_source = HttpJwks::new(format!("http://{jwks_address}/.well-known/jwks.json"), Duration::from_secs(5))
            .expect("jwks");
        let keys = KeyCache::new(Arc::new(jwks_source), Duration::from_secs(1));
        let authenticator = Authenticator::new(JwtVerifier::new(keys, JwtSettings::new(ISSUER, TENANT)));
        let settings = BillingSettings {
            stripe_api_base: format!("http://{recorder_address}").parse().expect("url"),
            workers: options.workers,
            usage_reporting: options.usage_reporting,
            ..BillingSettings::from_lookup(|_| None).expect("defaults")
        };
        let credentials = options.stripe.then(|| StripeCredentials::load(dir.path()).expect("credentials"));
        let shutdown = Shutdown::new();
        let registry = Registry::new();
        let parts = Parts {
            tenant,
            settings,
            credentials,
            pool: pool.clone(),
            redis: redis_connection,
            authenticator,
            kubernetes: None,
            registry: registry.clone(),
        };
        let (api, _tasks) = app::start(parts, &shutdown.signal()).expect("start");
        let router = RouterBuilder::new(HttpSettings::default(), shutdown.signal())
            .registry(registry)
            .build(api)
            .expect("router");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(serve(listener, router, shutdown.signal(), Duration::from_secs(5)));
        Billing {
            pool,
            address,
            recorder,
            stripe_url: format!("http://{recorder_address}"),
            redis_url: redis.url(),
            key,
            shutdown,
            http,
            _postgres: postgres,
            _redis: redis,
            _stripe: stripe,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A Stripe client like the service's, through the recorder.
    pub fn stripe_client(&self) -> StripeClient {
        StripeClient::new(
            self.stripe_url.parse().expect("url"),
            &Secret::new("sk_test_123".into()),
            Duration::from_secs(10),
        )
        .expect("client")
    }

    /// Posts a webhook delivery with the given signature header.
    pub async fn deliver(&self, body: &str, signature: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/billing/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.to_string())
            .send()
            .await
            .expect("webhook")
    }

    /// Posts an event signed now with the new secret, as Stripe would after the rotation.
    pub async fn deliver_signed(&self, body: &str) -> reqwest::Response {
        self.deliver(body, &signature(body, now(), &[NEW_SECRET])).await
    }

    /// Waits until the worker has processed the event; its outcome.
    pub async fn processed(&self, event_id: &str) -> String {
        let started = Instant::now();
        loop {
            let outcome: Option<Option<String>> =
                sqlx::query_scalar("SELECT outcome FROM stripe_events WHERE id = $1 AND processed_at IS NOT NULL")
                    .bind(event_id)
                    .fetch_optional(&self.pool)
                    .await
                    .expect("query");
            if let Some(outcome) = outcome {
                return outcome.unwrap_or_default();
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{event_id} was not processed in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes `customer` the tenant's Stripe customer, as a completed checkout would have.
    pub async fn set_customer(&self, customer: &str, email: Option<&str>) {
        sqlx::query(
            "INSERT INTO account (tenant, customer_id, billing_email) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant) DO UPDATE SET customer_id = $2, billing_email = $3",
        )
        .bind(TENANT)
        .bind(customer)
        .bind(email)
        .execute(&self.pool)
        .await
        .expect("account");
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.expect("count")
    }
}

impl Drop for Billing {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A `Stripe-Signature` header for `body` at `timestamp`, one `v1` per secret.
pub fn signature(body: &str, timestamp: i64, secrets: &[&str]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(&format!(",v1={}", sign(secret, timestamp, body.as_bytes())));
    }
    header
}

/// A Stripe event of `event_type` about the object `object`.
pub fn event(id: &str, event_type: &str, object: Value) -> String {
    json!({
        "id": id, "object": "event", "api_version": "2026-08-26.dahlia", "created": now(), "livemode": false,
        "type": event_type, "data": {"object": object}, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
    })
    .to_string()
}
