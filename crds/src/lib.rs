//! The saaschat API, group `saaschat.io`, version `v1alpha1`.
//!
//! The Rust types are the source of truth; the CRD manifests in `crds/manifests/` are generated from them by
//! `cargo run -p saaschat-crds --bin crdgen` and a test fails when they are stale.

mod common;
pub mod endpoint;
mod provider;
mod subscription;
mod tenant;

pub use common::{Condition, PlanLimits, PlanName, SecretKeyRef, SecretRef};
pub use provider::{AIProvider, AIProviderSpec, AIProviderStatus, ModelOffer, ProviderLimits, ProviderType};
pub use subscription::{
    SUBSCRIPTION_NAME, StripeIds, Subscription, SubscriptionSpec, SubscriptionState, SubscriptionStatus,
};
pub use tenant::{
    ChatTenant, ChatTenantSpec, ChatTenantStatus, ComponentSpec, ComponentStatus, Components, DataStoreMode,
    DatabaseSpec, DeletionPolicy, IngressSpec, IngressTls, MAX_TENANT_NAME_LENGTH, RedisSpec, Resources, SmtpSecurity,
    SmtpSpec, Storage, StripeSpec, TenantProvider,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every saaschat resource.
pub const GROUP: &str = "saaschat.io";

/// Every CRD of the API, in the order they should be installed.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![AIProvider::crd(), ChatTenant::crd(), Subscription::crd()].into_iter().map(with_metadata_name).collect()
}

/// Declares `metadata.name` in the schema, so that the rules on the name can point at it (`fieldPath`) and the
/// API server names the field in their messages instead of `<nil>`.
fn with_metadata_name(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) else { continue };
        let name = JSONSchemaProps {
            type_: Some("string".into()),
            description: Some("Name of the object; the rules on it are listed with the kind.".into()),
            ..JSONSchemaProps::default()
        };
        let metadata = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some(std::collections::BTreeMap::from([("name".to_string(), name)])),
            ..JSONSchemaProps::default()
        };
        schema.properties.get_or_insert_with(Default::default).insert("metadata".into(), metadata);
    }
    crd
}

/// The manifest file name of a CRD (`chattenants.saaschat.io.yaml`).
pub fn manifest_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}

/// The admission policies that guard the API and the operator (ValidatingAdmissionPolicies and their bindings),
/// as the chart ships them, rendered for an operator running in `secret_namespace` with `protected` namespaces
/// reserved besides it.
pub fn admission_policies(secret_namespace: &str, protected: &[&str]) -> String {
    let protected: Vec<String> = protected.iter().map(|name| format!("{name:?}")).collect();
    ADMISSION_POLICIES
        .replace("SECRET_NAMESPACE", secret_namespace)
        .replace("PROTECTED_NAMESPACES", &format!("[{}]", protected.join(",")))
}

/// The chart's file (the one definition of the policies), with its placeholders.
const ADMISSION_POLICIES: &str = include_str!("../../charts/saaschat/files/admission-policies.yaml");

/// Where the policies are checked in rendered for the default namespace, for installs without the chart.
pub const ADMISSION_POLICIES_FILE: &str = "admission-policies.yaml";

/// The checked-in rendering: for `saaschat-system`, no namespace protected besides it.
pub fn default_admission_policies() -> String {
    format!(
        "# Generated from charts/saaschat/files/admission-policies.yaml by `cargo run -p saaschat-crds --bin crdgen`,\n\
         # for an operator in saaschat-system. The Helm chart installs the same; apply this file only without it.\n{}",
        admission_policies("saaschat-system", &[])
    )
}

/// A CRD rendered as the YAML document that is checked in.
pub fn manifest_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "# Generated from crds/src by `cargo run -p saaschat-crds --bin crdgen`. Do not edit.\n{}",
        serde_yaml::to_string(crd)?
    ))
}
