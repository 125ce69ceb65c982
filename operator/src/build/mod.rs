//! Pure builders of a tenant's desired state: spec and resolved inputs in, Kubernetes objects out.
//! Nothing here talks to the API server; every function is deterministic so that unchanged input yields
//! byte-identical objects (which is what lets the apply step skip writes).

mod config_map;
pub(crate) mod datastores;
mod ingress;
pub(crate) mod namespace;
mod network_policy;
mod rbac;
mod scaling;
pub(crate) mod secrets;
mod security;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::DynamicObject;
use saaschat_crds::{AIProviderSpec, ChatTenant};
use serde::Serialize;

use crate::kinds::OwnedKind;
use crate::names::{self, Component};
use crate::plan::{EffectivePlan, Suspension};
use crate::settings::Settings;

pub use secrets::{CopiedKey, DesiredSecret, GeneratedSecret, remembered_copies, stale_copies};

/// An AIProvider a tenant uses, with the models the tenant may use from it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedProvider {
    pub name: String,
    pub spec: AIProviderSpec,
    pub allowed_models: Vec<String>,
}

/// `spec.replicas` of each service's Deployment as it is now; a Deployment that does not exist has no entry.
pub type CurrentReplicas = BTreeMap<Component, i32>;

/// Everything the builders need, already resolved and validated.
#[derive(Clone, Copy, Debug)]
pub struct TenantInputs<'a> {
    pub tenant: &'a ChatTenant,
    pub providers: &'a [ResolvedProvider],
    pub plan: &'a EffectivePlan,
    pub suspension: Suspension,
    pub settings: &'a Settings,
    pub replicas: &'a CurrentReplicas,
}

impl TenantInputs<'_> {
    pub fn name(&self) -> &str {
        names::tenant_name(self.tenant)
    }

    pub fn namespace(&self) -> String {
        names::tenant_namespace(self.tenant)
    }

    /// Metadata of a namespaced child object: labels and the controller owner reference.
    fn meta(&self, name: impl Into<String>, component: Option<Component>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace()),
            labels: Some(names::labels(self.name(), component)),
            owner_references: self.owner_references(),
            ..ObjectMeta::default()
        }
    }

    /// `None` when the tenant has no uid yet (the `render` subcommand works on files, not API objects).
    fn owner_references(&self) -> Option<Vec<OwnerReference>> {
        self.tenant.controller_owner_ref(&()).map(|owner| vec![owner])
    }

    fn managed_postgres(&self) -> bool {
        self.tenant.spec.database.mode == saaschat_crds::DataStoreMode::Managed
    }

    fn managed_redis(&self) -> bool {
        self.tenant.spec.redis.mode == saaschat_crds::DataStoreMode::Managed
    }
}

/// One object the operator wants to exist, ready for server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObject {
    pub kind: OwnedKind,
    pub object: DynamicObject,
}

impl DesiredObject {
    fn new<K>(kind: OwnedKind, typed: K) -> Self
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let mut value = serde_json::to_value(&typed).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), K::api_version(&()).into());
            map.insert("kind".into(), K::kind(&()).into());
        }
        // A typed Kubernetes object always has this shape; an empty object would be caught by the API server.
        let object = serde_json::from_value(value).unwrap_or_else(|_| DynamicObject::new("", &kind.api_resource()));
        DesiredObject { kind, object }
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object.metadata.namespace.as_deref()
    }
}

/// The whole desired state of one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    /// Objects in the order they are applied (namespace first, workloads after their configuration).
    pub objects: Vec<DesiredObject>,
    /// Secrets, applied separately because their contents are generated or copied at apply time.
    pub secrets: Vec<DesiredSecret>,
}

/// Builds every object of a tenant (ARCHITECTURE §4).
pub fn desired_state(inputs: &TenantInputs<'_>) -> DesiredState {
    let mut objects = vec![namespace::namespace(inputs)];
    objects.push(rbac::operator_access(inputs));
    objects.extend(rbac::service_accounts(inputs));
    objects.extend(rbac::billing_role(inputs));
    objects.push(config_map::tenant_config(inputs));
    objects.extend(workloads::services(inputs));
    objects.extend(datastores::data_stores(inputs));
    objects.extend(workloads::deployments(inputs));
    objects.extend(scaling::autoscalers(inputs));
    objects.extend(scaling::disruption_budgets(inputs));
    objects.extend(network_policy::network_policies(inputs));
    objects.extend(ingress::ingress(inputs));
    DesiredState { objects, secrets: secrets::secrets(inputs) }
}

/// The public URL of a tenant, or its in-cluster address when it has no ingress.
pub fn tenant_url(tenant: &ChatTenant) -> String {
    match &tenant.spec.ingress {
        Some(ingress) if ingress.tls.is_some() => format!("https://{}", ingress.host),
        Some(ingress) => format!("http://{}", ingress.host),
        None => format!(
            "http://{}.{}.svc:{}",
            Component::Chat.name(),
            names::tenant_namespace(tenant),
            workloads::HTTP_PORT
        ),
    }
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
