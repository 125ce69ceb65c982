//! Reloads the catalog when the mounted ConfigMap or a provider key Secret changes. Kubernetes updates those
//! mounts by swapping a symlink, which file-change notifications report unreliably, so the files' contents
//! are fingerprinted every few seconds instead. A document that does not parse, or names another tenant,
//! leaves the running catalog in place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use saaschat_platform::config::TenantConfig;
use saaschat_platform::http::ShutdownSignal;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::Catalog;
use crate::gateway::CatalogHandle;

/// A digest of the tenant file and every key file it names (never logged: it is derived from keys).
pub fn fingerprint(config_file: &Path, config: Option<&TenantConfig>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(config_file).unwrap_or_default());
    for provider in config.map(|config| config.providers.as_slice()).unwrap_or_default() {
        hasher.update([0]);
        hasher.update(std::fs::read(&provider.api_key_file).unwrap_or_default());
    }
    hasher.finalize().into()
}

pub fn read_key(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Builds the catalog from the files, logging what cannot be used.
pub fn build(config: &TenantConfig) -> Catalog {
    let (catalog, problems) = Catalog::build(config, read_key);
    for problem in &problems {
        tracing::error!(problem = %problem, "provider left out of the catalog");
    }
    catalog
}

pub fn spawn(
    config_file: PathBuf,
    tenant: String,
    handle: CatalogHandle,
    interval: Duration,
    shutdown: ShutdownSignal,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut current = TenantConfig::load(&config_file).ok();
        let mut last = fingerprint(&config_file, current.as_ref());
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.clone().triggered() => return,
            }
            let latest = fingerprint(&config_file, current.as_ref());
            if latest == last {
                continue;
            }
            match TenantConfig::load(&config_file) {
                Ok(config) if config.tenant == tenant => {
                    handle.replace(build(&config));
                    last = fingerprint(&config_file, Some(&config));
                    current = Some(config);
                    tracing::info!("tenant configuration reloaded");
                }
                Ok(config) => {
                    tracing::error!(file_tenant = %config.tenant, %tenant, "the new tenant configuration is for another tenant; keeping the old one");
                    last = latest;
                }
                Err(error) => {
                    tracing::error!(%error, "the new tenant configuration is not valid; keeping the old one");
                    last = latest;
                }
            }
        }
    })
}
