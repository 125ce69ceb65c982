//! The one place that talks to Stripe, through async-stripe (pinned to the API version of stripe-mock; see
//! `docs/billing.md`): typed requests built from [`requests`], answers converted into the service's own
//! [`objects`], an `Idempotency-Key` on every POST, and errors that tell a retry from a refusal.

pub mod objects;
pub mod requests;

use std::time::Duration;

use saaschat_platform::Secret;
use stripe::{ApiErrors, ClientBuilder, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::RetrieveInvoice;
use stripe_billing::subscription::RetrieveSubscription;
use stripe_checkout::checkout_session::{CreateCheckoutSession, RetrieveCheckoutSession};
use stripe_core::customer::CreateCustomer;

use objects::{CheckoutSession, Customer, Invoice, MeterEvent, PortalSession, Subscription};
use requests::{NewCheckoutSession, NewCustomer, NewMeterEvent, NewPortalSession};

/// Why a Stripe call failed. No variant carries the API key.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe cannot be reached: {0}")]
    Transport(String),
    #[error("Stripe answered {status}: {kind} {code}: {message}")]
    Api { status: u16, kind: String, code: String, message: String },
    /// A success that does not read as the expected object, or an error answer that is not Stripe's error body.
    #[error("Stripe's answer to {request} cannot be read: {reason}")]
    Decode { request: String, reason: String },
    #[error("{0:?} is not a Stripe object id")]
    BadId(String),
    #[error("the request to {request} cannot be sent: {reason}")]
    Request { request: String, reason: String },
}

impl StripeError {
    /// Whether the same request may succeed later: network trouble, rate limits, Stripe's own errors and
    /// idempotency conflicts (a concurrent request with the same key is still in flight).
    pub fn is_transient(&self) -> bool {
        match self {
            StripeError::Transport(_) | StripeError::Decode { .. } => true,
            StripeError::Api { status, .. } => *status == 429 || *status == 409 || *status >= 500,
            StripeError::BadId(_) | StripeError::Request { .. } => false,
        }
    }

    /// Whether Stripe says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StripeError::Api { status: 404, .. })
    }

    /// Classifies async-stripe's error for the request named `request` (`POST /v1/customers`).
    fn from_client(error: stripe::StripeError, request: &str) -> StripeError {
        match error {
            stripe::StripeError::Stripe(errors, status) => api_error(status, &errors),
            stripe::StripeError::JSONDeserialize(reason) => {
                StripeError::Decode { request: request.to_string(), reason }
            }
            stripe::StripeError::ClientError(reason) => StripeError::Transport(reason),
            stripe::StripeError::Timeout => StripeError::Transport("no answer within the timeout".into()),
            stripe::StripeError::ConfigError(reason) => StripeError::Request { request: request.to_string(), reason },
        }
    }
}

/// The error for a non-2xx answer that carries Stripe's error body.
fn api_error(status: u16, errors: &ApiErrors) -> StripeError {
    StripeError::Api {
        status,
        kind: errors.type_.as_str().to_string(),
        code: errors.code.as_ref().map(|code| code.as_str().to_string()).unwrap_or_default(),
        message: errors.message.clone().unwrap_or_default(),
    }
}

#[derive(Clone)]
pub struct StripeClient {
    client: stripe::Client,
    base: url::Url,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("StripeClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// async-stripe's reason names the setting (`secret`, the URL), never its value.
    #[error("cannot build the Stripe client: {0}")]
    Build(String),
}

impl StripeClient {
    /// A client for the API at `base` (Stripe, or stripe-mock in tests); `timeout` bounds each request.
    pub fn new(base: url::Url, secret_key: &Secret<String>, timeout: Duration) -> Result<StripeClient, ClientError> {
        // hyper-rustls builds its TLS configuration with the process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // async-stripe appends `v1/...` to the base as text, so the base must end with a slash.
        let mut api_base = base.as_str().to_string();
        if !api_base.ends_with('/') {
            api_base.push('/');
        }
        // The hyper client follows no redirects, so the key is sent to this base only. Requests are tried once:
        // the callers retry with their own backoff (the event queue, the usage reporter's next tick).
        let client = ClientBuilder::new(secret_key.expose().as_str())
            .url(api_base)
            .timeout(timeout)
            .request_strategy(RequestStrategy::Once)
            .build()
            .map_err(|error| ClientError::Build(error.to_string()))?;
        Ok(StripeClient { client, base })
    }

