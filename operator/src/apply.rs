//! Server-side apply of desired objects, with no write when nothing changed.
//!
//! Every apply is forced with the one field manager. To keep an idle resync free of writes, the operator
//! remembers what it last applied to each object (a hash of the desired object) and the object's change marker
//! right after (`metadata.generation` for kinds with a spec/status split, `resourceVersion` for the others).
//! An object is applied again only when the desired object changed, or the cached copy in the reflector
//! store shows that somebody else changed it or deleted it (drift).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::build::DesiredObject;
use crate::kinds::OwnedKind;
use crate::metrics::Metrics;
use crate::names::{self, FIELD_MANAGER};
use crate::workload::Workload;

/// Which object, whatever its kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: OwnedKind,
    pub namespace: Option<String>,
    pub name: String,
}

/// What the operator knows about an object right after applying it, in 24 bytes: the ledger holds one per
/// object, some 30,000 at 1,000 tenants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    /// The first 128 bits of the SHA-256 of the desired object.
    desired: u128,
    /// A hash of the object's identity and change marker right after the apply (`Current::digest`).
    after: u64,
}

impl Fingerprint {
    fn new(desired: &DynamicObject, after: &Current) -> Self {
        Fingerprint { desired: desired_digest(desired), after: after.digest() }
    }
}

/// A 64-bit hash, stable within one process: for in-memory comparisons only, never stored or sent.
pub fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn change_marker(kind: OwnedKind, meta: &ObjectMeta) -> Option<String> {
    if kind.tracks_generation() { meta.generation.map(|g| g.to_string()) } else { meta.resource_version.clone() }
}

/// Identity and change marker of an object as it is now.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Current {
    uid: Option<String>,
    marker: Option<String>,
    deleting: bool,
    /// A Deployment's or StatefulSet's `spec.replicas`, kept apart from the marker (see `workload`).
    replicas: Option<i32>,
}

impl Current {
    pub fn of(kind: OwnedKind, meta: &ObjectMeta) -> Self {
        Current {
            uid: meta.uid.clone(),
            marker: change_marker(kind, meta),
            deleting: meta.deletion_timestamp.is_some(),
            replicas: None,
        }
    }

    /// A Deployment's or StatefulSet's change marker is its spec without `replicas`, which the autoscaler owns:
    /// a scale by the autoscaler bumps the generation too, and must not count as drift. The replicas are
    /// compared with the desired ones instead (`decide`), which carry the autoscaler's choice over.
    fn workload<K>(workload: &Workload<K>) -> Self {
        Current {
            marker: workload.spec_digest.map(|digest| digest.iter().map(|b| format!("{b:02x}")).collect()),
            uid: workload.metadata.uid.clone(),
            deleting: workload.metadata.deletion_timestamp.is_some(),
            replicas: workload.replicas,
        }
    }

    /// What must stay the same for an applied object to be untouched since (the replicas are not in it).
    fn digest(&self) -> u64 {
        hash_of((&self.uid, &self.marker, self.deleting))
    }

    /// The state of an object as returned by the API server after an apply.
    fn applied(kind: OwnedKind, object: &DynamicObject) -> Self {
        let full = || serde_json::to_value(object).ok();
        match kind {
            OwnedKind::Deployment => full()
                .and_then(|v| serde_json::from_value::<Deployment>(v).ok())
                .map_or_else(|| Current::of(kind, &object.metadata), |d| Current::workload(&Workload::from(d))),
            OwnedKind::StatefulSet => full()
                .and_then(|v| serde_json::from_value::<StatefulSet>(v).ok())
                .map_or_else(|| Current::of(kind, &object.metadata), |s| Current::workload(&Workload::from(s))),
            _ => Current::of(kind, &object.metadata),
        }
    }
}

fn desired_digest(object: &DynamicObject) -> u128 {
    let digest = Sha256::digest(serde_json::to_vec(object).unwrap_or_default());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// The decision for one object; pure, so it is tested without a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyDecision {
    /// Identical to what was applied last, and nobody touched it since.
    UpToDate,
    /// Absent, changed by somebody else, or the desired state changed.
    Apply,
}

fn decide(object: &DynamicObject, last: Option<&Fingerprint>, current: Option<&Current>) -> ApplyDecision {
    let (Some(last), Some(current)) = (last, current) else {
        return ApplyDecision::Apply;
    };
    // Scaled away from what is desired: by hand, where the operator keeps the count itself.
    let rescaled = current.replicas.is_some() && current.replicas != desired_replicas(object);
    let unchanged =
        last.desired == desired_digest(object) && last.after == current.digest() && !current.deleting && !rescaled;
    if unchanged { ApplyDecision::UpToDate } else { ApplyDecision::Apply }
}

