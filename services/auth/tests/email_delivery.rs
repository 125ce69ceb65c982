//! The full path of an email: a sign-up in the auth service writes a verification email into its outbox, the
//! relay appends it to the Redis stream, the email worker sends it over SMTP, and exactly one message reaches
//! the mailbox (a real SMTP server, mailpit), with a link that verifies the address.

mod support;

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use saaschat_email_worker::settings::WorkerSettings;
use saaschat_platform::config::{Config, Settings, TenantConfig};
use saaschat_platform::http::Shutdown;
use saaschat_testkit::smtp::Mailpit;
use serde_json::{Value, json};
use support::AuthServer;

fn worker_config(redis_url: &str, smtp_port: u16, dir: &Path) -> Config {
    let environment = [
        ("SAASCHAT_TENANT", "acme".to_string()),
        ("SAASCHAT_COMPONENT", "email-worker".to_string()),
        ("REDIS_URL", redis_url.to_string()),
    ];
    let settings =
        Settings::from_lookup(|name| environment.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone()))
            .expect("settings");
    let tenant = json!({
        "tenant": "acme", "displayName": "Acme Corp", "namespace": "tenant-acme", "url": "https://chat.acme.example",
        "defaultModel": "m", "providers": [], "stripe": null,
        "plan": {"name": "pro", "tokensPerMonth": 1, "requestsPerMinute": 1, "seats": 5, "allowedModels": []},
        "auth": {"url": "http://auth:8080", "jwksUrl": "http://auth:8080/.well-known/jwks.json",
                 "issuer": support::ISSUER, "jwtKeyDir": dir},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "None", "from": "Acme <noreply@acme.example>"},
    });
    let tenant = TenantConfig::parse(&tenant.to_string(), Path::new("tenant.json")).expect("tenant");
    Config::assemble(settings, tenant).expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_delivers_exactly_one_verification_email() {
    let server = AuthServer::start().await;
    let mailpit = Mailpit::start();
    let dir = tempfile::tempdir().expect("dir");
    let config = worker_config(&server.redis.url(), mailpit.smtp_port, dir.path());
    let shutdown = Shutdown::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let worker = tokio::spawn(saaschat_email_worker::run_with_listener(
        config,
        WorkerSettings::default(),
        listener,
        shutdown.signal(),
    ));

    server.sign_up("ada@example.com").await;
    let messages_url = format!("{}/messages", mailpit.api_url());
    for _ in 0..100 {
        let messages: Value =
            server.client.get(&messages_url).send().await.expect("mailpit").json().await.expect("json");
        if messages["total"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a duplicate every chance to arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages: Value = server.client.get(&messages_url).send().await.expect("mailpit").json().await.expect("json");
    assert_eq!(messages["total"], 1, "{messages}");
    let message = &messages["messages"][0];
    assert_eq!(message["To"][0]["Address"], "ada@example.com");

    let id = message["ID"].as_str().expect("id");
    let text = server
        .client
        .get(format!("{}/message/{id}", mailpit.api_url()))
        .send()
        .await
        .expect("message")
        .json::<Value>()
        .await
        .expect("json")["Text"]
        .as_str()
        .expect("a text part")
        .to_string();
    let token = text
        .split_whitespace()
        .find_map(|word| word.split_once("verify-email?token=").map(|(_, token)| token.to_string()))
        .expect("a verification link in the email");
    let (status, _) = server.post("/v1/auth/verify-email", json!({"token": token})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the emailed link verifies the address");

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), worker).await.expect("worker stops").expect("task").expect("worker");
}
