//! The Redis connection: a multiplexed connection manager that reconnects by itself, and its readiness probe.
//! (Refer to the client crate as `::redis` inside this crate; this module shares its name.)

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::http::{ProbeFuture, ReadinessProbe};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL is never part of the message: it holds the password.
    #[error("REDIS_URL cannot be used: {0}")]
    Url(#[source] ::redis::RedisError),
    #[error("cannot connect to Redis: {0}")]
    Connect(#[source] ::redis::RedisError),
}

#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub connect_timeout: Duration,
    /// How long one command may wait for its answer.
    pub response_timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings { connect_timeout: Duration::from_secs(5), response_timeout: Duration::from_secs(5) }
    }
}

/// Connects; the manager reconnects on its own after a lost connection.
pub async fn connect(url: &Secret<String>, settings: &RedisSettings) -> Result<ConnectionManager, RedisError> {
    let client = ::redis::Client::open(url.expose().as_str()).map_err(RedisError::Url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config).await.map_err(RedisError::Connect)
}

/// Readiness: `PING`.
#[derive(Clone)]
pub struct RedisProbe {
    connection: ConnectionManager,
}

impl RedisProbe {
    pub fn new(connection: ConnectionManager) -> RedisProbe {
        RedisProbe { connection }
    }
}

impl ReadinessProbe for RedisProbe {
    fn name(&self) -> &str {
        "redis"
    }

    fn check(&self) -> ProbeFuture<'_> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let pong: String =
                ::redis::cmd("PING").query_async(&mut connection).await.map_err(|error| error.to_string())?;
            if pong == "PONG" { Ok(()) } else { Err(format!("unexpected PING answer {pong:?}")) }
        })
    }
}
