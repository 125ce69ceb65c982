//! Specifications of the desired state of a tenant.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodSpec};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use saaschat_crds::{ChatTenant, DataStoreMode, DeletionPolicy, PlanName, SecretKeyRef, SubscriptionState};
use serde::de::DeserializeOwned;

use super::fixtures::{Inputs, tenant};
use super::network_policy::url_port;
use super::secrets::{GeneratedSecret, SecretSource};
use super::*;
use crate::plan::EffectivePlan;
use crate::settings::EgressUrl;

fn build(inputs: &Inputs) -> DesiredState {
    desired_state(&inputs.get())
}

fn typed<K: DeserializeOwned>(state: &DesiredState, kind: OwnedKind) -> Vec<K> {
    state
        .objects
        .iter()
        .filter(|o| o.kind == kind)
        .map(|o| serde_json::from_value(serde_json::to_value(&o.object).expect("serializes")).expect("typed"))
        .collect()
}

fn names_of(state: &DesiredState, kind: OwnedKind) -> Vec<String> {
    let mut names: Vec<String> =
        state.objects.iter().filter(|o| o.kind == kind).map(|o| o.name().to_string()).collect();
    names.sort();
    names
}

fn pod_specs(state: &DesiredState) -> Vec<PodSpec> {
    let mut specs: Vec<PodSpec> = typed::<Deployment>(state, OwnedKind::Deployment)
        .into_iter()
        .filter_map(|d| d.spec.and_then(|s| s.template.spec))
        .collect();
    specs.extend(
        typed::<StatefulSet>(state, OwnedKind::StatefulSet)
            .into_iter()
            .filter_map(|s| s.spec.and_then(|s| s.template.spec)),
    );
    specs
}

fn hpa_bounds(state: &DesiredState) -> Vec<(String, Option<i32>, i32)> {
    let mut bounds: Vec<_> = typed::<HorizontalPodAutoscaler>(state, OwnedKind::HorizontalPodAutoscaler)
        .into_iter()
        .map(|h| (h.metadata.name.unwrap_or_default(), h.spec.min_replicas, h.spec.max_replicas))
        .collect();
    bounds.sort();
    bounds
}

fn component_named(name: &str) -> Component {
    Component::SERVICES.into_iter().find(|c| c.name() == name).expect("a service")
}

fn deployment_replicas(state: &DesiredState) -> Vec<(String, Option<i32>)> {
    let mut replicas: Vec<_> = typed::<Deployment>(state, OwnedKind::Deployment)
        .into_iter()
        .map(|d| (d.metadata.name.unwrap_or_default(), d.spec.and_then(|s| s.replicas)))
        .collect();
    replicas.sort();
    replicas
}

#[test]
fn a_default_tenant_gets_every_object_of_its_namespace() {
    let state = build(&Inputs::new(tenant("acme")));
    let services = ["auth", "billing", "chat", "email-worker"];
    assert_eq!(names_of(&state, OwnedKind::Namespace), ["tenant-acme"]);
    assert_eq!(
        names_of(&state, OwnedKind::ServiceAccount),
        ["auth", "billing", "chat", "email-worker", "postgres", "redis"]
    );
    assert_eq!(names_of(&state, OwnedKind::Deployment), services);
    assert_eq!(names_of(&state, OwnedKind::HorizontalPodAutoscaler), services);
    assert_eq!(names_of(&state, OwnedKind::PodDisruptionBudget), services);
    assert_eq!(names_of(&state, OwnedKind::StatefulSet), ["postgres", "redis"]);
    assert_eq!(names_of(&state, OwnedKind::Service), ["auth", "billing", "chat", "email-worker", "postgres", "redis"]);
    assert_eq!(names_of(&state, OwnedKind::ConfigMap), ["tenant-config"]);
    assert_eq!(names_of(&state, OwnedKind::Role), ["billing-subscription-status"]);
    assert_eq!(names_of(&state, OwnedKind::RoleBinding), ["billing-subscription-status", "saaschat-operator"]);
    assert!(names_of(&state, OwnedKind::Ingress).is_empty(), "no host, no ingress");
    let secrets: Vec<_> = state.secrets.iter().map(|s| s.name().to_string()).collect();
    assert_eq!(secrets, ["jwt-signing-key", "postgres-credentials", "redis-credentials", "provider-openai"]);
}

