//! Managing the tenant's users: owners and admins list, invite, change roles and disable; nobody acts on
//! themselves, on someone of their own rank or above, or hands out a role above their own. Roles are read from
//! the database, not from the caller's token, so a demotion takes effect at once.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::SecondsFormat;
use saaschat_platform::auth::{Authenticated, Role};
use saaschat_platform::email::EmailContent;
use saaschat_platform::outbox;
use saaschat_platform::problem::Json;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::account::PRODUCER;
use saaschat_platform::Problem;

use super::caller_id;
use crate::accounts::{self, EmailPurpose, User, parse_role, role_name};
use crate::error::{ApiResult, conflict, forbidden, not_found, unauthorized, unprocessable};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Users after this id (the last id of the previous page).
    pub after: Option<Uuid>,
    /// At most this many (1 to 200, default 50).
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPage {
    pub users: Vec<User>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<Uuid>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Invitation {
    pub email: String,
    /// `admin` or `member`.
    #[schema(example = "member")]
    pub role: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserUpdate {
    /// `admin` or `member`.
    pub role: Option<String>,
    pub disabled: Option<bool>,
}

/// What a manager may do to a user; pure, so every rule is unit-tested.
pub fn may_manage(
    actor_id: Uuid,
    actor: Role,
    target_id: Uuid,
    target: Role,
    new_role: Option<Role>,
) -> Result<(), String> {
    if actor_id == target_id {
        return Err("you cannot change your own role or disable yourself".into());
    }
    if !actor.at_least(Role::Admin) {
        return Err("only owners and admins manage users".into());
    }
    if target >= actor {
        return Err(format!("a {} cannot manage a {}", role_name(actor), role_name(target)));
    }
    match new_role {
        Some(Role::Owner) => Err("a tenant has one owner; the owner role cannot be given".into()),
        Some(role) if role > actor => Err(format!("a {} cannot give the {} role", role_name(actor), role_name(role))),
        _ => Ok(()),
    }
}

/// The caller's account, refusing anyone below admin.
async fn manager(conn: &mut PgConnection, caller: &Authenticated) -> ApiResult<User> {
    let stored = accounts::find_by_id(conn, caller_id(caller)?).await?.ok_or_else(|| unauthorized("no such user"))?;
    if stored.user.disabled {
        return Err(forbidden("the account is disabled"));
    }
    if !stored.user.role.at_least(Role::Admin) {
        return Err(forbidden("only owners and admins manage users"));
    }
    Ok(stored.user)
}

fn assignable_role(name: &str) -> ApiResult<Role> {
    match parse_role(name) {
        Some(Role::Owner) => Err(forbidden("a tenant has one owner; the owner role cannot be given")),
        Some(role) => Ok(role),
        None => Err(unprocessable("invalid-role", "Unknown role", format!("{name:?} is not admin or member"))),
    }
}

/// The tenant's users, a page at a time.
#[utoipa::path(get, path = "/v1/users", tag = "users", security(("bearer" = [])), params(Page),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 403, description = "Not an owner or admin", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(page): Query<Page>,
) -> ApiResult<Json<UserPage>> {
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(unprocessable("invalid-limit", "Invalid page size", "limit must be between 1 and 200"));
    }
    let mut connection = state.pool.acquire().await?;
    manager(&mut connection, &caller).await?;
    let users = accounts::list(&mut connection, page.after, limit).await?;
    let next_after = if users.len() as i64 == limit { users.last().map(|user| user.id) } else { None };
    Ok(Json(UserPage { users, next_after }))
}