fn desired_replicas(object: &DynamicObject) -> Option<i32> {
    object.data.get("spec")?.get("replicas")?.as_i64().and_then(|replicas| i32::try_from(replicas).ok())
}

/// The reflector stores through which the operator sees the objects it owns (metadata only, except where
/// status matters and `Workload` views are kept).
#[derive(Clone, Default)]
pub struct OwnedStores {
    stores: BTreeMap<OwnedKind, Store<PartialObjectMeta<DynamicObject>>>,
    deployments: Option<Store<Workload<Deployment>>>,
    stateful_sets: Option<Store<Workload<StatefulSet>>>,
}

fn reference<K: Resource>(key: &ObjectKey, dyntype: K::DynamicType) -> ObjectRef<K> {
    let reference = ObjectRef::new_with(&key.name, dyntype);
    match &key.namespace {
        Some(namespace) => reference.within(namespace),
        None => reference,
    }
}

fn keys_of_tenant<K: Resource>(kind: OwnedKind, objects: Vec<Arc<K>>, tenant: &str) -> impl Iterator<Item = ObjectKey> {
    objects
        .into_iter()
        .filter(move |o| o.labels().get(names::LABEL_TENANT).map(String::as_str) == Some(tenant))
        .map(move |o| ObjectKey { kind, namespace: o.namespace(), name: o.name_any() })
}

impl OwnedStores {
    pub fn insert(&mut self, kind: OwnedKind, store: Store<PartialObjectMeta<DynamicObject>>) {
        self.stores.insert(kind, store);
    }

    /// Deployments and StatefulSets are watched as `Workload` views (their status matters), so their metadata
    /// comes from there.
    pub fn set_workload_stores(
        &mut self,
        deployments: Store<Workload<Deployment>>,
        stateful_sets: Store<Workload<StatefulSet>>,
    ) {
        self.deployments = Some(deployments);
        self.stateful_sets = Some(stateful_sets);
    }

    /// The object as the reflector stores see it now.
    pub fn current(&self, key: &ObjectKey) -> Option<Current> {
        match key.kind {
            OwnedKind::Deployment => self.deployments.as_ref()?.get(&reference(key, ())).map(|d| Current::workload(&d)),
            OwnedKind::StatefulSet => {
                self.stateful_sets.as_ref()?.get(&reference(key, ())).map(|s| Current::workload(&s))
            }
            kind => self.meta(key).map(|meta| Current::of(kind, &meta)),
        }
    }

    pub fn meta(&self, key: &ObjectKey) -> Option<ObjectMeta> {
        match key.kind {
            OwnedKind::Deployment => self.deployments.as_ref()?.get(&reference(key, ())).map(|o| o.metadata.clone()),
            OwnedKind::StatefulSet => self.stateful_sets.as_ref()?.get(&reference(key, ())).map(|o| o.metadata.clone()),
            kind => self.stores.get(&kind)?.get(&reference(key, kind.api_resource())).map(|o| o.metadata.clone()),
        }
    }

    /// Objects of one tenant that the operator manages, as found in the stores: those in the tenant's own
    /// namespace only. Labels can be written by anyone who may write an object, so a label naming the tenant on
    /// an object elsewhere proves nothing, and such an object is never the operator's to delete.
    pub fn of_tenant(&self, tenant: &str, namespace: &str) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        for (kind, store) in &self.stores {
            keys.extend(keys_of_tenant(*kind, store.state(), tenant));
        }
        if let Some(store) = &self.deployments {
            keys.extend(keys_of_tenant(OwnedKind::Deployment, store.state(), tenant));
        }
        if let Some(store) = &self.stateful_sets {
            keys.extend(keys_of_tenant(OwnedKind::StatefulSet, store.state(), tenant));
        }
        keys.retain(|key| key.namespace.as_deref() == Some(namespace));
        keys
    }

    pub async fn wait_until_ready(&self) {
        // A dropped writer means the operator is shutting down; the reconcile then fails on its API calls.
        for store in self.stores.values() {
            let _ = store.wait_until_ready().await;
        }
        if let Some(store) = &self.deployments {
            let _ = store.wait_until_ready().await;
        }
        if let Some(store) = &self.stateful_sets {
            let _ = store.wait_until_ready().await;
        }
    }
}

/// Remembers the last apply per object; shared by every reconcile of the controller. Entries are grouped by
/// namespace ("" for cluster-scoped objects) and keyed by a hash of kind and name, so that an entry holds no
/// strings.
#[derive(Clone, Default)]
pub struct Ledger {
    entries: Arc<Mutex<HashMap<String, HashMap<u64, Fingerprint>>>>,
}

fn ledger_slot(key: &ObjectKey) -> (&str, u64) {
    (key.namespace.as_deref().unwrap_or_default(), hash_of((key.kind, &key.name)))
}

