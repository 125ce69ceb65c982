//! The AIProvider controller: reports whether each provider's API key Secret is usable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Future, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use saaschat_crds::{AIProvider, AIProviderStatus};
use serde_json::json;

use crate::backoff::Backoff;
use crate::conditions::{Decided, merge};
use crate::metrics::Metrics;
use crate::names::FIELD_MANAGER;
use crate::tenant::validate::{SourceSecrets, check_key};

pub const CONTROLLER: &str = "aiprovider";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Secret {name}: {source}")]
    ReadSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
}

pub struct Context {
    pub client: Client,
    pub secret_namespace: String,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub backoff: Backoff<String>,
    pub resync: Duration,
}

/// The status of a provider given whether its key Secret holds the key. Pure.
pub fn compute_status(
    provider: &AIProvider,
    secrets: &SourceSecrets,
    secret_namespace: &str,
    now: Timestamp,
) -> AIProviderStatus {
    let previous = provider.status.clone().unwrap_or_default();
    let ready = match check_key(secrets, &provider.spec.api_key_secret_ref, secret_namespace) {
        Ok(()) => Decided::new("Ready", true, "SecretFound", "the API key Secret holds a key"),
        Err(message) => Decided::new("Ready", false, "ProviderSecretMissing", message),
    };
    AIProviderStatus {
        conditions: merge(&previous.conditions, vec![ready], provider.metadata.generation, now),
        model_count: i32::try_from(provider.spec.models.len()).unwrap_or(i32::MAX),
        observed_generation: provider.metadata.generation,
    }
}

async fn reconcile(provider: Arc<AIProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = provider.name_any();
    let secret_name = &provider.spec.api_key_secret_ref.name;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.secret_namespace)
        .get_opt(secret_name)
        .await
        .map_err(|source| Error::ReadSecret { name: secret_name.clone(), source })?;
    let secrets: SourceSecrets = BTreeMap::from([(secret_name.clone(), secret.map(|s| s.data.unwrap_or_default()))]);
    let status = compute_status(&provider, &secrets, &ctx.secret_namespace, Timestamp::now());
    let previous = provider.status.clone().unwrap_or_default();
    if status != previous {
        let patch = json!({
            "apiVersion": AIProvider::api_version(&()),
            "kind": AIProvider::kind(&()),
            "metadata": { "name": name },
            "status": status,
        });
        Api::<AIProvider>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::Status)?;
        ctx.metrics.record_write_of("AIProvider/status", "apply");
        let (before, after) = (previous.conditions.first(), status.conditions.first());
        if let Some(after) = after.filter(|a| before.is_none_or(|b| b.reason != a.reason)) {
            let event = Event {
                type_: if after.status == "True" { EventType::Normal } else { EventType::Warning },
                reason: after.reason.clone(),
                note: Some(after.message.clone()),
                action: "ReadyChanged".into(),
                secondary: None,
            };
            if let Err(error) = ctx.recorder.publish(&event, &provider.object_ref(&())).await {
                tracing::warn!(provider = %name, %error, "cannot publish event");
            }
        }
    }
    ctx.metrics.record_reconcile(CONTROLLER, started.elapsed());
    ctx.backoff.reset(&name);
    Ok(Action::requeue(ctx.resync))
}

fn error_policy(provider: Arc<AIProvider>, error: &Error, ctx: Arc<Context>) -> Action {
    let reason = match error {
        Error::ReadSecret { .. } => "read",
        Error::Status(_) => "status",
    };
    ctx.metrics.record_failure(CONTROLLER, reason);
    let delay = ctx.backoff.next_delay(provider.name_any());
    tracing::warn!(provider = %provider.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the AIProvider controller until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(Api::<AIProvider>::all(ctx.client.clone()), watcher::Config::default());
    let index = controller.store();
    let source_secret_events = crate::tenant::source_secret_events(&ctx.client, &ctx.secret_namespace);
    controller
        .watches_stream(source_secret_events, move |secret: PartialObjectMeta<Secret>| {
            let name = secret.name_any();
            index
                .state()
                .into_iter()
                .filter(|p| p.spec.api_key_secret_ref.name == name)
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "provider reconcile did not complete");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::provider;
    use k8s_openapi::ByteString;

    #[test]
    fn ready_follows_the_key_secret() {
        let p = provider("openai");
        let now = Timestamp::from_second(10).expect("time");
        let with_key: SourceSecrets = BTreeMap::from([(
            "openai".to_string(),
            Some(BTreeMap::from([("api-key".to_string(), ByteString(b"sk-live".to_vec()))])),
        )]);
        let status = compute_status(&p, &with_key, "ops", now);
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.model_count, 2);
        assert_eq!(status.observed_generation, Some(1));

        let missing: SourceSecrets = BTreeMap::from([("openai".to_string(), None)]);
        let status = compute_status(&p, &missing, "ops", now);
        assert_eq!(status.conditions[0].reason, "ProviderSecretMissing");
        assert!(status.conditions[0].message.contains("ops/openai"));
        assert!(!serde_json::to_string(&status).expect("json").contains("sk-live"));
    }
}
