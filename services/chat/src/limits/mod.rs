//! Limits enforced before a provider is called: the plan's requests per minute per user and tokens per month
//! per tenant, and each provider's requests per minute across the tenant. The plan's are checked and reserved in
//! one Redis script, so concurrent requests cannot race past them: a request reserves an estimate of its tokens
//! atomically and settles with the real usage afterwards. The same script takes the first provider's slot, so
//! that a request checked in Redis costs one round trip; a fallback or a retry takes its slot with
//! [`Limiter::take_provider_slot`]. Far from the limits the script also leases this replica a share of the
//! headroom ([`lease`]), and most requests are then admitted without Redis.
//!
//! Deciding: [`estimate`], [`keys`], [`Decision::from_reply`], [`lease::Leases`]. Doing: [`Limiter`].

pub mod estimate;
pub mod lease;

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use axum::http::{HeaderValue, StatusCode};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use prometheus::{IntCounter, IntCounterVec};
use saaschat_platform::Problem;
use saaschat_platform::http::ShutdownSignal;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::task::JoinHandle;

use crate::catalog::PlanLimits;
use crate::limits::lease::{HEADROOM_SHARE, LEASE_TTL, LEASED_REQUESTS, Leases, Need, TopUp};

/// The Lua the lease scripts share. `give_back` skips a key that is gone (a minute that ended), which a
/// `DECRBY` would recreate without an expiry; `grant` leases up to `want` units of a counter, at most `1/share`
/// of its headroom under `limit`, and nothing of a counter that is gone, for the same reason.
macro_rules! lease_lua {
    () => {
        r"
local function give_back(key, units)
  if units > 0 and redis.call('EXISTS', key) == 1 then redis.call('DECRBY', key, units) end
end
local function grant(key, limit, want, share)
  local current = redis.call('GET', key)
  if want <= 0 or not current then return 0 end
  local units = math.min(want, math.floor((limit - tonumber(current)) / share))
  if units <= 0 then return 0 end
  redis.call('INCRBY', key, units)
  return units
end
"
    };
}

/// First gives back what this replica held of the three counters (`ARGV[5..7]`). Then checks the per-minute
/// request count and the monthly tokens together; reserves both only if both allow, and then takes a slot of
/// the first provider's minute if it has one left. Last, it grants leases (`ARGV[8..10]` asked for, each at most
/// `1/ARGV[11]` of the headroom left). Returns `{0, used, 1 or 0: the provider slot, three grants}` when
/// reserved, `{1, ms until the minute ends}` over the request limit, `{2, used}` over the token limit, `{-1, 0}`
/// when the month's counter is missing (Redis lost it, or a new month) and must be seeded from PostgreSQL first.
const RESERVE_SCRIPT: &str = concat!(
    lease_lua!(),
    r"
give_back(KEYS[1], tonumber(ARGV[5]))
give_back(KEYS[2], tonumber(ARGV[6]))
give_back(KEYS[3], tonumber(ARGV[7]))
local month = redis.call('GET', KEYS[2])
if not month then return {-1, 0} end
local used = tonumber(month)
local requests = tonumber(redis.call('GET', KEYS[1]) or '0')
if requests >= tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = 60000 end
  return {1, ttl}
end
if used + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return {2, used} end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], 61000) end
used = redis.call('INCRBY', KEYS[2], ARGV[3])
local slot = 0
if tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[4]) then
  if redis.call('INCR', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], 61000) end
  slot = 1
end
local share = tonumber(ARGV[11])
local minute_grant = grant(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[8]), share)
local month_grant = grant(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[9]), share)
local provider_grant = 0
if slot == 1 then provider_grant = grant(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[10]), share) end
return {0, used, slot, minute_grant, month_grant, provider_grant}
"
);

