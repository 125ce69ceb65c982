//! Opaque secrets (refresh tokens, email tokens, API keys): 256 random bits, handed out once and stored only as
//! their SHA-256 digest.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use saaschat_platform::auth::API_KEY_PREFIX;
use sha2::{Digest, Sha256};

/// Random bytes from the operating system. The system generator does not fail on Linux once booted; if it ever
/// did, nothing secret could be made safely, so this panics rather than hand out a weak secret.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    #[allow(clippy::expect_used)]
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random generator failed");
    bytes
}

/// A new opaque token: 32 random bytes, base64url (43 characters).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// What is stored instead of a token.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether a presented token can be one of ours at all; anything else is refused before touching the database.
pub fn looks_like_token(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How many characters of an API key (after [`API_KEY_PREFIX`]) are shown in listings.
pub const API_KEY_VISIBLE_CHARS: usize = 8;

/// A new API key and its visible prefix: `sk-saaschat-` and 43 random base64url characters.
pub fn new_api_key() -> (String, String) {
    let key = format!("{API_KEY_PREFIX}{}", random_token());
    let visible = key[..API_KEY_PREFIX.len() + API_KEY_VISIBLE_CHARS].to_string();
    (key, visible)
}

/// Whether a presented API key has our shape.
pub fn looks_like_api_key(key: &str) -> bool {
    key.strip_prefix(API_KEY_PREFIX).is_some_and(looks_like_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_url_safe_and_recognised() {
        let (first, second) = (random_token(), random_token());
        assert_ne!(first, second);
        assert!(looks_like_token(&first));
        assert!(!looks_like_token(""));
        assert!(!looks_like_token(&format!("{}=", &first[..42])));
        assert!(!looks_like_token("' OR 1=1 --                                "));
        assert_eq!(digest(&first).len(), 32);
        assert_ne!(digest(&first), digest(&second));
    }

    #[test]
    fn api_keys_show_only_their_prefix() {
        let (key, visible) = new_api_key();
        assert!(looks_like_api_key(&key));
        assert!(key.starts_with(&visible));
        assert_eq!(visible.len(), "sk-saaschat-".len() + 8);
        assert!(!looks_like_api_key(&visible));
        assert!(!looks_like_api_key(&key[API_KEY_PREFIX.len()..]));
    }
}
