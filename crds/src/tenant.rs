//! `ChatTenant`: one isolated chat platform in a namespace of its own.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Condition, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, MODEL_NAME_PATTERN, PlanName, SecretKeyRef, SecretRef,
};

/// The longest tenant name: `tenant-<name>` must still be a valid namespace name (63 characters).
pub const MAX_TENANT_NAME_LENGTH: usize = 56;

/// A tenant of the chat platform. The operator turns it into a namespace with the auth, chat, billing and
/// email-worker services, their databases, secrets, autoscaling and network isolation.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "saaschat.io",
    version = "v1alpha1",
    kind = "ChatTenant",
    plural = "chattenants",
    singular = "chattenant",
    shortname = "ct",
    shortname = "tenant",
    category = "saaschat",
    status = "ChatTenantStatus",
    doc = "A tenant of the saaschat platform: an isolated chat service in a namespace of its own.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".status.plan"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","priority":1,"jsonPath":".status.namespace"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("self.metadata.name.size() <= 56").message("a ChatTenant name is at most 56 characters, so that tenant-<name> is a valid namespace").field_path(".metadata.name"),
    validation = kube::core::Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a ChatTenant name must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit").field_path(".metadata.name"),
)]
#[x_kube(
    validation = kube::core::Rule::new("self.providers.exists(p, p.models.exists(m, m == self.defaultModel))").message("defaultModel must be one of the models allowed in providers[].models").field_path(".defaultModel"),
    validation = kube::core::Rule::new("has(self.namespace) == has(oldSelf.namespace)").message("namespace cannot be set or unset after creation").field_path(".namespace"),
)]
#[serde(rename_all = "camelCase")]
pub struct ChatTenantSpec {
    /// Name shown to the tenant's users.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    /// Namespace the tenant lives in. Defaults to `tenant-<name>`; cannot be changed after creation. The
    /// operator creates it, or takes it over only when it already belongs to this tenant or was prepared for
    /// it (labelled `saaschat.io/tenant: <name>`); any other existing namespace is refused with the condition
    /// `NamespaceConflict` and left untouched. `default`, `kube-*` and the operator's own namespace are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    #[x_kube(
        validation = kube::core::Rule::new("self == oldSelf").message("namespace cannot be changed after creation"),
        validation = kube::core::Rule::new("self != 'default' && !self.startsWith('kube-')").message("namespace cannot be default or a kube-* system namespace"),
    )]
    pub namespace: Option<String>,
    /// AIProviders the tenant may use, with the models allowed from each.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub providers: Vec<TenantProvider>,
    /// The model used when a request names none. Must be listed in `providers[].models`.
    #[schemars(length(min = 1, max = 128), regex(pattern = MODEL_NAME_PATTERN))]
    pub default_model: String,
    /// The plan of the Subscription the operator creates when the tenant has none. Once the Subscription
    /// exists it decides: change the plan there (or through billing); a different value here is reported by
    /// the condition `PlanSpecIgnored`.
    #[serde(default)]
    pub plan: PlanName,
    /// Replicas, resources and images of the four services.
    #[serde(default)]
    pub components: Components,
    /// The tenant's PostgreSQL database.
    #[serde(default)]
    pub database: DatabaseSpec,
    /// The tenant's Redis.
    #[serde(default)]
    pub redis: RedisSpec,
    /// Public HTTP access. Without it the services are reachable only inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Outgoing mail. Without it the email worker keeps messages queued and reports them undeliverable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSpec>,
    /// Stripe account for paid plans. Without it billing endpoints answer that billing is not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeSpec>,
    /// Scale every service to zero while keeping all data. Clearing it restores the services.
    #[serde(default)]
    pub suspend: bool,
    /// What happens to the tenant's data (PVCs and the database Secret) when the ChatTenant is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One AIProvider and the models a tenant may use from it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantProvider {
    /// Name of the AIProvider.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
    /// Models of that provider the tenant may use; each must be offered by the AIProvider.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 128), regex(pattern = MODEL_NAME_PATTERN)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub models: Vec<String>,
}

