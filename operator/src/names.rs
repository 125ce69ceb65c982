//! Names and labels of everything the operator creates.

use std::collections::BTreeMap;

use saaschat_crds::ChatTenant;

/// The one field manager for every server-side apply.
pub const FIELD_MANAGER: &str = "saaschat-operator";
/// Finalizer that runs the tenant's deletion policy.
pub const TENANT_FINALIZER: &str = "saaschat.io/tenant-cleanup";
/// Annotation that pauses reconciliation of one ChatTenant.
pub const RECONCILE_ANNOTATION: &str = "saaschat.io/reconcile";
pub const RECONCILE_PAUSED: &str = "paused";

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_TENANT: &str = "saaschat.io/tenant";
pub const LABEL_COMPONENT: &str = "saaschat.io/component";
pub const MANAGED_BY: &str = "saaschat-operator";

/// Label selector that finds every object this operator manages.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// The workloads of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Auth,
    Chat,
    Billing,
    EmailWorker,
    Postgres,
    Redis,
}

impl Component {
    /// The four stateless services, in start-up order.
    pub const SERVICES: [Component; 4] = [Component::Auth, Component::Chat, Component::Billing, Component::EmailWorker];
    pub const DATA_STORES: [Component; 2] = [Component::Postgres, Component::Redis];

    pub fn name(self) -> &'static str {
        match self {
            Component::Auth => "auth",
            Component::Chat => "chat",
            Component::Billing => "billing",
            Component::EmailWorker => "email-worker",
            Component::Postgres => "postgres",
            Component::Redis => "redis",
        }
    }
}

/// The namespace a tenant lives in.
pub fn tenant_namespace(tenant: &ChatTenant) -> String {
    tenant.spec.namespace.clone().unwrap_or_else(|| format!("tenant-{}", tenant_name(tenant)))
}

pub fn tenant_name(tenant: &ChatTenant) -> &str {
    tenant.metadata.name.as_deref().unwrap_or_default()
}

/// Labels on every object of a tenant; `component` is absent on tenant-wide objects.
pub fn labels(tenant: &str, component: Option<Component>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_PART_OF.to_string(), "saaschat".to_string()),
        (LABEL_INSTANCE.to_string(), tenant.to_string()),
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

/// The tenant configuration ConfigMap and the file inside it.
pub const CONFIG_MAP: &str = "tenant-config";
pub const CONFIG_FILE: &str = "tenant.json";
/// Role that lets the billing service write its Subscription's status.
pub const BILLING_ROLE: &str = "billing-subscription-status";

/// Where pods find their configuration and secrets.
pub mod paths {
    pub const CONFIG_DIR: &str = "/etc/saaschat";
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
