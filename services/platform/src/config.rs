//! Typed configuration: the environment the operator writes into every service pod
//! (`operator/src/build/workloads.rs`) and the tenant document it mounts at `/etc/saaschat/tenant.json`
//! (`operator/src/build/config_map.rs`).
//!
//! Deciding: [`Settings::from_lookup`], [`TenantConfig::parse`] and [`Config::assemble`] take values and return
//! settings or every problem found at once. Doing: [`Settings::from_env`], [`TenantConfig::load`],
//! [`Config::load`] read the process environment and the file. Errors name the setting; secret values never
//! appear in them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

// The names are the contract's: the operator writes the same ones.
pub use saaschat_contract::Component;
pub use saaschat_contract::env::{
    COMPONENT as ENV_COMPONENT, CONFIG_FILE as ENV_CONFIG_FILE, DATABASE_URL as ENV_DATABASE_URL,
    LISTEN_ADDR as ENV_LISTEN_ADDR, OTEL_SERVICE_NAME as ENV_OTEL_SERVICE_NAME, POD_NAME as ENV_POD_NAME,
    POD_NAMESPACE as ENV_POD_NAMESPACE, REDIS_URL as ENV_REDIS_URL, TENANT as ENV_TENANT,
};
pub use saaschat_contract::paths::DEFAULT_CONFIG_FILE;

/// `0.0.0.0` on the contract's HTTP port.
pub fn default_listen_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], saaschat_contract::ports::HTTP))
}

/// One setting that is missing or bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    /// `reason` never contains the value of a secret setting.
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Everything wrong with the configuration, reported at once so one restart fixes all of it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {}", join(.0))]
    Settings(Vec<SettingError>),
    #[error("cannot read the tenant configuration {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the tenant configuration {} is not valid: {source}", path.display())]
    ParseFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the tenant configuration {} is for tenant {file:?}, but {ENV_TENANT} is {env:?}", path.display())]
    TenantMismatch { path: PathBuf, file: String, env: String },
}

fn join(errors: &[SettingError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The settings from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tenant: String,
    pub component: Component,
    pub config_file: PathBuf,
    pub listen_addr: SocketAddr,
    /// Present for every component that [uses a database](Component::uses_database).
    pub database_url: Option<Secret<String>>,
    pub redis_url: Secret<String>,
    pub otel_service_name: String,
    /// Absent outside Kubernetes.
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Decides the settings from a lookup of environment variables. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let get = |name: &str| lookup(name).map(|value| value.trim().to_string()).filter(|value| !value.is_empty());
        let mut errors = Vec::new();

        let tenant = match get(ENV_TENANT) {
            None => {
                errors.push(SettingError::Missing { name: ENV_TENANT });
                None
            }
            Some(tenant) if !is_dns_label(&tenant) => {
                errors.push(SettingError::Invalid {
                    name: ENV_TENANT,
                    reason: format!("{tenant:?} is not a DNS label (lower-case letters, digits and '-', at most 63)"),
                });
                None
            }
            Some(tenant) => Some(tenant),
        };
        let component = match get(ENV_COMPONENT) {
            None => {
                errors.push(SettingError::Missing { name: ENV_COMPONENT });
                None
            }
            Some(name) => {
                let component = Component::service_named(&name);
                if component.is_none() {
                    let known = Component::SERVICES.map(Component::name).join(", ");
                    errors.push(SettingError::Invalid {
                        name: ENV_COMPONENT,
                        reason: format!("{name:?} is not one of {known}"),
                    });
                }
                component
            }
        };
        let config_file = PathBuf::from(get(ENV_CONFIG_FILE).unwrap_or_else(|| DEFAULT_CONFIG_FILE.into()));
        let listen_addr = match get(ENV_LISTEN_ADDR) {
            None => Some(default_listen_addr()),
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    errors.push(SettingError::Invalid {
                        name: ENV_LISTEN_ADDR,
                        reason: format!("{text:?} is not an address and port such as 0.0.0.0:8080"),
                    });
                    None
                }
            },
        };
        let database_url = match get(ENV_DATABASE_URL) {
            Some(url) => match check_url(&url, &["postgres", "postgresql"]) {
                Ok(()) => Some(Secret::new(url)),
                Err(reason) => {
                    errors.push(SettingError::Invalid { name: ENV_DATABASE_URL, reason });
                    None
                }
            },
            None => {
                if component.is_some_and(Component::uses_database) {
                    errors.push(SettingError::Missing { name: ENV_DATABASE_URL });
                }
                None
            }
        };
        let redis_url = match get(ENV_REDIS_URL) {
            Some(url) => match check_url(&url, &["redis", "rediss"]) {
                Ok(()) => Some(Secret::new(url)),
                Err(reason) => {
                    errors.push(SettingError::Invalid { name: ENV_REDIS_URL, reason });
                    None
                }
            },
            None => {
                errors.push(SettingError::Missing { name: ENV_REDIS_URL });
                None
            }
        };

        match (tenant, component, listen_addr, redis_url) {
            (Some(tenant), Some(component), Some(listen_addr), Some(redis_url)) if errors.is_empty() => Ok(Settings {
                tenant,
                component,
                config_file,
                listen_addr,
                database_url,
                redis_url,
                otel_service_name: get(ENV_OTEL_SERVICE_NAME).unwrap_or_else(|| component.telemetry_name()),
                pod_name: get(ENV_POD_NAME),
                pod_namespace: get(ENV_POD_NAMESPACE),
            }),
            _ => Err(ConfigError::Settings(errors)),
        }
    }
}

