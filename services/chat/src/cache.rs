//! The opt-in exact-match response cache: a non-streaming request at temperature 0 whose caller sends
//! `X-Saaschat-Cache: on` is answered from Redis when the same user sent the same request (model, messages,
//! every parameter) within the TTL. Keyed per user, so no answer crosses from one user to another.

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::providers::{Completion, CompletionRequest};

pub const OPT_IN_HEADER: &str = "x-saaschat-cache";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    pub completion: Completion,
    pub provider: String,
    pub model: String,
}

/// Whether a request may be cached at all.
pub fn is_cacheable(request: &CompletionRequest, stream: bool, opted_in: bool) -> bool {
    opted_in && !stream && request.temperature == Some(0.0)
}

pub fn key(tenant: &str, user_id: &str, request: &CompletionRequest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(user_id.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(request).unwrap_or_default());
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("chat:{tenant}:cache:{hex}")
}

#[derive(Clone)]
pub struct ResponseCache {
    redis: ConnectionManager,
    ttl: Duration,
}

impl ResponseCache {
    pub fn new(redis: ConnectionManager, ttl: Duration) -> ResponseCache {
        ResponseCache { redis, ttl }
    }

    /// A miss when Redis fails: the cache is an optimisation, never a reason to refuse.
    pub async fn get(&self, key: &str) -> Option<CachedAnswer> {
        let mut redis = self.redis.clone();
        let value: Option<String> = ::redis::cmd("GET").arg(key).query_async(&mut redis).await.ok()?;
        serde_json::from_str(&value?).ok()
    }

    pub async fn put(&self, key: &str, answer: &CachedAnswer) {
        let Ok(value) = serde_json::to_string(answer) else { return };
        let mut redis = self.redis.clone();
        let result: Result<(), _> = ::redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut redis)
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "cannot store a cached answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{ChatMessage, Role};

    fn request(temperature: Option<f64>, text: &str) -> CompletionRequest {
        CompletionRequest {
            model: "gpt-4o-mini".into(),
            system: None,
            messages: vec![ChatMessage::text(Role::User, text)],
            temperature,
            top_p: None,
            max_tokens: None,
            stop: vec![],
            tools: vec![],
        }
    }

    #[test]
    fn only_opted_in_deterministic_whole_answers_are_cached() {
        assert!(is_cacheable(&request(Some(0.0), "hi"), false, true));
        assert!(!is_cacheable(&request(Some(0.0), "hi"), false, false));
        assert!(!is_cacheable(&request(Some(0.0), "hi"), true, true));
        assert!(!is_cacheable(&request(None, "hi"), false, true));
        assert!(!is_cacheable(&request(Some(0.7), "hi"), false, true));
    }

    #[test]
    fn keys_match_exactly_and_differ_by_user_and_content() {
        let a = key("acme", "alice", &request(Some(0.0), "hi"));
        assert_eq!(a, key("acme", "alice", &request(Some(0.0), "hi")));
        assert_ne!(a, key("acme", "bob", &request(Some(0.0), "hi")));
        assert_ne!(a, key("acme", "alice", &request(Some(0.0), "hi ")));
        assert!(a.starts_with("chat:acme:cache:") && a.len() == "chat:acme:cache:".len() + 64);
    }
}