#[test]
fn every_namespaced_object_is_owned_by_the_tenant_and_labelled() {
    let state = build(&Inputs::new(tenant("acme")));
    for object in &state.objects {
        let owners = object.object.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{}", object.name());
        assert_eq!(owners[0].kind, "ChatTenant");
        assert_eq!(owners[0].controller, Some(true));
        let labels = object.object.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(names::LABEL_TENANT).map(String::as_str), Some("acme"));
        assert_eq!(labels.get(names::LABEL_MANAGED_BY).map(String::as_str), Some(names::MANAGED_BY));
        assert!(object.object.types.is_some(), "{} has apiVersion and kind", object.name());
    }
}

#[test]
fn the_namespace_enforces_pod_security_restricted() {
    let state = build(&Inputs::new(tenant("acme")));
    let namespace = &typed::<Namespace>(&state, OwnedKind::Namespace)[0];
    let labels = namespace.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/enforce-version"], "latest");
}

/// Each rule of the Pod Security `restricted` profile (v1.36), checked on every pod the operator creates.
fn assert_restricted(pod: &PodSpec) {
    let pod_context = pod.security_context.clone().unwrap_or_default();
    assert_eq!(pod.host_network, None);
    assert_eq!(pod.host_pid, None);
    assert_eq!(pod.host_ipc, None);
    assert_eq!(pod_context.run_as_non_root, Some(true));
    assert_ne!(pod_context.run_as_user, Some(0));
    assert_eq!(pod_context.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    for volume in pod.volumes.iter().flatten() {
        assert!(
            volume.config_map.is_some()
                || volume.secret.is_some()
                || volume.empty_dir.is_some()
                || volume.projected.is_some()
                || volume.downward_api.is_some()
                || volume.persistent_volume_claim.is_some()
                || volume.ephemeral.is_some()
                || volume.csi.is_some(),
            "volume {} has a type restricted forbids",
            volume.name
        );
    }
    for container in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
        let context = container.security_context.clone().unwrap_or_default();
        assert_eq!(context.allow_privilege_escalation, Some(false), "{}", container.name);
        assert_ne!(context.privileged, Some(true));
        assert_ne!(context.run_as_user, Some(0));
        assert_ne!(context.run_as_non_root, Some(false));
        let capabilities = context.capabilities.unwrap_or_default();
        assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]), "{}", container.name);
        assert!(capabilities.add.unwrap_or_default().iter().all(|c| c == "NET_BIND_SERVICE"), "{}", container.name);
        for port in container.ports.iter().flatten() {
            assert_eq!(port.host_port, None);
        }
        assert!(context.se_linux_options.is_none() && context.proc_mount.is_none());
    }
}

#[test]
fn every_pod_satisfies_the_restricted_profile() {
    let mut inputs = Inputs::new(tenant("acme"));
    let state = build(&inputs);
    let pods = pod_specs(&state);
    assert_eq!(pods.len(), 6);
    pods.iter().for_each(assert_restricted);
    inputs.suspension = Suspension::Requested;
    pod_specs(&build(&inputs)).iter().for_each(assert_restricted);
}

#[test]
fn only_billing_gets_an_api_token() {
    let state = build(&Inputs::new(tenant("acme")));
    for deployment in typed::<Deployment>(&state, OwnedKind::Deployment) {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod spec");
        assert_eq!(pod.automount_service_account_token, Some(name == "billing"), "{name}");
    }
}

