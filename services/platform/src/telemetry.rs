//! Logs: JSON lines on stdout, with the fields of the current request span (trace id, span id, route), filtered
//! by `RUST_LOG` (default `info`). Traces are propagated by [`crate::http::trace`]; there is no OTLP export yet.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, first thing in `main`. Returns an error if one is installed.
pub fn init(service_name: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_target(true)
        .try_init()?;
    tracing::info!(service = service_name, version = env!("CARGO_PKG_VERSION"), "starting");
    Ok(())
}
