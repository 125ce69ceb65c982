//! One reconcile of a ChatTenant, as a pipeline:
//!
//! 1. **dereference** the AIProviders, source Secrets and Subscription the tenant refers to;
//! 2. **validate** what the schema cannot check (`validate`), collecting problems instead of failing;
//! 3. **build** the desired objects (`build`, pure);
//! 4. **apply** them (server-side apply, skipped when up to date) and prune what is no longer wanted;
//! 5. **status**: compute conditions from the real workload status (`status`, pure) and write them only
//!    when they changed, with an Event for each transition a person should see.
//!
//! Deletion runs the deletion policy through a finalizer (`cleanup`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use futures::TryFutureExt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use saaschat_crds::{
    AIProvider, ChatTenant, ChatTenantStatus, ComponentStatus, SUBSCRIPTION_NAME, Subscription, SubscriptionSpec,
};
use serde_json::json;

use super::namespace::{self, Ownership};
use super::status::{self, Observation};
use super::validate::{Problem, SourceSecrets, referenced_secrets, validate};
use super::{CONTROLLER, Context, Error, cleanup, secrets};
use crate::apply::{ObjectKey, key_of};
use crate::build::{self, CurrentReplicas, DesiredState, TenantInputs};
use crate::conditions::is_true;
use crate::kinds::OwnedKind;
use crate::names::{self, Component, FIELD_MANAGER, TENANT_FINALIZER};
use crate::plan::{EffectivePlan, Suspension, decide_suspension};

