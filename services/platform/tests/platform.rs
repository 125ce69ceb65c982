//! The platform against real PostgreSQL and Redis servers (started by `saaschat-testkit`) and over real HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use saaschat_platform::Secret;
use saaschat_platform::db::{self, DbSettings, PostgresProbe};
use saaschat_platform::email::{self, EmailContent, EmailRequest};
use saaschat_platform::http::{Drained, HttpSettings, RouterBuilder, Shutdown, ShutdownSignal, serve};
use saaschat_platform::outbox::{self, Relay, RelaySettings};
use saaschat_platform::problem::{CONTENT_TYPE_PROBLEM, Json, Problem};
use saaschat_platform::redis::{RedisProbe, RedisSettings};
use saaschat_testkit::{Postgres, Redis};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

fn write_migrations(dir: &Path, migrations: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("dir");
    for (name, sql) in migrations {
        std::fs::write(dir.join(name), sql).expect("write migration");
    }
}

async fn pool(postgres: &Postgres, service: &str) -> sqlx::PgPool {
    db::connect(&Secret::new(postgres.url()), &DbSettings::for_service(service)).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_applied_once_by_concurrent_replicas_in_the_services_schema() {
    let postgres = Postgres::start();
    let dir = tempfile::tempdir().expect("dir");
    let chat = dir.path().join("chat");
    // Not idempotent on purpose: a second, unserialized run would fail on the CREATE TABLE or count two rows.
    write_migrations(
        &chat,
        &[
            ("0001_conversations.sql", "CREATE TABLE conversations (id bigint PRIMARY KEY); SELECT pg_sleep(0.5);"),
            ("0002_seed.sql", "CREATE TABLE runs (n int); INSERT INTO runs VALUES (1);"),
        ],
    );
    let (first, second) = (pool(&postgres, "chat").await, pool(&postgres, "chat").await);
    let (a, b) = tokio::join!(db::migrate(&first, &chat, "chat"), db::migrate(&second, &chat, "chat"));
    a.expect("first replica");
    b.expect("second replica");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs").fetch_one(&first).await.expect("count");
    assert_eq!(runs, 1);
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chat._sqlx_migrations").fetch_one(&first).await.expect("count");
    assert_eq!(applied, 2);
    let schema: String = sqlx::query_scalar(
        "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'conversations'",
    )
    .fetch_one(&first)
    .await
    .expect("table");
    assert_eq!(schema, "chat");

    // Another service with its own version 1 migrates beside it without conflict.
    let auth = dir.path().join("auth");
    write_migrations(&auth, &[("0001_users.sql", "CREATE TABLE users (id bigint PRIMARY KEY);")]);
    let auth_pool = pool(&postgres, "auth").await;
    db::migrate(&auth_pool, &auth, "auth").await.expect("auth migrates");
    // And a restart of chat is a no-op.
    db::migrate(&first, &chat, "chat").await.expect("chat again");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM chat.runs").fetch_one(&auth_pool).await.expect("count");
    assert_eq!(runs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_fails_reports_the_service_and_releases_the_lock() {
    let postgres = Postgres::start();
    let dir = tempfile::tempdir().expect("dir");
    write_migrations(dir.path(), &[("0001_broken.sql", "CREATE TABLE broken (;")]);
    let pool = pool(&postgres, "billing").await;
    let error = db::migrate(&pool, dir.path(), "billing").await.expect_err("syntax error");
    assert!(error.to_string().starts_with("migrating billing: "), "{error}");
    let key = db::migration_lock_key("billing");
    let free: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&pool).await.expect("try");
    assert!(free, "the advisory lock was released");
}

#[tokio::test]
async fn a_pooled_connection_killed_while_idle_is_replaced_before_use() {
    use sqlx::Connection;
    let postgres = Postgres::start();
    let pool = pool(&postgres, "chat").await;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await.expect("pid");
    let mut admin = sqlx::PgConnection::connect(&postgres.url()).await.expect("admin connection");
    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut admin).await.expect("kill");
    assert!(killed);
    tokio::time::sleep(db::PING_AFTER_IDLE + Duration::from_millis(300)).await;
    let now_serving: i32 =
        sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await.expect("a fresh connection");
    assert_ne!(now_serving, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_postgres_and_redis() {
    let mut postgres = Postgres::start();
    let redis = Redis::start();
    let pool = pool(&postgres, "chat").await;
    let redis_connection =
        saaschat_platform::redis::connect(&Secret::new(redis.url()), &RedisSettings::default()).await.expect("redis");
    let settings = HttpSettings { readiness_timeout: Duration::from_secs(2), ..HttpSettings::default() };
    let shutdown = Shutdown::new();
    let app = RouterBuilder::new(settings, shutdown.signal())
        .readiness_probe(PostgresProbe::new(pool))
        .readiness_probe(RedisProbe::new(redis_connection))
        .build(Router::new())
        .expect("router");
    let (address, _server) = start(app, shutdown.signal()).await;
    let client = client();

    let response = client.get(format!("http://{address}/readyz")).send().await.expect("readyz");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({ "status": "ready", "checks": { "postgres": "ok", "redis": "ok" } }));

    postgres.stop();
    let response = client.get(format!("http://{address}/readyz")).send().await.expect("readyz");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE_PROBLEM);
    let problem: Problem = response.json().await.expect("problem");
    assert_eq!(problem.detail.as_deref(), Some("unavailable: postgres"));
    assert_eq!(problem.extensions["checks"]["redis"], "ok");

    let response = client.get(format!("http://{address}/healthz")).send().await.expect("healthz");
    assert_eq!(response.status(), StatusCode::OK, "alive even when not ready");
    shutdown.trigger();
}

#[derive(Deserialize)]
struct NewMessage {
    text: String,
}

fn api() -> Router {
    Router::new()
        .route("/messages", post(|Json(message): Json<NewMessage>| async move { message.text.len().to_string() }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                "finished"
            }),
        )
        .route(
            "/stuck",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "never"
            }),
        )
}

