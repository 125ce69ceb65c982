//! How long building one tenant's complete desired state takes (every object of ARCHITECTURE §4).

use criterion::{Criterion, criterion_group, criterion_main};
use saaschat_crds::{AIProviderSpec, ChatTenant, PlanName};
use saaschat_operator::build::{CurrentReplicas, ResolvedProvider, TenantInputs, desired_state};
use saaschat_operator::plan::{EffectivePlan, Suspension};
use saaschat_operator::settings::Settings;

fn inputs() -> (ChatTenant, Vec<ResolvedProvider>) {
    let tenant: ChatTenant = serde_json::from_value(serde_json::json!({
        "apiVersion": "saaschat.io/v1alpha1", "kind": "ChatTenant",
        "metadata": {"name": "acme", "uid": "6f1b5f6e-0000-4000-8000-000000000001"},
        "spec": {
            "displayName": "Acme",
            "providers": [{"name": "openai", "models": ["gpt-4o-mini", "gpt-4o"]}],
            "defaultModel": "gpt-4o-mini",
            "ingress": {"host": "acme.chat.example.com", "tls": {"clusterIssuer": "letsencrypt"}},
            "smtp": {"host": "smtp.example.com", "from": "no-reply@example.com", "credentialsSecretRef": {"name": "smtp"}},
            "stripe": {"secretRef": {"name": "stripe"}, "prices": {"pro": "price_123"}},
        }
    }))
    .expect("bench tenant");
    let spec: AIProviderSpec = serde_json::from_value(serde_json::json!({
        "type": "openai",
        "apiKeySecretRef": {"name": "openai", "key": "api-key"},
        "models": [
            {"name": "gpt-4o-mini", "inputPricePerMillion": "0.15", "outputPricePerMillion": "0.60"},
            {"name": "gpt-4o", "inputPricePerMillion": "2.50", "outputPricePerMillion": "10"},
        ],
    }))
    .expect("bench provider");
    let providers = vec![ResolvedProvider {
        name: "openai".into(),
        spec,
        allowed_models: vec!["gpt-4o-mini".into(), "gpt-4o".into()],
    }];
    (tenant, providers)
}

fn build_tenant(c: &mut Criterion) {
    let (tenant, providers) = inputs();
    let plan = EffectivePlan::of(PlanName::Pro, None);
    let settings = Settings::default();
    c.bench_function("desired_state of one complete tenant", |b| {
        b.iter(|| {
            let inputs = TenantInputs {
                tenant: &tenant,
                providers: &providers,
                plan: &plan,
                suspension: Suspension::None,
                settings: &settings,
                replicas: &CurrentReplicas::new(),
            };
            std::hint::black_box(desired_state(std::hint::black_box(&inputs)))
        })
    });
}

criterion_group!(benches, build_tenant);
criterion_main!(benches);
