//! The ChatTenant controller: watches tenants and everything they depend on or own, and reconciles each
//! tenant as a pipeline (see `reconcile`).

mod cleanup;
pub mod namespace;
mod reconcile;
pub mod secrets;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use futures::{Future, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt, finalizer};
use kube::{Client, Resource, ResourceExt};
use saaschat_crds::{AIProvider, ChatTenant, Subscription};

use crate::apply::{Applier, Ledger, OwnedStores};
use crate::backoff::Backoff;
use crate::kinds::OwnedKind;
use crate::metrics::Metrics;
use crate::names;
use crate::settings::Settings;
use crate::triggers;
use crate::workload::{self, Workload};
use secrets::SecretError;

pub const CONTROLLER: &str = "chattenant";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {kind:?} {name}: {source}")]
    Apply {
        kind: OwnedKind,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind:?} {name}: {source}")]
    Prune {
        kind: OwnedKind,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("claiming namespace {namespace}: {source}")]
    Namespace {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating the Subscription: {0}")]
    Subscription(#[source] kube::Error),
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    #[error("cleaning up: {0}")]
    Cleanup(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::Prune { .. } => "prune",
            Error::Secret(_) => "secret",
            Error::Read { .. } => "read",
            Error::Namespace { .. } => "namespace",
            Error::Subscription(_) => "subscription",
            Error::Status(_) => "status",
            Error::Cleanup(_) => "cleanup",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// Conflicts (another writer got there first) resolve themselves on the next attempt.
    pub fn is_conflict(&self) -> bool {
        let source = match self {
            Error::Apply { source, .. }
            | Error::Prune { source, .. }
            | Error::Read { source, .. }
            | Error::Namespace { source, .. }
            | Error::Subscription(source)
            | Error::Status(source)
            | Error::Cleanup(source) => source,
            Error::Secret(SecretError::Api { source, .. }) => source,
            Error::Secret(SecretError::Generate) => return false,
            Error::Finalizer(inner) => {
                return match inner.as_ref() {
                    finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.is_conflict(),
                    finalizer::Error::AddFinalizer(kube::Error::Api(s))
                    | finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) => s.code == 409,
                    _ => false,
                };
            }
        };
        matches!(source, kube::Error::Api(status) if status.code == 409)
    }
}

/// Everything a reconcile needs, shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub applier: Applier,
    pub tenants: Store<ChatTenant>,
    pub providers: Store<AIProvider>,
    pub subscriptions: Store<Subscription>,
    pub deployments: Store<Workload<Deployment>>,
    pub stateful_sets: Store<Workload<StatefulSet>>,
    pub recorder: Recorder,
    pub backoff: Backoff<String>,
    pub metrics: Arc<Metrics>,
    /// How often a healthy tenant is looked at again when nothing changed (drift of objects the operator
    /// does not watch, such as copied Secrets).
    pub resync: Duration,
    /// Tenant Secrets recently seen as they should be (see `secrets::Verified`).
    pub verified_secrets: secrets::Verified,
    /// The source Secrets' data, read again only when their resourceVersion moves.
    pub source_secrets: secrets::SourceCache,
}

impl Context {
    async fn wait_until_ready(&self) {
        self.applier.stores.wait_until_ready().await;
        // A dropped writer only happens at shutdown; reconciles then fail on their own API calls.
        let _ = self.providers.wait_until_ready().await;
        let _ = self.subscriptions.wait_until_ready().await;
    }
}

/// The tenant an owned object belongs to, from its labels.
fn owner_tenant<K: Resource>(object: &K) -> Option<ObjectRef<ChatTenant>> {
    object.meta().labels.as_ref()?.get(names::LABEL_TENANT).map(|name| ObjectRef::new(name))
}

/// Strips what the operator never reads from cached objects, to keep its memory small.
fn slim<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Keeps of an owned object's metadata only what the operator reads: identity, change markers and the tenant
/// label. (At 1,000 tenants the metadata stores hold some 25,000 objects.)
fn slim_owned(object: &mut PartialObjectMeta<DynamicObject>) {
    object.types = None;
    names::keep_only_tenant_label(&mut object.metadata);
}

/// Changes to the Secrets in the secret namespace, metadata only: the operator reads a Secret's data only
/// when a reconcile needs it, and its list/watch permission on Secrets is confined to that one namespace.
pub fn source_secret_events(
    client: &Client,
    secret_namespace: &str,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    watcher(Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), secret_namespace), watcher::Config::default())
        .default_backoff()
        .touched_objects()
}

