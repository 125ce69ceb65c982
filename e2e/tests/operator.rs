//! The operator proven against a real kube-apiserver, controller-manager and scheduler, with kwok nodes.
//! Run by `scripts/test` (`cargo test -p saaschat-e2e -- --ignored --test-threads=1`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use saaschat_crds::{ChatTenant, Subscription};
use saaschat_e2e::{Operator, SECRET_NAMESPACE, admin, eventually, impersonating, install, kubectl, kubectl_ok, repo};
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(90);

async fn setup() -> Client {
    let client = admin().await.expect("admin client of the test cluster");
    install(&client).await.expect("CRDs and RBAC install");
    client
}

fn sample(name: &str) -> String {
    std::fs::read_to_string(repo().join("config/samples").join(name)).expect("sample file")
}

/// A tenant spec like the sample, under another name, provider and policy.
fn tenant_yaml(name: &str, provider: &str, deletion_policy: &str) -> String {
    format!(
        r#"
apiVersion: saaschat.io/v1alpha1
kind: ChatTenant
metadata: {{name: {name}}}
spec:
  displayName: {name}
  providers: [{{name: {provider}, models: [gpt-4o-mini]}}]
  defaultModel: gpt-4o-mini
  deletionPolicy: {deletion_policy}
"#
    )
}

