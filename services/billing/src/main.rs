//! `saaschat-billing`: reads the configuration the operator gives the pod, migrates the `billing` schema, and
//! serves until SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use prometheus::Registry;
use saaschat_billing::app::{self, Parts};
use saaschat_billing::settings::{BillingSettings, StripeCredentials};
use saaschat_platform::auth::{Authenticator, SessionRevocations};
use saaschat_platform::config::{Config, ConfigError};
use saaschat_platform::db::{self, DbSettings, PostgresProbe};
use saaschat_platform::http::{HttpSettings, RouterBuilder, Shutdown, serve};
use saaschat_platform::redis::{RedisProbe, RedisSettings};

const SERVICE: &str = "billing";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    // Kept until `main` returns: dropping it flushes the traces and error reports still queued.
    let _telemetry = match saaschat_platform::telemetry::init("saaschat-billing") {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("cannot start logging: {error}");
            return ExitCode::FAILURE;
        }
    };
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "billing stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let config = Config::load()?;
    let settings = BillingSettings::from_env().map_err(ConfigError::Settings)?;
    let credentials = match &config.tenant.stripe {
        Some(stripe) => Some(StripeCredentials::load(&stripe.credentials_dir)?),
        None => None,
    };
    let database_url = config.settings.database_url.clone().ok_or("DATABASE_URL is not set")?;
    let pool = db::connect(&database_url, &DbSettings::for_service(SERVICE)).await?;
    // The migrations are compiled into the binary: nothing to ship beside it.
    db::migrate_with(&pool, sqlx::migrate!("../../migrations/billing"), SERVICE).await?;
    let redis = saaschat_platform::redis::connect(&config.settings.redis_url, &RedisSettings::default()).await?;
    let authenticator = Authenticator::from_config(&config, Duration::from_secs(30))?
        .with_session_revocations(SessionRevocations::new(redis.clone()));
    let kubernetes = if settings.kubernetes {
        let namespace = config.settings.pod_namespace.clone().ok_or("POD_NAMESPACE is needed to write the status")?;
        Some((kube::Client::try_default().await?, namespace))
    } else {
        None
    };

    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signals();
    let registry = Registry::new();
    let parts = Parts {
        tenant: config.tenant.clone(),
        settings,
        credentials,
        pool: pool.clone(),
        redis: redis.clone(),
        authenticator,
        kubernetes,
        registry: registry.clone(),
    };
    let (api, tasks) = app::start(parts, &shutdown.signal())?;
    let http = HttpSettings::default();
    let router = RouterBuilder::new(http.clone(), shutdown.signal())
        .registry(registry)
        .readiness_probe(PostgresProbe::new(pool))
        .readiness_probe(RedisProbe::new(redis))
        .build(api)?;
    let listener = tokio::net::TcpListener::bind(config.settings.listen_addr).await?;
    tracing::info!(address = %config.settings.listen_addr, tenant = %config.tenant.tenant, "billing listening");
    serve(listener, router, shutdown.signal(), http.shutdown_grace).await?;
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}
