//! What happens when a ChatTenant is deleted: its `deletionPolicy`.
//!
//! Everything the operator creates is owned by the tenant, so garbage collection removes it once the tenant
//! is gone. `Delete` also deletes the namespace, which takes the PersistentVolumeClaims with it. `Retain`
//! releases the namespace and the data Secrets from the tenant (removes their owner reference) so that
//! garbage collection leaves them, and with them the PVCs, which no owner holds.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use saaschat_crds::{ChatTenant, DeletionPolicy};
use serde_json::json;

use super::{Context, Error};
use crate::build::secrets::{SecretSource, secrets};
use crate::build::{CurrentReplicas, ResolvedProvider, TenantInputs};
use crate::names;
use crate::plan::{EffectivePlan, Suspension};

/// The Secrets kept with the data under `Retain`, by name.
pub fn retained_secrets(tenant: &ChatTenant, ctx: &Context) -> Vec<String> {
    let plan = EffectivePlan::of(tenant.spec.plan, None);
    let no_providers: [ResolvedProvider; 0] = [];
    let inputs = TenantInputs {
        tenant,
        providers: &no_providers,
        plan: &plan,
        suspension: Suspension::None,
        settings: &ctx.settings,
        replicas: &CurrentReplicas::new(),
    };
    secrets(&inputs)
        .into_iter()
        .filter(|s| s.retained_with_data && matches!(s.source, SecretSource::Generated(_)))
        .map(|s| s.name().to_string())
        .collect()
}

pub async fn cleanup(tenant: &ChatTenant, ctx: &Context) -> Result<Action, Error> {
    let namespace = names::tenant_namespace(tenant);
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    let note = match tenant.spec.deletion_policy {
        DeletionPolicy::Delete => {
            match namespaces.delete(&namespace, &DeleteParams::background()).await {
                Ok(_) => ctx.metrics.record_write_of("Namespace", "delete"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(Error::Cleanup(error)),
            }
            format!("deleted namespace {namespace} with all its data")
        }
        DeletionPolicy::Retain => {
            let release = Patch::Merge(json!({ "metadata": { "ownerReferences": null } }));
            let params = PatchParams::default();
            let secrets_api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
            let kept = retained_secrets(tenant, ctx);
            for name in &kept {
                release_owner(&secrets_api, name, &params, &release).await?;
            }
            release_owner(&namespaces, &namespace, &params, &release).await?;
            format!("kept namespace {namespace} with its PersistentVolumeClaims and Secrets {}", kept.join(", "))
        }
    };
    ctx.applier.ledger.forget_namespace(&namespace);
    ctx.verified_secrets.forget_namespace(&namespace);
    let event = Event {
        type_: EventType::Normal,
        reason: match tenant.spec.deletion_policy {
            DeletionPolicy::Delete => "DataDeleted".into(),
            DeletionPolicy::Retain => "DataRetained".into(),
        },
        note: Some(note),
        action: "Cleanup".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &tenant.object_ref(&())).await {
        tracing::warn!(tenant = %tenant.name_any(), %error, "cannot publish event");
    }
    Ok(Action::await_change())
}

async fn release_owner<K>(
    api: &Api<K>,
    name: &str,
    params: &PatchParams,
    release: &Patch<serde_json::Value>,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.patch(name, params, release).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(Error::Cleanup(error)),
    }
}
