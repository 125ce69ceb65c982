//! Names and labels of everything the operator creates.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use saaschat_crds::ChatTenant;

/// The one field manager for every server-side apply.
pub const FIELD_MANAGER: &str = "saaschat-operator";
/// Finalizer that runs the tenant's deletion policy.
pub const TENANT_FINALIZER: &str = "saaschat.io/tenant-cleanup";
/// Annotation that pauses reconciliation of one ChatTenant.
pub const RECONCILE_ANNOTATION: &str = "saaschat.io/reconcile";
pub const RECONCILE_PAUSED: &str = "paused";

// The operator sets labels in its own `saaschat.io/` space and these four of `app.kubernetes.io/` only; never
// `app.kubernetes.io/instance`, which Argo CD tracks its applications by (a value of ours would be reverted on
// every sync, and the namespace would fight over it).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_TENANT: &str = "saaschat.io/tenant";
/// The proof that a namespace belongs to a tenant: its UID, set by the operator when it creates the namespace
/// (an admission policy lets no one else set it). A namespace without it is never touched.
pub const LABEL_TENANT_UID: &str = "saaschat.io/tenant-uid";
pub const LABEL_COMPONENT: &str = "saaschat.io/component";
pub const MANAGED_BY: &str = "saaschat-operator";

/// Label selector that finds every object this operator manages.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// The workloads of a tenant, named as the services know them.
pub use saaschat_contract::Component;

/// The namespace a tenant lives in.
pub fn tenant_namespace(tenant: &ChatTenant) -> String {
    tenant.spec.namespace.clone().unwrap_or_else(|| format!("tenant-{}", tenant_name(tenant)))
}

pub fn tenant_name(tenant: &ChatTenant) -> &str {
    tenant.metadata.name.as_deref().unwrap_or_default()
}

/// Strips cached metadata down to what the operator reads of the objects it owns: identity, change markers,
/// deletion, the tenant label and (on namespaces) the proof of ownership. A label map alone costs about a
/// kilobyte per object in memory.
pub fn keep_only_tenant_label(meta: &mut ObjectMeta) {
    meta.labels = meta.labels.take().and_then(|mut labels| {
        let kept: BTreeMap<String, String> =
            [LABEL_TENANT, LABEL_TENANT_UID].into_iter().filter_map(|key| labels.remove_entry(key)).collect();
        (!kept.is_empty()).then_some(kept)
    });
    meta.annotations = None;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.creation_timestamp = None;
}

/// Labels on every object of a tenant; `component` is absent on tenant-wide objects.
pub fn labels(tenant: &str, component: Option<Component>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_PART_OF.to_string(), "saaschat".to_string()),
        (LABEL_TENANT.to_string(), tenant.to_string()),
    ]);
    if let Some(component) = component {
        labels.insert(LABEL_NAME.to_string(), component.name().to_string());
        labels.insert(LABEL_COMPONENT.to_string(), component.name().to_string());
    }
    labels
}

/// The labels that select one component's pods (a subset of `labels`, stable for the object's lifetime).
pub fn selector_labels(tenant: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_TENANT.to_string(), tenant.to_string()),
        (LABEL_COMPONENT.to_string(), component.name().to_string()),
    ])
}

/// Names of the Secrets in a tenant namespace.
pub mod secret {
    pub const JWT_SIGNING_KEY: &str = "jwt-signing-key";
    pub const POSTGRES: &str = "postgres-credentials";
    pub const REDIS: &str = "redis-credentials";
    pub const SMTP: &str = "smtp-credentials";
    pub const STRIPE: &str = "stripe-credentials";

    /// The copy of an AIProvider's API key.
    pub fn provider(provider: &str) -> String {
        format!("provider-{provider}")
    }
}

/// The tenant configuration ConfigMap; the document inside is `saaschat_contract::paths::CONFIG_FILE_NAME`.
pub const CONFIG_MAP: &str = "tenant-config";
/// Role that lets the billing service write its Subscription's status.
pub const BILLING_ROLE: &str = "billing-subscription-status";
/// The RoleBinding through which the operator reaches the Secrets of one tenant namespace, and the ClusterRole
/// it binds (the chart's): the operator holds no Secret permission outside its own namespace and the tenants'.
pub const OPERATOR_ACCESS: &str = "saaschat-operator";
pub const OPERATOR_TENANT_ROLE: &str = "saaschat-operator-tenant";

/// Where pods find their configuration and secrets.
pub mod paths {
    pub use saaschat_contract::paths::CONFIG_DIR;
    pub const SECRETS_DIR: &str = "/var/run/secrets/saaschat";

    pub fn provider_key_file(provider: &str) -> String {
        format!("{SECRETS_DIR}/providers/{provider}/api-key")
    }
    pub fn jwt_dir() -> String {
        format!("{SECRETS_DIR}/jwt")
    }
    pub fn smtp_dir() -> String {
        format!("{SECRETS_DIR}/smtp")
    }
    pub fn stripe_dir() -> String {
        format!("{SECRETS_DIR}/stripe")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_metadata_keeps_identity_markers_and_the_tenant_label_only() {
        let mut meta = ObjectMeta {
            name: Some("chat".into()),
            uid: Some("u1".into()),
            resource_version: Some("7".into()),
            generation: Some(2),
            labels: Some(labels("acme", Some(Component::Chat))),
            annotations: Some([("note".to_string(), "x".to_string())].into()),
            ..ObjectMeta::default()
        };
        keep_only_tenant_label(&mut meta);
        assert_eq!(meta.labels, Some(BTreeMap::from([(LABEL_TENANT.to_string(), "acme".to_string())])));
        assert_eq!(
            (meta.uid.as_deref(), meta.resource_version.as_deref(), meta.generation),
            (Some("u1"), Some("7"), Some(2))
        );
        assert!(meta.annotations.is_none());

        let mut unlabelled = ObjectMeta::default();
        keep_only_tenant_label(&mut unlabelled);
        assert!(unlabelled.labels.is_none());
    }
}
