//! The tenant's billing account: its Stripe customer and subscription as last fetched from Stripe, kept in the
//! one-row `account` table. Writers lock the row, so events about the same subscription apply one at a time.

use chrono::{DateTime, Utc};
use saaschat_crds::SubscriptionState;
use sqlx::{PgConnection, PgExecutor};

#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub tenant: String,
    pub customer_id: Option<String>,
    /// The address given at checkout, used when an invoice carries none.
    pub billing_email: Option<String>,
    pub subscription_id: Option<String>,
    pub price_id: Option<String>,
    /// Stripe's subscription status, as Stripe spells it.
    pub state: Option<String>,
    pub state_since: Option<DateTime<Utc>>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    /// When the subscription was last fetched from Stripe.
    pub synced_at: Option<DateTime<Utc>>,
}

impl Account {
    pub fn empty(tenant: &str) -> Account {
        Account { tenant: tenant.to_string(), ..Account::default() }
    }

    /// The state as the Subscription resource spells it; `None` for no subscription or a state this version
    /// does not know.
    pub fn subscription_state(&self) -> Option<SubscriptionState> {
        parse_state(self.state.as_deref()?)
    }
}

pub fn parse_state(state: &str) -> Option<SubscriptionState> {
    serde_json::from_value(serde_json::Value::String(state.to_string())).ok()
}

const COLUMNS: &str = "tenant, customer_id, billing_email, subscription_id, price_id, state, state_since, \
                       current_period_start, current_period_end, cancel_at_period_end, synced_at";

/// The account, or an empty one before the first checkout.
pub async fn load<'e>(executor: impl PgExecutor<'e>, tenant: &str) -> Result<Account, sqlx::Error> {
    let account = sqlx::query_as::<_, Account>(&format!("SELECT {COLUMNS} FROM account WHERE tenant = $1"))
        .bind(tenant)
        .fetch_optional(executor)
        .await?;
    Ok(account.unwrap_or_else(|| Account::empty(tenant)))
}

/// The account, locked until the transaction ends; created empty when missing.
pub async fn lock(conn: &mut PgConnection, tenant: &str) -> Result<Account, sqlx::Error> {
    sqlx::query("INSERT INTO account (tenant) VALUES ($1) ON CONFLICT (tenant) DO NOTHING")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    sqlx::query_as::<_, Account>(&format!("SELECT {COLUMNS} FROM account WHERE tenant = $1 FOR UPDATE"))
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await
}

pub async fn save(conn: &mut PgConnection, account: &Account) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE account SET customer_id = $2, billing_email = $3, subscription_id = $4, price_id = $5, state = $6, \
         state_since = $7, current_period_start = $8, current_period_end = $9, cancel_at_period_end = $10, \
         synced_at = $11, updated_at = now() WHERE tenant = $1",
    )
    .bind(&account.tenant)
    .bind(&account.customer_id)
    .bind(&account.billing_email)
    .bind(&account.subscription_id)
    .bind(&account.price_id)
    .bind(&account.state)
    .bind(account.state_since)
    .bind(account.current_period_start)
    .bind(account.current_period_end)
    .bind(account.cancel_at_period_end)
    .bind(account.synced_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_states_map_to_the_resources_states() {
        assert_eq!(parse_state("active"), Some(SubscriptionState::Active));
        assert_eq!(parse_state("past_due"), Some(SubscriptionState::PastDue));
        assert_eq!(parse_state("incomplete_expired"), Some(SubscriptionState::IncompleteExpired));
        assert_eq!(parse_state("paused"), Some(SubscriptionState::Paused));
        assert_eq!(parse_state("someday"), None);
        assert_eq!(Account::empty("acme").subscription_state(), None);
    }
}
