//! Publishing a service's OpenAPI document on the public route the contract gives it, after checking that the
//! public route table sends every documented path to this service: a route the Ingress would send elsewhere
//! stops the service at start instead of answering 404 through the tenant's URL.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use saaschat_contract::Component;
use saaschat_contract::routes::{self, Misrouted};
use utoipa::openapi::OpenApi;

/// Why a service's document cannot be published.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error(transparent)]
    Misrouted(#[from] Misrouted),
    #[error("{0} has no public OpenAPI document in the contract")]
    NoPath(Component),
}

/// Checks `document` against the route table and adds a route that serves it at
/// [`routes::openapi_path`]`(service)`.
pub fn publish(router: Router, service: Component, document: OpenApi) -> Result<Router, DocumentError> {
    routes::check_served(service, document.paths.paths.keys().map(String::as_str))?;
    let path = routes::openapi_path(service).ok_or(DocumentError::NoPath(service))?;
    let document = Arc::new(document);
    Ok(router.route(path, get(move || async move { axum::Json(Arc::clone(&document)) })))
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{InfoBuilder, OpenApiBuilder, PathsBuilder};

    use super::*;

    fn document(paths: &[&str]) -> OpenApi {
        let mut builder = PathsBuilder::new();
        for path in paths {
            builder = builder.path(*path, PathItem::new(HttpMethod::Get, OperationBuilder::new()));
        }
        OpenApiBuilder::new().info(InfoBuilder::new().title("t").version("1").build()).paths(builder.build()).build()
    }

    #[test]
    fn a_documented_route_the_ingress_sends_elsewhere_stops_the_service() {
        let served = publish(Router::new(), Component::Billing, document(&["/v1/billing/checkout"]));
        assert!(served.is_ok());
        let error = publish(Router::new(), Component::Billing, document(&["/v1/invoices"])).expect_err("misrouted");
        assert!(
            error.to_string().starts_with("billing serves /v1/invoices but the public route table sends it to chat")
        );
        assert!(matches!(
            publish(Router::new(), Component::EmailWorker, document(&[])),
            Err(DocumentError::NoPath(Component::EmailWorker))
        ));
    }
}
