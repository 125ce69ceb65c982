//! An SMTP sink for the email worker's tests: mailpit (built from the Go module proxy by `scripts/tools/mailpit`
//! into `~/.cache/saaschat/tools/`, or wherever `SAASCHAT_MAILPIT` points), on free SMTP and HTTP ports, with its
//! database in a temporary directory. Tests read what was delivered over its HTTP API (`/api/v1/messages`) and make
//! it refuse mail with its chaos triggers (`PUT /api/v1/chaos`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::{free_port, wait_for_port};

fn mailpit_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SAASCHAT_MAILPIT") {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("SAASCHAT_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/saaschat/tools"));
    tools.join("mailpit")
}

pub struct Mailpit {
    pub smtp_port: u16,
    pub http_port: u16,
    child: Option<Child>,
    _dir: TempDir,
}

impl Mailpit {
    /// Starts mailpit without TLS, accepting any SMTP login (over plain text too) and any number of messages, with
    /// the chaos API enabled.
    pub fn start() -> Mailpit {
        Mailpit::start_with_args(&["--smtp-auth-allow-insecure"])
    }

    /// Mailpit accepting any SMTP login and any number of messages, with the chaos API enabled, and the given
    /// options, such as `--smtp-tls-cert`, `--smtp-tls-key` and `--smtp-require-starttls` or `--smtp-require-tls`.
    pub fn start_with_args(extra: &[&str]) -> Mailpit {
        let binary = mailpit_binary();
        assert!(
            binary.exists(),
            "mailpit is not at {} (run scripts/tools/mailpit, or set SAASCHAT_MAILPIT)",
            binary.display()
        );
        let dir = tempfile::Builder::new().prefix("saaschat-mailpit-").tempdir().expect("temp dir");
        let (smtp_port, http_port) = (free_port(), free_port());
        let mut child = Command::new(&binary)
            .args(["--smtp", &format!("127.0.0.1:{smtp_port}"), "--listen", &format!("127.0.0.1:{http_port}")])
            .args(["--database", dir.path().join("mailpit.db").to_str().expect("utf8")])
            .args(["--max", "0", "--enable-chaos", "--smtp-auth-accept-any"])
            .args(["--smtp-disable-rdns", "--disable-version-check", "--quiet"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mailpit");
        wait_for_port(smtp_port, &mut child, "mailpit (SMTP)");
        wait_for_port(http_port, &mut child, "mailpit (HTTP)");
        Mailpit { smtp_port, http_port, child: Some(child), _dir: dir }
    }

    /// The base of the HTTP API, `http://127.0.0.1:<port>/api/v1`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1", self.http_port)
    }
}

impl Drop for Mailpit {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::stop(&mut child, "TERM");
        }
    }
}
