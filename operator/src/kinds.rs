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

    pub fn is_namespaced(self) -> bool {
        self != OwnedKind::Namespace
    }
}
