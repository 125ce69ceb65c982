//! The AIProvider controller: reports whether each provider's API key Secret is usable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Future, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use saaschat_crds::{AIProvider, AIProviderStatus};
use serde_json::json;

use crate::backoff::Backoff;
use crate::conditions::{Decided, merge};
use crate::metrics::Metrics;
use crate::names::FIELD_MANAGER;
use crate::tenant::validate::{SourceSecrets, check_key};

pub const CONTROLLER: &str = "aiprovider";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Secret {name}: {source}")]
    ReadSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
}

pub struct Context {
    pub client: Client,
    pub secret_namespace: String,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub backoff: Backoff<String>,
    pub resync: Duration,
}

/// The status of a provider given whether its key Secret holds the key. Pure.
pub fn compute_status(
    provider: &AIProvider,
    secrets: &SourceSecrets,
    secret_namespace: &str,
    now: Timestamp,
) -> AIProviderStatus {
    let previous = provider.status.clone().unwrap_or_default();
    let ready = match check_key(secrets, &provider.spec.api_key_secret_ref, secret_namespace) {
        Ok(()) => Decided::new("Ready", true, "SecretFound", "the API key Secret holds a key"),
        Err(message) => Decided::new("Ready", false, "ProviderSecretMissing", message),
    };
    AIProviderStatus {
        conditions: merge(&previous.conditions, vec![ready], provider.metadata.generation, now),
        model_count: i32::try_from(provider.spec.models.len()).unwrap_or(i32::MAX),
        observed_generation: provider.metadata.generation,
    }
}

async fn reconcile(provider: Arc<AIProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = provider.name_any();
    let secret_name = &provider.spec.api_key_secret_ref.name;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.secret_namespace)
        .get_opt(secret_name)
        .await
        .map_err(|source| Error::ReadSecret { name: secret_name.clone(), source })?;
    let secrets: SourceSecrets = BTreeMap::from([(secret_name.clone(), secret.map(|s| s.data.unwrap_or_default()))]);
    let status = compute_status(&provider, &secrets, &ctx.secret_namespace, Timestamp::now());
    let previous = provider.status.clone().unwrap_or_default();
    if status != previous {
        let patch = json!({
            "apiVersion": AIProvider::api_version(&()),
            "kind": AIProvider::kind(&()),
            "metadata": { "name": name },
            "status": status,
        });
        Api::<AIProvider>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::Status)?;
        ctx.metrics.record_write_of("AIProvider/status", "apply");
        let (before, after) = (previous.conditions.first(), status.conditions.first());
        if let Some(after) = after.filter(|a| before.is_none_or(|b| b.reason != a.reason)) {
            let event = Event {
                type_: if after.status == "True" { EventType::Normal } else { EventType::Warning },
                reason: after.reason.clone(),
                note: Some(after.message.clone()),
                action: "ReadyChanged".into(),
                secondary: None,
            };
            if let Err(error) = ctx.recorder.publish(&event, &provider.object_ref(&())).await {
                tracing::warn!(provider = %name, %error, "cannot publish event");
            }
        }
    }
    ctx.metrics.record_reconcile(CONTROLLER, started.elapsed());
    ctx.backoff.reset(&name);
    Ok(Action::requeue(ctx.resync))
}

