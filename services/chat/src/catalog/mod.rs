//! What the tenant configuration means for chat: the usable upstreams with their keys, the models and their
//! prices, the plan's limits. Built by [`Catalog::build`] (pure: the key files are read through a function
//! passed in) and swapped whole when the mounted files change ([`reload`]).

pub mod reload;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use saaschat_platform::Secret;
use saaschat_platform::config::TenantConfig;
use tokio::sync::Semaphore;

use crate::limits::ProviderQuota;

use crate::providers::{Endpoint, ProviderKind};
use crate::usage::cost::Price;

#[derive(Clone, Debug)]
pub struct ModelOffer {
    pub name: String,
    pub input_price: Price,
    pub output_price: Price,
    pub context_window: Option<u32>,
}

#[derive(Debug)]
pub struct Upstream {
    /// The `AIProvider`'s name: breakers and metrics are keyed by it.
    pub name: String,
    pub kind: ProviderKind,
    pub endpoint: Endpoint,
    pub timeout: Duration,
    /// The provider's `maxConcurrentRequests`: calls beyond it go to the next candidate instead of queueing.
    pub concurrency: Arc<Semaphore>,
    /// The provider's `requestsPerMinute` across the tenant: calls beyond it go to the next candidate.
    pub requests_per_minute: u32,
    pub models: Vec<ModelOffer>,
}

impl Upstream {
    pub fn quota(&self) -> ProviderQuota<'_> {
        ProviderQuota { provider: &self.name, requests_per_minute: self.requests_per_minute }
    }

    pub fn offer(&self, model: &str) -> Option<&ModelOffer> {
        self.models.iter().find(|offer| offer.name == model)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    pub name: String,
    pub requests_per_minute: u32,
    pub tokens_per_month: u64,
    /// Empty: every model the tenant's providers offer.
    pub allowed_models: Vec<String>,
}

#[derive(Debug)]
pub struct Catalog {
    pub tenant: String,
    pub default_model: String,
    pub plan: PlanLimits,
    /// In configuration order, which is the fallback order.
    pub upstreams: Vec<Arc<Upstream>>,
}

impl Catalog {
    /// Builds the catalog. A provider that cannot be used (unknown type, bad URL, unreadable key) is left out
    /// and reported in the second value, so the others keep working; messages never contain a key.
    pub fn build(config: &TenantConfig, read_key: impl Fn(&Path) -> std::io::Result<String>) -> (Catalog, Vec<String>) {
        let mut problems = Vec::new();
        let mut upstreams = Vec::new();
        for provider in &config.providers {
            let name = &provider.name;
            let Some(kind) = ProviderKind::from_config(&provider.provider_type) else {
                problems.push(format!("provider {name}: unknown type {:?}", provider.provider_type));
                continue;
            };
            let Some(base_url) = provider.base_url.as_deref().and_then(http_url) else {
                problems.push(format!("provider {name}: baseUrl must be an http(s) URL"));
                continue;
            };
            let key = match read_key(&provider.api_key_file) {
                Ok(key) if !key.trim().is_empty() => key.trim().to_string(),
                Ok(_) => {
                    problems
                        .push(format!("provider {name}: the key file {} is empty", provider.api_key_file.display()));
                    continue;
                }
                Err(error) => {
                    problems.push(format!(
                        "provider {name}: cannot read {}: {}",
                        provider.api_key_file.display(),
                        error.kind()
                    ));
                    continue;
                }
            };
            let mut models = Vec::new();
            for model in &provider.models {
                match (Price::parse(&model.input_price_per_million), Price::parse(&model.output_price_per_million)) {
                    (Ok(input_price), Ok(output_price)) => models.push(ModelOffer {
                        name: model.name.clone(),
                        input_price,
                        output_price,
                        context_window: model.context_window.and_then(|window| u32::try_from(window).ok()),
                    }),
                    (Err(error), _) | (_, Err(error)) => {
                        problems.push(format!("provider {name}, model {}: {error}", model.name))
                    }
                }
            }
            let timeout_seconds = u64::try_from(provider.limits.timeout_seconds).unwrap_or(0).max(1);
            let max_concurrent = usize::try_from(provider.limits.max_concurrent_requests).unwrap_or(0).max(1);
            upstreams.push(Arc::new(Upstream {
                name: name.clone(),
                kind,
                endpoint: Endpoint { base_url, api_key: Secret::new(key) },
                timeout: Duration::from_secs(timeout_seconds),
                concurrency: Arc::new(Semaphore::new(max_concurrent)),
                requests_per_minute: u32::try_from(provider.limits.requests_per_minute).unwrap_or(0),
                models,
            }));
        }
        let plan = &config.plan;
        let catalog = Catalog {
            tenant: config.tenant.clone(),
            default_model: config.default_model.clone(),
            plan: PlanLimits {
                name: plan.name.clone(),
                requests_per_minute: u32::try_from(plan.requests_per_minute).unwrap_or(0),
                tokens_per_month: u64::try_from(plan.tokens_per_month).unwrap_or(0),
                allowed_models: plan.allowed_models.clone(),
            },
            upstreams,
        };
        (catalog, problems)
    }

