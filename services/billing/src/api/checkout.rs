//! Deciding a checkout: which price a plan is, whether a customer must be created (and with which address), and
//! exactly what is sent to Stripe. Redirect URLs are always the tenant's own: nothing in a request can send a
//! paying user elsewhere.

use std::collections::BTreeMap;

use crate::account::Account;
use crate::events::decide::TENANT_METADATA_KEY;
use crate::stripe::requests::{NewCheckoutSession, NewCustomer, NewPortalSession};

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

fn tenant_tag(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(TENANT_METADATA_KEY.to_string(), tenant.to_string())])
}

pub fn new_customer(tenant: &str, display_name: &str, email: &str) -> NewCustomer {
    NewCustomer { email: email.to_string(), name: display_name.to_string(), metadata: tenant_tag(tenant) }
}

fn page(tenant_url: &str, query: &str) -> String {
    format!("{}/billing{query}", tenant_url.trim_end_matches('/'))
}

pub fn new_session(tenant: &str, tenant_url: &str, customer_id: &str, price_id: &str) -> NewCheckoutSession {
    NewCheckoutSession {
        customer: customer_id.to_string(),
        price_id: price_id.to_string(),
        success_url: page(tenant_url, "?checkout=success"),
        cancel_url: page(tenant_url, "?checkout=cancel"),
        client_reference_id: tenant.to_string(),
        metadata: tenant_tag(tenant),
        subscription_metadata: tenant_tag(tenant),
    }
}

pub fn new_portal_session(tenant_url: &str, customer_id: &str) -> NewPortalSession {
    NewPortalSession { customer: customer_id.to_string(), return_url: page(tenant_url, "") }
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
        let session = new_session("acme", "https://chat.acme.example/", "cus_1", "price_pro");
        let tag = BTreeMap::from([("tenant".to_string(), "acme".to_string())]);
        assert_eq!(
            session,
            NewCheckoutSession {
                customer: "cus_1".into(),
                price_id: "price_pro".into(),
                success_url: "https://chat.acme.example/billing?checkout=success".into(),
                cancel_url: "https://chat.acme.example/billing?checkout=cancel".into(),
                client_reference_id: "acme".into(),
                metadata: tag.clone(),
                subscription_metadata: tag.clone(),
            }
        );
        assert_eq!(
            new_portal_session("https://chat.acme.example", "cus_1"),
            NewPortalSession { customer: "cus_1".into(), return_url: "https://chat.acme.example/billing".into() }
        );
        assert_eq!(new_customer("acme", "Acme", "a@b.c").metadata, tag);
    }
}
