use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::{AgentTokenBody, TokenCreated};
use kiln_store::{Database, TokenKind};
use serde::Deserialize;

use crate::api::jobs::check_name;
use crate::auth::{Admin, User};
use crate::error::ApiResult;
use crate::state::AppState;

#[utoipa::path(operation_id = "create_agent_token", post, path = "/api/v1/agent-tokens", tag = "admin", security(("bearer" = [])), request_body = AgentTokenBody,
    responses((status = 201, description = "The token, shown this once", body = TokenCreated), (status = 403, body = kiln_api::Problem)))]
pub async fn create_agent_token<D: Database>(
    _: Admin,
    State(state): State<AppState<D>>,
    Json(body): Json<AgentTokenBody>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    check_name("token", &body.name)?;
    let token = kiln_crypto::new_token("kiln_agent_");
    state
        .db
        .insert_token(
            &kiln_crypto::hash_token(&token),
            TokenKind::Agent,
            &body.name,
            false,
            Utc::now(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            name: body.name,
            token,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserTokenBody {
    name: String,
    /// Whether the token may create other tokens.
    #[serde(default)]
    admin: bool,
}

#[utoipa::path(operation_id = "create_user_token", post, path = "/api/v1/tokens", tag = "admin", security(("bearer" = [])), request_body = UserTokenBody,
    responses((status = 201, description = "The token, shown this once", body = TokenCreated), (status = 403, body = kiln_api::Problem)))]
pub async fn create_user_token<D: Database>(
    _: Admin,
    State(state): State<AppState<D>>,
    Json(body): Json<UserTokenBody>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    check_name("token", &body.name)?;
    let token = kiln_crypto::new_token("kiln_");
    state
        .db
        .insert_token(
            &kiln_crypto::hash_token(&token),
            TokenKind::User,
            &body.name,
            body.admin,
            Utc::now(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            name: body.name,
            token,
        }),
    ))
}

#[utoipa::path(operation_id = "list_agents", get, path = "/api/v1/agents", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<kiln_api::Agent>)))]
pub async fn agents<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
) -> ApiResult<Json<Vec<kiln_api::Agent>>> {
    Ok(Json(state.metrics.agents()))
}
