//! What only admins do: agent tokens, the agents' list, the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::TokenCreated;
use kiln_store::{AuditFilter, Database};

use super::bodies::{AgentPath, AuditQuery, NewAgentToken};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::audit;
use crate::auth::{Admin, Identity};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

#[utoipa::path(operation_id = "create_agent_token", post, path = "/api/v1/agent-tokens", tag = "admin", security(("bearer" = []), ("session" = [])), request_body = NewAgentToken,
    responses((status = 201, description = "The token, shown this once: only the agent of that name may use it, within its labels and capacity", body = TokenCreated),
        (status = 409, description = "The agent has a token already", body = kiln_api::Problem)))]
pub async fn create_agent_token<D: Database>(
    Admin(caller): Admin,
    State(state): State<AppState<D>>,
    ApiJson(body): ApiJson<NewAgentToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let token = kiln_crypto::new_token("kiln_agent_");
    let hash = kiln_crypto::hash_token(&token);
    let labels: Option<Vec<String>> = body
        .labels
        .map(|labels| labels.into_iter().map(String::from).collect());
    let new = kiln_store::NewAgentToken {
        hash: &hash,
        name: &body.name,
        labels: labels.as_deref(),
        max_capacity: body.max_capacity.map(|capacity| capacity.0),
    };
    let id = state
        .db
        .insert_agent_token(&new, Utc::now())
        .await
        .map_err(|e| match e {
            kiln_store::StoreError::Conflict(_) => ApiError::conflict(format!(
                "agent `{}` has a token already; remove the agent first \
                 (DELETE /api/v1/agents/{})",
                body.name, body.name
            )),
            e => e.into(),
        })?;
    let object = format!("agent/{}", body.name);
    let detail = Some(format!(
        "token {id}, labels {labels:?}, capacity {:?}",
        new.max_capacity
    ));
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

#[utoipa::path(operation_id = "delete_agent", delete, path = "/api/v1/agents/{agent}", tag = "admin", security(("bearer" = []), ("session" = [])),
    params(AgentPath),
    responses((status = 204, description = "Its tokens are revoked, its session (on this server) ended, and the tasks it ran go back to the queue (or end, `agent lost`)"),
        (status = 404, description = "No agent of that name has a token", body = kiln_api::Problem),
        (status = 409, description = "The server's own embedded agent", body = kiln_api::Problem)))]
pub async fn delete_agent<D: Database>(
    Admin(caller): Admin,
    State(state): State<AppState<D>>,
    ApiPath(AgentPath { agent }): ApiPath<AgentPath>,
) -> ApiResult<StatusCode> {
    if state.embedded_agent.as_deref() == Some(agent.as_str()) {
        return Err(ApiError::conflict(format!(
            "`{agent}` is this server's own embedded agent; it stops with the server \
             (start the server without --worker to run without it)"
        )));
    }
    let now = Utc::now();
    let revoked = state.db.revoke_agent_tokens(&agent, now).await?;
    if revoked == 0 {
        return Err(ApiError::not_found(format!("agent `{agent}` has no token")));
    }
    state.agent_tokens.forget(&agent);
    state.agents.remove(&agent);
    // Its tasks are lost now, not when their leases would have run out.
    state.db.end_leases(&agent, now).await?;
    let ended = state.db.expire(now).await?;
    state.work.notify_waiters();
    crate::events::touch_tasks(&state, &ended).await;
    audit::record(
        &state,
        &caller,
        "agent.delete",
        format!("agent/{agent}"),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(operation_id = "list_audit", get, path = "/api/v1/audit", tag = "admin", security(("bearer" = []), ("session" = [])),
    params(AuditQuery),
    responses((status = 200, description = "Newest first", body = kiln_api::AuditList)))]
pub async fn audit_log<D: Database>(
    Admin(caller): Admin,
    State(state): State<AppState<D>>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<kiln_api::AuditList>> {
    Ok(Json(audit_page(&state, &caller, query).await?))
}

/// A page of the audit log, newest first, for `caller`, an admin: what
/// the API and the audit page share.
pub(crate) async fn audit_page<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    query: AuditQuery,
) -> ApiResult<kiln_api::AuditList> {
    if !caller.admin {
        return Err(ApiError::forbidden("the audit log is for admins"));
    }
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
    Ok(kiln_api::AuditList {
        entries: entries.iter().map(views::audit_entry).collect(),
        next_cursor,
    })
}
