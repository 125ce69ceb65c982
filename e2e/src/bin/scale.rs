//! Operator convergence and footprint with many tenants, on the local control plane (`e2e/bench/scale`).
//!
//! Creates N ChatTenants at once and reports: time until every tenant is reconciled (status written for its
//! generation) and until every tenant is Ready, reconciles per second, API requests per tenant (from the
//! audit log), the operator's peak RSS, and its requests and writes during one idle minute.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use saaschat_crds::ChatTenant;
use saaschat_e2e::{OPERATOR_USER, Operator, admin, install, kubectl_ok, repo};
use saaschat_testkit::process::cpu_seconds;

fn tenant(index: usize) -> anyhow::Result<ChatTenant> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "saaschat.io/v1alpha1", "kind": "ChatTenant",
        "metadata": {"name": format!("bench-{index:04}")},
        "spec": {
            "displayName": format!("Bench {index}"),
            "providers": [{"name": "openai", "models": ["gpt-4o-mini"]}],
            "defaultModel": "gpt-4o-mini",
            "deletionPolicy": "Delete",
        }
    }))?)
}

/// Waits until kube-controller-manager's garbage collector watches ChatTenants, which it starts doing up to
/// 30 s after the CRD appears (its discovery period). A cluster that has had the CRDs for a while is in that
/// state; one whose garbage collector has not caught up yet turns every tenant into a "virtual" owner that it
/// checks with a GET at 10 per second for minutes, and every object the tenant owns with another, which would
/// be measured as load. The probe: a ChatTenant deleted in the foreground keeps its `foregroundDeletion`
/// finalizer until the garbage collector has seen it, so it is gone only once ChatTenants are watched.
async fn wait_for_garbage_collector(api: &Api<ChatTenant>) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut probe = tenant(0)?;
    probe.metadata.name = Some("gc-probe".into());
    api.create(&PostParams::default(), &probe).await?;
    api.delete("gc-probe", &DeleteParams::foreground()).await?;
    while api.get_opt("gc-probe").await?.is_some() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the garbage collector has not picked up ChatTenants in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// CPU seconds used so far by each process of the control plane (kwokctl's `pids/<component>.pid` in the
/// cluster's folder) and by the operator.
fn cpu_by_process(cluster_dir: &Path, operator: &Operator) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut seconds = BTreeMap::from([("saaschat-operator".to_string(), cpu_seconds(operator.pid()))]);
    for entry in std::fs::read_dir(cluster_dir.join("pids"))? {
        let path = entry?.path();
        let (Some(component), Ok(pid)) = (path.file_stem(), std::fs::read_to_string(&path)) else { continue };
        if let Ok(pid) = pid.trim().parse() {
            seconds.insert(component.to_string_lossy().into_owned(), cpu_seconds(pid));
        }
    }
    Ok(seconds)
}

/// Requests by the operator's user in the audit log, by verb and resource, from `from_line` on.
fn audited_requests(log: &str, from_line: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in log.lines().skip(from_line) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let user = event["impersonatedUser"]["username"].as_str().or(event["user"]["username"].as_str());
        if user == Some(OPERATOR_USER) {
            let object = &event["objectRef"];
            let resource = match object["subresource"].as_str() {
                Some(sub) => format!("{}/{sub}", object["resource"].as_str().unwrap_or_default()),
                None => object["resource"].as_str().unwrap_or_default().to_string(),
            };
            *counts.entry(format!("{} {resource}", event["verb"].as_str().unwrap_or_default())).or_default() += 1;
        }
    }
    counts
}

/// The API server's request counter (`apiserver_request_total`) summed by verb and resource: every client's
/// requests, including the ones the audit policy leaves out (pods, events, endpoints).
async fn apiserver_requests(client: &kube::Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new())?).await?;
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|line| line.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            labels.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default()
        };
        let resource = match label("subresource") {
            "" => label("resource").to_string(),
            sub => format!("{}/{sub}", label("resource")),
        };
        *counts.entry(format!("{} {resource}", label("verb"))).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

