//! What the service sends to Stripe, as plain values that pure code decides (`api/checkout.rs`, the usage
//! reporter), and the async-stripe requests they become.

use std::collections::{BTreeMap, HashMap};

use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::CreateCustomer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCustomer {
    pub email: String,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
}

impl From<&NewCustomer> for CreateCustomer {
    fn from(customer: &NewCustomer) -> CreateCustomer {
        CreateCustomer::new()
            .email(customer.email.clone())
            .name(customer.name.clone())
            .metadata(hash_map(&customer.metadata))
    }
}

/// A Checkout Session in subscription mode for one unit of one price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCheckoutSession {
    pub customer: String,
    pub price_id: String,
    pub success_url: String,
    pub cancel_url: String,
    pub client_reference_id: String,
    pub metadata: BTreeMap<String, String>,
    /// Set on the subscription the session creates.
    pub subscription_metadata: BTreeMap<String, String>,
}

impl From<&NewCheckoutSession> for CreateCheckoutSession {
    fn from(session: &NewCheckoutSession) -> CreateCheckoutSession {
        let line_item = CreateCheckoutSessionLineItems {
            price: Some(session.price_id.clone()),
            quantity: Some(1),
            ..CreateCheckoutSessionLineItems::new()
        };
        let subscription_data = CreateCheckoutSessionSubscriptionData {
            metadata: Some(hash_map(&session.subscription_metadata)),
            ..CreateCheckoutSessionSubscriptionData::new()
        };
        CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(session.customer.clone())
            .line_items(vec![line_item])
            .success_url(session.success_url.clone())
            .cancel_url(session.cancel_url.clone())
            .client_reference_id(session.client_reference_id.clone())
            .metadata(hash_map(&session.metadata))
            .subscription_data(subscription_data)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPortalSession {
    pub customer: String,
    pub return_url: String,
}

impl From<&NewPortalSession> for CreateBillingPortalSession {
    fn from(session: &NewPortalSession) -> CreateBillingPortalSession {
        CreateBillingPortalSession::new().customer(session.customer.clone()).return_url(session.return_url.clone())
    }
}

/// One meter event: `value` units for `customer`, deduplicated by Stripe on `identifier`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMeterEvent {
    pub event_name: String,
    pub identifier: String,
    pub timestamp: i64,
    pub customer: String,
    pub value: i64,
}

impl From<&NewMeterEvent> for CreateBillingMeterEvent {
    fn from(event: &NewMeterEvent) -> CreateBillingMeterEvent {
        let payload = HashMap::from([
            ("stripe_customer_id".to_string(), event.customer.clone()),
            ("value".to_string(), event.value.to_string()),
        ]);
        CreateBillingMeterEvent::new(event.event_name.clone(), payload)
            .identifier(event.identifier.clone())
            .timestamp(event.timestamp)
    }
}

fn hash_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(key, value)| (key.clone(), value.clone())).collect()
}

#[cfg(test)]
mod tests {
    use stripe::StripeRequest;

    use super::*;

    /// The form fields a request sends, decoded as Stripe reads them.
    fn form(request: &impl StripeRequest) -> BTreeMap<String, String> {
        let body = request.build().body.unwrap_or_default();
        url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    fn tenant_tag() -> BTreeMap<String, String> {
        fields(&[("tenant", "acme")])
    }

    #[test]
    fn a_customer_is_created_with_its_address_name_and_tag() {
        let customer = NewCustomer { email: "a@b.co".into(), name: "Acme".into(), metadata: tenant_tag() };
        assert_eq!(
            form(&CreateCustomer::from(&customer)),
            fields(&[("email", "a@b.co"), ("name", "Acme"), ("metadata[tenant]", "acme")])
        );
    }

    #[test]
    fn a_checkout_session_is_sent_with_exactly_the_decided_fields() {
        let session = NewCheckoutSession {
            customer: "cus_1".into(),
            price_id: "price_pro".into(),
            success_url: "https://chat.acme.example/billing?checkout=success".into(),
            cancel_url: "https://chat.acme.example/billing?checkout=cancel".into(),
            client_reference_id: "acme".into(),
            metadata: tenant_tag(),
            subscription_metadata: tenant_tag(),
        };
        assert_eq!(
            form(&CreateCheckoutSession::from(&session)),
            fields(&[
                ("mode", "subscription"),
                ("customer", "cus_1"),
                ("line_items[0][price]", "price_pro"),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://chat.acme.example/billing?checkout=success"),
                ("cancel_url", "https://chat.acme.example/billing?checkout=cancel"),
                ("client_reference_id", "acme"),
                ("metadata[tenant]", "acme"),
                ("subscription_data[metadata][tenant]", "acme"),
            ])
        );
    }

    #[test]
    fn portal_sessions_and_meter_events_carry_their_fields() {
        let portal =
            NewPortalSession { customer: "cus_1".into(), return_url: "https://chat.acme.example/billing".into() };
        assert_eq!(
            form(&CreateBillingPortalSession::from(&portal)),
            fields(&[("customer", "cus_1"), ("return_url", "https://chat.acme.example/billing")])
        );
        let event = NewMeterEvent {
            event_name: "saaschat_tokens".into(),
            identifier: "acme-2026-11-26T05:00:00Z".into(),
            timestamp: 1_764_136_799,
            customer: "cus_1".into(),
            value: 123,
        };
        assert_eq!(
            form(&CreateBillingMeterEvent::from(&event)),
            fields(&[
                ("event_name", "saaschat_tokens"),
                ("identifier", "acme-2026-11-26T05:00:00Z"),
                ("timestamp", "1764136799"),
                ("payload[stripe_customer_id]", "cus_1"),
                ("payload[value]", "123"),
            ])
        );
    }
}
