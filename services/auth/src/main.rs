//! `saaschat-auth`: configuration from the environment and the mounted tenant file (see
//! `saaschat_platform::config`), plus `SAASCHAT_TRUSTED_PROXY_HOPS`; serves until SIGTERM.

use std::process::ExitCode;

use saaschat_auth::service::{self, AuthOptions};
use saaschat_platform::config::Config;
use saaschat_platform::http::Shutdown;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    // Kept until `main` returns: dropping it flushes the traces and error reports still queued.
    let _telemetry = match saaschat_platform::telemetry::init("saaschat-auth") {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("cannot start logging: {error}");
            return ExitCode::FAILURE;
        }
    };
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "auth service failed");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load()?;
    let options = AuthOptions::from_env()?;
    let listener = TcpListener::bind(config.settings.listen_addr).await?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signals();
    let drained = service::start(listener, &config, options, shutdown.signal()).await?;
    tracing::info!(?drained, "auth service stopped");
    Ok(())
}
