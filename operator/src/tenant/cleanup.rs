//! What happens when a ChatTenant is deleted: its `deletionPolicy`, applied only to what the tenant owns.
//!
//! Everything the operator creates is owned by the tenant, so garbage collection removes it once the tenant
//! is gone. `Delete` also deletes the namespace, which takes the PersistentVolumeClaims with it. `Retain`
//! releases the namespace and the data Secrets from the tenant (removes their owner reference) so that
//! garbage collection leaves them, and with them the PVCs, which no owner holds.
//!
//! Nothing is deleted or released unless the namespace carries this tenant's UID, read from the API server
//! just before: a tenant that was refused its namespace (`NamespaceConflict`) leaves with nothing touched.
//! Each write is guarded by a precondition (the namespace's UID and resourceVersion, each Secret's
//! resourceVersion), so an object replaced or handed to someone else meanwhile is not hit.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use saaschat_crds::{ChatTenant, DeletionPolicy};
use serde_json::json;

use super::namespace::owned;
use super::reconcile::{observe_components, write_status};
use super::status::{self, Observation};
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

/// What deleting the tenant does, for its status while it goes. Pure.
pub fn deleting_message(policy: DeletionPolicy, namespace: &str, owned: bool) -> String {
    match (policy, owned) {
        (_, false) => format!("namespace {namespace} was never this tenant's: nothing in it is deleted"),
        (DeletionPolicy::Delete, true) => {
            format!("deletionPolicy Delete: deleting namespace {namespace} with its data")
        }
        (DeletionPolicy::Retain, true) => {
            format!("deletionPolicy Retain: keeping namespace {namespace} with its volumes and data Secrets")
        }
    }
}

pub async fn cleanup(tenant: &ChatTenant, ctx: &Context) -> Result<Action, Error> {
    let namespace = names::tenant_namespace(tenant);
    let owned = owned(tenant, ctx, &namespace).await?;
    let policy = tenant.spec.deletion_policy;
    report_deleting(tenant, ctx, deleting_message(policy, &namespace, owned.is_some())).await;
    let note = match (policy, owned) {
        (_, None) => format!("namespace {namespace} was never this tenant's: nothing was deleted or released"),
        (DeletionPolicy::Delete, Some(existing)) => {
            let precondition = Preconditions { uid: existing.uid(), resource_version: existing.resource_version() };
            let params = DeleteParams { preconditions: Some(precondition), ..DeleteParams::background() };
            match Api::<Namespace>::all(ctx.client.clone()).delete(&namespace, &params).await {
                Ok(_) => ctx.metrics.record_write_of("Namespace", "delete"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(Error::Cleanup(error)),
            }
            format!("deleted namespace {namespace} with all its data")
        }
        (DeletionPolicy::Retain, Some(existing)) => {
            let kept = retained_secrets(tenant, ctx);
            let secrets_api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
            let tenant_uid = tenant.uid().unwrap_or_default();
            for name in &kept {
                let Some(secret) = secrets_api.get_opt(name).await.map_err(Error::Cleanup)? else { continue };
                if secret.owner_references().iter().any(|owner| owner.uid == tenant_uid) {
                    release_owner(&secrets_api, name, secret.resource_version()).await?;
                }
            }
            release_owner(&Api::<Namespace>::all(ctx.client.clone()), &namespace, existing.resource_version()).await?;
            format!("kept namespace {namespace} with its PersistentVolumeClaims and Secrets {}", kept.join(", "))
        }
    };
    ctx.applier.ledger.forget_namespace(&namespace);
    ctx.verified_secrets.forget_namespace(&namespace);
    let event = Event {
        type_: EventType::Normal,
        reason: match policy {
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

/// Says in the status that the tenant is going, and how. A failure to say so does not stop the cleanup.
async fn report_deleting(tenant: &ChatTenant, ctx: &Context, message: String) {
    let previous = tenant.status.clone().unwrap_or_default();
    let observation = Observation {
        problems: &[],
        suspension: Suspension::None,
        paused: false,
        components: observe_components(tenant, ctx, Suspension::None),
        plan: previous.plan.clone(),
        copied_secrets: previous.copied_secrets.clone(),
        subscription_plan: None,
        deleting: Some(message),
    };
    if let Err(error) = write_status(tenant, ctx, status::compute(tenant, observation, Timestamp::now())).await {
        tracing::warn!(tenant = %tenant.name_any(), %error, "cannot report the deletion in the status");
    }
}

/// Removes every owner reference of an object, provided it is still at `resource_version`.
async fn release_owner<K>(api: &Api<K>, name: &str, resource_version: Option<String>) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let release = Patch::Merge(json!({ "metadata": { "ownerReferences": null, "resourceVersion": resource_version } }));
    match api.patch(name, &PatchParams::default(), &release).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(Error::Cleanup(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_of_a_deleted_tenant_says_what_goes() {
        assert!(
            deleting_message(DeletionPolicy::Delete, "tenant-acme", true).contains("deleting namespace tenant-acme")
        );
        assert!(deleting_message(DeletionPolicy::Retain, "tenant-acme", true).contains("keeping namespace"));
        for policy in [DeletionPolicy::Delete, DeletionPolicy::Retain] {
            assert!(deleting_message(policy, "shared", false).contains("nothing in it is deleted"));
        }
    }
}
