//! What the email worker's integration tests share: the SMTP sink (mailpit) and its HTTP API, a tenant file that
//! points at it, the worker in-process or as the built binary, the stream, and a TCP proxy that can hold SMTP
//! traffic still.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use saaschat_email_worker::settings::{self as knobs, WorkerSettings};
use saaschat_email_worker::{RunError, run_with_listener};
use saaschat_platform::Secret;
use saaschat_platform::config::{Config, Settings, TenantConfig};
use saaschat_platform::email::{CONSUMER_GROUP, DEAD_LETTER_STREAM, EmailContent, EmailRequest, STREAM};
use saaschat_platform::http::Shutdown;
use saaschat_platform::redis::RedisSettings;
use saaschat_testkit::smtp::Mailpit;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const FROM: &str = "Acme Chat <no-reply@acme.example>";

pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Address {
    pub address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Summary {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "MessageID")]
    pub message_id: String,
    pub to: Vec<Address>,
    pub subject: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Detail {
    pub text: String,
    #[serde(rename = "HTML")]
    pub html: String,
}

#[derive(Deserialize)]
struct Page {
    total: usize,
    messages: Vec<Summary>,
}

/// mailpit and a client for its API.
pub struct Sink {
    pub mailpit: Mailpit,
    client: reqwest::Client,
}

impl Sink {
    pub fn start() -> Sink {
        Sink::on(Mailpit::start())
    }

    /// A sink on a mailpit started with other options.
    pub fn on(mailpit: Mailpit) -> Sink {
        Sink { mailpit, client: http_client() }
    }

    /// Every stored message.
    pub async fn messages(&self) -> Vec<Summary> {
        let mut all = Vec::new();
        loop {
            let url = format!("{}/messages?start={}&limit=500", self.mailpit.api_url(), all.len());
            let page: Page = self.client.get(url).send().await.expect("list").json().await.expect("page");
            let done = page.messages.is_empty() || all.len() + page.messages.len() >= page.total;
            all.extend(page.messages);
            if done {
                return all;
            }
        }
    }

    pub async fn count(&self) -> usize {
        let url = format!("{}/messages?limit=1", self.mailpit.api_url());
        let page: Page = self.client.get(url).send().await.expect("list").json().await.expect("page");
        page.total
    }

