//! Harness for the control-plane suite: a real kube-apiserver (from `e2e/controlplane`), the CRDs and the
//! operator's RBAC installed, and the operator binary run as its ServiceAccount (by impersonation), so a
//! missing permission fails the suite.
//!
//! The suite needs `KUBECONFIG` pointing at a disposable cluster; `scripts/test` starts one.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use rustix::process::{Pid, Signal, kill_process};

pub const SECRET_NAMESPACE: &str = "saaschat-system";
pub const OPERATOR_USER: &str = "system:serviceaccount:saaschat-system:saaschat-operator";
/// A namespace the installed admission policies reserve (as a platform's `protectedNamespaces` would).
pub const PROTECTED_NAMESPACE: &str = "platform-reserved";
const MANAGER: &str = "saaschat-e2e";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kubeconfig() -> anyhow::Result<PathBuf> {
    std::env::var_os("KUBECONFIG").map(PathBuf::from).context(
        "KUBECONFIG is not set: the control-plane suite needs a disposable cluster; run scripts/test, or \
         `export KUBECONFIG=$(e2e/controlplane/controlplane up)`",
    )
}

/// An admin client of the test cluster.
pub async fn admin() -> anyhow::Result<Client> {
    let path = kubeconfig()?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A client of the test cluster acting as `user` in `groups` (impersonated by the admin), to prove what a
/// workload's own RBAC allows.
pub async fn impersonating(user: &str, groups: &[&str]) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig()?)?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(ToString::to_string).collect());
    Ok(Client::try_from(config)?)
}

/// Runs kubectl against the test cluster (as the admin) and returns its output.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig()?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl (scripts/test puts the control plane's kubectl on PATH)")?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default().as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let output = kubectl(args, stdin)?;
    if !output.status.success() {
        bail!("kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Installs the CRDs, the secret namespace, the operator's RBAC and the admission policies (idempotent,
/// server-side apply), each from the file the chart ships.
pub async fn install(client: &Client) -> anyhow::Result<()> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply(MANAGER).force();
    for crd in saaschat_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &params, &Patch::Apply(&crd)).await?;
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established).await??;
    }
    let namespaces = Api::<Namespace>::all(client.clone());
    let namespace =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SECRET_NAMESPACE}});
    namespaces.patch(SECRET_NAMESPACE, &params, &Patch::Apply(&namespace)).await?;
    let rbac = std::fs::read_to_string(repo().join("charts/saaschat/files/operator-rbac.yaml"))?
        .replace("SECRET_NAMESPACE", SECRET_NAMESPACE);
    let bindings = format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: saaschat-operator, namespace: {SECRET_NAMESPACE}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: saaschat-operator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: saaschat-operator}}
subjects: [{{kind: ServiceAccount, name: saaschat-operator, namespace: {SECRET_NAMESPACE}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: saaschat-operator-delegate}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: saaschat-operator-delegate}}
subjects: [{{kind: ServiceAccount, name: saaschat-operator, namespace: {SECRET_NAMESPACE}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: saaschat-operator, namespace: {SECRET_NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: saaschat-operator}}
subjects: [{{kind: ServiceAccount, name: saaschat-operator, namespace: {SECRET_NAMESPACE}}}]
"#
    );
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&format!("{rbac}\n---\n{bindings}")))?;
    let policies = saaschat_crds::admission_policies(SECRET_NAMESPACE, &[PROTECTED_NAMESPACE]);
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&policies))?;
    Ok(())
}

/// A kubeconfig that acts as the operator's ServiceAccount: every request of the operator under test is
/// authorized by the ClusterRole and Role in `charts/saaschat/files/operator-rbac.yaml`.
fn operator_kubeconfig(dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(kubeconfig()?)?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let groups = vec![
        serde_yaml::Value::from("system:serviceaccounts"),
        serde_yaml::Value::from(format!("system:serviceaccounts:{SECRET_NAMESPACE}")),
        serde_yaml::Value::from("system:authenticated"),
    ];
    if let Some(users) = config.get_mut("users").and_then(|u| u.as_sequence_mut()) {
        for user in users {
            if let Some(auth) = user.get_mut("user").and_then(|u| u.as_mapping_mut()) {
                auth.insert("as".into(), OPERATOR_USER.into());
                auth.insert("as-groups".into(), groups.clone().into());
            }
        }
    }
    // Written whole under a temporary name, then renamed: two operators started together (the leader election
    // test) must never read a file the other is still writing.
    let path = dir.join("operator-kubeconfig.yaml");
    static WRITES: AtomicU32 = AtomicU32::new(0);
    let partial = dir.join(format!("operator-kubeconfig.{}.partial", WRITES.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&partial, serde_yaml::to_string(&config)?)?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn operator_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SAASCHAT_OPERATOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    // target/<profile>/deps/<this test> -> target/<profile>/saaschat-operator
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().and_then(Path::parent).context("test binary location")?;
    let binary = profile_dir.join("saaschat-operator");
    if !binary.exists() {
        bail!("{} is missing: build it with `cargo build -p saaschat-operator`", binary.display());
    }
    Ok(binary)
}

/// One operator process, stopped (SIGTERM) when dropped.
pub struct Operator {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator binary as its ServiceAccount, with a short resync so that tests see it.
    pub fn start(name: &str) -> anyhow::Result<Operator> {
        Self::start_with(name, &[("SAASCHAT_RESYNC_SECONDS", "3")])
    }

    /// Starts the operator binary as its ServiceAccount with extra environment (flags' variables).
    pub fn start_with(name: &str, env: &[(&str, &str)]) -> anyhow::Result<Operator> {
        let dir = std::env::temp_dir().join(format!("saaschat-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = operator_kubeconfig(&dir)?;
        let port = free_port()?;
        let log = dir.join(format!("{name}-{port}.log"));
        let child = Command::new(operator_binary()?)
            .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--log-format", "text"])
            .env("KUBECONFIG", kubeconfig)
            .env("SAASCHAT_SECRET_NAMESPACE", SECRET_NAMESPACE)
            .envs(env.iter().copied())
            .env("POD_NAME", name)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("err"))?)
            .spawn()?;
        Ok(Operator { child, port, log })
    }

    /// The operator's `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        http_get(self.port, "/metrics")
    }

    /// Sum of a counter over all its labels.
    pub fn counter(&self, name: &str) -> anyhow::Result<f64> {
        Ok(self
            .metrics()?
            .lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Write requests the operator sent, by its own count.
    pub fn writes(&self) -> anyhow::Result<f64> {
        self.counter("saaschat_operator_api_writes_total")
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process as Kubernetes does (SIGTERM): it finishes its reconciles and gives up the leader Lease,
    /// so that the next operator leads at once. Killed if it has not exited after ten seconds.
    pub fn stop(&mut self) {
        if self.signal(Signal::TERM).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }

    /// Freezes the process (SIGSTOP), as a node that stops scheduling it or a network partition would.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::STOP)
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::CONT)
    }

    /// Whether the process has exited, and with which status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?).context("a process id")?;
        Ok(kill_process(pid, signal)?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the process so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("VmHWM in /proc status")?;
        let kib: u64 = line.split_whitespace().nth(1).context("VmHWM value")?.parse()?;
        Ok(kib * 1024)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.resume();
            self.stop();
        }
    }
}

fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (_, body) = response.split_once("\r\n\r\n").context("HTTP response without a body")?;
    Ok(body.to_string())
}

/// Polls `check` until it returns `Some`, or fails with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if started.elapsed() > timeout {
            match last_error {
                Some(error) => bail!("timed out after {timeout:?} waiting for {what}; last error: {error:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
