//! Ended sessions, shared through the tenant's Redis so that signing out (or a password change, or a detected
//! refresh-token reuse) ends access at once in every service, not when the last access token expires.
//!
//! The auth service writes `saaschat:revoked-session:<session id>` with a lifetime of the longest an access token
//! of that session can still be valid; verifiers refuse tokens whose `sid` is listed. If Redis cannot be asked,
//! tokens are accepted (with a warning): an outage of Redis must not sign everybody out, and the token still
//! expires within its 15 minutes.

use std::time::Duration;

use ::redis::aio::ConnectionManager;

use super::{AuthError, Authenticated};

fn key(session_id: &str) -> String {
    format!("saaschat:revoked-session:{session_id}")
}

/// Lists a session as ended for `ttl` (at least the remaining lifetime of its access tokens).
pub async fn revoke_session(
    redis: &mut ConnectionManager,
    session_id: &str,
    ttl: Duration,
) -> Result<(), ::redis::RedisError> {
    let seconds = ttl.as_secs().max(1);
    ::redis::cmd("SET").arg(key(session_id)).arg("1").arg("EX").arg(seconds).query_async(redis).await
}

/// The check verifiers run after a token's signature and claims passed.
#[derive(Clone)]
pub struct SessionRevocations {
    redis: ConnectionManager,
}

impl SessionRevocations {
    pub fn new(redis: ConnectionManager) -> SessionRevocations {
        SessionRevocations { redis }
    }

    pub async fn check(&self, authenticated: &Authenticated) -> Result<(), AuthError> {
        let Some(session_id) = &authenticated.session_id else {
            return Ok(());
        };
        let mut redis = self.redis.clone();
        match ::redis::cmd("EXISTS").arg(key(session_id)).query_async::<bool>(&mut redis).await {
            Ok(true) => Err(AuthError::SessionEnded),
            Ok(false) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "cannot check session revocations; accepting the token");
                Ok(())
            }
        }
    }
}
