//! The kinds of object the operator owns in a tenant namespace.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::ApiResource;

/// Every kind the tenant builders produce (Secrets are handled on their own: see `build::secrets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnedKind {
    Namespace,
    ServiceAccount,
    Role,
    RoleBinding,
    ConfigMap,
    Service,
    StatefulSet,
    Deployment,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    NetworkPolicy,
    Ingress,
}

impl OwnedKind {
    pub const ALL: [OwnedKind; 12] = [
        OwnedKind::Namespace,
        OwnedKind::ServiceAccount,
        OwnedKind::Role,
        OwnedKind::RoleBinding,
        OwnedKind::ConfigMap,
        OwnedKind::Service,
        OwnedKind::StatefulSet,
        OwnedKind::Deployment,
        OwnedKind::HorizontalPodAutoscaler,
        OwnedKind::PodDisruptionBudget,
        OwnedKind::NetworkPolicy,
        OwnedKind::Ingress,
    ];

    pub fn api_resource(self) -> ApiResource {
        match self {
            OwnedKind::Namespace => ApiResource::erase::<Namespace>(&()),
            OwnedKind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
            OwnedKind::Role => ApiResource::erase::<Role>(&()),
            OwnedKind::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
            OwnedKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            OwnedKind::Service => ApiResource::erase::<Service>(&()),
            OwnedKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            OwnedKind::Deployment => ApiResource::erase::<Deployment>(&()),
            OwnedKind::HorizontalPodAutoscaler => ApiResource::erase::<HorizontalPodAutoscaler>(&()),
            OwnedKind::PodDisruptionBudget => ApiResource::erase::<PodDisruptionBudget>(&()),
            OwnedKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
            OwnedKind::Ingress => ApiResource::erase::<Ingress>(&()),
        }
    }

    /// Whether the API server bumps `metadata.generation` on spec changes of this kind. For the others,
    /// `resourceVersion` is the change marker (they have no status that changes on its own).
    pub fn tracks_generation(self) -> bool {
        matches!(
            self,
            OwnedKind::StatefulSet
                | OwnedKind::Deployment
                | OwnedKind::HorizontalPodAutoscaler
                | OwnedKind::PodDisruptionBudget
                | OwnedKind::Ingress
        )
    }

    /// When an object of this kind is applied within one reconcile: kinds of the same wave go concurrently,
    /// a wave only after the one before it succeeded. A RoleBinding needs its Role (the API server checks the
    /// binder against the Role's rules); workloads come after what their pods mount and run as, and
    /// autoscalers after what they scale. The Namespace (wave 0) comes before everything; Secrets go with wave 1.
    pub fn apply_wave(self) -> u8 {
        match self {
            OwnedKind::Namespace => 0,
            OwnedKind::ServiceAccount
            | OwnedKind::Role
            | OwnedKind::ConfigMap
            | OwnedKind::Service
            | OwnedKind::PodDisruptionBudget
            | OwnedKind::NetworkPolicy
            | OwnedKind::Ingress => 1,
            OwnedKind::RoleBinding | OwnedKind::StatefulSet | OwnedKind::Deployment => 2,
            OwnedKind::HorizontalPodAutoscaler => 3,
        }
    }

    pub fn is_namespaced(self) -> bool {
        self != OwnedKind::Namespace
    }
}

#[cfg(test)]
mod tests {
    use super::OwnedKind::*;

    #[test]
    fn apply_waves_put_dependencies_first() {
        let before = |a: super::OwnedKind, b: super::OwnedKind| a.apply_wave() < b.apply_wave();
        for kind in super::OwnedKind::ALL.into_iter().filter(|k| *k != Namespace) {
            assert!(before(Namespace, kind), "{kind:?}");
        }
        assert!(before(Role, RoleBinding));
        for workload in [Deployment, StatefulSet] {
            for dependency in [ServiceAccount, ConfigMap, Service, NetworkPolicy, PodDisruptionBudget] {
                assert!(before(dependency, workload), "{dependency:?} before {workload:?}");
            }
            assert!(before(workload, HorizontalPodAutoscaler));
        }
    }
}
