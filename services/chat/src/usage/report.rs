//! What was used this month, for the people who used it: `GET /v1/usage` (the caller's requests, tokens and cost
//! per model, and the tenant's tokens against the plan) and, for owners and admins, `GET /v1/usage/team` (the
//! same per member and per model). The month is the calendar month in UTC, the one the plan's token limit counts.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Datelike, Months, Utc};
use saaschat_platform::Problem;
use saaschat_platform::auth::{ChatScope, Role, Scoped};
use saaschat_platform::problem::Json;
use serde::Serialize;
use sqlx::PgPool;

use crate::catalog::Catalog;
use crate::conversations::reply::internal;
use crate::limits::month_start;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/usage", get(mine)).route("/v1/usage/team", get(team))
}

/// One `(user, model)` group of this month's `usage_events`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRow {
    pub user_id: String,
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// US dollar millionths; `null` when none of the models counted has a price configured.
    pub cost_micros: Option<i64>,
}

impl Totals {
    fn add(&mut self, row: &UsageRow, priced: bool) {
        self.requests = self.requests.saturating_add(row.requests);
        self.input_tokens = self.input_tokens.saturating_add(row.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(row.output_tokens);
        if priced || row.cost_micros > 0 {
            self.cost_micros = Some(self.cost_micros.unwrap_or(0).saturating_add(row.cost_micros));
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// A model name, or a user id.
    pub key: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub name: String,
    pub tokens_per_month: u64,
    pub requests_per_minute: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub plan: PlanView,
    /// Every user's tokens this month: what the plan's monthly limit counts.
    pub tenant_tokens: i64,
    pub totals: Totals,
    pub models: Vec<Group>,
    /// Per member (team report only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Group>>,
}

/// Whether a model has a price now; a model without one reports no cost rather than a cost of zero.
fn is_priced(catalog: &Catalog, model: &str) -> bool {
    catalog.upstreams.iter().filter_map(|upstream| upstream.offer(model)).any(|offer| {
        offer.input_price != crate::usage::cost::Price::default()
            || offer.output_price != crate::usage::cost::Price::default()
    })
}

fn grouped(rows: &[&UsageRow], catalog: &Catalog, key: impl Fn(&UsageRow) -> &str) -> Vec<Group> {
    let mut groups: BTreeMap<&str, Totals> = BTreeMap::new();
    for row in rows {
        groups.entry(key(row)).or_default().add(row, is_priced(catalog, &row.model));
    }
    let mut groups: Vec<Group> =
        groups.into_iter().map(|(key, totals)| Group { key: key.to_string(), totals }).collect();
    groups.sort_by(|a, b| {
        let tokens = |group: &Group| group.totals.input_tokens.saturating_add(group.totals.output_tokens);
        tokens(b).cmp(&tokens(a)).then_with(|| a.key.cmp(&b.key))
    });
    groups
}

/// The report of this month's rows: for `user` alone, or (with `None`) for the whole team.
pub fn report(rows: &[UsageRow], user: Option<&str>, catalog: &Catalog, now: DateTime<Utc>) -> Report {
    let period_start = month_start(now);
    let period_end = period_start.checked_add_months(Months::new(1)).unwrap_or(period_start);
    let tenant_tokens =
        rows.iter().fold(0i64, |sum, row| sum.saturating_add(row.input_tokens).saturating_add(row.output_tokens));
    let selected: Vec<&UsageRow> = rows.iter().filter(|row| user.is_none_or(|user| row.user_id == user)).collect();
    let mut totals = Totals::default();
    for row in &selected {
        totals.add(row, is_priced(catalog, &row.model));
    }
    Report {
        period_start,
        period_end,
        plan: PlanView {
            name: catalog.plan.name.clone(),
            tokens_per_month: catalog.plan.tokens_per_month,
            requests_per_minute: catalog.plan.requests_per_minute,
        },
        tenant_tokens,
        totals,
        models: grouped(&selected, catalog, |row| &row.model),
        members: user.is_none().then(|| grouped(&selected, catalog, |row| &row.user_id)),
    }
}

/// This month's usage of every user, grouped by user and model.
pub async fn month_rows(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<UsageRow>, sqlx::Error> {
    debug_assert!(now.day() >= 1);
    sqlx::query_as(
        "SELECT user_id, model, count(*) AS requests, coalesce(sum(input_tokens), 0)::bigint AS input_tokens, \
         coalesce(sum(output_tokens), 0)::bigint AS output_tokens, coalesce(sum(cost_micros), 0)::bigint AS cost_micros \
         FROM usage_events WHERE recorded_at >= $1 GROUP BY user_id, model",
    )
    .bind(month_start(now))
    .fetch_all(pool)
    .await
}

async fn mine(State(state): State<AppState>, user: Scoped<ChatScope>) -> Result<Response, Problem> {
    let now = Utc::now();
    let rows = month_rows(state.store.pool(), now).await.map_err(internal)?;
    Ok(Json(report(&rows, Some(&user.user_id), &state.gateway.catalog.current(), now)).into_response())
}

async fn team(State(state): State<AppState>, user: Scoped<ChatScope>) -> Result<Response, Problem> {
    if !user.role.at_least(Role::Admin) {
        return Err(Problem::forbidden("the team's usage is for the tenant's owners and admins"));
    }
    let now = Utc::now();
    let rows = month_rows(state.store.pool(), now).await.map_err(internal)?;
    Ok(Json(report(&rows, None, &state.gateway.catalog.current(), now)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::catalog_with_prices;

    fn row(user: &str, model: &str, requests: i64, input: i64, output: i64, cost: i64) -> UsageRow {
        UsageRow {
            user_id: user.into(),
            model: model.into(),
            requests,
            input_tokens: input,
            output_tokens: output,
            cost_micros: cost,
        }
    }

    #[test]
    fn a_member_sees_their_own_use_and_the_tenants_tokens_against_the_plan() {
        let catalog = catalog_with_prices(&[("gpt-4o", "2.50", "10"), ("free-model", "0", "0")]);
        let rows = [
            row("alice", "gpt-4o", 3, 100, 50, 750),
            row("alice", "free-model", 2, 10, 10, 0),
            row("bob", "gpt-4o", 1, 1000, 1000, 12_500),
        ];
        let now = "2026-12-08T10:00:00Z".parse().expect("time");
        let mine = report(&rows, Some("alice"), &catalog, now);
        assert_eq!(mine.period_start, "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().expect("time"));
        assert_eq!(mine.period_end, "2027-01-01T00:00:00Z".parse::<DateTime<Utc>>().expect("time"));
        assert_eq!(mine.tenant_tokens, 2170);
        assert_eq!(mine.totals, Totals { requests: 5, input_tokens: 110, output_tokens: 60, cost_micros: Some(750) });
        assert_eq!(mine.models.len(), 2);
        assert_eq!(mine.models[0].key, "gpt-4o", "the biggest first");
        assert_eq!(mine.models[1].totals.cost_micros, None, "a model without a price has no cost");
        assert!(mine.members.is_none(), "a personal report names nobody else");

        let team = report(&rows, None, &catalog, now);
        let members = team.members.expect("members");
        assert_eq!(members.iter().map(|group| group.key.as_str()).collect::<Vec<_>>(), ["bob", "alice"]);
        assert_eq!(members[0].totals.cost_micros, Some(12_500));
        assert_eq!(team.totals.requests, 6);
    }

    #[test]
    fn nothing_used_is_an_empty_report_without_cost() {
        let catalog = catalog_with_prices(&[("gpt-4o", "2.50", "10")]);
        let empty = report(&[], Some("alice"), &catalog, Utc::now());
        assert_eq!(empty.totals, Totals::default());
        assert!(empty.models.is_empty());
    }
}
