//! A small Stripe REST client over reqwest: form-encoded requests, the typed responses of [`objects`], an
//! `Idempotency-Key` on every POST, and errors that tell a retry from a refusal. Why not async-stripe: see
//! `docs/billing.md` (its generated types fail to read what Stripe's own mock returns).

pub mod objects;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use saaschat_platform::Secret;
use serde::de::DeserializeOwned;

use objects::ErrorBody;

/// Why a Stripe call failed. No variant carries the API key.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe cannot be reached: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("Stripe answered {status}: {kind} {code}: {message}")]
    Api { status: u16, kind: String, code: String, message: String },
    #[error("Stripe's answer to {path} cannot be read: {reason}")]
    Decode { path: String, reason: String },
    #[error("{0:?} is not a Stripe object id")]
    BadId(String),
}

impl StripeError {
    /// Whether the same request may succeed later: network trouble, rate limits, Stripe's own errors and
    /// idempotency conflicts (a concurrent request with the same key is still in flight).
    pub fn is_transient(&self) -> bool {
        match self {
            StripeError::Transport(_) | StripeError::Decode { .. } => true,
            StripeError::Api { status, .. } => *status == 429 || *status == 409 || *status >= 500,
            StripeError::BadId(_) => false,
        }
    }

    /// Whether Stripe says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StripeError::Api { status: 404, .. })
    }
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: url::Url,
    authorization: Secret<HeaderValue>,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("StripeClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the Stripe secret key cannot be sent in a header")]
    BadKey,
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

impl StripeClient {
    pub fn new(base: url::Url, secret_key: &Secret<String>, timeout: Duration) -> Result<StripeClient, ClientError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut authorization =
            HeaderValue::try_from(format!("Bearer {}", secret_key.expose())).map_err(|_| ClientError::BadKey)?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            // Stripe never redirects API calls; following one could send the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClientError::Http)?;
        Ok(StripeClient { http, base, authorization: Secret::new(authorization) })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    /// `GET /v1/<kind>/<id>` of an object whose id came from outside (a webhook payload).
    pub async fn retrieve<T: DeserializeOwned>(&self, collection: &str, id: &str) -> Result<T, StripeError> {
        if !objects::is_object_id(id) {
            return Err(StripeError::BadId(id.to_string()));
        }
        let path = format!("/v1/{collection}/{id}");
        let request = self.http.get(self.url(&path)).header(AUTHORIZATION, self.authorization.expose().clone());
        self.send(request, &path).await
    }

    /// `POST` of a form. The idempotency key makes a retried request replay Stripe's saved result.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<T, StripeError> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let request = self
            .http
            .post(self.url(path))
            .header(AUTHORIZATION, self.authorization.expose().clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("Idempotency-Key", idempotency_key)
            .body(body);
        self.send(request, path).await
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder, path: &str) -> Result<T, StripeError> {
        // Transport errors are stripped of the URL: it holds nothing secret, but it is noise in every log line.
        let response = request.send().await.map_err(|error| StripeError::Transport(error.without_url()))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| StripeError::Transport(error.without_url()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|error| StripeError::Decode { path: path.to_string(), reason: error.to_string() });
        }
        Err(api_error(status, &bytes))
    }
}

/// The error for a non-2xx answer, from Stripe's error body when it has one.
fn api_error(status: StatusCode, body: &[u8]) -> StripeError {
    let detail = serde_json::from_slice::<ErrorBody>(body).map(|body| body.error).unwrap_or_default();
    StripeError::Api {
        status: status.as_u16(),
        kind: detail.error_type.unwrap_or_else(|| "unknown_error".into()),
        code: detail.code.unwrap_or_default(),
        message: detail.message.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_from_stripes_body() {
        let body = br#"{"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription: 'sub_1'"}}"#;
        let error = api_error(StatusCode::NOT_FOUND, body);
        assert!(error.is_not_found());
        assert!(!error.is_transient());
        assert_eq!(
            error.to_string(),
            "Stripe answered 404: invalid_request_error resource_missing: No such subscription: 'sub_1'"
        );
        let error = api_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(error.is_transient());
        assert_eq!(error.to_string(), "Stripe answered 502: unknown_error : ");
    }

    #[test]
    fn which_failures_are_worth_a_retry() {
        let api =
            |status| StripeError::Api { status, kind: String::new(), code: String::new(), message: String::new() };
        assert!(api(429).is_transient());
        assert!(api(409).is_transient());
        assert!(api(500).is_transient());
        assert!(!api(400).is_transient());
        assert!(!api(401).is_transient());
        assert!(!StripeError::BadId("x".into()).is_transient());
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = Secret::new("sk_live_verysecret".to_string());
        let client = StripeClient::new("https://api.stripe.com".parse().expect("url"), &key, Duration::from_secs(5))
            .expect("client");
        assert!(!format!("{client:?}").contains("verysecret"));
    }
}