/// Tops up leases: grants `KEYS[i]` up to `ARGV[2i]` units under the limit `ARGV[2i-1]`, with the share
/// `ARGV[last]`; returns the grants in the order of the keys.
const TOP_UP_SCRIPT: &str = concat!(
    lease_lua!(),
    r"
local share = tonumber(ARGV[#ARGV])
local grants = {}
for i, key in ipairs(KEYS) do
  grants[i] = grant(key, tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i]), share)
end
return grants
"
);

/// Gives back the unused units of expired leases: `ARGV[i]` to `KEYS[i]`.
const GIVE_BACK_SCRIPT: &str = concat!(
    lease_lua!(),
    r"
for i, key in ipairs(KEYS) do
  give_back(key, tonumber(ARGV[i]))
end
return 0
"
);

/// Takes one slot of a provider's minute: `{0}` when taken, `{1, ms until the minute ends}` when none is left.
const PROVIDER_SLOT_SCRIPT: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = 60000 end
  return {1, ttl}
end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], 61000) end
return {0}
";

/// How long a month's counter is kept: past the month's end, so late settlements still find it.
const MONTH_COUNTER_TTL_SECONDS: u64 = 40 * 24 * 3600;

/// The Redis keys: the user's counter for the current minute and the tenant's counter for the month.
pub fn keys(tenant: &str, user_id: &str, now: DateTime<Utc>) -> (String, String) {
    let minute = now.timestamp().div_euclid(60);
    (
        format!("chat:{tenant}:rpm:{user_id}:{minute}"),
        format!("chat:{tenant}:tokens:{:04}-{:02}", now.year(), now.month()),
    )
}

/// The Redis key of a provider's requests in the current minute, across the tenant.
pub fn provider_key(tenant: &str, provider: &str, now: DateTime<Utc>) -> String {
    format!("chat:{tenant}:provider-rpm:{provider}:{}", now.timestamp().div_euclid(60))
}

/// A provider and its `requestsPerMinute`.
#[derive(Clone, Copy, Debug)]
pub struct ProviderQuota<'a> {
    pub provider: &'a str,
    pub requests_per_minute: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderSlot {
    Taken,
    /// None left this minute.
    Full {
        retry_after: Duration,
    },
}

/// The first instant of the month `now` is in (UTC).
pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().unwrap_or(now)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Reserved; whether the first provider's slot was taken too; the units leased of the user's minute, the
    /// month's tokens and the provider's minute.
    Reserved {
        provider_slot: bool,
        grants: [u64; 3],
    },
    OverRequestsPerMinute {
        retry_after: Duration,
    },
    OverTokensPerMonth {
        used: u64,
    },
    Unseeded,
}

impl Decision {
    pub fn from_reply(reply: &[i64]) -> Option<Decision> {
        match reply {
            [0, _, slot, minute, month, provider] => Some(Decision::Reserved {
                provider_slot: *slot == 1,
                grants: [*minute, *month, *provider].map(|units| u64::try_from(units).unwrap_or(0)),
            }),
            [1, ttl] => Some(Decision::OverRequestsPerMinute {
                retry_after: Duration::from_millis(u64::try_from(*ttl).unwrap_or(60_000)),
            }),
            [2, used] => Some(Decision::OverTokensPerMonth { used: u64::try_from(*used).unwrap_or(0) }),
            [-1, _] => Some(Decision::Unseeded),
            _ => None,
        }
    }
}

