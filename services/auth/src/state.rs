//! What every handler shares, and the small extractors built on it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use jsonwebtoken::jwk::JwkSet;
use saaschat_platform::auth::jwks::FetchFuture;
use saaschat_platform::auth::jwt::LEEWAY_SECONDS;
use saaschat_platform::auth::{Authenticator, JwksSource, revoke_session};
use sqlx::PgPool;
use uuid::Uuid;

use crate::keys::{ACCESS_TOKEN_TTL, KeyStore};
use crate::passwords::PasswordHasherPool;
use crate::rate_limit::Limiter;

/// The tenant this auth service serves.
#[derive(Clone, Debug)]
pub struct TenantInfo {
    /// The tenant's name (`SAASCHAT_TENANT`), written into tokens.
    pub name: String,
    pub display_name: String,
    /// The public base URL; links in emails point at its web pages.
    pub url: String,
    /// The plan's seats: users not disabled, invitations included.
    pub seats: i64,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub redis: ConnectionManager,
    pub keys: KeyStore,
    pub hasher: PasswordHasherPool,
    pub limiter: Limiter,
    pub authenticator: Authenticator,
    pub tenant: TenantInfo,
    /// How many reverse proxies in front of the service append to `X-Forwarded-For` (0: use the peer address).
    pub trusted_proxy_hops: usize,
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Authenticator {
        state.authenticator.clone()
    }
}

/// The service verifies its own tokens against its own key store, not over HTTP.
impl JwksSource for KeyStore {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(
            async move { serde_json::from_value::<JwkSet>((*self.jwks()).clone()).map_err(|error| error.to_string()) },
        )
    }
}

impl AppState {
    /// Tells every service that these sessions ended, for as long as their access tokens could be valid.
    pub async fn announce_ended_sessions(&self, sessions: &[Uuid]) {
        let ttl = ACCESS_TOKEN_TTL + Duration::from_secs(LEEWAY_SECONDS);
        let mut redis = self.redis.clone();
        for session in sessions {
            if let Err(error) = revoke_session(&mut redis, &session.to_string(), ttl).await {
                tracing::warn!(%error, %session, "ended session not announced; its access tokens expire on their own");
            }
        }
    }
}

/// The client's address, for rate limits: the peer, or the address the trusted proxies recorded.
pub struct ClientAddress(pub String);

/// The client address from the peer and the `X-Forwarded-For` values: with `hops` trusted proxies, the address
/// `hops` entries from the right end (the one the outermost trusted proxy saw); anything left of it is
/// client-controlled and ignored.
pub fn client_address(peer: Option<IpAddr>, forwarded_for: &[&str], hops: usize) -> String {
    if hops > 0 {
        let entries: Vec<&str> = forwarded_for.iter().flat_map(|value| value.split(',')).map(str::trim).collect();
        if let Some(address) = entries.len().checked_sub(hops).and_then(|index| entries.get(index))
            && let Ok(ip) = address.parse::<IpAddr>()
        {
            return ip.to_string();
        }
    }
    peer.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
}

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| address.ip());
        let forwarded: Vec<&str> =
            parts.headers.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok()).collect();
        Ok(ClientAddress(client_address(peer, &forwarded, state.trusted_proxy_hops)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_are_trusted_only_as_far_as_the_proxies() {
        let peer: Option<IpAddr> = "10.0.0.9".parse().ok();
        assert_eq!(client_address(peer, &["203.0.113.7"], 0), "10.0.0.9", "no proxy: the header is ignored");
        assert_eq!(client_address(peer, &["198.51.100.1, 203.0.113.7"], 1), "203.0.113.7");
        assert_eq!(client_address(peer, &["198.51.100.1", "203.0.113.7"], 1), "203.0.113.7", "several headers");
        assert_eq!(client_address(peer, &["spoofed, 203.0.113.7, 10.0.0.2"], 2), "203.0.113.7");
        assert_eq!(client_address(peer, &[], 1), "10.0.0.9", "no header: the peer");
        assert_eq!(client_address(peer, &["not-an-ip"], 1), "10.0.0.9");
        assert_eq!(client_address(None, &[], 0), "unknown");
    }
}
