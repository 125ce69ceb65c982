//! Passwords (OWASP): a length policy with no composition rules and a list of the most common passwords, and
//! argon2id hashing on the blocking pool, a bounded number at a time, so neither the async runtime nor the memory
//! (19 MiB a hash) is exhausted by a burst of sign-ins.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

pub const MIN_LENGTH: usize = 8;
/// Long passphrases are welcome; the cap only bounds the hashing work an attacker can ask for.
pub const MAX_LENGTH: usize = 128;

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .collect()
});

/// Why a new password is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    #[error("the password must have at least {MIN_LENGTH} characters")]
    TooShort,
    #[error("the password must have at most {MAX_LENGTH} characters")]
    TooLong,
    #[error("the password is one of the most common passwords; choose another")]
    Common,
    #[error("the password must not contain control characters")]
    ControlCharacters,
}

/// Checks a new password. Length counts characters (Unicode scalar values), not bytes.
pub fn check_policy(password: &str) -> Result<(), PasswordRejected> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(PasswordRejected::TooShort);
    }
    if length > MAX_LENGTH {
        return Err(PasswordRejected::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordRejected::ControlCharacters);
    }
    if COMMON_PASSWORDS.contains(password.to_lowercase().as_str()) {
        return Err(PasswordRejected::Common);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the password hasher is shut down")]
    Closed,
}

/// argon2id parameters; the default is OWASP's minimum (m = 19 MiB, t = 2, p = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

/// Hashes and verifies passwords off the async runtime.
#[derive(Clone)]
pub struct PasswordHasherPool {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the account does not exist so that an unknown email
    /// takes as long as a wrong password.
    decoy: Arc<String>,
}

impl PasswordHasherPool {
    /// `concurrency` bounds the hashes in flight (each holds `memory_kib`).
    pub fn new(params: HashParams, concurrency: usize) -> Result<PasswordHasherPool, HashError> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|error| HashError::Hash(error.to_string()))?;
        let decoy = hash_now(&params, &crate::tokens::random_token(), &random_salt()?)?;
        Ok(PasswordHasherPool { params, permits: Arc::new(Semaphore::new(concurrency.max(1))), decoy: Arc::new(decoy) })
    }

    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Closed)?;
        let (params, password, salt) = (self.params.clone(), password.to_string(), random_salt()?);
        tokio::task::spawn_blocking(move || hash_now(&params, &password, &salt)).await?
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown account, or an invitation not yet
    /// accepted) it verifies against the decoy and answers false.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Closed)?;
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.decoy.as_str().to_string(), str::to_string);
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&stored).map_err(|error| HashError::Hash(error.to_string()))?;
            // The parameters come from the stored hash, so hashes made with older parameters still verify.
            Ok::<bool, HashError>(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await??;
        Ok(known && matches)
    }
}

fn random_salt() -> Result<SaltString, HashError> {
    let bytes: [u8; 16] = crate::tokens::random_bytes();
    SaltString::encode_b64(&bytes).map_err(|error| HashError::Hash(error.to_string()))
}

fn hash_now(params: &Params, password: &str, salt: &SaltString) -> Result<String, HashError> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), salt)
        .map(|hash| hash.to_string())
        .map_err(|error| HashError::Hash(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_counts_characters_and_allows_long_passphrases() {
        assert_eq!(check_policy("short12"), Err(PasswordRejected::TooShort));
        assert_eq!(check_policy("ñandú-ñu"), Ok(()), "8 characters, more bytes");
        assert_eq!(check_policy("🦀🦀🦀🦀🦀🦀🦀"), Err(PasswordRejected::TooShort), "7 characters, 28 bytes");
        let passphrase = "correct horse battery staple ".repeat(4);
        assert!(passphrase.chars().count() >= 64);
        assert_eq!(check_policy(&passphrase), Ok(()));
        assert_eq!(check_policy(&"x".repeat(MAX_LENGTH)), Ok(()));
        assert_eq!(check_policy(&"x".repeat(MAX_LENGTH + 1)), Err(PasswordRejected::TooLong));
    }

    #[test]
    fn no_composition_rules_but_common_passwords_are_refused() {
        assert_eq!(check_policy("alllowercaseletters"), Ok(()));
        assert_eq!(check_policy("password"), Err(PasswordRejected::Common));
        assert_eq!(check_policy("PassWord1"), Err(PasswordRejected::Common), "compared case-insensitively");
        assert_eq!(check_policy("12345678"), Err(PasswordRejected::Common));
        assert_eq!(check_policy("qwertyuiop"), Err(PasswordRejected::Common));
        assert!(COMMON_PASSWORDS.len() > 10_000);
    }

    #[test]
    fn control_characters_are_refused() {
        assert_eq!(check_policy("line\nbreak-pass"), Err(PasswordRejected::ControlCharacters));
        assert_eq!(check_policy("nul\0character"), Err(PasswordRejected::ControlCharacters));
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_the_owasp_parameters_and_salted() {
        let pool = PasswordHasherPool::new(HashParams::default(), 2).expect("pool");
        let first = pool.hash("a fine passphrase").await.expect("hash");
        let second = pool.hash("a fine passphrase").await.expect("hash");
        assert!(first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{first}");
        assert_ne!(first, second, "a random salt per hash");
        assert!(pool.verify("a fine passphrase", Some(&first)).await.expect("verify"));
        assert!(!pool.verify("a fine passphrase!", Some(&first)).await.expect("verify"));
        assert!(!pool.verify("a fine passphrase", None).await.expect("decoy"), "no account never matches");
    }
}
