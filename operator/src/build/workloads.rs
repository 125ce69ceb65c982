//! Deployments and Services of the four stateless services.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SecretVolumeSource, Service, ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use saaschat_crds::{ComponentSpec, Resources};

use super::datastores::env_from_secret;
use super::rbac::needs_api_token;
use super::security::{SERVICE_UID, container_security_context, pod_security_context};
use super::{DesiredObject, TenantInputs};
use crate::kinds::OwnedKind;
use crate::names::{self, Component, paths, secret};
use saaschat_contract::{env as contract_env, paths as contract_paths, ports};

/// Every service listens for HTTP (API, `/healthz`, `/readyz`) on this port.
pub const HTTP_PORT: i32 = ports::HTTP as i32;
/// Seconds a terminating pod keeps serving so that endpoints and load balancers stop sending to it first.
const PRE_STOP_DELAY_SECONDS: i64 = 5;
/// Streams get this long to finish after SIGTERM (above Kubernetes' default of 30).
const TERMINATION_GRACE_SECONDS: i64 = 45;

pub fn component_spec<'a>(inputs: &'a TenantInputs<'_>, component: Component) -> &'a ComponentSpec {
    let components = &inputs.tenant.spec.components;
    match component {
        Component::Auth => &components.auth,
        Component::Chat => &components.chat,
        Component::Billing => &components.billing,
        _ => &components.email_worker,
    }
}

pub fn services(inputs: &TenantInputs<'_>) -> Vec<DesiredObject> {
    Component::SERVICES
        .into_iter()
        .map(|component| {
            DesiredObject::new(
                OwnedKind::Service,
                Service {
                    metadata: inputs.meta(component.name(), Some(component)),
                    spec: Some(ServiceSpec {
                        selector: Some(names::selector_labels(inputs.name(), component)),
                        ports: Some(vec![ServicePort {
                            name: Some(ports::HTTP_NAME.into()),
                            port: HTTP_PORT,
                            target_port: Some(IntOrString::String(ports::HTTP_NAME.into())),
                            protocol: Some("TCP".into()),
                            ..ServicePort::default()
                        }]),
                        ..ServiceSpec::default()
                    }),
                    ..Service::default()
                },
            )
        })
        .collect()
}

/// Replicas belong to the HorizontalPodAutoscaler. The operator stops a service with 0 and starts it (new, or
/// resumed) at the autoscaler's minimum, so that it does not come up at 1 and wait for the autoscaler's next
/// sync. Otherwise it carries over the replicas the autoscaler (or a person) chose: leaving the field out of the
/// applied object would make server-side apply drop it, back to the default of 1. A service whose bounds meet
/// has no autoscaler (`scaling::autoscalers`) and runs exactly that many.
fn replicas(inputs: &TenantInputs<'_>, component: Component, spec: &ComponentSpec) -> i32 {
    if inputs.suspension.stops(component) {
        return 0;
    }
    let (min_replicas, max_replicas) = inputs.plan.replica_bounds(component, spec);
    match inputs.replicas.get(&component) {
        Some(&current) if current > 0 && min_replicas < max_replicas => current,
        _ => min_replicas,
    }
}

pub fn deployments(inputs: &TenantInputs<'_>) -> Vec<DesiredObject> {
    Component::SERVICES
        .into_iter()
        .map(|component| DesiredObject::new(OwnedKind::Deployment, deployment(inputs, component)))
        .collect()
}