/// Checks a connection URL without ever putting it (it holds a password) into the reason.
fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let expected = schemes.iter().map(|scheme| format!("{scheme}://")).collect::<Vec<_>>().join(" or ");
    let parsed = url::Url::parse(url).map_err(|error| format!("not a URL ({error}); expected {expected}"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!("the scheme must be {expected}"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_string());
    }
    Ok(())
}

fn is_dns_label(text: &str) -> bool {
    text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// The tenant document the operator writes (`config_map.rs`). It holds no secret values, only the paths where
/// secrets are mounted. Unknown fields are ignored so that an operator newer than the service does not stop it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantConfig {
    pub tenant: String,
    pub display_name: String,
    pub namespace: String,
    pub url: String,
    pub default_model: String,
    pub plan: Plan,
    #[serde(default)]
    pub providers: Vec<Provider>,
    pub auth: AuthConfig,
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    #[serde(default)]
    pub stripe: Option<StripeConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub name: String,
    pub tokens_per_month: i64,
    pub requests_per_minute: i32,
    pub seats: i32,
    /// Empty: every model of the tenant's providers.
    #[serde(default)]
    pub allowed_models: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    pub name: String,
    /// `openai`, `anthropic`, `gemini`, `groq` or `openaiCompatible`.
    #[serde(rename = "type")]
    pub provider_type: String,
    pub base_url: Option<String>,
    pub api_key_file: PathBuf,
    pub limits: ProviderLimits,
    #[serde(default)]
    pub models: Vec<Model>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderLimits {
    pub requests_per_minute: i32,
    pub max_concurrent_requests: i32,
    pub timeout_seconds: i32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    pub name: String,
    /// US dollars per million tokens as a decimal string (`"0.15"`); kept as text so no precision is lost.
    pub input_price_per_million: String,
    pub output_price_per_million: String,
    #[serde(default)]
    pub context_window: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfig {
    pub url: String,
    pub jwks_url: String,
    pub issuer: String,
    pub jwt_key_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SmtpConfig {
    pub host: String,
    pub port: i32,
    pub security: SmtpSecurity,
    pub from: String,
    #[serde(default)]
    pub credentials_dir: Option<PathBuf>,
}

/// Spelled as the CRD's enum serializes (`StartTls`, `Tls`, `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SmtpSecurity {
    StartTls,
    Tls,
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StripeConfig {
    /// Plan name to Stripe price ID.
    #[serde(default)]
    pub prices: BTreeMap<String, String>,
    pub credentials_dir: PathBuf,
}

impl TenantConfig {
    /// Parses the document; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<TenantConfig, ConfigError> {
        serde_json::from_str(text).map_err(|source| ConfigError::ParseFile { path: path.to_path_buf(), source })
    }

    pub fn load(path: &Path) -> Result<TenantConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::ReadFile { path: path.to_path_buf(), source })?;
        TenantConfig::parse(&text, path)
    }
}

/// Everything a service is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub tenant: TenantConfig,
}

impl Config {
    /// Reads the environment and the tenant file it names.
    pub fn load() -> Result<Config, ConfigError> {
        let settings = Settings::from_env()?;
        let tenant = TenantConfig::load(&settings.config_file)?;
        Config::assemble(settings, tenant)
    }

