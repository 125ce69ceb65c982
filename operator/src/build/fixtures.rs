//! Readable builders of test inputs.

use saaschat_crds::{AIProvider, AIProviderSpec, ChatTenant, PlanName};
use serde_json::json;

use super::{CurrentReplicas, ResolvedProvider, TenantInputs};
use crate::plan::{EffectivePlan, Suspension};
use crate::settings::Settings;

pub fn tenant(name: &str) -> ChatTenant {
    let mut tenant: ChatTenant = serde_json::from_value(json!({
        "apiVersion": "saaschat.io/v1alpha1", "kind": "ChatTenant",
        "metadata": {"name": name, "uid": "6f1b5f6e-0000-4000-8000-000000000001"},
        "spec": {
            "displayName": "Acme",
            "providers": [{"name": "openai", "models": ["gpt-4o-mini"]}],
            "defaultModel": "gpt-4o-mini",
        }
    }))
    .expect("fixture tenant");
    tenant.metadata.generation = Some(1);
    tenant
}

pub fn provider_spec() -> AIProviderSpec {
    serde_json::from_value(json!({
        "type": "openai",
        "apiKeySecretRef": {"name": "openai", "key": "api-key"},
        "models": [
            {"name": "gpt-4o-mini", "inputPricePerMillion": "0.15", "outputPricePerMillion": "0.60"},
            {"name": "gpt-4o", "inputPricePerMillion": "2.50", "outputPricePerMillion": "10"},
        ],
    }))
    .expect("fixture provider")
}

pub fn provider(name: &str) -> AIProvider {
    let mut provider = AIProvider::new(name, provider_spec());
    provider.metadata.generation = Some(1);
    provider
}

pub fn resolved_openai() -> Vec<ResolvedProvider> {
    vec![ResolvedProvider { name: "openai".into(), spec: provider_spec(), allowed_models: vec!["gpt-4o-mini".into()] }]
}

/// Owns what the borrowed `TenantInputs` point to.
pub struct Inputs {
    pub tenant: ChatTenant,
    pub providers: Vec<ResolvedProvider>,
    pub plan: EffectivePlan,
    pub suspension: Suspension,
    pub settings: Settings,
    pub replicas: CurrentReplicas,
}

impl Inputs {
    pub fn new(tenant: ChatTenant) -> Self {
        Inputs {
            tenant,
            providers: resolved_openai(),
            plan: EffectivePlan::of(PlanName::Enterprise, None),
            suspension: Suspension::None,
            settings: Settings::default(),
            replicas: CurrentReplicas::new(),
        }
    }

    pub fn get(&self) -> TenantInputs<'_> {
        TenantInputs {
            tenant: &self.tenant,
            providers: &self.providers,
            plan: &self.plan,
            suspension: self.suspension,
            settings: &self.settings,
            replicas: &self.replicas,
        }
    }
}
