//! What only admins do: agent tokens, the agents' list, the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::TokenCreated;
use kiln_store::{AuditFilter, Database, TokenKind};

use super::bodies::{AuditQuery, NewAgentToken};
use super::extract::{ApiJson, ApiQuery};
use crate::audit;
use crate::auth::Admin;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::views;

#[utoipa::path(operation_id = "create_agent_token", post, path = "/api/v1/agent-tokens", tag = "admin", security(("bearer" = []), ("session" = [])), request_body = NewAgentToken,
    responses((status = 201, description = "The token, shown this once", body = TokenCreated)))]
pub async fn create_agent_token<D: Database>(
    Admin(caller): Admin,
    State(state): State<AppState<D>>,
    ApiJson(body): ApiJson<NewAgentToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let token = kiln_crypto::new_token("kiln_agent_");
    let id = state
        .db
        .insert_token(
            &kiln_crypto::hash_token(&token),
            TokenKind::Agent,
            &body.name,
            false,
            Utc::now(),
        )
        .await?;
    let object = format!("agent-token/{id}");
    let detail = Some(format!("name {}", body.name));
    audit::record(&state, &caller, "agent_token.create", object, detail).await;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id: id.0,
            name: body.name.into(),
            token,
            expires_at: None,
        }),
    ))
}

#[utoipa::path(operation_id = "list_agents", get, path = "/api/v1/agents", tag = "admin", security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "The agents connected to this server, with the tasks they run (of every job: admins only)", body = Vec<kiln_api::Agent>)))]
pub async fn agents<D: Database>(
    _: Admin,
    State(state): State<AppState<D>>,
) -> ApiResult<Json<Vec<kiln_api::Agent>>> {
    Ok(Json(state.metrics.agents()))
}

#[utoipa::path(operation_id = "list_audit", get, path = "/api/v1/audit", tag = "admin", security(("bearer" = []), ("session" = [])),
    params(AuditQuery),
    responses((status = 200, description = "Newest first", body = kiln_api::AuditList)))]
pub async fn audit_log<D: Database>(
    _: Admin,
    State(state): State<AppState<D>>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<kiln_api::AuditList>> {
    let filter = AuditFilter {
        actor: query.actor.filter(|a| !a.is_empty()),
        action: query.action.filter(|a| !a.is_empty()),
        object_prefix: query.object.filter(|o| !o.is_empty()),
        before: query.cursor.0.map(kiln_store::AuditId),
        limit: query.limit.get(),
    };
    let entries = state.db.list_audit(&filter).await?;
    let next_cursor = (entries.len() as i64 == filter.page_size())
        .then(|| entries.last().map(|e| e.id.0.to_string()))
        .flatten();
    Ok(Json(kiln_api::AuditList {
        entries: entries.iter().map(views::audit_entry).collect(),
        next_cursor,
    }))
}