impl Ledger {
    fn get(&self, key: &ObjectKey) -> Option<Fingerprint> {
        let (namespace, object) = ledger_slot(key);
        self.entries.lock().ok()?.get(namespace)?.get(&object).copied()
    }

    fn record(&self, key: &ObjectKey, fingerprint: Fingerprint) {
        let (namespace, object) = ledger_slot(key);
        if let Ok(mut entries) = self.entries.lock() {
            entries.entry(namespace.to_string()).or_default().insert(object, fingerprint);
        }
    }

    fn forget(&self, key: &ObjectKey) {
        let (namespace, object) = ledger_slot(key);
        if let Ok(mut entries) = self.entries.lock()
            && let Some(objects) = entries.get_mut(namespace)
        {
            objects.remove(&object);
            if objects.is_empty() {
                entries.remove(namespace);
            }
        }
    }

    /// Forgets every object of a tenant namespace and the Namespace itself, so that the next reconcile
    /// re-applies them (used after deletion).
    pub fn forget_namespace(&self, namespace: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(namespace);
        }
        self.forget(&ObjectKey { kind: OwnedKind::Namespace, namespace: None, name: namespace.to_string() });
    }
}

/// Applies desired objects and deletes the ones no longer desired.
#[derive(Clone)]
pub struct Applier {
    pub client: Client,
    pub stores: OwnedStores,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
}

pub fn key_of(object: &DesiredObject) -> ObjectKey {
    ObjectKey { kind: object.kind, namespace: object.namespace().map(str::to_string), name: object.name().to_string() }
}