    /// Checks that the environment and the file describe the same tenant.
    pub fn assemble(settings: Settings, tenant: TenantConfig) -> Result<Config, ConfigError> {
        if settings.tenant != tenant.tenant {
            return Err(ConfigError::TenantMismatch {
                path: settings.config_file.clone(),
                file: tenant.tenant,
                env: settings.tenant,
            });
        }
        Ok(Config { settings, tenant })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const PASSWORD: &str = "s3cr3t-pa55w0rd";

    /// The environment the operator writes for the chat service.
    fn operator_env() -> HashMap<&'static str, String> {
        HashMap::from([
            (ENV_TENANT, "acme".to_string()),
            (ENV_COMPONENT, "chat".to_string()),
            (ENV_CONFIG_FILE, "/etc/saaschat/tenant.json".to_string()),
            (ENV_LISTEN_ADDR, "0.0.0.0:8080".to_string()),
            (ENV_OTEL_SERVICE_NAME, "saaschat-chat".to_string()),
            (ENV_POD_NAME, "chat-5d9c-abcde".to_string()),
            (ENV_POD_NAMESPACE, "tenant-acme".to_string()),
            (ENV_REDIS_URL, format!("redis://:{PASSWORD}@redis.tenant-acme.svc:6379/0")),
            (ENV_DATABASE_URL, format!("postgres://saaschat:{PASSWORD}@postgres.tenant-acme.svc:5432/saaschat")),
        ])
    }

    fn settings(env: &HashMap<&'static str, String>) -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| env.get(name).cloned())
    }

    fn errors(env: &HashMap<&'static str, String>) -> Vec<SettingError> {
        match settings(env) {
            Err(ConfigError::Settings(errors)) => errors,
            other => panic!("expected setting errors, got {other:?}"),
        }
    }

