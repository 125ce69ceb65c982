//! Emails per second through the worker into a local SMTP sink (mailpit), with Redis and mailpit on the same
//! machine. Run: `cargo bench -p saaschat-email-worker --bench throughput` (needs `scripts/tools/mailpit`).
//! `EMAIL_BENCH_COUNT` (default 2000) emails are appended first; then, for each concurrency in
//! `EMAIL_BENCH_CONCURRENCY` (default `1,8,32`), a fresh Redis and mailpit are started and the time from the
//! worker's start until the sink holds every email and every entry is acknowledged is measured.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use saaschat_testkit::Redis;
use support::*;

fn from_env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

async fn measure(count: usize, concurrency: usize) -> Duration {
    let redis_server = Redis::start();
    let sink = Sink::start();
    let dir = tempfile::tempdir().expect("dir");
    let tenant = tenant_file(dir.path(), sink.mailpit.smtp_port);
    let mut redis = redis(&redis_server.url()).await;
    let mut pipeline = redis::pipe();
    for number in 0..count {
        pipeline.xadd(saaschat_platform::email::STREAM, "*", &verify_email(number).to_fields()).ignore();
    }
    pipeline.query_async::<()>(&mut redis).await.expect("append");

    let settings = saaschat_email_worker::settings::WorkerSettings { concurrency, ..quick_settings() };
    let started = Instant::now();
    let worker = InProcess::start(config(&redis_server.url(), &tenant), settings).await;
    let timeout = Duration::from_secs(600);
    while sink.count().await < count || pending(&mut redis).await > 0 {
        assert!(started.elapsed() < timeout, "not delivered within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    worker.stop().await;
    assert_no_duplicates(&sink.messages().await);
    elapsed
}

#[tokio::main]
async fn main() {
    let count: usize = from_env("EMAIL_BENCH_COUNT", 2000);
    let concurrencies: Vec<usize> = std::env::var("EMAIL_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|value| value.trim().parse().ok())
        .collect();
    println!("emails through the worker into mailpit ({count} per run)");
    for concurrency in concurrencies {
        let elapsed = measure(count, concurrency).await;
        println!(
            "concurrency {concurrency:>3}: {count} emails in {:.2} s = {:.0} emails/s",
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64()
        );
    }
}