/// The four services.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Components {
    /// The auth service (users, tokens, API keys).
    #[serde(default = "ComponentSpec::auth_default")]
    pub auth: ComponentSpec,
    /// The chat service (conversations, completions, web UI).
    #[serde(default = "ComponentSpec::chat_default")]
    pub chat: ComponentSpec,
    /// The billing service (Stripe).
    #[serde(default = "ComponentSpec::billing_default")]
    pub billing: ComponentSpec,
    /// The email worker (outbox to SMTP).
    #[serde(default = "ComponentSpec::email_worker_default")]
    pub email_worker: ComponentSpec,
}

impl Default for Components {
    fn default() -> Self {
        Components {
            auth: ComponentSpec::auth_default(),
            chat: ComponentSpec::chat_default(),
            billing: ComponentSpec::billing_default(),
            email_worker: ComponentSpec::email_worker_default(),
        }
    }
}

/// Scaling, resources and image of one service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not be greater than maxReplicas").field_path(".minReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Fewest replicas the autoscaler keeps.
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most replicas the autoscaler may run; the plan may lower it further.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Average CPU utilisation, in percent of requests, that the autoscaler aims for.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 10, max = 100))]
    pub target_cpu_utilization: i32,
    /// CPU and memory requests and limits. Defaults suit a small tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Full image reference overriding the operator's default (`<registry>/saaschat-<service>:<tag>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9._:/@-]*$"))]
    pub image: Option<String>,
}

fn default_cpu_target() -> i32 {
    70
}

impl ComponentSpec {
    fn with_replicas(min_replicas: i32, max_replicas: i32) -> Self {
        ComponentSpec {
            min_replicas,
            max_replicas,
            target_cpu_utilization: default_cpu_target(),
            resources: None,
            image: None,
        }
    }
    pub fn auth_default() -> Self {
        Self::with_replicas(2, 10)
    }
    pub fn chat_default() -> Self {
        Self::with_replicas(3, 20)
    }
    pub fn billing_default() -> Self {
        Self::with_replicas(2, 8)
    }
    pub fn email_worker_default() -> Self {
        Self::with_replicas(1, 4)
    }
}

/// CPU and memory for one container, as Kubernetes quantities. Requests may not exceed limits, and both stay
/// within what one node can give: CPU from 1m to 64 cores, memory from 16Mi to 256Gi.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.cpuLimit) || quantity(self.cpuRequest).compareTo(quantity(self.cpuLimit)) <= 0").message("cpuRequest must not exceed cpuLimit").field_path(".cpuRequest"),
    validation = kube::core::Rule::new("quantity(self.memoryRequest).compareTo(quantity(self.memoryLimit)) <= 0").message("memoryRequest must not exceed memoryLimit").field_path(".memoryRequest"),
    validation = kube::core::Rule::new("quantity(self.cpuRequest).compareTo(quantity('1m')) >= 0 && quantity(self.cpuRequest).compareTo(quantity('64')) <= 0").message("cpuRequest must be between 1m and 64").field_path(".cpuRequest"),
    validation = kube::core::Rule::new("!has(self.cpuLimit) || (quantity(self.cpuLimit).compareTo(quantity('1m')) >= 0 && quantity(self.cpuLimit).compareTo(quantity('64')) <= 0)").message("cpuLimit must be between 1m and 64").field_path(".cpuLimit"),
    validation = kube::core::Rule::new("quantity(self.memoryRequest).compareTo(quantity('16Mi')) >= 0 && quantity(self.memoryRequest).compareTo(quantity('256Gi')) <= 0").message("memoryRequest must be between 16Mi and 256Gi").field_path(".memoryRequest"),
    validation = kube::core::Rule::new("quantity(self.memoryLimit).compareTo(quantity('16Mi')) >= 0 && quantity(self.memoryLimit).compareTo(quantity('256Gi')) <= 0").message("memoryLimit must be between 16Mi and 256Gi").field_path(".memoryLimit"),
)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU request, for example `100m`.
    #[schemars(length(max = 16), regex(pattern = CPU_PATTERN))]
    pub cpu_request: String,
    /// Memory request, for example `128Mi`.
    #[schemars(length(max = 16), regex(pattern = MEMORY_PATTERN))]
    pub memory_request: String,
    /// CPU limit. Unset leaves CPU unthrottled, which suits latency-sensitive services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), regex(pattern = CPU_PATTERN))]
    pub cpu_limit: Option<String>,
    /// Memory limit, for example `512Mi`.
    #[schemars(length(max = 16), regex(pattern = MEMORY_PATTERN))]
    pub memory_limit: String,
}

