//! Load benchmark of the auth service on loopback: `GET /v1/auth/me` and `POST /v1/auth/signin` at fixed
//! rates, driven by vegeta (`scripts/tools/vegeta` builds it), with the production argon2 parameters, against
//! real PostgreSQL and Redis started here. The service runs in this process on its own runtime; the load tool
//! runs on the same machine, so both share its cores, as they would not in production.
//!
//! `cargo bench -p saaschat-auth --bench load` (optionally `-- me=500,1000,2000 signin=10,20 seconds=10`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use saaschat_auth::service::{self, AuthOptions};
use saaschat_platform::config::{Config, Settings, TenantConfig};
use saaschat_platform::http::Shutdown;
use saaschat_testkit::{Postgres, Redis};
use serde_json::{Value, json};

// The integration tests' helpers: the signing key is written exactly as there (and as the operator does).
#[path = "../tests/support/mod.rs"]
mod support;

fn vegeta() -> PathBuf {
    let path = std::env::var_os("SAASCHAT_VEGETA").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/saaschat/tools/vegeta")
    });
    assert!(path.exists(), "vegeta not found at {}: run scripts/tools/vegeta", path.display());
    path
}

fn rates(args: &[String], name: &str, default: &[u32]) -> Vec<u32> {
    args.iter()
        .find_map(|arg| arg.strip_prefix(&format!("{name}=")))
        .map(|list| list.split(',').filter_map(|rate| rate.parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// Runs one fixed-rate attack; returns vegeta's JSON report.
fn attack(targets: &Path, rate: u32, seconds: u32) -> Value {
    let vegeta = vegeta();
    let results = targets.with_extension(format!("{rate}.bin"));
    let status = Command::new(&vegeta)
        .args(["attack", "-format=http", "-keepalive=true", "-max-workers=256"])
        .arg(format!("-rate={rate}/s"))
        .arg(format!("-duration={seconds}s"))
        .arg(format!("-targets={}", targets.display()))
        .arg(format!("-output={}", results.display()))
        .status()
        .expect("run vegeta");
    assert!(status.success(), "vegeta attack failed");
    let report = Command::new(&vegeta)
        .args(["report", "-type=json"])
        .arg(results.display().to_string())
        .output()
        .expect("vegeta report");
    serde_json::from_slice(&report.stdout).expect("a JSON report")
}

fn summary(name: &str, rate: u32, report: &Value) -> String {
    let ms = |field: &str| report["latencies"][field].as_f64().unwrap_or(f64::NAN) / 1e6;
    format!(
        "{name:<8} rate {rate:>5}/s  throughput {:>8.1}/s  success {:>6.2}%  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  codes {}",
        report["throughput"].as_f64().unwrap_or(f64::NAN),
        report["success"].as_f64().unwrap_or(f64::NAN) * 100.0,
        ms("50th"),
        ms("99th"),
        ms("max"),
        report["status_codes"],
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let me_rates = rates(&args, "me", &[500, 1000, 2000, 4000]);
    let sign_in_rates = rates(&args, "signin", &[10, 20, 40]);
    let seconds = rates(&args, "seconds", &[10])[0];
    let _ = rustls::crypto::ring::default_provider().install_default();

    let postgres = Postgres::start();
    let redis = Redis::start();
    let work = tempfile::tempdir().expect("work dir");
    let key_dir = work.path().join("jwt");
    std::fs::create_dir_all(&key_dir).expect("key dir");
    support::write_signing_key(&key_dir, "bench");
    let environment = [
        ("SAASCHAT_TENANT", "acme".to_string()),
        ("SAASCHAT_COMPONENT", "auth".to_string()),
        ("DATABASE_URL", postgres.url()),
        ("REDIS_URL", redis.url()),
    ];
    let settings =
        Settings::from_lookup(|name| environment.iter().find(|(key, _)| *key == name).map(|(_, value)| value.clone()))
            .expect("settings");
    let tenant = json!({
        "tenant": "acme", "displayName": "Acme", "namespace": "tenant-acme", "url": "https://chat.acme.example",
        "defaultModel": "m", "providers": [], "smtp": null, "stripe": null,
        "plan": {"name": "pro", "tokensPerMonth": 1, "requestsPerMinute": 1, "seats": 1000, "allowedModels": []},
        "auth": {"url": "http://auth:8080", "jwksUrl": "http://auth:8080/.well-known/jwks.json",
                 "issuer": "http://auth.tenant-acme.svc:8080", "jwtKeyDir": key_dir},
    });
    let tenant = TenantConfig::parse(&tenant.to_string(), Path::new("tenant.json")).expect("tenant");
    let config = Config::assemble(settings, tenant).expect("config");

    // The service gets its own runtime (two workers, as a pod with two cores would).
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = Shutdown::new();
    // One trusted proxy hop, so each sign-in target can come from its own address and the per-address
    // guessing limit (which a real attack would hit) does not shape the measurement.
    let options = AuthOptions { trusted_proxy_hops: 1, ..AuthOptions::default() };
    let server = runtime.spawn({
        let signal = shutdown.signal();
        async move { service::start(listener, &config, options, signal).await.expect("auth service") }
    });

    let signed_up: Value = runtime.block_on(async {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            let response = client.get(format!("{base}/readyz")).send().await;
            if response.is_ok_and(|response| response.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let response = client
            .post(format!("{base}/v1/auth/signup"))
            .json(&json!({"email": "bench@example.com", "password": support::PASSWORD}))
            .send()
            .await
            .expect("sign up");
        response.json().await.expect("tokens")
    });
    let token = signed_up["accessToken"].as_str().expect("the service is ready and signs up");

    let me_targets = work.path().join("me.targets");
    std::fs::write(&me_targets, format!("GET {base}/v1/auth/me\nAuthorization: Bearer {token}\n\n")).expect("targets");
    let body = work.path().join("signin.json");
    std::fs::write(&body, json!({"email": "bench@example.com", "password": support::PASSWORD}).to_string())
        .expect("body");
    let sign_in_targets = work.path().join("signin.targets");
    let targets: String = (0..2000)
        .map(|n| {
            format!(
                "POST {base}/v1/auth/signin\nContent-Type: application/json\nX-Forwarded-For: 10.{}.{}.{}\n@{}\n\n",
                n / 65536 % 256,
                n / 256 % 256,
                n % 256,
                body.display()
            )
        })
        .collect();
    std::fs::write(&sign_in_targets, targets).expect("targets");

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("auth load benchmark: {cores} cores, {seconds} s per rate, service and vegeta on the same machine");
    for rate in me_rates {
        println!("{}", summary("me", rate, &attack(&me_targets, rate, seconds)));
    }
    for rate in sign_in_rates {
        println!("{}", summary("signin", rate, &attack(&sign_in_targets, rate, seconds)));
    }
    shutdown.trigger();
    let _ = runtime.block_on(server);
}
