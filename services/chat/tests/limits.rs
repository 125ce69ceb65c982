//! The limits' leases against a real Redis: a replica admits most requests from its lease, never more than the
//! limit, and the counters are exact again once the leases are given back.

use std::time::Duration;

use chrono::Utc;
use prometheus::{IntCounterVec, Opts};
use redis::aio::ConnectionManager;
use saaschat_chat::catalog::PlanLimits;
use saaschat_chat::limits::{LimitError, Limiter, ProviderQuota, ProviderSlot, keys};
use saaschat_platform::Secret;
use saaschat_platform::redis::RedisSettings;
use saaschat_testkit::Redis;

const TENANT: &str = "acme";
const PROVIDER: ProviderQuota<'static> = ProviderQuota { provider: "openai", requests_per_minute: 1_000_000 };
const SEEDED_TOKENS: i64 = 1_000;

fn plan(requests_per_minute: u32) -> PlanLimits {
    PlanLimits { name: "pro".into(), requests_per_minute, tokens_per_month: 1_000_000_000, allowed_models: Vec::new() }
}

async fn connect(redis: &Redis) -> ConnectionManager {
    saaschat_platform::redis::connect(&Secret::new(redis.url()), &RedisSettings::default()).await.expect("redis")
}

/// A limiter on its own connection, as a replica has; PostgreSQL is never reached because the month is seeded.
async fn replica(redis: &Redis) -> Limiter {
    replica_counting(redis).await.0
}

/// A replica and its count of checks by where they were decided.
async fn replica_counting(redis: &Redis) -> (Limiter, IntCounterVec) {
    let pool = sqlx::PgPool::connect_lazy("postgres://unused@127.0.0.1:1/unused").expect("lazy pool");
    let checks = IntCounterVec::new(Opts::new("checks", "checks"), &["decided"]).expect("counter");
    (Limiter::new(connect(redis).await, pool, TENANT.into(), &checks), checks)
}

async fn seed_month(connection: &mut ConnectionManager, user: &str) -> String {
    let (_, month_key) = keys(TENANT, user, Utc::now());
    let _: () = redis::cmd("SET").arg(&month_key).arg(SEEDED_TOKENS).query_async(connection).await.expect("seed");
    month_key
}

async fn get(connection: &mut ConnectionManager, key: &str) -> i64 {
    let value: Option<i64> = redis::cmd("GET").arg(key).query_async(connection).await.expect("get");
    value.unwrap_or(0)
}

/// How many scripts Redis has run so far.
async fn scripts_run(connection: &mut ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(connection).await.expect("info");
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| line.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// The per-minute counters must not roll over in the middle of a test.
async fn start_well_inside_a_minute() {
    let into_minute = Utc::now().timestamp().rem_euclid(60);
    if into_minute > 40 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute as u64)).await;
    }
}