const CPU_PATTERN: &str = r"^([1-9][0-9]{0,5}m|[0-9]{1,3}(\.[0-9]{1,3})?)$";
const MEMORY_PATTERN: &str = r"^[1-9][0-9]{0,5}(Ki|Mi|Gi|Ti)$";

/// Where the tenant's PostgreSQL runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = kube::core::Rule::new("self.mode != 'External' || has(self.externalSecretRef)").message("an External database requires externalSecretRef").field_path(".externalSecretRef").reason(kube::core::Reason::FieldValueRequired),
    validation = kube::core::Rule::new("self.mode != 'External' || !has(self.storage)").message("an External database cannot have managed storage settings").field_path(".storage").reason(kube::core::Reason::FieldValueForbidden),
    validation = kube::core::Rule::new("self.mode != 'Managed' || !has(self.externalSecretRef)").message("externalSecretRef is only allowed with mode External").field_path(".externalSecretRef").reason(kube::core::Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// `Managed` runs PostgreSQL as a StatefulSet in the tenant namespace; `External` uses a database you run.
    #[serde(default)]
    pub mode: DataStoreMode,
    /// Storage of the managed database. Fixed once set (StatefulSet volume templates are immutable): resize
    /// the PersistentVolumeClaim itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("storage cannot be changed after creation; resize the PersistentVolumeClaim instead"))]
    pub storage: Option<Storage>,
    /// For `External`: the Secret key that holds the PostgreSQL connection URL
    /// (`postgres://user:password@host:5432/db?sslmode=require`). The schema cannot see inside a Secret: the
    /// operator checks the URL and reports one that is not `postgres://` or `postgresql://` with the reason
    /// `InvalidExternalDatabase`, without copying it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_ref: Option<SecretKeyRef>,
}

/// Where the tenant's Redis runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = kube::core::Rule::new("self.mode != 'External' || has(self.externalSecretRef)").message("an External Redis requires externalSecretRef").field_path(".externalSecretRef").reason(kube::core::Reason::FieldValueRequired),
    validation = kube::core::Rule::new("self.mode != 'External' || !has(self.storage)").message("an External Redis cannot have managed storage settings").field_path(".storage").reason(kube::core::Reason::FieldValueForbidden),
    validation = kube::core::Rule::new("self.mode != 'Managed' || !has(self.externalSecretRef)").message("externalSecretRef is only allowed with mode External").field_path(".externalSecretRef").reason(kube::core::Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// `Managed` runs Redis as a StatefulSet in the tenant namespace; `External` uses a Redis you run.
    #[serde(default)]
    pub mode: DataStoreMode,
    /// Storage of the managed Redis (append-only file). Fixed once set, like the database's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("storage cannot be changed after creation; resize the PersistentVolumeClaim instead"))]
    pub storage: Option<Storage>,
    /// For `External`: the Secret key that holds the Redis URL (`rediss://:password@host:6379/0`); one that is
    /// not `redis://` or `rediss://` is reported with the reason `InvalidExternalRedis`, without copying it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_ref: Option<SecretKeyRef>,
}

/// Who runs a data store.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DataStoreMode {
    #[default]
    Managed,
    External,
}

/// Persistent storage of a managed data store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("!has(self.size) || (quantity(self.size).compareTo(quantity('64Mi')) >= 0 && quantity(self.size).compareTo(quantity('64Ti')) <= 0)").message("size must be between 64Mi and 64Ti").field_path(".size"))]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size of the volume, from 64Mi to 64Ti. Defaults to 15Gi for PostgreSQL and 1Gi for Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), regex(pattern = r"^[1-9][0-9]{0,5}(Mi|Gi|Ti)$"))]
    pub size: Option<String>,
    /// StorageClass of the volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub storage_class_name: Option<String>,
}

