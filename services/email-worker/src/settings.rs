//! The worker's own settings: tuning knobs from the environment (all optional, with production defaults) and the
//! SMTP server from the tenant document plus the credentials the operator mounts (`username` and `password` files
//! in `smtp.credentialsDir`, see `operator/src/build/secrets.rs`).
//!
//! Deciding: [`WorkerSettings::from_lookup`] and [`SmtpSettings::assemble`]. Doing: [`WorkerSettings::from_env`]
//! and [`SmtpSettings::load`], which read the process environment and the mounted files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use saaschat_platform::Secret;
use saaschat_platform::config::{SettingError, SmtpConfig, SmtpSecurity};

/// How long a message may sit unacknowledged with a consumer before another worker takes it over (`XAUTOCLAIM`).
pub const ENV_CLAIM_MIN_IDLE_MS: &str = "SAASCHAT_EMAIL_CLAIM_MIN_IDLE_MS";
/// SMTP attempts per delivery before the message is dead-lettered.
pub const ENV_MAX_ATTEMPTS: &str = "SAASCHAT_EMAIL_MAX_ATTEMPTS";
/// The first retry delay; each further retry doubles it.
pub const ENV_RETRY_BASE_MS: &str = "SAASCHAT_EMAIL_RETRY_BASE_MS";
/// The longest retry delay.
pub const ENV_RETRY_MAX_MS: &str = "SAASCHAT_EMAIL_RETRY_MAX_MS";
/// Messages sent at once.
pub const ENV_CONCURRENCY: &str = "SAASCHAT_EMAIL_CONCURRENCY";
/// Deliveries (the stream's own count, which grows when a worker dies holding the message) before a message is
/// dead-lettered without another attempt: a message that kills every worker must not circulate for ever.
pub const ENV_MAX_DELIVERIES: &str = "SAASCHAT_EMAIL_MAX_DELIVERIES";
/// How long one SMTP exchange may take.
pub const ENV_SMTP_TIMEOUT_MS: &str = "SAASCHAT_EMAIL_SMTP_TIMEOUT_MS";
/// A PEM file of further certificate authorities to trust for the SMTP server's certificate, besides Mozilla's
/// roots: for a relay inside the cluster whose certificate an internal CA issued.
pub const ENV_SMTP_CA_FILE: &str = "SAASCHAT_EMAIL_SMTP_CA_FILE";

/// The tuning of the consumer and its retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSettings {
    pub claim_min_idle: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub concurrency: usize,
    pub max_deliveries: u64,
    pub smtp_timeout: Duration,
    /// How long the "sent" marker of an email id is kept: a duplicate that arrives later is mailed again.
    pub sent_marker_ttl: Duration,
    /// How long one `XREADGROUP` waits for new entries; below the Redis response timeout (5 s).
    pub read_block: Duration,
    /// A consumer without pending messages that has been idle this long is removed from the group.
    pub stale_consumer_idle: Duration,
    pub smtp_ca_file: Option<PathBuf>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            claim_min_idle: Duration::from_secs(60),
            max_attempts: 8,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            concurrency: 8,
            max_deliveries: 5,
            smtp_timeout: Duration::from_secs(30),
            sent_marker_ttl: Duration::from_secs(7 * 24 * 3600),
            read_block: Duration::from_secs(2),
            stale_consumer_idle: Duration::from_secs(24 * 3600),
            smtp_ca_file: None,
        }
    }
}

