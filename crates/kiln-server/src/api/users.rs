//! Users (admins manage them; a user reads itself and changes its own
//! password) and their tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{TimeDelta, Utc};
use kiln_api::TokenCreated;
use kiln_store::{Database, NewUser, TokenId, UserChange, UserRole};

use super::bodies::{NewUserBody, NewUserToken, TokenListQuery, TokenPath, UserPatch, UserPath};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::audit;
use crate::auth::{Admin, Identity, SignedIn, hash_password};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

fn user_object(name: &str) -> String {
    format!("user/{name}")
}

async fn find_user<D: Database>(state: &AppState<D>, name: &str) -> ApiResult<kiln_store::User> {
    state
        .db
        .get_user(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user `{name}` not found")))
}

#[utoipa::path(operation_id = "list_users", get, path = "/api/v1/users", tag = "users", security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<kiln_api::User>), (status = 403, description = "Not an admin", body = kiln_api::Problem)))]
pub async fn list<D: Database>(
    Admin(caller): Admin,
    State(state): State<AppState<D>>,
) -> ApiResult<Json<Vec<kiln_api::User>>> {
    Ok(Json(list_users(&state, &caller).await?))
}

/// Refuses a caller who is not an admin. The API's routes for admins
/// refuse them earlier (the `Admin` extractor); the web UI's pages share
/// the functions below, which check again so the rule holds for both.
pub(crate) fn require_admin(caller: &Identity) -> ApiResult<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("only admins may manage users"))
    }
}

/// Every user, for `caller`, an admin.
pub(crate) async fn list_users<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
) -> ApiResult<Vec<kiln_api::User>> {
    require_admin(caller)?;
    let users = state.db.list_users().await?;
    Ok(users.iter().map(views::user).collect())
}

#[utoipa::path(operation_id = "create_user", post, path = "/api/v1/users", tag = "users", security(("bearer" = []), ("session" = [])), request_body = NewUserBody,
    responses((status = 201, body = kiln_api::User), (status = 403, description = "Not an admin", body = kiln_api::Problem),
        (status = 409, description = "A user of that name exists", body = kiln_api::Problem)))]
pub async fn create<D: Database>(
    Admin(caller): Admin,
    State(state): State<AppState<D>>,
    ApiJson(body): ApiJson<NewUserBody>,
) -> ApiResult<(StatusCode, Json<kiln_api::User>)> {
    let user = create_user(&state, &caller, body).await?;
    Ok((StatusCode::CREATED, Json(views::user(&user))))
}

/// Makes a user, for `caller`, an admin: what the API and the users page
/// share.
pub(crate) async fn create_user<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    body: NewUserBody,
) -> ApiResult<kiln_store::User> {
    require_admin(caller)?;
    let password_hash = match body.password {
        Some(password) => Some(hash_password(password.into_inner()).await?),
        None => None,
    };
    let new = NewUser {
        name: body.name.into_inner(),
        role: body.role.map_or(UserRole::User, |role| role.get()),
        password_hash,
    };
    let user = state.db.create_user(&new, Utc::now()).await?;
    let detail = format!("role {}", user.role);
    audit::record(
        state,
        caller,
        "user.create",
        user_object(&user.name),
        Some(detail),
    )
    .await;
    Ok(user)
}

/// Refuses a non-admin acting on another user.
fn self_or_admin(caller: &Identity, name: &str) -> ApiResult<()> {
    if caller.admin || caller.name == name && caller.user.is_some() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only admins may see or change other users",
        ))
    }
}

#[utoipa::path(operation_id = "get_user", get, path = "/api/v1/users/{user}", tag = "users", security(("bearer" = []), ("session" = [])),
    params(UserPath), responses((status = 200, body = kiln_api::User), (status = 403, description = "Another user, and not an admin", body = kiln_api::Problem),
        (status = 404, body = kiln_api::Problem)))]
pub async fn show<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(UserPath { user }): ApiPath<UserPath>,
) -> ApiResult<Json<kiln_api::User>> {
    self_or_admin(&caller, &user)?;
    Ok(Json(views::user(&find_user(&state, &user).await?)))
}