/// Public HTTP access through an Ingress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name users reach the tenant at, for example `acme.chat.example.com`. A host belongs to one tenant:
    /// the tenant that claimed it first keeps it, a later claim gets the reason `IngressHostConflict`.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub host: String,
    /// IngressClass; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub class_name: Option<String>,
    /// TLS. Without it the tenant is served over plain HTTP, which only suits development.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
    /// Extra annotations for the Ingress controller (for example timeouts for long streams). Only those the
    /// platform allows in the operator's settings are applied (none by default); the others are reported with
    /// the reason `IngressAnnotationsRefused`. Configuration snippets are refused here already.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.all(key, !key.lowerAscii().contains('snippet'))").message("annotations cannot carry controller snippets (*-snippet): they inject configuration into the ingress controller"))]
    pub annotations: BTreeMap<String, String>,
}

/// Where the certificate comes from: exactly one of an existing Secret or a cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("has(self.secretName) != has(self.clusterIssuer)").message("set exactly one of secretName and clusterIssuer"))]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// A `kubernetes.io/tls` Secret in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub secret_name: Option<String>,
    /// A cert-manager ClusterIssuer that issues the certificate (annotation `cert-manager.io/cluster-issuer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub cluster_issuer: Option<String>,
}

/// Outgoing mail.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpSpec {
    /// SMTP server host name.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub host: String,
    /// SMTP server port.
    #[serde(default = "default_smtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Transport security.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Sender address, for example `Acme Chat <no-reply@acme.example.com>`.
    #[schemars(length(min = 3, max = 320), regex(pattern = r"^[^\r\n]+@[^\r\n]+$"))]
    pub from: String,
    /// Secret with the keys `username` and `password`; unset for servers that need no login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

fn default_smtp_port() -> i32 {
    587
}

/// SMTP transport security.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SmtpSecurity {
    /// Upgrade with STARTTLS and refuse to send if the server does not offer it.
    #[default]
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
    /// Plain text. Only for a relay inside the cluster.
    None,
}

/// Stripe account and the price of each paid plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.prices) || self.prices.all(plan, plan in ['pro', 'enterprise'])").message("prices may only name the plans pro and enterprise").field_path(".prices"),
    validation = kube::core::Rule::new("!has(self.prices) || self.prices.all(plan, self.prices[plan].matches('^price_[A-Za-z0-9]+$'))").message("every price must be a Stripe price id (price_...)").field_path(".prices"),
)]
#[serde(rename_all = "camelCase")]
pub struct StripeSpec {
    /// Secret with the keys `secretKey` (`sk_...`) and `webhookSecret` (`whsec_...`).
    pub secret_ref: SecretRef,
    /// Stripe price id of each plan that can be bought through Checkout, for example `pro: price_123`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 2))]
    pub prices: BTreeMap<String, String>,
}

/// What happens to data when the ChatTenant is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the namespace with its PersistentVolumeClaims and the database Secret; remove everything else.
    #[default]
    Retain,
    /// Remove the namespace and everything in it, data included.
    Delete,
}

/// Observed state of a ChatTenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatTenantStatus {
    /// `Ready`, `Progressing`, `Degraded`, `Suspended` and `Paused`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The namespace the tenant lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The plan in force, from the tenant's Subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Where users reach the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Readiness of each service and data store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub components: Vec<ComponentStatus>,
    /// Secrets the operator copied into the tenant namespace. The operator reads Secrets only by name, so it
    /// remembers its copies here to delete one whose reference leaves the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub copied_secrets: Vec<String>,
}

/// Readiness of one workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// `auth`, `chat`, `billing`, `email-worker`, `postgres` or `redis`.
    pub name: String,
    /// True when the workload is available at its desired size.
    pub ready: bool,
    /// Replicas that are ready.
    pub ready_replicas: i32,
    /// Replicas wanted right now.
    pub desired_replicas: i32,
}