fn condition(tenant: &ChatTenant, type_: &str) -> Option<(String, String)> {
    tenant.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_condition(client: &Client, name: &str, type_: &str, status: &str, reason: Option<&str>) -> ChatTenant {
    let api = Api::<ChatTenant>::all(client.clone());
    eventually(&format!("ChatTenant {name} {type_}={status} {reason:?}"), READY_TIMEOUT, || {
        let api = api.clone();
        async move {
            let tenant = api.get(name).await?;
            let fresh = tenant.status.as_ref().and_then(|s| s.observed_generation) == tenant.metadata.generation;
            Ok(match condition(&tenant, type_) {
                Some((s, r)) if fresh && s == status && reason.is_none_or(|reason| reason == r) => Some(tenant),
                _ => None,
            })
        }
    })
    .await
    .expect("tenant condition")
}

async fn delete_tenant(client: &Client, name: &str) {
    let api = Api::<ChatTenant>::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    eventually(&format!("ChatTenant {name} to be gone"), Duration::from_secs(60), || {
        let api = api.clone();
        async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
    })
    .await
    .expect("tenant deleted");
}

async fn names<K>(client: &Client, namespace: &str) -> BTreeSet<String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=saaschat-operator"))
        .await
        .expect("list")
        .items
        .iter()
        .map(|o| o.name_any())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn deployment_replicas(client: &Client, namespace: &str) -> BTreeMap<String, Option<i32>> {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("deployments")
        .items
        .into_iter()
        .map(|d| (d.name_any(), d.spec.and_then(|s| s.replicas)))
        .collect()
}

/// The objects of a complete tenant (ARCHITECTURE §4), all present; `autoscaled`: the services whose bounds
/// leave room to scale (all four on the pro plan, only the email worker with the free plan's cap).
async fn assert_complete(client: &Client, namespace: &str, autoscaled: &[&str]) {
    let services = set(&["auth", "billing", "chat", "email-worker"]);
    let workloads = set(&["auth", "billing", "chat", "email-worker", "postgres", "redis"]);
    assert_eq!(names::<Deployment>(client, namespace).await, services);
    assert_eq!(names::<StatefulSet>(client, namespace).await, set(&["postgres", "redis"]));
    assert_eq!(names::<HorizontalPodAutoscaler>(client, namespace).await, set(autoscaled));
    assert_eq!(names::<PodDisruptionBudget>(client, namespace).await, services);
    assert_eq!(names::<Service>(client, namespace).await, workloads);
    assert_eq!(names::<k8s_openapi::api::core::v1::ServiceAccount>(client, namespace).await, workloads);
    assert_eq!(names::<ConfigMap>(client, namespace).await, set(&["tenant-config"]));
    let policies = names::<NetworkPolicy>(client, namespace).await;
    assert!(policies.contains("default-deny") && policies.contains("allow-dns") && policies.len() == 8, "{policies:?}");
    let secrets = names::<Secret>(client, namespace).await;
    for secret in ["jwt-signing-key", "postgres-credentials", "redis-credentials"] {
        assert!(secrets.contains(secret), "{secret} in {secrets:?}");
    }
    assert_eq!(
        names::<k8s_openapi::api::rbac::v1::Role>(client, namespace).await,
        set(&["billing-subscription-status"])
    );
    let claims: BTreeSet<String> = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("pvcs")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(claims, set(&["data-postgres-0", "data-redis-0"]));
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test"]
async fn api_accepts_the_crds_and_explains_every_field() {
    setup().await;
    let explained = kubectl_ok(&["explain", "chattenant.spec"], None).expect("explain");
    assert!(explained.contains("A tenant of the chat platform"), "{explained}");
    let field = kubectl_ok(&["explain", "chattenant.spec.deletionPolicy"], None).expect("explain");
    assert!(field.contains("What happens to the tenant's data"), "{field}");
    let categories = kubectl_ok(&["get", "saaschat", "-A"], None);
    assert!(categories.is_ok(), "the saaschat category resolves: {categories:?}");
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test"]
async fn api_rejects_invalid_specs_with_our_messages() {
    let client = setup().await;
    let tenant = |name: &str, spec: &str| {
        format!(
            "apiVersion: saaschat.io/v1alpha1\nkind: ChatTenant\nmetadata: {{name: {name}}}\nspec:\n  displayName: x\n  providers: [{{name: openai, models: [gpt-4o-mini]}}]\n  defaultModel: gpt-4o-mini\n{spec}"
        )
    };
    let provider = |spec: &str| {
        format!(
            "apiVersion: saaschat.io/v1alpha1\nkind: AIProvider\nmetadata: {{name: bad}}\nspec:\n  apiKeySecretRef: {{name: k, key: api-key}}\n  models: [{{name: m, inputPricePerMillion: '1', outputPricePerMillion: '1'}}]\n{spec}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (tenant("Bad_Name", ""), "DNS-1123 label"),
        (tenant(&"a".repeat(57), ""), "at most 56 characters"),
        (
            tenant("minmax", "  components: {chat: {minReplicas: 5, maxReplicas: 2}}\n"),
            "minReplicas must not be greater than maxReplicas",
        ),
        (tenant("negative", "  components: {chat: {minReplicas: -1, maxReplicas: 2}}\n"), "should be greater than or equal to 1"),
        (tenant("huge", "  database: {storage: {size: 99999999Ti}}\n"), "spec.database.storage.size"),
        (provider("  type: llama\n"), "Unsupported value: \"llama\""),
        (provider("  type: openaiCompatible\n"), "baseUrl is required when type is openaiCompatible"),
        (provider("  type: openai\n  baseUrl: http://api.example.com/v1\n"), "baseUrl must use https"),
        (tenant("nomodel", "").replace("defaultModel: gpt-4o-mini", "defaultModel: gpt-9"), "defaultModel must be one of"),
        (tenant("extdb", "  database: {mode: External}\n"), "an External database requires externalSecretRef"),
        (
            tenant("extstorage", "  database: {mode: External, externalSecretRef: {name: db, key: url}, storage: {size: 1Gi}}\n"),
            "cannot have managed storage settings",
        ),
        (
            tenant("tls", "  ingress: {host: a.example.com, tls: {secretName: s, clusterIssuer: le}}\n"),
            "set exactly one of secretName and clusterIssuer",
        ),
        (
            "apiVersion: saaschat.io/v1alpha1\nkind: Subscription\nmetadata: {name: other, namespace: default}\nspec: {plan: pro}\n".into(),
            "named 'default'",
        ),
    ];
    assert!(cases.len() >= 10);
    for (manifest, message) in &cases {
        let output = kubectl(&["create", "--dry-run=server", "-f", "-"], Some(manifest)).expect("kubectl");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted but should be refused ({message}):\n{manifest}");
        assert!(stderr.contains(message), "expected {message:?} in: {stderr}");
    }

    // Immutable namespace: an update is checked against the stored object.
    let api = Api::<ChatTenant>::all(client.clone());
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&tenant("immutable", "  namespace: first\n  database: {storage: {size: 5Gi}}\n")),
    )
    .expect("create");
    let resized = api
        .patch(
            "immutable",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"database": {"storage": {"size": "6Gi"}}}})),
        )
        .await
        .expect_err("storage change refused");
    assert!(resized.to_string().contains("storage cannot be changed after creation"), "{resized}");
    let moved = api
        .patch("immutable", &PatchParams::default(), &Patch::Merge(json!({"spec": {"namespace": "second"}})))
        .await
        .expect_err("namespace change refused");
    assert!(moved.to_string().contains("namespace cannot be changed after creation"), "{moved}");
    let unset = api
        .patch("immutable", &PatchParams::default(), &Patch::Merge(json!({"spec": {"namespace": null}})))
        .await
        .expect_err("namespace removal refused");
    assert!(unset.to_string().contains("namespace cannot be set or unset"), "{unset}");
    api.delete("immutable", &DeleteParams::default()).await.expect("cleanup");
}

