//! The tenant configuration the services read from `/etc/saaschat/tenant.json`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use super::{DesiredObject, TenantInputs, tenant_url, workloads::HTTP_PORT};
use crate::kinds::OwnedKind;
use crate::names::{self, Component, paths};

pub fn tenant_config(inputs: &TenantInputs<'_>) -> DesiredObject {
    let document = config_document(inputs);
    let text = serde_json::to_string_pretty(&document).unwrap_or_default();
    DesiredObject::new(
        OwnedKind::ConfigMap,
        ConfigMap {
            metadata: inputs.meta(names::CONFIG_MAP, None),
            data: Some(BTreeMap::from([(saaschat_contract::paths::CONFIG_FILE_NAME.to_string(), text)])),
            ..ConfigMap::default()
        },
    )
}

/// The configuration document: no secret values, only the paths where secrets are mounted.
pub fn config_document(inputs: &TenantInputs<'_>) -> Value {
    let spec = &inputs.tenant.spec;
    let plan = inputs.plan;
    let providers: Vec<Value> = inputs
        .providers
        .iter()
        .map(|provider| {
            let models: Vec<Value> = provider
                .spec
                .models
                .iter()
                .filter(|model| provider.allowed_models.contains(&model.name))
                .map(|model| {
                    json!({
                        "name": model.name,
                        "inputPricePerMillion": model.input_price_per_million,
                        "outputPricePerMillion": model.output_price_per_million,
                        "contextWindow": model.context_window,
                    })
                })
                .collect();
            json!({
                "name": provider.name,
                "type": provider.spec.provider_type.as_str(),
                "baseUrl": provider.spec.base_url.as_deref().or(provider.spec.provider_type.default_base_url()),
                "apiKeyFile": paths::provider_key_file(&provider.name),
                "limits": {
                    "requestsPerMinute": provider.spec.limits.requests_per_minute,
                    "maxConcurrentRequests": provider.spec.limits.max_concurrent_requests,
                    "timeoutSeconds": provider.spec.limits.timeout_seconds,
                },
                "models": models,
            })
        })
        .collect();
    let auth = format!("http://{}:{HTTP_PORT}", Component::Auth.name());
    json!({
        "tenant": inputs.name(),
        "displayName": spec.display_name,
        "namespace": inputs.namespace(),
        "url": tenant_url(inputs.tenant),
        "defaultModel": spec.default_model,
        "plan": {
            "name": plan.name.as_str(),
            "tokensPerMonth": plan.limits.tokens_per_month,
            "requestsPerMinute": plan.limits.requests_per_minute,
            "seats": plan.limits.seats,
            "allowedModels": plan.limits.allowed_models,
        },
        "providers": providers,
        "auth": {
            "url": auth,
            "jwksUrl": format!("{auth}/.well-known/jwks.json"),
            "issuer": tenant_url(inputs.tenant),
            "jwtKeyDir": paths::jwt_dir(),
        },
        "smtp": spec.smtp.as_ref().map(|smtp| json!({
            "host": smtp.host,
            "port": smtp.port,
            "security": smtp.security,
            "from": smtp.from,
            "credentialsDir": smtp.credentials_secret_ref.as_ref().map(|_| paths::smtp_dir()),
        })),
        "stripe": spec.stripe.as_ref().map(|stripe| json!({
            "prices": stripe.prices,
            "credentialsDir": paths::stripe_dir(),
        })),
    })
}
