//! The Stripe objects the service reads, with only the fields it uses. Field shapes follow the current API
//! (`current_period_*` on subscription items) and the older one (on the subscription itself), since an account's
//! default API version decides which one Stripe sends.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A field that is an id, or the object when expanded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IdOrObject {
    Id(String),
    Object { id: String },
}

impl IdOrObject {
    pub fn id(&self) -> &str {
        match self {
            IdOrObject::Id(id) | IdOrObject::Object { id } => id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Customer {
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub customer: Option<IdOrObject>,
    #[serde(default)]
    pub subscription: Option<IdOrObject>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PortalSession {
    pub id: String,
    pub url: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer: IdOrObject,
    pub status: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
    #[serde(default)]
    pub items: Option<List<SubscriptionItem>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SubscriptionItem {
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
    #[serde(default)]
    pub price: Option<Price>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Price {
    pub id: String,
}

impl Subscription {
    /// The billing period: the subscription's own fields (older API versions), else its first item's.
    pub fn period(&self) -> (Option<i64>, Option<i64>) {
        let first_item = self.items.as_ref().and_then(|items| items.data.first());
        (
            self.current_period_start.or(first_item.and_then(|item| item.current_period_start)),
            self.current_period_end.or(first_item.and_then(|item| item.current_period_end)),
        )
    }

    pub fn price_id(&self) -> Option<&str> {
        let first_item = self.items.as_ref().and_then(|items| items.data.first());
        first_item.and_then(|item| item.price.as_ref()).map(|price| price.id.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<IdOrObject>,
    #[serde(default)]
    pub customer_email: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub amount_due: i64,
    #[serde(default)]
    pub amount_paid: i64,
    pub currency: String,
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
    #[serde(default)]
    pub next_payment_attempt: Option<i64>,
    #[serde(default)]
    pub period_end: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MeterEvent {
    pub identifier: String,
}

/// Stripe's error body: `{"error": {"type": ..., "code": ..., "message": ...}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorDetail {
    #[serde(default, rename = "type")]
    pub error_type: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
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

    #[test]
    fn the_period_comes_from_the_subscription_or_its_first_item() {
        let current_api: Subscription = serde_json::from_value(serde_json::json!({
            "id": "sub_1", "customer": "cus_1", "status": "active",
            "items": {"data": [{"current_period_start": 100, "current_period_end": 200, "price": {"id": "price_1"}}]},
        }))
        .expect("parses");
        assert_eq!(current_api.period(), (Some(100), Some(200)));
        assert_eq!(current_api.price_id(), Some("price_1"));

        let older_api: Subscription = serde_json::from_value(serde_json::json!({
            "id": "sub_1", "customer": {"id": "cus_1", "object": "customer"}, "status": "active",
            "current_period_start": 10, "current_period_end": 20,
        }))
        .expect("parses");
        assert_eq!(older_api.period(), (Some(10), Some(20)));
        assert_eq!(older_api.customer.id(), "cus_1");
        assert_eq!(older_api.price_id(), None);
    }
}
