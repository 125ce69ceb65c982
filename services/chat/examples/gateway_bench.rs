//! The gateway benchmark, after the method of the published gateway benchmarks: a zero-latency mock upstream
//! on loopback, a fixed-rate load tool (vegeta), non-streaming and streaming `/v1/chat/completions` with usage
//! accounting on, and overhead = latency through the service minus latency straight to the mock.
//!
//! ```sh
//! scripts/tools/vegeta
//! cargo build --release -p saaschat-chat --bin saaschat-chat --example gateway_bench
//! target/release/examples/gateway_bench            # BENCH_SECONDS=10 BENCH_RATES=1000,5000 by default
//! ```
//!
//! It starts PostgreSQL and Redis (testkit), the mock upstream and a stand-in auth service (JWKS and API-key
//! verification) in this process, and the release `saaschat-chat` binary beside this example, then prints a
//! Markdown table: latencies and the service's own CPU time per request at each of `BENCH_RATES` (and, when nginx
//! is installed, the overhead of nginx passing the same requests through: the floor of any proxy), then the
//! highest rate of `BENCH_RAMP` held (`BENCH_RAMP=none` skips the ramp). `BENCH_MODES=streaming` (or
//! `non-streaming`) runs one mode only. The service logs as in production (`RUST_LOG=info`, a line per
//! request) to a file, as a container runtime would keep it; `BENCH_CHAT_LOG` sets another filter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use saaschat_testkit::process::cpu_seconds;
use saaschat_testkit::{Postgres, Redis, free_port, wait_for_port};
use serde_json::{Value, json};

const API_KEY: &str = "sk-saaschat-bench-0000000000000000";
const MODEL: &str = "gpt-4o-mini";

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}"#;

fn stream_body() -> String {
    let mut body = String::new();
    let chunk = |delta: Value, finish: Value| {
        json!({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":MODEL,
               "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}],"usage":null})
    };
    body.push_str(&format!("data: {}\n\n", chunk(json!({"role":"assistant","content":""}), Value::Null)));
    for word in ["Hello!", " How", " can", " I", " help", " you", " today?"] {
        body.push_str(&format!("data: {}\n\n", chunk(json!({"content": word}), Value::Null)));
    }
    body.push_str(&format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
    body.push_str(&format!(
        "data: {}\n\n",
        json!({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":MODEL,"choices":[],
               "usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}})
    ));
    body.push_str("data: [DONE]\n\n");
    body
}

/// The zero-latency upstream and the auth stand-in, on a runtime of their own.
fn start_stubs(port: u16) {
    let stream = Bytes::from(stream_body());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let app = Router::new()
                .route(
                    "/v1/chat/completions",
                    post(move |body: Bytes| {
                        let stream = stream.clone();
                        async move {
                            let marker = b"\"stream\":true";
                            let streaming = body.windows(marker.len()).any(|window| window == marker);
                            if streaming {
                                Response::builder().header(CONTENT_TYPE, "text/event-stream").body(Body::from(stream)).expect("response")
                            } else {
                                ([(CONTENT_TYPE, "application/json")], COMPLETION).into_response()
                            }
                        }
                    }),
                )
                .route("/.well-known/jwks.json", get(|| async { axum::Json(json!({ "keys": [] })) }))
                .route(
                    "/internal/v1/api-keys/verify",
                    post(|| async {
                        axum::Json(json!({ "userId": "bench", "tenant": "bench", "role": "member", "keyId": "k", "scopes": ["chat"] }))
                    }),
                );
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
            axum::serve(listener, app).await.expect("serve");
        });
    });
}

fn tools_dir() -> PathBuf {
    std::env::var_os("SAASCHAT_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/saaschat/tools"))
}

