//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use saaschat_platform::auth::Authenticator;
use saaschat_platform::http::ShutdownSignal;

use crate::cache::ResponseCache;
use crate::conversations::live::LiveStreams;
use crate::conversations::store::Store;
use crate::gateway::Gateway;

/// Cloned for every request by axum's extractors: one reference count, not one per member.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub gateway: Arc<Gateway>,
    pub store: Store,
    pub authenticator: Authenticator,
    pub live: LiveStreams,
    pub cache: ResponseCache,
    pub shutdown: ShutdownSignal,
    pub streaming: StreamingSettings,
}

/// Keep-alive and WebSocket liveness.
#[derive(Clone, Debug)]
pub struct StreamingSettings {
    /// How often an SSE comment is sent while no event is, so proxies keep the connection open.
    pub keep_alive: Duration,
    /// How often the WebSocket is pinged; a client that has not answered two pings is disconnected.
    pub ws_ping: Duration,
}

impl Default for StreamingSettings {
    fn default() -> Self {
        StreamingSettings { keep_alive: Duration::from_secs(15), ws_ping: Duration::from_secs(20) }
    }
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Authenticator {
        state.authenticator.clone()
    }
}
