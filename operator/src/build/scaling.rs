//! HorizontalPodAutoscalers and PodDisruptionBudgets of the services.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::workloads::component_spec;
use super::{DesiredObject, TenantInputs};
use crate::kinds::OwnedKind;
use crate::names::{self, Component};

/// One autoscaler per running service that can scale, bounded by the tenant's spec and capped by the plan. A
/// stopped service has none, so nothing scales it back up while it is suspended; nor has a service whose
/// bounds meet (the free plan's cap does that to most of them): such an autoscaler could never change the
/// replicas, yet would cost the autoscaler controller a read of the scale and of the metrics every 15 s. The
/// operator keeps those replicas itself (`workloads::replicas`).
pub fn autoscalers(inputs: &TenantInputs<'_>) -> Vec<DesiredObject> {
    Component::SERVICES
        .into_iter()
        .filter(|component| !inputs.suspension.stops(*component))
        .filter_map(|component| {
            let spec = component_spec(inputs, component);
            let (min_replicas, max_replicas) = inputs.plan.replica_bounds(component, spec);
            (min_replicas < max_replicas).then_some((component, spec, min_replicas, max_replicas))
        })
        .map(|(component, spec, min_replicas, max_replicas)| {
            DesiredObject::new(
                OwnedKind::HorizontalPodAutoscaler,
                HorizontalPodAutoscaler {
                    metadata: inputs.meta(component.name(), Some(component)),
                    spec: HorizontalPodAutoscalerSpec {
                        scale_target_ref: CrossVersionObjectReference {
                            api_version: Some("apps/v1".into()),
                            kind: "Deployment".into(),
                            name: component.name().into(),
                        },
                        min_replicas: Some(min_replicas),
                        max_replicas,
                        metrics: Some(vec![MetricSpec {
                            type_: "Resource".into(),
                            resource: Some(ResourceMetricSource {
                                name: "cpu".into(),
                                target: MetricTarget {
                                    type_: "Utilization".into(),
                                    average_utilization: Some(spec.target_cpu_utilization),
                                    ..MetricTarget::default()
                                },
                            }),
                            ..MetricSpec::default()
                        }]),
                        ..HorizontalPodAutoscalerSpec::default()
                    },
                    ..HorizontalPodAutoscaler::default()
                },
            )
        })
        .collect()
}

/// Voluntary disruptions (node drains) take down at most one pod of a service at a time. The single-replica
/// data stores get none: a budget that allows no disruption would block every drain forever.
pub fn disruption_budgets(inputs: &TenantInputs<'_>) -> Vec<DesiredObject> {
    Component::SERVICES
        .into_iter()
        .map(|component| {
            DesiredObject::new(
                OwnedKind::PodDisruptionBudget,
                PodDisruptionBudget {
                    metadata: inputs.meta(component.name(), Some(component)),
                    spec: Some(PodDisruptionBudgetSpec {
                        max_unavailable: Some(IntOrString::Int(1)),
                        selector: Some(LabelSelector {
                            match_labels: Some(names::selector_labels(inputs.name(), component)),
                            ..LabelSelector::default()
                        }),
                        ..PodDisruptionBudgetSpec::default()
                    }),
                    ..PodDisruptionBudget::default()
                },
            )
        })
        .collect()
}
