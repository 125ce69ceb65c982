//! What a plan allows, and when a subscription stops the service. Pure decisions.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use saaschat_crds::{ComponentSpec, PlanLimits, PlanName, Subscription, SubscriptionState};

use crate::names::Component;

/// The limits in force and the replica ceiling they impose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectivePlan {
    pub name: PlanName,
    pub limits: PlanLimits,
    /// Highest `maxReplicas` the plan allows for a service; `None` leaves the tenant's own bounds.
    replica_cap: Option<ReplicaCap>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReplicaCap {
    chat: i32,
    others: i32,
}

impl EffectivePlan {
    /// The plan of a Subscription; custom plans bring their own limits and no replica cap.
    pub fn of(plan: PlanName, custom_limits: Option<&PlanLimits>) -> Self {
        let (limits, replica_cap) = match plan {
            PlanName::Free => (limits(1_000_000, 20, 5), Some(ReplicaCap { chat: 3, others: 2 })),
            PlanName::Pro => (limits(50_000_000, 120, 50), Some(ReplicaCap { chat: 10, others: 5 })),
            PlanName::Enterprise => (limits(1_000_000_000, 600, 10_000), None),
            // The CRD requires limits for custom plans; without them the custom plan is as small as free.
            PlanName::Custom => (custom_limits.cloned().unwrap_or_else(|| limits(1_000_000, 20, 5)), None),
        };
        EffectivePlan { name: plan, limits, replica_cap }
    }

    pub fn of_subscription(subscription: &Subscription) -> Self {
        Self::of(subscription.spec.plan, subscription.spec.limits.as_ref())
    }

    /// The autoscaler bounds of a service: the tenant's bounds, lowered to the plan's cap.
    pub fn replica_bounds(&self, component: Component, spec: &ComponentSpec) -> (i32, i32) {
        let cap = self.replica_cap.map(|cap| match component {
            Component::Chat => cap.chat,
            _ => cap.others,
        });
        match cap {
            Some(cap) => (spec.min_replicas.min(cap), spec.max_replicas.min(cap)),
            None => (spec.min_replicas, spec.max_replicas),
        }
    }
}

fn limits(tokens_per_month: i64, requests_per_minute: i32, seats: i32) -> PlanLimits {
    PlanLimits { tokens_per_month, requests_per_minute, seats, allowed_models: Vec::new() }
}

/// Why a tenant is not serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suspension {
    /// Serving.
    None,
    /// `spec.suspend` is set: every service is scaled to zero.
    Requested,
    /// The subscription ended and its grace period passed: chat is scaled to zero.
    SubscriptionEnded(SubscriptionState),
}

/// The suspension in force now, and when to look again because a grace period will run out.
pub fn decide_suspension(
    spec_suspend: bool,
    subscription: Option<&Subscription>,
    now: Timestamp,
) -> (Suspension, Option<Duration>) {
    if spec_suspend {
        return (Suspension::Requested, None);
    }
    let Some(subscription) = subscription else {
        return (Suspension::None, None);
    };
    let Some(status) = subscription.status.as_ref() else {
        return (Suspension::None, None);
    };
    let Some(state) = status.state.filter(|s| s.ends_service()) else {
        return (Suspension::None, None);
    };
    // Without a transition time the grace period counts from the Subscription's creation: the latest moment
    // the state can be known to hold since. Counting from "now" would restart it at every reconcile.
    let since = status.state_since.as_ref().or(subscription.metadata.creation_timestamp.as_ref()).map_or(now, |t| t.0);
    let grace = SignedDuration::from_hours(24 * i64::from(subscription.spec.grace_period_days.max(0)));
    let ends = since.saturating_add(grace).unwrap_or(since);
    if now >= ends {
        (Suspension::SubscriptionEnded(state), None)
    } else {
        let wait = Duration::try_from(ends.duration_since(now)).unwrap_or_default() + Duration::from_secs(1);
        (Suspension::None, Some(wait))
    }
}

impl Suspension {
    /// Whether a service must run at zero replicas.
    pub fn stops(self, component: Component) -> bool {
        match self {
            Suspension::None => false,
            Suspension::Requested => Component::SERVICES.contains(&component),
            Suspension::SubscriptionEnded(_) => component == Component::Chat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use saaschat_crds::{SubscriptionSpec, SubscriptionStatus};

    fn subscription(state: Option<SubscriptionState>, since_days_ago: i64, now: Timestamp) -> Subscription {
        let mut subscription = Subscription::new("default", SubscriptionSpec::for_plan(PlanName::Pro));
        subscription.status = Some(SubscriptionStatus {
            state,
            state_since: Some(Time(now - SignedDuration::from_hours(24 * since_days_ago))),
            ..Default::default()
        });
        subscription
    }

    #[test]
    fn free_plan_caps_replicas_and_enterprise_does_not() {
        let chat = ComponentSpec::chat_default();
        let auth = ComponentSpec::auth_default();
        let free = EffectivePlan::of(PlanName::Free, None);
        assert_eq!(free.replica_bounds(Component::Chat, &chat), (3, 3));
        assert_eq!(free.replica_bounds(Component::Auth, &auth), (2, 2));
        let pro = EffectivePlan::of(PlanName::Pro, None);
        assert_eq!(pro.replica_bounds(Component::Chat, &chat), (3, 10));
        let enterprise = EffectivePlan::of(PlanName::Enterprise, None);
        assert_eq!(enterprise.replica_bounds(Component::Chat, &chat), (3, 20));
    }

    #[test]
    fn custom_plans_use_their_own_limits() {
        let custom = PlanLimits {
            tokens_per_month: 42,
            requests_per_minute: 7,
            seats: 3,
            allowed_models: vec!["gpt-4o".into()],
        };
        let plan = EffectivePlan::of(PlanName::Custom, Some(&custom));
        assert_eq!(plan.limits, custom);
        assert_eq!(plan.replica_bounds(Component::Chat, &ComponentSpec::chat_default()), (3, 20));
    }

    #[test]
    fn spec_suspend_stops_every_service_but_not_data() {
        let (suspension, _) = decide_suspension(true, None, Timestamp::now());
        assert_eq!(suspension, Suspension::Requested);
        for component in Component::SERVICES {
            assert!(suspension.stops(component));
        }
        for component in Component::DATA_STORES {
            assert!(!suspension.stops(component));
        }
    }

    #[test]
    fn canceled_subscription_suspends_chat_only_after_grace() {
        let now = Timestamp::now();
        let (within, recheck) =
            decide_suspension(false, Some(&subscription(Some(SubscriptionState::Canceled), 3, now)), now);
        assert_eq!(within, Suspension::None);
        let recheck = recheck.expect("a recheck when the grace period ends");
        assert!(recheck > Duration::from_secs(3 * 86_400) && recheck < Duration::from_secs(4 * 86_400 + 2));

        let (past, _) = decide_suspension(false, Some(&subscription(Some(SubscriptionState::Unpaid), 8, now)), now);
        assert_eq!(past, Suspension::SubscriptionEnded(SubscriptionState::Unpaid));
        assert!(past.stops(Component::Chat));
        assert!(!past.stops(Component::Auth) && !past.stops(Component::Billing));
    }

    #[test]
    fn active_past_due_and_unknown_states_keep_serving() {
        let now = Timestamp::now();
        for state in [None, Some(SubscriptionState::Active), Some(SubscriptionState::PastDue)] {
            let (suspension, recheck) = decide_suspension(false, Some(&subscription(state, 30, now)), now);
            assert_eq!((suspension, recheck), (Suspension::None, None), "{state:?}");
        }
    }
}