fn start_chat(dir: &Path, postgres: &Postgres, redis: &Redis, stubs: u16, port: u16) -> Child {
    let key_file = dir.join("openai.key");
    std::fs::write(&key_file, "sk-upstream-bench").expect("key");
    let auth = format!("http://127.0.0.1:{stubs}");
    let tenant = json!({
        "tenant": "bench", "displayName": "Bench", "namespace": "tenant-bench", "url": "http://chat", "defaultModel": MODEL,
        "plan": { "name": "bench", "tokensPerMonth": 1_000_000_000_000i64, "requestsPerMinute": 100_000_000, "seats": 1, "allowedModels": [] },
        "providers": [{
            "name": "openai", "type": "openai", "baseUrl": format!("http://127.0.0.1:{stubs}/v1"), "apiKeyFile": key_file,
            "limits": { "requestsPerMinute": 100_000_000, "maxConcurrentRequests": 10000, "timeoutSeconds": 30 },
            "models": [{ "name": MODEL, "inputPricePerMillion": "0.15", "outputPricePerMillion": "0.60" }],
        }],
        "auth": { "url": auth, "jwksUrl": format!("{auth}/.well-known/jwks.json"), "issuer": "http://chat", "jwtKeyDir": "/none" },
    });
    let config = dir.join("tenant.json");
    std::fs::write(&config, tenant.to_string()).expect("config");
    let binary = std::env::current_exe()
        .expect("exe")
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("saaschat-chat");
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release -p saaschat-chat --bin saaschat-chat",
        binary.display()
    );
    Command::new(binary)
        .env("SAASCHAT_TENANT", "bench")
        .env("SAASCHAT_COMPONENT", "chat")
        .env("SAASCHAT_CONFIG_FILE", &config)
        .env("SAASCHAT_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", postgres.url())
        .env("REDIS_URL", redis.url())
        .env("RUST_LOG", std::env::var("BENCH_CHAT_LOG").unwrap_or_else(|_| "info".into()))
        .stdout(std::fs::File::create(dir.join("chat.log")).expect("log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start saaschat-chat")
}

