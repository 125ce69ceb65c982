//! The harness of the integration tests: real PostgreSQL and Redis (testkit), a local auth service (JWKS and
//! the API-key verification contract), mock providers, and the chat service itself started as `main` starts
//! it, on a real TCP port.

#![allow(dead_code)]

pub mod providers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use saaschat_chat::service::{self, Options};
use saaschat_platform::config::{Config, Settings, TenantConfig};
use saaschat_platform::http::{Drained, Shutdown};
use saaschat_testkit::{Postgres, Redis};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use self::providers::{MockProvider, Wire};

pub const ISSUER: &str = "http://chat.tenant-acme.svc:8080";
pub const TENANT: &str = "acme";
/// The API key the local auth service accepts, for user `api-user`.
pub const API_KEY: &str = "sk-saaschat-test-0123456789abcdef";
/// A key given only the `models` scope.
pub const MODELS_ONLY_API_KEY: &str = "sk-saaschat-test-models-0123456789";

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// The auth service's part: a JWKS and the API-key verification endpoint (contract 3).
pub struct Auth {
    pub url: String,
    signing: SigningKey,
}

impl Auth {
    pub async fn start() -> Auth {
        let mut seed = [0u8; 32];
        fastrand::fill(&mut seed);
        let signing = SigningKey::from_bytes(&seed);
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes()),
        });
        let app = Router::new()
            .route("/.well-known/jwks.json", get(move || async move { axum::Json(json!({ "keys": [jwk] })) }))
            .route(
                "/internal/v1/api-keys/verify",
                post(|axum::Json(body): axum::Json<Value>| async move {
                    let scopes = match body["key"].as_str() {
                        Some(API_KEY) => Some(json!(["chat", "models"])),
                        Some(MODELS_ONLY_API_KEY) => Some(json!(["models"])),
                        _ => None,
                    };
                    if let Some(scopes) = scopes {
                        Ok(axum::Json(json!({
                            "userId": "api-user", "tenant": TENANT, "role": "member", "keyId": "key-1", "scopes": scopes,
                        })))
                    } else {
                        Err((StatusCode::UNAUTHORIZED, axum::Json(json!({ "type": "about:blank", "title": "Unauthorized", "status": 401 }))))
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Auth { url: format!("http://{address}"), signing }
    }

    /// An access token for `user`, a member.
    pub fn token(&self, user: &str) -> String {
        self.token_with_role(user, "member")
    }

    /// An access token for `user` with `role` (`owner`, `admin`, `member`).
    pub fn token_with_role(&self, user: &str, role: &str) -> String {
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&self.signing.to_bytes());
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let claims = json!({
            "iss": ISSUER, "aud": "saaschat", "sub": user, "tenant": TENANT, "role": role, "typ": "access",
            "iat": now, "nbf": now, "exp": now + 900, "jti": format!("t-{user}"), "sid": "s-1",
        });
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der)).expect("sign")
    }
}

/// One configured provider of the tenant.
pub struct ProviderSpec<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub base_url: String,
    pub key: &'a str,
    pub models: &'a [&'a str],
    pub max_concurrent: i64,
    pub requests_per_minute: i64,
}

pub struct Plan {
    pub requests_per_minute: i64,
    pub tokens_per_month: i64,
    pub allowed_models: Vec<String>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan { requests_per_minute: 1000, tokens_per_month: 100_000_000, allowed_models: Vec::new() }
    }
}

