//! `AIProvider`: an AI vendor account the platform team offers to tenants.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, MODEL_NAME_PATTERN, SecretKeyRef};
use crate::endpoint::{self, BASE_URL_PATTERN};

/// An AI provider account: its wire protocol, endpoint, API key and the models (with prices) offered to tenants.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "saaschat.io",
    version = "v1alpha1",
    kind = "AIProvider",
    plural = "aiproviders",
    singular = "aiprovider",
    shortname = "aip",
    category = "saaschat",
    status = "AIProviderStatus",
    doc = "An AI provider account offered to tenants: protocol, endpoint, API key and priced models.",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Models","type":"integer","jsonPath":".status.modelCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message("an AIProvider name is at most 63 characters").field_path(".metadata.name"),
    validation = kube::core::Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("an AIProvider name must be a DNS-1123 label: lowercase letters, digits and '-'").field_path(".metadata.name"),
)]
#[x_kube(
    validation = kube::core::Rule::new("self.type != 'openaiCompatible' || has(self.baseUrl)").message("baseUrl is required when type is openaiCompatible").field_path(".baseUrl").reason(kube::core::Reason::FieldValueRequired),
    validation = kube::core::Rule::new("!has(self.baseUrl) || self.baseUrl.startsWith('https://') || self.allowInsecure").message("baseUrl must use https unless allowInsecure is true (for in-cluster endpoints)").field_path(".baseUrl"),
    validation = kube::core::Rule::new(endpoint::numeric_host_rule()).message("baseUrl: a host whose last label is a number is an IPv4 address and must be written as four decimal numbers (a.b.c.d)").field_path(".baseUrl"),
    validation = kube::core::Rule::new(endpoint::ipv6_literal_rule()).message("baseUrl: the bracketed host is not a usable IPv6 address (IPv4-mapped addresses are refused: write the IPv4 address)").field_path(".baseUrl"),
    validation = kube::core::Rule::new(endpoint::forbidden_range_rule()).message("baseUrl: the host is a loopback, unspecified, link-local, multicast or cloud metadata address, or an IPv6 form that embeds an IPv4 address").field_path(".baseUrl"),
    validation = kube::core::Rule::new(endpoint::forbidden_host_rule()).message("baseUrl: the host is localhost, a cloud metadata service or the cluster's API server").field_path(".baseUrl"),
    validation = kube::core::Rule::new(endpoint::insecure_in_cluster_rule()).message("allowInsecure is only for endpoints inside the cluster: the baseUrl host must be <service>.<namespace>.svc (optionally followed by the cluster domain)").field_path(".allowInsecure"),
)]
#[serde(rename_all = "camelCase")]
pub struct AIProviderSpec {
    /// The wire protocol the provider speaks.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Base URL of the API, for example `https://api.openai.com/v1`. Required for `openaiCompatible`;
    /// defaults to the vendor's public endpoint for the other types. The host is a lower-case DNS name or a
    /// bracketed IPv6 address (an IPv4 address as four decimal numbers); no user info, query or fragment.
    /// Loopback, link-local, unspecified and cloud metadata addresses and host names, and the cluster's API
    /// server, are refused; the chat service refuses them again whatever DNS answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), regex(pattern = BASE_URL_PATTERN))]
    pub base_url: Option<String>,
    /// Allow an `http://` base URL. Only for endpoints inside the cluster (vLLM, Ollama, llama.cpp), whose
    /// host must be `<service>.<namespace>.svc`: the API key then travels unencrypted.
    #[serde(default)]
    pub allow_insecure: bool,
    /// The Secret key that holds the provider's API key. Keys for self-hosted endpoints that need none may
    /// hold any non-empty placeholder.
    pub api_key_secret_ref: SecretKeyRef,
    /// Models offered through this provider, with their prices.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub models: Vec<ModelOffer>,
    /// Limits the chat service applies to this provider across all of a tenant's users.
    #[serde(default)]
    pub limits: ProviderLimits,
}

/// Wire protocols the chat service speaks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProviderType {
    Openai,
    Anthropic,
    Gemini,
    Groq,
    OpenaiCompatible,
}

impl ProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Openai => "openai",
            ProviderType::Anthropic => "anthropic",
            ProviderType::Gemini => "gemini",
            ProviderType::Groq => "groq",
            ProviderType::OpenaiCompatible => "openaiCompatible",
        }
    }

    /// The vendor's public endpoint; `None` for `openaiCompatible`, which has no default.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderType::Openai => Some("https://api.openai.com/v1"),
            ProviderType::Anthropic => Some("https://api.anthropic.com"),
            ProviderType::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderType::Groq => Some("https://api.groq.com/openai/v1"),
            ProviderType::OpenaiCompatible => None,
        }
    }
}

/// A model and what it costs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelOffer {
    /// The model identifier sent to the provider, for example `gpt-4o-mini`.
    #[schemars(length(min = 1, max = 128), regex(pattern = MODEL_NAME_PATTERN))]
    pub name: String,
    /// Price in US dollars per million input tokens, as a decimal string (`"0.15"`).
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub input_price_per_million: String,
    /// Price in US dollars per million output tokens, as a decimal string (`"0.60"`).
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"))]
    pub output_price_per_million: String,
    /// Context window in tokens, used to refuse requests that cannot fit before calling the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub context_window: Option<i32>,
}

/// Per-provider limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderLimits {
    /// Requests per minute the chat service of one tenant sends to this provider.
    #[serde(default = "default_provider_rpm")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_minute: i32,
    /// Concurrent requests one chat replica keeps open to this provider.
    #[serde(default = "default_provider_concurrency")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_concurrent_requests: i32,
    /// Seconds to wait for the first byte of an answer.
    #[serde(default = "default_provider_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: i32,
}

fn default_provider_rpm() -> i32 {
    600
}
fn default_provider_concurrency() -> i32 {
    64
}
fn default_provider_timeout() -> i32 {
    60
}

impl Default for ProviderLimits {
    fn default() -> Self {
        ProviderLimits {
            requests_per_minute: default_provider_rpm(),
            max_concurrent_requests: default_provider_concurrency(),
            timeout_seconds: default_provider_timeout(),
        }
    }
}

/// Observed state of an AIProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AIProviderStatus {
    /// `Ready` is True when the API key Secret exists and holds a non-empty key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Number of models offered.
    #[serde(default)]
    pub model_count: i32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