#[utoipa::path(operation_id = "update_user", patch, path = "/api/v1/users/{user}", tag = "users", security(("bearer" = []), ("session" = [])),
    params(UserPath), request_body = UserPatch,
    responses((status = 200, body = kiln_api::User),
        (status = 403, description = "Another user, or a role or disabled flag, and not an admin", body = kiln_api::Problem),
        (status = 404, body = kiln_api::Problem),
        (status = 409, description = "It would leave no enabled admin", body = kiln_api::Problem)))]
pub async fn update<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(UserPath { user }): ApiPath<UserPath>,
    ApiJson(body): ApiJson<UserPatch>,
) -> ApiResult<Json<kiln_api::User>> {
    Ok(Json(views::user(
        &update_user(&state, &caller, &user, body).await?,
    )))
}

/// Changes what `body` gives of `user`, for `caller` (an admin, or the
/// user changing its own password): what the API and the users page share.
pub(crate) async fn update_user<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    user: &str,
    body: UserPatch,
) -> ApiResult<kiln_store::User> {
    self_or_admin(caller, user)?;
    if !caller.admin && (body.role.is_some() || body.disabled.is_some()) {
        return Err(ApiError::forbidden(
            "only admins may change a role or disable a user",
        ));
    }
    let password_hash = match &body.password {
        Some(password) => Some(Some(hash_password(password.to_string()).await?)),
        None => None,
    };
    let change = UserChange {
        role: body.role.map(|role| role.get()),
        disabled: body.disabled,
        password_hash,
    };
    let updated = state.db.update_user(user, &change, Utc::now()).await?;
    // A new password or a disabled user signs every browser out.
    if change.password_hash.is_some() || updated.disabled {
        state.db.delete_user_sessions(updated.id).await?;
    }
    let mut changed = Vec::new();
    if let Some(role) = change.role {
        changed.push(format!("role {role}"));
    }
    if let Some(disabled) = change.disabled {
        changed.push(if disabled { "disabled" } else { "enabled" }.to_string());
    }
    if change.password_hash.is_some() {
        changed.push("password".to_string());
    }
    let detail = Some(changed.join(", ")).filter(|d| !d.is_empty());
    audit::record(state, caller, "user.update", user_object(user), detail).await;
    Ok(updated)
}

#[utoipa::path(operation_id = "delete_user", delete, path = "/api/v1/users/{user}", tag = "users", security(("bearer" = []), ("session" = [])),
    params(UserPath),
    responses((status = 204, description = "Deleted, with its tokens, sessions and memberships"),
        (status = 403, description = "Not an admin", body = kiln_api::Problem), (status = 404, body = kiln_api::Problem),
        (status = 409, description = "The last enabled admin", body = kiln_api::Problem)))]
pub async fn delete<D: Database>(
    Admin(caller): Admin,
    State(state): State<AppState<D>>,
    ApiPath(UserPath { user }): ApiPath<UserPath>,
) -> ApiResult<StatusCode> {
    delete_user(&state, &caller, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes `user` (its tokens, sessions and memberships), for `caller`,
/// an admin.
pub(crate) async fn delete_user<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    user: &str,
) -> ApiResult<()> {
    require_admin(caller)?;
    if !state.db.delete_user(user).await? {
        return Err(ApiError::not_found(format!("user `{user}` not found")));
    }
    audit::record(state, caller, "user.delete", user_object(user), None).await;
    Ok(())
}

/// The user whose tokens a request is about: `asked` (admins only) or the caller.
async fn token_owner<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    asked: Option<&str>,
) -> ApiResult<kiln_store::User> {
    let name = match asked {
        Some(name) if name != caller.name && !caller.admin => {
            return Err(ApiError::forbidden(
                "only admins may see or make other users' tokens",
            ));
        }
        Some(name) => name,
        None if caller.user.is_none() => {
            return Err(ApiError::unprocessable(
                "this token belongs to no user: name the user (`user`)",
            ));
        }
        None => &caller.name,
    };
    find_user(state, name).await
}

