//! Webhook throughput: signed Stripe events posted as fast as `CONCURRENCY` clients can, to a billing service on
//! real PostgreSQL, Redis and stripe-mock (the same set-up as the integration tests). Reports deliveries accepted
//! per second (verified, stored, answered) and events processed per second (claimed by the workers, the object
//! fetched from Stripe where the type needs it, the outcome committed), for three kinds of event.
//!
//! `cargo bench -p saaschat-billing --bench webhooks` (`BENCH_EVENTS`, default 2000 per kind).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Billing, FIXTURE_CUSTOMER, NEW_SECRET, Options, event, now, signature};
use serde_json::json;

/// Builds the `i`-th event body of a kind.
type EventMaker = fn(usize) -> String;

const CONCURRENCY: usize = 16;
const WORKERS: usize = 4;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let events: usize = std::env::var("BENCH_EVENTS").ok().and_then(|text| text.parse().ok()).unwrap_or(2000);
    let billing = Billing::start_with(Options { workers: WORKERS, ..Options::default() }).await;
    billing.set_customer(FIXTURE_CUSTOMER, Some("billing@acme.example")).await;
    println!(
        "{events} events per kind, {CONCURRENCY} concurrent senders, {WORKERS} workers, 2 CPU cores shared by all"
    );
    println!("{:<44} {:>12} {:>14}", "kind", "accepted/s", "processed/s");
    let kinds: [(&str, EventMaker); 3] = [
        ("unhandled type (queue only)", |i| {
            event(&format!("evt_ignored{i}"), "charge.refunded", json!({"id": format!("ch_{i}")}))
        }),
        ("subscription updated (fetch, apply)", |i| {
            event(&format!("evt_sub{i}"), "customer.subscription.updated", json!({"id": "sub_1Pgc6xB7WZ01zgkW"}))
        }),
        ("invoice paid (fetch, outbox email)", |i| {
            event(&format!("evt_inv{i}"), "invoice.paid", json!({"id": format!("in_{i}x")}))
        }),
    ];
    for (name, make) in kinds {
        let (accepted, processed) = measure(&billing, events, make).await;
        println!("{name:<44} {accepted:>12.0} {processed:>14.0}");
    }
}

async fn measure(billing: &Billing, events: usize, make: EventMaker) -> (f64, f64) {
    let before = billing.count("SELECT count(*) FROM stripe_events WHERE processed_at IS NOT NULL").await;
    let deliveries: Arc<Vec<(String, String)>> = Arc::new(
        (0..events)
            .map(|i| {
                let body = make(i);
                let header = signature(&body, now(), &[NEW_SECRET]);
                (body, header)
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let url = billing.url("/v1/billing/webhooks/stripe");
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..CONCURRENCY {
        let (deliveries, next, url, http) = (deliveries.clone(), next.clone(), url.clone(), billing.http.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, header)) = deliveries.get(index) else { break };
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("stripe-signature", header)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("delivery");
                assert!(response.status().is_success(), "{}", response.status());
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    let accepted_in = started.elapsed();
    let target = before + i64::try_from(events).expect("count");
    loop {
        let done = billing.count("SELECT count(*) FROM stripe_events WHERE processed_at IS NOT NULL").await;
        if done >= target {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "processing stalled at {done} of {target}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let processed_in = started.elapsed();
    let count = events as f64;
    (count / accepted_in.as_secs_f64(), count / processed_in.as_secs_f64())
}
