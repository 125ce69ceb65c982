//! Real servers for the services' integration tests, each in a temporary directory on a free port, stopped when
//! dropped. PostgreSQL comes from Debian's `/usr/lib/postgresql/<version>/bin` (or `PATH`); it refuses to run as root,
//! so as root the server runs as the `postgres` user.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod process;
pub mod smtp;
pub mod stripe_mock;
pub mod tls;

const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

/// Waits until `port` accepts connections; panics if `child` exits first or takes longer than 30 s.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during start-up with {status}");
        }
        assert!(started.elapsed() < START_TIMEOUT, "{what} did not start within {START_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks a server to stop with `signal` (its own graceful shutdown: a master stops its workers, a database
/// flushes), and kills it if it has not exited within ten seconds.
pub fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill").args(["-s", signal, &child.id().to_string()]).status();
    wait_for_exit(child, Duration::from_secs(10));
}

fn wait_for_exit(child: &mut Child, timeout: Duration) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The directory of PostgreSQL's server binaries.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(Result::ok).map(|entry| entry.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|bin| bin.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(""))
}

/// The uid and gid to run PostgreSQL as: ours, or the `postgres` user's when we are root.
fn postgres_identity() -> Option<(u32, u32)> {
    let running_as_root = std::fs::metadata("/proc/self").map(|meta| meta.uid() == 0).unwrap_or(false);
    if !running_as_root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd.lines().find(|line| line.starts_with("postgres:")).expect("a postgres user to run PostgreSQL as");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().expect("uid"), fields[3].parse().expect("gid")))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            chown_tree(&entry.expect("entry").path(), uid, gid);
        }
    }
}

fn command_as(program: PathBuf, identity: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = identity {
        command.uid(uid).gid(gid);
    }
    command
}

pub struct Postgres {
    pub port: u16,
    child: Option<Child>,
    _dir: TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("saaschat-pg-").tempdir().expect("temp dir");
        let identity = postgres_identity();
        if let Some((uid, gid)) = identity {
            chown_tree(dir.path(), uid, gid);
        }
        let bin = postgres_bin();
        let data = dir.path().join("data");
        let status = command_as(bin.join("initdb"), identity)
            .args(["-D", data.to_str().expect("utf8"), "-U", "saaschat", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log file");
        if let Some((uid, gid)) = identity {
            chown_tree(&dir.path().join("postgres.log"), uid, gid);
        }
        let mut child = command_as(bin.join("postgres"), identity)
            .args(["-D", data.to_str().expect("utf8"), "-p", &port.to_string()])
            .args(["-k", dir.path().to_str().expect("utf8"), "-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        wait_for_port(port, &mut child, "postgres");
        Postgres { port, child: Some(child), _dir: dir }
    }

    /// The URL of the `postgres` database as the superuser `saaschat` (no password: trust auth).
    pub fn url(&self) -> String {
        format!("postgres://saaschat@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::stop(&mut child, "QUIT");
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Redis {
    pub port: u16,
    persistent: bool,
    child: Option<Child>,
    dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(false)
    }

    /// A Redis that writes every change to its append-only file before answering (`appendfsync always`), so a
    /// [`restart`](Redis::restart) loses nothing it acknowledged.
    pub fn start_persistent() -> Redis {
        Redis::start_with(true)
    }

    fn start_with(persistent: bool) -> Redis {
        let dir = tempfile::Builder::new().prefix("saaschat-redis-").tempdir().expect("temp dir");
        let port = free_port();
        let child = spawn_redis(port, dir.path(), persistent);
        Redis { port, persistent, child: Some(child), dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL, as a crash would) and starts it again on the same port and directory. Only a
    /// [persistent](Redis::start_persistent) server keeps its data.
    pub fn restart(&mut self) {
        self.stop("KILL");
        self.child = Some(spawn_redis(self.port, self.dir.path(), self.persistent));
    }

    fn stop(&mut self, signal_name: &str) {
        if let Some(mut child) = self.child.take() {
            crate::stop(&mut child, signal_name);
        }
    }
}

fn spawn_redis(port: u16, dir: &Path, persistent: bool) -> Child {
    let appendonly: &[&str] =
        if persistent { &["--appendonly", "yes", "--appendfsync", "always"] } else { &["--appendonly", "no"] };
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(appendonly)
        .args(["--unixsocket", dir.join("redis.sock").to_str().expect("utf8")])
        .args(["--dir", dir.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start redis-server (apt-get install redis-server)");
    wait_for_port(port, &mut child, "redis-server");
    child
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop("TERM");
    }
}