    /// Waits until at least `count` messages are stored.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Summary> {
        let started = Instant::now();
        while self.count().await < count {
            assert!(
                started.elapsed() < timeout,
                "{count} messages not delivered in {timeout:?}: {}",
                self.count().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.messages().await
    }

    pub async fn detail(&self, id: &str) -> Detail {
        let url = format!("{}/message/{id}", self.mailpit.api_url());
        self.client.get(url).send().await.expect("message").json().await.expect("detail")
    }

    pub async fn headers(&self, id: &str) -> HashMap<String, Vec<String>> {
        let url = format!("{}/message/{id}/headers", self.mailpit.api_url());
        self.client.get(url).send().await.expect("headers").json().await.expect("headers json")
    }

    /// Makes the server answer `code` to every `RCPT TO` (mailpit's chaos trigger); 0 turns it off.
    pub async fn refuse_recipients(&self, code: u16) {
        let probability = if code == 0 { 0 } else { 100 };
        let code = if code == 0 { 451 } else { code };
        let body = serde_json::json!({ "Recipient": { "ErrorCode": code, "Probability": probability } });
        let response =
            self.client.put(format!("{}/chaos", self.mailpit.api_url())).json(&body).send().await.expect("chaos");
        assert!(response.status().is_success(), "chaos: {}", response.status());
    }
}

/// Asserts that no message was delivered twice: every `Message-ID` (derived from the email id) is distinct.
pub fn assert_no_duplicates(messages: &[Summary]) {
    let mut seen = HashSet::new();
    let duplicates: Vec<&str> =
        messages.iter().filter(|m| !seen.insert(m.message_id.as_str())).map(|m| m.message_id.as_str()).collect();
    assert!(duplicates.is_empty(), "delivered twice: {duplicates:?}");
}

/// Writes the tenant document the operator would mount, with SMTP pointing at `smtp_port` (plain text, as for a
/// relay inside the cluster) and credential files, and returns its path.
pub fn tenant_file(dir: &Path, smtp_port: u16) -> PathBuf {
    tenant_file_with(dir, "127.0.0.1", smtp_port, "None")
}

/// [`tenant_file`] with the SMTP host and `security` (`None`, `StartTls` or `Tls`) given.
pub fn tenant_file_with(dir: &Path, host: &str, smtp_port: u16, security: &str) -> PathBuf {
    let credentials = dir.join("smtp");
    std::fs::create_dir_all(&credentials).expect("dir");
    std::fs::write(credentials.join("username"), "mailer\n").expect("username");
    std::fs::write(credentials.join("password"), "s3cr3t\n").expect("password");
    let document = serde_json::json!({
        "tenant": "acme", "displayName": "Acme Corp", "namespace": "tenant-acme",
        "url": "http://chat.tenant-acme.svc:8080", "defaultModel": "gpt-4o-mini",
        "plan": { "name": "pro", "tokensPerMonth": 1000, "requestsPerMinute": 10, "seats": 5, "allowedModels": [] },
        "providers": [],
        "auth": { "url": "http://auth:8080", "jwksUrl": "http://auth:8080/.well-known/jwks.json",
                  "issuer": "http://chat.tenant-acme.svc:8080", "jwtKeyDir": "/var/run/secrets/saaschat/jwt" },
        "smtp": { "host": host, "port": smtp_port, "security": security, "from": FROM,
                  "credentialsDir": credentials },
        "stripe": null,
    });
    let path = dir.join("tenant.json");
    std::fs::write(&path, document.to_string()).expect("tenant file");
    path
}

/// The worker's environment, as the operator writes it (`operator/src/build/workloads.rs`).
pub fn environment(redis_url: &str, tenant_file: &Path, listen: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("SAASCHAT_TENANT", "acme".into()),
        ("SAASCHAT_COMPONENT", "email-worker".into()),
        ("SAASCHAT_CONFIG_FILE", tenant_file.display().to_string()),
        ("SAASCHAT_LISTEN_ADDR", listen.to_string()),
        ("OTEL_SERVICE_NAME", "saaschat-email-worker".into()),
        ("REDIS_URL", redis_url.into()),
    ]
}

pub fn config(redis_url: &str, tenant_file: &Path) -> Config {
    let env: HashMap<&str, String> =
        environment(redis_url, tenant_file, "127.0.0.1:0".parse().expect("addr")).into_iter().collect();
    let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("settings");
    Config::assemble(settings, TenantConfig::load(tenant_file).expect("tenant")).expect("config")
}

/// Settings that make a test quick: takeover after one second, short retries.
pub fn quick_settings() -> WorkerSettings {
    WorkerSettings {
        claim_min_idle: Duration::from_secs(1),
        max_attempts: 3,
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        concurrency: 4,
        read_block: Duration::from_millis(200),
        smtp_timeout: Duration::from_secs(5),
        ..WorkerSettings::default()
    }
}

/// The same settings as environment variables, for the binary.
pub fn quick_environment() -> Vec<(&'static str, String)> {
    vec![
        (knobs::ENV_CLAIM_MIN_IDLE_MS, "1000".into()),
        (knobs::ENV_MAX_ATTEMPTS, "3".into()),
        (knobs::ENV_RETRY_BASE_MS, "20".into()),
        (knobs::ENV_RETRY_MAX_MS, "100".into()),
        (knobs::ENV_CONCURRENCY, "4".into()),
        (knobs::ENV_SMTP_TIMEOUT_MS, "5000".into()),
    ]
}

/// The worker running in this process.
pub struct InProcess {
    pub address: SocketAddr,
    shutdown: Shutdown,
    handle: JoinHandle<Result<(), RunError>>,
}

impl InProcess {
    pub async fn start(config: Config, settings: WorkerSettings) -> InProcess {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(run_with_listener(config, settings, listener, shutdown.signal()));
        InProcess { address, shutdown, handle }
    }