/// Applying `config/samples/` yields a Ready tenant; then drift, rotation, suspension, subscription and
/// deletion, each proven on the real API server.
#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test"]
async fn the_sample_tenant_lives_its_whole_life() {
    let client = setup().await;
    // Telemetry receivers configured for the tenants: an in-cluster collector and an outside Sentry; and the
    // forward proxy the chat service reaches providers through.
    let collector = "http://otel-collector.observability.svc:4318";
    let sentry = "https://public-key@o1.ingest.sentry.io/42";
    let proxy = "http://egress-proxy.network.svc:3128";
    let operator = Operator::start_with(
        "lifecycle",
        &[
            ("SAASCHAT_RESYNC_SECONDS", "3"),
            ("SAASCHAT_TENANT_OTLP_ENDPOINT", collector),
            ("SAASCHAT_TENANT_SENTRY_DSN", sentry),
            ("SAASCHAT_TENANT_HTTPS_PROXY", proxy),
        ],
    )
    .expect("operator starts");
    for file in ["00-provider-secret.yaml", "01-aiprovider.yaml", "02-chattenant.yaml"] {
        kubectl_ok(&["apply", "-f", "-"], Some(&sample(file))).expect("sample applies");
    }
    // The Subscription kept in Git goes into the namespace the operator created for the tenant.
    eventually("the tenant's namespace", READY_TIMEOUT, || async {
        Ok(kubectl(&["get", "namespace", "tenant-acme"], None)?.status.success().then_some(()))
    })
    .await
    .expect("namespace created");
    kubectl_ok(&["apply", "-f", "-"], Some(&sample("gitops/subscription.yaml"))).expect("sample applies");
    let tenant = wait_condition(&client, "acme", "Ready", "True", Some("AllComponentsReady")).await;
    let status = tenant.status.clone().expect("status");
    assert_eq!(status.namespace.as_deref(), Some("tenant-acme"));
    assert_eq!(status.plan.as_deref(), Some("pro"));
    assert!(status.components.iter().all(|c| c.ready) && status.components.len() == 6);
    let namespace = "tenant-acme";
    assert_complete(&client, namespace, &["auth", "billing", "chat", "email-worker"]).await;

    // Every service sends its telemetry where the operator was told, and its NetworkPolicy (accepted by the
    // API server, or the tenant would not be Ready) lets it reach the collector's namespace.
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), namespace);
    for service in ["auth", "chat", "billing", "email-worker"] {
        let deployment = deployments.get(service).await.expect("deployment");
        let env: BTreeMap<String, String> = deployment
            .spec
            .and_then(|spec| spec.template.spec)
            .map(|pod| pod.containers[0].env.clone().unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|var| Some((var.name, var.value?)))
            .collect();
        assert_eq!(env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(String::as_str), Some(collector), "{service}");
        assert_eq!(env.get("SENTRY_DSN").map(String::as_str), Some(sentry), "{service}");
        let policy = serde_json::to_value(policies.get(service).await.expect("policy")).expect("json");
        let egress = policy["spec"]["egress"].as_array().cloned().unwrap_or_default();
        assert!(
            egress.iter().any(|rule| {
                rule["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "observability"
                    && rule["ports"][0]["port"] == 4318
            }),
            "{service} may reach the collector: {egress:?}"
        );
        let reaches_proxy = egress.iter().any(|rule| {
            rule["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "network"
                && rule["ports"][0]["port"] == 3128
        });
        let proxied = env.get("HTTPS_PROXY").map(String::as_str);
        if service == "chat" {
            assert!(proxied == Some(proxy) && reaches_proxy, "chat calls providers through the proxy: {egress:?}");
        } else {
            assert!(proxied.is_none() && !reaches_proxy, "{service} calls no provider");
        }
    }

    // Pod Security restricted is enforced, and every pod the operator created was admitted.
    let ns = Api::<Namespace>::all(client.clone()).get(namespace).await.expect("namespace");
    assert_eq!(ns.labels().get("pod-security.kubernetes.io/enforce").map(String::as_str), Some("restricted"));
    let pods = Api::<Pod>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.expect("pods");
    assert!(pods.items.len() >= 6, "pods were admitted and scheduled");
    let privileged = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"root"},"spec":{"containers":[{"name":"c","image":"busybox","securityContext":{"privileged":true}}]}}"#;
    let refused =
        kubectl(&["-n", namespace, "create", "--dry-run=server", "-f", "-"], Some(privileged)).expect("kubectl");
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("restricted"));

    // The Subscription from Git is used as it is, never overwritten.
    let subscriptions = Api::<Subscription>::namespaced(client.clone(), namespace);
    assert_eq!(subscriptions.get("default").await.expect("subscription").spec.plan, saaschat_crds::PlanName::Pro);

    // Billing keeps the Subscription's status in step with Stripe using only the Role the operator gave its
    // ServiceAccount: the status billing's own code builds is accepted by the real API server (schema and
    // RBAC), and nothing beyond it is allowed.
    let billing = impersonating(
        &format!("system:serviceaccount:{namespace}:billing"),
        &["system:serviceaccounts", &format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
    )
    .await
    .expect("billing client");
    let as_billing = Api::<Subscription>::namespaced(billing.clone(), namespace);
    let current = as_billing.get("default").await.expect("billing reads its Subscription");
    let now = chrono::Utc::now();
    let account = saaschat_billing::account::Account {
        state: Some("active".into()),
        state_since: Some(now),
        current_period_end: Some(now + chrono::TimeDelta::days(30)),
        ..saaschat_billing::account::Account::empty("acme")
    };
    let desired = saaschat_billing::kubernetes::status::desired(
        &account,
        1234,
        current.metadata.generation,
        current.status.as_ref(),
        now,
    );
    let apply = json!({"apiVersion": "saaschat.io/v1alpha1", "kind": "Subscription",
        "metadata": {"name": "default"}, "status": desired});
    let field_manager = PatchParams::apply(saaschat_billing::kubernetes::writer::FIELD_MANAGER).force();
    as_billing.patch_status("default", &field_manager, &Patch::Apply(&apply)).await.expect("billing writes the status");
    let written = subscriptions.get("default").await.expect("subscription").status.expect("status");
    assert_eq!(written.state, Some(saaschat_crds::SubscriptionState::Active));
    assert_eq!(written.tokens_used, Some(1234));
    let forbidden = |result: Result<Subscription, kube::Error>| matches!(result, Err(kube::Error::Api(response)) if response.code == 403);
    let spec_change = json!({"spec": {"plan": "enterprise"}});
    assert!(forbidden(as_billing.patch("default", &PatchParams::default(), &Patch::Merge(&spec_change)).await));
    let elsewhere = Api::<Subscription>::namespaced(billing.clone(), SECRET_NAMESPACE);
    assert!(forbidden(elsewhere.get("default").await), "only its own namespace");
    let secrets = Api::<Secret>::namespaced(billing, namespace).list(&ListParams::default()).await;
    assert!(matches!(secrets, Err(kube::Error::Api(response)) if response.code == 403), "no Secrets");

    // Steady state: once the autoscalers have settled, resyncs (every 3 s) make no write at all.
    eventually("a 10 s window of resyncs without a write", Duration::from_secs(90), || async {
        let writes = operator.writes()?;
        let reconciles = operator.counter("saaschat_operator_reconciles_total")?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let resynced = operator.counter("saaschat_operator_reconciles_total")? >= reconciles + 2.0;
        Ok((resynced && operator.writes()? == writes).then_some(()))
    })
    .await
    .expect("idle resyncs write nothing");

    // Drift: a deleted Deployment, an edited image and an edited ConfigMap are restored.
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    deployments.delete("chat", &DeleteParams::default()).await.expect("delete chat");
    kubectl_ok(&["-n", namespace, "set", "image", "deploy/auth", "auth=evil:1"], None).expect("edit image");
    kubectl_ok(
        &["-n", namespace, "patch", "cm", "tenant-config", "--type", "merge", "-p", r#"{"data":{"tenant.json":"{}"}}"#],
        None,
    )
    .expect("edit config");
    eventually("drift repaired", Duration::from_secs(30), || {
        let deployments = deployments.clone();
        let client = client.clone();
        async move {
            let chat = deployments.get_opt("chat").await?;
            let auth = deployments.get("auth").await?;
            let image =
                auth.spec.and_then(|s| s.template.spec).map(|p| p.containers[0].image.clone().unwrap_or_default());
            let config = Api::<ConfigMap>::namespaced(client, namespace).get("tenant-config").await?;
            let config_ok =
                config.data.unwrap_or_default().get("tenant.json").is_some_and(|t| t.contains("gpt-4o-mini"));
            Ok((chat.is_some() && image.is_some_and(|i| !i.starts_with("evil")) && config_ok).then_some(()))
        }
    })
    .await
    .expect("drift repaired");

    // Replicas belong to the autoscaler: scaling a service below its minimum by hand is undone by its HPA.
    // (Not to zero: an HPA treats a target at zero replicas as switched off.)
    kubectl_ok(&["-n", namespace, "scale", "deploy/auth", "--replicas=1"], None).expect("scale down");
    eventually("auth back to its minimum", Duration::from_secs(60), || {
        let client = client.clone();
        async move { Ok((deployment_replicas(&client, namespace).await["auth"].unwrap_or(0) >= 2).then_some(())) }
    })
    .await
    .expect("replicas repaired");

    // Rotating the provider's key updates the tenant's copy.
    let rotated = sample("00-provider-secret.yaml").replace("sk-replace-me", "sk-rotated-2");
    kubectl_ok(&["apply", "-f", "-"], Some(&rotated)).expect("rotate");
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    eventually("rotated key copied", Duration::from_secs(30), || {
        let secrets = secrets.clone();
        async move {
            let copy = secrets.get("provider-openai").await?;
            Ok(copy.data.unwrap_or_default().get("api-key").is_some_and(|v| v.0 == b"sk-rotated-2").then_some(()))
        }
    })
    .await
    .expect("rotation");

    // A copied Secret goes when its reference leaves the spec, although the operator cannot list Secrets.
    let smtp_source = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "acme-smtp", "namespace": SECRET_NAMESPACE},
        "stringData": {"username": "mailer", "password": "hunter2"},
    });
    kubectl_ok(&["apply", "-f", "-"], Some(&smtp_source.to_string())).expect("smtp source");
    let tenants = Api::<ChatTenant>::all(client.clone());
    let smtp = json!({"spec": {"smtp": {
        "host": "smtp.acme.example", "from": "Acme <no-reply@acme.example>",
        "credentialsSecretRef": {"name": "acme-smtp"},
    }}});
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(smtp)).await.expect("add smtp");
    eventually("smtp credentials copied and remembered", Duration::from_secs(30), || {
        let (secrets, tenants) = (secrets.clone(), tenants.clone());
        async move {
            let copied = secrets.get_opt("smtp-credentials").await?.is_some();
            let remembered = tenants
                .get("acme")
                .await?
                .status
                .is_some_and(|s| s.copied_secrets.contains(&"smtp-credentials".to_string()));
            Ok((copied && remembered).then_some(()))
        }
    })
    .await
    .expect("smtp copy");
    let without_smtp = json!({"spec": {"smtp": null}});
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(without_smtp)).await.expect("remove smtp");
    eventually("smtp credentials deleted and forgotten", Duration::from_secs(30), || {
        let (secrets, tenants) = (secrets.clone(), tenants.clone());
        async move {
            let gone = secrets.get_opt("smtp-credentials").await?.is_none();
            let copies = tenants.get("acme").await?.status.map(|s| s.copied_secrets).unwrap_or_default();
            Ok((gone && copies == ["provider-openai"]).then_some(()))
        }
    })
    .await
    .expect("smtp copy removed");
    assert!(secrets.get_opt("provider-openai").await.expect("get").is_some(), "the provider's copy stays");

    // spec.suspend scales every service to zero and back, keeping the data stores.
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": true}})))
        .await
        .expect("suspend");
    wait_condition(&client, "acme", "Suspended", "True", Some("SuspendRequested")).await;
    eventually("services at zero", Duration::from_secs(30), || {
        let client = client.clone();
        async move { Ok(deployment_replicas(&client, namespace).await.values().all(|r| *r == Some(0)).then_some(())) }
    })
    .await
    .expect("suspended");
    assert!(names::<HorizontalPodAutoscaler>(&client, namespace).await.is_empty());
    assert_eq!(names::<StatefulSet>(&client, namespace).await, set(&["postgres", "redis"]));
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": false}})))
        .await
        .expect("resume");
    wait_condition(&client, "acme", "Ready", "True", None).await;
    assert_eq!(names::<HorizontalPodAutoscaler>(&client, namespace).await.len(), 4);
    assert!(deployment_replicas(&client, namespace).await.values().all(|r| r.unwrap_or(0) > 0));

    // A subscription canceled past its grace period stops chat only; reinstating it restores chat.
    let long_ago = "2020-01-01T00:00:00Z";
    let canceled = json!({"status": {"state": "canceled", "stateSince": long_ago}});
    subscriptions.patch_status("default", &PatchParams::default(), &Patch::Merge(canceled)).await.expect("cancel");
    wait_condition(&client, "acme", "Suspended", "True", Some("SubscriptionEnded")).await;
    let replicas = deployment_replicas(&client, namespace).await;
    assert_eq!(replicas["chat"], Some(0));
    assert!(replicas["auth"].unwrap_or(0) > 0, "only chat stops: {replicas:?}");
    let active = json!({"status": {"state": "active", "stateSince": long_ago}});
    subscriptions.patch_status("default", &PatchParams::default(), &Patch::Merge(active)).await.expect("reinstate");
    wait_condition(&client, "acme", "Ready", "True", None).await;
    assert!(deployment_replicas(&client, namespace).await["chat"].unwrap_or(0) > 0);

    // Switching to an external database removes the managed one; an ingress comes and goes with its host.
    let external = json!({"spec": {
        "database": {"mode": "External", "storage": null, "externalSecretRef": {"name": "openai-api-key", "key": "api-key"}},
        "ingress": {"host": "acme.chat.example.com", "tls": {"clusterIssuer": "letsencrypt"}},
    }});
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(external)).await.expect("external database");
    eventually("managed database removed, ingress created", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let sets = names::<StatefulSet>(&client, namespace).await;
            let services = names::<Service>(&client, namespace).await;
            let ingresses = names::<k8s_openapi::api::networking::v1::Ingress>(&client, namespace).await;
            Ok((sets == set(&["redis"]) && !services.contains("postgres") && ingresses.len() == 1).then_some(()))
        }
    })
    .await
    .expect("pruned");
    let tenant = wait_condition(&client, "acme", "Ready", "True", None).await;
    assert_eq!(tenant.status.and_then(|s| s.url).as_deref(), Some("https://acme.chat.example.com"));
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"ingress": null}})))
        .await
        .expect("no ingress");
    eventually("ingress removed", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            Ok(names::<k8s_openapi::api::networking::v1::Ingress>(&client, namespace).await.is_empty().then_some(()))
        }
    })
    .await
    .expect("ingress pruned");

    // deletionPolicy Delete: nothing is left behind.
    delete_tenant(&client, "acme").await;
    let namespaces = Api::<Namespace>::all(client.clone());
    eventually("namespace removed", Duration::from_secs(90), || {
        let namespaces = namespaces.clone();
        async move { Ok(namespaces.get_opt(namespace).await?.is_none().then_some(())) }
    })
    .await
    .expect("namespace deleted");
    drop(operator);
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test"]
async fn retain_keeps_the_volumes_and_the_database_secret() {
    let client = setup().await;
    let _operator = Operator::start("retain").expect("operator starts");
    kubectl_ok(&["apply", "-f", "-"], Some(&sample("00-provider-secret.yaml"))).expect("secret");
    kubectl_ok(&["apply", "-f", "-"], Some(&sample("01-aiprovider.yaml"))).expect("provider");
    kubectl_ok(&["apply", "-f", "-"], Some(&tenant_yaml("keep", "openai", "Retain"))).expect("tenant");
    wait_condition(&client, "keep", "Ready", "True", None).await;
    delete_tenant(&client, "keep").await;
    let namespace = "tenant-keep";
    // Garbage collection removes the owned objects one by one: wait until the signing key, owned like the
    // rest, is gone, then the data Secrets must still be there.
    let secrets = eventually("owned objects collected", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let secrets = names::<Secret>(&client, namespace).await;
            let collected =
                names::<Deployment>(&client, namespace).await.is_empty() && !secrets.contains("jwt-signing-key");
            Ok(collected.then_some(secrets))
        }
    })
    .await
    .expect("garbage collected");
    assert!(secrets.contains("postgres-credentials") && secrets.contains("redis-credentials"), "{secrets:?}");
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("pvcs");
    assert_eq!(claims.items.len(), 2);
    let events = kubectl_ok(&["get", "events", "-A", "--field-selector", "reason=DataRetained", "-o", "name"], None)
        .expect("events");
    assert!(!events.trim().is_empty(), "a DataRetained event explains what was kept");
    Api::<Namespace>::all(client.clone()).delete(namespace, &DeleteParams::default()).await.expect("clean up");
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test"]
async fn a_missing_provider_is_reported_and_the_rest_of_the_tenant_still_runs() {
    let client = setup().await;
    let _operator = Operator::start("missing").expect("operator starts");
    kubectl_ok(&["apply", "-f", "-"], Some(&tenant_yaml("orphan", "nowhere", "Delete"))).expect("tenant");
    let tenant = wait_condition(&client, "orphan", "Ready", "False", Some("ProviderNotFound")).await;
    assert_eq!(condition(&tenant, "Degraded").map(|c| c.0).as_deref(), Some("True"));
    eventually("auth runs anyway", READY_TIMEOUT, || {
        let client = client.clone();
        async move { Ok(names::<Deployment>(&client, "tenant-orphan").await.contains("auth").then_some(())) }
    })
    .await
    .expect("auth deployed");
    // The Event follows the status write.
    eventually("a ProviderNotFound event", Duration::from_secs(15), || async {
        let events =
            kubectl_ok(&["get", "events", "-A", "--field-selector", "reason=ProviderNotFound", "-o", "name"], None)?;
        Ok((!events.trim().is_empty()).then_some(()))
    })
    .await
    .expect("event");
    delete_tenant(&client, "orphan").await;
}

