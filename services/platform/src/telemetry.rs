//! Telemetry: logs, traces and error reports.
//!
//! - Logs: JSON lines on stdout, with the fields of the current request span (trace id, span id, route),
//!   filtered by `RUST_LOG` (default `info`), formatted without intermediate trees ([`log_format`]), written
//!   in batches at most 100 ms apart; warnings and errors at once ([`log_output`]).
//! - Traces: W3C trace context is continued on incoming requests and passed on to outgoing ones by
//!   [`crate::http::trace`]. With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set,
//!   every sampled request's server span and every client span of [`crate::http::TraceContext::send`] is
//!   exported over OTLP/HTTP ([`otlp`]); unset, nothing is recorded and nothing costs.
//! - Errors: with `SENTRY_DSN` set, `tracing` ERROR events and panics are reported to Sentry
//!   ([`error_reporting`]), tagged with the service, its release and `SENTRY_ENVIRONMENT`.
//!
//! The settings are read by [`settings::TelemetrySettings::from_lookup`]; `docs/operations.md` lists them.

#[cfg(test)]
mod captured;
pub mod error_reporting;
pub mod log_format;
pub mod log_output;
pub mod otlp;
pub mod settings;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use otlp::Exporter;
pub use settings::TelemetrySettings;

use crate::config::ConfigError;
use crate::secret::redacted_url;

/// How long dropping the [`TelemetryGuard`] waits for queued spans and error reports to be sent.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// The span exporter, when OTLP export is configured.
pub fn exporter() -> Option<&'static Exporter> {
    EXPORTER.get()
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Settings(#[from] ConfigError),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    #[error(transparent)]
    Otlp(#[from] otlp::StartError),
    #[error(transparent)]
    Sentry(#[from] error_reporting::StartError),
    #[error("cannot start the thread that writes the log: {0}")]
    LogOutput(#[source] std::io::Error),
}

/// Keep it until the end of `main`: dropping it sends what is still queued (spans, error reports), waiting up to
/// five seconds, and writes the log lines still buffered. Export and reporting go on after a drop, so dropping it
/// early only loses the flush at exit; log lines are then written as they come.
#[must_use = "keep the guard until the end of main so queued telemetry is sent at exit"]
pub struct TelemetryGuard {
    exporter: Option<Exporter>,
    sentry: Option<Arc<sentry::Client>>,
    /// Dropped after the flush above, so that the lines it logs are written too.
    _logs: log_output::LogFlusher,
}

impl TelemetryGuard {
    /// Sends what is queued now and waits up to `timeout` for it. `false` when the time ran out. Blocks the
    /// calling thread.
    pub fn flush(&self, timeout: Duration) -> bool {
        let spans = self.exporter.as_ref().is_none_or(|exporter| exporter.flush(timeout));
        let errors = self.sentry.as_ref().is_none_or(|client| client.flush(Some(timeout)));
        spans && errors
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush(FLUSH_TIMEOUT);
    }
}

/// Installs the global subscriber and, when configured, OTLP export and Sentry, from the process environment.
/// Call once, first thing in `main`, and keep the guard. Fails on bad settings (naming them) or when a
/// subscriber is already installed.
pub fn init(service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    init_from_lookup(service_name, |name| std::env::var(name).ok())
}

/// [`init`] with the environment given as a lookup, for tests.
pub fn init_from_lookup(
    service_name: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<TelemetryGuard, TelemetryError> {
    let settings = TelemetrySettings::from_lookup(service_name, lookup)?;
    // Both HTTP clients use rustls without a built-in provider; the platform's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (log_output, log_flusher) =
        log_output::BatchedOutput::start(std::io::stdout()).map_err(TelemetryError::LogOutput)?;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(log_output)
        .fmt_fields(log_format::SpanMembers)
        .event_format(log_format::JsonLines)
        .with_filter(filter);
    let sentry_layers = settings.sentry.as_ref().map(|_| {
        sentry::integrations::tracing::ErrorLayer::new()
            .with_filter(LevelFilter::ERROR)
            .and_then(sentry::integrations::tracing::BreadcrumbLayer::new().with_filter(LevelFilter::WARN))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(sentry_layers)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    let sentry =
        settings.sentry.as_ref().map(|sentry| error_reporting::start(&settings.service_name, sentry)).transpose()?;
    let exporter = match &settings.otlp {
        Some(otlp) => {
            let exporter = Exporter::start(&settings.service_name, otlp)?;
            // Only one subscriber can be installed, so only one exporter gets here.
            let _ = EXPORTER.set(exporter.clone());
            Some(exporter)
        }
        None => None,
    };
    let otlp_target = settings.otlp.as_ref().map(|otlp| redacted_url(otlp.traces_url.as_str()));
    tracing::info!(
        service = %settings.service_name,
        version = env!("CARGO_PKG_VERSION"),
        otlp = otlp_target.as_deref().unwrap_or("off"),
        sentry = if sentry.is_some() { "on" } else { "off" },
        "starting"
    );
    Ok(TelemetryGuard { exporter, sentry, _logs: log_flusher })
}