    pub async fn metrics(&self) -> String {
        http_client()
            .get(format!("http://{}/metrics", self.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the worker stops within 30 s")
            .expect("task")
            .expect("the worker ends cleanly");
    }
}

/// The value of a counter (without labels, or with the given label set) in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
        .trim()
        .parse()
        .expect("number")
}

/// The built binary as a child process.
pub struct Binary {
    pub child: Child,
    /// Where it serves `/healthz`, `/readyz` and `/metrics`.
    pub address: SocketAddr,
}

impl Binary {
    pub fn start(redis_url: &str, tenant_file: &Path) -> Binary {
        Binary::start_with(redis_url, tenant_file, &[])
    }

    /// With environment variables added to (or replacing) [`quick_environment`].
    pub fn start_with(redis_url: &str, tenant_file: &Path, extra: &[(&str, &str)]) -> Binary {
        let address: SocketAddr = format!("127.0.0.1:{}", saaschat_testkit::free_port()).parse().expect("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_saaschat-email-worker"))
            .envs(environment(redis_url, tenant_file, address))
            .envs(quick_environment())
            .envs(extra.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the worker binary");
        Binary { child, address }
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.address);
        http_client().get(url).send().await.expect("metrics").text().await.expect("text")
    }

    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then the exit status within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-s", "TERM", &pid]).status().expect("kill");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(started.elapsed() < timeout, "the worker did not exit within {timeout:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn redis(url: &str) -> ConnectionManager {
    saaschat_platform::redis::connect(&Secret::new(url.to_string()), &RedisSettings::default()).await.expect("redis")
}

pub fn verify_email(number: usize) -> EmailRequest {
    EmailRequest {
        id: format!("test:{number:05}"),
        to: format!("user{number}@example.com"),
        content: EmailContent::VerifyEmail {
            tenant_name: "Acme".into(),
            verify_url: format!("https://chat.acme.example/verify?token={number}"),
            expires_at: "2026-11-27T10:00:00Z".into(),
        },
        created_at: "2026-11-26T10:00:00Z".into(),
    }
}

pub async fn push(redis: &mut ConnectionManager, request: &EmailRequest) -> String {
    redis.xadd(STREAM, "*", &request.to_fields()).await.expect("XADD")
}

pub async fn push_fields(redis: &mut ConnectionManager, fields: &[(&str, &str)]) -> String {
    redis.xadd(STREAM, "*", fields).await.expect("XADD")
}

/// Entries of the group not acknowledged yet.
pub async fn pending(redis: &mut ConnectionManager) -> usize {
    let reply: redis::streams::StreamPendingReply = redis.xpending(STREAM, CONSUMER_GROUP).await.expect("XPENDING");
    reply.count()
}

/// The dead-letter stream's entries: (entry id, fields).
pub async fn dead_letters(redis: &mut ConnectionManager) -> Vec<(String, HashMap<String, String>)> {
    let reply: redis::streams::StreamRangeReply = redis.xrange_all(DEAD_LETTER_STREAM).await.expect("XRANGE");
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let fields = entry
                .map
                .into_iter()
                .map(|(name, value)| (name, redis::from_redis_value::<String>(value).expect("string")))
                .collect();
            (entry.id, fields)
        })
        .collect()
}

pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, timeout: Duration, mut check: F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy in front of the SMTP sink whose client-to-server direction can be held: while held, a send in
/// progress cannot finish (the server never sees the end of `DATA`), so a worker killed then is killed mid-send
/// and never between the server's acceptance and its own record of it.
pub struct Proxy {
    pub port: u16,
    held: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let held = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let held = held.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let held = held.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else { return };
                        let (mut client_read, mut client_write) = client.into_split();
                        let (mut server_read, mut server_write) = server.into_split();
                        let upstream = async {
                            let mut buffer = vec![0u8; 64 * 1024];
                            loop {
                                let read = match client_read.read(&mut buffer).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(read) => read,
                                };
                                while held.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                                if server_write.write_all(&buffer[..read]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = server_write.shutdown().await;
                        };
                        let downstream = async {
                            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                            let _ = client_write.shutdown().await;
                        };
                        tokio::join!(upstream, downstream);
                    });
                }
            }
        });
        Proxy { port, held, task }
    }

    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
