//! Operator-wide settings that shape every tenant (images, namespaces, where telemetry goes, the providers'
//! proxy), from flags or environment.

use std::fmt;

use clap::Args;

use crate::names::Component;

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Namespace holding the Secrets that AIProviders and ChatTenants reference (normally the operator's own).
    #[arg(long, env = "SAASCHAT_SECRET_NAMESPACE", default_value = "saaschat-system")]
    pub secret_namespace: String,
    /// Name of the operator's own ServiceAccount, in the secret namespace: each tenant namespace binds it the
    /// `saaschat-operator-tenant` ClusterRole (access to that namespace's Secrets).
    #[arg(long, env = "SAASCHAT_OPERATOR_SERVICE_ACCOUNT", default_value = "saaschat-operator")]
    pub operator_service_account: String,
    /// Registry and repository prefix of the service images: `<registry>/saaschat-<service>:<tag>`.
    #[arg(long, env = "SAASCHAT_IMAGE_REGISTRY", default_value = "ghcr.io/saaschat")]
    pub image_registry: String,
    /// Tag of the service images.
    #[arg(long, env = "SAASCHAT_IMAGE_TAG", default_value = env!("CARGO_PKG_VERSION"))]
    pub image_tag: String,
    /// Image of the managed PostgreSQL (the official image's layout and uid 999 are assumed).
    #[arg(long, env = "SAASCHAT_POSTGRES_IMAGE", default_value = "docker.io/library/postgres:17.6")]
    pub postgres_image: String,
    /// Image of the managed Redis (the official image's layout and uid 999 are assumed).
    #[arg(long, env = "SAASCHAT_REDIS_IMAGE", default_value = "docker.io/library/redis:8.2")]
    pub redis_image: String,
    /// Namespace of the ingress controller, the only one allowed to reach the public services.
    #[arg(long, env = "SAASCHAT_INGRESS_NAMESPACE", default_value = "ingress-nginx")]
    pub ingress_namespace: String,
    /// OTLP/HTTP endpoint that the tenants' services send traces to, for example
    /// `http://otel-collector.observability.svc:4318`: their `OTEL_EXPORTER_OTLP_ENDPOINT`, and allowed by their
    /// NetworkPolicies. Unset, no traces leave the tenants' pods.
    #[arg(long, env = "SAASCHAT_TENANT_OTLP_ENDPOINT", value_parser = EgressUrl::otlp_endpoint)]
    pub tenant_otlp_endpoint: Option<EgressUrl>,
    /// Sentry DSN that the tenants' services report errors to: their `SENTRY_DSN`, and allowed by their
    /// NetworkPolicies. Unset, no error reports leave the tenants' pods.
    #[arg(long, env = "SAASCHAT_TENANT_SENTRY_DSN", value_parser = EgressUrl::sentry_dsn)]
    pub tenant_sentry_dsn: Option<EgressUrl>,
    /// `SENTRY_ENVIRONMENT` of the tenants' services, for example `production`.
    #[arg(long, env = "SAASCHAT_TENANT_SENTRY_ENVIRONMENT")]
    pub tenant_sentry_environment: Option<String>,
    /// HTTP proxy that the chat service reaches `https` AI providers through, for example
    /// `http://egress-proxy.network.svc:3128`: its `HTTPS_PROXY`, and allowed by its NetworkPolicy. Unset, the
    /// chat service connects to providers directly.
    #[arg(long, env = "SAASCHAT_TENANT_HTTPS_PROXY", value_parser = EgressUrl::https_proxy)]
    pub tenant_https_proxy: Option<EgressUrl>,
    /// Hosts the chat service reaches without the proxy (`NO_PROXY`: comma-separated names, domains and
    /// addresses, as curl reads them).
    #[arg(long, env = "SAASCHAT_TENANT_NO_PROXY")]
    pub tenant_no_proxy: Option<String>,
}

/// Where a telemetry URL leads, as a NetworkPolicy needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A Service of this cluster (`<service>.<namespace>.svc[.<cluster domain>]`): allowed to that namespace only.
    InCluster { namespace: String, port: u16 },
    /// Anywhere else: allowed to any address outside the cluster on that port.
    Outside { port: u16 },
}

/// A checked `http(s)` URL that tenants' services send to (a telemetry receiver, a proxy), kept as given.
#[derive(Clone, PartialEq, Eq)]
pub struct EgressUrl {
    pub url: String,
    pub destination: Destination,
}

impl EgressUrl {
    /// An OTLP/HTTP endpoint: an `http` or `https` URL with a host.
    pub fn otlp_endpoint(text: &str) -> Result<EgressUrl, String> {
        EgressUrl::parse(text).map(|(_, parsed)| parsed)
    }

    /// A Sentry DSN: `https://<public key>@<host>/<project id>`.
    pub fn sentry_dsn(text: &str) -> Result<EgressUrl, String> {
        let (url, parsed) = EgressUrl::parse(text)?;
        if url.username().is_empty() {
            return Err("a Sentry DSN names its public key before the host (https://<key>@<host>/<project>)".into());
        }
        if url.path_segments().and_then(|mut segments| segments.next_back()).is_none_or(str::is_empty) {
            return Err("a Sentry DSN ends with the project id (https://<key>@<host>/<project>)".into());
        }
        Ok(parsed)
    }

