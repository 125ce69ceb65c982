//! The status of a ChatTenant, computed from what was observed. Pure.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::jiff::Timestamp;
use saaschat_crds::{ChatTenant, ChatTenantStatus, ComponentStatus, PlanName, SubscriptionState};

use super::validate::Problem;
use crate::build::tenant_url;
use crate::conditions::{Decided, merge};
use crate::names::{self, Component};
use crate::plan::Suspension;
use crate::workload::Workload;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const SUSPENDED: &str = "Suspended";
pub const PAUSED: &str = "Paused";
/// True while `spec.plan` differs from the plan of the tenant's existing Subscription, which decides.
pub const PLAN_SPEC_IGNORED: &str = "PlanSpecIgnored";

/// What the reconcile saw and decided, as input to the status.
pub struct Observation<'a> {
    pub problems: &'a [Problem],
    pub suspension: Suspension,
    pub paused: bool,
    pub components: Vec<ComponentStatus>,
    pub plan: Option<String>,
    /// The Secrets copied into the namespace that the operator still has to remember.
    pub copied_secrets: Vec<String>,
    /// The plan of the tenant's Subscription, when one exists: it decides, whatever `spec.plan` says.
    pub subscription_plan: Option<PlanName>,
    /// What deleting the tenant does, while it is being deleted.
    pub deleting: Option<String>,
}

pub fn deployment_status(
    component: Component,
    deployment: Option<&Workload<Deployment>>,
    stopped: bool,
) -> ComponentStatus {
    let name = component.name().to_string();
    let Some(deployment) = deployment else {
        return ComponentStatus { name, ready: false, ready_replicas: 0, desired_replicas: 0 };
    };
    let desired = deployment.replicas.unwrap_or(1);
    let status = &deployment.status;
    let observed = status.observed_generation >= deployment.metadata.generation;
    let rolled_out = status.updated_replicas >= desired && status.replicas == desired;
    let ready = if stopped {
        desired == 0 && status.replicas == 0
    } else {
        observed && rolled_out && status.available && status.ready_replicas >= desired && desired > 0
    };
    ComponentStatus { name, ready, ready_replicas: status.ready_replicas, desired_replicas: desired }
}

pub fn stateful_set_status(component: Component, set: Option<&Workload<StatefulSet>>) -> ComponentStatus {
    let name = component.name().to_string();
    let Some(set) = set else {
        return ComponentStatus { name, ready: false, ready_replicas: 0, desired_replicas: 1 };
    };
    let desired = set.replicas.unwrap_or(1);
    let status = &set.status;
    let observed = status.observed_generation >= set.metadata.generation;
    ComponentStatus {
        name,
        ready: observed && status.revision_current && status.available && status.ready_replicas >= desired,
        ready_replicas: status.ready_replicas,
        desired_replicas: desired,
    }
}

