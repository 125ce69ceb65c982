//! The public route table: which service answers which path through the tenant's Ingress.
//!
//! The operator's Ingress builder writes one Ingress path per [`Route`]; each service refuses to start with a
//! documented route that [`owner`] would send elsewhere, and a test walks every route of every service's
//! OpenAPI document through the generated Ingress. A route missing here is therefore found before it ships
//! instead of answering 404 through the public URL.
//!
//! Matching follows the Kubernetes Ingress rules ([`PathMatch`]): the longest matching path wins, and an exact
//! match beats a prefix of the same length.

use crate::Component;

/// How an Ingress path matches a request path (the Ingress `pathType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path, character for character.
    Exact,
    /// Element by element over `/`-separated labels: `/v1/auth` matches `/v1/auth`, `/v1/auth/` and
    /// `/v1/auth/signin`, but not `/v1/authors`.
    Prefix,
}

impl PathMatch {
    /// The Ingress `pathType` value.
    pub const fn path_type(self) -> &'static str {
        match self {
            PathMatch::Exact => "Exact",
            PathMatch::Prefix => "Prefix",
        }
    }

    /// Whether an Ingress path of this type matches `request_path` (without its query).
    pub fn matches(self, rule_path: &str, request_path: &str) -> bool {
        match self {
            PathMatch::Exact => rule_path == request_path,
            PathMatch::Prefix => {
                let mut request = request_path.split('/').filter(|label| !label.is_empty());
                rule_path.split('/').filter(|label| !label.is_empty()).all(|label| request.next() == Some(label))
            }
        }
    }
}

/// One public route: requests whose path matches go to `component`'s HTTP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub path: &'static str,
    pub path_match: PathMatch,
    pub component: Component,
}

impl Route {
    const fn prefix(path: &'static str, component: Component) -> Route {
        Route { path, path_match: PathMatch::Prefix, component }
    }

    const fn exact(path: &'static str, component: Component) -> Route {
        Route { path, path_match: PathMatch::Exact, component }
    }

    /// Whether this route matches `request_path`.
    pub fn matches(&self, request_path: &str) -> bool {
        self.path_match.matches(self.path, request_path)
    }
}

/// Every public route. `/` sends whatever no other route claims to chat, which serves the web UI.
pub const PUBLIC: [Route; 12] = [
    // Accounts, sessions, passwords, invitations, and auth's OpenAPI document.
    Route::prefix("/v1/auth", Component::Auth),
    Route::prefix("/v1/users", Component::Auth),
    Route::prefix("/v1/api-keys", Component::Auth),
    Route::exact("/.well-known/jwks.json", Component::Auth),
    // Checkout, portal, subscription, Stripe's webhooks, and billing's OpenAPI document.
    Route::prefix("/v1/billing", Component::Billing),
    Route::prefix("/v1/conversations", Component::Chat),
    // Token usage of the caller and, for owners and admins, of the team.
    Route::prefix("/v1/usage", Component::Chat),
    // The OpenAI-compatible API: /v1/chat/completions and /v1/models.
    Route::prefix("/v1/chat", Component::Chat),
    Route::prefix("/v1/models", Component::Chat),
    Route::exact("/v1/ws", Component::Chat),
    Route::exact("/v1/openapi.json", Component::Chat),
    Route::prefix("/", Component::Chat),
];

/// Paths under this prefix are for the services among themselves (API-key verification) and never public:
/// no route names them, so the Ingress sends them to chat's catch-all, which does not serve them.
pub const INTERNAL_PREFIX: &str = "/internal";

/// Whether a path is internal (see [`INTERNAL_PREFIX`]).
pub fn is_internal(path: &str) -> bool {
    PathMatch::Prefix.matches(INTERNAL_PREFIX, path)
}

/// Where each service publishes its OpenAPI document, inside its own routes.
pub const fn openapi_path(service: Component) -> Option<&'static str> {
    match service {
        Component::Auth => Some("/v1/auth/openapi.json"),
        Component::Chat => Some("/v1/openapi.json"),
        Component::Billing => Some("/v1/billing/openapi.json"),
        _ => None,
    }
}

/// The route the Ingress uses for `request_path` (without its query): the longest match, exact before prefix.
pub fn route(request_path: &str) -> Option<&'static Route> {
    PUBLIC
        .iter()
        .filter(|route| route.matches(request_path))
        .max_by_key(|route| (route.path.len(), route.path_match == PathMatch::Exact))
}