/// Why a request was refused before any provider was called. Each names the limit.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("the plan allows {limit} requests per minute per user")]
    RequestsPerMinute { limit: u32, retry_after: Duration },
    #[error(
        "the tenant has used {used} of the {limit} tokens its plan allows this month (this request needs up to {needed})"
    )]
    TokensPerMonth { limit: u64, used: u64, needed: u64 },
    #[error("usage limits cannot be checked right now")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<LimitError> for Problem {
    fn from(error: LimitError) -> Problem {
        let detail = error.to_string();
        match error {
            LimitError::RequestsPerMinute { limit, retry_after } => {
                let seconds = retry_after.as_secs_f64().ceil().max(1.0);
                Problem::typed(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
                    .with_detail(detail)
                    .with_extension("limit", "requestsPerMinute")
                    .with_extension("limitValue", limit)
                    .with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds as u64))
            }
            LimitError::TokensPerMonth { limit, used, .. } => {
                Problem::typed(StatusCode::PAYMENT_REQUIRED, "token-quota-exhausted", "Monthly token quota exhausted")
                    .with_detail(detail)
                    .with_extension("limit", "tokensPerMonth")
                    .with_extension("limitValue", limit)
                    .with_extension("used", used)
            }
            LimitError::Unavailable(source) => {
                tracing::error!(error = %source, "limit check failed");
                Problem::typed(StatusCode::SERVICE_UNAVAILABLE, "limits-unavailable", "Usage limits cannot be checked")
                    .with_detail(detail)
                    .with_header(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
        }
    }
}

/// Tokens reserved for one request; settle it once with the real usage.
#[derive(Clone, Debug)]
pub struct Reservation {
    month_key: String,
    pub reserved_tokens: u64,
    /// Whether the first candidate's provider slot is already taken for the first attempt.
    pub first_provider_slot: bool,
}

/// What a settlement leaves for the month's counter in Redis, in tokens (negative gives tokens back).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "the month's counter keeps the estimate unless the remainder is settled"]
pub struct Remainder {
    month_key: String,
    delta: i64,
}

#[derive(Clone)]
pub struct Limiter {
    redis: ConnectionManager,
    pool: PgPool,
    tenant: String,
    leases: Arc<Mutex<Leases>>,
    /// Signalled whenever a refill ends, for the requests waiting for a top-up.
    refilled: Arc<Notify>,
    scripts: Arc<Scripts>,
    checks: Arc<Checks>,
}

/// Counts where each reservation was decided: a Redis call for most requests means the leases do not keep up.
struct Checks {
    lease: IntCounter,
    lease_after_wait: IntCounter,
    redis: IntCounter,
}

/// The longest a request waits for a top-up under way before it asks Redis itself.
const TOP_UP_WAIT: Duration = Duration::from_millis(250);

/// Sent as EVALSHA (the script body only when Redis does not know it yet).
struct Scripts {
    reserve: Script,
    provider_slot: Script,
    top_up: Script,
    give_back: Script,
}

/// Ends the refills a request started, also when its future is dropped while Redis answers, and wakes the
/// requests waiting for them.
struct RefillGuard {
    leases: Arc<Mutex<Leases>>,
    refilled: Arc<Notify>,
    keys: Vec<String>,
}

impl RefillGuard {
    /// Adds the grants: `grant_of` gives the grant of each asked key, by its position among them and by name.
    fn finish(mut self, grant_of: impl Fn(usize, &str) -> u64) {
        let now = Instant::now();
        let keys = std::mem::take(&mut self.keys);
        {
            let mut leases = lock(&self.leases);
            for (index, key) in keys.iter().enumerate() {
                leases.finish_refill(key, grant_of(index, key), now);
            }
        }
        self.refilled.notify_waiters();
    }
}

impl Drop for RefillGuard {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            {
                let mut leases = lock(&self.leases);
                for key in &self.keys {
                    leases.abandon_refill(key);
                }
            }
            self.refilled.notify_waiters();
        }
    }
}

fn lock(leases: &Mutex<Leases>) -> MutexGuard<'_, Leases> {
    leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A counter's key, its limit, the units this request needs, and how many a lease of it asks for at least.
struct Counter<'a> {
    key: &'a str,
    limit: u64,
    need: u64,
    want: u64,
}

impl Counter<'_> {
    /// What to ask for when the lease was spent at `demand` units over the runway.
    fn want_for(&self, demand: u64) -> u64 {
        self.want.max(demand)
    }
}

