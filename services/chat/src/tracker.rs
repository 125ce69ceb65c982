//! Counts work the HTTP server does not wait for (stream drivers whose client left, WebSocket sessions), so
//! shutdown can wait for it to end within the grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct TaskTracker {
    running: Arc<watch::Sender<usize>>,
}

impl Default for TaskTracker {
    fn default() -> Self {
        TaskTracker { running: Arc::new(watch::channel(0).0) }
    }
}

/// Held while the work runs.
pub struct TaskGuard {
    running: Arc<watch::Sender<usize>>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.running.send_modify(|running| *running = running.saturating_sub(1));
    }
}

impl TaskTracker {
    pub fn enter(&self) -> TaskGuard {
        self.running.send_modify(|running| *running += 1);
        TaskGuard { running: self.running.clone() }
    }

    pub fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Waits until nothing runs; `false` if the timeout came first.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let mut receiver = self.running.subscribe();
        tokio::time::timeout(timeout, receiver.wait_for(|running| *running == 0)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_every_guard() {
        let tracker = TaskTracker::default();
        assert!(tracker.wait_idle(Duration::from_millis(10)).await);
        let guard = tracker.enter();
        let second = tracker.enter();
        assert_eq!(tracker.running(), 2);
        assert!(!tracker.wait_idle(Duration::from_millis(10)).await);
        drop(guard);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(second);
        });
        assert!(tracker.wait_idle(Duration::from_secs(2)).await);
    }
}
