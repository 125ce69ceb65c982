//! The billing API for a tenant's owners and admins: open a Checkout Session for a plan, open the customer
//! portal, and show the subscription with this period's usage. Members get 403.

pub mod checkout;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use saaschat_platform::Problem;
use saaschat_platform::auth::{Authenticated, Role};
use saaschat_platform::problem::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::{self, Account};
use crate::app::{AppState, not_configured};
use crate::usage::store::{self as usage_store, PeriodUsage};
use checkout::{CheckoutInput, CheckoutRefusal};

fn is_manager(caller: &Authenticated) -> bool {
    caller.role.at_least(Role::Admin)
}

fn members_forbidden() -> Problem {
    Problem::forbidden("billing is for the tenant's owners and admins")
}

fn stripe_failure(error: &crate::stripe::StripeError) -> Problem {
    tracing::warn!(%error, "Stripe call failed");
    Problem::typed(StatusCode::BAD_GATEWAY, "stripe-unavailable", "Stripe did not complete the request")
        .with_detail("the payment provider did not answer as expected; try again shortly")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub plan: String,
    /// The billing address for the Stripe customer; needed for the first checkout only (access tokens carry no
    /// email address).
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionResponse {
    pub id: String,
    pub url: String,
}

pub async fn create_checkout(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(request): Json<CheckoutRequest>,
) -> Result<Response, Problem> {
    if !is_manager(&caller) {
        return Err(members_forbidden());
    }
    let stripe = state.stripe.clone().ok_or_else(not_configured)?;
    let mut transaction = state.pool.begin().await.map_err(|error| Problem::internal(&error))?;
    // Locked so that two admins checking out at once do not create two Stripe customers; committed on its own so
    // that a customer Stripe created is kept even if the session cannot be opened.
    let mut stored =
        account::lock(&mut transaction, &state.tenant.tenant).await.map_err(|error| Problem::internal(&error))?;
    let input = CheckoutInput { plan: &request.plan, email: request.email.as_deref(), account: &stored };
    let plan = checkout::decide(&input, &stripe.prices).map_err(refusal_problem)?;
    if let Some(email) = plan.new_customer_email.clone() {
        let customer = checkout::new_customer(&state.tenant.tenant, &state.tenant.display_name, &email);
        let customer = stripe
            .client
            .create_customer(&customer, &Uuid::new_v4().to_string())
            .await
            .map_err(|error| stripe_failure(&error))?;
        stored.customer_id = Some(customer.id);
        stored.billing_email = Some(email);
        account::save(&mut transaction, &stored).await.map_err(|error| Problem::internal(&error))?;
    }
    transaction.commit().await.map_err(|error| Problem::internal(&error))?;
    let customer_id = stored.customer_id.clone().unwrap_or_default();
    let session = checkout::new_session(&state.tenant.tenant, &state.tenant.url, &customer_id, &plan.price_id);
    let session = stripe
        .client
        .create_checkout_session(&session, &Uuid::new_v4().to_string())
        .await
        .map_err(|error| stripe_failure(&error))?;
    let Some(url) = session.url.clone() else {
        return Err(Problem::typed(StatusCode::BAD_GATEWAY, "stripe-unavailable", "Stripe returned no checkout URL"));
    };
    sqlx::query("INSERT INTO checkout_sessions (id, plan, price_id, created_by) VALUES ($1, $2, $3, $4)")
        .bind(&session.id)
        .bind(&request.plan)
        .bind(&plan.price_id)
        .bind(&caller.user_id)
        .execute(&state.pool)
        .await
        .map_err(|error| Problem::internal(&error))?;
    tracing::info!(session = %session.id, plan = %request.plan, user = %caller.user_id, "checkout session opened");
    Ok((StatusCode::CREATED, Json(SessionResponse { id: session.id, url })).into_response())
}

fn refusal_problem(refusal: CheckoutRefusal) -> Problem {
    let detail = refusal.to_string();
    match refusal {
        CheckoutRefusal::UnknownPlan { known, .. } => {
            Problem::typed(StatusCode::UNPROCESSABLE_ENTITY, "unknown-plan", "The plan cannot be bought")
                .with_detail(detail)
                .with_extension("plans", known)
        }
        CheckoutRefusal::EmailRequired | CheckoutRefusal::InvalidEmail => {
            Problem::typed(StatusCode::UNPROCESSABLE_ENTITY, "invalid-email", "A billing email address is needed")
                .with_detail(detail)
        }
        CheckoutRefusal::AlreadySubscribed { .. } => {
            Problem::typed(StatusCode::CONFLICT, "already-subscribed", "The tenant already has a subscription")
                .with_detail(detail)
        }
    }
}

pub async fn create_portal(State(state): State<AppState>, caller: Authenticated) -> Result<Response, Problem> {
    if !is_manager(&caller) {
        return Err(members_forbidden());
    }
    let stripe = state.stripe.clone().ok_or_else(not_configured)?;
    let stored = account::load(&state.pool, &state.tenant.tenant).await.map_err(|error| Problem::internal(&error))?;
    let Some(customer_id) = stored.customer_id else {
        return Err(Problem::typed(StatusCode::CONFLICT, "no-customer", "The tenant has no Stripe customer yet")
            .with_detail("open a checkout first: POST /v1/billing/checkout"));
    };
    let session = checkout::new_portal_session(&state.tenant.url, &customer_id);
    let session = stripe
        .client
        .create_portal_session(&session, &Uuid::new_v4().to_string())
        .await
        .map_err(|error| stripe_failure(&error))?;
    Ok((StatusCode::CREATED, Json(SessionResponse { id: session.id, url: session.url })).into_response())
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    /// The plan the Stripe price stands for, else the tenant's configured plan.
    pub plan: String,
    pub state: Option<String>,
    pub state_since: Option<DateTime<Utc>>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub has_customer: bool,
    pub usage: PeriodUsage,
}

/// The start of the period usage is counted from: Stripe's current period, or the calendar month (UTC) while
/// there is no subscription.
pub fn usage_period_start(account: &Account, now: DateTime<Utc>) -> DateTime<Utc> {
    account
        .current_period_start
        .filter(|start| *start <= now)
        .unwrap_or_else(|| Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().unwrap_or(now))
}

pub fn plan_of(account: &Account, prices: &std::collections::BTreeMap<String, String>, configured: &str) -> String {
    account
        .price_id
        .as_deref()
        .and_then(|price| prices.iter().find(|(_, id)| id.as_str() == price).map(|(plan, _)| plan.clone()))
        .unwrap_or_else(|| configured.to_string())
}

pub async fn show_subscription(State(state): State<AppState>, caller: Authenticated) -> Result<Response, Problem> {
    if !is_manager(&caller) {
        return Err(members_forbidden());
    }
    let stored = account::load(&state.pool, &state.tenant.tenant).await.map_err(|error| Problem::internal(&error))?;
    let now = Utc::now();
    let since = usage_period_start(&stored, now);
    let usage = usage_store::period_usage(&state.pool, since, now).await.map_err(|error| Problem::internal(&error))?;
    let prices = state.tenant.stripe.as_ref().map(|stripe| stripe.prices.clone()).unwrap_or_default();
    Ok(Json(SubscriptionView {
        plan: plan_of(&stored, &prices, &state.tenant.plan.name),
        state: stored.state.clone(),
        state_since: stored.state_since,
        current_period_start: stored.current_period_start,
        current_period_end: stored.current_period_end,
        cancel_at_period_end: stored.cancel_at_period_end,
        has_customer: stored.customer_id.is_some(),
        usage,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("time")
    }

    #[test]
    fn usage_counts_from_the_stripe_period_or_the_calendar_month() {
        let now = at("2026-11-26T06:00:00Z");
        let subscribed = Account { current_period_start: Some(at("2026-11-10T12:00:00Z")), ..Account::empty("acme") };
        assert_eq!(usage_period_start(&subscribed, now), at("2026-11-10T12:00:00Z"));
        assert_eq!(usage_period_start(&Account::empty("acme"), now), at("2026-11-01T00:00:00Z"));
        let future = Account { current_period_start: Some(at("2027-01-01T00:00:00Z")), ..Account::empty("acme") };
        assert_eq!(usage_period_start(&future, now), at("2026-11-01T00:00:00Z"));
    }

    #[test]
    fn the_plan_is_named_by_the_subscribed_price() {
        let prices = BTreeMap::from([("pro".to_string(), "price_pro".to_string())]);
        let subscribed = Account { price_id: Some("price_pro".into()), ..Account::empty("acme") };
        assert_eq!(plan_of(&subscribed, &prices, "free"), "pro");
        let unknown = Account { price_id: Some("price_legacy".into()), ..Account::empty("acme") };
        assert_eq!(plan_of(&unknown, &prices, "free"), "free");
        assert_eq!(plan_of(&Account::empty("acme"), &prices, "free"), "free");
    }
}