/// What a reservation does after looking at the leases.
enum LeaseVerdict {
    /// Admitted from the leases; top up those that are `Some`.
    Spent([Option<TopUp>; 3]),
    /// Short of a lease whose top-up is under way: wait for it, at most [`TOP_UP_WAIT`] in all.
    WaitForTopUp,
    /// Check in Redis, giving back what is held and asking for `wants` (0 where another request asks).
    AskRedis { give_back: [u64; 3], guard: RefillGuard, wants: [u64; 3] },
}

/// A counter whose lease a background top-up asks `want` units for.
struct LeaseTopUp<'a> {
    key: &'a str,
    limit: u64,
    want: u64,
}

impl Limiter {
    /// `checks` is counted by where each reservation was decided (the `decided` label).
    pub fn new(redis: ConnectionManager, pool: PgPool, tenant: String, checks: &IntCounterVec) -> Limiter {
        let checks = Checks {
            lease: checks.with_label_values(&["lease"]),
            lease_after_wait: checks.with_label_values(&["lease-after-wait"]),
            redis: checks.with_label_values(&["redis"]),
        };
        Limiter {
            redis,
            pool,
            tenant,
            leases: Arc::default(),
            refilled: Arc::default(),
            scripts: Arc::new(Scripts {
                reserve: Script::new(RESERVE_SCRIPT),
                provider_slot: Script::new(PROVIDER_SLOT_SCRIPT),
                top_up: Script::new(TOP_UP_SCRIPT),
                give_back: Script::new(GIVE_BACK_SCRIPT),
            }),
            checks: Arc::new(checks),
        }
    }

    /// Reserves the plan's limits for one request, and a slot of `first`, the provider tried first: from this
    /// replica's leases when they cover it, otherwise in Redis.
    pub async fn reserve(
        &self,
        user_id: &str,
        plan: &PlanLimits,
        tokens: u64,
        first: ProviderQuota<'_>,
    ) -> Result<Reservation, LimitError> {
        let now = Utc::now();
        let (minute_key, month_key) = keys(&self.tenant, user_id, now);
        let provider_key = provider_key(&self.tenant, first.provider, now);
        let counters = [
            Counter { key: &minute_key, limit: plan.requests_per_minute.into(), need: 1, want: LEASED_REQUESTS },
            Counter {
                key: &month_key,
                limit: plan.tokens_per_month,
                need: tokens,
                want: tokens.saturating_mul(LEASED_REQUESTS),
            },
            Counter { key: &provider_key, limit: first.requests_per_minute.into(), need: 1, want: LEASED_REQUESTS },
        ];
        // Set when the request first waits for a top-up; it waits at most TOP_UP_WAIT in all, however often it
        // is woken by other counters' refills.
        let mut waiting_since: Option<Instant> = None;
        let (mut give_back, guard, wants) = loop {
            let may_wait = waiting_since.is_none_or(|since| since.elapsed() < TOP_UP_WAIT);
            let refilled = self.refilled.notified();
            let mut refilled = std::pin::pin!(refilled);
            match self.consult_leases(&counters, may_wait, refilled.as_mut()) {
                LeaseVerdict::AskRedis { give_back, guard, wants } => {
                    self.checks.redis.inc();
                    break (give_back, guard, wants);
                }
                LeaseVerdict::Spent(top_ups) => {
                    if waiting_since.is_none() { &self.checks.lease } else { &self.checks.lease_after_wait }.inc();
                    let to_top_up = counters.iter().zip(top_ups).filter_map(|(counter, top_up)| {
                        let want = counter.want_for(top_up?.demand);
                        Some(LeaseTopUp { key: counter.key, limit: counter.limit, want })
                    });
                    self.spawn_top_up(to_top_up.collect());
                    return Ok(Reservation { month_key, reserved_tokens: tokens, first_provider_slot: true });
                }
                LeaseVerdict::WaitForTopUp => {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    let _ = tokio::time::timeout_at((since + TOP_UP_WAIT).into(), refilled).await;
                }
            }
        };
        let mut redis = self.redis.clone();
        for _ in 0..2 {
            let reply: Vec<i64> = self
                .scripts
                .reserve
                .key(&minute_key)
                .key(&month_key)
                .key(&provider_key)
                .arg(plan.requests_per_minute)
                .arg(plan.tokens_per_month)
                .arg(tokens)
                .arg(first.requests_per_minute)
                .arg(&give_back)
                .arg(&wants)
                .arg(HEADROOM_SHARE)
                .invoke_async(&mut redis)
                .await
                .map_err(|error| LimitError::Unavailable(Box::new(error)))?;
            // Given back once: a retry after seeding must not give the same units back again.
            give_back = [0; 3];
            match Decision::from_reply(&reply) {
                Some(Decision::Reserved { provider_slot, grants }) => {
                    guard.finish(|_, key| {
                        counters.iter().position(|counter| counter.key == key).map_or(0, |index| grants[index])
                    });
                    return Ok(Reservation { month_key, reserved_tokens: tokens, first_provider_slot: provider_slot });
                }
                Some(Decision::OverRequestsPerMinute { retry_after }) => {
                    return Err(LimitError::RequestsPerMinute { limit: plan.requests_per_minute, retry_after });
                }
                Some(Decision::OverTokensPerMonth { used }) => {
                    return Err(LimitError::TokensPerMonth { limit: plan.tokens_per_month, used, needed: tokens });
                }
                Some(Decision::Unseeded) => self.seed_month(&month_key).await?,
                None => return Err(LimitError::Unavailable(format!("unexpected script reply {reply:?}").into())),
            }
        }
        Err(LimitError::Unavailable("the monthly counter could not be seeded".into()))
    }

