//! One ServiceAccount per workload, and the Role that lets billing write its Subscription's status.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use saaschat_crds::SUBSCRIPTION_NAME;

use super::{DesiredObject, TenantInputs};
use crate::kinds::OwnedKind;
use crate::names::{self, Component};

/// Only billing talks to the Kubernetes API; every other pod gets no token at all.
pub fn needs_api_token(component: Component) -> bool {
    component == Component::Billing
}

pub fn service_accounts(inputs: &TenantInputs<'_>) -> Vec<DesiredObject> {
    workload_components(inputs)
        .into_iter()
        .map(|component| {
            DesiredObject::new(
                OwnedKind::ServiceAccount,
                ServiceAccount {
                    metadata: inputs.meta(component.name(), Some(component)),
                    automount_service_account_token: Some(needs_api_token(component)),
                    ..ServiceAccount::default()
                },
            )
        })
        .collect()
}

/// Binds the chart's `saaschat-operator-tenant` ClusterRole (the tenant Secrets) to the operator in this
/// namespace only. Applied right after the namespace, before any Secret.
pub fn operator_access(inputs: &TenantInputs<'_>) -> DesiredObject {
    let binding = RoleBinding {
        metadata: inputs.meta(names::OPERATOR_ACCESS, None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: names::OPERATOR_TENANT_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: inputs.settings.operator_service_account.clone(),
            namespace: Some(inputs.settings.secret_namespace.clone()),
            ..Subject::default()
        }]),
    };
    DesiredObject::new(OwnedKind::RoleBinding, binding)
}

/// The components that run pods in this tenant: the four services and the managed data stores.
pub fn workload_components(inputs: &TenantInputs<'_>) -> Vec<Component> {
    let mut components = Component::SERVICES.to_vec();
    if inputs.managed_postgres() {
        components.push(Component::Postgres);
    }
    if inputs.managed_redis() {
        components.push(Component::Redis);
    }
    components
}

pub fn billing_role(inputs: &TenantInputs<'_>) -> Vec<DesiredObject> {
    let role = Role {
        metadata: inputs.meta(names::BILLING_ROLE, Some(Component::Billing)),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![saaschat_crds::GROUP.into()]),
                resources: Some(vec!["subscriptions".into()]),
                resource_names: Some(vec![SUBSCRIPTION_NAME.into()]),
                verbs: vec!["get".into()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(vec![saaschat_crds::GROUP.into()]),
                resources: Some(vec!["subscriptions/status".into()]),
                resource_names: Some(vec![SUBSCRIPTION_NAME.into()]),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
                ..PolicyRule::default()
            },
        ]),
    };
    let binding = RoleBinding {
        metadata: inputs.meta(names::BILLING_ROLE, Some(Component::Billing)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: names::BILLING_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: Component::Billing.name().into(),
            namespace: Some(inputs.namespace()),
            ..Subject::default()
        }]),
    };
    vec![DesiredObject::new(OwnedKind::Role, role), DesiredObject::new(OwnedKind::RoleBinding, binding)]
}