pub async fn reconcile(tenant: Arc<ChatTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = tenant.name_any();
    let api = Api::<ChatTenant>::all(ctx.client.clone());
    let adds_finalizer =
        tenant.meta().deletion_timestamp.is_none() && !tenant.finalizers().contains(&TENANT_FINALIZER.into());
    let result = finalizer(&api, TENANT_FINALIZER, tenant.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(tenant) => apply(&tenant, &ctx).await,
            FinalizerEvent::Cleanup(tenant) => cleanup::cleanup(&tenant, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    // kube-runtime's helper ends a reconcile that adds the finalizer, leaving the work to the one its patch
    // starts: applying now saves every new tenant a turn in the queue and a round trip.
    let result = match result {
        Ok(_) if adds_finalizer => apply(&tenant, &ctx).await,
        other => other,
    };
    ctx.metrics.record_reconcile(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.backoff.reset(&name);
    }
    result
}

/// Providers by name, from the reflector store.
pub fn providers_by_name(store: &Store<AIProvider>) -> BTreeMap<String, Arc<AIProvider>> {
    store.state().into_iter().map(|p| (p.name_any(), p)).collect()
}

/// Objects that depend on the providers: while a provider problem stands they are created if missing but
/// never changed, so that a broken reference cannot take a working chat service down.
fn depends_on_providers(key: &ObjectKey) -> bool {
    matches!(
        (key.kind, key.name.as_str()),
        (OwnedKind::ConfigMap, names::CONFIG_MAP)
            | (OwnedKind::Deployment, "chat")
            | (OwnedKind::NetworkPolicy, "chat")
    )
}

async fn apply(tenant: &ChatTenant, ctx: &Context) -> Result<Action, Error> {
    ctx.wait_until_ready().await;
    let namespace = names::tenant_namespace(tenant);
    let now = Timestamp::now();

    // 1. Dereference.
    let providers = providers_by_name(&ctx.providers);
    let sources = read_source_secrets(ctx, &referenced_secrets(tenant, &providers)).await?;
    let subscription = ctx.subscriptions.get(&ObjectRef::new(SUBSCRIPTION_NAME).within(&namespace));

    // 2. Validate.
    let plan = subscription
        .as_deref()
        .map(EffectivePlan::of_subscription)
        .unwrap_or_else(|| EffectivePlan::of(tenant.spec.plan, None));
    let (resolved, mut problems) = validate(tenant, &providers, &sources, &plan, &ctx.settings.secret_namespace);
    let (suspension, recheck) = decide_suspension(tenant.spec.suspend, subscription.as_deref(), now);
    let paused =
        tenant.annotations().get(names::RECONCILE_ANNOTATION).map(String::as_str) == Some(names::RECONCILE_PAUSED);
    let subscription_plan = subscription.as_deref().map(|subscription| subscription.spec.plan);
    let decided = Decided { suspension, paused, plan: &plan, subscription_plan };
    let previous_copies = tenant.status.as_ref().map(|status| status.copied_secrets.clone()).unwrap_or_default();
    let mut copies = previous_copies.clone();
    // Nothing is written into a namespace before it is proven to be the tenant's (a paused tenant writes nothing).
    let ownership = if paused {
        Ownership::Owned
    } else {
        match namespace::claim(tenant, ctx, &namespace).await {
            Ok(ownership) => ownership,
            Err(error) => {
                problems.insert(0, Problem::new("ApplyFailed", error.to_string()));
                report(tenant, ctx, &problems, &decided, copies, now).await?;
                return Err(error);
            }
        }
    };
    let owned = ownership == Ownership::Owned;
    if let Ownership::Refused(problem) = ownership {
        problems.insert(0, problem);
    }

    if !paused && owned {
        // 3. Build.
        let replicas = current_replicas(ctx, &namespace);
        let inputs = TenantInputs {
            tenant,
            providers: &resolved,
            plan: &plan,
            suspension,
            settings: &ctx.settings,
            replicas: &replicas,
        };
        let desired = build::desired_state(&inputs);
        // 4. Apply.
        // A stopped chat must stop even while a provider problem stands: stopping cannot make it worse.
        let conservative = !problems.is_empty() && !suspension.stops(Component::Chat);
        copies = build::remembered_copies(&previous_copies, &desired.secrets);
        let targets = Targets { tenant, namespace: &namespace, sources: &sources, conservative };
        let mut applied = apply_desired(ctx, targets, &desired, subscription.is_none()).await;
        // A copy whose reference left the spec goes, but not while a problem stands: an unresolved provider's
        // Secret is missing from the desired state without having been removed from the spec.
        if applied.is_ok() && problems.is_empty() {
            let stale = build::stale_copies(&previous_copies, &desired.secrets);
            applied = delete_stale_copies(ctx, &namespace, &stale).await;
            if applied.is_ok() {
                copies.retain(|name| !stale.contains(name));
            }
        }
        if let Err(error) = applied {
            // Say why in the status too, then fail so that the reconcile is retried with backoff.
            problems.push(Problem::new("ApplyFailed", error.to_string()));
            report(tenant, ctx, &problems, &decided, copies, now).await?;
            return Err(error);
        }
    }

    // 5. Status.
    report(tenant, ctx, &problems, &decided, copies, now).await?;

    let next = recheck.map_or(ctx.resync, |wait| wait.min(ctx.resync));
    Ok(Action::requeue(next))
}

/// What the reconcile decided before applying anything, for the status.
struct Decided<'a> {
    suspension: Suspension,
    paused: bool,
    plan: &'a EffectivePlan,
    /// The plan of the tenant's Subscription, when it has one.
    subscription_plan: Option<saaschat_crds::PlanName>,
}

/// Computes the status from what was observed and writes it when it changed.
async fn report(
    tenant: &ChatTenant,
    ctx: &Context,
    problems: &[Problem],
    decided: &Decided<'_>,
    copied_secrets: Vec<String>,
    now: Timestamp,
) -> Result<(), Error> {
    let observation = Observation {
        problems,
        suspension: decided.suspension,
        paused: decided.paused,
        components: observe_components(tenant, ctx, decided.suspension),
        plan: Some(decided.plan.name.as_str().to_string()),
        copied_secrets,
        subscription_plan: decided.subscription_plan,
        deleting: None,
    };
    write_status(tenant, ctx, status::compute(tenant, observation, now)).await
}

async fn delete_stale_copies(ctx: &Context, namespace: &str, stale: &[String]) -> Result<(), Error> {
    if stale.is_empty() {
        return Ok(());
    }
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    Ok(secrets::delete_copies(&api, stale, namespace, &ctx.metrics, &ctx.verified_secrets).await?)
}

async fn read_source_secrets(ctx: &Context, names: &[String]) -> Result<SourceSecrets, Error> {
    let namespace = &ctx.settings.secret_namespace;
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    ctx.source_secrets
        .read(&api, namespace, names)
        .await
        .map_err(|source| Error::Read { what: format!("Secrets in {namespace} ({})", names.join(", ")), source })
}

async fn apply_one(ctx: &Context, object: &build::DesiredObject, conservative: bool) -> Result<(), Error> {
    let key = key_of(object);
    if conservative && depends_on_providers(&key) && ctx.applier.stores.meta(&key).is_some() {
        return Ok(());
    }
    ctx.applier.apply(object).await.map(|_| ()).map_err(|source| Error::Apply {
        kind: object.kind,
        name: object.name().to_string(),
        source,
    })
}

/// Applies the objects of one wave at the same time (a tenant has at most a dozen per wave).
async fn apply_wave(ctx: &Context, objects: Vec<&build::DesiredObject>, conservative: bool) -> Result<(), Error> {
    futures::future::try_join_all(objects.into_iter().map(|object| apply_one(ctx, object, conservative))).await?;
    Ok(())
}

/// Where and how `apply_desired` applies.
struct Targets<'a> {
    tenant: &'a ChatTenant,
    namespace: &'a str,
    sources: &'a SourceSecrets,
    /// While a problem stands, existing provider-dependent objects are left alone.
    conservative: bool,
}

