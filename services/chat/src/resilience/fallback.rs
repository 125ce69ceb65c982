//! The ordered candidates for a requested model: that model on every upstream offering it (configuration
//! order), then the tenant's default model the same way. Only models the plan allows are ever candidates.

use std::sync::Arc;

use crate::catalog::{Catalog, ModelOffer, Upstream};

#[derive(Clone, Debug)]
pub struct Candidate {
    pub upstream: Arc<Upstream>,
    pub offer: ModelOffer,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("the model {0:?} is not allowed by the tenant's plan")]
    NotAllowed(String),
    #[error("no configured provider offers the model {0:?}")]
    Unknown(String),
}

pub fn candidates(catalog: &Catalog, requested: &str) -> Result<Vec<Candidate>, ModelError> {
    if !catalog.is_allowed(requested) {
        return Err(ModelError::NotAllowed(requested.to_string()));
    }
    let offering = |model: &str| -> Vec<Candidate> {
        catalog
            .upstreams
            .iter()
            .filter_map(|upstream| {
                upstream.offer(model).map(|offer| Candidate { upstream: upstream.clone(), offer: offer.clone() })
            })
            .collect()
    };
    let mut list = offering(requested);
    if list.is_empty() {
        return Err(ModelError::Unknown(requested.to_string()));
    }
    if catalog.default_model != requested && catalog.is_allowed(&catalog.default_model) {
        list.extend(offering(&catalog.default_model));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::{provider, tenant_config};

    fn names(list: &[Candidate]) -> Vec<String> {
        list.iter().map(|candidate| format!("{}/{}", candidate.upstream.name, candidate.offer.name)).collect()
    }

    fn catalog(allowed: &[&str]) -> Catalog {
        let mut config = tenant_config(serde_json::json!([
            provider("openai", "openai", &["gpt-4o-mini", "gpt-4o"]),
            provider("anthropic", "anthropic", &["claude-sonnet-4-5"]),
            provider("vllm", "openaiCompatible", &["gpt-4o", "gpt-4o-mini"]),
        ]));
        config.plan.allowed_models = allowed.iter().map(|model| model.to_string()).collect();
        Catalog::build(&config, |_| Ok("key".into())).0
    }

    #[test]
    fn the_requested_model_everywhere_then_the_default_model_everywhere() {
        let list = candidates(&catalog(&[]), "gpt-4o").expect("candidates");
        assert_eq!(names(&list), ["openai/gpt-4o", "vllm/gpt-4o", "openai/gpt-4o-mini", "vllm/gpt-4o-mini"]);
        let list = candidates(&catalog(&[]), "gpt-4o-mini").expect("candidates");
        assert_eq!(names(&list), ["openai/gpt-4o-mini", "vllm/gpt-4o-mini"]);
    }

    #[test]
    fn models_outside_the_plan_are_refused_and_never_fallen_back_to() {
        let catalog = catalog(&["claude-sonnet-4-5", "gpt-4o"]);
        assert_eq!(
            candidates(&catalog, "gpt-4o-mini").expect_err("refused"),
            ModelError::NotAllowed("gpt-4o-mini".into())
        );
        let list = candidates(&catalog, "claude-sonnet-4-5").expect("candidates");
        assert_eq!(names(&list), ["anthropic/claude-sonnet-4-5"]);
    }

    #[test]
    fn unknown_models_are_named() {
        assert_eq!(candidates(&catalog(&[]), "gpt-5").expect_err("unknown"), ModelError::Unknown("gpt-5".into()));
    }
}