#[test]
fn deployments_roll_without_losing_capacity_and_drain_on_stop() {
    let state = build(&Inputs::new(tenant("acme")));
    for deployment in typed::<Deployment>(&state, OwnedKind::Deployment) {
        let spec = deployment.spec.expect("spec");
        let rolling = spec.strategy.and_then(|s| s.rolling_update).expect("rolling update");
        assert_eq!(rolling.max_unavailable, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0)));
        let container = &spec.template.spec.expect("pod").containers[0];
        assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
        let pre_stop = container.lifecycle.clone().and_then(|l| l.pre_stop).and_then(|p| p.sleep);
        assert!(pre_stop.is_some_and(|s| s.seconds > 0));
        assert!(container.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some());
        assert_eq!(
            container.image.as_deref(),
            Some(
                format!(
                    "ghcr.io/saaschat/saaschat-{}:{}",
                    deployment.metadata.name.unwrap_or_default(),
                    env!("CARGO_PKG_VERSION")
                )
                .as_str()
            )
        );
    }
}

#[test]
fn autoscalers_default_to_the_design_bounds() {
    let state = build(&Inputs::new(tenant("acme")));
    assert_eq!(
        hpa_bounds(&state),
        [
            ("auth".into(), Some(2), 10),
            ("billing".into(), Some(2), 8),
            ("chat".into(), Some(3), 20),
            ("email-worker".into(), Some(1), 4),
        ]
    );
    assert_eq!(
        deployment_replicas(&state),
        [
            ("auth".into(), Some(2)),
            ("billing".into(), Some(2)),
            ("chat".into(), Some(3)),
            ("email-worker".into(), Some(1))
        ],
        "a new service starts at its autoscaler's minimum"
    );
}

#[test]
fn replicas_chosen_by_the_autoscaler_are_carried_over() {
    let mut inputs = Inputs::new(tenant("acme"));
    inputs.replicas = BTreeMap::from([(Component::Chat, 7), (Component::Auth, 0)]);
    let replicas = deployment_replicas(&build(&inputs));
    assert!(replicas.contains(&("chat".into(), Some(7))), "kept: {replicas:?}");
    assert!(replicas.contains(&("auth".into(), Some(2))), "a stopped service starts at the minimum: {replicas:?}");
}

#[test]
fn tenant_overrides_and_plan_caps_shape_the_autoscalers() {
    let mut custom = tenant("acme");
    custom.spec.components.chat.min_replicas = 4;
    custom.spec.components.chat.max_replicas = 6;
    custom.spec.components.chat.image = Some("registry.local/chat:dev".into());
    let mut inputs = Inputs::new(custom);
    let state = build(&inputs);
    assert!(hpa_bounds(&state).contains(&("chat".into(), Some(4), 6)));
    let chat = typed::<Deployment>(&state, OwnedKind::Deployment)
        .into_iter()
        .find(|d| d.metadata.name.as_deref() == Some("chat"))
        .expect("chat");
    assert_eq!(
        chat.spec.and_then(|s| s.template.spec).expect("pod").containers[0].image.as_deref(),
        Some("registry.local/chat:dev")
    );

    inputs.plan = EffectivePlan::of(PlanName::Free, None);
    let capped = build(&inputs);
    assert_eq!(
        hpa_bounds(&capped),
        [("email-worker".into(), Some(1), 2)],
        "the free plan's cap leaves only the email worker room to scale"
    );
}

#[test]
fn a_service_whose_bounds_meet_runs_exactly_that_many_without_an_autoscaler() {
    let mut inputs = Inputs::new(tenant("acme"));
    inputs.plan = EffectivePlan::of(PlanName::Free, None);
    // As if scaled by hand, or by an autoscaler from before the plan changed.
    inputs.replicas = BTreeMap::from([(Component::Chat, 7), (Component::Auth, 1), (Component::EmailWorker, 2)]);
    let state = build(&inputs);
    assert_eq!(names_of(&state, OwnedKind::HorizontalPodAutoscaler), ["email-worker"]);
    assert_eq!(
        deployment_replicas(&state),
        [
            ("auth".into(), Some(2)),
            ("billing".into(), Some(2)),
            ("chat".into(), Some(3)),
            ("email-worker".into(), Some(2))
        ],
        "pinned services are set back to their bound; the autoscaled one keeps its choice"
    );
}