fn deployment(inputs: &TenantInputs<'_>, component: Component) -> Deployment {
    let spec = component_spec(inputs, component);
    let selector = names::selector_labels(inputs.name(), component);
    let replicas = Some(replicas(inputs, component, spec));
    let (volumes, mounts) = volumes(inputs, component);
    let container = Container {
        name: component.name().into(),
        image: Some(spec.image.clone().unwrap_or_else(|| inputs.settings.service_image(component))),
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(vec![ContainerPort {
            name: Some(ports::HTTP_NAME.into()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env(inputs, component)),
        resources: Some(resources(spec.resources.as_ref())),
        readiness_probe: Some(http_probe(ports::READY_PATH, 2, 3)),
        liveness_probe: Some(http_probe(ports::HEALTH_PATH, 10, 3)),
        startup_probe: Some(http_probe(ports::HEALTH_PATH, 2, 30)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: PRE_STOP_DELAY_SECONDS }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(container_security_context(true)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Deployment {
        metadata: inputs.meta(component.name(), Some(component)),
        spec: Some(DeploymentSpec {
            replicas,
            revision_history_limit: Some(5),
            selector: LabelSelector { match_labels: Some(selector), ..LabelSelector::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names::labels(inputs.name(), Some(component))),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(component.name().into()),
                    automount_service_account_token: Some(needs_api_token(component)),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security_context(SERVICE_UID)),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ports::HTTP_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

const DEFAULT_RESOURCES: (&str, &str, &str) = ("100m", "128Mi", "512Mi");

pub fn resources(resources: Option<&Resources>) -> ResourceRequirements {
    let (cpu_request, memory_request, memory_limit, cpu_limit) = match resources {
        Some(r) => (r.cpu_request.as_str(), r.memory_request.as_str(), r.memory_limit.as_str(), r.cpu_limit.as_deref()),
        None => (DEFAULT_RESOURCES.0, DEFAULT_RESOURCES.1, DEFAULT_RESOURCES.2, None),
    };
    let mut limits = BTreeMap::from([("memory".to_string(), Quantity(memory_limit.into()))]);
    if let Some(cpu_limit) = cpu_limit {
        limits.insert("cpu".into(), Quantity(cpu_limit.into()));
    }
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu_request.into())),
            ("memory".to_string(), Quantity(memory_request.into())),
        ])),
        limits: Some(limits),
        ..ResourceRequirements::default()
    }
}

fn env(inputs: &TenantInputs<'_>, component: Component) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), ..EnvVar::default() };
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..ObjectFieldSelector::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env = vec![
        value(contract_env::TENANT, inputs.name().into()),
        value(contract_env::COMPONENT, component.name().into()),
        value(contract_env::CONFIG_FILE, format!("{}/{}", paths::CONFIG_DIR, contract_paths::CONFIG_FILE_NAME)),
        value(contract_env::LISTEN_ADDR, format!("0.0.0.0:{HTTP_PORT}")),
        value(contract_env::OTEL_SERVICE_NAME, component.telemetry_name()),
        field(contract_env::POD_NAME, "metadata.name"),
        field(contract_env::POD_NAMESPACE, "metadata.namespace"),
        env_from_secret(contract_env::REDIS_URL, secret::REDIS, "url"),
    ];
    // The email worker only reads the Redis stream; everything else keeps its state in PostgreSQL.
    if component.uses_database() {
        env.push(env_from_secret(contract_env::DATABASE_URL, secret::POSTGRES, "url"));
    }
    let settings = inputs.settings;
    if let Some(endpoint) = &settings.tenant_otlp_endpoint {
        env.push(value(contract_env::OTEL_EXPORTER_OTLP_ENDPOINT, endpoint.url.clone()));
    }
    // A DSN only lets its holder send events (Sentry's own clients embed it in web pages), so it is a plain value.
    if let Some(dsn) = &settings.tenant_sentry_dsn {
        env.push(value(contract_env::SENTRY_DSN, dsn.url.clone()));
    }
    if let Some(environment) = &settings.tenant_sentry_environment {
        env.push(value(contract_env::SENTRY_ENVIRONMENT, environment.clone()));
    }
    // Only HTTPS_PROXY: the chat service's plain-HTTP calls (the auth service, in-cluster model servers) stay
    // inside the cluster.
    if component == Component::Chat {
        if let Some(proxy) = &settings.tenant_https_proxy {
            env.push(value(contract_env::HTTPS_PROXY, proxy.url.clone()));
        }
        if let Some(no_proxy) = &settings.tenant_no_proxy {
            env.push(value(contract_env::NO_PROXY, no_proxy.clone()));
        }
    }
    env
}

fn volumes(inputs: &TenantInputs<'_>, component: Component) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::CONFIG_MAP.into(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount("config", paths::CONFIG_DIR),
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
    ];
    let mut secret_volume = |volume: String, secret: String, dir: String| {
        mounts.push(mount(&volume, &dir));
        volumes.push(Volume {
            name: volume,
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    };
    let spec = &inputs.tenant.spec;
    match component {
        Component::Auth => secret_volume("jwt".into(), secret::JWT_SIGNING_KEY.into(), paths::jwt_dir()),
        Component::Chat => {
            // Volume names are DNS labels of at most 63 characters, so they are numbered, not named after providers.
            for (index, provider) in inputs.providers.iter().enumerate() {
                let key_file = paths::provider_key_file(&provider.name);
                let dir = key_file.trim_end_matches("/api-key").to_string();
                secret_volume(format!("provider-{index}"), secret::provider(&provider.name), dir);
            }
        }
        Component::Billing if spec.stripe.is_some() => {
            secret_volume("stripe".into(), secret::STRIPE.into(), paths::stripe_dir())
        }
        Component::EmailWorker if spec.smtp.as_ref().is_some_and(|s| s.credentials_secret_ref.is_some()) => {
            secret_volume("smtp".into(), secret::SMTP.into(), paths::smtp_dir())
        }
        _ => {}
    }
    (volumes, mounts)
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..VolumeMount::default() }
}
