//! Lease-based leader election: only the replica holding the Lease runs the controllers (and so writes).

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

pub struct Leadership {
    state: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

/// Lease timings: a crashed leader is replaced after at most `LEASE_SECONDS`.
pub const LEASE_SECONDS: u64 = 15;
const GRACE_SECONDS: u64 = 5;

impl Leadership {
    pub async fn start(client: Client, namespace: &str, lease: &str, identity: &str) -> anyhow::Result<Self> {
        let manager = LeaseManagerBuilder::new(client, lease)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(GRACE_SECONDS)
            .build()
            .await?;
        let (state, task) = manager.watch().await;
        Ok(Leadership { state, task })
    }

    /// Resolves once this replica holds the Lease.
    pub async fn acquired(&mut self) -> anyhow::Result<()> {
        while !*self.state.borrow_and_update() {
            self.state.changed().await?;
        }
        Ok(())
    }

    /// Resolves when this replica no longer holds the Lease (or the election task ended).
    pub async fn lost(mut self) {
        loop {
            if !*self.state.borrow_and_update() || self.state.changed().await.is_err() {
                break;
            }
        }
        self.task.abort();
    }
}
