//! The Stripe objects the service reads, with only the fields it uses, converted from async-stripe's generated
//! types at this boundary so that the deciding code stays pure and independent of them. Expandable fields are
//! reduced to their ids; the billing period is the first subscription item's (where the pinned API version puts it).

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
}

impl From<stripe_core::Customer> for Customer {
    fn from(customer: stripe_core::Customer) -> Customer {
        Customer { id: customer.id.to_string() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
    pub status: Option<String>,
    pub customer: Option<String>,
    pub subscription: Option<String>,
    pub client_reference_id: Option<String>,
}

impl From<stripe_checkout::CheckoutSession> for CheckoutSession {
    fn from(session: stripe_checkout::CheckoutSession) -> CheckoutSession {
        CheckoutSession {
            id: session.id.to_string(),
            url: session.url,
            status: session.status.map(|status| status.as_str().to_string()),
            customer: session.customer.map(|customer| customer.id().to_string()),
            subscription: session.subscription.map(|subscription| subscription.id().to_string()),
            client_reference_id: session.client_reference_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalSession {
    pub id: String,
    pub url: String,
}

impl From<stripe_billing::BillingPortalSession> for PortalSession {
    fn from(session: stripe_billing::BillingPortalSession) -> PortalSession {
        PortalSession { id: session.id.to_string(), url: session.url }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub status: String,
    pub metadata: BTreeMap<String, String>,
    pub cancel_at_period_end: bool,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    /// The first item's price: a subscription of this service has one item, the plan.
    pub price_id: Option<String>,
}

impl From<stripe_billing::Subscription> for Subscription {
    fn from(subscription: stripe_billing::Subscription) -> Subscription {
        let first_item = subscription.items.data.first();
        Subscription {
            id: subscription.id.to_string(),
            customer: subscription.customer.id().to_string(),
            status: subscription.status.as_str().to_string(),
            metadata: subscription.metadata.into_iter().collect(),
            cancel_at_period_end: subscription.cancel_at_period_end,
            current_period_start: first_item.map(|item| item.current_period_start),
            current_period_end: first_item.map(|item| item.current_period_end),
            price_id: first_item.map(|item| item.price.id.to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoice {
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub status: Option<String>,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: String,
    pub hosted_invoice_url: Option<String>,
    pub next_payment_attempt: Option<i64>,
    pub period_end: i64,
}

impl From<stripe_billing::Invoice> for Invoice {
    fn from(invoice: stripe_billing::Invoice) -> Invoice {
        Invoice {
            customer: invoice.customer.map(|customer| customer.id().to_string()),
            customer_email: invoice.customer_email,
            status: invoice.status.map(|status| status.as_str().to_string()),
            amount_due: invoice.amount_due,
            amount_paid: invoice.amount_paid,
            // `Display` is right for the known codes only; an unknown one is kept as Stripe sent it.
            currency: match invoice.currency {
                stripe_types::Currency::Unknown(code) => code,
                known => known.to_string(),
            },
            hosted_invoice_url: invoice.hosted_invoice_url,
            next_payment_attempt: invoice.next_payment_attempt,
            period_end: invoice.period_end,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterEvent {
    pub identifier: String,
}

impl From<stripe_billing::BillingMeterEvent> for MeterEvent {
    fn from(event: stripe_billing::BillingMeterEvent) -> MeterEvent {
        MeterEvent { identifier: event.identifier }
    }
}

/// Whether a string can be a Stripe object id (`sub_1Pgc6x...`). Ids taken from webhook payloads go into request
/// paths, so anything else (`../`, `?`, `/`) is refused before it reaches a URL.
pub fn is_object_id(id: &str) -> bool {
    (3..=255).contains(&id.len())
        && id.contains('_')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !id.starts_with('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_are_checked_before_they_reach_a_path() {
        for good in ["sub_1Pgc6xB7WZ01zgkWJMvZp5ja", "in_abc", "cs_test_a1YS1URlny", "cus_QXg1o8vcGmoR32"] {
            assert!(is_object_id(good), "{good}");
        }
        for bad in ["", "sub", "sub_../../v1/charges", "sub_1?expand=x", "sub_1/cancel", "_x", "nounderscore"] {
            assert!(!is_object_id(bad), "{bad}");
        }
    }
}