    /// Spends the request's needs from the leases when they cover it; otherwise waits for a top-up under way
    /// (when `may_wait`; `refilled` is registered before the leases are unlocked, so that a top-up ending
    /// right after is not missed), or starts the refills of a check in Redis.
    fn consult_leases(
        &self,
        counters: &[Counter<'_>; 3],
        may_wait: bool,
        refilled: Pin<&mut Notified<'_>>,
    ) -> LeaseVerdict {
        let mut leases = lock(&self.leases);
        let now = Instant::now();
        let needs = counters.each_ref().map(|counter| Need { key: counter.key, units: counter.need });
        if let Some(top_ups) = leases.try_spend(&needs, now) {
            return LeaseVerdict::Spent(top_ups);
        }
        if may_wait && leases.topping_up(&needs, now) {
            refilled.enable();
            return LeaseVerdict::WaitForTopUp;
        }
        let refills = counters.each_ref().map(|counter| leases.start_refill(counter.key, now));
        let mut wants = [0; 3];
        for ((want, counter), refill) in wants.iter_mut().zip(counters).zip(&refills) {
            if refill.ask {
                *want = counter.want_for(refill.demand);
            }
        }
        let asked = counters.iter().zip(refills).filter(|(_, refill)| refill.ask);
        let keys = asked.map(|(counter, _)| counter.key.to_string()).collect();
        let guard = RefillGuard { leases: self.leases.clone(), refilled: self.refilled.clone(), keys };
        LeaseVerdict::AskRedis { give_back: refills.map(|refill| refill.give_back), guard, wants }
    }

    /// Tops up the leases of `counters` (already marked as refilling) off the request's path.
    fn spawn_top_up(&self, counters: Vec<LeaseTopUp<'_>>) {
        if counters.is_empty() {
            return;
        }
        let guard = RefillGuard {
            leases: self.leases.clone(),
            refilled: self.refilled.clone(),
            keys: counters.iter().map(|counter| counter.key.to_string()).collect(),
        };
        let limits: Vec<[u64; 2]> = counters.iter().map(|counter| [counter.limit, counter.want]).collect();
        let (scripts, mut redis) = (self.scripts.clone(), self.redis.clone());
        tokio::spawn(async move {
            let mut invocation = scripts.top_up.prepare_invoke();
            for (key, limit) in guard.keys.iter().zip(&limits) {
                invocation.key(key).arg(limit);
            }
            invocation.arg(HEADROOM_SHARE);
            match invocation.invoke_async::<Vec<u64>>(&mut redis).await {
                Ok(grants) => guard.finish(|index, _| grants.get(index).copied().unwrap_or(0)),
                Err(error) => tracing::warn!(%error, "cannot top up the limits' leases"),
            }
        });
    }

    /// Starts the month's counter from what PostgreSQL recorded this month (`SET NX`: a replica that seeded
    /// first wins, and reservations made since are kept).
    async fn seed_month(&self, month_key: &str) -> Result<(), LimitError> {
        let used: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0)::bigint FROM usage_events WHERE recorded_at >= $1",
        )
        .bind(month_start(Utc::now()))
        .fetch_one(&self.pool)
        .await
        .map_err(|error| LimitError::Unavailable(Box::new(error)))?;
        let mut redis = self.redis.clone();
        let _: Option<String> = ::redis::cmd("SET")
            .arg(month_key)
            .arg(used)
            .arg("NX")
            .arg("EX")
            .arg(MONTH_COUNTER_TTL_SECONDS)
            .query_async(&mut redis)
            .await
            .map_err(|error| LimitError::Unavailable(Box::new(error)))?;
        Ok(())
    }

    /// Takes a slot of the provider's minute for one more call, from the lease when there is one.
    pub async fn take_provider_slot(&self, quota: ProviderQuota<'_>) -> Result<ProviderSlot, LimitError> {
        let key = provider_key(&self.tenant, quota.provider, Utc::now());
        let spent = lock(&self.leases).try_spend(&[Need { key: &key, units: 1 }], Instant::now());
        if let Some([top_up]) = spent {
            let limit = quota.requests_per_minute.into();
            let top_up = top_up.map(|top_up| LeaseTopUp { key: &key, limit, want: LEASED_REQUESTS.max(top_up.demand) });
            self.spawn_top_up(top_up.into_iter().collect());
            return Ok(ProviderSlot::Taken);
        }
        let mut redis = self.redis.clone();
        let reply: Vec<i64> = self
            .scripts
            .provider_slot
            .key(&key)
            .arg(quota.requests_per_minute)
            .invoke_async(&mut redis)
            .await
            .map_err(|error| LimitError::Unavailable(Box::new(error)))?;
        match reply.as_slice() {
            [0] => Ok(ProviderSlot::Taken),
            [1, ttl] => {
                Ok(ProviderSlot::Full { retry_after: Duration::from_millis(u64::try_from(*ttl).unwrap_or(60_000)) })
            }
            _ => Err(LimitError::Unavailable(format!("unexpected script reply {reply:?}").into())),
        }
    }

    /// Replaces the reservation with the tokens really used: in the month's lease while it lasts, otherwise
    /// in Redis.
    pub async fn settle(&self, reservation: &Reservation, used_tokens: u64) {
        if let Some(remainder) = self.settle_in_lease(reservation, used_tokens) {
            self.settle_remainder(remainder).await;
        }
    }

    /// The part of [`settle`](Self::settle) that needs no Redis: the month's lease absorbs what it can, and
    /// what it cannot is returned for [`settle_remainder`](Self::settle_remainder).
    pub fn settle_in_lease(&self, reservation: &Reservation, used_tokens: u64) -> Option<Remainder> {
        let delta = i128::from(used_tokens) - i128::from(reservation.reserved_tokens);
        let delta = i64::try_from(delta).unwrap_or(0);
        let delta = lock(&self.leases).settle(&reservation.month_key, delta, Instant::now());
        (delta != 0).then(|| Remainder { month_key: reservation.month_key.clone(), delta })
    }

    /// Applies to the month's counter in Redis what the lease could not absorb.
    pub async fn settle_remainder(&self, remainder: Remainder) {
        let Remainder { month_key, delta } = remainder;
        let mut redis = self.redis.clone();
        let result: Result<i64, _> = ::redis::cmd("INCRBY").arg(&month_key).arg(delta).query_async(&mut redis).await;
        if let Err(error) = result {
            tracing::warn!(%error, delta, "cannot settle a token reservation; the monthly counter keeps the estimate");
        }
    }

    /// Gives Redis back what expired leases still hold, every half lease, until `shutdown`; then everything
    /// this replica holds is given back by [`give_back_all`](Self::give_back_all).
    pub fn spawn_lease_keeper(&self, shutdown: ShutdownSignal) -> JoinHandle<()> {
        let limiter = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(LEASE_TTL / 2);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = shutdown.clone().triggered() => return,
                }
                let expired = lock(&limiter.leases).take_expired(Instant::now());
                limiter.give_back(expired).await;
            }
        })
    }

    /// Gives back every lease; the service calls it when it stops, after the last settlement.
    pub async fn give_back_all(&self) {
        let held = lock(&self.leases).take_all();
        self.give_back(held).await;
    }

    async fn give_back(&self, units: Vec<(String, u64)>) {
        if units.is_empty() {
            return;
        }
        let mut invocation = self.scripts.give_back.prepare_invoke();
        for (key, remaining) in &units {
            invocation.key(key).arg(remaining);
        }
        let mut redis = self.redis.clone();
        if let Err(error) = invocation.invoke_async::<i64>(&mut redis).await {
            // Those units stay counted as used until their minute or month ends: the safe direction.
            tracing::warn!(%error, leases = units.len(), "cannot give back unused leases");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_minute_and_the_month() {
        let now = Utc.with_ymd_and_hms(2026, 3, 9, 10, 15, 30).single().expect("time");
        let (minute, month) = keys("acme", "user-1", now);
        assert_eq!(minute, format!("chat:acme:rpm:user-1:{}", now.timestamp() / 60));
        assert_eq!(month, "chat:acme:tokens:2026-03");
        assert_eq!(month_start(now), Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).single().expect("time"));
        assert_eq!(
            provider_key("acme", "openai", now),
            format!("chat:acme:provider-rpm:openai:{}", now.timestamp() / 60)
        );
    }

    #[test]
    fn script_replies_decide() {
        assert_eq!(
            Decision::from_reply(&[0, 500, 1, 16, 1024, 8]),
            Some(Decision::Reserved { provider_slot: true, grants: [16, 1024, 8] })
        );
        assert_eq!(
            Decision::from_reply(&[0, 500, 0, 0, 0, 0]),
            Some(Decision::Reserved { provider_slot: false, grants: [0; 3] })
        );
        assert_eq!(Decision::from_reply(&[0, 500, 1]), None, "a reply without grants is not understood");
        assert_eq!(
            Decision::from_reply(&[1, 1500]),
            Some(Decision::OverRequestsPerMinute { retry_after: Duration::from_millis(1500) })
        );
        assert_eq!(Decision::from_reply(&[2, 990]), Some(Decision::OverTokensPerMonth { used: 990 }));
        assert_eq!(Decision::from_reply(&[-1, 0]), Some(Decision::Unseeded));
        assert_eq!(Decision::from_reply(&[7]), None);
    }

    #[test]
    fn refusals_are_problems_that_name_the_limit() {
        let problem =
            Problem::from(LimitError::RequestsPerMinute { limit: 10, retry_after: Duration::from_millis(1200) });
        assert_eq!(problem.status, 429);
        assert_eq!(problem.extensions["limit"], "requestsPerMinute");
        assert_eq!(problem.headers[axum::http::header::RETRY_AFTER], "2");
        let problem = Problem::from(LimitError::TokensPerMonth { limit: 1000, used: 990, needed: 50 });
        assert_eq!(problem.status, 402);
        assert_eq!(problem.extensions["limit"], "tokensPerMonth");
        assert_eq!(
            problem.detail.as_deref(),
            Some("the tenant has used 990 of the 1000 tokens its plan allows this month (this request needs up to 50)")
        );
    }
}