    pub fn is_allowed(&self, model: &str) -> bool {
        self.plan.allowed_models.is_empty() || self.plan.allowed_models.iter().any(|allowed| allowed == model)
    }

    /// The models a caller may use, in configuration order, without duplicates, with the upstream that
    /// offers each first.
    pub fn allowed_models(&self) -> Vec<(&str, &Upstream)> {
        let mut models: Vec<(&str, &Upstream)> = Vec::new();
        for upstream in &self.upstreams {
            for offer in &upstream.models {
                if self.is_allowed(&offer.name) && !models.iter().any(|(name, _)| *name == offer.name) {
                    models.push((&offer.name, upstream));
                }
            }
        }
        models
    }
}

fn http_url(text: &str) -> Option<url::Url> {
    url::Url::parse(text).ok().filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn tenant_config(providers: serde_json::Value) -> TenantConfig {
        let document = serde_json::json!({
            "tenant": "acme", "displayName": "Acme", "namespace": "tenant-acme", "url": "http://chat",
            "defaultModel": "gpt-4o-mini",
            "plan": {"name": "pro", "tokensPerMonth": 1000000, "requestsPerMinute": 60, "seats": 5, "allowedModels": []},
            "providers": providers,
            "auth": {"url": "http://auth:8080", "jwksUrl": "http://auth:8080/.well-known/jwks.json", "issuer": "http://chat", "jwtKeyDir": "/x"},
        });
        TenantConfig::parse(&document.to_string(), Path::new("tenant.json")).expect("tenant config")
    }

    pub fn provider(name: &str, kind: &str, models: &[&str]) -> serde_json::Value {
        let models: Vec<serde_json::Value> = models
            .iter()
            .map(|model| serde_json::json!({"name": model, "inputPricePerMillion": "1", "outputPricePerMillion": "2"}))
            .collect();
        serde_json::json!({
            "name": name, "type": kind, "baseUrl": format!("https://{name}.example/v1"),
            "apiKeyFile": format!("/keys/{name}"), "limits": {"requestsPerMinute": 60, "maxConcurrentRequests": 8, "timeoutSeconds": 30},
            "models": models,
        })
    }

    /// A catalog of one provider offering `models` as (name, input price, output price).
    pub fn catalog_with_prices(models: &[(&str, &str, &str)]) -> Catalog {
        let models: Vec<serde_json::Value> = models
            .iter()
            .map(|(name, input, output)| {
                serde_json::json!({"name": name, "inputPricePerMillion": input, "outputPricePerMillion": output})
            })
            .collect();
        let mut provider = provider("openai", "openai", &[]);
        provider["models"] = serde_json::json!(models);
        Catalog::build(&tenant_config(serde_json::json!([provider])), keys).0
    }

    fn keys(path: &Path) -> std::io::Result<String> {
        if path == Path::new("/keys/broken") {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"))
        } else {
            Ok(format!("key-of-{}\n", path.display()))
        }
    }

    #[test]
    fn usable_providers_are_kept_in_order_and_broken_ones_reported_without_keys() {
        let config = tenant_config(serde_json::json!([
            provider("openai", "openai", &["gpt-4o-mini"]),
            provider("broken", "anthropic", &["claude"]),
            provider("odd", "cohere", &["c"]),
            provider("groq", "groq", &["llama"]),
        ]));
        let (catalog, problems) = Catalog::build(&config, keys);
        let names: Vec<&str> = catalog.upstreams.iter().map(|upstream| upstream.name.as_str()).collect();
        assert_eq!(names, ["openai", "groq"]);
        assert_eq!(catalog.upstreams[0].endpoint.api_key.expose(), "key-of-/keys/openai");
        assert_eq!(catalog.upstreams[0].timeout, Duration::from_secs(30));
        assert_eq!(catalog.upstreams[0].concurrency.available_permits(), 8);
        assert_eq!(
            problems,
            ["provider broken: cannot read /keys/broken: entity not found", "provider odd: unknown type \"cohere\""]
        );
        assert!(!format!("{catalog:?}").contains("key-of-"));
    }

    #[test]
    fn the_plan_limits_which_models_are_allowed() {
        let mut config = tenant_config(serde_json::json!([
            provider("openai", "openai", &["gpt-4o-mini", "gpt-4o"]),
            provider("backup", "openaiCompatible", &["gpt-4o-mini", "llama"]),
        ]));
        let (catalog, _) = Catalog::build(&config, keys);
        let all: Vec<&str> = catalog.allowed_models().into_iter().map(|(name, _)| name).collect();
        assert_eq!(all, ["gpt-4o-mini", "gpt-4o", "llama"]);
        config.plan.allowed_models = vec!["llama".into()];
        let (catalog, _) = Catalog::build(&config, keys);
        assert!(catalog.is_allowed("llama") && !catalog.is_allowed("gpt-4o"));
        let allowed: Vec<&str> = catalog
            .allowed_models()
            .into_iter()
            .map(|(name, upstream)| {
                assert_eq!(upstream.name, "backup");
                name
            })
            .collect();
        assert_eq!(allowed, ["llama"]);
    }
}
