//! Starting the service: connect, migrate, load the signing key, serve until shutdown. `main` and the
//! integration tests both go through [`start`], so the tests run what production runs.

use std::sync::Arc;
use std::time::Duration;

use saaschat_platform::auth::{Authenticator, JwtSettings, JwtVerifier, KeyCache, SessionRevocations};
use saaschat_platform::config::Config;
use saaschat_platform::db::{self, DbSettings, PostgresProbe};
use saaschat_platform::http::{Drained, HttpSettings, RouterBuilder, ShutdownSignal, serve};
use saaschat_platform::outbox::{Relay, RelaySettings};
use saaschat_platform::redis::{self as platform_redis, RedisProbe, RedisSettings};
use tokio::net::TcpListener;

use crate::browser;
use crate::keys::{KeyError, KeyStore};
use crate::passwords::{HashError, HashParams, PasswordHasherPool};
use crate::rate_limit::Limiter;
use crate::routes;
use crate::routes::account::PRODUCER;
use crate::state::{AppState, TenantInfo};

/// Settings of the auth service beyond the platform's.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    pub hash_params: HashParams,
    /// Password hashes computed at once (each holds `hash_params.memory_kib`).
    pub hash_concurrency: usize,
    /// Reverse proxies in front of the service that append to `X-Forwarded-For`.
    pub trusted_proxy_hops: usize,
    /// How often the mounted signing key is re-read (a rotated Secret reaches the pod within a minute or two).
    pub key_refresh_interval: Duration,
    pub http: HttpSettings,
    pub relay: RelaySettings,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            hash_params: HashParams::default(),
            hash_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            trusted_proxy_hops: 0,
            key_refresh_interval: Duration::from_secs(30),
            http: HttpSettings::default(),
            relay: RelaySettings::default(),
        }
    }
}

pub const ENV_TRUSTED_PROXY_HOPS: &str = "SAASCHAT_TRUSTED_PROXY_HOPS";

impl AuthOptions {
    /// The defaults, with `SAASCHAT_TRUSTED_PROXY_HOPS` from the environment.
    pub fn from_env() -> Result<AuthOptions, String> {
        let mut options = AuthOptions::default();
        if let Ok(value) = std::env::var(ENV_TRUSTED_PROXY_HOPS) {
            options.trusted_proxy_hops = value
                .trim()
                .parse()
                .map_err(|_| format!("{ENV_TRUSTED_PROXY_HOPS} must be a small number, not {value:?}"))?;
        }
        Ok(options)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL is not set")]
    NoDatabase,
    #[error(transparent)]
    Database(#[from] db::DbError),
    #[error(transparent)]
    Redis(#[from] platform_redis::RedisError),
    #[error("signing key: {0}")]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Hasher(#[from] HashError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("routes: {0}")]
    Routes(#[from] saaschat_platform::http::openapi::DocumentError),
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// Runs the service on `listener` until `shutdown`; returns how the drain went.
pub async fn start(
    listener: TcpListener,
    config: &Config,
    options: AuthOptions,
    shutdown: ShutdownSignal,
) -> Result<Drained, StartError> {
    let database_url = config.settings.database_url.as_ref().ok_or(StartError::NoDatabase)?;
    let pool = db::connect(database_url, &DbSettings::for_service("auth")).await?;
    // The migrations are compiled into the binary: nothing to ship beside it.
    db::migrate_with(&pool, sqlx::migrate!("../../migrations/auth"), "auth").await?;
    let redis = platform_redis::connect(&config.settings.redis_url, &RedisSettings::default()).await?;

    let issuer = config.tenant.auth.issuer.clone();
    let keys = KeyStore::open(&config.tenant.auth.jwt_key_dir, pool.clone(), &issuer).await?;
    let verifier = JwtVerifier::new(
        KeyCache::new(Arc::new(keys.clone()), Duration::from_secs(1)),
        JwtSettings::new(issuer, config.settings.tenant.clone()),
    );
    let authenticator = Authenticator::new(verifier).with_session_revocations(SessionRevocations::new(redis.clone()));
    let state = AppState {
        pool: pool.clone(),
        redis: redis.clone(),
        keys: keys.clone(),
        hasher: PasswordHasherPool::new(options.hash_params, options.hash_concurrency)?,
        limiter: Limiter::new(redis.clone()),
        authenticator,
        tenant: TenantInfo {
            name: config.settings.tenant.clone(),
            display_name: config.tenant.display_name.clone(),
            url: config.tenant.url.clone(),
            seats: i64::from(config.tenant.plan.seats),
        },
        trusted_proxy_hops: options.trusted_proxy_hops,
    };
    let router = RouterBuilder::new(options.http.clone(), shutdown.clone())
        .readiness_probe(PostgresProbe::new(pool.clone()))
        .readiness_probe(RedisProbe::new(redis.clone()))
        .build(routes::api(state)?.layer(axum::middleware::from_fn_with_state(
            browser::TenantOrigin::from_url(&config.tenant.url),
            browser::sessions,
        )))?;

    let relay = Relay::new(pool, redis, PRODUCER, options.relay.clone());
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let watcher = tokio::spawn(keys.watch(options.key_refresh_interval, shutdown.clone()));
    tracing::info!(address = ?listener.local_addr().ok(), "auth service listening");
    let drained = serve(listener, router, shutdown, options.http.shutdown_grace).await?;
    let _ = tokio::join!(relay, watcher);
    Ok(drained)
}
