//! The tenant namespace, with Pod Security `restricted` enforced and the proof that it is the tenant's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use saaschat_crds::ChatTenant;

use super::{DesiredObject, TenantInputs};
use crate::kinds::OwnedKind;
use crate::names;

pub fn namespace(inputs: &TenantInputs<'_>) -> DesiredObject {
    let mut labels = names::labels(inputs.name(), None);
    labels.extend(creation_labels(inputs.tenant));
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(format!("pod-security.kubernetes.io/{mode}"), "restricted".into());
        labels.insert(format!("pod-security.kubernetes.io/{mode}-version"), "latest".into());
    }
    DesiredObject::new(
        OwnedKind::Namespace,
        Namespace {
            metadata: ObjectMeta {
                name: Some(inputs.namespace()),
                labels: Some(labels),
                owner_references: inputs.owner_references(),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        },
    )
}

/// The labels a namespace is created with, a subset of the applied ones that never changes: the tenant's UID
/// (the proof of ownership), the operator's mark (so that its watch sees the namespace at once) and Pod
/// Security `restricted` from the first instant. No UID label without a UID (`render` works on files).
pub fn creation_labels(tenant: &ChatTenant) -> BTreeMap<String, String> {
    let name = names::tenant_name(tenant);
    let mut labels = BTreeMap::from([
        (names::LABEL_TENANT.to_string(), name.to_string()),
        (names::LABEL_MANAGED_BY.to_string(), names::MANAGED_BY.to_string()),
        ("pod-security.kubernetes.io/enforce".to_string(), "restricted".to_string()),
    ]);
    if let Some(uid) = &tenant.metadata.uid {
        labels.insert(names::LABEL_TENANT_UID.to_string(), uid.clone());
    }
    labels
}
