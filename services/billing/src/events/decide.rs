//! What an event leads to, decided from the objects fetched from Stripe (never from the event's own copy, which
//! may be older than another event delivered before it) and the account as stored.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use saaschat_platform::email::EmailContent;

use crate::account::Account;
use crate::stripe::objects::{CheckoutSession, Invoice, Subscription};

/// The event types this service acts on; any other type is recorded and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    CheckoutCompleted,
    SubscriptionChanged,
    InvoicePaid,
    InvoicePaymentFailed,
    Unhandled,
}

impl EventKind {
    pub fn of(event_type: &str) -> EventKind {
        match event_type {
            "checkout.session.completed" => EventKind::CheckoutCompleted,
            "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
                EventKind::SubscriptionChanged
            }
            "invoice.paid" => EventKind::InvoicePaid,
            "invoice.payment_failed" => EventKind::InvoicePaymentFailed,
            _ => EventKind::Unhandled,
        }
    }
}

/// The metadata key that marks Stripe objects as this tenant's (set on the customer, the Checkout Session and the
/// subscription it creates).
pub const TENANT_METADATA_KEY: &str = "tenant";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionDecision {
    /// Store this account.
    Apply(Account),
    /// The subscription belongs to another customer (one Stripe account may serve several tenants).
    Foreign,
    /// The tenant has moved on to another subscription that is still live; this one must not overwrite it.
    Superseded { current: String },
}

fn is_ended(state: &str) -> bool {
    matches!(state, "canceled" | "incomplete_expired")
}