async fn start(app: Router, shutdown: ShutdownSignal) -> (SocketAddr, JoinHandle<std::io::Result<Drained>>) {
    start_with_grace(app, shutdown, Duration::from_secs(10)).await
}

async fn start_with_grace(
    app: Router,
    shutdown: ShutdownSignal,
    grace: Duration,
) -> (SocketAddr, JoinHandle<std::io::Result<Drained>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    (address, tokio::spawn(serve(listener, app, shutdown, grace)))
}

fn service(shutdown: &Shutdown) -> Router {
    RouterBuilder::new(HttpSettings::default(), shutdown.signal()).build(api()).expect("router")
}

#[tokio::test]
async fn bad_input_always_gets_a_problem_body() {
    let shutdown = Shutdown::new();
    let (address, _server) = start(service(&shutdown), shutdown.signal()).await;
    let client = client();
    let url = format!("http://{address}/messages");

    let response = client.post(&url).json(&json!({ "text": "hello" })).send().await.expect("post");
    assert_eq!(response.status(), StatusCode::OK);

    let two_mib = format!("{{\"text\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let response = client.post(&url).header("content-type", "application/json").body(two_mib).send().await;
    let response = response.expect("post");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE_PROBLEM);
    let problem: Problem = response.json().await.expect("problem");
    assert_eq!(problem.problem_type, "https://saaschat.io/problems/body-too-large");

    let response = client.post(&url).header("content-type", "application/json").body("{\"text\": ").send().await;
    let response = response.expect("post");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem: Problem = response.json().await.expect("problem");
    assert_eq!(problem.problem_type, "https://saaschat.io/problems/malformed-json");

    let response = client.post(&url).body("{\"text\": \"hi\"}").send().await.expect("post");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE_PROBLEM);

    let response = client.delete(&url).send().await.expect("delete");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE_PROBLEM);
    shutdown.trigger();
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let shutdown = Shutdown::new();
    let (address, server) = start(service(&shutdown), shutdown.signal()).await;
    let client = client();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get(format!("http://{address}/slow")).send().await?.text().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.trigger();
    assert_eq!(in_flight.await.expect("task").expect("the in-flight request finished"), "finished");
    let drained = tokio::time::timeout(Duration::from_secs(5), server).await.expect("server ended");
    assert_eq!(drained.expect("task").expect("serve"), Drained::Complete);
    let fresh = reqwest::Client::new().get(format!("http://{address}/slow")).send().await;
    assert!(fresh.is_err(), "no longer accepting connections");
}

#[tokio::test]
async fn shutdown_gives_up_on_stuck_requests_after_the_grace_period() {
    let shutdown = Shutdown::new();
    let (address, server) = start_with_grace(service(&shutdown), shutdown.signal(), Duration::from_millis(300)).await;
    let client = client();
    let _stuck = tokio::spawn(async move { client.get(format!("http://{address}/stuck")).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.trigger();
    let drained = tokio::time::timeout(Duration::from_secs(5), server).await.expect("server ended");
    assert_eq!(drained.expect("task").expect("serve"), Drained::DeadlineExceeded);
}

#[tokio::test]
async fn streams_that_watch_the_shutdown_signal_end_and_let_the_server_drain() {
    use axum::Extension;
    use axum::body::Body;
    use futures_util::StreamExt;

    let shutdown = Shutdown::new();
    let stream_route = get(|Extension(signal): Extension<ShutdownSignal>| async move {
        let ticks = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Ok::<_, std::io::Error>("data: tick\n\n"), ()))
        });
        Body::from_stream(ticks.take_until(signal.triggered()))
    });
    let app = RouterBuilder::new(HttpSettings::default(), shutdown.signal())
        .build(Router::new().route("/events", stream_route))
        .expect("router");
    let (address, server) = start(app, shutdown.signal()).await;
    let response = client().get(format!("http://{address}/events")).send().await.expect("stream");
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.trigger();
    let body = tokio::time::timeout(Duration::from_secs(5), response.text()).await.expect("stream ended");
    assert!(body.expect("body").starts_with("data: tick"));
    let drained = tokio::time::timeout(Duration::from_secs(5), server).await.expect("server ended");
    assert_eq!(drained.expect("task").expect("serve"), Drained::Complete);
}

