//! The PostgreSQL pool and migrations.
//!
//! Every service keeps its tables in a schema of its own (named for the service, see [`schema_name`]) inside the
//! tenant's one database, with its own `_sqlx_migrations` table there: sqlx 0.8 has a single, unconfigurable
//! migrations table name, so services sharing `public` would see each other's migrations as missing or
//! conflicting. Migrations run at start under `pg_advisory_lock` on a key constant per service
//! ([`migration_lock_key`]), so replicas that start together apply them once.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::http::{ProbeFuture, ReadinessProbe};
use crate::secret::Secret;

/// A pooled connection idle for longer than this is pinged before it is handed out, so that one broken while
/// idle (a PostgreSQL restart, a proxy's idle cut) is replaced instead of failing a request. A connection
/// used more recently has just proven itself: pinging it too would double the round trips of every query
/// under load.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is never part of the message: it holds the password.
    #[error("DATABASE_URL cannot be used: {0}")]
    Url(#[source] sqlx::Error),
    #[error("invalid database schema name {0:?}")]
    Schema(String),
    #[error("cannot connect to PostgreSQL within {timeout:?}: {source}")]
    Connect {
        timeout: Duration,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to PostgreSQL within {0:?}")]
    ConnectTimeout(Duration),
    #[error("cannot read the migrations in {path}: {source}")]
    ReadMigrations {
        path: String,
        #[source]
        source: MigrateError,
    },
    #[error("migration lock for {service}: {source}")]
    Lock {
        service: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating {service}: {source}")]
    Migrate {
        service: String,
        #[source]
        source: MigrateError,
    },
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct DbSettings {
    /// The schema the service's tables and migrations live in; see [`schema_name`].
    pub schema: String,
    pub max_connections: u32,
    /// How long start-up waits for PostgreSQL to accept a connection (it may be starting with the pods).
    pub connect_timeout: Duration,
    /// How long a request waits for a pooled connection before failing.
    pub acquire_timeout: Duration,
}

impl DbSettings {
    pub fn for_service(service: &str) -> DbSettings {
        DbSettings {
            schema: schema_name(service),
            max_connections: 10,
            connect_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The schema of a service: its name with `-` as `_` (`email-worker` → `email_worker`).
pub fn schema_name(service: &str) -> String {
    service.replace('-', "_")
}

fn is_plain_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 63
}

/// The advisory lock key of a service's migrations: FNV-1a of `saaschat-migrations:<service>`, so it is the
/// same in every replica and every release, and differs between services.
pub fn migration_lock_key(service: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "saaschat-migrations:".bytes().chain(service.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Connects the pool, retrying until `connect_timeout` while PostgreSQL is not yet reachable.
pub async fn connect(url: &Secret<String>, settings: &DbSettings) -> Result<PgPool, DbError> {
    if !is_plain_identifier(&settings.schema) {
        return Err(DbError::Schema(settings.schema.clone()));
    }
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(DbError::Url)?
        .options([("search_path", settings.schema.as_str())]);
    let pool_options = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|connection, metadata| {
            Box::pin(async move {
                if metadata.idle_for > PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        });
    let deadline = tokio::time::Instant::now() + settings.connect_timeout;
    let mut last_error = None;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(match last_error {
                Some(source) => DbError::Connect { timeout: settings.connect_timeout, source },
                None => DbError::ConnectTimeout(settings.connect_timeout),
            });
        }
        match tokio::time::timeout(remaining, pool_options.clone().connect_with(options.clone())).await {
            Ok(Ok(pool)) => return Ok(pool),
            Ok(Err(error)) => {
                tracing::info!(%error, "PostgreSQL not reachable yet");
                last_error = Some(error);
                tokio::time::sleep(Duration::from_millis(500).min(remaining)).await;
            }
            Err(_) => return Err(DbError::ConnectTimeout(settings.connect_timeout)),
        }
    }
}

/// Applies the migrations in `dir` (files named `<version>_<description>.sql`); see [`migrate_with`].
pub async fn migrate(pool: &PgPool, dir: &Path, service: &str) -> Result<(), DbError> {
    let migrator = Migrator::new(dir)
        .await
        .map_err(|source| DbError::ReadMigrations { path: dir.display().to_string(), source })?;
    migrate_with(pool, migrator, service).await
}

/// Applies migrations (for example embedded with `sqlx::migrate!`) to the service's schema (the pool must come
/// from [`connect`] with [`DbSettings::for_service`] of the same service), holding the service's advisory lock
/// on a dedicated connection, which is closed afterwards so the lock never stays with a pooled connection.
pub async fn migrate_with(pool: &PgPool, mut migrator: Migrator, service: &str) -> Result<(), DbError> {
    // Our own lock replaces sqlx's, whose key depends on the database name rather than the service.
    migrator.set_locking(false);
    let schema = schema_name(service);
    if !is_plain_identifier(&schema) {
        return Err(DbError::Schema(schema));
    }
    let lock_error = |source| DbError::Lock { service: service.to_string(), source };
    let mut connection = PgConnection::connect_with(&pool.connect_options()).await.map_err(lock_error)?;
    let key = migration_lock_key(service);
    sqlx::query("SELECT pg_advisory_lock($1)").bind(key).execute(&mut connection).await.map_err(lock_error)?;
    let result = async {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut connection)
            .await
            .map_err(|error| DbError::Migrate { service: service.to_string(), source: MigrateError::Execute(error) })?;
        migrator
            .run_direct(&mut connection)
            .await
            .map_err(|source| DbError::Migrate { service: service.to_string(), source })
    }
    .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut connection).await;
    // Closing ends the session, which releases the lock even if the unlock above failed.
    let _ = connection.close().await;
    result?;
    unlocked.map_err(lock_error)?;
    tracing::info!(service, schema, migrations = migrator.iter().count(), "migrations applied");
    Ok(())
}

/// Readiness: `SELECT 1` on a pooled connection.
#[derive(Clone, Debug)]
pub struct PostgresProbe {
    pool: PgPool,
}

impl PostgresProbe {
    pub fn new(pool: PgPool) -> PostgresProbe {
        PostgresProbe { pool }
    }
}

impl ReadinessProbe for PostgresProbe {
    fn name(&self) -> &str {
        "postgres"
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(|error| error.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_named_for_the_service() {
        assert_eq!(schema_name("auth"), "auth");
        assert_eq!(schema_name("email-worker"), "email_worker");
        assert!(is_plain_identifier("email_worker"));
        assert!(!is_plain_identifier("auth\"; DROP SCHEMA public; --"));
        assert!(!is_plain_identifier("1auth"));
        assert!(!is_plain_identifier(""));
    }

    #[test]
    fn lock_keys_are_stable_and_differ_between_services() {
        let keys: Vec<i64> = ["auth", "chat", "billing", "email-worker"].map(migration_lock_key).to_vec();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4);
        // Changing this value would let an old and a new release migrate at the same time.
        assert_eq!(migration_lock_key("auth"), migration_lock_key("auth"));
        assert_eq!(migration_lock_key("auth"), -7_120_269_349_828_093_703);
    }

    #[tokio::test]
    async fn a_bad_url_is_reported_without_the_url() {
        let url = Secret::new("postgres://saaschat:hunter2@db:notaport/saaschat".to_string());
        let error = connect(&url, &DbSettings::for_service("auth")).await.expect_err("bad url");
        let message = format!("{error} {error:?}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
