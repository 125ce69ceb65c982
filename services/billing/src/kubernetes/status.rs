//! Deciding the Subscription status from the stored account and this period's usage.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use saaschat_crds::{SubscriptionState, SubscriptionStatus};

use crate::account::Account;

pub const READY: &str = "Ready";

fn time(value: DateTime<Utc>) -> Option<Time> {
    Timestamp::from_second(value.timestamp()).ok().map(Time)
}

/// Whether the tenant is served normally, with the reason a human reads in `kubectl get csub`.
fn readiness(state: Option<SubscriptionState>, raw_state: Option<&str>) -> (bool, &'static str, String) {
    match state {
        None if raw_state.is_some() => (
            false,
            "UnknownState",
            format!("Stripe reports the state {:?}, which this version does not know", raw_state),
        ),
        None => (true, "NotBilled", "no Stripe subscription: the plan is not billed through Stripe".into()),
        Some(SubscriptionState::Active) => (true, "Active", "the subscription is active".into()),
        Some(SubscriptionState::Trialing) => (true, "Trialing", "the subscription is in its trial".into()),
        Some(SubscriptionState::PastDue) => {
            (false, "PaymentPastDue", "the latest payment failed; Stripe is retrying".into())
        }
        Some(SubscriptionState::Unpaid) => {
            (false, "Unpaid", "payment retries are exhausted; the invoice is unpaid".into())
        }
        Some(SubscriptionState::Canceled) => (false, "Canceled", "the subscription is canceled".into()),
        Some(SubscriptionState::Incomplete) => (false, "Incomplete", "the first payment has not succeeded yet".into()),
        Some(SubscriptionState::IncompleteExpired) => {
            (false, "IncompleteExpired", "the first payment never succeeded".into())
        }
        Some(SubscriptionState::Paused) => (false, "Paused", "the subscription is paused".into()),
    }
}

/// The status to write. `previous` is the status on the object: the Ready condition keeps its transition time
/// while its status stays the same, so an unchanged subscription produces an identical status (and no write).
pub fn desired(
    account: &Account,
    tokens_used: i64,
    generation: Option<i64>,
    previous: Option<&SubscriptionStatus>,
    now: DateTime<Utc>,
) -> SubscriptionStatus {
    let state = account.subscription_state();
    let (ready, reason, message) = readiness(state, account.state.as_deref());
    let condition_status = if ready { "True" } else { "False" };
    let previous_ready =
        previous.and_then(|status| status.conditions.iter().find(|condition| condition.type_ == READY));
    let last_transition_time = match previous_ready {
        Some(condition) if condition.status == condition_status => condition.last_transition_time.clone(),
        _ => time(account.state_since.unwrap_or(now)).or_else(|| time(now)).unwrap_or(Time(Timestamp::UNIX_EPOCH)),
    };
    SubscriptionStatus {
        state,
        state_since: if state.is_some() { account.state_since.and_then(time) } else { None },
        current_period_end: account.current_period_end.and_then(time),
        tokens_used: Some(tokens_used),
        conditions: vec![Condition {
            type_: READY.into(),
            status: condition_status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time,
        }],
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("time")
    }

    fn account(state: Option<&str>) -> Account {
        Account {
            customer_id: Some("cus_1".into()),
            subscription_id: state.map(|_| "sub_1".into()),
            state: state.map(str::to_string),
            state_since: state.map(|_| at("2026-11-20T10:00:00Z")),
            current_period_end: Some(at("2026-12-20T10:00:00Z")),
            ..Account::empty("acme")
        }
    }

    fn ready(status: &SubscriptionStatus) -> (&str, &str) {
        let condition = &status.conditions[0];
        (condition.status.as_str(), condition.reason.as_str())
    }

    #[test]
    fn an_active_subscription_is_ready_with_its_period_and_usage() {
        let status = desired(&account(Some("active")), 12_345, Some(3), None, at("2026-11-26T06:00:00Z"));
        assert_eq!(status.state, Some(SubscriptionState::Active));
        assert_eq!(status.state_since, time(at("2026-11-20T10:00:00Z")));
        assert_eq!(status.current_period_end, time(at("2026-12-20T10:00:00Z")));
        assert_eq!(status.tokens_used, Some(12_345));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(ready(&status), ("True", "Active"));
        assert_eq!(status.conditions[0].observed_generation, Some(3));
        assert_eq!(status.conditions[0].last_transition_time, time(at("2026-11-20T10:00:00Z")).expect("time"));
    }

    #[test]
    fn every_stripe_state_has_a_readiness_and_a_reason() {
        let cases = [
            ("trialing", "True", "Trialing"),
            ("past_due", "False", "PaymentPastDue"),
            ("unpaid", "False", "Unpaid"),
            ("canceled", "False", "Canceled"),
            ("incomplete", "False", "Incomplete"),
            ("incomplete_expired", "False", "IncompleteExpired"),
            ("paused", "False", "Paused"),
            ("haunted", "False", "UnknownState"),
        ];
        for (state, expected_status, expected_reason) in cases {
            let status = desired(&account(Some(state)), 0, None, None, at("2026-11-26T06:00:00Z"));
            assert_eq!(ready(&status), (expected_status, expected_reason), "{state}");
        }
    }

    #[test]
    fn without_a_subscription_the_state_stays_unset() {
        let now = at("2026-11-26T06:00:00Z");
        let status = desired(&Account::empty("acme"), 7, None, None, now);
        assert_eq!(status.state, None);
        assert_eq!(status.state_since, None);
        assert_eq!(ready(&status), ("True", "NotBilled"));
        assert_eq!(status.conditions[0].last_transition_time, time(now).expect("time"));
    }

    #[test]
    fn an_unchanged_subscription_gives_an_identical_status() {
        let first = desired(&Account::empty("acme"), 7, Some(1), None, at("2026-11-26T06:00:00Z"));
        let later = desired(&Account::empty("acme"), 7, Some(1), Some(&first), at("2026-11-26T07:00:00Z"));
        assert_eq!(first, later);
    }

    #[test]
    fn the_transition_time_moves_when_readiness_flips() {
        let active = desired(&account(Some("active")), 0, None, None, at("2026-11-26T06:00:00Z"));
        let mut failing = account(Some("past_due"));
        failing.state_since = Some(at("2026-11-26T08:00:00Z"));
        let past_due = desired(&failing, 0, None, Some(&active), at("2026-11-26T08:00:05Z"));
        assert_eq!(past_due.conditions[0].last_transition_time, time(at("2026-11-26T08:00:00Z")).expect("time"));
    }
}