#[tokio::test]
async fn jwks_are_fetched_over_http_from_the_configured_url() {
    use saaschat_platform::auth::{HttpJwks, JwksSource};
    let jwks = json!({ "keys": [
        { "kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "use": "sig",
          "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
    ]});
    let app = Router::new().route("/.well-known/jwks.json", get(move || async move { axum::Json(jwks) }));
    let shutdown = Shutdown::new();
    let (address, _server) = start(app, shutdown.signal()).await;
    let source =
        HttpJwks::new(format!("http://{address}/.well-known/jwks.json"), Duration::from_secs(5)).expect("client");
    let set = source.fetch().await.expect("fetch");
    assert_eq!(set.keys[0].common.key_id.as_deref(), Some("k1"));
    let missing = HttpJwks::new(format!("http://{address}/nowhere"), Duration::from_secs(5)).expect("client");
    assert!(missing.fetch().await.is_err());
    shutdown.trigger();
}

const OUTBOX_DDL: &str = "CREATE TABLE outbox (id uuid PRIMARY KEY, recipient text NOT NULL, template text NOT NULL, \
    data jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz); \
    CREATE INDEX outbox_pending ON outbox (created_at) WHERE published_at IS NULL;";

async fn stream_entries(redis: &mut ::redis::aio::ConnectionManager) -> Vec<EmailRequest> {
    let reply: ::redis::streams::StreamRangeReply =
        ::redis::cmd("XRANGE").arg(email::STREAM).arg("-").arg("+").query_async(redis).await.expect("xrange");
    reply
        .ids
        .iter()
        .map(|entry| {
            let fields: HashMap<String, String> = entry
                .map
                .iter()
                .map(|(name, value)| (name.clone(), ::redis::from_redis_value(value.clone()).expect("string")))
                .collect();
            EmailRequest::from_fields(&fields).expect("a valid entry")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_publishes_exactly_the_committed_emails() {
    let postgres = Postgres::start();
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("dir");
    write_migrations(dir.path(), &[("0001_outbox.sql", OUTBOX_DDL)]);
    let pool = pool(&postgres, "auth").await;
    db::migrate(&pool, dir.path(), "auth").await.expect("migrate");
    let mut redis_connection =
        saaschat_platform::redis::connect(&Secret::new(redis.url()), &RedisSettings::default()).await.expect("redis");
    let content = |url: &str| EmailContent::VerifyEmail {
        tenant_name: "Acme".into(),
        verify_url: url.into(),
        expires_at: "2026-11-27T10:00:00Z".into(),
    };

    let mut rolled_back = pool.begin().await.expect("begin");
    outbox::enqueue(&mut rolled_back, "auth", "eve@example.com", &content("https://x/rolled-back"))
        .await
        .expect("enqueue");
    rolled_back.rollback().await.expect("rollback");

    let settings = RelaySettings { poll_interval: Duration::from_secs(60), ..RelaySettings::default() };
    let relay = Relay::new(pool.clone(), redis_connection.clone(), "auth", settings);
    let shutdown = Shutdown::new();
    let running = tokio::spawn(relay.run(shutdown.signal()));
    // The relay has subscribed once its first (empty) pass is over; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut committed = pool.begin().await.expect("begin");
    let id =
        outbox::enqueue(&mut committed, "auth", "ada@example.com", &content("https://x/ok")).await.expect("enqueue");
    committed.commit().await.expect("commit");

    // Woken by the commit's NOTIFY, well before the 60 s poll.
    let published = eventually(Duration::from_secs(5), || {
        let mut redis_connection = redis_connection.clone();
        async move { Some(stream_entries(&mut redis_connection).await).filter(|entries| !entries.is_empty()) }
    })
    .await;
    assert_eq!(published.len(), 1, "the rolled-back email is not published");
    assert_eq!(published[0].id, format!("auth:{id}"));
    assert_eq!(published[0].to, "ada@example.com");
    assert_eq!(published[0].content, content("https://x/ok"));

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), running).await.expect("relay stops").expect("task");
    let again = Relay::new(pool.clone(), redis_connection.clone(), "auth", RelaySettings::default());
    assert_eq!(again.publish_pending().await.expect("publish"), 0, "published rows are not published twice");
    assert_eq!(stream_entries(&mut redis_connection).await.len(), 1);
}

async fn eventually<T, F, Fut>(timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