    pub async fn create_customer(
        &self,
        customer: &NewCustomer,
        idempotency_key: &str,
    ) -> Result<Customer, StripeError> {
        let name = "POST /v1/customers";
        let request = CreateCustomer::from(customer).customize().request_strategy(idempotent(idempotency_key, name)?);
        request.send(&self.client).await.map(Customer::from).map_err(|error| StripeError::from_client(error, name))
    }

    pub async fn create_checkout_session(
        &self,
        session: &NewCheckoutSession,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, StripeError> {
        let name = "POST /v1/checkout/sessions";
        let request =
            CreateCheckoutSession::from(session).customize().request_strategy(idempotent(idempotency_key, name)?);
        request
            .send(&self.client)
            .await
            .map(CheckoutSession::from)
            .map_err(|error| StripeError::from_client(error, name))
    }

    pub async fn create_portal_session(
        &self,
        session: &NewPortalSession,
        idempotency_key: &str,
    ) -> Result<PortalSession, StripeError> {
        let name = "POST /v1/billing_portal/sessions";
        let request =
            CreateBillingPortalSession::from(session).customize().request_strategy(idempotent(idempotency_key, name)?);
        request.send(&self.client).await.map(PortalSession::from).map_err(|error| StripeError::from_client(error, name))
    }

    pub async fn create_meter_event(
        &self,
        event: &NewMeterEvent,
        idempotency_key: &str,
    ) -> Result<MeterEvent, StripeError> {
        let name = "POST /v1/billing/meter_events";
        let request =
            CreateBillingMeterEvent::from(event).customize().request_strategy(idempotent(idempotency_key, name)?);
        request.send(&self.client).await.map(MeterEvent::from).map_err(|error| StripeError::from_client(error, name))
    }

    pub async fn retrieve_checkout_session(&self, id: &str) -> Result<CheckoutSession, StripeError> {
        let name = format!("GET /v1/checkout/sessions/{}", checked_id(id)?);
        let request = RetrieveCheckoutSession::new(id);
        request
            .send(&self.client)
            .await
            .map(CheckoutSession::from)
            .map_err(|error| StripeError::from_client(error, &name))
    }

    pub async fn retrieve_subscription(&self, id: &str) -> Result<Subscription, StripeError> {
        let name = format!("GET /v1/subscriptions/{}", checked_id(id)?);
        let request = RetrieveSubscription::new(id);
        let subscription = request.send(&self.client).await.map_err(|error| StripeError::from_client(error, &name))?;
        // A subscription always has an item (the plan), but async-stripe drops a list element that lacks a field
        // its types require instead of failing. Acting on the rest would write an unknown period as none, so the
        // answer counts as unreadable: the event is retried, and fails visibly if it stays so.
        if subscription.items.data.is_empty() {
            return Err(StripeError::Decode { request: name, reason: "no subscription item could be read".into() });
        }
        Ok(Subscription::from(subscription))
    }

    pub async fn retrieve_invoice(&self, id: &str) -> Result<Invoice, StripeError> {
        let name = format!("GET /v1/invoices/{}", checked_id(id)?);
        let request = RetrieveInvoice::new(id);
        request.send(&self.client).await.map(Invoice::from).map_err(|error| StripeError::from_client(error, &name))
    }
}

/// Every POST is sent once with an idempotency key, so that a retry by the caller replays Stripe's saved result.
fn idempotent(key: &str, request: &str) -> Result<RequestStrategy, StripeError> {
    IdempotencyKey::new(key)
        .map(RequestStrategy::Idempotent)
        .map_err(|error| StripeError::Request { request: request.to_string(), reason: error.to_string() })
}

/// An id from outside (a webhook payload), checked before async-stripe puts it into a request path unescaped.
fn checked_id(id: &str) -> Result<&str, StripeError> {
    if objects::is_object_id(id) { Ok(id) } else { Err(StripeError::BadId(id.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stripe's error body with only the fields the service reads.
    fn errors(kind: &str, code: Option<&str>, message: Option<&str>) -> ApiErrors {
        ApiErrors {
            advice_code: None,
            charge: None,
            code: code.map(|code| code.parse().expect("infallible")),
            decline_code: None,
            doc_url: None,
            message: message.map(str::to_string),
            network_advice_code: None,
            network_decline_code: None,
            param: None,
            payment_intent: None,
            payment_method: None,
            payment_method_type: None,
            request_log_url: None,
            setup_intent: None,
            source: None,
            type_: kind.parse().expect("infallible"),
        }
    }

    #[test]
    fn errors_are_read_from_stripes_body() {
        let body = errors("invalid_request_error", Some("resource_missing"), Some("No such subscription: 'sub_1'"));
        let error = StripeError::from_client(stripe::StripeError::Stripe(Box::new(body), 404), "GET /v1/subscriptions");
        assert!(error.is_not_found());
        assert!(!error.is_transient());
        assert_eq!(
            error.to_string(),
            "Stripe answered 404: invalid_request_error resource_missing: No such subscription: 'sub_1'"
        );
        let error = StripeError::from_client(
            stripe::StripeError::Stripe(Box::new(errors("api_error", None, None)), 500),
            "POST /v1/customers",
        );
        assert!(error.is_transient());
        assert_eq!(error.to_string(), "Stripe answered 500: api_error : ");
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
        let classify = |error| StripeError::from_client(error, "GET /v1/invoices/{id}");
        // A 502 page from a proxy is not Stripe's error body: async-stripe reports it as unreadable.
        let unreadable = classify(stripe::StripeError::JSONDeserialize("error deserializing Stripe error".into()));
        assert!(unreadable.is_transient());
        assert_eq!(
            unreadable.to_string(),
            "Stripe's answer to GET /v1/invoices/{id} cannot be read: error deserializing Stripe error"
        );
        assert!(classify(stripe::StripeError::ClientError("connection refused".into())).is_transient());
        assert!(classify(stripe::StripeError::Timeout).is_transient());
        assert!(!classify(stripe::StripeError::ConfigError("bad account id".into())).is_transient());
    }

    #[tokio::test]
    async fn ids_from_outside_never_reach_a_path_and_keys_are_checked() {
        let client = StripeClient::new(
            "http://127.0.0.1:9".parse().expect("url"),
            &Secret::new("sk_test_1".into()),
            Duration::from_secs(1),
        )
        .expect("client");
        let error = client.retrieve_subscription("sub_1/../../v1/charges").await.expect_err("refused");
        assert!(matches!(error, StripeError::BadId(_)), "{error}");
        let portal = NewPortalSession { customer: "cus_1".into(), return_url: "https://a.example".into() };
        let error = client.create_portal_session(&portal, "").await.expect_err("refused");
        assert!(matches!(error, StripeError::Request { .. }), "{error}");
        assert!(!error.is_transient());
    }

    #[test]
    fn requests_are_sent_in_the_api_version_of_stripe_mock() {
        // Sent as `Stripe-Version`, and the version the types are generated for: stripe-mock v0.203.0 answers in
        // it (rc.10's 2026-09-30.endive types cannot read its answers), so the two move together.
        assert_eq!(stripe_shared::version::VERSION.as_str(), "2026-08-26.dahlia");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = Secret::new("sk_live_verysecret".to_string());
        let client = StripeClient::new("https://api.stripe.com".parse().expect("url"), &key, Duration::from_secs(5))
            .expect("client");
        assert!(!format!("{client:?}").contains("verysecret"));
    }
}
