//! Stripe's official API mock for the billing service's tests: stripe-mock (built from the Go module proxy by
//! `scripts/tools/stripe-mock` into `~/.cache/saaschat/tools/stripe-mock-<version>/`, or wherever
//! `SAASCHAT_STRIPE_MOCK` points), serving HTTP on a free local port. It validates every request against Stripe's
//! OpenAPI specification and answers with fixtures; it keeps no state between requests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{free_port, wait_for_port};

/// The version `scripts/tools/stripe-mock` builds.
pub const STRIPE_MOCK_VERSION: &str = "v0.203.0";

fn stripe_mock_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SAASCHAT_STRIPE_MOCK") {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("SAASCHAT_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/saaschat/tools"));
    tools.join(format!("stripe-mock-{STRIPE_MOCK_VERSION}")).join("stripe-mock")
}

pub struct StripeMock {
    pub port: u16,
    child: Option<Child>,
}

impl StripeMock {
    pub fn start() -> StripeMock {
        let binary = stripe_mock_binary();
        assert!(
            binary.exists(),
            "stripe-mock is not at {} (run scripts/tools/stripe-mock, or set SAASCHAT_STRIPE_MOCK)",
            binary.display()
        );
        let port = free_port();
        // HTTPS cannot be switched off; an empty port lets the system pick one, so parallel tests never collide.
        // `-beta` serves Stripe's SDK spec (the one the SDKs, async-stripe included, are generated from) rather
        // than the trimmed public one, which leaves out fields the SDK types require, such as `plan` on
        // subscription items.
        let mut child = Command::new(&binary)
            .args(["-beta", "-http-addr", &format!("127.0.0.1:{port}"), "-https-addr", "127.0.0.1:"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start stripe-mock");
        wait_for_port(port, &mut child, "stripe-mock");
        StripeMock { port, child: Some(child) }
    }

    /// The API base to use instead of `https://api.stripe.com`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for StripeMock {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::stop(&mut child, "TERM");
        }
    }
}
