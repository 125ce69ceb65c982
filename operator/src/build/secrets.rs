//! Which Secrets a tenant has and where their contents come from. The contents themselves are made or read
//! at apply time (`tenant::secrets`), so nothing secret ever passes through the pure builders.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use saaschat_crds::{DataStoreMode, SecretKeyRef};

use super::TenantInputs;
use crate::names::{Component, secret};

/// Secrets the operator generates once and never overwrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratedSecret {
    /// Ed25519 key pair signing the auth service's access tokens.
    JwtSigningKey,
    /// Credentials and URL of the managed PostgreSQL.
    Postgres,
    /// Password and URL of the managed Redis.
    Redis,
}

/// One key of a copied Secret and the source key it is copied from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopiedKey {
    pub key: String,
    pub source: SecretKeyRef,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Generated(GeneratedSecret),
    /// Kept in step with Secrets in the operator's secret namespace.
    Copied(Vec<CopiedKey>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredSecret {
    pub meta: ObjectMeta,
    pub source: SecretSource,
    /// Survives a tenant deleted with `deletionPolicy: Retain`, because the retained volumes need it.
    pub retained_with_data: bool,
}

impl DesiredSecret {
    pub fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or_default()
    }
}

pub fn secrets(inputs: &TenantInputs<'_>) -> Vec<DesiredSecret> {
    let spec = &inputs.tenant.spec;
    let generated = |name: &str, component: Component, kind: GeneratedSecret| DesiredSecret {
        meta: inputs.meta(name, Some(component)),
        source: SecretSource::Generated(kind),
        retained_with_data: kind != GeneratedSecret::JwtSigningKey,
    };
    let copied = |name: &str, component: Component, keys: Vec<CopiedKey>| DesiredSecret {
        meta: inputs.meta(name, Some(component)),
        source: SecretSource::Copied(keys),
        retained_with_data: false,
    };
    let key = |key: &str, source: SecretKeyRef| CopiedKey { key: key.into(), source };
    let whole = |secret_name: &str, keys: &[&str]| -> Vec<CopiedKey> {
        keys.iter().map(|k| key(k, SecretKeyRef { name: secret_name.into(), key: (*k).into() })).collect()
    };

    let mut secrets = vec![generated(secret::JWT_SIGNING_KEY, Component::Auth, GeneratedSecret::JwtSigningKey)];
    secrets.push(match (&spec.database.mode, &spec.database.external_secret_ref) {
        (DataStoreMode::External, Some(source)) => {
            copied(secret::POSTGRES, Component::Postgres, vec![key("url", source.clone())])
        }
        _ => generated(secret::POSTGRES, Component::Postgres, GeneratedSecret::Postgres),
    });
    secrets.push(match (&spec.redis.mode, &spec.redis.external_secret_ref) {
        (DataStoreMode::External, Some(source)) => {
            copied(secret::REDIS, Component::Redis, vec![key("url", source.clone())])
        }
        _ => generated(secret::REDIS, Component::Redis, GeneratedSecret::Redis),
    });
    for provider in inputs.providers {
        secrets.push(copied(
            &secret::provider(&provider.name),
            Component::Chat,
            vec![key("api-key", provider.spec.api_key_secret_ref.clone())],
        ));
    }
    if let Some(credentials) = spec.smtp.as_ref().and_then(|smtp| smtp.credentials_secret_ref.as_ref()) {
        secrets.push(copied(secret::SMTP, Component::EmailWorker, whole(&credentials.name, &["username", "password"])));
    }
    if let Some(stripe) = &spec.stripe {
        secrets.push(copied(
            secret::STRIPE,
            Component::Billing,
            whole(&stripe.secret_ref.name, &["secretKey", "webhookSecret"]),
        ));
    }
    secrets
}

/// The copies to remember after this reconcile: those remembered before and those desired now, sorted. A copy
/// is forgotten only once it is deleted.
pub fn remembered_copies(previous: &[String], desired: &[DesiredSecret]) -> Vec<String> {
    let desired_copies =
        desired.iter().filter(|s| matches!(s.source, SecretSource::Copied(_))).map(DesiredSecret::name);
    let mut names: Vec<String> =
        previous.iter().map(String::as_str).chain(desired_copies).map(str::to_string).collect();
    names.sort();
    names.dedup();
    names
}

/// Remembered copies whose name no Secret of the desired state has any more. A name that is now a generated
/// Secret (an external database made managed) is not stale: it is still the tenant's.
pub fn stale_copies(previous: &[String], desired: &[DesiredSecret]) -> Vec<String> {
    previous.iter().filter(|name| !desired.iter().any(|secret| secret.name() == name.as_str())).cloned().collect()
}
