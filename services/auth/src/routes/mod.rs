//! The HTTP API. Every route is declared once, with its OpenAPI description beside the handler, and the router
//! and the published document (`/v1/auth/openapi.json`) are both generated from that one declaration so they
//! cannot disagree; the platform checks the document against the public route table before the service starts.

pub mod account;
pub mod keys;
pub mod users;

use axum::Router;
use saaschat_platform::Problem;
use saaschat_platform::auth::Authenticated;
use saaschat_platform::config::Component;
use saaschat_platform::http::openapi::{self, DocumentError};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiResult, unauthorized};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "saaschat auth", description = "Accounts, sessions, roles and API keys of one saaschat tenant."),
    modifiers(&BearerAuth),
    components(schemas(Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The user id of an authenticated caller.
pub fn caller_id(caller: &Authenticated) -> ApiResult<Uuid> {
    Uuid::parse_str(&caller.user_id).map_err(|_| unauthorized("the credential names no user of this service"))
}

/// The API routes (without the platform's `/healthz`, `/readyz`, `/metrics`) and their OpenAPI document,
/// served where the contract says; refused if the public route table would send a route elsewhere.
pub fn api(state: AppState) -> Result<Router, DocumentError> {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(account::sign_up))
        .routes(routes!(account::verify_email))
        .routes(routes!(account::resend_verification))
        .routes(routes!(account::sign_in))
        .routes(routes!(account::refresh))
        .routes(routes!(account::sign_out))
        .routes(routes!(account::me))
        .routes(routes!(account::change_password))
        .routes(routes!(account::request_password_reset))
        .routes(routes!(account::reset_password))
        .routes(routes!(account::accept_invitation))
        .routes(routes!(users::list_users))
        .routes(routes!(users::invite_user))
        .routes(routes!(users::update_user))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::verify_key))
        .routes(routes!(keys::jwks))
        .with_state(state)
        .split_for_parts();
    openapi::publish(router, Component::Auth, document)
}