/// Events in the cluster by emitter and reason (an Event written again counts once per occurrence).
async fn events_by_emitter(client: &kube::Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut counts = BTreeMap::new();
    for event in Api::<Event>::all(client.clone()).list(&ListParams::default()).await?.items {
        let emitter = event.source.and_then(|s| s.component).or(event.reporting_component).unwrap_or_default();
        let key = format!("{emitter} {}", event.reason.unwrap_or_default());
        *counts.entry(key).or_default() += f64::from(event.count.unwrap_or(1));
    }
    Ok(counts)
}

/// The largest entries of `after - before`, and the total.
fn busiest(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, top: usize) -> (f64, Vec<(String, f64)>) {
    let mut delta: Vec<(String, f64)> =
        after.iter().map(|(key, value)| (key.clone(), value - before.get(key).copied().unwrap_or(0.0))).collect();
    delta.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total = delta.iter().map(|(_, value)| value).sum();
    delta.truncate(top);
    (total, delta)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).context("usage: scale <tenants>")?.parse()?;
    let audit_path = std::env::var("SAASCHAT_AUDIT_LOG").context("SAASCHAT_AUDIT_LOG")?;
    let client = admin().await?;
    let installed = Instant::now();
    install(&client).await?;
    for sample in ["00-provider-secret.yaml", "01-aiprovider.yaml"] {
        kubectl_ok(&["apply", "-f", &repo().join("config/samples").join(sample).to_string_lossy()], None)?;
    }
    let api = Api::<ChatTenant>::all(client.clone());
    let cluster_dir = Path::new(&audit_path).ancestors().nth(2).context("cluster folder of the audit log")?;
    // `--operator-only` runs no controller-manager, hence no garbage collector.
    if cluster_dir.join("pids/kube-controller-manager.pid").exists() {
        wait_for_garbage_collector(&api).await?;
        eprintln!(
            "the garbage collector watches ChatTenants, {:.1?} after the CRDs were installed",
            installed.elapsed()
        );
    }
    // Tenants reconciled at once; SCALE_CONCURRENCY compares settings (16 unless given).
    let concurrency = std::env::var("SCALE_CONCURRENCY").unwrap_or_else(|_| "16".into());
    let operator = Operator::start_with("bench", &[("SAASCHAT_CONCURRENCY", concurrency.as_str())])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let audit_start = std::fs::read_to_string(&audit_path)?.lines().count();
    let apiserver_before = apiserver_requests(&client).await?;
    let cpu_before = cpu_by_process(cluster_dir, &operator)?;

    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut creations = Vec::new();
    for index in 0..count {
        let (api, limit, object) = (api.clone(), limit.clone(), tenant(index)?);
        creations.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            api.create(&PostParams::default(), &object).await
        }));
    }
    for creation in creations {
        creation.await??;
    }
    eprintln!("created {count} tenants in {:.1?}", started.elapsed());

    // `SCALE_UNTIL=reconciled` (`--operator-only`): no platform runs pods, so tenants never become Ready.
    let until_ready = std::env::var("SCALE_UNTIL").as_deref() != Ok("reconciled");
    let (mut reconciled_at, mut ready_at) = (None, None);
    let give_up = Duration::from_secs(1800.max(3 * count as u64));
    let done = |reconciled: Option<Duration>, ready: Option<Duration>| {
        if until_ready { ready.is_some() } else { reconciled.is_some() }
    };
    while !done(reconciled_at, ready_at) && started.elapsed() < give_up {
        let tenants = api.list(&ListParams::default().labels("")).await?.items;
        let bench: Vec<_> =
            tenants.iter().filter(|t| t.metadata.name.as_deref().is_some_and(|n| n.starts_with("bench-"))).collect();
        let reconciled = bench
            .iter()
            .filter(|t| t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation)
            .count();
        let ready = bench
            .iter()
            .filter(|t| t.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == "Ready" && c.status == "True"))
            .count();
        if reconciled == count && reconciled_at.is_none() {
            reconciled_at = Some(started.elapsed());
        }
        if ready == count {
            ready_at = Some(started.elapsed());
        }
        eprintln!("{:>6.1?}: reconciled {reconciled}/{count}, ready {ready}/{count}", started.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (cpu_total, cpu_top) = busiest(&cpu_before, &cpu_by_process(cluster_dir, &operator)?, 8);
    let reconciles = operator.counter("saaschat_operator_reconciles_total{controller=\"chattenant\"}")?;
    let busy_requests: usize = audited_requests(&std::fs::read_to_string(&audit_path)?, audit_start).values().sum();
    let peak_rss = operator.peak_rss()?;
    let (apiserver_total, apiserver_top) = busiest(&apiserver_before, &apiserver_requests(&client).await?, 12);
    let (events_total, events_top) = busiest(&BTreeMap::new(), &events_by_emitter(&client).await?, 8);
    let reconcile_seconds = operator.counter("saaschat_operator_reconcile_duration_seconds_sum")?;

    // Ready is not the end of the churn: the last pods' readiness still moves Deployment, StatefulSet and
    // autoscaler status, and with it the tenants' component status. Idle starts once the operator has written
    // nothing for 20 s; then one minute with no change made, in which the operator only resyncs.
    let mut settled_since = (Instant::now(), operator.writes()?);
    while settled_since.0.elapsed() < Duration::from_secs(20) && started.elapsed() < give_up {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let writes = operator.writes()?;
        if writes != settled_since.1 {
            settled_since = (Instant::now(), writes);
        }
    }
    let settled_at = started.elapsed() - settled_since.0.elapsed();
    let idle_start_line = std::fs::read_to_string(&audit_path)?.lines().count();
    let idle_writes_before = operator.writes()?;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle = audited_requests(&std::fs::read_to_string(&audit_path)?, idle_start_line);
    let idle_writes = operator.writes()? - idle_writes_before;

    let seconds = |d: Option<Duration>| d.map_or("not reached".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    println!("| tenants | {count} |");
    println!("| all reconciled | {} |", seconds(reconciled_at));
    if until_ready {
        println!("| all Ready | {} |", seconds(ready_at));
    }
    println!("| last write | {} |", seconds(Some(settled_at)));
    let busy = ready_at.or(reconciled_at).unwrap_or(started.elapsed()).as_secs_f64();
    println!("| reconciles per second (until done) | {:.1} ({reconciles} reconciles) |", reconciles / busy);
    println!("| mean reconcile time | {:.0} ms |", 1000.0 * reconcile_seconds / reconciles.max(1.0));
    println!("| API requests per tenant (until done) | {:.1} |", busy_requests as f64 / count as f64);
    println!("| operator peak RSS | {:.1} MiB |", peak_rss as f64 / 1_048_576.0);
    println!("| requests in one idle minute | {} ({idle:?}) |", idle.values().sum::<usize>());
    println!("| writes in one idle minute | {idle_writes} |");
    let errors = operator.counter("saaschat_operator_reconcile_errors_total")? as u64;
    println!("| failed reconciles | {errors} |");
    println!("| API server requests until done, every client | {apiserver_total:.0} |");
    for (request, count) in apiserver_top {
        println!("| - {request} | {count:.0} |");
    }
    println!("| CPU seconds until done, every process of the cluster | {cpu_total:.1} |");
    for (process, seconds) in cpu_top {
        println!("| - {process} | {seconds:.1} |");
    }
    println!("| Events until done, by emitter and reason | {events_total:.0} |");
    for (event, count) in events_top {
        println!("| - {event} | {count:.0} |");
    }
    Ok(())
}