fn error_policy(provider: Arc<AIProvider>, error: &Error, ctx: Arc<Context>) -> Action {
    let reason = match error {
        Error::ReadSecret { .. } => "read",
        Error::Status(_) => "status",
    };
    ctx.metrics.record_failure(CONTROLLER, reason);
    let delay = ctx.backoff.next_delay(provider.name_any());
    tracing::warn!(provider = %provider.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the AIProvider controller until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(Api::<AIProvider>::all(ctx.client.clone()), watcher::Config::default());
    let index = controller.store();
    let source_secret_events = crate::tenant::source_secret_events(&ctx.client, &ctx.secret_namespace);
    controller
        .watches_stream(source_secret_events, move |secret: PartialObjectMeta<Secret>| {
            let name = secret.name_any();
            index
                .state()
                .into_iter()
                .filter(|p| p.spec.api_key_secret_ref.name == name)
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "provider reconcile did not complete");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::provider;
    use k8s_openapi::ByteString;

    #[test]
    fn ready_follows_the_key_secret() {
        let p = provider("openai");
        let now = Timestamp::from_second(10).expect("time");
        let with_key: SourceSecrets = BTreeMap::from([(
            "openai".to_string(),
            Some(BTreeMap::from([("api-key".to_string(), ByteString(b"sk-live".to_vec()))])),
        )]);
        let status = compute_status(&p, &with_key, "ops", now);
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.model_count, 2);
        assert_eq!(status.observed_generation, Some(1));

        let missing: SourceSecrets = BTreeMap::from([("openai".to_string(), None)]);
        let status = compute_status(&p, &missing, "ops", now);
        assert_eq!(status.conditions[0].reason, "ProviderSecretMissing");
        assert!(status.conditions[0].message.contains("ops/openai"));
        assert!(!serde_json::to_string(&status).expect("json").contains("sk-live"));
    }
}

/// The controller against a mocked API server: the requests it sends, in order, and what it does with answers.
#[cfg(test)]
mod mock_api_tests {
    use super::*;
    use crate::build::fixtures::provider;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use kube::runtime::events::Reporter;
    use tower_test::mock;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn context() -> (Arc<Context>, Handle) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let recorder = Recorder::new(client.clone(), Reporter { controller: "test".into(), instance: None });
        let context = Context {
            client,
            secret_namespace: "ops".into(),
            recorder,
            metrics: Arc::new(Metrics::new().expect("metrics")),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            resync: Duration::from_secs(300),
        };
        (Arc::new(context), handle)
    }

    fn json_response(status: u16, body: serde_json::Value) -> Response<Body> {
        Response::builder().status(status).body(Body::from(serde_json::to_vec(&body).expect("json"))).expect("response")
    }

    fn not_found() -> serde_json::Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": "secrets \"openai\" not found"})
    }

    #[tokio::test]
    async fn a_missing_key_secret_gives_a_not_ready_status_and_a_warning_event() {
        let (ctx, mut api) = context();
        let server = tokio::spawn(async move {
            let (request, reply) = api.next_request().await.expect("a request for the Secret");
            assert_eq!(request.method(), Method::GET);
            assert_eq!(request.uri().path(), "/api/v1/namespaces/ops/secrets/openai");
            reply.send_response(json_response(404, not_found()));

            let (request, reply) = api.next_request().await.expect("a status write");
            assert_eq!(request.method(), Method::PATCH);
            assert_eq!(request.uri().path(), "/apis/saaschat.io/v1alpha1/aiproviders/openai/status");
            let query = request.uri().query().unwrap_or_default().to_string();
            assert!(query.contains("fieldManager=saaschat-operator") && query.contains("force=true"), "{query}");
            let body = request.into_body().collect_bytes().await.expect("body");
            let patch: serde_json::Value = serde_json::from_slice(&body).expect("json patch");
            assert_eq!(patch["status"]["conditions"][0]["reason"], "ProviderSecretMissing");
            assert_eq!(patch["status"]["conditions"][0]["status"], "False");
            assert_eq!(patch["status"]["modelCount"], 2);
            let mut written = serde_json::to_value(provider("openai")).expect("provider");
            written["status"] = patch["status"].clone();
            reply.send_response(json_response(200, written));

            let (request, reply) = api.next_request().await.expect("an Event");
            assert_eq!(request.method(), Method::POST);
            assert_eq!(request.uri().path(), "/apis/events.k8s.io/v1/namespaces/default/events");
            let body = request.into_body().collect_bytes().await.expect("body");
            let event: serde_json::Value = serde_json::from_slice(&body).expect("event");
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["reason"], "ProviderSecretMissing");
            reply.send_response(json_response(201, event));
        });
        let action = reconcile(Arc::new(provider("openai")), ctx).await.expect("reconciles");
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("every request seen").expect("server");
    }

    #[tokio::test]
    async fn an_unchanged_status_is_not_written() {
        let (ctx, mut api) = context();
        let mut ready = provider("openai");
        let secrets: SourceSecrets = BTreeMap::from([(
            "openai".to_string(),
            Some(BTreeMap::from([("api-key".to_string(), k8s_openapi::ByteString(b"sk".to_vec()))])),
        )]);
        ready.status = Some(compute_status(&ready, &secrets, "ops", Timestamp::now()));
        let server = tokio::spawn(async move {
            let (_, reply) = api.next_request().await.expect("a request for the Secret");
            reply.send_response(json_response(
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai", "namespace": "ops"},
                       "data": {"api-key": "c2s="}}),
            ));
            // Nothing else may be sent: the next request would be a write.
            let next = tokio::time::timeout(Duration::from_millis(300), api.next_request()).await;
            assert!(!matches!(next, Ok(Some(_))), "no write for an unchanged status");
        });
        reconcile(Arc::new(ready), ctx).await.expect("reconciles");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_failing_api_backs_off_and_counts_the_error() {
        let (ctx, mut api) = context();
        let server = tokio::spawn(async move {
            let (_, reply) = api.next_request().await.expect("a request for the Secret");
            reply.send_response(json_response(
                500,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd down"}),
            ));
        });
        let provider = Arc::new(provider("openai"));
        let error = reconcile(provider.clone(), ctx.clone()).await.expect_err("the read fails");
        assert!(matches!(error, Error::ReadSecret { .. }));
        server.await.expect("server");
        let first = error_policy(provider.clone(), &error, ctx.clone());
        let second = error_policy(provider, &error, ctx.clone());
        assert_ne!(first, second, "the delay grows with each failure");
        assert!(ctx.metrics.render().contains(r#"reconcile_errors_total{controller="aiprovider",reason="read"} 2"#));
    }
}