/// Runs the tenant controller until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    concurrency: u16,
    resync: Duration,
    tenant_store: Arc<std::sync::OnceLock<Store<ChatTenant>>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let managed = watcher::Config::default().labels(&names::managed_selector());
    // The controller's own watch of tenants, so that the operator's status writes do not trigger reconciles.
    let (tenants, writer) = reflector::store();
    let tenant_events = watcher(Api::<ChatTenant>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(writer);
    let mut controller =
        Controller::for_stream(triggers::changed_objects(tenant_events, triggers::tenant), tenants.clone())
            .with_config(
                kube::runtime::controller::Config::default()
                    .concurrency(concurrency)
                    .debounce(Duration::from_millis(500)),
            );
    // Set once per process: the controller runs once.
    let _ = tenant_store.set(tenants.clone());

    let (deployments, writer) = reflector::store();
    let events = watcher(Api::<Deployment>::all(client.clone()), managed.clone())
        .default_backoff()
        .map_ok(workload::view_event)
        .reflect(writer);
    controller =
        controller.watches_stream(triggers::changed_objects(events, Workload::fingerprint), |d| owner_tenant(&d));

    let (stateful_sets, writer) = reflector::store();
    let events = watcher(Api::<StatefulSet>::all(client.clone()), managed.clone())
        .default_backoff()
        .map_ok(workload::view_event)
        .reflect(writer);
    controller =
        controller.watches_stream(triggers::changed_objects(events, Workload::fingerprint), |s| owner_tenant(&s));

    let (subscriptions, writer) = reflector::store();
    let tenant_index = tenants.clone();
    let stream = watcher(Api::<Subscription>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .touched_objects();
    controller = controller.watches_stream(stream, move |subscription: Subscription| {
        // A Subscription written from Git may carry no labels: find its tenant by namespace.
        let namespace = subscription.namespace();
        tenant_index
            .state()
            .into_iter()
            .filter(|t| Some(names::tenant_namespace(t)) == namespace)
            .map(|t| ObjectRef::from_obj(&*t))
            .collect::<Vec<_>>()
    });

    let mut owned = OwnedStores::default();
    for kind in OwnedKind::ALL {
        if matches!(kind, OwnedKind::Deployment | OwnedKind::StatefulSet) {
            // Seen through the workload views above, which also carry the status the conditions come from.
            continue;
        }
        let resource = kind.api_resource();
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &resource);
        let events = watcher(api, managed.clone()).default_backoff().modify(slim_owned).reflect(writer);
        let stream = triggers::changed_objects(events, triggers::owned(kind));
        controller = controller.watches_stream_with(stream, |o| owner_tenant(&o), resource);
        owned.insert(kind, store);
    }
    owned.set_workload_stores(deployments.clone(), stateful_sets.clone());

    let (providers, writer) = reflector::store();
    let provider_events = watcher(Api::<AIProvider>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .touched_objects();
    let tenant_index = tenants.clone();
    controller = controller.watches_stream(provider_events, move |provider: AIProvider| {
        let name = provider.name_any();
        tenant_index
            .state()
            .into_iter()
            .filter(|t| t.spec.providers.iter().any(|p| p.name == name))
            .map(|t| ObjectRef::from_obj(&*t))
            .collect::<Vec<_>>()
    });

    let (source_secret_meta, writer) = reflector::store();
    let source_secret_events = watcher(
        Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &settings.secret_namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let tenant_index = tenants.clone();
    let provider_index = providers.clone();
    controller = controller.watches_stream(source_secret_events, move |secret: PartialObjectMeta<Secret>| {
        let name = secret.name_any();
        let providers = reconcile::providers_by_name(&provider_index);
        tenant_index
            .state()
            .into_iter()
            .filter(|t| validate::referenced_secrets(t, &providers).contains(&name))
            .map(|t| ObjectRef::from_obj(&*t))
            .collect::<Vec<_>>()
    });

    let reporter = Reporter { controller: "saaschat-operator".into(), instance: std::env::var("POD_NAME").ok() };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        applier: Applier { client: client.clone(), stores: owned, ledger: Ledger::default(), metrics: metrics.clone() },
        client,
        settings,
        tenants,
        providers,
        subscriptions,
        deployments,
        stateful_sets,
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        metrics,
        resync,
        verified_secrets: secrets::Verified::default(),
        source_secrets: secrets::SourceCache::new(source_secret_meta),
    });

    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "tenant reconcile did not complete");
            }
        })
        .await;
}

