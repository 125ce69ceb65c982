//! `Subscription`: the commercial plan of a tenant, kept in step with Stripe by the billing service.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, PlanLimits, PlanName};

/// The only name a Subscription may have: a tenant namespace holds exactly one.
pub const SUBSCRIPTION_NAME: &str = "default";

/// The plan of the tenant whose namespace holds it. The operator creates it from `ChatTenant.spec.plan`
/// when absent and never changes its spec afterwards; the billing service writes its status from Stripe.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "saaschat.io",
    version = "v1alpha1",
    kind = "Subscription",
    plural = "subscriptions",
    singular = "subscription",
    shortname = "csub",
    category = "saaschat",
    namespaced,
    status = "SubscriptionStatus",
    doc = "The commercial plan of the tenant whose namespace holds it, kept in step with Stripe.",
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.plan"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Period End","type":"date","jsonPath":".status.currentPeriodEnd"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("self.metadata.name == 'default'").message("a tenant has exactly one Subscription and it is named 'default'").field_path(".metadata.name"),
)]
#[x_kube(
    validation = kube::core::Rule::new("self.plan != 'custom' || has(self.limits)").message("a custom plan requires limits").field_path(".limits").reason(kube::core::Reason::FieldValueRequired),
    validation = kube::core::Rule::new("self.plan == 'custom' || !has(self.limits)").message("limits are only allowed with the custom plan; the other plans have fixed limits").field_path(".limits").reason(kube::core::Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// The plan. `custom` takes its quotas from `limits`.
    pub plan: PlanName,
    /// Quotas of a custom plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PlanLimits>,
    /// Stripe identifiers, set by the billing service after Checkout or by the platform team for invoiced customers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeIds>,
    /// Days a `canceled` or `unpaid` subscription keeps chat running before the tenant is suspended.
    #[serde(default = "default_grace_period_days")]
    #[schemars(range(min = 0, max = 90))]
    pub grace_period_days: i32,
}

fn default_grace_period_days() -> i32 {
    7
}

impl SubscriptionSpec {
    /// The spec the operator creates for a new tenant.
    pub fn for_plan(plan: PlanName) -> Self {
        SubscriptionSpec { plan, limits: None, stripe: None, grace_period_days: default_grace_period_days() }
    }
}

/// Stripe identifiers of a subscription.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StripeIds {
    /// Stripe customer id (`cus_...`).
    #[schemars(length(max = 255), regex(pattern = r"^cus_[A-Za-z0-9]+$"))]
    pub customer_id: String,
    /// Stripe price id of the plan (`price_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), regex(pattern = r"^price_[A-Za-z0-9]+$"))]
    pub price_id: Option<String>,
    /// Stripe subscription id (`sub_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), regex(pattern = r"^sub_[A-Za-z0-9]+$"))]
    pub subscription_id: Option<String>,
}

/// Stripe's subscription states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl SubscriptionState {
    /// States in which the tenant stops being served once the grace period has passed.
    pub fn ends_service(self) -> bool {
        matches!(self, SubscriptionState::Canceled | SubscriptionState::Unpaid)
    }
}

/// Observed state of a Subscription, written by the billing service from Stripe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    /// Stripe's state. Unset until billing has seen the subscription in Stripe; free plans stay unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SubscriptionState>,
    /// When `state` last changed; the grace period counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_since: Option<Time>,
    /// End of the current billing period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_period_end: Option<Time>,
    /// Tokens used in the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_used: Option<i64>,
    /// `Ready` and billing conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
