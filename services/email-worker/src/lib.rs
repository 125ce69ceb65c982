//! The email worker: consumes the tenant's email stream (`saaschat:emails`, fed by the auth and billing outboxes)
//! in the consumer group `email-worker`, renders the five templates as text and HTML, and sends them over SMTP.
//! The format and the operations around it are documented in `docs/email-stream.md`.
//!
//! | module | what it does |
//! |---|---|
//! | [`settings`] | the worker's tuning from the environment; the SMTP server and credentials from the tenant files |
//! | [`render`] | the templates, with every variable HTML-escaped and links checked |
//! | [`message`] | the MIME message; header values with CR or LF refused; `Message-ID` from the idempotency id |
//! | [`delivery`] | the SMTP transport and the retry or dead-letter decision after a failure |
//! | [`stream`] | the consumer group, takeover (`XAUTOCLAIM`), idempotency records, dead letters, trimming |
//! | [`worker`] | the consumer loop that ties them together, with heartbeat and graceful shutdown |
//! | [`metrics`] | sent, retried, dead-lettered, duplicates, send latency |
//!
//! Deciding (`settings`, `render`, `message`, `delivery::decide`, `stream::decide`) is pure and unit-tested; the
//! rest is covered by `tests/` against a real Redis and a real SMTP server (mailpit).

pub mod delivery;
pub mod message;
pub mod metrics;
pub mod render;
pub mod settings;
pub mod stream;
pub mod worker;

use std::sync::Arc;

use axum::Router;
use prometheus::Registry;
use saaschat_platform::config::Config;
use saaschat_platform::http::{HttpSettings, RouterBuilder, ShutdownSignal, serve};
use saaschat_platform::redis::{RedisError, RedisProbe, RedisSettings};
use tokio::net::TcpListener;

use metrics::WorkerMetrics;
use settings::{SmtpSettings, SmtpSettingsError, WorkerSettings};
use stream::EmailStream;
use worker::Worker;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Smtp(#[from] SmtpSettingsError),
    #[error("cannot set up the SMTP transport: {0}")]
    Transport(#[from] lettre::transport::smtp::Error),
    #[error("cannot register the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs the worker until `shutdown`: `/healthz`, `/readyz` (Redis answers) and `/metrics` on
/// `SAASCHAT_LISTEN_ADDR`, and the consumer. Returns once the emails in flight are finished.
pub async fn run(config: Config, settings: WorkerSettings, shutdown: ShutdownSignal) -> Result<(), RunError> {
    let address = config.settings.listen_addr;
    let listener = TcpListener::bind(address).await.map_err(|source| RunError::Listen { address, source })?;
    run_with_listener(config, settings, listener, shutdown).await
}

/// [`run`] on a listener the caller bound (tests bind port 0 and read the address).
pub async fn run_with_listener(
    config: Config,
    settings: WorkerSettings,
    listener: TcpListener,
    shutdown: ShutdownSignal,
) -> Result<(), RunError> {
    let redis_settings = RedisSettings::default();
    let commands = saaschat_platform::redis::connect(&config.settings.redis_url, &redis_settings).await?;
    // The blocking read gets a connection of its own, with room for its block time in the response timeout.
    let reader_settings =
        RedisSettings { response_timeout: redis_settings.response_timeout + settings.read_block, ..redis_settings };
    let reader = saaschat_platform::redis::connect(&config.settings.redis_url, &reader_settings).await?;

    let registry = Registry::new();
    let metrics = WorkerMetrics::register(&registry)?;
    let http = HttpSettings::default();
    let app = RouterBuilder::new(http.clone(), shutdown.clone())
        .registry(registry)
        .readiness_probe(RedisProbe::new(commands.clone()))
        .build(Router::new())?;
    let server = tokio::spawn(serve(listener, app, shutdown.clone(), http.shutdown_grace));

    match &config.tenant.smtp {
        Some(smtp) => {
            let smtp = SmtpSettings::load(smtp, settings.smtp_ca_file.as_deref())?;
            let connections = u32::try_from(settings.concurrency).unwrap_or(u32::MAX);
            let transport = delivery::smtp::transport(&smtp, settings.smtp_timeout, connections)?;
            let stream = EmailStream::new(reader, commands, consumer_name(config.settings.pod_name.as_deref()));
            let worker = Arc::new(Worker::new(stream, transport, smtp.from, settings, metrics));
            worker.run(shutdown.clone()).await;
        }
        None => {
            tracing::warn!("the tenant has no SMTP settings: emails wait in the stream until it has");
            shutdown.clone().triggered().await;
        }
    }
    match server.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(RunError::Serve(error)),
        Err(error) => Err(RunError::Serve(std::io::Error::other(error))),
    }
}

/// This process's name in the consumer group: the pod name (or `email-worker`) and a random suffix, so a restarted
/// container is a new consumer and its predecessor's entries are taken over like any dead worker's.
pub fn consumer_name(pod_name: Option<&str>) -> String {
    format!("{}-{:08x}", pod_name.unwrap_or("email-worker"), fastrand::u32(..))
}
