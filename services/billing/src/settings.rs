//! The billing service's own settings (beside the platform's [`saaschat_platform::config::Config`]): where Stripe
//! is, whether to write the Kubernetes status, the usage windows, and the Stripe credentials the operator mounts.
//!
//! Deciding: [`BillingSettings::from_lookup`] and [`parse_webhook_secrets`]. Doing: [`BillingSettings::from_env`]
//! and [`StripeCredentials::load`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use saaschat_platform::Secret;
use saaschat_platform::config::SettingError;

pub const ENV_STRIPE_API_BASE: &str = "SAASCHAT_STRIPE_API_BASE";
pub const ENV_KUBERNETES: &str = "SAASCHAT_BILLING_KUBERNETES";
pub const ENV_KUBERNETES_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
pub const ENV_USAGE_WINDOW_SECONDS: &str = "SAASCHAT_BILLING_USAGE_WINDOW_SECONDS";
pub const ENV_USAGE_SETTLE_SECONDS: &str = "SAASCHAT_BILLING_USAGE_SETTLE_SECONDS";
pub const ENV_METER_EVENT_NAME: &str = "SAASCHAT_BILLING_METER_EVENT";
pub const ENV_WORKERS: &str = "SAASCHAT_BILLING_WORKERS";
pub const ENV_USAGE_REPORTING: &str = "SAASCHAT_BILLING_USAGE_REPORTING";

pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";
pub const DEFAULT_METER_EVENT_NAME: &str = "saaschat_tokens";

/// The file names of the `stripe-credentials` Secret (`operator/src/build/secrets.rs`).
pub const SECRET_KEY_FILE: &str = "secretKey";
pub const WEBHOOK_SECRET_FILE: &str = "webhookSecret";

#[derive(Clone, Debug, PartialEq)]
pub struct BillingSettings {
    pub stripe_api_base: url::Url,
    /// Whether to write `Subscription.status`; off outside a cluster.
    pub kubernetes: bool,
    /// Whether to report usage to Stripe meters (off for tenants billed without a meter, or to pause reporting).
    pub usage_reporting: bool,
    /// The usage window reported as one meter event (default one hour, aligned to UTC).
    pub usage_window: Duration,
    /// How long after a window closes its usage counts as settled (completions still streaming are recorded late).
    pub usage_settle: Duration,
    pub meter_event_name: String,
    /// Concurrent webhook event processors per replica.
    pub workers: usize,
}

impl BillingSettings {
    pub fn from_env() -> Result<BillingSettings, Vec<SettingError>> {
        BillingSettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Decides the settings from a lookup of environment variables; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<BillingSettings, Vec<SettingError>> {
        let get = |name: &str| lookup(name).map(|value| value.trim().to_string()).filter(|value| !value.is_empty());
        let mut errors = Vec::new();

        let base_text = get(ENV_STRIPE_API_BASE).unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.into());
        let stripe_api_base = match url::Url::parse(&base_text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Some(url),
            _ => {
                errors.push(SettingError::Invalid {
                    name: ENV_STRIPE_API_BASE,
                    reason: format!("{base_text:?} is not an http(s) URL such as {DEFAULT_STRIPE_API_BASE}"),
                });
                None
            }
        };
        let kubernetes = match get(ENV_KUBERNETES).as_deref() {
            None => get(ENV_KUBERNETES_SERVICE_HOST).is_some(),
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                errors.push(SettingError::Invalid {
                    name: ENV_KUBERNETES,
                    reason: format!("{other:?} is neither true nor false"),
                });
                false
            }
        };
        let usage_reporting = match get(ENV_USAGE_REPORTING).as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                errors.push(SettingError::Invalid {
                    name: ENV_USAGE_REPORTING,
                    reason: format!("{other:?} is neither true nor false"),
                });
                true
            }
        };
        let mut seconds = |name: &'static str, default: u64, min: u64, max: u64| match get(name) {
            None => default,
            Some(text) => match text.parse::<u64>() {
                Ok(value) if (min..=max).contains(&value) => value,
                _ => {
                    errors.push(SettingError::Invalid {
                        name,
                        reason: format!("{text:?} is not a whole number of seconds from {min} to {max}"),
                    });
                    default
                }
            },
        };
        // A window must divide a day so that windows stay aligned to UTC midnight, whatever the start.
        let window_seconds = seconds(ENV_USAGE_WINDOW_SECONDS, 3600, 60, 86_400);
        let settle_seconds = seconds(ENV_USAGE_SETTLE_SECONDS, 120, 0, 3600);
        let workers = seconds(ENV_WORKERS, 4, 1, 64);
        if 86_400 % window_seconds != 0 {
            errors.push(SettingError::Invalid {
                name: ENV_USAGE_WINDOW_SECONDS,
                reason: format!("{window_seconds} does not divide a day (86400) evenly"),
            });
        }
        let meter_event_name = get(ENV_METER_EVENT_NAME).unwrap_or_else(|| DEFAULT_METER_EVENT_NAME.into());

        match stripe_api_base {
            Some(stripe_api_base) if errors.is_empty() => Ok(BillingSettings {
                stripe_api_base,
                kubernetes,
                usage_reporting,
                usage_window: Duration::from_secs(window_seconds),
                usage_settle: Duration::from_secs(settle_seconds),
                meter_event_name,
                workers: usize::try_from(workers).unwrap_or(4),
            }),
            _ => Err(errors),
        }
    }
}

