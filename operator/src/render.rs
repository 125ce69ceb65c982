//! `render`: prints every object the operator would create for a ChatTenant, from files, without a cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::ByteString;
use kube::ResourceExt;
use saaschat_crds::{AIProvider, ChatTenant, Subscription};
use serde::Deserialize;

use crate::build::secrets::SecretSource;
use crate::build::{self, TenantInputs};
use crate::plan::{EffectivePlan, decide_suspension};
use crate::settings::Settings;
use crate::tenant::validate::{Problem, SourceSecrets, referenced_secrets, validate};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {index} is not valid YAML for its kind: {source}")]
    Parse {
        path: PathBuf,
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("the files hold {0} ChatTenants; render takes exactly one")]
    TenantCount(usize),
    #[error("the tenant cannot be rendered as it is:\n{}", .0.iter().map(|p| format!("  {}: {}", p.reason, p.message)).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<Problem>),
}

/// The resources found in the input files. Secrets are optional: without them the keys they should hold
/// are assumed present (render cannot see the cluster).
#[derive(Default)]
struct Inputs {
    tenants: Vec<ChatTenant>,
    providers: BTreeMap<String, Arc<AIProvider>>,
    subscription: Option<Subscription>,
    secrets: SourceSecrets,
}

#[derive(Deserialize)]
struct Head {
    kind: Option<String>,
}

#[derive(Deserialize)]
struct SecretDocument {
    metadata: kube::api::ObjectMeta,
    #[serde(default)]
    data: BTreeMap<String, ByteString>,
    #[serde(default, rename = "stringData")]
    string_data: BTreeMap<String, String>,
}

fn read(paths: &[PathBuf]) -> Result<Inputs, RenderError> {
    let mut inputs = Inputs::default();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| RenderError::Read { path: path.clone(), source })?;
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let parse_error = |source| RenderError::Parse { path: path.clone(), index, source };
            let value = serde_yaml::Value::deserialize(document).map_err(parse_error)?;
            if value.is_null() {
                continue;
            }
            let head: Head = serde_yaml::from_value(value.clone()).map_err(parse_error)?;
            match head.kind.as_deref() {
                Some("ChatTenant") => inputs.tenants.push(serde_yaml::from_value(value).map_err(parse_error)?),
                Some("AIProvider") => {
                    let provider: AIProvider = serde_yaml::from_value(value).map_err(parse_error)?;
                    inputs.providers.insert(provider.name_any(), Arc::new(provider));
                }
                Some("Subscription") => inputs.subscription = Some(serde_yaml::from_value(value).map_err(parse_error)?),
                Some("Secret") => {
                    let secret: SecretDocument = serde_yaml::from_value(value).map_err(parse_error)?;
                    let mut data = secret.data;
                    data.extend(secret.string_data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))));
                    inputs.secrets.insert(secret.metadata.name.unwrap_or_default(), Some(data));
                }
                _ => {}
            }
        }
    }
    Ok(inputs)
}

/// Renders the tenant in `paths` as a multi-document YAML stream.
pub fn render(paths: &[PathBuf], settings: &Settings) -> Result<String, RenderError> {
    let mut inputs = read(paths)?;
    if inputs.tenants.len() != 1 {
        return Err(RenderError::TenantCount(inputs.tenants.len()));
    }
    let tenant = inputs.tenants.remove(0);
    // Secrets not given in the files are assumed to hold every key they should.
    for name in referenced_secrets(&tenant, &inputs.providers) {
        inputs.secrets.entry(name).or_insert(None);
    }
    let secrets: SourceSecrets = inputs
        .secrets
        .into_iter()
        .map(|(name, data)| (name, Some(data.unwrap_or_else(|| assumed_keys(&tenant, &inputs.providers)))))
        .collect();
    let plan = inputs
        .subscription
        .as_ref()
        .map(EffectivePlan::of_subscription)
        .unwrap_or_else(|| EffectivePlan::of(tenant.spec.plan, None));
    let (resolved, problems) = validate(&tenant, &inputs.providers, &secrets, &plan, &settings.secret_namespace);
    if !problems.is_empty() {
        return Err(RenderError::Problems(problems));
    }
    let (suspension, _) =
        decide_suspension(tenant.spec.suspend, inputs.subscription.as_ref(), k8s_openapi::jiff::Timestamp::now());
    let state = build::desired_state(&TenantInputs {
        tenant: &tenant,
        providers: &resolved,
        plan: &plan,
        suspension,
        settings,
        // Rendered files describe a tenant's first start.
        replicas: &build::CurrentReplicas::new(),
    });

    let mut out = String::new();
    for object in &state.objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&object.object).unwrap_or_default());
    }
    for secret in &state.secrets {
        let origin = match &secret.source {
            SecretSource::Generated(kind) => format!("generated once by the operator ({kind:?}); never overwritten"),
            SecretSource::Copied(keys) => keys
                .iter()
                .map(|k| format!("{} from {}/{} key {}", k.key, settings.secret_namespace, k.source.name, k.source.key))
                .collect::<Vec<_>>()
                .join("; "),
        };
        let _ = writeln!(out, "---\n# data: {origin}");
        let manifest =
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": secret.meta, "type": "Opaque"});
        out.push_str(&serde_yaml::to_string(&manifest).unwrap_or_default());
    }
    Ok(out)
}

/// Every key a referenced Secret is expected to hold, with a placeholder value.
fn assumed_keys(tenant: &ChatTenant, providers: &BTreeMap<String, Arc<AIProvider>>) -> BTreeMap<String, ByteString> {
    let placeholder = || ByteString(b"assumed".to_vec());
    let mut keys: Vec<String> = ["username", "password", "secretKey", "webhookSecret"].map(String::from).to_vec();
    keys.extend(providers.values().map(|p| p.spec.api_key_secret_ref.key.clone()));
    keys.extend(tenant.spec.database.external_secret_ref.iter().map(|r| r.key.clone()));
    keys.extend(tenant.spec.redis.external_secret_ref.iter().map(|r| r.key.clone()));
    keys.into_iter().map(|k| (k, placeholder())).collect()
}
