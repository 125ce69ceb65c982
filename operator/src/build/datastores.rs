//! The managed PostgreSQL and Redis: single-replica StatefulSets with a PVC and a headless Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, SecretKeySelector, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use saaschat_crds::{DeletionPolicy, Resources, Storage};

use super::security::{DATA_STORE_UID, container_security_context, pod_security_context};
use super::workloads::resources;
use super::{DesiredObject, TenantInputs};
use crate::kinds::OwnedKind;
use crate::names::{self, Component, secret};

pub const POSTGRES_PORT: i32 = 5432;
pub const REDIS_PORT: i32 = 6379;
const DEFAULT_POSTGRES_SIZE: &str = "15Gi";
const DEFAULT_REDIS_SIZE: &str = "1Gi";
/// The PVC template name; PVCs are called `data-postgres-0` and `data-redis-0`.
pub const DATA_VOLUME: &str = "data";

/// StatefulSets and headless Services of the data stores the tenant runs itself.
pub fn data_stores(inputs: &TenantInputs<'_>) -> Vec<DesiredObject> {
    let mut objects = Vec::new();
    if inputs.managed_postgres() {
        objects.push(headless_service(inputs, Component::Postgres, POSTGRES_PORT));
        objects.push(DesiredObject::new(OwnedKind::StatefulSet, postgres(inputs)));
    }
    if inputs.managed_redis() {
        objects.push(headless_service(inputs, Component::Redis, REDIS_PORT));
        objects.push(DesiredObject::new(OwnedKind::StatefulSet, redis(inputs)));
    }
    objects
}

fn headless_service(inputs: &TenantInputs<'_>, component: Component, port: i32) -> DesiredObject {
    DesiredObject::new(
        OwnedKind::Service,
        Service {
            metadata: inputs.meta(component.name(), Some(component)),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some(names::selector_labels(inputs.name(), component)),
                ports: Some(vec![ServicePort {
                    name: Some(component.name().into()),
                    port,
                    target_port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        },
    )
}

fn postgres(inputs: &TenantInputs<'_>) -> StatefulSet {
    let secret_env = |name: &str, key: &str| env_from_secret(name, secret::POSTGRES, key);
    let container = Container {
        name: Component::Postgres.name().into(),
        image: Some(inputs.settings.postgres_image.clone()),
        ports: Some(vec![port(Component::Postgres, POSTGRES_PORT)]),
        env: Some(vec![
            secret_env("POSTGRES_USER", "username"),
            secret_env("POSTGRES_PASSWORD", "password"),
            secret_env("POSTGRES_DB", "database"),
            EnvVar {
                name: "PGDATA".into(),
                value: Some("/var/lib/postgresql/data/pgdata".into()),
                ..EnvVar::default()
            },
        ]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    "pg_isready -h 127.0.0.1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"".into(),
                ]),
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        liveness_probe: Some(tcp_probe(POSTGRES_PORT)),
        resources: Some(resources(Some(&data_store_resources("250m", "256Mi", "1Gi")))),
        security_context: Some(container_security_context(false)),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, "/var/lib/postgresql/data"),
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
        ]),
        ..Container::default()
    };
    let storage = inputs.tenant.spec.database.storage.as_ref();
    stateful_set(inputs, Component::Postgres, container, storage, DEFAULT_POSTGRES_SIZE)
}

fn redis(inputs: &TenantInputs<'_>) -> StatefulSet {
    let container = Container {
        name: Component::Redis.name().into(),
        image: Some(inputs.settings.redis_image.clone()),
        // The password reaches redis-server as an argument expanded by the kubelet, never through the spec.
        args: Some(vec![
            "redis-server".into(),
            "--appendonly".into(),
            "yes".into(),
            "--dir".into(),
            "/data".into(),
            "--requirepass".into(),
            "$(REDIS_PASSWORD)".into(),
        ]),
        ports: Some(vec![port(Component::Redis, REDIS_PORT)]),
        env: Some(vec![env_from_secret("REDIS_PASSWORD", secret::REDIS, "password")]),
        readiness_probe: Some(tcp_probe(REDIS_PORT)),
        liveness_probe: Some(tcp_probe(REDIS_PORT)),
        resources: Some(resources(Some(&data_store_resources("100m", "64Mi", "512Mi")))),
        security_context: Some(container_security_context(false)),
        volume_mounts: Some(vec![mount(DATA_VOLUME, "/data"), mount("tmp", "/tmp")]),
        ..Container::default()
    };
    let storage = inputs.tenant.spec.redis.storage.as_ref();
    stateful_set(inputs, Component::Redis, container, storage, DEFAULT_REDIS_SIZE)
}

fn stateful_set(
    inputs: &TenantInputs<'_>,
    component: Component,
    container: Container,
    storage: Option<&Storage>,
    default_size: &str,
) -> StatefulSet {
    let size = storage.and_then(|s| s.size.clone()).unwrap_or_else(|| default_size.into());
    let storage_class_name = storage.and_then(|s| s.storage_class_name.clone());
    let when_deleted = match inputs.tenant.spec.deletion_policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    let mut scratch = vec![empty_dir("tmp")];
    if component == Component::Postgres {
        scratch.push(empty_dir("run"));
    }
    StatefulSet {
        metadata: inputs.meta(component.name(), Some(component)),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(component.name().into()),
            selector: LabelSelector {
                match_labels: Some(names::selector_labels(inputs.name(), component)),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(when_deleted.into()),
                when_scaled: Some("Retain".into()),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names::labels(inputs.name(), Some(component))),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(component.name().into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security_context(DATA_STORE_UID)),
                    termination_grace_period_seconds: Some(60),
                    containers: vec![container],
                    volumes: Some(scratch),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.into()),
                    labels: Some(names::labels(inputs.name(), Some(component))),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name,
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([("storage".to_string(), Quantity(size))])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn data_store_resources(cpu: &str, memory_request: &str, memory_limit: &str) -> Resources {
    Resources {
        cpu_request: cpu.into(),
        memory_request: memory_request.into(),
        cpu_limit: None,
        memory_limit: memory_limit.into(),
    }
}

/// An environment variable taken from a Secret key that must exist.
pub(super) fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional: Some(false) }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn port(component: Component, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(component.name().into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn tcp_probe(port: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(port), ..TCPSocketAction::default() }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), ..VolumeMount::default() }
}
