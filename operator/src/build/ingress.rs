//! The Ingress, when the tenant has a host.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};

use super::workloads::HTTP_PORT;
use super::{DesiredObject, TenantInputs};
use crate::kinds::OwnedKind;

/// The Secret cert-manager fills when the tenant asks for an issuer instead of naming a certificate.
pub const ISSUED_TLS_SECRET: &str = "tenant-tls";

pub fn ingress(inputs: &TenantInputs<'_>) -> Option<DesiredObject> {
    let spec = inputs.tenant.spec.ingress.as_ref()?;
    let mut annotations = spec.annotations.clone();
    let tls = spec.tls.as_ref().map(|tls| {
        if let Some(issuer) = &tls.cluster_issuer {
            annotations.insert("cert-manager.io/cluster-issuer".into(), issuer.clone());
        }
        IngressTLS {
            hosts: Some(vec![spec.host.clone()]),
            secret_name: Some(tls.secret_name.clone().unwrap_or_else(|| ISSUED_TLS_SECRET.into())),
        }
    });
    // One path per public route (saaschat-contract), the table the services check their own routes against.
    let paths = saaschat_contract::routes::PUBLIC
        .iter()
        .map(|route| HTTPIngressPath {
            path: Some(route.path.into()),
            path_type: route.path_match.path_type().into(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: route.component.name().into(),
                    port: Some(ServiceBackendPort { number: Some(HTTP_PORT), ..ServiceBackendPort::default() }),
                }),
                ..IngressBackend::default()
            },
        })
        .collect();
    let mut metadata = inputs.meta("saaschat", None);
    metadata.annotations = (!annotations.is_empty()).then(|| annotations.into_iter().collect::<BTreeMap<_, _>>());
    Some(DesiredObject::new(
        OwnedKind::Ingress,
        Ingress {
            metadata,
            spec: Some(IngressSpec {
                ingress_class_name: spec.class_name.clone(),
                tls: tls.map(|tls| vec![tls]),
                rules: Some(vec![IngressRule {
                    host: Some(spec.host.clone()),
                    http: Some(HTTPIngressRuleValue { paths }),
                }]),
                ..IngressSpec::default()
            }),
            ..Ingress::default()
        },
    ))
}