/// The account after `fetched`, Stripe's current view of a subscription, when it is the tenant's.
pub fn apply_subscription(account: &Account, fetched: &Subscription, now: DateTime<Utc>) -> SubscriptionDecision {
    let customer = fetched.customer.as_str();
    let tagged = fetched.metadata.get(TENANT_METADATA_KEY) == Some(&account.tenant);
    let same_customer = account.customer_id.as_deref() == Some(customer);
    if !tagged && !same_customer {
        return SubscriptionDecision::Foreign;
    }
    if let Some(current) = &account.subscription_id
        && current != &fetched.id
        && !account.state.as_deref().is_some_and(is_ended)
        && is_ended(&fetched.status)
    {
        return SubscriptionDecision::Superseded { current: current.clone() };
    }
    let state_changed = account.state.as_deref() != Some(fetched.status.as_str());
    SubscriptionDecision::Apply(Account {
        customer_id: Some(customer.to_string()),
        subscription_id: Some(fetched.id.clone()),
        price_id: fetched.price_id.clone().or_else(|| account.price_id.clone()),
        state: Some(fetched.status.clone()),
        state_since: if state_changed { Some(now) } else { account.state_since.or(Some(now)) },
        current_period_start: fetched.current_period_start.and_then(timestamp),
        current_period_end: fetched.current_period_end.and_then(timestamp),
        cancel_at_period_end: fetched.cancel_at_period_end,
        synced_at: Some(now),
        ..account.clone()
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckoutDecision {
    /// Record the customer and fetch this subscription next.
    FetchSubscription { customer: Option<String>, subscription: String },
    /// Nothing to do yet, for the reason given.
    Wait(&'static str),
}

/// What a completed Checkout Session of this service's (checked by the caller) leads to, from the session as
/// Stripe shows it now.
pub fn checkout_completed(fetched: &CheckoutSession) -> CheckoutDecision {
    if fetched.status.as_deref() != Some("complete") {
        return CheckoutDecision::Wait("the Checkout Session is not complete in Stripe");
    }
    match &fetched.subscription {
        Some(subscription) => CheckoutDecision::FetchSubscription {
            customer: fetched.customer.clone(),
            subscription: subscription.clone(),
        },
        None => CheckoutDecision::Wait("the Checkout Session has no subscription"),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvoiceDecision {
    Email { to: String, content: EmailContent },
    Skip(&'static str),
}

/// The email an invoice event leads to. `invoice.paid` is final in Stripe (a paid invoice stays paid), so it
/// always earns a receipt; a payment failure only warns while the fetched invoice is still unpaid.
pub fn invoice_email(kind: EventKind, account: &Account, fetched: &Invoice, tenant_name: &str) -> InvoiceDecision {
    let customer = fetched.customer.as_deref();
    if customer.is_none() || customer != account.customer_id.as_deref() {
        return InvoiceDecision::Skip("the invoice is not the tenant customer's");
    }
    let Some(to) = fetched.customer_email.clone().or_else(|| account.billing_email.clone()) else {
        return InvoiceDecision::Skip("no email address for the customer");
    };
    let invoice_url = fetched.hosted_invoice_url.clone();
    match kind {
        EventKind::InvoicePaid => InvoiceDecision::Email {
            to,
            content: EmailContent::Receipt {
                tenant_name: tenant_name.to_string(),
                amount_paid: fetched.amount_paid,
                currency: fetched.currency.clone(),
                invoice_url,
                period_end: timestamp(fetched.period_end).map(rfc3339),
            },
        },
        EventKind::InvoicePaymentFailed => match fetched.status.as_deref() {
            Some("paid") => InvoiceDecision::Skip("the invoice has been paid since"),
            Some("void") => InvoiceDecision::Skip("the invoice has been voided since"),
            _ => InvoiceDecision::Email {
                to,
                content: EmailContent::PaymentFailed {
                    tenant_name: tenant_name.to_string(),
                    amount_due: fetched.amount_due - fetched.amount_paid,
                    currency: fetched.currency.clone(),
                    invoice_url,
                    next_attempt_at: fetched.next_payment_attempt.and_then(timestamp).map(rfc3339),
                },
            },
        },
        _ => InvoiceDecision::Skip("not an invoice event"),
    }
}

pub fn timestamp(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Attempts after which an event is given up on (about a day and a half of retries).
pub const MAX_ATTEMPTS: i32 = 16;

/// The wait before retry number `attempts` (1 after the first failure): doubling from 2 s, at most an hour.
pub fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.clamp(1, 12)).unwrap_or(12);
    Duration::from_secs((1u64 << exponent).min(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_140_000, 0).expect("time")
    }

    fn subscription(id: &str, customer: &str, status: &str) -> Subscription {
        Subscription {
            id: id.into(),
            customer: customer.into(),
            status: status.into(),
            metadata: Default::default(),
            cancel_at_period_end: false,
            current_period_start: Some(1_764_000_000),
            current_period_end: Some(1_766_592_000),
            price_id: Some("price_pro".into()),
        }
    }

    fn account() -> Account {
        Account { customer_id: Some("cus_1".into()), ..Account::empty("acme") }
    }

    fn invoice(status: &str, email: Option<&str>) -> Invoice {
        Invoice {
            customer: Some("cus_1".into()),
            customer_email: email.map(str::to_string),
            status: Some(status.into()),
            amount_due: 2000,
            amount_paid: 500,
            currency: "usd".into(),
            hosted_invoice_url: Some("https://invoice.stripe.com/i/1".into()),
            next_payment_attempt: Some(1_764_200_000),
            period_end: 1_766_592_000,
        }
    }

    #[test]
    fn event_types_are_classified() {
        assert_eq!(EventKind::of("checkout.session.completed"), EventKind::CheckoutCompleted);
        for kind in ["created", "updated", "deleted"] {
            assert_eq!(EventKind::of(&format!("customer.subscription.{kind}")), EventKind::SubscriptionChanged);
        }
        assert_eq!(EventKind::of("invoice.paid"), EventKind::InvoicePaid);
        assert_eq!(EventKind::of("invoice.payment_failed"), EventKind::InvoicePaymentFailed);
        assert_eq!(EventKind::of("customer.subscription.paused"), EventKind::Unhandled);
        assert_eq!(EventKind::of("charge.refunded"), EventKind::Unhandled);
    }

    #[test]
    fn the_fetched_subscription_is_applied_with_its_period_and_price() {
        let SubscriptionDecision::Apply(applied) =
            apply_subscription(&account(), &subscription("sub_1", "cus_1", "active"), now())
        else {
            panic!("applied")
        };
        assert_eq!(applied.subscription_id.as_deref(), Some("sub_1"));
        assert_eq!(applied.state.as_deref(), Some("active"));
        assert_eq!(applied.state_since, Some(now()));
        assert_eq!(applied.price_id.as_deref(), Some("price_pro"));
        assert_eq!(applied.current_period_end, timestamp(1_766_592_000));
        assert_eq!(applied.synced_at, Some(now()));
    }

    #[test]
    fn state_since_moves_only_when_the_state_changes() {
        let earlier = timestamp(1_700_000_000);
        let stored = Account {
            subscription_id: Some("sub_1".into()),
            state: Some("active".into()),
            state_since: earlier,
            ..account()
        };
        let SubscriptionDecision::Apply(same) =
            apply_subscription(&stored, &subscription("sub_1", "cus_1", "active"), now())
        else {
            panic!("applied")
        };
        assert_eq!(same.state_since, earlier);
        let SubscriptionDecision::Apply(changed) =
            apply_subscription(&stored, &subscription("sub_1", "cus_1", "past_due"), now())
        else {
            panic!("applied")
        };
        assert_eq!(changed.state_since, Some(now()));
    }

    #[test]
    fn another_customers_subscription_is_foreign_unless_tagged_for_the_tenant() {
        let foreign = subscription("sub_9", "cus_other", "active");
        assert_eq!(apply_subscription(&account(), &foreign, now()), SubscriptionDecision::Foreign);
        assert_eq!(apply_subscription(&Account::empty("acme"), &foreign, now()), SubscriptionDecision::Foreign);
        let mut tagged = foreign.clone();
        tagged.metadata.insert(TENANT_METADATA_KEY.into(), "acme".into());
        let SubscriptionDecision::Apply(applied) = apply_subscription(&Account::empty("acme"), &tagged, now()) else {
            panic!("applied")
        };
        assert_eq!(applied.customer_id.as_deref(), Some("cus_other"));
        tagged.metadata.insert(TENANT_METADATA_KEY.into(), "globex".into());
        assert_eq!(apply_subscription(&Account::empty("acme"), &tagged, now()), SubscriptionDecision::Foreign);
    }

    #[test]
    fn an_ended_old_subscription_does_not_overwrite_the_live_one() {
        let stored = Account { subscription_id: Some("sub_new".into()), state: Some("active".into()), ..account() };
        assert_eq!(
            apply_subscription(&stored, &subscription("sub_old", "cus_1", "canceled"), now()),
            SubscriptionDecision::Superseded { current: "sub_new".into() }
        );
        // A new live subscription replaces the old one, and an ended one replaces an ended one.
        assert!(matches!(
            apply_subscription(&stored, &subscription("sub_newer", "cus_1", "active"), now()),
            SubscriptionDecision::Apply(_)
        ));
        let ended = Account { state: Some("canceled".into()), ..stored };
        assert!(matches!(
            apply_subscription(&ended, &subscription("sub_old", "cus_1", "canceled"), now()),
            SubscriptionDecision::Apply(_)
        ));
    }

    fn session(status: &str, subscription: Option<&str>) -> CheckoutSession {
        CheckoutSession {
            id: "cs_1".into(),
            url: None,
            status: Some(status.into()),
            customer: Some("cus_1".into()),
            subscription: subscription.map(str::to_string),
            client_reference_id: Some("acme".into()),
        }
    }

    #[test]
    fn a_completed_checkout_leads_to_its_subscription() {
        assert_eq!(
            checkout_completed(&session("complete", Some("sub_1"))),
            CheckoutDecision::FetchSubscription { customer: Some("cus_1".into()), subscription: "sub_1".into() }
        );
        assert!(matches!(checkout_completed(&session("open", Some("sub_1"))), CheckoutDecision::Wait(_)));
        assert!(matches!(checkout_completed(&session("complete", None)), CheckoutDecision::Wait(_)));
    }

    #[test]
    fn a_paid_invoice_earns_a_receipt_with_stripes_current_figures() {
        let decision =
            invoice_email(EventKind::InvoicePaid, &account(), &invoice("paid", Some("ada@example.com")), "Acme");
        assert_eq!(
            decision,
            InvoiceDecision::Email {
                to: "ada@example.com".into(),
                content: EmailContent::Receipt {
                    tenant_name: "Acme".into(),
                    amount_paid: 500,
                    currency: "usd".into(),
                    invoice_url: Some("https://invoice.stripe.com/i/1".into()),
                    period_end: Some("2025-12-24T16:00:00Z".into()),
                },
            }
        );
    }

    #[test]
    fn a_payment_failure_warns_only_while_the_invoice_is_unpaid() {
        let open = invoice_email(EventKind::InvoicePaymentFailed, &account(), &invoice("open", Some("a@b.c")), "Acme");
        assert_eq!(
            open,
            InvoiceDecision::Email {
                to: "a@b.c".into(),
                content: EmailContent::PaymentFailed {
                    tenant_name: "Acme".into(),
                    amount_due: 1500,
                    currency: "usd".into(),
                    invoice_url: Some("https://invoice.stripe.com/i/1".into()),
                    next_attempt_at: Some("2025-11-26T23:33:20Z".into()),
                },
            }
        );
        for settled in ["paid", "void"] {
            let decision = invoice_email(EventKind::InvoicePaymentFailed, &account(), &invoice(settled, None), "Acme");
            assert!(matches!(decision, InvoiceDecision::Skip(_)), "{settled}");
        }
    }

    #[test]
    fn invoice_emails_go_to_the_invoice_address_or_the_checkout_address() {
        let with_email = Account { billing_email: Some("billing@acme.example".into()), ..account() };
        let InvoiceDecision::Email { to, .. } =
            invoice_email(EventKind::InvoicePaid, &with_email, &invoice("paid", None), "Acme")
        else {
            panic!("email")
        };
        assert_eq!(to, "billing@acme.example");
        assert_eq!(
            invoice_email(EventKind::InvoicePaid, &account(), &invoice("paid", None), "Acme"),
            InvoiceDecision::Skip("no email address for the customer")
        );
    }

    #[test]
    fn another_customers_invoice_sends_nothing() {
        let stranger = Account { customer_id: Some("cus_2".into()), ..account() };
        assert_eq!(
            invoice_email(EventKind::InvoicePaid, &stranger, &invoice("paid", Some("a@b.c")), "Acme"),
            InvoiceDecision::Skip("the invoice is not the tenant customer's")
        );
        assert!(matches!(
            invoice_email(EventKind::InvoicePaid, &Account::empty("acme"), &invoice("paid", Some("a@b.c")), "Acme"),
            InvoiceDecision::Skip(_)
        ));
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(11), Duration::from_secs(2048));
        assert_eq!(backoff(12), Duration::from_secs(3600));
        assert_eq!(backoff(40), Duration::from_secs(3600));
        assert_eq!(backoff(0), Duration::from_secs(2));
    }
}
