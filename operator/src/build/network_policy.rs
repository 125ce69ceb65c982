//! Default-deny NetworkPolicies and exactly the traffic the services need.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::datastores::{POSTGRES_PORT, REDIS_PORT};
use super::workloads::HTTP_PORT;
use super::{DesiredObject, TenantInputs};
use crate::kinds::OwnedKind;
use crate::names::{self, Component};
use crate::settings::Destination;

/// Who calls whom inside the tenant, on which port.
const INTERNAL_TRAFFIC: [(Component, Component, i32); 9] = [
    (Component::Auth, Component::Postgres, POSTGRES_PORT),
    (Component::Chat, Component::Postgres, POSTGRES_PORT),
    (Component::Billing, Component::Postgres, POSTGRES_PORT),
    (Component::Auth, Component::Redis, REDIS_PORT),
    (Component::Chat, Component::Redis, REDIS_PORT),
    (Component::Billing, Component::Redis, REDIS_PORT),
    (Component::EmailWorker, Component::Redis, REDIS_PORT),
    // JWKS for local token verification.
    (Component::Chat, Component::Auth, HTTP_PORT),
    (Component::Billing, Component::Auth, HTTP_PORT),
];

/// Services the ingress controller may reach.
const PUBLIC: [Component; 3] = [Component::Auth, Component::Chat, Component::Billing];

/// Cloud metadata endpoints are never a legitimate destination: refusing them closes the classic SSRF path.
const METADATA_ADDRESS: &str = "169.254.169.254/32";

pub fn network_policies(inputs: &TenantInputs<'_>) -> Vec<DesiredObject> {
    let mut policies = vec![default_deny(inputs), allow_dns(inputs)];
    let mut components = Component::SERVICES.to_vec();
    components.extend(Component::DATA_STORES.into_iter().filter(|c| runs(inputs, *c)));
    for component in components {
        policies.push(component_policy(inputs, component));
    }
    policies
}

fn runs(inputs: &TenantInputs<'_>, component: Component) -> bool {
    match component {
        Component::Postgres => inputs.managed_postgres(),
        Component::Redis => inputs.managed_redis(),
        _ => true,
    }
}

fn policy(
    inputs: &TenantInputs<'_>,
    name: &str,
    component: Option<Component>,
    spec: NetworkPolicySpec,
) -> DesiredObject {
    DesiredObject::new(
        OwnedKind::NetworkPolicy,
        NetworkPolicy { metadata: inputs.meta(name, component), spec: Some(spec) },
    )
}

fn default_deny(inputs: &TenantInputs<'_>) -> DesiredObject {
    policy(
        inputs,
        "default-deny",
        None,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ..NetworkPolicySpec::default()
        },
    )
}

fn allow_dns(inputs: &TenantInputs<'_>) -> DesiredObject {
    let peer = NetworkPolicyPeer {
        namespace_selector: Some(match_labels([("kubernetes.io/metadata.name", "kube-system")])),
        pod_selector: Some(match_labels([("k8s-app", "kube-dns")])),
        ..NetworkPolicyPeer::default()
    };
    policy(
        inputs,
        "allow-dns",
        None,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![peer]),
                ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
            }]),
            ..NetworkPolicySpec::default()
        },
    )
}

/// The ingress and egress one component needs.
fn component_policy(inputs: &TenantInputs<'_>, component: Component) -> DesiredObject {
    let mut ingress: Vec<NetworkPolicyIngressRule> = INTERNAL_TRAFFIC
        .iter()
        .filter(|(client, server, _)| *server == component && runs(inputs, *client))
        .map(|(client, _, port_number)| NetworkPolicyIngressRule {
            from: Some(vec![pods(inputs, *client)]),
            ports: Some(vec![port("TCP", *port_number)]),
        })
        .collect();
    if PUBLIC.contains(&component) {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![whole_namespace(&inputs.settings.ingress_namespace)]),
            ports: Some(vec![port("TCP", HTTP_PORT)]),
        });
    }

    let mut egress: Vec<NetworkPolicyEgressRule> = Vec::new();
    let mut outside_ports = BTreeSet::new();
    for (_, server, port_number) in INTERNAL_TRAFFIC.iter().filter(|(client, _, _)| *client == component) {
        if runs(inputs, *server) {
            egress.push(NetworkPolicyEgressRule {
                to: Some(vec![pods(inputs, *server)]),
                ports: Some(vec![port("TCP", *port_number)]),
            });
        } else {
            // An external data store lives at an address the operator does not know: allow its port anywhere.
            outside_ports.insert(*port_number);
        }
    }
    outside_ports.extend(internet_ports(inputs, component));
    if Component::SERVICES.contains(&component) {
        for destination in inputs.settings.egress_destinations(component) {
            match destination {
                Destination::InCluster { namespace, port: number } => egress.push(NetworkPolicyEgressRule {
                    to: Some(vec![whole_namespace(namespace)]),
                    ports: Some(vec![port("TCP", i32::from(*number))]),
                }),
                Destination::Outside { port: number } => {
                    outside_ports.insert(i32::from(*number));
                }
            }
        }
    }
    if !outside_ports.is_empty() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![
                NetworkPolicyPeer {
                    ip_block: Some(IPBlock { cidr: "0.0.0.0/0".into(), except: Some(vec![METADATA_ADDRESS.into()]) }),
                    ..NetworkPolicyPeer::default()
                },
                NetworkPolicyPeer {
                    ip_block: Some(IPBlock { cidr: "::/0".into(), except: None }),
                    ..NetworkPolicyPeer::default()
                },
            ]),
            ports: Some(outside_ports.into_iter().map(|p| port("TCP", p)).collect()),
        });
    }

    policy(
        inputs,
        component.name(),
        Some(component),
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(inputs.name(), component)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        },
    )
}

/// Ports a component reaches outside the cluster: AI providers for chat, Stripe and the Kubernetes API
/// for billing, the SMTP server for the email worker.
fn internet_ports(inputs: &TenantInputs<'_>, component: Component) -> BTreeSet<i32> {
    match component {
        Component::Chat => inputs
            .providers
            .iter()
            .map(|p| {
                p.spec.base_url.as_deref().or(p.spec.provider_type.default_base_url()).and_then(url_port).unwrap_or(443)
            })
            .collect(),
        Component::Billing => BTreeSet::from([443, 6443]),
        Component::EmailWorker => inputs.tenant.spec.smtp.iter().map(|smtp| smtp.port).collect(),
        _ => BTreeSet::new(),
    }
}

/// The TCP port of an `http(s)://host[:port]/...` URL.
pub fn url_port(url: &str) -> Option<i32> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let port_text = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:").map(|(_, port)| port),
        None => host_port.split_once(':').map(|(_, port)| port),
    };
    let explicit = port_text.and_then(|port| port.parse::<i32>().ok()).filter(|p| (1..=65535).contains(p));
    explicit.or(match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    })
}

fn pods(inputs: &TenantInputs<'_>, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(names::selector_labels(inputs.name(), component)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// Every pod of another namespace.
fn whole_namespace(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(match_labels([("kubernetes.io/metadata.name", name)])),
        ..NetworkPolicyPeer::default()
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number)),
        ..NetworkPolicyPort::default()
    }
}

fn match_labels<const N: usize>(labels: [(&str, &str); N]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()),
        ..LabelSelector::default()
    }
}