#[utoipa::path(operation_id = "list_tokens", get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = []), ("session" = [])),
    params(TokenListQuery),
    responses((status = 200, description = "The user's tokens, revoked ones too; never their values", body = Vec<kiln_api::Token>),
        (status = 403, description = "Another user's, and not an admin", body = kiln_api::Problem),
        (status = 404, description = "No such user", body = kiln_api::Problem)))]
pub async fn list_tokens<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiQuery(query): ApiQuery<TokenListQuery>,
) -> ApiResult<Json<Vec<kiln_api::Token>>> {
    Ok(Json(
        list_user_tokens(&state, &caller, query.user.as_deref()).await?,
    ))
}

/// The tokens of `asked` (admins only) or of `caller`, revoked ones too.
pub(crate) async fn list_user_tokens<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    asked: Option<&str>,
) -> ApiResult<Vec<kiln_api::Token>> {
    let owner = token_owner(state, caller, asked).await?;
    let tokens = state.db.list_user_tokens(owner.id).await?;
    Ok(tokens.iter().map(views::token).collect())
}

#[utoipa::path(operation_id = "create_user_token", post, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = []), ("session" = [])), request_body = NewUserToken,
    responses((status = 201, description = "The token, shown this once", body = TokenCreated),
        (status = 403, description = "For another user, and not an admin", body = kiln_api::Problem),
        (status = 404, description = "No such user", body = kiln_api::Problem),
        (status = 409, description = "The user is disabled", body = kiln_api::Problem)))]
pub async fn create_token<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiJson(body): ApiJson<NewUserToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    Ok((
        StatusCode::CREATED,
        Json(create_user_token(&state, &caller, body).await?),
    ))
}

/// Makes a token for `body.user` (admins only) or `caller`: what the API
/// and the tokens page share. Its value is in the answer, and nowhere else.
pub(crate) async fn create_user_token<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    body: NewUserToken,
) -> ApiResult<TokenCreated> {
    let owner = token_owner(state, caller, body.user.as_deref()).await?;
    if owner.disabled {
        return Err(ApiError::conflict(format!(
            "user `{}` is disabled: enable it before making it a token",
            owner.name
        )));
    }
    let now = Utc::now();
    let expires_at = body
        .expires_in
        .map(|lifetime| now + TimeDelta::seconds(lifetime.seconds()));
    let token = kiln_crypto::new_token("kiln_");
    let hash = kiln_crypto::hash_token(&token);
    let new = kiln_store::NewUserToken {
        hash: &hash,
        name: &body.name,
        user: owner.id,
        expires_at,
    };
    let id = state.db.insert_user_token(&new, now).await?;
    let object = format!("{}/token/{id}", user_object(&owner.name));
    let detail = Some(format!("name {}", body.name));
    audit::record(state, caller, "token.create", object, detail).await;
    Ok(TokenCreated {
        id: id.0,
        name: body.name.into(),
        token,
        expires_at,
    })
}

#[utoipa::path(operation_id = "revoke_token", delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("bearer" = []), ("session" = [])),
    params(TokenPath),
    responses((status = 204, description = "Revoked: refused from now on, on every server"),
        (status = 404, description = "No such token of the caller's (admins: of anyone's), or already revoked", body = kiln_api::Problem)))]
pub async fn revoke_token<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(TokenPath { id }): ApiPath<TokenPath>,
) -> ApiResult<StatusCode> {
    revoke_user_token(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes token `id`, for its owner or an admin (anyone else is told
/// it does not exist).
pub(crate) async fn revoke_user_token<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    id: i64,
) -> ApiResult<()> {
    let id = TokenId(id);
    let owner = state.db.token_owner(id).await?;
    let allowed = match &owner {
        Some(owner) => caller.admin || caller.user == Some(owner.id),
        None => caller.admin,
    };
    if !allowed || !state.db.revoke_token(id, Utc::now()).await? {
        return Err(ApiError::not_found(format!(
            "token {id} not found (or already revoked)"
        )));
    }
    let object = match owner {
        Some(owner) => format!("{}/token/{id}", user_object(&owner.name)),
        None => format!("token/{id}"),
    };
    audit::record(state, caller, "token.revoke", object, None).await;
    Ok(())
}
