//! The environment variables the operator writes into every service pod and the services read.
//!
//! The services' own tuning variables (`SAASCHAT_EMAIL_*`, `SAASCHAT_BILLING_*`) stay with each service: the
//! operator never sets them.

/// The tenant's name (a DNS label); the tenant document must name the same tenant.
pub const TENANT: &str = "SAASCHAT_TENANT";
/// Which service the binary runs as: [`Component::name`](crate::Component::name) of a service.
pub const COMPONENT: &str = "SAASCHAT_COMPONENT";
/// The tenant document; default [`DEFAULT_CONFIG_FILE`](crate::paths::DEFAULT_CONFIG_FILE).
pub const CONFIG_FILE: &str = "SAASCHAT_CONFIG_FILE";
/// Address and port of the API; default `0.0.0.0:` [`ports::HTTP`](crate::ports::HTTP).
pub const LISTEN_ADDR: &str = "SAASCHAT_LISTEN_ADDR";
/// Address and port of `/metrics`; default `0.0.0.0:` [`ports::METRICS`](crate::ports::METRICS).
pub const METRICS_ADDR: &str = "SAASCHAT_METRICS_ADDR";
/// The proxies whose `X-Forwarded-For` entries a service believes: comma-separated addresses or CIDR blocks
/// (`10.0.0.0/8, fd00::/8`). Unset or empty, the peer's address is the client's. Set by the operator from its
/// ingress settings for the services the Ingress reaches.
pub const TRUSTED_PROXIES: &str = "SAASCHAT_TRUSTED_PROXIES";
/// PostgreSQL connection URL (with its password); unset for the email worker.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Redis connection URL (with its password).
pub const REDIS_URL: &str = "REDIS_URL";
/// From the downward API; absent outside Kubernetes.
pub const POD_NAME: &str = "POD_NAME";
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
/// The OpenTelemetry service name; default [`Component::telemetry_name`](crate::Component::telemetry_name).
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Where traces go (OTLP/HTTP), when the platform team set one.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Where error reports go, when the platform team set one.
pub const SENTRY_DSN: &str = "SENTRY_DSN";
pub const SENTRY_ENVIRONMENT: &str = "SENTRY_ENVIRONMENT";
/// The chat service's proxy to `https` AI providers, and the hosts it reaches without it.
pub const HTTPS_PROXY: &str = "HTTPS_PROXY";
pub const NO_PROXY: &str = "NO_PROXY";