#[test]
fn suspend_stops_every_service_and_keeps_the_data_stores() {
    let mut inputs = Inputs::new(tenant("acme"));
    inputs.suspension = Suspension::Requested;
    let state = build(&inputs);
    assert!(deployment_replicas(&state).iter().all(|(_, r)| *r == Some(0)));
    assert!(hpa_bounds(&state).is_empty(), "no autoscaler may scale a suspended service up");
    assert_eq!(names_of(&state, OwnedKind::StatefulSet), ["postgres", "redis"]);
    assert_eq!(state.secrets.len(), 4, "secrets are kept");

    inputs.suspension = Suspension::None;
    inputs.replicas = deployment_replicas(&state)
        .into_iter()
        .map(|(name, replicas)| (component_named(&name), replicas.unwrap_or_default()))
        .collect();
    let resumed = build(&inputs);
    assert!(deployment_replicas(&resumed).iter().all(|(_, r)| r.is_some_and(|r| r >= 1)), "back at the minimum");
    assert_eq!(hpa_bounds(&resumed).len(), 4);
}

#[test]
fn an_ended_subscription_stops_chat_only() {
    let mut inputs = Inputs::new(tenant("acme"));
    inputs.suspension = Suspension::SubscriptionEnded(SubscriptionState::Canceled);
    let state = build(&inputs);
    for (name, replicas) in deployment_replicas(&state) {
        assert_eq!(replicas == Some(0), name == "chat", "{name}");
    }
    assert_eq!(names_of(&state, OwnedKind::HorizontalPodAutoscaler), ["auth", "billing", "email-worker"]);
}

#[test]
fn an_external_database_replaces_the_managed_one() {
    let mut external = tenant("acme");
    external.spec.database.mode = DataStoreMode::External;
    external.spec.database.external_secret_ref = Some(SecretKeyRef { name: "acme-db".into(), key: "url".into() });
    let state = build(&Inputs::new(external));
    assert_eq!(names_of(&state, OwnedKind::StatefulSet), ["redis"]);
    assert!(!names_of(&state, OwnedKind::Service).contains(&"postgres".to_string()));
    assert!(!names_of(&state, OwnedKind::ServiceAccount).contains(&"postgres".to_string()));
    let database = state.secrets.iter().find(|s| s.name() == "postgres-credentials").expect("database secret");
    match &database.source {
        SecretSource::Copied(keys) => {
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0].key, "url");
            assert_eq!(keys[0].source.name, "acme-db");
        }
        other => panic!("external database secret must be copied, got {other:?}"),
    }
    // The services still reach it: port 5432 is allowed out of the namespace.
    let auth_policy = typed::<NetworkPolicy>(&state, OwnedKind::NetworkPolicy)
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some("auth"))
        .expect("auth policy");
    let egress = serde_json::to_string(&auth_policy.spec.and_then(|s| s.egress)).expect("json");
    assert!(egress.contains("0.0.0.0/0") && egress.contains("5432"), "{egress}");
}

#[test]
fn copies_are_remembered_until_their_reference_leaves_the_spec() {
    let mut with_stripe = tenant("acme");
    with_stripe.spec.stripe = Some(saaschat_crds::StripeSpec {
        secret_ref: saaschat_crds::SecretRef { name: "stripe-acme".into() },
        prices: Default::default(),
    });
    let before = build(&Inputs::new(with_stripe));
    let remembered = remembered_copies(&[], &before.secrets);
    assert_eq!(remembered, ["provider-openai", "stripe-credentials"]);
    assert!(stale_copies(&remembered, &before.secrets).is_empty(), "nothing stale while referenced");

    // Stripe leaves the spec: its copy is stale, and stays remembered until it is deleted.
    let after = build(&Inputs::new(tenant("acme")));
    assert_eq!(stale_copies(&remembered, &after.secrets), ["stripe-credentials"]);
    assert_eq!(remembered_copies(&remembered, &after.secrets), ["provider-openai", "stripe-credentials"]);

    // A remembered name that is a generated Secret now (an external database made managed) is not stale.
    let previous = vec!["postgres-credentials".to_string(), "provider-openai".to_string()];
    assert!(stale_copies(&previous, &after.secrets).is_empty());
}