impl WorkerSettings {
    pub fn from_env() -> Result<WorkerSettings, Vec<SettingError>> {
        WorkerSettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Decides the settings from a lookup of environment variables; unset or empty variables keep the default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<WorkerSettings, Vec<SettingError>> {
        let defaults = WorkerSettings::default();
        let mut errors = Vec::new();
        let mut number = |name: &'static str, default: u64, min: u64, max: u64| -> u64 {
            let Some(text) = lookup(name).map(|value| value.trim().to_string()).filter(|value| !value.is_empty())
            else {
                return default;
            };
            match text.parse::<u64>() {
                Ok(value) if (min..=max).contains(&value) => value,
                _ => {
                    errors.push(SettingError::Invalid {
                        name,
                        reason: format!("{text:?} is not a whole number from {min} to {max}"),
                    });
                    default
                }
            }
        };
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        const DAY_MS: u64 = 24 * 3600 * 1000;
        let claim_min_idle = number(ENV_CLAIM_MIN_IDLE_MS, millis(defaults.claim_min_idle), 100, DAY_MS);
        let max_attempts = number(ENV_MAX_ATTEMPTS, u64::from(defaults.max_attempts), 1, 100);
        let retry_base = number(ENV_RETRY_BASE_MS, millis(defaults.retry_base), 1, DAY_MS);
        let retry_max = number(ENV_RETRY_MAX_MS, millis(defaults.retry_max), 1, DAY_MS);
        let concurrency = number(ENV_CONCURRENCY, defaults.concurrency as u64, 1, 1024);
        let max_deliveries = number(ENV_MAX_DELIVERIES, defaults.max_deliveries, 1, 1000);
        let smtp_timeout = number(ENV_SMTP_TIMEOUT_MS, millis(defaults.smtp_timeout), 100, 600_000);
        if retry_max < retry_base {
            errors.push(SettingError::Invalid {
                name: ENV_RETRY_MAX_MS,
                reason: format!("{retry_max} is below {ENV_RETRY_BASE_MS} ({retry_base})"),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(WorkerSettings {
            claim_min_idle: Duration::from_millis(claim_min_idle),
            max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
            retry_base: Duration::from_millis(retry_base),
            retry_max: Duration::from_millis(retry_max),
            concurrency: usize::try_from(concurrency).unwrap_or(1),
            max_deliveries,
            smtp_timeout: Duration::from_millis(smtp_timeout),
            smtp_ca_file: lookup(ENV_SMTP_CA_FILE).filter(|path| !path.trim().is_empty()).map(PathBuf::from),
            ..defaults
        })
    }

    /// How often the worker renews the claim on the messages it holds, so that a live worker (sending, or waiting
    /// to retry) is never mistaken for a dead one.
    pub fn heartbeat_interval(&self) -> Duration {
        self.claim_min_idle / 3
    }

    /// How often the worker looks for messages that a dead worker left behind.
    pub fn claim_interval(&self) -> Duration {
        (self.claim_min_idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(10))
    }

    /// How long the "sending" lock on an email id lives without renewal. The heartbeat renews the locks a live
    /// worker holds, so a lock outlives its worker by at most this long: about when the worker's entries become
    /// claimable by others.
    pub fn sending_lock_ttl(&self) -> Duration {
        self.claim_min_idle
    }
}

/// The user name and password for SMTP `AUTH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: Secret<String>,
}

/// Where and how to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// The `From` header, for example `Acme Chat <no-reply@acme.example.com>`.
    pub from: String,
    pub credentials: Option<SmtpCredentials>,
    /// Further trusted certificate authorities (PEM), from [`ENV_SMTP_CA_FILE`].
    pub extra_roots_pem: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpSettingsError {
    #[error("smtp.port {0} is not a TCP port")]
    Port(i32),
    #[error("cannot read the SMTP {name} file {}: {source}", path.display())]
    CredentialFile {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the SMTP CA file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the SMTP {0} file is empty")]
    EmptyCredential(&'static str),
}

impl SmtpSettings {
    /// Reads the credential files named by the tenant document, and the CA file if there is one.
    pub fn load(config: &SmtpConfig, ca_file: Option<&Path>) -> Result<SmtpSettings, SmtpSettingsError> {
        let read = |name: &'static str, dir: &Path| -> Result<String, SmtpSettingsError> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| SmtpSettingsError::CredentialFile { name, path, source })
        };
        let credentials = match &config.credentials_dir {
            Some(dir) => Some((read("username", dir)?, Secret::new(read("password", dir)?))),
            None => None,
        };
        let extra_roots_pem = match ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|source| SmtpSettingsError::CaFile { path: path.to_path_buf(), source })?,
            ),
            None => None,
        };
        Ok(SmtpSettings { extra_roots_pem, ..SmtpSettings::assemble(config, credentials)? })
    }