pub fn tenant_document(
    dir: &Path,
    auth: &Auth,
    providers: &[ProviderSpec<'_>],
    plan: &Plan,
    default_model: &str,
) -> Value {
    let providers: Vec<Value> = providers
        .iter()
        .map(|provider| {
            let key_file = dir.join(format!("{}.key", provider.name));
            std::fs::write(&key_file, provider.key).expect("key file");
            let models: Vec<Value> = provider
                .models
                .iter()
                .map(|model| json!({ "name": model, "inputPricePerMillion": "2.50", "outputPricePerMillion": "10", "contextWindow": 128000 }))
                .collect();
            json!({
                "name": provider.name, "type": provider.kind, "baseUrl": provider.base_url, "apiKeyFile": key_file,
                "limits": {
                    "requestsPerMinute": provider.requests_per_minute,
                    "maxConcurrentRequests": provider.max_concurrent,
                    "timeoutSeconds": 10,
                },
                "models": models,
            })
        })
        .collect();
    json!({
        "tenant": TENANT, "displayName": "Acme", "namespace": "tenant-acme", "url": ISSUER, "defaultModel": default_model,
        "plan": {
            "name": "pro", "tokensPerMonth": plan.tokens_per_month, "requestsPerMinute": plan.requests_per_minute,
            "seats": 10, "allowedModels": plan.allowed_models,
        },
        "providers": providers,
        "auth": { "url": auth.url, "jwksUrl": format!("{}/.well-known/jwks.json", auth.url), "issuer": ISSUER, "jwtKeyDir": "/nowhere" },
        "smtp": null, "stripe": null,
    })
}

/// Options for tests: short timeouts and backoff so failures show quickly.
pub fn test_options() -> Options {
    let mut options = Options::default();
    options.resilience.first_byte_timeout = Duration::from_secs(5);
    options.resilience.idle_timeout = Duration::from_millis(700);
    options.resilience.retry.base_delay = Duration::from_millis(20);
    options.resilience.retry.max_delay = Duration::from_millis(200);
    options.streaming.keep_alive = Duration::from_millis(150);
    options.streaming.ws_ping = Duration::from_millis(500);
    options.reload_interval = Duration::from_millis(200);
    options.http.shutdown_grace = Duration::from_secs(5);
    options
}

pub struct Chat {
    pub address: SocketAddr,
    pub url: String,
    pub config_file: PathBuf,
    pub shutdown: Shutdown,
    pub server: JoinHandle<Result<Drained, service::StartError>>,
    pub pool: sqlx::PgPool,
}

pub struct World {
    pub postgres: Postgres,
    pub redis: Redis,
    pub auth: Auth,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn new() -> World {
        World {
            postgres: Postgres::start(),
            redis: Redis::start(),
            auth: Auth::start().await,
            dir: tempfile::tempdir().expect("dir"),
        }
    }

    pub fn provider_spec<'a>(
        &self,
        name: &'a str,
        mock: &MockProvider,
        wire: Wire,
        models: &'a [&'a str],
    ) -> ProviderSpec<'a> {
        let kind = match wire {
            Wire::OpenAi => "openai",
            Wire::Anthropic => "anthropic",
            Wire::Gemini => "gemini",
        };
        ProviderSpec {
            name,
            kind,
            base_url: mock.base_url.clone(),
            key: "sk-upstream-secret-key-42",
            models,
            max_concurrent: 64,
            requests_per_minute: 100_000,
        }
    }

    pub async fn start_chat(
        &self,
        providers: &[ProviderSpec<'_>],
        plan: &Plan,
        default_model: &str,
        options: Options,
    ) -> Chat {
        let document = tenant_document(self.dir.path(), &self.auth, providers, plan, default_model);
        let config_file = self.dir.path().join("tenant.json");
        std::fs::write(&config_file, document.to_string()).expect("tenant file");
        let env = [
            ("SAASCHAT_TENANT", TENANT.to_string()),
            ("SAASCHAT_COMPONENT", "chat".to_string()),
            ("SAASCHAT_CONFIG_FILE", config_file.display().to_string()),
            ("SAASCHAT_LISTEN_ADDR", "127.0.0.1:0".to_string()),
            ("DATABASE_URL", self.postgres.url()),
            ("REDIS_URL", self.redis.url()),
        ];
        let settings =
            Settings::from_lookup(|name| env.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone()))
                .expect("settings");
        let tenant = TenantConfig::load(&config_file).expect("tenant");
        let config = Config::assemble(settings, tenant).expect("config");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shutdown = Shutdown::new();
        let grace = options.http.shutdown_grace;
        let started = service::start(config, options, &shutdown).await.expect("chat starts");
        let listener = service::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let address = listener.local_addr().expect("address");
        let server = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { started.serve(listener, &shutdown, grace).await })
        };
        let pool = sqlx::PgPool::connect(&self.postgres.url()).await.expect("pool");
        Chat { address, url: format!("http://{address}"), config_file, shutdown, server, pool }
    }
}

impl Chat {
    pub async fn create_conversation(&self, token: &str, body: Value) -> Value {
        let response = client()
            .post(format!("{}/v1/conversations", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
        response.json().await.expect("json")
    }

    pub async fn usage_rows(&self) -> Vec<(String, String, String, i64, i64, i64)> {
        sqlx::query_as("SELECT user_id, model, provider, input_tokens, output_tokens, cost_micros FROM chat.usage_events ORDER BY recorded_at")
            .fetch_all(&self.pool)
            .await
            .expect("usage rows")
    }

    /// Waits until `count` usage rows exist (they are written off the request path).
    pub async fn wait_for_usage(&self, count: usize) -> Vec<(String, String, String, i64, i64, i64)> {
        for _ in 0..100 {
            let rows = self.usage_rows().await;
            if rows.len() >= count {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {count} usage rows, found {:?}", self.usage_rows().await);
    }
}

/// One parsed SSE event: its name (if any) and data.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Splits a complete SSE body into events and counts its comments.
pub fn parse_sse(body: &str) -> (Vec<SseEvent>, usize) {
    let mut events = Vec::new();
    let mut comments = 0;
    for block in body.split("\n\n") {
        let mut event = None;
        let mut data: Option<String> = None;
        for line in block.lines() {
            if line.starts_with(':') {
                comments += 1;
            } else if let Some(name) = line.strip_prefix("event:") {
                event = Some(name.trim().to_string());
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                data = Some(match data {
                    Some(previous) => format!("{previous}\n{value}"),
                    None => value.to_string(),
                });
            }
        }
        if let Some(data) = data {
            events.push(SseEvent { event, data });
        }
    }
    (events, comments)
}

/// Reads an SSE response incrementally, for tests that act mid-stream.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> SseReader {
        SseReader { response, buffer: String::new() }
    }

    /// The next event (comments skipped); `None` at the end of the body.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut events, _) = parse_sse(&block);
                if let Some(event) = events.pop() {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("chunk in time")
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until an event named `name` and returns it.
    pub async fn until(&mut self, name: &str) -> SseEvent {
        loop {
            let event = self.next().await.unwrap_or_else(|| panic!("the stream ended before {name}"));
            if event.event.as_deref() == Some(name) {
                return event;
            }
        }
    }
}

/// Shared text buffer for capturing logs.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).to_string()
    }
}
