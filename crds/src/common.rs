//! Types shared by more than one resource.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition type every saaschat resource reports; identical in shape to `metav1.Condition`.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Kubernetes object names that live inside one namespace (DNS-1123 subdomain).
pub(crate) const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Namespace names and other DNS-1123 labels.
pub(crate) const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Keys of a Secret's `data` map.
pub(crate) const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// Model identifiers as providers spell them (`gpt-4o-mini`, `claude-sonnet-4-5`, `models/gemini-2.5-pro`,
/// `meta-llama/Llama-3.1-8B-Instruct`).
pub(crate) const MODEL_NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$";

/// A key of a Secret in the operator's secret namespace.
///
/// Cluster-scoped resources cannot point into arbitrary namespaces without handing the operator read access
/// to every Secret in the cluster, so, like cert-manager's ClusterIssuers, every referenced Secret lives in
/// one namespace: the one the operator runs in (its `--secret-namespace`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret in the operator's secret namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

/// A whole Secret in the operator's secret namespace (its keys are documented where it is used).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret in the operator's secret namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// A commercial plan. `custom` takes its limits from the Subscription's `limits`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PlanName {
    #[default]
    Free,
    Pro,
    Enterprise,
    Custom,
}

impl PlanName {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanName::Free => "free",
            PlanName::Pro => "pro",
            PlanName::Enterprise => "enterprise",
            PlanName::Custom => "custom",
        }
    }
}

/// Quotas of a plan. Every limit is enforced by the chat service before a provider is called.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanLimits {
    /// Input plus output tokens the whole tenant may use in one calendar month (UTC).
    #[schemars(range(min = 0, max = 1_000_000_000_000i64))]
    pub tokens_per_month: i64,
    /// Chat requests one user may start per minute.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_minute: i32,
    /// Users the tenant may have.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub seats: i32,
    /// Models the plan allows, a subset of the tenant's models. Empty allows all of the tenant's models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128), regex(pattern = MODEL_NAME_PATTERN)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allowed_models: Vec<String>,
}