    #[test]
    fn the_operators_environment_is_accepted() {
        let settings = settings(&operator_env()).expect("valid");
        assert_eq!(settings.tenant, "acme");
        assert_eq!(settings.component, Component::Chat);
        assert_eq!(settings.listen_addr, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(settings.config_file, PathBuf::from("/etc/saaschat/tenant.json"));
        assert_eq!(settings.pod_namespace.as_deref(), Some("tenant-acme"));
        assert!(settings.database_url.expect("database").expose().starts_with("postgres://"));
    }

    #[test]
    fn debug_output_of_settings_hides_the_passwords() {
        let printed = format!("{:?}", settings(&operator_env()).expect("valid"));
        assert!(!printed.contains(PASSWORD), "{printed}");
    }

    #[test]
    fn defaults_apply_outside_kubernetes() {
        let mut env = operator_env();
        for name in [ENV_CONFIG_FILE, ENV_LISTEN_ADDR, ENV_OTEL_SERVICE_NAME, ENV_POD_NAME, ENV_POD_NAMESPACE] {
            env.remove(name);
        }
        let settings = settings(&env).expect("valid");
        assert_eq!(settings.config_file, PathBuf::from(DEFAULT_CONFIG_FILE));
        assert_eq!(settings.listen_addr.port(), 8080);
        assert_eq!(settings.otel_service_name, "saaschat-chat");
        assert_eq!(settings.pod_name, None);
    }

    #[test]
    fn every_missing_setting_is_named() {
        let messages: Vec<String> = errors(&HashMap::new()).iter().map(ToString::to_string).collect();
        assert_eq!(messages, ["SAASCHAT_TENANT is not set", "SAASCHAT_COMPONENT is not set", "REDIS_URL is not set"]);
    }

    #[test]
    fn the_database_is_required_except_for_the_email_worker() {
        let mut env = operator_env();
        env.remove(ENV_DATABASE_URL);
        assert_eq!(errors(&env), [SettingError::Missing { name: ENV_DATABASE_URL }]);
        env.insert(ENV_COMPONENT, "email-worker".into());
        let settings = settings(&env).expect("the email worker needs no database");
        assert_eq!(settings.database_url, None);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let mut env = operator_env();
        env.insert(ENV_TENANT, "  ".into());
        assert_eq!(errors(&env), [SettingError::Missing { name: ENV_TENANT }]);
    }

    #[test]
    fn bad_values_are_named_with_the_reason() {
        let mut env = operator_env();
        env.insert(ENV_TENANT, "Acme_Corp".into());
        env.insert(ENV_COMPONENT, "web".into());
        env.insert(ENV_LISTEN_ADDR, "localhost".into());
        let messages: Vec<String> = errors(&env).iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "SAASCHAT_TENANT is invalid: \"Acme_Corp\" is not a DNS label (lower-case letters, digits and '-', at most 63)",
                "SAASCHAT_COMPONENT is invalid: \"web\" is not one of auth, chat, billing, email-worker",
                "SAASCHAT_LISTEN_ADDR is invalid: \"localhost\" is not an address and port such as 0.0.0.0:8080",
            ]
        );
    }

    #[test]
    fn bad_connection_urls_are_reported_without_their_passwords() {
        let mut env = operator_env();
        env.insert(ENV_DATABASE_URL, format!("mysql://saaschat:{PASSWORD}@db:3306/saaschat"));
        env.insert(ENV_REDIS_URL, format!("redis://:{PASSWORD}@redis:notaport/0"));
        let error = settings(&env).expect_err("invalid");
        let message = error.to_string();
        assert!(!message.contains(PASSWORD), "{message}");
        assert!(!format!("{error:?}").contains(PASSWORD));
        assert_eq!(
            message,
            "invalid configuration: DATABASE_URL is invalid: the scheme must be postgres:// or postgresql://; \
             REDIS_URL is invalid: not a URL (invalid port number); expected redis:// or rediss://"
        );
    }

    /// The document the operator renders for `config/samples/02-chattenant.yaml`
    /// (`saaschat-operator render -f config/samples/01-aiprovider.yaml -f config/samples/02-chattenant.yaml`).
    const RENDERED: &str = include_str!("../tests/fixtures/tenant.json");

    #[test]
    fn the_document_the_operator_renders_parses() {
        let config = TenantConfig::parse(RENDERED, Path::new("tenant.json")).expect("parses");
        assert_eq!(config.tenant, "acme");
        assert_eq!(config.namespace, "tenant-acme");
        assert_eq!(config.plan.name, "pro");
        assert_eq!(config.plan.tokens_per_month, 50_000_000);
        assert_eq!(config.auth.jwks_url, "http://auth:8080/.well-known/jwks.json");
        assert_eq!(config.auth.issuer, "http://chat.tenant-acme.svc:8080");
        let openai = &config.providers[0];
        assert_eq!(openai.provider_type, "openai");
        assert_eq!(openai.api_key_file, PathBuf::from("/var/run/secrets/saaschat/providers/openai/api-key"));
        assert_eq!(
            openai.models.iter().map(|model| model.name.as_str()).collect::<Vec<_>>(),
            ["gpt-4o-mini", "gpt-4o"]
        );
        assert_eq!(openai.models[0].input_price_per_million, "0.15");
        assert_eq!(openai.models[0].context_window, Some(128_000));
        assert_eq!(config.smtp, None);
        assert_eq!(config.stripe, None);
    }

    #[test]
    fn smtp_and_stripe_sections_parse() {
        let mut document: serde_json::Value = serde_json::from_str(RENDERED).expect("json");
        document["smtp"] = serde_json::json!({
            "host": "smtp.example.com", "port": 587, "security": "StartTls", "from": "noreply@example.com",
            "credentialsDir": "/var/run/secrets/saaschat/smtp",
        });
        document["stripe"] = serde_json::json!({
            "prices": {"pro": "price_123"}, "credentialsDir": "/var/run/secrets/saaschat/stripe",
        });
        let config = TenantConfig::parse(&document.to_string(), Path::new("tenant.json")).expect("parses");
        let smtp = config.smtp.expect("smtp");
        assert_eq!(smtp.security, SmtpSecurity::StartTls);
        assert_eq!(config.stripe.expect("stripe").prices["pro"], "price_123");
    }

    #[test]
    fn a_broken_document_names_the_file_and_the_place() {
        let error = TenantConfig::parse(r#"{"tenant": "acme", "plan": 3}"#, Path::new("/etc/saaschat/tenant.json"))
            .expect_err("invalid");
        let message = error.to_string();
        assert!(message.starts_with("the tenant configuration /etc/saaschat/tenant.json is not valid: "), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn the_file_must_describe_the_tenant_of_the_environment() {
        let mut env = operator_env();
        env.insert(ENV_TENANT, "globex".into());
        let tenant = TenantConfig::parse(RENDERED, Path::new("tenant.json")).expect("parses");
        let error = Config::assemble(settings(&env).expect("valid"), tenant).expect_err("mismatch");
        assert_eq!(
            error.to_string(),
            "the tenant configuration /etc/saaschat/tenant.json is for tenant \"acme\", but SAASCHAT_TENANT is \"globex\""
        );
    }

    #[test]
    fn loading_reads_the_file_and_names_it_when_it_is_missing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tenant.json");
        std::fs::write(&path, RENDERED).expect("write");
        assert_eq!(TenantConfig::load(&path).expect("loads").tenant, "acme");
        let missing = dir.path().join("missing.json");
        let message = TenantConfig::load(&missing).expect_err("missing").to_string();
        assert!(message.starts_with(&format!("cannot read the tenant configuration {}: ", missing.display())));
    }
}