    /// Decides the settings from the tenant document and the credential files' contents. A trailing line break
    /// (common when a Secret is created from a file) is not part of the value.
    pub fn assemble(
        config: &SmtpConfig,
        credentials: Option<(String, Secret<String>)>,
    ) -> Result<SmtpSettings, SmtpSettingsError> {
        let port =
            u16::try_from(config.port).ok().filter(|port| *port > 0).ok_or(SmtpSettingsError::Port(config.port))?;
        let credentials = match credentials {
            Some((username, password)) => {
                let username = without_trailing_line_break(&username).to_string();
                let password = without_trailing_line_break(password.expose()).to_string();
                if username.is_empty() {
                    return Err(SmtpSettingsError::EmptyCredential("username"));
                }
                if password.is_empty() {
                    return Err(SmtpSettingsError::EmptyCredential("password"));
                }
                Some(SmtpCredentials { username, password: Secret::new(password) })
            }
            None => None,
        };
        Ok(SmtpSettings {
            host: config.host.clone(),
            port,
            security: config.security,
            from: config.from.clone(),
            credentials,
            extra_roots_pem: None,
        })
    }
}

fn without_trailing_line_break(value: &str) -> &str {
    value.strip_suffix("\r\n").or_else(|| value.strip_suffix('\n')).unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(env: &[(&str, &str)]) -> Result<WorkerSettings, Vec<SettingError>> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        WorkerSettings::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn an_empty_environment_gives_the_defaults() {
        assert_eq!(settings(&[]), Ok(WorkerSettings::default()));
        assert_eq!(settings(&[(ENV_MAX_ATTEMPTS, " ")]), Ok(WorkerSettings::default()));
    }

    #[test]
    fn every_knob_is_read() {
        let read = settings(&[
            (ENV_CLAIM_MIN_IDLE_MS, "1500"),
            (ENV_MAX_ATTEMPTS, "3"),
            (ENV_RETRY_BASE_MS, "10"),
            (ENV_RETRY_MAX_MS, "40"),
            (ENV_CONCURRENCY, "2"),
            (ENV_MAX_DELIVERIES, "4"),
            (ENV_SMTP_TIMEOUT_MS, "2000"),
            (ENV_SMTP_CA_FILE, "/etc/saaschat/smtp-ca.pem"),
        ])
        .expect("valid");
        assert_eq!(read.claim_min_idle, Duration::from_millis(1500));
        assert_eq!(read.max_attempts, 3);
        assert_eq!(read.retry_base, Duration::from_millis(10));
        assert_eq!(read.retry_max, Duration::from_millis(40));
        assert_eq!(read.concurrency, 2);
        assert_eq!(read.max_deliveries, 4);
        assert_eq!(read.smtp_timeout, Duration::from_secs(2));
        assert_eq!(read.smtp_ca_file, Some(PathBuf::from("/etc/saaschat/smtp-ca.pem")));
        assert_eq!(read.heartbeat_interval(), Duration::from_millis(500));
        assert_eq!(read.claim_interval(), Duration::from_millis(750));
        assert_eq!(read.sending_lock_ttl(), Duration::from_millis(1500));
    }

    #[test]
    fn bad_values_are_all_named() {
        let errors = settings(&[
            (ENV_CONCURRENCY, "0"),
            (ENV_MAX_ATTEMPTS, "many"),
            (ENV_RETRY_BASE_MS, "100"),
            (ENV_RETRY_MAX_MS, "50"),
        ])
        .expect_err("invalid");
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "SAASCHAT_EMAIL_MAX_ATTEMPTS is invalid: \"many\" is not a whole number from 1 to 100",
                "SAASCHAT_EMAIL_CONCURRENCY is invalid: \"0\" is not a whole number from 1 to 1024",
                "SAASCHAT_EMAIL_RETRY_MAX_MS is invalid: 50 is below SAASCHAT_EMAIL_RETRY_BASE_MS (100)",
            ]
        );
    }

    #[test]
    fn the_claim_interval_stays_within_bounds() {
        let quick = WorkerSettings { claim_min_idle: Duration::from_millis(100), ..WorkerSettings::default() };
        assert_eq!(quick.claim_interval(), Duration::from_millis(50));
        let slow = WorkerSettings { claim_min_idle: Duration::from_secs(3600), ..WorkerSettings::default() };
        assert_eq!(slow.claim_interval(), Duration::from_secs(10));
    }

    fn smtp_config(port: i32) -> SmtpConfig {
        SmtpConfig {
            host: "smtp.example.com".into(),
            port,
            security: SmtpSecurity::StartTls,
            from: "Acme Chat <no-reply@acme.example.com>".into(),
            credentials_dir: None,
        }
    }

    #[test]
    fn smtp_settings_take_the_document_and_trim_one_trailing_line_break() {
        let settings =
            SmtpSettings::assemble(&smtp_config(587), Some(("mailer\n".into(), Secret::new("pa55\r\n".into()))))
                .expect("valid");
        assert_eq!(settings.port, 587);
        let credentials = settings.credentials.expect("credentials");
        assert_eq!(credentials.username, "mailer");
        assert_eq!(credentials.password.expose(), "pa55");
        assert_eq!(SmtpSettings::assemble(&smtp_config(25), None).expect("valid").credentials, None);
    }

    #[test]
    fn bad_smtp_settings_are_refused_without_showing_the_password() {
        assert!(matches!(SmtpSettings::assemble(&smtp_config(70000), None), Err(SmtpSettingsError::Port(70000))));
        assert!(matches!(SmtpSettings::assemble(&smtp_config(0), None), Err(SmtpSettingsError::Port(0))));
        let error = SmtpSettings::assemble(&smtp_config(587), Some(("mailer".into(), Secret::new("\n".into()))))
            .expect_err("empty password");
        assert_eq!(error.to_string(), "the SMTP password file is empty");
        let printed = format!(
            "{:?}",
            SmtpSettings::assemble(&smtp_config(587), Some(("mailer".into(), Secret::new("hunter2".into()))))
        );
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn loading_reads_the_mounted_files_and_names_a_missing_one() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("username"), "mailer").expect("write");
        let config = SmtpConfig { credentials_dir: Some(dir.path().to_path_buf()), ..smtp_config(587) };
        let error = SmtpSettings::load(&config, None).expect_err("no password file");
        assert!(error.to_string().starts_with("cannot read the SMTP password file "), "{error}");
        std::fs::write(dir.path().join("password"), "pa55\n").expect("write");
        let loaded = SmtpSettings::load(&config, None).expect("loads");
        assert_eq!(loaded.credentials.expect("credentials").password.expose(), "pa55");
        let missing_ca = dir.path().join("ca.pem");
        let error = SmtpSettings::load(&config, Some(&missing_ca)).expect_err("no CA file");
        assert!(error.to_string().starts_with("cannot read the SMTP CA file "), "{error}");
        std::fs::write(&missing_ca, "-----BEGIN CERTIFICATE-----\n").expect("write");
        let with_ca = SmtpSettings::load(&config, Some(&missing_ca)).expect("loads");
        assert_eq!(with_ca.extra_roots_pem.as_deref(), Some(b"-----BEGIN CERTIFICATE-----\n".as_slice()));
    }
}
