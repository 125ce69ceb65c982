//! Starting the service: connect and migrate, load the catalog, assemble the gateway and the routes, serve
//! until shutdown, then drain streams, WebSocket sessions and the usage writer. `main` and the integration
//! tests both start it this way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus::Registry;
use saaschat_platform::auth::{Authenticator, HttpApiKeyVerifier};
use saaschat_platform::config::Config;
use saaschat_platform::db::{self, DbSettings, PostgresProbe};
use saaschat_platform::http::{Drained, HttpSettings, RouterBuilder, Shutdown, serve};
use saaschat_platform::redis::{RedisProbe, RedisSettings};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use crate::cache::ResponseCache;
use crate::catalog::reload;
use crate::conversations::live::LiveStreams;
use crate::conversations::store::Store;
use crate::gateway::{CatalogHandle, Gateway};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::providers::client::UpstreamClient;
use crate::resilience::ResilienceSettings;
use crate::state::{AppState, Shared, StreamingSettings};
use crate::usage::UsageRecorder;

pub const SERVICE: &str = "chat";

#[derive(Clone, Debug)]
pub struct Options {
    pub http: HttpSettings,
    pub resilience: ResilienceSettings,
    pub streaming: StreamingSettings,
    pub reload_interval: Duration,
    pub cache_ttl: Duration,
    pub db_max_connections: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            // Opening a stream may take several attempts across providers before its first byte.
            http: HttpSettings { request_timeout: Duration::from_secs(120), ..HttpSettings::default() },
            resilience: ResilienceSettings::default(),
            streaming: StreamingSettings::default(),
            reload_interval: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(3600),
            db_max_connections: 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the configuration has no DATABASE_URL")]
    NoDatabase,
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Redis(#[from] saaschat_platform::redis::RedisError),
    #[error("cannot build the auth service's HTTP client: {0}")]
    AuthClient(#[from] reqwest::Error),
    #[error("cannot build the upstream client: {0}")]
    Upstream(#[from] crate::providers::client::ClientError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// A started service, ready to serve.
pub struct Service {
    pub router: Router,
    pub state: AppState,
    usage_writer: JoinHandle<()>,
    reload: JoinHandle<()>,
    limiter: Limiter,
    lease_keeper: JoinHandle<()>,
}

pub async fn start(config: Config, options: Options, shutdown: &Shutdown) -> Result<Service, StartError> {
    let database_url = config.settings.database_url.clone().ok_or(StartError::NoDatabase)?;
    let pool = db::connect(
        &database_url,
        &DbSettings { max_connections: options.db_max_connections, ..DbSettings::for_service(SERVICE) },
    )
    .await?;
    // Compiled into the binary: nothing to ship beside it.
    db::migrate_with(&pool, sqlx::migrate!("../../migrations/chat"), SERVICE).await?;
    let redis = saaschat_platform::redis::connect(&config.settings.redis_url, &RedisSettings::default()).await?;

    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let catalog = CatalogHandle::new(reload::build(&config.tenant));
    let (usage, usage_writer) = UsageRecorder::start(pool.clone());
    let limiter = Limiter::new(redis.clone(), pool.clone(), config.settings.tenant.clone(), &metrics.limit_checks);
    let lease_keeper = limiter.spawn_lease_keeper(shutdown.signal());
    let client = UpstreamClient::new(options.resilience.connect_timeout)?;
    let gateway = Gateway::new(
        client,
        catalog.clone(),
        options.resilience.clone(),
        limiter.clone(),
        usage,
        metrics,
        shutdown.signal(),
    );
    let authenticator = Authenticator::from_config(&config, Duration::from_secs(30))?
        .with_api_keys(HttpApiKeyVerifier::from_config(&config)?);
    let state = AppState::new(Shared {
        gateway: Arc::new(gateway),
        store: Store::new(pool.clone()),
        authenticator,
        live: LiveStreams::default(),
        cache: ResponseCache::new(redis.clone(), options.cache_ttl),
        shutdown: shutdown.signal(),
        streaming: options.streaming.clone(),
    });
    let router = RouterBuilder::new(options.http.clone(), shutdown.signal())
        .registry(registry)
        .readiness_probe(PostgresProbe::new(pool))
        .readiness_probe(RedisProbe::new(redis))
        .build(crate::app(state.clone()))?;
    let reload = reload::spawn(
        config.settings.config_file.clone(),
        config.settings.tenant.clone(),
        catalog,
        options.reload_interval,
        shutdown.signal(),
    );
    Ok(Service { router, state, usage_writer, reload, limiter, lease_keeper })
}

/// Binds the listening socket with `TCP_NODELAY`, which Linux passes on to every accepted connection: an SSE
/// answer is many small writes, and with Nagle's algorithm each one after the first waits for the client's
/// delayed ACK (about 40 ms).
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

impl Service {
    /// Serves until shutdown; then waits, within `grace`, for the streams and sessions the server does not
    /// track, gives back the limits' unused leases once they have settled, and waits for the usage writer to
    /// write what they recorded.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: &Shutdown,
        grace: Duration,
    ) -> Result<Drained, StartError> {
        let Service { router, state, usage_writer, reload, limiter, lease_keeper } = self;
        let started = tokio::time::Instant::now();
        let drained = serve(listener, router, shutdown.signal(), grace).await?;
        let tasks = state.gateway.tasks.clone();
        drop(state);
        let remaining = grace.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
        let streams_ended = tasks.wait_idle(remaining).await;
        if !streams_ended {
            tracing::warn!(running = tasks.running(), "streams still running at the end of the grace period");
        }
        reload.abort();
        if tokio::time::timeout(Duration::from_secs(5), async {
            let _ = lease_keeper.await;
            limiter.give_back_all().await;
        })
        .await
        .is_err()
        {
            tracing::warn!("unused leases were not given back; they count as used until their window ends");
        }
        if tokio::time::timeout(Duration::from_secs(5), usage_writer).await.is_err() {
            tracing::error!("the usage writer did not finish; queued usage events may be lost");
        }
        Ok(if streams_ended { drained } else { Drained::DeadlineExceeded })
    }
}
