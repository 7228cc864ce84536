use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::TokenCreated;
use kiln_store::{Database, TokenKind};

use super::bodies::{NewAgentToken, NewUserToken};
use super::extract::ApiJson;
use crate::auth::{Admin, User};
use crate::error::ApiResult;
use crate::state::AppState;

#[utoipa::path(operation_id = "create_agent_token", post, path = "/api/v1/agent-tokens", tag = "admin", security(("bearer" = [])), request_body = NewAgentToken,
    responses((status = 201, description = "The token, shown this once", body = TokenCreated)))]
pub async fn create_agent_token<D: Database>(
    _: Admin,
    State(state): State<AppState<D>>,
    ApiJson(body): ApiJson<NewAgentToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
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
            name: body.name.into(),
            token,
        }),
    ))
}

#[utoipa::path(operation_id = "create_user_token", post, path = "/api/v1/tokens", tag = "admin", security(("bearer" = [])), request_body = NewUserToken,
    responses((status = 201, description = "The token, shown this once", body = TokenCreated)))]
pub async fn create_user_token<D: Database>(
    _: Admin,
    State(state): State<AppState<D>>,
    ApiJson(body): ApiJson<NewUserToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
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
            name: body.name.into(),
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