/// The Stripe API key and the webhook signing secrets.
#[derive(Clone, Debug)]
pub struct StripeCredentials {
    pub secret_key: Secret<String>,
    /// More than one while a webhook secret is being rotated.
    pub webhook_secrets: Vec<Secret<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the Stripe credential {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Stripe credential {} is empty", path.display())]
    Empty { path: PathBuf },
}

impl StripeCredentials {
    /// Reads `secretKey` and `webhookSecret` from the directory the operator mounts the Secret in.
    pub fn load(dir: &Path) -> Result<StripeCredentials, CredentialsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CredentialsError::Read { path, source })
        };
        let secret_key = read(SECRET_KEY_FILE)?.trim().to_string();
        if secret_key.is_empty() {
            return Err(CredentialsError::Empty { path: dir.join(SECRET_KEY_FILE) });
        }
        let webhook_secrets = parse_webhook_secrets(&read(WEBHOOK_SECRET_FILE)?);
        if webhook_secrets.is_empty() {
            return Err(CredentialsError::Empty { path: dir.join(WEBHOOK_SECRET_FILE) });
        }
        Ok(StripeCredentials { secret_key: Secret::new(secret_key), webhook_secrets })
    }
}

/// The webhook signing secrets in the file: one or more, separated by newlines or commas (rotation).
pub fn parse_webhook_secrets(text: &str) -> Vec<Secret<String>> {
    text.split([',', '\n', '\r'])
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(|secret| Secret::new(secret.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn decide(env: &[(&str, &str)]) -> Result<BillingSettings, Vec<SettingError>> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        BillingSettings::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn defaults_outside_a_cluster() {
        let settings = decide(&[]).expect("valid");
        assert_eq!(settings.stripe_api_base.as_str(), "https://api.stripe.com/");
        assert!(!settings.kubernetes);
        assert!(settings.usage_reporting);
        assert_eq!(settings.usage_window, Duration::from_secs(3600));
        assert_eq!(settings.usage_settle, Duration::from_secs(120));
        assert_eq!(settings.meter_event_name, "saaschat_tokens");
        assert_eq!(settings.workers, 4);
    }

    #[test]
    fn kubernetes_is_on_in_a_cluster_unless_switched_off() {
        assert!(decide(&[(ENV_KUBERNETES_SERVICE_HOST, "10.96.0.1")]).expect("valid").kubernetes);
        let off = decide(&[(ENV_KUBERNETES_SERVICE_HOST, "10.96.0.1"), (ENV_KUBERNETES, "false")]);
        assert!(!off.expect("valid").kubernetes);
        assert!(decide(&[(ENV_KUBERNETES, "true")]).expect("valid").kubernetes);
    }

    #[test]
    fn overrides_are_read() {
        let settings = decide(&[
            (ENV_STRIPE_API_BASE, "http://127.0.0.1:12111"),
            (ENV_USAGE_WINDOW_SECONDS, "900"),
            (ENV_USAGE_SETTLE_SECONDS, "0"),
            (ENV_METER_EVENT_NAME, "tokens"),
            (ENV_WORKERS, "8"),
            (ENV_USAGE_REPORTING, "false"),
        ])
        .expect("valid");
        assert_eq!(settings.stripe_api_base.as_str(), "http://127.0.0.1:12111/");
        assert_eq!(settings.usage_window, Duration::from_secs(900));
        assert_eq!(settings.usage_settle, Duration::ZERO);
        assert_eq!(settings.meter_event_name, "tokens");
        assert_eq!(settings.workers, 8);
        assert!(!settings.usage_reporting);
    }

    #[test]
    fn every_bad_value_is_named() {
        let errors = decide(&[
            (ENV_STRIPE_API_BASE, "ftp://stripe"),
            (ENV_KUBERNETES, "yes"),
            (ENV_USAGE_REPORTING, "maybe"),
            (ENV_USAGE_WINDOW_SECONDS, "7"),
            (ENV_USAGE_SETTLE_SECONDS, "-1"),
            (ENV_WORKERS, "0"),
        ])
        .expect_err("invalid");
        let names: Vec<&str> = errors
            .iter()
            .map(|error| match error {
                SettingError::Invalid { name, .. } | SettingError::Missing { name } => *name,
            })
            .collect();
        assert_eq!(
            names,
            [
                ENV_STRIPE_API_BASE,
                ENV_KUBERNETES,
                ENV_USAGE_REPORTING,
                ENV_USAGE_WINDOW_SECONDS,
                ENV_USAGE_SETTLE_SECONDS,
                ENV_WORKERS
            ]
        );
    }

    #[test]
    fn windows_must_divide_a_day() {
        let errors = decide(&[(ENV_USAGE_WINDOW_SECONDS, "7000")]).expect_err("invalid");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("does not divide a day"), "{}", errors[0]);
        assert!(decide(&[(ENV_USAGE_WINDOW_SECONDS, "86400")]).is_ok());
    }

    #[test]
    fn webhook_secrets_are_split_on_newlines_and_commas() {
        let secrets = parse_webhook_secrets("whsec_old\nwhsec_new,\r\n whsec_third ,\n\n");
        let values: Vec<&str> = secrets.iter().map(|secret| secret.expose().as_str()).collect();
        assert_eq!(values, ["whsec_old", "whsec_new", "whsec_third"]);
        assert!(parse_webhook_secrets(" \n,").is_empty());
    }

    #[test]
    fn credentials_are_read_from_the_mounted_secret() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(SECRET_KEY_FILE), "sk_test_abc\n").expect("write");
        std::fs::write(dir.path().join(WEBHOOK_SECRET_FILE), "whsec_1\nwhsec_2\n").expect("write");
        let credentials = StripeCredentials::load(dir.path()).expect("loads");
        assert_eq!(credentials.secret_key.expose(), "sk_test_abc");
        assert_eq!(credentials.webhook_secrets.len(), 2);
        assert!(!format!("{credentials:?}").contains("sk_test_abc"));

        std::fs::write(dir.path().join(WEBHOOK_SECRET_FILE), "\n").expect("write");
        let error = StripeCredentials::load(dir.path()).expect_err("empty");
        assert!(error.to_string().ends_with("webhookSecret is empty"), "{error}");
        std::fs::remove_file(dir.path().join(SECRET_KEY_FILE)).expect("remove");
        assert!(matches!(StripeCredentials::load(dir.path()), Err(CredentialsError::Read { .. })));
    }
}
