//! Checks the schema cannot make: references to other objects and what they contain. Pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use saaschat_crds::{AIProvider, ChatTenant, SecretKeyRef};

use crate::build::ResolvedProvider;
use crate::plan::EffectivePlan;

/// Why part of a spec cannot be carried out; `reason` becomes a condition reason and an Event reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Problem { reason, message: message.into() }
    }
}

/// Source Secrets by name, as read from the secret namespace (`None` when absent). Values stay opaque here:
/// only their presence and emptiness are looked at, and no message ever contains them.
pub type SourceSecrets = BTreeMap<String, Option<BTreeMap<String, ByteString>>>;

/// Whether a source key exists and is non-empty, and if not, what to say.
pub fn check_key(secrets: &SourceSecrets, reference: &SecretKeyRef, namespace: &str) -> Result<(), String> {
    match secrets.get(&reference.name) {
        None | Some(None) => Err(format!("Secret {namespace}/{} does not exist", reference.name)),
        Some(Some(data)) => match data.get(&reference.key) {
            Some(value) if !value.0.iter().all(u8::is_ascii_whitespace) => Ok(()),
            Some(_) => Err(format!("key {:?} of Secret {namespace}/{} is empty", reference.key, reference.name)),
            None => Err(format!("Secret {namespace}/{} has no key {:?}", reference.name, reference.key)),
        },
    }
}

/// Resolves the tenant's providers against the AIProviders that exist, and lists every problem.
/// Providers that cannot be used are left out of the result; the rest of the tenant is unaffected.
pub fn validate(
    tenant: &ChatTenant,
    providers: &BTreeMap<String, Arc<AIProvider>>,
    secrets: &SourceSecrets,
    plan: &EffectivePlan,
    secret_namespace: &str,
) -> (Vec<ResolvedProvider>, Vec<Problem>) {
    let mut resolved = Vec::new();
    let mut problems = Vec::new();
    for wanted in &tenant.spec.providers {
        let Some(provider) = providers.get(&wanted.name) else {
            problems.push(Problem::new("ProviderNotFound", format!("AIProvider {:?} does not exist", wanted.name)));
            continue;
        };
        if let Err(message) = check_key(secrets, &provider.spec.api_key_secret_ref, secret_namespace) {
            problems.push(Problem::new(
                "ProviderSecretMissing",
                format!("API key of AIProvider {:?}: {message}", wanted.name),
            ));
            continue;
        }
        let missing: Vec<&str> = wanted
            .models
            .iter()
            .filter(|model| !provider.spec.models.iter().any(|offer| &offer.name == *model))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            problems.push(Problem::new(
                "ModelNotOffered",
                format!("AIProvider {:?} does not offer {}", wanted.name, missing.join(", ")),
            ));
        }
        resolved.push(ResolvedProvider {
            name: wanted.name.clone(),
            spec: provider.spec.clone(),
            allowed_models: wanted.models.iter().filter(|model| !missing.contains(&model.as_str())).cloned().collect(),
        });
    }

    let spec = &tenant.spec;
    let mut required_keys: Vec<(&str, SecretKeyRef)> = Vec::new();
    if let Some(reference) = &spec.database.external_secret_ref {
        required_keys.push(("external database", reference.clone()));
    }
    if let Some(reference) = &spec.redis.external_secret_ref {
        required_keys.push(("external Redis", reference.clone()));
    }
    if let Some(credentials) = spec.smtp.as_ref().and_then(|s| s.credentials_secret_ref.as_ref()) {
        for key in ["username", "password"] {
            required_keys.push(("SMTP credentials", key_of(&credentials.name, key)));
        }
    }
    if let Some(stripe) = &spec.stripe {
        for key in ["secretKey", "webhookSecret"] {
            required_keys.push(("Stripe credentials", key_of(&stripe.secret_ref.name, key)));
        }
    }
    for (what, reference) in required_keys {
        if let Err(message) = check_key(secrets, &reference, secret_namespace) {
            problems.push(Problem::new("SecretMissing", format!("{what}: {message}")));
        }
    }

    let tenant_models: Vec<&String> = spec.providers.iter().flat_map(|p| p.models.iter()).collect();
    let outside: Vec<&str> =
        plan.limits.allowed_models.iter().filter(|model| !tenant_models.contains(model)).map(String::as_str).collect();
    if !outside.is_empty() {
        problems.push(Problem::new(
            "InvalidSpec",
            format!("the plan allows models the tenant does not have: {}", outside.join(", ")),
        ));
    }
    (resolved, problems)
}

fn key_of(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef { name: name.into(), key: key.into() }
}

