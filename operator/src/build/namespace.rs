//! The tenant namespace, with Pod Security `restricted` enforced.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{DesiredObject, TenantInputs};
use crate::kinds::OwnedKind;
use crate::names;

pub fn namespace(inputs: &TenantInputs<'_>) -> DesiredObject {
    let mut labels = names::labels(inputs.name(), None);
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