/// The service that answers `request_path` through the Ingress.
pub fn owner(request_path: &str) -> Option<Component> {
    route(request_path).map(|route| route.component)
}

/// A documented route of `service` that the table does not send to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misrouted {
    pub path: String,
    pub service: Component,
    pub routed_to: Option<Component>,
}

impl std::fmt::Display for Misrouted {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routed = self.routed_to.map_or("nowhere", Component::name);
        write!(
            formatter,
            "{} serves {} but the public route table sends it to {routed}: add a route to saaschat-contract's routes::PUBLIC",
            self.service, self.path
        )
    }
}

impl std::error::Error for Misrouted {}

/// Checks that every public (non-internal) path a service serves reaches it through the Ingress. Services run
/// this at start on the paths of their OpenAPI document; path templates (`/v1/conversations/{id}`) work
/// because no route's path has a parameter.
pub fn check_served<'a>(service: Component, paths: impl IntoIterator<Item = &'a str>) -> Result<(), Misrouted> {
    for path in paths {
        if is_internal(path) {
            continue;
        }
        let routed_to = owner(path);
        if routed_to != Some(service) {
            return Err(Misrouted { path: path.to_string(), service, routed_to });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_path_elements_as_kubernetes_does() {
        let prefix = PathMatch::Prefix;
        assert!(prefix.matches("/v1/auth", "/v1/auth"));
        assert!(prefix.matches("/v1/auth", "/v1/auth/"));
        assert!(prefix.matches("/v1/auth", "/v1/auth/signin"));
        assert!(!prefix.matches("/v1/auth", "/v1/authors"));
        assert!(!prefix.matches("/v1/auth", "/v1"));
        assert!(prefix.matches("/", "/anything/at/all"));
        assert!(prefix.matches("/", "/"));
        assert!(PathMatch::Exact.matches("/v1/ws", "/v1/ws"));
        assert!(!PathMatch::Exact.matches("/v1/ws", "/v1/ws/"));
    }

    #[test]
    fn each_service_owns_its_paths() {
        for (path, component) in [
            ("/v1/auth/signin", Component::Auth),
            ("/v1/auth/openapi.json", Component::Auth),
            ("/v1/users/invitations", Component::Auth),
            ("/v1/api-keys/0192", Component::Auth),
            ("/.well-known/jwks.json", Component::Auth),
            ("/v1/billing/webhooks/stripe", Component::Billing),
            ("/v1/billing/openapi.json", Component::Billing),
            ("/v1/chat/completions", Component::Chat),
            ("/v1/models", Component::Chat),
            ("/v1/usage/team", Component::Chat),
            ("/v1/conversations/{id}/messages", Component::Chat),
            ("/v1/ws", Component::Chat),
            ("/v1/openapi.json", Component::Chat),
            ("/", Component::Chat),
            ("/settings/keys", Component::Chat),
        ] {
            assert_eq!(owner(path), Some(component), "{path}");
        }
    }

    #[test]
    fn every_service_but_the_email_worker_publishes_its_document_on_its_own_route() {
        for service in Component::SERVICES {
            match openapi_path(service) {
                Some(path) => assert_eq!(owner(path), Some(service), "{path}"),
                None => assert_eq!(service, Component::EmailWorker),
            }
        }
    }

    #[test]
    fn internal_paths_are_never_claimed_by_a_route_of_their_own() {
        assert!(is_internal("/internal/v1/api-keys/verify"));
        assert!(!is_internal("/internals"));
        assert_eq!(route("/internal/v1/api-keys/verify").map(|route| route.path), Some("/"));
        assert!(PUBLIC.iter().all(|route| !is_internal(route.path)));
    }

    #[test]
    fn routes_are_unique_and_only_services_are_routed_to() {
        for (index, route) in PUBLIC.iter().enumerate() {
            assert!(route.path.starts_with('/'), "{route:?}");
            assert!(Component::SERVICES.contains(&route.component) && route.component != Component::EmailWorker);
            assert!(PUBLIC[index + 1..].iter().all(|other| other.path != route.path), "{} twice", route.path);
        }
    }

    #[test]
    fn a_served_path_routed_elsewhere_is_named() {
        assert_eq!(check_served(Component::Auth, ["/v1/auth/signin", "/internal/v1/api-keys/verify"]), Ok(()));
        let error = check_served(Component::Auth, ["/v1/sessions"]).expect_err("misrouted");
        assert_eq!(error.routed_to, Some(Component::Chat));
        assert!(error.to_string().starts_with("auth serves /v1/sessions but the public route table sends it to chat"));
    }
}
