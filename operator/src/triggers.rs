//! Which watch events start a reconcile.
//!
//! A watch reports every write, but most writes to a tenant's objects are churn its reconcile does not read:
//! a PodDisruptionBudget's count of healthy pods, a Deployment's condition timestamps, the tenant's own status
//! as the operator just wrote it. An event starts a reconcile only when its object's fingerprint (a hash of
//! what a reconcile reads of it) changed; a deletion always does. The reflector stores still see every event.

use std::collections::HashMap;

use futures::{Stream, StreamExt};
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use saaschat_crds::ChatTenant;

use crate::apply::{Current, hash_of};
use crate::kinds::OwnedKind;
use crate::names;

/// Which object an event is about, whatever its state.
fn identity<K: Resource>(object: &K) -> u64 {
    hash_of((object.meta().namespace.as_deref(), object.meta().name.as_deref()))
}

/// What a tenant's reconcile reads of the ChatTenant itself, outside its status.
pub fn tenant(tenant: &ChatTenant) -> u64 {
    let meta = &tenant.metadata;
    let paused = tenant.annotations().get(names::RECONCILE_ANNOTATION);
    hash_of((&meta.uid, meta.generation, meta.deletion_timestamp.is_some(), &meta.finalizers, paused))
}

/// What a reconcile reads of an owned object seen through a metadata watch: its identity, labels and change
/// marker (a status-only write moves the resourceVersion, not the generation, of the kinds that have one).
pub fn owned(kind: OwnedKind) -> impl Fn(&PartialObjectMeta<DynamicObject>) -> u64 {
    move |object| hash_of((Current::of(kind, &object.metadata), &object.metadata.labels))
}

/// The fingerprints seen, by object, and the ones seen since a re-list started (it replaces them once done,
/// which forgets objects deleted while the watch was down).
#[derive(Default)]
struct Seen {
    current: HashMap<u64, u64>,
    relisting: Option<HashMap<u64, u64>>,
}

impl Seen {
    /// Whether the object is new or its fingerprint changed; remembers the fingerprint.
    fn changed(&mut self, identity: u64, fingerprint: u64) -> bool {
        let previous = self.current.insert(identity, fingerprint);
        if let Some(relisting) = self.relisting.as_mut() {
            relisting.insert(identity, fingerprint);
        }
        previous != Some(fingerprint)
    }
}

/// The objects of `events` whose fingerprint changed, and every deleted object.
pub fn changed_objects<K, S, F>(events: S, fingerprint: F) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    F: Fn(&K) -> u64 + Send + 'static,
{
    let mut seen = Seen::default();
    events.filter_map(move |event| {
        let passed = match event {
            Err(error) => Some(Err(error)),
            Ok(watcher::Event::Init) => {
                seen.relisting = Some(HashMap::new());
                None
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = seen.relisting.take() {
                    seen.current = listed;
                }
                None
            }
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                seen.changed(identity(&object), fingerprint(&object)).then_some(Ok(object))
            }
            Ok(watcher::Event::Delete(object)) => {
                seen.current.remove(&identity(&object));
                Some(Ok(object))
            }
        };
        futures::future::ready(passed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::tenant as sample;
    use futures::stream;

    async fn passed(events: Vec<watcher::Event<ChatTenant>>) -> Vec<String> {
        changed_objects(stream::iter(events.into_iter().map(Ok)), tenant)
            .map(|object| object.expect("no error").metadata.resource_version.unwrap_or_default())
            .collect()
            .await
    }

    fn version(mut object: ChatTenant, resource_version: &str) -> ChatTenant {
        object.metadata.resource_version = Some(resource_version.into());
        object
    }

    #[tokio::test]
    async fn status_writes_are_dropped_and_spec_changes_pass() {
        let first = version(sample("acme"), "1");
        let mut status_written = version(sample("acme"), "2");
        status_written.status = Some(saaschat_crds::ChatTenantStatus::default());
        let mut edited = version(sample("acme"), "3");
        edited.metadata.generation = Some(2);
        let mut paused = version(edited.clone(), "4");
        paused.metadata.annotations =
            Some([(names::RECONCILE_ANNOTATION.to_string(), names::RECONCILE_PAUSED.to_string())].into());
        let events = vec![
            watcher::Event::Apply(first),
            watcher::Event::Apply(status_written),
            watcher::Event::Apply(edited),
            watcher::Event::Apply(paused.clone()),
            watcher::Event::Delete(version(paused, "5")),
        ];
        assert_eq!(passed(events).await, ["1", "3", "4", "5"]);
    }

    #[tokio::test]
    async fn a_relist_passes_only_what_changed_while_the_watch_was_down() {
        let mut other = version(sample("other"), "2");
        other.metadata.generation = Some(1);
        let mut edited = version(sample("other"), "4");
        edited.metadata.generation = Some(2);
        let events = vec![
            watcher::Event::InitApply(version(sample("acme"), "1")),
            watcher::Event::InitApply(other),
            watcher::Event::InitDone,
            watcher::Event::Init,
            watcher::Event::InitApply(version(sample("acme"), "3")),
            watcher::Event::InitApply(edited),
            watcher::Event::InitDone,
        ];
        assert_eq!(passed(events).await, ["1", "2", "4"]);
    }
}
