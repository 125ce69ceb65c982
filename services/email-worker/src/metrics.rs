//! The worker's Prometheus metrics, registered in the registry `/metrics` exposes.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::delivery::decide::DeadLetterKind;

/// SMTP round trips: from a local relay (milliseconds) to a slow provider under load.
const SEND_BUCKETS: [f64; 12] = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0];

#[derive(Clone)]
pub struct WorkerMetrics {
    pub sent: IntCounter,
    pub retried: IntCounter,
    pub dead_lettered: IntCounterVec,
    pub duplicates: IntCounter,
    pub taken_over: IntCounter,
    pub redis_errors: IntCounter,
    pub in_flight: IntGauge,
    pub send_duration: Histogram,
}

impl WorkerMetrics {
    pub fn register(registry: &Registry) -> Result<WorkerMetrics, prometheus::Error> {
        let metrics = WorkerMetrics {
            sent: IntCounter::new("email_worker_sent_total", "Emails the SMTP server accepted")?,
            retried: IntCounter::new("email_worker_retries_total", "SMTP attempts that failed and will be retried")?,
            dead_lettered: IntCounterVec::new(
                Opts::new("email_worker_dead_lettered_total", "Entries moved to the dead-letter stream, by kind"),
                &["kind"],
            )?,
            duplicates: IntCounter::new(
                "email_worker_duplicates_total",
                "Entries acknowledged without sending because their email id was sent before",
            )?,
            taken_over: IntCounter::new(
                "email_worker_taken_over_total",
                "Entries taken over from a consumer that stopped working on them (XAUTOCLAIM)",
            )?,
            redis_errors: IntCounter::new("email_worker_redis_errors_total", "Redis commands that failed")?,
            in_flight: IntGauge::new("email_worker_in_flight", "Entries being worked on")?,
            send_duration: Histogram::with_opts(
                HistogramOpts::new("email_worker_send_duration_seconds", "Time of one SMTP send, success or not")
                    .buckets(SEND_BUCKETS.to_vec()),
            )?,
        };
        registry.register(Box::new(metrics.sent.clone()))?;
        registry.register(Box::new(metrics.retried.clone()))?;
        registry.register(Box::new(metrics.dead_lettered.clone()))?;
        registry.register(Box::new(metrics.duplicates.clone()))?;
        registry.register(Box::new(metrics.taken_over.clone()))?;
        registry.register(Box::new(metrics.redis_errors.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.send_duration.clone()))?;
        // Every kind is exported from the start, so a rate query over a fresh worker is 0 rather than absent.
        for kind in DeadLetterKind::ALL {
            metrics.dead_lettered.with_label_values(&[kind.label()]);
        }
        Ok(metrics)
    }
}