/// nginx passing requests through to the mock, when it is installed (`apt-get install nginx-light`): the cost
/// of one proxy hop on this machine and nothing else, the floor under the gateway's overhead. Configured as a
/// reverse proxy in production would be: upstream keep-alive, no response buffering (streams), and a buffered
/// access log, as the gateway keeps one.
fn start_nginx(dir: &Path, upstream: u16, port: u16) -> Option<Nginx> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().map(PathBuf::from).find(|path| path.exists())?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).expect("nginx directory");
    let config = format!(
        r#"daemon off;
worker_processes 2;
error_log logs/error.log warn;
pid nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log logs/access.log combined buffer=64k flush=100ms;
    upstream mock {{ server 127.0.0.1:{upstream}; keepalive 1024; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#
    );
    std::fs::write(prefix.join("nginx.conf"), config).expect("nginx.conf");
    let mut child = Command::new(binary)
        .arg("-p")
        .arg(&prefix)
        .args(["-c", "nginx.conf", "-e", "logs/error.log"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start nginx");
    wait_for_port(port, &mut child, "nginx");
    Some(Nginx(child))
}

/// Stops nginx with `SIGTERM`, which its master passes on to the workers; killing the master would orphan them.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        saaschat_testkit::stop(&mut self.0, "TERM");
    }
}

fn wait_ready(port: u16) {
    for _ in 0..300 {
        let ready = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/readyz")])
            .stdout(Stdio::null())
            .status();
        if ready.is_ok_and(|status| status.success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the chat service did not become ready");
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    success: f64,
    throughput: f64,
}

fn attack(dir: &Path, url: &str, stream: bool, rate: u32, seconds: u32) -> Figures {
    let body = json!({
        "model": MODEL, "stream": stream, "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
        "messages": [{ "role": "user", "content": "Hello, who are you?" }], "max_tokens": 64,
    });
    let target = json!({
        "method": "POST", "url": url, "body": STANDARD.encode(body.to_string()),
        "header": { "Authorization": [format!("Bearer {API_KEY}")], "Content-Type": ["application/json"] },
    });
    let targets = dir.join("targets.json");
    std::fs::write(&targets, format!("{target}\n")).expect("targets");
    let vegeta = tools_dir().join("vegeta");
    assert!(vegeta.exists(), "{} is missing: run scripts/tools/vegeta", vegeta.display());
    // Results are piped straight into the report: at thousands of requests a second they are large.
    // At most 1,000 connections, the connection limit of the official `openai` Python client: without a
    // limit vegeta opens a connection per request waiting once the target slows down, and near saturation
    // the run turns into tens of thousands of connection setups instead of a measure of the target.
    let mut attacker = Command::new(&vegeta)
        .args(["attack", "-format=json", &format!("-targets={}", targets.display()), &format!("-rate={rate}/s")])
        .args([&format!("-duration={seconds}s"), "-timeout=10s", "-keepalive=true", "-max-connections=1000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run vegeta attack");
    let results = attacker.stdout.take().expect("attack output");
    let report =
        Command::new(&vegeta).args(["report", "-type=json"]).stdin(results).output().expect("run vegeta report");
    assert!(attacker.wait().expect("attack").success(), "vegeta attack failed");
    let report: Value = serde_json::from_slice(&report.stdout).expect("report json");
    if report["success"].as_f64().unwrap_or(0.0) < 1.0 {
        eprintln!("{url} at {rate}/s: status codes {}, errors {}", report["status_codes"], report["errors"]);
    }
    let ms = |name: &str| report["latencies"][name].as_f64().unwrap_or(f64::NAN) / 1e6;
    Figures {
        p50_ms: ms("50th"),
        p99_ms: ms("99th"),
        success: report["success"].as_f64().unwrap_or(0.0),
        throughput: report["throughput"].as_f64().unwrap_or(0.0),
    }
}

/// The highest rate of `rates` held for the duration with every request answered and throughput within 2%
/// of the offered rate.
fn highest_rate(
    dir: &Path,
    url: &str,
    stream: bool,
    rates: &[u32],
    seconds: u32,
    chat: u32,
) -> (u32, Vec<(u32, Figures)>) {
    let mut held = 0;
    let mut tried = Vec::new();
    for &rate in rates {
        let figures = attack(dir, url, stream, rate, seconds);
        wait_until_idle(chat);
        tried.push((rate, figures));
        if figures.success < 1.0 || figures.throughput < f64::from(rate) * 0.98 {
            break;
        }
        held = rate;
    }
    (held, tried)
}

/// Waits until the service and this process (the mock) have been idle for half a second, then two more
/// seconds. After an overloaded run the service still works off the requests it had accepted, and a run
/// started before it is done measures that backlog instead of its own rate.
fn wait_until_idle(chat: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let busy = || cpu_seconds(chat) + cpu_seconds(std::process::id());
    let mut before = busy();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = busy();
        if now - before <= 0.02 {
            break;
        }
        before = now;
    }
    std::thread::sleep(Duration::from_secs(2));
}

fn main() {
    let seconds: u32 = std::env::var("BENCH_SECONDS").ok().and_then(|value| value.parse().ok()).unwrap_or(10);
    let rates: Vec<u32> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|rate| rate.trim().parse().ok())
        .collect();
    let ramp: Vec<u32> = std::env::var("BENCH_RAMP")
        .unwrap_or_else(|_| "2000,3000,4000,5000,6000,7000,8000,10000,12000,15000".into())
        .split(',')
        .filter_map(|rate| rate.trim().parse().ok())
        .collect();
    let modes: Vec<bool> = std::env::var("BENCH_MODES")
        .unwrap_or_else(|_| "non-streaming,streaming".into())
        .split(',')
        .filter_map(|mode| match mode.trim() {
            "non-streaming" => Some(false),
            "streaming" => Some(true),
            _ => None,
        })
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    let postgres = Postgres::start();
    let redis = Redis::start();
    let stubs = free_port();
    start_stubs(stubs);
    let port = free_port();
    let chat = ChildGuard(start_chat(dir.path(), &postgres, &redis, stubs, port));
    let chat_pid = chat.0.id();
    let nginx_port = free_port();
    let nginx = start_nginx(dir.path(), stubs, nginx_port);
    wait_ready(port);
    let direct = format!("http://127.0.0.1:{stubs}/v1/chat/completions");
    let gateway = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let proxied = nginx.as_ref().map(|_| format!("http://127.0.0.1:{nginx_port}/v1/chat/completions"));
    for (name, url) in
        [("mock", &direct), ("gateway", &gateway)].into_iter().chain(proxied.iter().map(|url| ("nginx", url)))
    {
        let body = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "Hello" }] }).to_string();
        let answer = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                "-H",
                &format!("Authorization: Bearer {API_KEY}"),
                "-H",
                "Content-Type: application/json",
            ])
            .args(["-d", &body, url.as_str()])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&answer.stdout).to_string();
        assert!(text.ends_with("\n200"), "the {name} does not answer: {text}");
    }
    // Warm the connection pools, the key cache and the monthly counter.
    for url in std::iter::once(&gateway).chain(&proxied) {
        attack(dir.path(), url, false, 200, 2);
        attack(dir.path(), url, true, 200, 2);
    }
    wait_until_idle(chat_pid);

    let mut out = std::io::stdout().lock();
    writeln!(out, "| mode | rate (req/s) | direct p50 | direct p99 | gateway p50 | gateway p99 | overhead p50 | overhead p99 | gateway success | service CPU per request | nginx overhead p50 | nginx overhead p99 |").ok();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|").ok();
    for &stream in &modes {
        for &rate in &rates {
            let direct_figures = attack(dir.path(), &direct, stream, rate, seconds);
            wait_until_idle(chat_pid);
            let nginx_overhead = proxied.as_ref().map_or_else(
                || "no nginx | no nginx".to_owned(),
                |url| {
                    let figures = attack(dir.path(), url, stream, rate, seconds);
                    wait_until_idle(chat_pid);
                    format!(
                        "{:.3} ms | {:.3} ms",
                        figures.p50_ms - direct_figures.p50_ms,
                        figures.p99_ms - direct_figures.p99_ms
                    )
                },
            );
            let cpu_before = cpu_seconds(chat_pid);
            let gateway_figures = attack(dir.path(), &gateway, stream, rate, seconds);
            let service_seconds = cpu_seconds(chat_pid) - cpu_before;
            let cpu_per_request_us = service_seconds * 1e6 / f64::from(rate * seconds);
            wait_until_idle(chat_pid);
            writeln!(
                out,
                "| {} | {rate} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.2}% | {cpu_per_request_us:.0} µs | {nginx_overhead} |",
                if stream { "streaming" } else { "non-streaming" },
                direct_figures.p50_ms,
                direct_figures.p99_ms,
                gateway_figures.p50_ms,
                gateway_figures.p99_ms,
                gateway_figures.p50_ms - direct_figures.p50_ms,
                gateway_figures.p99_ms - direct_figures.p99_ms,
                gateway_figures.success * 100.0,
            )
            .ok();
            out.flush().ok();
        }
    }
    if ramp.is_empty() {
        return;
    }
    writeln!(out).ok();
    writeln!(
        out,
        "| mode | target | highest rate held without errors (req/s) | last rate tried: success, throughput |"
    )
    .ok();
    writeln!(out, "|---|---|---|---|").ok();
    for &stream in &modes {
        for (name, url) in [("mock directly", &direct), ("through the gateway", &gateway)] {
            let (held, tried) = highest_rate(dir.path(), url, stream, &ramp, seconds, chat_pid);
            let last = tried
                .last()
                .map(|(rate, figures)| {
                    format!("{rate}: {:.2}%, {:.0} req/s", figures.success * 100.0, figures.throughput)
                })
                .unwrap_or_default();
            writeln!(out, "| {} | {name} | {held} | {last} |", if stream { "streaming" } else { "non-streaming" }).ok();
            out.flush().ok();
        }
    }
    drop(chat);
}

/// Stops the service however `main` ends, a failed assertion included.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
