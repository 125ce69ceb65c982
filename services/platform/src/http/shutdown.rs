//! Graceful shutdown: one [`Shutdown`] per process, triggered by SIGTERM or SIGINT (or by hand), and any
//! number of [`ShutdownSignal`]s that the server and long-lived streams (SSE, WebSocket) watch so they end
//! themselves: axum does not end open streams on its own, and Kubernetes kills the pod after its grace period.

use std::sync::Arc;

use tokio::sync::watch;

/// The trigger. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

/// The watchable side: cheap to clone, one per stream.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    receiver: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (sender, _) = watch::channel(false);
        Shutdown { sender: Arc::new(sender) }
    }

    /// Starts the shutdown. Idempotent.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal { receiver: self.sender.subscribe() }
    }

    /// Triggers the shutdown on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
    pub fn trigger_on_os_signals(&self) -> tokio::task::JoinHandle<()> {
        let shutdown = self.clone();
        tokio::spawn(async move {
            wait_for_os_signal().await;
            tracing::info!("shutdown signal received: draining");
            shutdown.trigger();
        })
    }
}

#[cfg(unix)]
async fn wait_for_os_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C triggers shutdown");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_os_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

impl ShutdownSignal {
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once the shutdown has started (at once if it already has). Use it to end a stream, for example
    /// `stream.take_until(signal.clone().triggered())`.
    pub async fn triggered(mut self) {
        // An error means the `Shutdown` is gone, which only happens when the process is ending anyway.
        let _ = self.receiver.wait_for(|triggered| *triggered).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_signal_sees_the_trigger_even_if_it_subscribed_late() {
        let shutdown = Shutdown::new();
        let early = shutdown.signal();
        assert!(!early.is_triggered());
        let waiter = tokio::spawn(early.clone().triggered());
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").expect("task");
        let late = shutdown.signal();
        assert!(late.is_triggered());
        tokio::time::timeout(Duration::from_secs(1), late.triggered()).await.expect("resolves at once");
        shutdown.trigger();
        assert!(early.is_triggered());
    }
}
