//! Secret values (database passwords, tokens) that must never reach a log line, an error or `Debug` output.

use std::fmt;

use serde::Deserialize;

/// A value that is only readable through [`Secret::expose`]. `Debug` prints a placeholder; there is no `Display`
/// and no `Serialize`, so a secret cannot be formatted or serialized by accident.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret value. Call this only where the value is used, never to log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret([REDACTED])")
    }
}

/// A connection URL fit for a log line: the password (and nothing else) replaced by `***`.
/// Unparseable input is not echoed at all, since it may hold a password in a shape the parser did not expect.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have credentials, which this one has.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_value() {
        let secret = Secret::new("postgres://saaschat:hunter2@postgres:5432/saaschat".to_string());
        let printed = format!("{secret:?} {:?}", Some(&secret));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(format!("{secret:?}"), "Secret([REDACTED])");
        assert_eq!(secret.expose(), "postgres://saaschat:hunter2@postgres:5432/saaschat");
    }

    #[test]
    fn debug_of_a_containing_struct_is_redacted_too() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Settings {
            url: Secret<String>,
        }
        let printed = format!("{:?}", Settings { url: Secret::new("redis://:pa55@redis:6379/0".into()) });
        assert!(!printed.contains("pa55"), "{printed}");
    }

    #[test]
    fn redacted_urls_keep_everything_but_the_password() {
        assert_eq!(
            redacted_url("postgres://saaschat:hunter2@postgres.tenant-acme.svc:5432/saaschat"),
            "postgres://saaschat:***@postgres.tenant-acme.svc:5432/saaschat"
        );
        assert_eq!(redacted_url("redis://:pa55@redis:6379/0"), "redis://:***@redis:6379/0");
        assert_eq!(redacted_url("redis://redis:6379/0"), "redis://redis:6379/0");
        assert_eq!(redacted_url("postgres://saaschat:hunter2@host:notaport/db"), "<unparseable URL>");
    }
}
