//! The SMTP transport: lettre over tokio with rustls (Mozilla's roots, so no system store is needed in the
//! container, plus the CAs of `SAASCHAT_EMAIL_SMTP_CA_FILE`), STARTTLS required or TLS from the first byte as the
//! tenant asks, a connection pool as large as the worker's concurrency, and the tenant's credentials.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{self, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use saaschat_platform::config::SmtpSecurity;

use super::decide::SendFailure;
use crate::settings::SmtpSettings;

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Builds the transport; nothing is connected until the first send.
pub fn transport(settings: &SmtpSettings, timeout: Duration, connections: u32) -> Result<Transport, smtp::Error> {
    let tls_parameters = || -> Result<TlsParameters, smtp::Error> {
        let mut builder = TlsParameters::builder(settings.host.clone());
        if let Some(pem) = &settings.extra_roots_pem {
            builder = builder.add_root_certificate(Certificate::from_pem(pem)?);
        }
        builder.build_rustls()
    };
    let tls = match settings.security {
        SmtpSecurity::StartTls => Tls::Required(tls_parameters()?),
        SmtpSecurity::Tls => Tls::Wrapper(tls_parameters()?),
        SmtpSecurity::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
        .port(settings.port)
        .tls(tls)
        .timeout(Some(timeout))
        .pool_config(PoolConfig::new().max_size(connections.max(1)).idle_timeout(Duration::from_secs(30)));
    if let Some(credentials) = &settings.credentials {
        builder =
            builder.credentials(Credentials::new(credentials.username.clone(), credentials.password.expose().clone()));
    }
    Ok(builder.build())
}

/// Sends one message; `Ok` means the server accepted it (`250` after `DATA`).
pub async fn send(transport: &Transport, message: Message) -> Result<(), SendFailure> {
    transport.send(message).await.map(drop).map_err(|error| classify(&error))
}

fn classify(error: &smtp::Error) -> SendFailure {
    match error.status() {
        Some(code) => SendFailure::Rejected { code: u16::from(code), detail: error.to_string() },
        None => SendFailure::Unavailable { detail: error.to_string() },
    }
}