/// The operator killed at random points converges to the same objects after a restart.
#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test"]
async fn a_crashed_operator_converges_after_restart() {
    let client = setup().await;
    kubectl_ok(&["apply", "-f", "-"], Some(&sample("00-provider-secret.yaml"))).expect("secret");
    kubectl_ok(&["apply", "-f", "-"], Some(&sample("01-aiprovider.yaml"))).expect("provider");
    for seed in [7u64, 42, 1234] {
        let mut rng = fastrand::Rng::with_seed(seed);
        let name = format!("crash-{seed}");
        let namespace = format!("tenant-{name}");
        let mut operator = Operator::start(&name).expect("operator starts");
        kubectl_ok(&["apply", "-f", "-"], Some(&tenant_yaml(&name, "openai", "Delete"))).expect("tenant");
        // Kill it a few times in the middle of its work.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(rng.u64(200..2500))).await;
            operator.kill();
            operator = Operator::start(&name).expect("operator restarts");
        }
        wait_condition(&client, &name, "Ready", "True", None).await;
        assert_complete(&client, &namespace, &["email-worker"]).await;
        let subscriptions = Api::<Subscription>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .expect("subs");
        assert_eq!(subscriptions.items.len(), 1, "exactly one Subscription");
        delete_tenant(&client, &name).await;
        drop(operator);
    }
}

