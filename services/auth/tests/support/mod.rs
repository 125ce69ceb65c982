//! The auth service as production runs it (`service::start`), on a free port, against its own PostgreSQL and
//! Redis, with a signing key written where the operator's Secret would be mounted.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use ring::signature::{Ed25519KeyPair, KeyPair};
use saaschat_auth::service::{self, AuthOptions};
use saaschat_platform::config::{Config, Settings, TenantConfig};
use saaschat_platform::http::{Drained, Shutdown};
use saaschat_testkit::{Postgres, Redis};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinHandle;

pub const TENANT: &str = "acme";
pub const ISSUER: &str = "http://auth.tenant-acme.svc:8080";
pub const PASSWORD: &str = "a long and quiet river";

/// Writes a key pair as the operator's `jwt-signing-key` Secret holds it.
pub fn write_signing_key(dir: &Path, kid: &str) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("generate");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
    let spki_prefix = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    let spki = [&spki_prefix[..], pair.public_key().as_ref()].concat();
    // Written to a temporary name and renamed, as the kubelet swaps a Secret volume atomically.
    let staging = dir.join("..staging");
    std::fs::create_dir_all(&staging).expect("staging");
    for (name, content) in [
        ("private.pem", pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()))),
        ("public.pem", pem::encode(&pem::Pem::new("PUBLIC KEY", spki))),
        ("kid", kid.to_string()),
        ("algorithm", "EdDSA".to_string()),
    ] {
        std::fs::write(staging.join(name), content).expect("write key file");
        std::fs::rename(staging.join(name), dir.join(name)).expect("rename key file");
    }
}

pub struct Options {
    pub seats: i64,
    pub trusted_proxy_hops: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { seats: 50, trusted_proxy_hops: 0 }
    }
}

pub struct AuthServer {
    pub base: String,
    pub postgres: Postgres,
    pub redis: Redis,
    pub pool: sqlx::PgPool,
    pub key_dir: TempDir,
    pub client: reqwest::Client,
    shutdown: Shutdown,
    task: Option<JoinHandle<Drained>>,
}

impl AuthServer {
    pub async fn start() -> AuthServer {
        AuthServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> AuthServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let postgres = Postgres::start();
        let redis = Redis::start();
        let key_dir = tempfile::tempdir().expect("key dir");
        write_signing_key(key_dir.path(), "key-1");
        let environment = [
            ("SAASCHAT_TENANT", TENANT.to_string()),
            ("SAASCHAT_COMPONENT", "auth".to_string()),
            ("DATABASE_URL", postgres.url()),
            ("REDIS_URL", redis.url()),
            ("SAASCHAT_LISTEN_ADDR", "127.0.0.1:0".to_string()),
        ];
        let settings = Settings::from_lookup(|name| {
            environment.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone())
        })
        .expect("settings");
        let tenant = json!({
            "tenant": TENANT, "displayName": "Acme Corp", "namespace": "tenant-acme",
            "url": "https://chat.acme.example", "defaultModel": "gpt-4o-mini",
            "plan": {"name": "pro", "tokensPerMonth": 1000, "requestsPerMinute": 10, "seats": options.seats, "allowedModels": []},
            "providers": [],
            "auth": {"url": "http://auth:8080", "jwksUrl": "http://auth:8080/.well-known/jwks.json",
                     "issuer": ISSUER, "jwtKeyDir": key_dir.path()},
            "smtp": null, "stripe": null
        });
        let tenant = TenantConfig::parse(&tenant.to_string(), Path::new("tenant.json")).expect("tenant config");
        let config = Config::assemble(settings, tenant).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = Shutdown::new();
        let mut auth_options = AuthOptions { trusted_proxy_hops: options.trusted_proxy_hops, ..AuthOptions::default() };
        auth_options.key_refresh_interval = Duration::from_millis(200);
        auth_options.relay.poll_interval = Duration::from_millis(200);
        let signal = shutdown.signal();
        let task = tokio::spawn(async move {
            service::start(listener, &config, auth_options, signal).await.expect("auth service")
        });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        let pool = sqlx::PgPool::connect(&postgres.url()).await.expect("test pool");
        let server = AuthServer { base, postgres, redis, pool, key_dir, client, shutdown, task: Some(task) };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        for _ in 0..300 {
            if let Ok(response) = self.client.get(format!("{}/readyz", self.base)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the auth service did not become ready");
    }

    pub async fn stop(mut self) -> Drained {
        self.shutdown.trigger();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("stops").expect("task")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a JSON request; returns the status and the body (JSON, or `null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        read(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, None, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Signs up; returns the token response.
    pub async fn sign_up(&self, email: &str) -> Value {
        let (status, body) = self.post("/v1/auth/signup", json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post("/v1/auth/signin", json!({"email": email, "password": password})).await
    }

    /// The token in the latest outbox email of `template` to `to` (the last query parameter of its link).
    pub async fn emailed_token(&self, to: &str, template: &str) -> String {
        let data: Value = sqlx::query_scalar(
            "SELECT data FROM auth.outbox WHERE recipient = $1 AND template = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(to)
        .bind(template)
        .fetch_one(&self.pool)
        .await
        .expect("an email in the outbox");
        let url = ["verifyUrl", "resetUrl", "acceptUrl"]
            .iter()
            .find_map(|field| data[field].as_str())
            .expect("a link")
            .to_string();
        url.rsplit_once("token=").expect("a token").1.to_string()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.expect("count")
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|value| value.to_str().ok()).map(String::from);
    let bytes = response.bytes().await.expect("body");
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "error without a problem body: {status}");
    }
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
    (status, body)
}

/// POSTs `size` bytes of JSON-looking body over a raw connection, reading the answer while still writing: a
/// server that refuses the body early (413) answers and closes, which would fail an ordinary client with a
/// broken pipe before it reads the answer. Returns the status and the parsed body.
pub async fn post_oversized(base: &str, path: &str, size: usize) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    let writing = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            let length = chunk.len().min(size - sent);
            if writer.write_all(&chunk[..length]).await.is_err() {
                return;
            }
            sent += length;
        }
    });
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let response = loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break None,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
        if let Some(parsed) = parse_response(&received) {
            break Some(parsed);
        }
    };
    writing.abort();
    response.expect("an answer before the connection closed")
}

fn parse_response(bytes: &[u8]) -> Option<(StatusCode, Value)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase().strip_prefix("content-length:").map(|value| value.trim().to_string())
        })?
        .parse()
        .ok()?;
    if body.len() < length {
        return None;
    }
    assert!(head.to_ascii_lowercase().contains("content-type: application/problem+json"), "{head}");
    Some((StatusCode::from_u16(status).ok()?, serde_json::from_str(&body[..length]).ok()?))
}