/// The conditions and the rest of the status. Unchanged observations give an identical status.
pub fn compute(tenant: &ChatTenant, observation: Observation<'_>, now: Timestamp) -> ChatTenantStatus {
    let previous = tenant.status.clone().unwrap_or_default();
    let not_ready: Vec<&ComponentStatus> = observation.components.iter().filter(|c| !c.ready).collect();
    let waiting_for = |store: Component| not_ready.iter().any(|c| c.name == store.name());

    let mut decided = Vec::new();
    let ready = if let Some(deleting) = &observation.deleting {
        Decided::new(READY, false, "Deleting", deleting.clone())
    } else if let Some(problem) = observation.problems.first() {
        Decided::new(READY, false, problem.reason, problem.message.clone())
    } else if observation.suspension == Suspension::Requested {
        Decided::new(READY, false, "Suspended", "spec.suspend is set: every service is scaled to zero")
    } else if waiting_for(Component::Postgres) {
        Decided::new(READY, false, "WaitingForDatabase", "the PostgreSQL StatefulSet is not ready yet")
    } else if waiting_for(Component::Redis) {
        Decided::new(READY, false, "WaitingForRedis", "the Redis StatefulSet is not ready yet")
    } else if !not_ready.is_empty() {
        let names: Vec<&str> = not_ready.iter().map(|c| c.name.as_str()).collect();
        Decided::new(READY, false, "ComponentsNotReady", format!("not ready yet: {}", names.join(", ")))
    } else if let Suspension::SubscriptionEnded(state) = observation.suspension {
        Decided::new(
            READY,
            false,
            "SubscriptionEnded",
            format!("the subscription is {} past its grace period: chat is stopped", state_name(state)),
        )
    } else {
        Decided::new(READY, true, "AllComponentsReady", "every service and data store is ready")
    };
    let is_ready = ready.status;
    decided.push(ready);

    decided.push(if let Some(deleting) = &observation.deleting {
        Decided::new(PROGRESSING, true, "Deleting", deleting.clone())
    } else if observation.paused {
        Decided::new(
            PROGRESSING,
            false,
            "ReconcilePaused",
            "changes are paused by the saaschat.io/reconcile annotation",
        )
    } else if !observation.problems.is_empty() {
        Decided::new(PROGRESSING, false, "Blocked", "the spec cannot be fully applied until the problem is fixed")
    } else if is_ready || not_ready.is_empty() {
        Decided::new(PROGRESSING, false, "ReconcileComplete", "the tenant matches its spec")
    } else {
        Decided::new(PROGRESSING, true, "RollingOut", "waiting for workloads to become ready")
    });

    decided.push(match observation.problems.first() {
        Some(problem) => Decided::new(DEGRADED, true, problem.reason, problem.message.clone()),
        None => Decided::new(DEGRADED, false, "AsExpected", "no problem found"),
    });

    decided.push(match observation.suspension {
        Suspension::None => Decided::new(SUSPENDED, false, "Active", "the tenant is serving"),
        Suspension::Requested => Decided::new(SUSPENDED, true, "SuspendRequested", "spec.suspend is set; data is kept"),
        Suspension::SubscriptionEnded(state) => Decided::new(
            SUSPENDED,
            true,
            "SubscriptionEnded",
            format!("the subscription is {}; chat is stopped and data is kept", state_name(state)),
        ),
    });

    decided.push(if observation.paused {
        Decided::new(PAUSED, true, "ReconcilePaused", "remove the saaschat.io/reconcile annotation to resume")
    } else {
        Decided::new(PAUSED, false, "Reconciling", "changes are applied")
    });

    decided.push(match observation.subscription_plan {
        Some(plan) if plan != tenant.spec.plan => Decided::new(
            PLAN_SPEC_IGNORED,
            true,
            "SubscriptionDecides",
            format!(
                "spec.plan is {} but the tenant's Subscription is on {}: the Subscription decides; change the plan \
                 there (or through billing)",
                tenant.spec.plan.as_str(),
                plan.as_str()
            ),
        ),
        Some(_) => Decided::new(PLAN_SPEC_IGNORED, false, "SubscriptionMatches", "the Subscription is on spec.plan"),
        None => Decided::new(PLAN_SPEC_IGNORED, false, "NoSubscription", "the Subscription is created from spec.plan"),
    });

    ChatTenantStatus {
        conditions: merge(&previous.conditions, decided, tenant.metadata.generation, now),
        observed_generation: tenant.metadata.generation,
        namespace: Some(names::tenant_namespace(tenant)),
        plan: observation.plan,
        url: Some(tenant_url(tenant)),
        components: observation.components,
        copied_secrets: observation.copied_secrets,
    }
}

