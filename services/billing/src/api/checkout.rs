//! Deciding a checkout: which price a plan is, whether a customer must be created (and with which address), and
//! the exact forms sent to Stripe. Redirect URLs are always the tenant's own: nothing in a request can send a
//! paying user elsewhere.

use std::collections::BTreeMap;

use crate::account::Account;
use crate::events::decide::TENANT_METADATA_KEY;

pub struct CheckoutInput<'a> {
    pub plan: &'a str,
    pub email: Option<&'a str>,
    pub account: &'a Account,
}

#[derive(Debug, PartialEq, Eq)]
pub struct CheckoutPlan {
    pub price_id: String,
    /// Set when the tenant has no Stripe customer yet.
    pub new_customer_email: Option<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutRefusal {
    #[error("plan {plan:?} has no Stripe price; plans that can be bought: {}", known.join(", "))]
    UnknownPlan { plan: String, known: Vec<String> },
    #[error("the first checkout needs the billing email address in the body's email field")]
    EmailRequired,
    #[error("the email field is not an email address")]
    InvalidEmail,
    #[error(
        "the subscription {subscription} is {state}; change plans in the customer portal (POST /v1/billing/portal)"
    )]
    AlreadySubscribed { subscription: String, state: String },
}

/// States in which the tenant still has a subscription that a new checkout would duplicate.
fn is_live(state: &str) -> bool {
    matches!(state, "active" | "trialing" | "past_due" | "unpaid" | "paused")
}

pub fn decide(input: &CheckoutInput<'_>, prices: &BTreeMap<String, String>) -> Result<CheckoutPlan, CheckoutRefusal> {
    let Some(price_id) = prices.get(input.plan) else {
        return Err(CheckoutRefusal::UnknownPlan {
            plan: input.plan.to_string(),
            known: prices.keys().cloned().collect(),
        });
    };
    if let (Some(subscription), Some(state)) = (&input.account.subscription_id, &input.account.state)
        && is_live(state)
    {
        return Err(CheckoutRefusal::AlreadySubscribed { subscription: subscription.clone(), state: state.clone() });
    }
    let new_customer_email = match (&input.account.customer_id, input.email) {
        (Some(_), _) => None,
        (None, None) => return Err(CheckoutRefusal::EmailRequired),
        (None, Some(email)) if is_email(email) => Some(email.trim().to_string()),
        (None, Some(_)) => return Err(CheckoutRefusal::InvalidEmail),
    };
    Ok(CheckoutPlan { price_id: price_id.clone(), new_customer_email })
}