/// Two replicas: only the leader writes; when it dies, the other takes over within the lease time.
#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test"]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let client = setup().await;
    kubectl_ok(&["apply", "-f", "-"], Some(&sample("00-provider-secret.yaml"))).expect("secret");
    kubectl_ok(&["apply", "-f", "-"], Some(&sample("01-aiprovider.yaml"))).expect("provider");
    let a = Operator::start("replica-a").expect("a");
    let b = Operator::start("replica-b").expect("b");
    kubectl_ok(&["apply", "-f", "-"], Some(&tenant_yaml("leader", "openai", "Delete"))).expect("tenant");
    wait_condition(&client, "leader", "Ready", "True", None).await;
    // Either may have won the Lease (an earlier test's operator may still hold it until it expires).
    let (writes_a, writes_b) = (a.writes().expect("a metrics"), b.writes().expect("b metrics"));
    assert!((writes_a > 0.0) != (writes_b > 0.0), "exactly one replica writes: a={writes_a} b={writes_b}");
    let (mut leader, standby) = if writes_a > 0.0 { (a, b) } else { (b, a) };

    // The free plan caps chat at 3 replicas, the default minimum: bounds that meet get no autoscaler, and the
    // operator itself keeps the count, undoing a change by hand.
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), "tenant-leader");
    assert!(hpas.get_opt("chat").await.expect("get").is_none(), "no autoscaler that could never scale");
    kubectl_ok(&["-n", "tenant-leader", "scale", "deploy/chat", "--replicas=1"], None).expect("scale down");
    eventually("chat back at 3", Duration::from_secs(30), || {
        let client = client.clone();
        async move { Ok((deployment_replicas(&client, "tenant-leader").await["chat"] == Some(3)).then_some(())) }
    })
    .await
    .expect("replicas kept by the operator");

    leader.kill();
    let tenants = Api::<ChatTenant>::all(client.clone());
    // A wider range makes chat autoscaled, with the new minimum.
    let patch = json!({"spec": {"components": {"chat": {"minReplicas": 2, "maxReplicas": 7}}}});
    tenants.patch("leader", &PatchParams::default(), &Patch::Merge(patch)).await.expect("change");
    eventually("the standby applies the change", Duration::from_secs(45), || {
        let hpas = hpas.clone();
        async move { Ok((hpas.get("chat").await?.spec.min_replicas == Some(2)).then_some(())) }
    })
    .await
    .expect("takeover");
    assert!(standby.writes().expect("standby metrics") > 0.0);
    delete_tenant(&client, "leader").await;
}

