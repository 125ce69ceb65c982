//! The saaschat API, group `saaschat.io`, version `v1alpha1`.
//!
//! The Rust types are the source of truth; the CRD manifests in `crds/manifests/` are generated from them by
//! `cargo run -p saaschat-crds --bin crdgen` and a test fails when they are stale.

mod common;
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
    vec![AIProvider::crd(), ChatTenant::crd(), Subscription::crd()]
}

/// The manifest file name of a CRD (`chattenants.saaschat.io.yaml`).
pub fn manifest_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}

/// A CRD rendered as the YAML document that is checked in.
pub fn manifest_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "# Generated from crds/src by `cargo run -p saaschat-crds --bin crdgen`. Do not edit.\n{}",
        serde_yaml::to_string(crd)?
    ))
}