impl Applier {
    fn api(&self, kind: OwnedKind, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = kind.api_resource();
        match namespace {
            Some(namespace) if kind.is_namespaced() => Api::namespaced_with(self.client.clone(), namespace, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Applies one object unless it is up to date. Returns whether a write was made.
    pub async fn apply(&self, object: &DesiredObject) -> Result<bool, kube::Error> {
        let key = key_of(object);
        let decision = decide(&object.object, self.ledger.get(&key).as_ref(), self.stores.current(&key).as_ref());
        if decision == ApplyDecision::UpToDate {
            return Ok(false);
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = self
            .api(object.kind, object.namespace())
            .patch(object.name(), &params, &Patch::Apply(&object.object))
            .await?;
        self.metrics.record_write(object.kind, "apply");
        self.ledger.record(&key, Fingerprint::new(&object.object, &Current::applied(object.kind, &applied)));
        Ok(true)
    }

    /// Deletes an object the operator manages but no longer wants. A missing object is not an error.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), kube::Error> {
        self.ledger.forget(key);
        let params = DeleteParams::background();
        match self.api(key.kind, key.namespace.as_deref()).delete(&key.name, &params).await {
            Ok(_) => {
                self.metrics.record_write(key.kind, "delete");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use kube::core::ApiResource;

    fn object(data: &str) -> DynamicObject {
        let mut object = DynamicObject::new("chat", &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()));
        object.data = serde_json::json!({ "data": { "k": data } });
        object
    }

    fn meta(uid: &str, generation: i64, resource_version: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            generation: Some(generation),
            resource_version: Some(resource_version.into()),
            ..ObjectMeta::default()
        }
    }

    fn fingerprint(desired: &DynamicObject, after: Current) -> Fingerprint {
        Fingerprint::new(desired, &after)
    }

    #[test]
    fn the_ledger_forgets_one_object_or_a_whole_tenant_namespace() {
        let ledger = Ledger::default();
        let key = |kind, namespace: Option<&str>, name: &str| ObjectKey {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        };
        let print = fingerprint(&object("a"), Current::of(OwnedKind::ConfigMap, &meta("u1", 1, "10")));
        let keys = [
            key(OwnedKind::Namespace, None, "tenant-acme"),
            key(OwnedKind::ConfigMap, Some("tenant-acme"), "tenant-config"),
            key(OwnedKind::Service, Some("tenant-acme"), "tenant-config"),
            key(OwnedKind::ConfigMap, Some("tenant-other"), "tenant-config"),
            key(OwnedKind::Namespace, None, "tenant-other"),
        ];
        for key in &keys {
            ledger.record(key, print);
        }
        assert!(keys.iter().all(|key| ledger.get(key) == Some(print)));
        ledger.forget(&keys[2]);
        assert_eq!(ledger.get(&keys[2]), None, "same name, other kind: its own entry");
        assert_eq!(ledger.get(&keys[1]), Some(print));
        ledger.forget_namespace("tenant-acme");
        assert_eq!((ledger.get(&keys[0]), ledger.get(&keys[1])), (None, None));
        assert_eq!((ledger.get(&keys[3]), ledger.get(&keys[4])), (Some(print), Some(print)));
    }

    #[test]
    fn an_object_never_applied_or_missing_is_applied() {
        let desired = object("a");
        let applied = Current::of(OwnedKind::ConfigMap, &meta("u1", 1, "10"));
        let last = fingerprint(&desired, applied.clone());
        assert_eq!(decide(&desired, None, Some(&applied)), ApplyDecision::Apply);
        assert_eq!(decide(&desired, Some(&last), None), ApplyDecision::Apply);
    }

    #[test]
    fn an_untouched_object_with_the_same_desired_state_is_skipped() {
        let desired = object("a");
        let applied = Current::of(OwnedKind::ConfigMap, &meta("u1", 1, "10"));
        let last = fingerprint(&desired, applied.clone());
        assert_eq!(decide(&desired, Some(&last), Some(&applied)), ApplyDecision::UpToDate);
    }

    #[test]
    fn a_changed_desired_state_is_applied() {
        let applied = Current::of(OwnedKind::ConfigMap, &meta("u1", 1, "10"));
        let last = fingerprint(&object("a"), applied.clone());
        assert_eq!(decide(&object("b"), Some(&last), Some(&applied)), ApplyDecision::Apply);
    }

    #[test]
    fn drift_is_seen_through_the_change_marker() {
        let desired = object("a");
        // A ConfigMap has no generation: any new resourceVersion means somebody edited it.
        let last = fingerprint(&desired, Current::of(OwnedKind::ConfigMap, &meta("u1", 3, "10")));
        let edited = Current::of(OwnedKind::ConfigMap, &meta("u1", 3, "11"));
        assert_eq!(decide(&desired, Some(&last), Some(&edited)), ApplyDecision::Apply);
        // An HPA whose status changed (new resourceVersion, same generation) is left alone; a spec edit is not.
        let last = fingerprint(&desired, Current::of(OwnedKind::HorizontalPodAutoscaler, &meta("u1", 3, "10")));
        let status_only = Current::of(OwnedKind::HorizontalPodAutoscaler, &meta("u1", 3, "12"));
        assert_eq!(decide(&desired, Some(&last), Some(&status_only)), ApplyDecision::UpToDate);
        let spec_edit = Current::of(OwnedKind::HorizontalPodAutoscaler, &meta("u1", 4, "13"));
        assert_eq!(decide(&desired, Some(&last), Some(&spec_edit)), ApplyDecision::Apply);
        // A deleted and recreated object has a new uid.
        let recreated = Current::of(OwnedKind::HorizontalPodAutoscaler, &meta("u2", 3, "10"));
        assert_eq!(decide(&desired, Some(&last), Some(&recreated)), ApplyDecision::Apply);
    }

    fn deployment(replicas: i32, image: &str, generation: i64) -> Deployment {
        let mut spec: DeploymentSpec = serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "image": image}]}},
        }))
        .expect("spec");
        spec.replicas = Some(replicas);
        Deployment { metadata: meta("u1", generation, "1"), spec: Some(spec), status: None }
    }

    fn desired_deployment(replicas: i32) -> DynamicObject {
        let mut object = DynamicObject::new("chat", &ApiResource::erase::<Deployment>(&()));
        object.data = serde_json::json!({ "spec": { "replicas": replicas } });
        object
    }

    #[test]
    fn a_deployment_scaled_away_from_the_desired_replicas_is_applied_again() {
        let current = |d: Deployment| Current::workload(&Workload::from(d));
        let last = fingerprint(&desired_deployment(3), current(deployment(3, "chat:1", 1)));
        let scaled_by_hand = current(deployment(1, "chat:1", 2));
        assert_eq!(decide(&desired_deployment(3), Some(&last), Some(&scaled_by_hand)), ApplyDecision::Apply);
        // Where the autoscaler chose the count, the desired replicas carry its choice over.
        let autoscaled = current(deployment(5, "chat:1", 3));
        assert_eq!(decide(&desired_deployment(5), Some(&last), Some(&autoscaled)), ApplyDecision::Apply);
        let after = fingerprint(&desired_deployment(5), autoscaled.clone());
        assert_eq!(decide(&desired_deployment(5), Some(&after), Some(&autoscaled)), ApplyDecision::UpToDate);
    }

    #[test]
    fn a_scale_moves_the_generation_but_not_the_change_marker_and_an_image_edit_does() {
        let current = |d: Deployment| Current::workload(&Workload::from(d));
        assert_eq!(current(deployment(1, "chat:1", 1)).digest(), current(deployment(3, "chat:1", 2)).digest());
        let last = fingerprint(&desired_deployment(3), current(deployment(3, "chat:1", 1)));
        let edited = current(deployment(3, "evil:1", 3));
        assert_eq!(decide(&desired_deployment(3), Some(&last), Some(&edited)), ApplyDecision::Apply);
    }
}