/// Every rule of the operator's role was exercised by the suite (the audit log lists the operator's requests).
/// Named to run last: the tests run in name order with one thread.
#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test"]
async fn zz_every_rbac_rule_is_used() {
    let Some(audit) = std::env::var_os("SAASCHAT_AUDIT_LOG") else {
        panic!("SAASCHAT_AUDIT_LOG is not set: scripts/test points it at the control plane's audit log");
    };
    let log = std::fs::read_to_string(audit).expect("audit log");
    let mut used: BTreeSet<(String, String, String)> = BTreeSet::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let user = event["impersonatedUser"]["username"].as_str().or(event["user"]["username"].as_str());
        if user != Some(saaschat_e2e::OPERATOR_USER) {
            continue;
        }
        let object = &event["objectRef"];
        let mut resource = object["resource"].as_str().unwrap_or_default().to_string();
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        used.insert((
            object["apiGroup"].as_str().unwrap_or_default().to_string(),
            resource,
            event["verb"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let rbac = std::fs::read_to_string(repo().join("charts/saaschat/files/operator-rbac.yaml")).expect("rbac");
    let mut unused = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&rbac) {
        let role: serde_yaml::Value = serde::Deserialize::deserialize(document).expect("yaml");
        if role["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-delegate")) {
            continue;
        }
        // `bind` is no request but the API server's check of a RoleBinding's creator: the operator's RoleBinding
        // to saaschat-operator-tenant in each tenant namespace, whose use the Secret requests below show.
        for rule in role["rules"].as_sequence().into_iter().flatten() {
            let strings = |key: &str| -> Vec<String> {
                rule[key].as_sequence().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs").into_iter().filter(|verb| verb != "bind") {
                        let key = (group.clone(), resource.clone(), verb.clone());
                        // Server-side apply of a missing object is audited as a patch that creates.
                        let applied =
                            verb == "create" && used.contains(&(group.clone(), resource.clone(), "patch".into()));
                        if !used.contains(&key) && !applied {
                            unused.push(format!("{verb} {group}/{resource}"));
                        }
                    }
                }
            }
        }
    }
    assert!(unused.is_empty(), "permissions the operator never used in the suite: {unused:#?}");
    assert!(!used.is_empty());
    let _ = SECRET_NAMESPACE;
}