/// Runs `count` reservations, `concurrency` at a time, and returns how many were admitted.
async fn reserve_many(
    limiter: &Limiter,
    user: &str,
    plan: &PlanLimits,
    tokens: u64,
    count: usize,
    concurrency: usize,
) -> usize {
    use futures::StreamExt;
    futures::stream::iter(0..count)
        .map(|_| async {
            match limiter.reserve(user, plan, tokens, PROVIDER).await {
                Ok(_) => 1,
                Err(LimitError::RequestsPerMinute { .. }) => 0,
                Err(error) => panic!("unexpected refusal: {error}"),
            }
        })
        .buffer_unordered(concurrency)
        .fold(0, |admitted, one| async move { admitted + one })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_admits_exactly_its_limit_and_asks_redis_for_few_of_them() {
    let redis = Redis::start();
    let mut connection = connect(&redis).await;
    seed_month(&mut connection, "alice").await;
    let (limiter, checks) = replica_counting(&redis).await;
    let plan = plan(20_000);
    start_well_inside_a_minute().await;

    let before = scripts_run(&mut connection).await;
    assert_eq!(reserve_many(&limiter, "alice", &plan, 10, 10_000, 32).await, 10_000);
    let scripts = scripts_run(&mut connection).await - before;
    let decided = |place: &str| checks.with_label_values(&[place]).get();
    assert_eq!(decided("lease") + decided("lease-after-wait") + decided("redis"), 10_000, "every check is counted");
    // The first 32 find no lease yet and all go to Redis; after that nearly none (32 to 63 in six runs).
    assert!(decided("redis") <= 200, "{} of 10,000 checks went to Redis", decided("redis"));
    // Without leases it would be 10,000. Nothing slows these requests down, so a lease often runs dry before
    // its top-up is back; the requests short of it then wait for the top-up instead of asking Redis each. Most
    // scripts left are the top-ups, which grow more frequent as the headroom (and with it the grants) shrinks:
    // 77 to 164 in three runs (304 without the wait, 527 before leases were sized by their rate).
    assert!(scripts <= 500, "10,000 requests far from the limit took {scripts} scripts; leases should spare most");

    // Nearer the end the leases shrink, and at the end nothing is leased any more: every request is checked in
    // Redis, and exactly the limit passes.
    assert_eq!(reserve_many(&limiter, "alice", &plan, 10, 10_500, 32).await, 10_000);
    let (minute_key, _) = keys(TENANT, "alice", Utc::now());
    limiter.give_back_all().await;
    assert_eq!(get(&mut connection, &minute_key).await, 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_pass_the_limit_and_the_counter_is_exact_once_leases_are_given_back() {
    let redis = Redis::start();
    let mut connection = connect(&redis).await;
    seed_month(&mut connection, "bob").await;
    let (first, second) = (replica(&redis).await, replica(&redis).await);
    let plan = plan(600);
    start_well_inside_a_minute().await;

    let (a, b) =
        tokio::join!(reserve_many(&first, "bob", &plan, 10, 400, 8), reserve_many(&second, "bob", &plan, 10, 400, 8),);
    assert!(a + b <= 600, "{a} + {b} admitted over a limit of 600");
    // What one replica still holds can refuse the other, for at most a lease's lifetime and a 16th of the
    // headroom each time; most of the limit is used all the same.
    assert!(a + b >= 500, "only {a} + {b} admitted of 600");
    let (minute_key, _) = keys(TENANT, "bob", Utc::now());
    first.give_back_all().await;
    second.give_back_all().await;
    assert_eq!(get(&mut connection, &minute_key).await, i64::try_from(a + b).expect("count"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_slots_taken_for_fallbacks_keep_their_lease_topped_up() {
    let redis = Redis::start();
    let mut connection = connect(&redis).await;
    seed_month(&mut connection, "erin").await;
    let limiter = replica(&redis).await;
    start_well_inside_a_minute().await;
    limiter.reserve("erin", &plan(100_000), 10, PROVIDER).await.expect("the first reservation leases a slot share");

    let before = scripts_run(&mut connection).await;
    for call in 0..2_000 {
        assert!(matches!(limiter.take_provider_slot(PROVIDER).await, Ok(ProviderSlot::Taken)));
        if call % 50 == 0 {
            // The top-ups run beside the calls, as they would between a replica's requests.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let scripts = scripts_run(&mut connection).await - before;
    // Each call past the first lease would be a script of its own if nothing topped the lease up.
    assert!(scripts <= 20, "2,000 provider slots took {scripts} scripts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_through_a_lease_records_the_tokens_really_used() {
    let redis = Redis::start();
    let mut connection = connect(&redis).await;
    let month_key = seed_month(&mut connection, "carol").await;
    let (first, second) = (replica(&redis).await, replica(&redis).await);
    let plan = plan(100_000);

    for round in 0..200 {
        let limiter = if round % 3 == 0 { &second } else { &first };
        let reservation = limiter.reserve("carol", &plan, 100, PROVIDER).await.expect("reserve");
        // Answers use less and more than their estimate.
        limiter.settle(&reservation, if round % 2 == 0 { 37 } else { 130 }).await;
    }
    assert!(get(&mut connection, &month_key).await > SEEDED_TOKENS + 100 * 37 + 100 * 130, "leases are counted");
    first.give_back_all().await;
    second.give_back_all().await;
    assert_eq!(get(&mut connection, &month_key).await, SEEDED_TOKENS + 100 * 37 + 100 * 130);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_go_back_to_redis_without_a_stop() {
    let redis = Redis::start();
    let mut connection = connect(&redis).await;
    let month_key = seed_month(&mut connection, "dave").await;
    let limiter = replica(&redis).await;
    let shutdown = saaschat_platform::http::Shutdown::new();
    let keeper = limiter.spawn_lease_keeper(shutdown.signal());

    let reservation = limiter.reserve("dave", &plan(100_000), 50, PROVIDER).await.expect("reserve");
    limiter.settle(&reservation, 20).await;
    assert!(get(&mut connection, &month_key).await > SEEDED_TOKENS + 20, "a lease was granted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(&mut connection, &month_key).await != SEEDED_TOKENS + 20 {
        assert!(tokio::time::Instant::now() < deadline, "the expired lease was never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.trigger();
    keeper.await.expect("the keeper stops with the service");
}