fn state_name(state: SubscriptionState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::tenant;
    use crate::conditions::is_true;
    use k8s_openapi::api::apps::v1::{
        DeploymentCondition, DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
    };

    fn ready(name: &str) -> ComponentStatus {
        ComponentStatus { name: name.into(), ready: true, ready_replicas: 2, desired_replicas: 2 }
    }

    fn all_ready() -> Vec<ComponentStatus> {
        ["auth", "chat", "billing", "email-worker", "postgres", "redis"].map(ready).to_vec()
    }

    fn observe(components: Vec<ComponentStatus>, problems: &[Problem], suspension: Suspension) -> ChatTenantStatus {
        compute(
            &tenant("acme"),
            Observation {
                problems,
                suspension,
                paused: false,
                components,
                plan: Some("pro".into()),
                copied_secrets: vec![],
                subscription_plan: None,
                deleting: None,
            },
            Timestamp::from_second(1_000).expect("time"),
        )
    }

    fn reason(status: &ChatTenantStatus, type_: &str) -> String {
        status.conditions.iter().find(|c| c.type_ == type_).map(|c| c.reason.clone()).unwrap_or_default()
    }

    #[test]
    fn a_tenant_with_every_component_ready_is_ready() {
        let status = observe(all_ready(), &[], Suspension::None);
        assert_eq!(is_true(&status.conditions, READY), Some(true));
        assert_eq!(is_true(&status.conditions, PROGRESSING), Some(false));
        assert_eq!(is_true(&status.conditions, DEGRADED), Some(false));
        assert_eq!(is_true(&status.conditions, SUSPENDED), Some(false));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.url.as_deref(), Some("http://chat.tenant-acme.svc:8080"));
        assert!(status.conditions.iter().all(|c| c.observed_generation == Some(1)));
    }

    #[test]
    fn waiting_for_the_database_is_named() {
        let mut components = all_ready();
        components[4].ready = false;
        let status = observe(components, &[], Suspension::None);
        assert_eq!(reason(&status, READY), "WaitingForDatabase");
        assert_eq!(is_true(&status.conditions, PROGRESSING), Some(true));
    }

    #[test]
    fn a_problem_makes_the_tenant_degraded_with_its_reason() {
        let problems = [Problem::new("ProviderNotFound", "AIProvider \"openai\" does not exist")];
        let status = observe(all_ready(), &problems, Suspension::None);
        assert_eq!(reason(&status, READY), "ProviderNotFound");
        assert_eq!(reason(&status, DEGRADED), "ProviderNotFound");
        assert_eq!(is_true(&status.conditions, DEGRADED), Some(true));
    }

    #[test]
    fn suspension_is_reported() {
        let status = observe(all_ready(), &[], Suspension::Requested);
        assert_eq!(is_true(&status.conditions, SUSPENDED), Some(true));
        assert_eq!(reason(&status, READY), "Suspended");
        let status = observe(all_ready(), &[], Suspension::SubscriptionEnded(SubscriptionState::Canceled));
        assert_eq!(reason(&status, SUSPENDED), "SubscriptionEnded");
        assert!(status.conditions.iter().any(|c| c.message.contains("canceled")));
    }

    #[test]
    fn recomputing_an_unchanged_status_changes_nothing() {
        let mut t = tenant("acme");
        let first = compute(
            &t,
            Observation {
                problems: &[],
                suspension: Suspension::None,
                paused: false,
                components: all_ready(),
                plan: None,
                copied_secrets: vec!["provider-openai".into()],
                subscription_plan: None,
                deleting: None,
            },
            Timestamp::from_second(1_000).expect("time"),
        );
        t.status = Some(first.clone());
        let second = compute(
            &t,
            Observation {
                problems: &[],
                suspension: Suspension::None,
                paused: false,
                components: all_ready(),
                plan: None,
                copied_secrets: vec!["provider-openai".into()],
                subscription_plan: None,
                deleting: None,
            },
            Timestamp::from_second(9_000).expect("time"),
        );
        assert_eq!(first, second);
        assert_eq!(first.copied_secrets, ["provider-openai"], "the copies to remember are carried");
    }

    fn deployment(replicas: Option<i32>, ready: i32, available: bool, observed: i64) -> Workload<Deployment> {
        Workload::from(Deployment {
            metadata: kube::api::ObjectMeta { generation: Some(2), ..Default::default() },
            spec: Some(DeploymentSpec { replicas, ..Default::default() }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas.unwrap_or(1)),
                updated_replicas: Some(replicas.unwrap_or(1)),
                ready_replicas: Some(ready),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".into(),
                    status: if available { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn deployment_readiness_comes_from_its_real_status() {
        assert!(deployment_status(Component::Chat, Some(&deployment(Some(3), 3, true, 2)), false).ready);
        assert!(!deployment_status(Component::Chat, Some(&deployment(Some(3), 2, true, 2)), false).ready);
        assert!(!deployment_status(Component::Chat, Some(&deployment(Some(3), 3, true, 1)), false).ready, "stale");
        assert!(!deployment_status(Component::Chat, Some(&deployment(Some(3), 3, false, 2)), false).ready);
        assert!(!deployment_status(Component::Chat, None, false).ready);
        assert!(deployment_status(Component::Chat, Some(&deployment(Some(0), 0, false, 2)), true).ready, "stopped");
    }

    #[test]
    fn a_stateful_set_is_ready_once_every_pod_runs_the_current_revision() {
        let set = |ready: i32, update_revision: &str| {
            Workload::from(StatefulSet {
                metadata: kube::api::ObjectMeta { generation: Some(1), ..Default::default() },
                spec: Some(StatefulSetSpec { replicas: Some(1), ..Default::default() }),
                status: Some(StatefulSetStatus {
                    observed_generation: Some(1),
                    replicas: 1,
                    ready_replicas: Some(ready),
                    available_replicas: Some(ready),
                    current_revision: Some("postgres-1".into()),
                    update_revision: Some(update_revision.into()),
                    ..Default::default()
                }),
            })
        };
        assert!(stateful_set_status(Component::Postgres, Some(&set(1, "postgres-1"))).ready);
        assert!(!stateful_set_status(Component::Postgres, Some(&set(0, "postgres-1"))).ready);
        assert!(!stateful_set_status(Component::Postgres, Some(&set(1, "postgres-2"))).ready, "rolling");
        assert!(!stateful_set_status(Component::Postgres, None).ready);
    }
}
