//! Operator-wide settings that shape every tenant (images, namespaces), from flags or environment.

use clap::Args;

use crate::names::Component;

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Namespace holding the Secrets that AIProviders and ChatTenants reference (normally the operator's own).
    #[arg(long, env = "SAASCHAT_SECRET_NAMESPACE", default_value = "saaschat-system")]
    pub secret_namespace: String,
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            secret_namespace: "saaschat-system".into(),
            image_registry: "ghcr.io/saaschat".into(),
            image_tag: env!("CARGO_PKG_VERSION").into(),
            postgres_image: "docker.io/library/postgres:17.6".into(),
            redis_image: "docker.io/library/redis:8.2".into(),
            ingress_namespace: "ingress-nginx".into(),
        }
    }
}

impl Settings {
    /// The default image of a service.
    pub fn service_image(&self, component: Component) -> String {
        format!("{}/saaschat-{}:{}", self.image_registry, component.name(), self.image_tag)
    }
}