/// Applies the desired objects and Secrets wave by wave (`OwnedKind::apply_wave`: the namespace first, Secrets
/// and a missing Subscription with the first wave after it), then deletes managed objects no longer desired.
async fn apply_desired(
    ctx: &Context,
    targets: Targets<'_>,
    desired: &DesiredState,
    create_subscription: bool,
) -> Result<(), Error> {
    let Targets { tenant, namespace, sources, conservative } = targets;
    let mut waves: BTreeMap<u8, Vec<&build::DesiredObject>> = BTreeMap::new();
    for object in &desired.objects {
        waves.entry(object.kind.apply_wave()).or_default().push(object);
    }
    let namespaces = waves.remove(&OwnedKind::Namespace.apply_wave()).unwrap_or_default();
    apply_wave(ctx, namespaces, conservative).await?;
    // The operator reaches the namespace's Secrets only through this binding: it goes before them.
    let access =
        desired.objects.iter().find(|o| o.kind == OwnedKind::RoleBinding && o.name() == names::OPERATOR_ACCESS);
    let newly_bound = match access {
        Some(access) => ctx.applier.apply(access).await.map_err(|source| Error::Apply {
            kind: access.kind,
            name: access.name().to_string(),
            source,
        })?,
        None => false,
    };
    for wave in waves.values_mut() {
        wave.retain(|o| !(o.kind == OwnedKind::RoleBinding && o.name() == names::OPERATOR_ACCESS));
    }
    let mut waves = waves.into_values();
    let secrets_api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let secrets = secrets::ensure(
        &secrets_api,
        &desired.secrets,
        sources,
        namespace,
        &ctx.metrics,
        &ctx.verified_secrets,
        secrets::ReadPolicy {
            max_age: ctx.resync,
            probably_missing: never_reconciled(tenant),
            access_just_granted: newly_bound,
        },
    );
    let first_wave = apply_wave(ctx, waves.next().unwrap_or_default(), conservative);
    let subscription =
        async { if create_subscription { create_missing_subscription(tenant, ctx, namespace).await } else { Ok(()) } };
    futures::future::try_join3(secrets.map_err(Error::from), first_wave, subscription).await?;
    for objects in waves {
        apply_wave(ctx, objects, conservative).await?;
    }
    // The set of desired objects does not depend on the providers, so pruning is safe even while a problem
    // stands (copied Secrets, which do depend on them, are deleted only without a problem, in `apply`).
    let wanted: BTreeSet<ObjectKey> = desired.objects.iter().map(key_of).collect();
    for key in ctx.applier.stores.of_tenant(&tenant.name_any(), namespace) {
        if key.kind == OwnedKind::Namespace || wanted.contains(&key) {
            continue;
        }
        ctx.applier.delete(&key).await.map_err(|source| Error::Prune {
            kind: key.kind,
            name: key.name.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Whether the operator has never written the tenant's status, so that nothing it creates can exist yet unless
/// an earlier attempt was interrupted.
fn never_reconciled(tenant: &ChatTenant) -> bool {
    tenant.status.as_ref().and_then(|status| status.observed_generation).is_none()
}

/// Creates the tenant's Subscription from `spec.plan` when it has none; an existing one is never touched.
async fn create_missing_subscription(tenant: &ChatTenant, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let mut subscription = Subscription::new(SUBSCRIPTION_NAME, SubscriptionSpec::for_plan(tenant.spec.plan));
    subscription.metadata.namespace = Some(namespace.into());
    subscription.metadata.labels = Some(names::labels(&tenant.name_any(), None));
    subscription.metadata.owner_references = tenant.controller_owner_ref(&()).map(|o| vec![o]);
    let api = Api::<Subscription>::namespaced(ctx.client.clone(), namespace);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
    match api.create(&params, &subscription).await {
        Ok(_) => {
            ctx.metrics.record_write_of("Subscription", "create");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(Error::Subscription(error)),
    }
}

/// The replicas of the tenant's service Deployments as the watch sees them.
fn current_replicas(ctx: &Context, namespace: &str) -> CurrentReplicas {
    Component::SERVICES
        .into_iter()
        .filter_map(|component| {
            let deployment = ctx.deployments.get(&ObjectRef::new(component.name()).within(namespace))?;
            Some((component, deployment.replicas?))
        })
        .collect()
}

pub(super) fn observe_components(tenant: &ChatTenant, ctx: &Context, suspension: Suspension) -> Vec<ComponentStatus> {
    let namespace = names::tenant_namespace(tenant);
    let mut components: Vec<ComponentStatus> = Component::SERVICES
        .into_iter()
        .map(|component| {
            let deployment = ctx.deployments.get(&ObjectRef::new(component.name()).within(&namespace));
            status::deployment_status(component, deployment.as_deref(), suspension.stops(component))
        })
        .collect();
    let managed = [(Component::Postgres, tenant.spec.database.mode), (Component::Redis, tenant.spec.redis.mode)];
    for (component, mode) in managed {
        if mode == saaschat_crds::DataStoreMode::Managed {
            let set = ctx.stateful_sets.get(&ObjectRef::new(component.name()).within(&namespace));
            components.push(status::stateful_set_status(component, set.as_deref()));
        }
    }
    components
}

/// Writes the status when it changed, and publishes Events for the transitions a person should see.
pub(super) async fn write_status(
    tenant: &ChatTenant,
    ctx: &Context,
    new_status: ChatTenantStatus,
) -> Result<(), Error> {
    let old_status = tenant.status.clone().unwrap_or_default();
    if old_status == new_status {
        return Ok(());
    }
    let api = Api::<ChatTenant>::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": ChatTenant::api_version(&()),
        "kind": ChatTenant::kind(&()),
        "metadata": { "name": tenant.name_any() },
        "status": new_status,
    });
    api.patch_status(&tenant.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::Status)?;
    ctx.metrics.record_write_of("ChatTenant/status", "apply");
    for event in transitions(&old_status, &new_status) {
        // An Event that cannot be published must not fail the reconcile that already did its work.
        if let Err(error) = ctx.recorder.publish(&event, &tenant.object_ref(&())).await {
            tracing::warn!(tenant = %tenant.name_any(), %error, "cannot publish event");
        }
    }
    Ok(())
}

/// Events for changes of the Ready reason and of suspension.
fn transitions(old: &ChatTenantStatus, new: &ChatTenantStatus) -> Vec<Event> {
    let reason_of = |status: &ChatTenantStatus, type_: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let mut events = Vec::new();
    for type_ in [status::READY, status::SUSPENDED, status::PAUSED, status::PLAN_SPEC_IGNORED] {
        let (Some(after), before) = (reason_of(new, type_), reason_of(old, type_)) else {
            continue;
        };
        if before.as_ref().map(|b| (&b.0, &b.1)) == Some((&after.0, &after.1)) {
            continue;
        }
        // A new tenant that is neither suspended nor paused is not news: only its Ready reason is announced.
        if before.is_none() && type_ != status::READY && after.0 == "False" {
            continue;
        }
        let healthy = match type_ {
            t if t == status::READY => after.0 == "True" || is_true(&new.conditions, status::DEGRADED) != Some(true),
            _ => true,
        };
        events.push(Event {
            type_: if healthy { EventType::Normal } else { EventType::Warning },
            reason: after.1.clone(),
            note: Some(after.2.clone()),
            action: format!("{type_}Changed"),
            secondary: None,
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::tenant;
    use crate::tenant::status::Observation;

    fn status_with(problems: &[Problem], suspension: Suspension) -> ChatTenantStatus {
        status::compute(
            &tenant("acme"),
            Observation {
                problems,
                suspension,
                paused: false,
                components: vec![],
                plan: None,
                copied_secrets: vec![],
                subscription_plan: None,
                deleting: None,
            },
            Timestamp::from_second(5).expect("time"),
        )
    }

    #[test]
    fn a_new_problem_is_a_warning_event_and_an_unchanged_status_is_silent() {
        let fine = status_with(&[], Suspension::None);
        let broken =
            status_with(&[Problem::new("ProviderNotFound", "AIProvider \"x\" does not exist")], Suspension::None);
        let events = transitions(&fine, &broken);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "ProviderNotFound");
        assert!(matches!(events[0].type_, EventType::Warning));
        assert!(transitions(&broken, &broken).is_empty());
    }

    #[test]
    fn a_new_tenant_gets_one_event_for_readiness_only() {
        let reasons: Vec<String> = transitions(&ChatTenantStatus::default(), &status_with(&[], Suspension::None))
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(!reasons.iter().any(|r| r == "Active" || r == "Reconciling"), "{reasons:?}");
        let suspended_at_creation = transitions(&ChatTenantStatus::default(), &status_with(&[], Suspension::Requested));
        assert!(suspended_at_creation.iter().any(|e| e.reason == "SuspendRequested"));
    }

    #[test]
    fn suspension_is_announced() {
        let fine = status_with(&[], Suspension::None);
        let suspended = status_with(&[], Suspension::Requested);
        let reasons: Vec<String> = transitions(&fine, &suspended).into_iter().map(|e| e.reason).collect();
        assert!(reasons.contains(&"SuspendRequested".to_string()), "{reasons:?}");
    }

    #[test]
    fn provider_dependent_objects_are_the_chat_config_and_workload() {
        let key = |kind, name: &str| ObjectKey { kind, namespace: Some("tenant-acme".into()), name: name.into() };
        assert!(depends_on_providers(&key(OwnedKind::ConfigMap, "tenant-config")));
        assert!(depends_on_providers(&key(OwnedKind::Deployment, "chat")));
        assert!(!depends_on_providers(&key(OwnedKind::Deployment, "auth")));
        assert!(!depends_on_providers(&key(OwnedKind::StatefulSet, "postgres")));
    }
}