#[test]
fn generated_secrets_are_the_keys_and_managed_passwords() {
    let state = build(&Inputs::new(tenant("acme")));
    let generated: Vec<_> = state
        .secrets
        .iter()
        .filter_map(|s| match s.source {
            SecretSource::Generated(kind) => Some((s.name().to_string(), kind, s.retained_with_data)),
            SecretSource::Copied(_) => None,
        })
        .collect();
    assert_eq!(
        generated,
        [
            ("jwt-signing-key".into(), GeneratedSecret::JwtSigningKey, false),
            ("postgres-credentials".into(), GeneratedSecret::Postgres, true),
            ("redis-credentials".into(), GeneratedSecret::Redis, true),
        ]
    );
}

#[test]
fn ingress_follows_the_host_and_tls_settings() {
    let with_ingress = |tls: serde_json::Value| -> ChatTenant {
        let mut t = tenant("acme");
        t.spec.ingress = Some(
            serde_json::from_value(
                serde_json::json!({"host": "acme.chat.example.com", "className": "nginx", "tls": tls}),
            )
            .expect("ingress"),
        );
        t
    };
    let issued = build(&Inputs::new(with_ingress(serde_json::json!({"clusterIssuer": "letsencrypt"}))));
    let ingress = &typed::<Ingress>(&issued, OwnedKind::Ingress)[0];
    assert_eq!(
        ingress.metadata.annotations.clone().unwrap_or_default()["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
    let spec = ingress.spec.clone().expect("spec");
    assert_eq!(spec.tls.expect("tls")[0].secret_name.as_deref(), Some("tenant-tls"));
    let paths = &spec.rules.expect("rules")[0].http.clone().expect("http").paths;
    let routes: Vec<_> = paths
        .iter()
        .map(|p| (p.path.clone().unwrap_or_default(), p.backend.service.clone().expect("service").name))
        .collect();
    assert!(routes.contains(&("/".into(), "chat".into())));
    assert!(routes.contains(&("/v1/auth".into(), "auth".into())));
    assert_eq!(tenant_url(&issued_tenant()), "https://acme.chat.example.com");

    let own_secret = build(&Inputs::new(with_ingress(serde_json::json!({"secretName": "acme-cert"}))));
    let ingress = &typed::<Ingress>(&own_secret, OwnedKind::Ingress)[0];
    assert!(ingress.metadata.annotations.is_none());
    assert_eq!(ingress.spec.clone().and_then(|s| s.tls).expect("tls")[0].secret_name.as_deref(), Some("acme-cert"));

    fn issued_tenant() -> ChatTenant {
        let mut t = tenant("acme");
        t.spec.ingress = Some(
            serde_json::from_value(
                serde_json::json!({"host": "acme.chat.example.com", "tls": {"clusterIssuer": "le"}}),
            )
            .expect("ingress"),
        );
        t
    }
}

#[test]
fn network_policies_deny_by_default_and_allow_exactly_the_needed_paths() {
    let state = build(&Inputs::new(tenant("acme")));
    let policies = typed::<NetworkPolicy>(&state, OwnedKind::NetworkPolicy);
    let by_name = |name: &str| {
        policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .and_then(|p| p.spec.clone())
            .unwrap_or_else(|| panic!("policy {name}"))
    };
    let deny = by_name("default-deny");
    assert_eq!(deny.pod_selector, Some(Default::default()));
    assert_eq!(deny.policy_types, Some(vec!["Ingress".into(), "Egress".into()]));
    assert!(deny.ingress.is_none() && deny.egress.is_none());

    let sources = |spec: &k8s_openapi::api::networking::v1::NetworkPolicySpec| -> Vec<String> {
        let mut sources: Vec<String> = spec
            .ingress
            .iter()
            .flatten()
            .flat_map(|rule| rule.from.iter().flatten())
            .map(|peer| match (&peer.pod_selector, &peer.namespace_selector) {
                (Some(pods), None) => pods.match_labels.clone().unwrap_or_default()[names::LABEL_COMPONENT].clone(),
                (None, Some(ns)) => {
                    format!("ns:{}", ns.match_labels.clone().unwrap_or_default()["kubernetes.io/metadata.name"])
                }
                _ => "other".into(),
            })
            .collect();
        sources.sort();
        sources
    };
    assert_eq!(sources(&by_name("postgres")), ["auth", "billing", "chat"]);
    assert_eq!(sources(&by_name("redis")), ["auth", "billing", "chat", "email-worker"]);
    assert_eq!(sources(&by_name("auth")), ["billing", "chat", "ns:ingress-nginx"]);
    assert_eq!(sources(&by_name("chat")), ["ns:ingress-nginx"]);
    assert!(sources(&by_name("email-worker")).is_empty(), "nothing calls the email worker");

    let internet = |name: &str| -> String {
        serde_json::to_string(
            &by_name(name)
                .egress
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.to.iter().flatten().any(|peer| peer.ip_block.is_some()))
                .collect::<Vec<_>>(),
        )
        .expect("json")
    };
    assert!(internet("chat").contains("443"), "chat reaches the AI providers");
    assert!(internet("chat").contains("169.254.169.254/32"), "but never the metadata endpoint");
    assert_eq!(internet("auth"), "[]", "auth never leaves the namespace");
    assert_eq!(internet("postgres"), "[]");
}

#[test]
fn telemetry_settings_reach_every_service_and_its_network_policy() {
    let env_of = |state: &DesiredState| -> Vec<(String, Vec<(String, String)>)> {
        let pods = typed::<Deployment>(state, OwnedKind::Deployment)
            .into_iter()
            .map(|d| (d.metadata.name, d.spec.and_then(|s| s.template.spec)))
            .chain(
                typed::<StatefulSet>(state, OwnedKind::StatefulSet)
                    .into_iter()
                    .map(|s| (s.metadata.name, s.spec.and_then(|s| s.template.spec))),
            );
        let mut env: Vec<_> = pods
            .map(|(name, pod)| {
                let telemetry = pod
                    .map(|pod| pod.containers.into_iter().flat_map(|c| c.env.unwrap_or_default()).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|var| var.name.starts_with("OTEL_EXPORTER") || var.name.starts_with("SENTRY"))
                    .map(|var| (var.name, var.value.unwrap_or_default()))
                    .collect();
                (name.unwrap_or_default(), telemetry)
            })
            .collect();
        env.sort();
        env
    };
    let unset = build(&Inputs::new(tenant("acme")));
    assert!(env_of(&unset).iter().all(|(_, telemetry)| telemetry.is_empty()), "nothing is sent unless configured");

    let mut inputs = Inputs::new(tenant("acme"));
    inputs.settings.tenant_otlp_endpoint =
        Some(EgressUrl::otlp_endpoint("http://otel-collector.observability.svc:4318").expect("endpoint"));
    inputs.settings.tenant_sentry_dsn =
        Some(EgressUrl::sentry_dsn("https://abc123@o1.ingest.sentry.io:8443/42").expect("dsn"));
    inputs.settings.tenant_sentry_environment = Some("production".into());
    let state = build(&inputs);
    let expected = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), "http://otel-collector.observability.svc:4318".to_string()),
        ("SENTRY_DSN".to_string(), "https://abc123@o1.ingest.sentry.io:8443/42".to_string()),
        ("SENTRY_ENVIRONMENT".to_string(), "production".to_string()),
    ];
    let telemetry_env = env_of(&state);
    assert_eq!(telemetry_env.len(), 6, "four services and two data stores");
    for (name, telemetry) in telemetry_env {
        if ["postgres", "redis"].contains(&name.as_str()) {
            assert!(telemetry.is_empty(), "{name} is not ours to instrument");
        } else {
            assert_eq!(telemetry, expected, "{name}");
        }
    }

    for policy in typed::<NetworkPolicy>(&state, OwnedKind::NetworkPolicy) {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let egress = policy.spec.and_then(|s| s.egress).unwrap_or_default();
        let to_collector = egress.iter().any(|rule| {
            let peers = rule.to.clone().unwrap_or_default();
            let ports = serde_json::to_string(&rule.ports).expect("json");
            peers.iter().any(|peer| {
                peer.namespace_selector.as_ref().and_then(|s| s.match_labels.clone()).is_some_and(|labels| {
                    labels.get("kubernetes.io/metadata.name").map(String::as_str) == Some("observability")
                })
            }) && ports.contains("4318")
        });
        let to_sentry = egress.iter().any(|rule| {
            let outside = rule.to.iter().flatten().any(|peer| peer.ip_block.is_some());
            outside && serde_json::to_string(&rule.ports).expect("json").contains("8443")
        });
        if Component::SERVICES.iter().any(|c| c.name() == name) {
            assert!(to_collector && to_sentry, "{name} reaches the collector and Sentry");
        } else {
            assert!(!to_collector && !to_sentry, "{name} sends no telemetry");
        }
    }
}