    /// A forward proxy: an `http` URL (the chat service tunnels through it with `CONNECT`) without credentials,
    /// which would be stored in plain text in the chat Deployment.
    pub fn https_proxy(text: &str) -> Result<EgressUrl, String> {
        let (url, parsed) = EgressUrl::parse(text)?;
        if url.scheme() != "http" {
            return Err("the proxy URL must be http:// (the chat service speaks plain HTTP to its proxy)".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the proxy URL must not hold credentials: they would be readable in the chat Deployment".into());
        }
        Ok(parsed)
    }

    fn parse(text: &str) -> Result<(url::Url, EgressUrl), String> {
        let url = url::Url::parse(text.trim()).map_err(|error| format!("not a URL: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("the scheme must be http or https, not {}", url.scheme()));
        }
        let host = url.host_str().filter(|host| !host.is_empty()).ok_or("the URL has no host")?;
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let labels: Vec<&str> = host.split('.').collect();
        let destination = match labels.as_slice() {
            [_, namespace, "svc", ..] => Destination::InCluster { namespace: (*namespace).to_string(), port },
            _ => Destination::Outside { port },
        };
        let parsed = EgressUrl { url: text.trim().to_string(), destination };
        Ok((url, parsed))
    }
}

/// Shows where the URL leads, never its credentials (a DSN carries a key).
impl fmt::Debug for EgressUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressUrl").field("destination", &self.destination).finish_non_exhaustive()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            secret_namespace: "saaschat-system".into(),
            operator_service_account: "saaschat-operator".into(),
            image_registry: "ghcr.io/saaschat".into(),
            image_tag: env!("CARGO_PKG_VERSION").into(),
            postgres_image: "docker.io/library/postgres:17.6".into(),
            redis_image: "docker.io/library/redis:8.2".into(),
            ingress_namespace: "ingress-nginx".into(),
            tenant_otlp_endpoint: None,
            tenant_sentry_dsn: None,
            tenant_sentry_environment: None,
            tenant_https_proxy: None,
            tenant_no_proxy: None,
        }
    }
}

impl Settings {
    /// The default image of a service.
    pub fn service_image(&self, component: Component) -> String {
        format!("{}/saaschat-{}:{}", self.image_registry, component.name(), self.image_tag)
    }

    /// Where a service of the tenants sends to outside the tenant, besides its providers: telemetry for every
    /// service, the proxy for chat.
    pub fn egress_destinations(&self, component: Component) -> impl Iterator<Item = &Destination> {
        let proxy = if component == Component::Chat { &self.tenant_https_proxy } else { &None };
        [&self.tenant_otlp_endpoint, &self.tenant_sentry_dsn, proxy].into_iter().flatten().map(|url| &url.destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_urls_of_cluster_services_lead_to_their_namespace() {
        let destination = |text: &str| EgressUrl::otlp_endpoint(text).map(|url| url.destination);
        let in_cluster = |namespace: &str, port| Ok(Destination::InCluster { namespace: namespace.into(), port });
        assert_eq!(destination("http://otel-collector.observability.svc:4318"), in_cluster("observability", 4318));
        assert_eq!(destination("http://otel.monitoring.svc.cluster.local:4318/"), in_cluster("monitoring", 4318));
        assert_eq!(destination("https://otlp.example.com"), Ok(Destination::Outside { port: 443 }));
        assert_eq!(destination("http://collector.example.com:4318"), Ok(Destination::Outside { port: 4318 }));
        assert_eq!(destination("http://10.0.0.7"), Ok(Destination::Outside { port: 80 }));
    }

    #[test]
    fn bad_telemetry_urls_are_refused_with_the_reason() {
        assert!(EgressUrl::otlp_endpoint("otel-collector:4318").is_err_and(|e| e.contains("scheme")));
        assert!(EgressUrl::otlp_endpoint("grpc://collector:4317").is_err_and(|e| e.contains("http or https")));
        assert!(EgressUrl::otlp_endpoint("not a url").is_err_and(|e| e.starts_with("not a URL")));
        assert!(EgressUrl::sentry_dsn("https://o1.ingest.sentry.io/42").is_err_and(|e| e.contains("public key")));
        assert!(EgressUrl::sentry_dsn("https://abc@o1.ingest.sentry.io/").is_err_and(|e| e.contains("project")));
        let dsn = EgressUrl::sentry_dsn("https://abc123@o1.ingest.sentry.io/42").expect("a DSN");
        assert_eq!(dsn.destination, Destination::Outside { port: 443 });
        assert!(!format!("{dsn:?}").contains("abc123"), "the key never reaches a log");
    }

    #[test]
    fn a_proxy_is_a_plain_http_url_without_credentials() {
        let proxy = EgressUrl::https_proxy("http://egress-proxy.network.svc:3128").expect("a proxy");
        assert_eq!(proxy.destination, Destination::InCluster { namespace: "network".into(), port: 3128 });
        assert_eq!(
            EgressUrl::https_proxy("http://proxy.corp.example:8080").map(|url| url.destination),
            Ok(Destination::Outside { port: 8080 })
        );
        assert!(EgressUrl::https_proxy("https://proxy.corp.example").is_err_and(|e| e.contains("http://")));
        assert!(EgressUrl::https_proxy("socks5://proxy.corp.example:1080").is_err_and(|e| e.contains("scheme")));
        let refused = EgressUrl::https_proxy("http://user:hunter2@proxy.corp.example:8080");
        assert!(refused.as_ref().is_err_and(|e| e.contains("credentials") && !e.contains("hunter2")), "{refused:?}");
    }
}
