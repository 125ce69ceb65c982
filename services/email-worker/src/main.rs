//! `saaschat-email-worker`: reads the environment and the tenant file the operator mounts, then runs until
//! SIGTERM (see the library's documentation).

use std::process::ExitCode;

use saaschat_email_worker::settings::WorkerSettings;
use saaschat_platform::config::{Config, ConfigError};
use saaschat_platform::http::Shutdown;

#[tokio::main]
async fn main() -> ExitCode {
    // Kept until `main` returns: dropping it flushes the traces and error reports still queued.
    let _telemetry = match saaschat_platform::telemetry::init("saaschat-email-worker") {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("cannot set up logging: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::load() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let settings = match WorkerSettings::from_env() {
        Ok(settings) => settings,
        Err(errors) => {
            tracing::error!(error = %ConfigError::Settings(errors), "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signals();
    match saaschat_email_worker::run(config, settings, shutdown.signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopped");
            ExitCode::FAILURE
        }
    }
}
