//! Prometheus metrics of the operator.

use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::kinds::OwnedKind;

pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    writes: IntCounterVec,
    tenants: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("saaschat_operator".into()), None)?;
        let reconciles =
            IntCounterVec::new(Opts::new("reconciles_total", "Reconciles run, by controller"), &["controller"])?;
        let failures = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "Reconciles that failed, by controller and error reason"),
            &["controller", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Time one reconcile took, by controller")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["controller"],
        )?;
        let writes = IntCounterVec::new(
            Opts::new("api_writes_total", "Write requests sent to the API server, by kind and verb"),
            &["kind", "verb"],
        )?;
        let tenants = IntGaugeVec::new(
            Opts::new("tenants", "ChatTenants by condition type and status"),
            &["condition", "status"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(tenants.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Metrics { registry, reconciles, failures, duration, writes, tenants })
    }

    pub fn record_reconcile(&self, controller: &str, took: Duration) {
        self.reconciles.with_label_values(&[controller]).inc();
        self.duration.with_label_values(&[controller]).observe(took.as_secs_f64());
    }

    pub fn record_failure(&self, controller: &str, reason: &str) {
        self.failures.with_label_values(&[controller, reason]).inc();
    }

    pub fn record_write(&self, kind: OwnedKind, verb: &str) {
        self.writes.with_label_values(&[&format!("{kind:?}"), verb]).inc();
    }

    pub fn record_write_of(&self, kind: &str, verb: &str) {
        self.writes.with_label_values(&[kind, verb]).inc();
    }

    /// Replaces the tenant counts with a fresh tally of (condition, status) pairs.
    pub fn set_tenant_conditions(&self, tally: impl IntoIterator<Item = ((String, String), i64)>) {
        self.tenants.reset();
        for ((condition, status), count) in tally {
            self.tenants.with_label_values(&[&condition, &status]).set(count);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