#[test]
fn the_providers_proxy_reaches_the_chat_service_and_its_network_policy_only() {
    let mut inputs = Inputs::new(tenant("acme"));
    inputs.settings.tenant_https_proxy =
        Some(EgressUrl::https_proxy("http://egress-proxy.network.svc:3128").expect("proxy"));
    inputs.settings.tenant_no_proxy = Some(".internal.example".into());
    let state = build(&inputs);
    for deployment in typed::<Deployment>(&state, OwnedKind::Deployment) {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let proxy_env: Vec<(String, String)> = deployment
            .spec
            .and_then(|s| s.template.spec)
            .map(|pod| pod.containers.into_iter().flat_map(|c| c.env.unwrap_or_default()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|var| var.name.ends_with("_PROXY"))
            .map(|var| (var.name, var.value.unwrap_or_default()))
            .collect();
        if name == "chat" {
            let expected = [("HTTPS_PROXY", "http://egress-proxy.network.svc:3128"), ("NO_PROXY", ".internal.example")];
            assert_eq!(proxy_env, expected.map(|(n, v)| (n.to_string(), v.to_string())), "{name}");
        } else {
            assert!(proxy_env.is_empty(), "{name} calls no provider: {proxy_env:?}");
        }
    }
    for policy in typed::<NetworkPolicy>(&state, OwnedKind::NetworkPolicy) {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let to_proxy = policy.spec.and_then(|s| s.egress).unwrap_or_default().iter().any(|rule| {
            rule.to.iter().flatten().any(|peer| {
                peer.namespace_selector.as_ref().and_then(|s| s.match_labels.clone()).is_some_and(|labels| {
                    labels.get("kubernetes.io/metadata.name").map(String::as_str) == Some("network")
                })
            }) && serde_json::to_string(&rule.ports).expect("json").contains("3128")
        });
        assert_eq!(to_proxy, name == "chat", "{name}");
    }
}

#[test]
fn the_config_map_lists_allowed_models_with_prices_and_no_secrets() {
    let state = build(&Inputs::new(tenant("acme")));
    let config = &typed::<ConfigMap>(&state, OwnedKind::ConfigMap)[0];
    let text = &config.data.clone().unwrap_or_default()[saaschat_contract::paths::CONFIG_FILE_NAME];
    let document: serde_json::Value = serde_json::from_str(text).expect("json");
    let models = &document["providers"][0]["models"];
    assert_eq!(models.as_array().map(Vec::len), Some(1), "only the allowed model: {models}");
    assert_eq!(models[0]["name"], "gpt-4o-mini");
    assert_eq!(models[0]["inputPricePerMillion"], "0.15");
    assert_eq!(document["providers"][0]["baseUrl"], "https://api.openai.com/v1");
    assert_eq!(document["providers"][0]["apiKeyFile"], "/var/run/secrets/saaschat/providers/openai/api-key");
    assert_eq!(document["plan"]["name"], "enterprise");
    assert_eq!(document["defaultModel"], "gpt-4o-mini");
}

#[test]
fn deletion_policy_decides_what_happens_to_the_volumes() {
    for (policy, expected) in [(DeletionPolicy::Retain, "Retain"), (DeletionPolicy::Delete, "Delete")] {
        let mut t = tenant("acme");
        t.spec.deletion_policy = policy;
        let state = build(&Inputs::new(t));
        for set in typed::<StatefulSet>(&state, OwnedKind::StatefulSet) {
            let retention = set.spec.and_then(|s| s.persistent_volume_claim_retention_policy).expect("policy");
            assert_eq!(retention.when_deleted.as_deref(), Some(expected));
        }
    }
    let state = build(&Inputs::new(tenant("acme")));
    let postgres = typed::<StatefulSet>(&state, OwnedKind::StatefulSet)
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some("postgres"))
        .expect("postgres");
    let claim = &postgres.spec.and_then(|s| s.volume_claim_templates).expect("claims")[0];
    let size = &claim.spec.clone().and_then(|s| s.resources).and_then(|r| r.requests).expect("requests")["storage"];
    assert_eq!(size.0, "15Gi", "default size from the design");
}

fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

#[test]
fn a_tenant_name_of_maximum_length_yields_valid_names_everywhere() {
    let longest = "a".repeat(saaschat_crds::MAX_TENANT_NAME_LENGTH);
    let mut long_tenant = tenant(&longest);
    long_tenant.spec.providers[0].name = "p".repeat(63);
    let mut inputs = Inputs::new(long_tenant);
    inputs.providers[0].name = "p".repeat(63);
    let state = build(&inputs);
    for object in &state.objects {
        let name = object.name();
        if matches!(object.kind, OwnedKind::Namespace | OwnedKind::Service) {
            assert!(is_dns_label(name), "{name} must be a DNS-1123 label");
        } else {
            assert!(name.len() <= 253 && !name.is_empty(), "{name}");
        }
        if let Some(namespace) = object.namespace() {
            assert!(is_dns_label(namespace), "{namespace}");
        }
        for (key, value) in object.object.metadata.labels.clone().unwrap_or_default() {
            assert!(value.len() <= 63, "label {key}={value} too long");
        }
    }
    for pod in pod_specs(&state) {
        for volume in pod.volumes.iter().flatten() {
            assert!(is_dns_label(&volume.name), "volume name {}", volume.name);
        }
    }
    for secret in &state.secrets {
        assert!(secret.name().len() <= 253, "{}", secret.name());
    }
}

#[test]
fn the_same_input_builds_the_same_objects() {
    let inputs = Inputs::new(tenant("acme"));
    assert_eq!(build(&inputs), build(&inputs));
}

#[test]
fn render_without_a_uid_has_no_owner_references() {
    let mut t = tenant("acme");
    t.metadata.uid = None;
    let state = build(&Inputs::new(t));
    assert!(state.objects.iter().all(|o| o.object.metadata.owner_references.is_none()));
}

#[test]
fn url_ports_follow_scheme_and_explicit_port() {
    assert_eq!(url_port("https://api.openai.com/v1"), Some(443));
    assert_eq!(url_port("http://vllm.ai.svc:8000/v1"), Some(8000));
    assert_eq!(url_port("http://ollama.local"), Some(80));
    assert_eq!(url_port("https://[::1]:8443/v1"), Some(8443));
    assert_eq!(url_port("https://user@host:99999/"), Some(443), "an impossible port falls back to the scheme's");
    assert_eq!(url_port("ftp://example.com"), None);
}
