//! STARTTLS and TLS from the first byte against mailpit with a certificate from a test CA: the worker encrypts as
//! the tenant asks, checks the server's certificate, and trusts a private CA only when told to.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use saaschat_email_worker::settings::WorkerSettings;
use saaschat_testkit::Redis;
use saaschat_testkit::smtp::Mailpit;
use saaschat_testkit::tls::LocalhostCertificate;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(60);

struct Certificates {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a certificate for `localhost` signed by it, as PEM files in `dir`.
fn certificates(dir: &Path) -> Certificates {
    let generated = LocalhostCertificate::generate();
    let files = Certificates { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server-key.pem") };
    std::fs::write(&files.ca, generated.ca.pem()).expect("write CA");
    std::fs::write(&files.cert, generated.server.pem()).expect("write certificate");
    std::fs::write(&files.key, generated.server_key.serialize_pem()).expect("write key");
    files
}

fn tls_mailpit(certificates: &Certificates, requirement: &str) -> Mailpit {
    let cert = certificates.cert.to_str().expect("utf8");
    let key = certificates.key.to_str().expect("utf8");
    Mailpit::start_with_args(&["--smtp-tls-cert", cert, "--smtp-tls-key", key, requirement])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required_and_the_certificate_is_checked() {
    let dir = tempfile::tempdir().expect("dir");
    let certificates = certificates(dir.path());
    let redis_server = Redis::start();
    let sink = Sink::on(tls_mailpit(&certificates, "--smtp-require-starttls"));
    let tenant = tenant_file_with(dir.path(), "localhost", sink.mailpit.smtp_port, "StartTls");
    let mut redis = redis(&redis_server.url()).await;

    // Without the private CA the certificate is not trusted: nothing is sent in the clear instead.
    let untrusting = InProcess::start(config(&redis_server.url(), &tenant), quick_settings()).await;
    push(&mut redis, &verify_email(1)).await;
    wait_until("a dead letter", TIMEOUT, async || dead_letters(&mut redis).await.len() == 1).await;
    let (_, letter) = &dead_letters(&mut redis).await[0];
    assert_eq!(letter["dead_kind"], "exhausted");
    assert!(letter["dead_reason"].contains("certificate"), "{}", letter["dead_reason"]);
    untrusting.stop().await;
    assert_eq!(sink.count().await, 0);

    let settings = WorkerSettings { smtp_ca_file: Some(certificates.ca.clone()), ..quick_settings() };
    let trusting = InProcess::start(config(&redis_server.url(), &tenant), settings).await;
    push(&mut redis, &verify_email(2)).await;
    let messages = sink.wait_for(1, TIMEOUT).await;
    assert_eq!(messages[0].to[0].address, "user2@example.com");
    trusting.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_from_the_first_byte_is_used_when_the_tenant_asks_for_it() {
    let dir = tempfile::tempdir().expect("dir");
    let certificates = certificates(dir.path());
    let redis_server = Redis::start();
    let sink = Sink::on(tls_mailpit(&certificates, "--smtp-require-tls"));
    let tenant = tenant_file_with(dir.path(), "localhost", sink.mailpit.smtp_port, "Tls");
    let mut redis = redis(&redis_server.url()).await;
    let settings = WorkerSettings { smtp_ca_file: Some(certificates.ca.clone()), ..quick_settings() };
    let worker = InProcess::start(config(&redis_server.url(), &tenant), settings).await;
    push(&mut redis, &verify_email(1)).await;
    sink.wait_for(1, TIMEOUT).await;
    worker.stop().await;
}
