//! The saaschat operator binary: `run` (the controllers) and `render` (objects for a tenant file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use futures::FutureExt;
use kube::Config;
use kube::runtime::events::{Recorder, Reporter};
use saaschat_operator::backoff::Backoff;
use saaschat_operator::http::{Health, router};
use saaschat_operator::leader::{Leadership, WriteFence};
use saaschat_operator::metrics::Metrics;
use saaschat_operator::settings::Settings;
use saaschat_operator::{kube_client, provider, render, tenant};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "saaschat-operator", version, about = "Reconciles saaschat tenants")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig or service account.
    Run(RunArgs),
    /// Print every object the operator would create for the ChatTenant in the files (with its AIProviders,
    /// and optionally its Subscription and source Secrets), without a cluster.
    Render {
        /// YAML files holding one ChatTenant and the AIProviders it uses.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    settings: Settings,
    /// Address of the `/metrics`, `/healthz` and `/readyz` server.
    #[arg(long, env = "SAASCHAT_LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Tenants reconciled at the same time.
    #[arg(long, env = "SAASCHAT_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Seconds between looks at an unchanged tenant (repairs drift of objects that are not watched).
    #[arg(long, env = "SAASCHAT_RESYNC_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    resync_seconds: u64,
    /// Elect a leader through a Lease so that several replicas can run safely.
    #[arg(long, env = "SAASCHAT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease, in the secret namespace.
    #[arg(long, env = "SAASCHAT_LEASE_NAME", default_value = "saaschat-operator")]
    lease_name: String,
    /// Log format.
    #[arg(long, env = "SAASCHAT_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Render { files, settings } => match render::render(&files, &settings) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("saaschat-operator render: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            init_logging(&args.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("saaschat-operator: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.init();
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c().map(|_| ());
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return ctrl_c.await,
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("saaschat-operator-{}", std::process::id()));
    let mut config = Config::infer().await.context("reading the Kubernetes client configuration")?;
    // The replica's name in the API server's audit log.
    let agent = format!("saaschat-operator/{} ({identity})", env!("CARGO_PKG_VERSION"));
    let agent = http::HeaderValue::from_str(&agent).context("POD_NAME must be a valid header value")?;
    config.headers.push((http::header::USER_AGENT, agent));
    // Every write of the controllers passes the fence, open only while this replica surely leads.
    let fence = if args.leader_election { WriteFence::closed() } else { WriteFence::unfenced() };
    let client = kube_client::client(config.clone(), fence.clone()).context("connecting to the Kubernetes API")?;
    // Fails early with a clear error if the API server cannot be reached, and opens the connection that the
    // watches started next then share (HTTP/2 is known only once a connection is up).
    let version = client.apiserver_version().await.context("reaching the Kubernetes API server")?;
    tracing::info!(version = %version.git_version, "connected to the Kubernetes API server");
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let health = Health {
        metrics: metrics.clone(),
        leading: Arc::new(AtomicBool::new(false)),
        participating: Arc::new(OnceLock::new()),
        tenants: Arc::new(OnceLock::new()),
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let app = router(health.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "health server stopped");
        }
    });

    // Stop on a signal, or when leadership is lost (the process then exits so it can stand again as a candidate).
    let (stop, stopped) = watch::channel(false);
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        termination().await;
        tracing::info!("termination requested, finishing running reconciles");
        let _ = stop_on_signal.send(true);
    });
    let lost_leadership = Arc::new(AtomicBool::new(false));
    let mut leadership = None;
    if args.leader_election {
        // The election's own client does not pass the fence: it is what opens it.
        let election_client =
            kube_client::client(config, WriteFence::unfenced()).context("connecting to the Kubernetes API")?;
        let mut election = Leadership::start(
            election_client,
            &args.settings.secret_namespace,
            &args.lease_name,
            &identity,
            fence.clone(),
        );
        health.participating.set(election.participating.clone()).ok();
        tracing::info!(%identity, "waiting for leadership");
        let mut waiting = stopped.clone();
        tokio::select! {
            acquired = election.acquired() => acquired.context("leader election")?,
            _ = waiting.wait_for(|stop| *stop) => {
                election.release().await;
                return Ok(());
            }
        }
        tracing::info!(%identity, "became leader");
        let (lost, stop_on_loss) = (lost_leadership.clone(), stop.clone());
        let loss = election.lost();
        tokio::spawn(async move {
            let reason = loss.await;
            lost.store(true, Ordering::Relaxed);
            tracing::warn!(?reason, "lost leadership: no more writes, stopping");
            let _ = stop_on_loss.send(true);
        });
        leadership = Some(election);
    }
    health.leading.store(true, Ordering::Relaxed);

    let shutdown = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let provider_context = Arc::new(provider::Context {
        client: client.clone(),
        secret_namespace: args.settings.secret_namespace.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter { controller: "saaschat-operator".into(), instance: std::env::var("POD_NAME").ok() },
        ),
        metrics: metrics.clone(),
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        resync: Duration::from_secs(args.resync_seconds),
    });
    tokio::join!(
        provider::run(provider_context, shutdown(stopped.clone())),
        tenant::run(
            client,
            args.settings,
            metrics,
            args.concurrency,
            Duration::from_secs(args.resync_seconds),
            health.tenants.clone(),
            shutdown(stopped.clone()),
        ),
    );
    if let Some(election) = leadership {
        // The controllers have stopped writing: hand the Lease to a standby at once.
        election.release().await;
    }
    if lost_leadership.load(Ordering::Relaxed) {
        anyhow::bail!("lost the leader lease");
    }
    Ok(())
}
