//! Forges (DESIGN.md §6): the code hosts whose webhooks start runs. Only
//! admins list and change them: a forge's token can set commit statuses,
//! and its webhook secret decides which deliveries are believed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_store::{Database, NewForge, Upserted};

use super::bodies::{ForgeDefinition, ForgePath};
use super::extract::{ApiJson, ApiPath};
use crate::audit;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

/// What a forge's token and webhook secret are sealed for, so a sealed
/// value cannot be moved to another forge or field.
pub fn sealed_place(forge: &str, field: &str) -> Vec<u8> {
    format!("forge/{forge}/{field}").into_bytes()
}

#[utoipa::path(operation_id = "list_forges", get, path = "/api/v1/forges", tag = "forges", security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "The forges, without their tokens and secrets", body = Vec<kiln_api::Forge>)))]
pub async fn list<D: Database>(
    _: Admin,
    State(state): State<AppState<D>>,
) -> ApiResult<Json<Vec<kiln_api::Forge>>> {
    let forges = state.db.list_forges().await?;
    Ok(Json(forges.iter().map(views::forge).collect()))
}

#[utoipa::path(operation_id = "put_forge", put, path = "/api/v1/forges/{forge}", tag = "forges", security(("bearer" = []), ("session" = [])), request_body = ForgeDefinition,
    params(ForgePath),
    responses((status = 201, description = "Created; `change` is `created`", body = kiln_api::Forge),
        (status = 200, description = "Replaced; `change` is `updated` or `unchanged` (a token or secret left out is kept)", body = kiln_api::Forge),
        (status = 422, description = "The body does not fit its schema", body = kiln_api::Problem)))]
pub async fn put<D: Database>(
    Admin(caller): Admin,
    State(state): State<AppState<D>>,
    ApiPath(ForgePath { forge: name }): ApiPath<ForgePath>,
    ApiJson(body): ApiJson<ForgeDefinition>,
) -> ApiResult<(StatusCode, Json<kiln_api::Forge>)> {
    let seal = |field: &str, value: &str| {
        kiln_crypto::seal(&state.key, value.as_bytes(), &sealed_place(&name, field))
    };
    let token = body.token.as_deref().map(|token| seal("token", token));
    let secret = body
        .webhook_secret
        .as_deref()
        .map(|secret| seal("webhook_secret", secret));
    let kind = kiln_forge::ForgeKind::from(body.kind);
    let new = NewForge {
        name: &name,
        kind: kind.as_str(),
        api_url: &body.api_url,
        token: token.as_deref(),
        webhook_secret: secret.as_deref(),
    };
    let (forge, change) = state.db.put_forge(&new, Utc::now()).await?;
    let (status, change) = match change {
        Upserted::Created => (StatusCode::CREATED, "created"),
        Upserted::Updated => (StatusCode::OK, "updated"),
        Upserted::Unchanged => (StatusCode::OK, "unchanged"),
    };
    if status == StatusCode::CREATED || change == "updated" {
        // Which write-only values changed, never the values.
        let detail = format!(
            "kind {kind}, api_url {}{}{}",
            forge.api_url,
            if token.is_some() { ", new token" } else { "" },
            if secret.is_some() {
                ", new webhook secret"
            } else {
                ""
            }
        );
        let action = if status == StatusCode::CREATED {
            "forge.create"
        } else {
            "forge.update"
        };
        audit::record(&state, &caller, action, forge_object(&name), Some(detail)).await;
    }
    let mut view = views::forge(&forge);
    view.change = Some(change.into());
    Ok((status, Json(view)))
}

#[utoipa::path(operation_id = "delete_forge", delete, path = "/api/v1/forges/{forge}", tag = "forges", security(("bearer" = []), ("session" = [])),
    params(ForgePath),
    responses((status = 204, description = "Deleted: its webhooks are refused from now on"),
        (status = 404, body = kiln_api::Problem),
        (status = 409, description = "Jobs still use it (the problem names them)", body = kiln_api::Problem)))]
pub async fn delete<D: Database>(
    Admin(caller): Admin,
    State(state): State<AppState<D>>,
    ApiPath(ForgePath { forge: name }): ApiPath<ForgePath>,
) -> ApiResult<StatusCode> {
    let deleted = state.db.delete_forge(&name).await.map_err(|e| match e {
        kiln_store::StoreError::Conflict(why) => ApiError::conflict(why),
        e => e.into(),
    })?;
    if !deleted {
        return Err(ApiError::not_found(format!("forge `{name}` not found")));
    }
    audit::record(&state, &caller, "forge.delete", forge_object(&name), None).await;
    Ok(StatusCode::NO_CONTENT)
}

fn forge_object(name: &str) -> String {
    format!("forge/{name}")
}