/// Every source Secret a tenant refers to, directly or through its providers.
pub fn referenced_secrets(tenant: &ChatTenant, providers: &BTreeMap<String, Arc<AIProvider>>) -> Vec<String> {
    let spec = &tenant.spec;
    let mut names: Vec<String> = spec
        .providers
        .iter()
        .filter_map(|p| providers.get(&p.name))
        .map(|p| p.spec.api_key_secret_ref.name.clone())
        .collect();
    names.extend(spec.database.external_secret_ref.iter().map(|r| r.name.clone()));
    names.extend(spec.redis.external_secret_ref.iter().map(|r| r.name.clone()));
    names.extend(spec.smtp.iter().filter_map(|s| s.credentials_secret_ref.as_ref()).map(|r| r.name.clone()));
    names.extend(spec.stripe.iter().map(|s| s.secret_ref.name.clone()));
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{provider, tenant};
    use saaschat_crds::{PlanLimits, PlanName};

    fn secrets_with(key: &str, value: &str) -> SourceSecrets {
        BTreeMap::from([(
            "openai".to_string(),
            Some(BTreeMap::from([(key.to_string(), ByteString(value.as_bytes().to_vec()))])),
        )])
    }

    fn providers() -> BTreeMap<String, Arc<AIProvider>> {
        BTreeMap::from([("openai".to_string(), Arc::new(provider("openai")))])
    }

    fn enterprise() -> EffectivePlan {
        EffectivePlan::of(PlanName::Enterprise, None)
    }

    #[test]
    fn a_complete_tenant_has_no_problem() {
        let (resolved, problems) =
            validate(&tenant("acme"), &providers(), &secrets_with("api-key", "sk-1"), &enterprise(), "ops");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].allowed_models, ["gpt-4o-mini"]);
    }

    #[test]
    fn a_missing_provider_is_named() {
        let (resolved, problems) =
            validate(&tenant("acme"), &BTreeMap::new(), &secrets_with("api-key", "sk-1"), &enterprise(), "ops");
        assert!(resolved.is_empty());
        assert_eq!(problems[0].reason, "ProviderNotFound");
        assert!(problems[0].message.contains("\"openai\""));
    }

    #[test]
    fn a_provider_secret_without_its_key_is_named_without_its_contents() {
        for secrets in [secrets_with("other", "sk-secret-value"), secrets_with("api-key", "  "), BTreeMap::new()] {
            let (resolved, problems) = validate(&tenant("acme"), &providers(), &secrets, &enterprise(), "ops");
            assert!(resolved.is_empty());
            assert_eq!(problems[0].reason, "ProviderSecretMissing");
            assert!(problems[0].message.contains("ops/openai"), "{}", problems[0].message);
            assert!(!problems[0].message.contains("sk-secret-value"));
        }
    }

    #[test]
    fn a_model_the_provider_does_not_offer_is_named_and_dropped() {
        let mut t = tenant("acme");
        t.spec.providers[0].models.push("gpt-5-ultra".into());
        let (resolved, problems) = validate(&t, &providers(), &secrets_with("api-key", "sk"), &enterprise(), "ops");
        assert_eq!(problems[0].reason, "ModelNotOffered");
        assert!(problems[0].message.contains("gpt-5-ultra"));
        assert_eq!(resolved[0].allowed_models, ["gpt-4o-mini"]);
    }

    #[test]
    fn stripe_and_smtp_secrets_must_hold_their_keys() {
        let mut t = tenant("acme");
        t.spec.stripe =
            Some(serde_json::from_value(serde_json::json!({"secretRef": {"name": "stripe"}})).expect("stripe"));
        let (_, problems) = validate(&t, &providers(), &secrets_with("api-key", "sk"), &enterprise(), "ops");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.reason == "SecretMissing"));
    }

    #[test]
    fn a_custom_plan_cannot_allow_models_the_tenant_lacks() {
        let plan = EffectivePlan::of(
            PlanName::Custom,
            Some(&PlanLimits {
                tokens_per_month: 1,
                requests_per_minute: 1,
                seats: 1,
                allowed_models: vec!["claude".into()],
            }),
        );
        let (_, problems) = validate(&tenant("acme"), &providers(), &secrets_with("api-key", "sk"), &plan, "ops");
        assert_eq!(problems[0].reason, "InvalidSpec");
    }

    #[test]
    fn referenced_secrets_include_providers_and_integrations() {
        let mut t = tenant("acme");
        t.spec.stripe =
            Some(serde_json::from_value(serde_json::json!({"secretRef": {"name": "stripe"}})).expect("stripe"));
        assert_eq!(referenced_secrets(&t, &providers()), ["openai", "stripe"]);
    }
}