/// Invites someone by email; they choose their password from the invitation email.
#[utoipa::path(post, path = "/v1/users/invitations", tag = "users", security(("bearer" = [])), request_body = Invitation,
    responses(
        (status = 201, description = "Invited", body = User),
        (status = 403, description = "Not allowed, or no seat left", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The address has an account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid email address or role", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn invite_user(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(body): Json<Invitation>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let email = accounts::normalize_email(&body.email)
        .map_err(|reason| unprocessable("invalid-email", "The email address is not valid", reason))?;
    let role = assignable_role(&body.role)?;
    let mut transaction = state.pool.begin().await?;
    let inviter = manager(&mut transaction, &caller).await?;
    if role > inviter.role {
        return Err(forbidden(format!("a {} cannot give the {} role", role_name(inviter.role), role_name(role))));
    }
    accounts::lock_sign_ups(&mut transaction).await?;
    if accounts::find_by_email(&mut transaction, &email).await?.is_some() {
        return Err(conflict("account-exists", "The email address has an account", "nothing to invite"));
    }
    if accounts::seats_taken(&mut transaction).await? >= state.tenant.seats {
        return Err(forbidden(format!("the plan's {} seats are taken", state.tenant.seats)));
    }
    let invited = accounts::insert(&mut transaction, &email, None, role).await?;
    let (token, expires_at) =
        accounts::issue_email_token(&mut transaction, invited.user.id, EmailPurpose::Invitation).await?;
    let content = EmailContent::Invitation {
        tenant_name: state.tenant.display_name.clone(),
        invited_by: inviter.email.clone(),
        role: role_name(role).to_string(),
        accept_url: format!("{}/accept-invitation?token={token}", state.tenant.url.trim_end_matches('/')),
        expires_at: expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    outbox::enqueue(&mut transaction, PRODUCER, &email, &content).await?;
    transaction.commit().await?;
    Ok((StatusCode::CREATED, Json(invited.user)))
}

/// Changes a user's role or disables them; their sessions end either way.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])), request_body = UserUpdate,
    params(("id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "Updated", body = User),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid role or empty update", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<UserUpdate>,
) -> ApiResult<Json<User>> {
    if body.role.is_none() && body.disabled.is_none() {
        return Err(unprocessable("empty-update", "Nothing to change", "give role, disabled or both"));
    }
    let new_role = body.role.as_deref().map(|name| {
        parse_role(name)
            .ok_or_else(|| unprocessable("invalid-role", "Unknown role", format!("{name:?} is not admin or member")))
    });
    let new_role = new_role.transpose()?;
    let mut transaction = state.pool.begin().await?;
    let actor = manager(&mut transaction, &caller).await?;
    let target = accounts::lock_by_id(&mut transaction, id).await?.ok_or_else(not_found)?;
    may_manage(actor.id, actor.role, target.user.id, target.user.role, new_role).map_err(forbidden)?;
    if let Some(role) = new_role {
        accounts::set_role(&mut transaction, id, role).await?;
    }
    if let Some(disabled) = body.disabled {
        accounts::set_disabled(&mut transaction, id, disabled).await?;
    }
    let ended = accounts::revoke_all_sessions(&mut transaction, id, "changed-by-admin").await?;
    let updated = accounts::find_by_id(&mut transaction, id).await?.ok_or_else(not_found)?;
    transaction.commit().await?;
    state.announce_ended_sessions(&ended).await;
    Ok(Json(updated.user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_manages_themselves_their_peers_or_superiors() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(may_manage(a, Role::Owner, a, Role::Owner, Some(Role::Member)).is_err(), "not yourself");
        assert!(may_manage(a, Role::Admin, a, Role::Admin, Some(Role::Owner)).is_err(), "no self-promotion");
        assert!(may_manage(a, Role::Member, b, Role::Member, Some(Role::Admin)).is_err(), "members manage nobody");
        assert!(may_manage(a, Role::Admin, b, Role::Admin, Some(Role::Member)).is_err(), "admins leave admins alone");
        assert!(may_manage(a, Role::Admin, b, Role::Owner, None).is_err(), "nobody touches the owner");
        assert!(may_manage(a, Role::Owner, b, Role::Member, Some(Role::Owner)).is_err(), "one owner");
    }

    #[test]
    fn owners_and_admins_manage_those_below_them() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(may_manage(a, Role::Owner, b, Role::Admin, Some(Role::Member)), Ok(()));
        assert_eq!(may_manage(a, Role::Owner, b, Role::Member, Some(Role::Admin)), Ok(()));
        assert_eq!(may_manage(a, Role::Admin, b, Role::Member, Some(Role::Admin)), Ok(()));
        assert_eq!(may_manage(a, Role::Admin, b, Role::Member, None), Ok(()), "disable a member");
    }
}
