//! Deployments and StatefulSets as the operator keeps them in memory: identity, a digest of the spec, the
//! replica count and the few status fields the tenant's conditions come from.
//!
//! A whole Deployment (its pod template above all) takes kilobytes once deserialized, and a tenant has six
//! workloads; the operator reads a handful of their fields.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::apply::hash_of;
use crate::names;

/// What the operator reads of a Deployment (`Workload<Deployment>`) or StatefulSet (`Workload<StatefulSet>`).
/// It deserializes from the whole object, keeping only that.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(from = "K", bound(deserialize = "K: DeserializeOwned, Workload<K>: From<K>"))]
pub struct Workload<K> {
    /// Identity, change markers and the tenant label (`names::keep_only_tenant_label`).
    pub metadata: ObjectMeta,
    /// SHA-256 of the spec without `replicas` (which the autoscaler owns), to notice edits by others.
    pub spec_digest: Option<[u8; 32]>,
    pub replicas: Option<i32>,
    pub status: WorkloadStatus,
    kind: PhantomData<fn() -> K>,
}

/// The status fields a workload's readiness is decided from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WorkloadStatus {
    pub observed_generation: Option<i64>,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    /// Deployments: the `Available` condition is true.
    pub available: bool,
    /// StatefulSets: every pod runs the current revision (`currentRevision == updateRevision`, or no update).
    pub revision_current: bool,
}

fn spec_digest<S: Serialize>(spec: Option<&S>) -> Option<[u8; 32]> {
    let mut value = serde_json::to_value(spec?).ok()?;
    if let Some(map) = value.as_object_mut() {
        map.remove("replicas");
    }
    Some(Sha256::digest(serde_json::to_vec(&value).ok()?).into())
}

fn slim_meta(mut metadata: ObjectMeta) -> ObjectMeta {
    names::keep_only_tenant_label(&mut metadata);
    metadata
}

impl<K> Workload<K> {
    /// Whether a watch event changed anything a tenant's reconcile reads (not the resourceVersion alone).
    pub fn fingerprint(&self) -> u64 {
        let meta = &self.metadata;
        hash_of((
            (&meta.uid, meta.generation, meta.deletion_timestamp.is_some(), &meta.labels),
            (self.spec_digest, self.replicas, &self.status),
        ))
    }
}

impl From<Deployment> for Workload<Deployment> {
    fn from(deployment: Deployment) -> Self {
        let status = deployment.status.unwrap_or_default();
        let available = status.conditions.iter().flatten().any(|c| c.type_ == "Available" && c.status == "True");
        Workload {
            spec_digest: spec_digest(deployment.spec.as_ref()),
            replicas: deployment.spec.as_ref().and_then(|spec| spec.replicas),
            status: WorkloadStatus {
                observed_generation: status.observed_generation,
                replicas: status.replicas.unwrap_or(0),
                ready_replicas: status.ready_replicas.unwrap_or(0),
                updated_replicas: status.updated_replicas.unwrap_or(0),
                available,
                revision_current: true,
            },
            metadata: slim_meta(deployment.metadata),
            kind: PhantomData,
        }
    }
}

impl From<StatefulSet> for Workload<StatefulSet> {
    fn from(set: StatefulSet) -> Self {
        let status = set.status.unwrap_or_default();
        let revision_current = status.update_revision.is_none() || status.current_revision == status.update_revision;
        Workload {
            spec_digest: spec_digest(set.spec.as_ref()),
            replicas: set.spec.as_ref().and_then(|spec| spec.replicas),
            status: WorkloadStatus {
                observed_generation: status.observed_generation,
                replicas: status.replicas,
                ready_replicas: status.ready_replicas.unwrap_or(0),
                updated_replicas: status.updated_replicas.unwrap_or(0),
                available: status.available_replicas.unwrap_or(0) >= set.spec.and_then(|s| s.replicas).unwrap_or(1),
                revision_current,
            },
            metadata: slim_meta(set.metadata),
            kind: PhantomData,
        }
    }
}

/// Turns a watch of whole workloads into a watch of their views, before anything is stored.
pub fn view_event<K>(event: watcher::Event<K>) -> watcher::Event<Workload<K>>
where
    Workload<K>: From<K>,
{
    match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(object.into()),
        watcher::Event::Delete(object) => watcher::Event::Delete(object.into()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(object.into()),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The view is addressed like the kind it describes, so it lives in a reflector store keyed the same way.
impl<K: Resource<DynamicType = ()>> Resource for Workload<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, StatefulSetSpec, StatefulSetStatus};

    fn deployment(replicas: i32, image: &str) -> Deployment {
        let mut spec: DeploymentSpec = serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "image": image}]}},
        }))
        .expect("spec");
        spec.replicas = Some(replicas);
        let mut metadata = ObjectMeta { name: Some("chat".into()), uid: Some("u1".into()), ..ObjectMeta::default() };
        metadata.annotations = Some([("deployment.kubernetes.io/revision".to_string(), "1".to_string())].into());
        Deployment { metadata, spec: Some(spec), status: None }
    }

    #[test]
    fn the_spec_digest_ignores_replicas_but_not_the_pod_template() {
        let one = Workload::from(deployment(1, "chat:1"));
        assert_eq!(one.spec_digest, Workload::from(deployment(3, "chat:1")).spec_digest);
        assert_ne!(one.spec_digest, Workload::from(deployment(1, "chat:2")).spec_digest);
        assert_eq!(one.replicas, Some(1));
        assert!(one.metadata.annotations.is_none(), "annotations are not kept");
    }

    #[test]
    fn the_fingerprint_moves_with_what_reconciles_read_and_not_with_the_resource_version() {
        let base = Workload::from(deployment(2, "chat:1"));
        let mut bumped = base.clone();
        bumped.metadata.resource_version = Some("42".into());
        assert_eq!(base.fingerprint(), bumped.fingerprint());
        let mut readier = base.clone();
        readier.status.ready_replicas = 1;
        assert_ne!(base.fingerprint(), readier.fingerprint());
        assert_ne!(base.fingerprint(), Workload::from(deployment(3, "chat:1")).fingerprint());
        assert_ne!(base.fingerprint(), Workload::from(deployment(2, "chat:2")).fingerprint());
    }

    #[test]
    fn a_stateful_set_is_current_when_no_update_is_pending() {
        let set = |current: &str, update: &str| StatefulSet {
            spec: Some(StatefulSetSpec { replicas: Some(1), ..StatefulSetSpec::default() }),
            status: Some(StatefulSetStatus {
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                available_replicas: Some(1),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        };
        assert!(Workload::from(set("r1", "r1")).status.revision_current);
        assert!(!Workload::from(set("r1", "r2")).status.revision_current);
        assert!(Workload::from(set("r1", "r1")).status.available);
    }
}