fn error_policy(tenant: Arc<ChatTenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = tenant.name_any();
    ctx.metrics.record_failure(CONTROLLER, error.reason());
    if error.is_conflict() {
        tracing::info!(tenant = %name, %error, "conflict, retrying");
        return Action::requeue(Duration::from_millis(500 + fastrand::u64(0..500)));
    }
    let delay = ctx.backoff.next_delay(name.clone());
    tracing::warn!(tenant = %name, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The tenant controller against a mocked API server.
#[cfg(test)]
mod mock_api_tests {
    use super::*;
    use crate::build::fixtures::tenant;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    fn context() -> (Arc<Context>, mock::Handle<Request<Body>, Response<Body>>) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let context = Context {
            recorder: Recorder::new(client.clone(), Reporter { controller: "test".into(), instance: None }),
            applier: Applier {
                client: client.clone(),
                stores: OwnedStores::default(),
                ledger: Ledger::default(),
                metrics: metrics.clone(),
            },
            client,
            settings: Settings::default(),
            tenants: reflector::store().0,
            providers: reflector::store().0,
            subscriptions: reflector::store().0,
            deployments: reflector::store().0,
            stateful_sets: reflector::store().0,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            metrics,
            resync: Duration::from_secs(300),
            verified_secrets: secrets::Verified::default(),
            source_secrets: secrets::SourceCache::new(reflector::store().0),
        };
        (Arc::new(context), handle)
    }

    #[tokio::test]
    async fn a_new_tenant_gets_the_cleanup_finalizer_before_anything_is_applied() {
        let (ctx, mut api) = context();
        let server = tokio::spawn(async move {
            let (request, reply) = api.next_request().await.expect("the finalizer patch");
            assert_eq!(request.method(), Method::PATCH);
            assert_eq!(request.uri().path(), "/apis/saaschat.io/v1alpha1/chattenants/acme");
            let body = request.into_body().collect_bytes().await.expect("body");
            let patch: serde_json::Value = serde_json::from_slice(&body).expect("json patch");
            assert_eq!(patch[0]["op"], "test", "guarded by the object's current finalizers: {patch}");
            assert!(patch.to_string().contains(names::TENANT_FINALIZER), "{patch}");
            let mut patched = serde_json::to_value(tenant("acme")).expect("tenant");
            patched["metadata"]["finalizers"] = serde_json::json!([names::TENANT_FINALIZER]);
            reply.send_response(
                Response::builder().body(Body::from(serde_json::to_vec(&patched).expect("json"))).expect("response"),
            );
            // The same reconcile goes on to claim the namespace with a plain create, and reports the refusal.
            let (request, reply) = api.next_request().await.expect("the namespace");
            assert_eq!(request.method(), Method::POST);
            assert_eq!(request.uri().path(), "/api/v1/namespaces");
            reply.send_error(std::io::Error::other("refused by the test"));
            let (request, reply) = api.next_request().await.expect("the status");
            assert_eq!(request.uri().path(), "/apis/saaschat.io/v1alpha1/chattenants/acme/status");
            reply.send_error(std::io::Error::other("refused by the test"));
        });
        let result = reconcile::reconcile(Arc::new(tenant("acme")), ctx.clone()).await;
        assert!(matches!(result, Err(Error::Status(_))), "{result:?}");
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("both requests were sent").expect("server");
        assert!(ctx.metrics.render().contains(r#"reconciles_total{controller="chattenant"} 1"#));
    }

    #[tokio::test]
    async fn a_conflict_is_retried_soon_without_growing_the_backoff() {
        let (ctx, _api) = context();
        let conflict = Error::Status(kube::Error::Api(
            kube::core::Status::failure("the object has been modified", "Conflict").with_code(409).boxed(),
        ));
        let tenant = Arc::new(tenant("acme"));
        assert!(conflict.is_conflict());
        for _ in 0..5 {
            error_policy(tenant.clone(), &conflict, ctx.clone());
        }
        // The next real failure still starts from the base delay.
        assert!(ctx.backoff.next_delay("acme".to_string()) <= Duration::from_millis(1250));
        assert!(ctx.metrics.render().contains(r#"reconcile_errors_total{controller="chattenant",reason="status"} 5"#));
    }
}