/// A plausible address: one `@` with text on both sides, a dot in the domain, no spaces or controls, at most 254.
pub fn is_email(text: &str) -> bool {
    let text = text.trim();
    let Some((local, domain)) = text.split_once('@') else { return false };
    text.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && text.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

fn pair(key: &str, value: &str) -> (String, String) {
    (key.to_string(), value.to_string())
}

pub fn customer_form(tenant: &str, display_name: &str, email: &str) -> Vec<(String, String)> {
    vec![pair("email", email), pair("name", display_name), pair(&format!("metadata[{TENANT_METADATA_KEY}]"), tenant)]
}

fn page(tenant_url: &str, query: &str) -> String {
    format!("{}/billing{query}", tenant_url.trim_end_matches('/'))
}

pub fn session_form(tenant: &str, tenant_url: &str, customer_id: &str, price_id: &str) -> Vec<(String, String)> {
    vec![
        pair("mode", "subscription"),
        pair("customer", customer_id),
        pair("line_items[0][price]", price_id),
        pair("line_items[0][quantity]", "1"),
        pair("success_url", &page(tenant_url, "?checkout=success")),
        pair("cancel_url", &page(tenant_url, "?checkout=cancel")),
        pair("client_reference_id", tenant),
        pair(&format!("metadata[{TENANT_METADATA_KEY}]"), tenant),
        pair(&format!("subscription_data[metadata][{TENANT_METADATA_KEY}]"), tenant),
    ]
}

pub fn portal_form(tenant_url: &str, customer_id: &str) -> Vec<(String, String)> {
    vec![pair("customer", customer_id), pair("return_url", &page(tenant_url, ""))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> BTreeMap<String, String> {
        BTreeMap::from([("pro".into(), "price_pro".into()), ("enterprise".into(), "price_ent".into())])
    }

    fn decide_for(plan: &str, email: Option<&str>, account: &Account) -> Result<CheckoutPlan, CheckoutRefusal> {
        decide(&CheckoutInput { plan, email, account }, &prices())
    }

    #[test]
    fn the_first_checkout_creates_a_customer_with_the_given_address() {
        let plan = decide_for("pro", Some(" ada@acme.example "), &Account::empty("acme")).expect("allowed");
        assert_eq!(
            plan,
            CheckoutPlan { price_id: "price_pro".into(), new_customer_email: Some("ada@acme.example".into()) }
        );
    }

    #[test]
    fn a_known_customer_needs_no_address() {
        let account = Account { customer_id: Some("cus_1".into()), ..Account::empty("acme") };
        let plan = decide_for("enterprise", None, &account).expect("allowed");
        assert_eq!(plan, CheckoutPlan { price_id: "price_ent".into(), new_customer_email: None });
    }

    #[test]
    fn refusals_are_named() {
        assert_eq!(
            decide_for("gold", Some("a@b.c"), &Account::empty("acme")),
            Err(CheckoutRefusal::UnknownPlan { plan: "gold".into(), known: vec!["enterprise".into(), "pro".into()] })
        );
        assert_eq!(decide_for("pro", None, &Account::empty("acme")), Err(CheckoutRefusal::EmailRequired));
        assert_eq!(
            decide_for("pro", Some("not-an-address"), &Account::empty("acme")),
            Err(CheckoutRefusal::InvalidEmail)
        );
        let subscribed = Account {
            customer_id: Some("cus_1".into()),
            subscription_id: Some("sub_1".into()),
            state: Some("past_due".into()),
            ..Account::empty("acme")
        };
        assert_eq!(
            decide_for("pro", None, &subscribed),
            Err(CheckoutRefusal::AlreadySubscribed { subscription: "sub_1".into(), state: "past_due".into() })
        );
        let ended = Account { state: Some("canceled".into()), ..subscribed };
        assert!(decide_for("pro", None, &ended).is_ok());
    }

    #[test]
    fn email_addresses_are_checked_plainly() {
        for good in ["ada@acme.example", "a.b+billing@sub.example.co.uk"] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            "",
            "ada",
            "@acme.example",
            "ada@",
            "ada@localhost",
            "ada@@acme.example",
            "a da@acme.example",
            "ada@acme.example\r\nBcc: x@y.z",
            "ada@.example",
            "ada@example.",
        ] {
            assert!(!is_email(bad), "{bad:?}");
        }
        assert!(!is_email(&format!("{}@example.com", "a".repeat(250))));
    }

    #[test]
    fn the_session_returns_to_the_tenant_and_is_tagged_with_it() {
        let form = session_form("acme", "https://chat.acme.example/", "cus_1", "price_pro");
        let get = |key: &str| form.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str());
        assert_eq!(get("mode"), Some("subscription"));
        assert_eq!(get("customer"), Some("cus_1"));
        assert_eq!(get("line_items[0][price]"), Some("price_pro"));
        assert_eq!(get("success_url"), Some("https://chat.acme.example/billing?checkout=success"));
        assert_eq!(get("cancel_url"), Some("https://chat.acme.example/billing?checkout=cancel"));
        assert_eq!(get("client_reference_id"), Some("acme"));
        assert_eq!(get("subscription_data[metadata][tenant]"), Some("acme"));
        assert_eq!(
            portal_form("https://chat.acme.example", "cus_1"),
            [pair("customer", "cus_1"), pair("return_url", "https://chat.acme.example/billing")]
        );
        assert_eq!(customer_form("acme", "Acme", "a@b.c")[2], pair("metadata[tenant]", "acme"));
    }
}
