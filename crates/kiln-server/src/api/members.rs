//! Members of a job: who has which role on it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_store::{Database, MemberRole};

use super::bodies::{JobPath, MemberPath, MemberRoleBody};
use super::extract::{ApiJson, ApiPath};
use crate::access;
use crate::audit::{self, job_object};
use crate::auth::{Caller, Identity, SignedIn};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

fn member_object(job: &str, user: &str) -> String {
    format!("{}/member/{user}", job_object(job))
}

#[utoipa::path(operation_id = "list_members", get, path = "/api/v1/jobs/{job}/members", tag = "members", security((), ("bearer" = []), ("session" = [])),
    params(JobPath), responses((status = 200, body = Vec<kiln_api::Member>), (status = 404, body = kiln_api::Problem)))]
pub async fn list<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<JobPath>,
) -> ApiResult<Json<Vec<kiln_api::Member>>> {
    Ok(Json(
        list_members(&state, caller.identity(), &path.job).await?,
    ))
}

/// The members of job `job`, for whoever may read it.
pub(crate) async fn list_members<D: Database>(
    state: &AppState<D>,
    caller: Option<&Identity>,
    job: &str,
) -> ApiResult<Vec<kiln_api::Member>> {
    let job = access::job(state, caller, job, MemberRole::Viewer).await?;
    let members = state.db.list_members(job.id).await?;
    Ok(members.iter().map(views::member).collect())
}

#[utoipa::path(operation_id = "put_member", put, path = "/api/v1/jobs/{job}/members/{user}", tag = "members", security(("bearer" = []), ("session" = [])),
    params(MemberPath), request_body = MemberRoleBody,
    responses((status = 200, description = "The member, with its new role", body = kiln_api::Member),
        (status = 404, description = "No such job (or not one the caller may read), or no such user", body = kiln_api::Problem)))]
pub async fn put<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(MemberPath { job, user }): ApiPath<MemberPath>,
    ApiJson(body): ApiJson<MemberRoleBody>,
) -> ApiResult<Json<kiln_api::Member>> {
    Ok(Json(
        set_member(&state, &caller, &job, &user, body.role.get()).await?,
    ))
}

/// Gives `user` the role `role` on job `job`, for `caller`, a maintainer:
/// what the API and the job's settings page share.
pub(crate) async fn set_member<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    job: &str,
    user: &str,
    role: MemberRole,
) -> ApiResult<kiln_api::Member> {
    let job = access::job(state, Some(caller), job, MemberRole::Maintainer).await?;
    let member = state
        .db
        .get_user(user)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user `{user}` not found")))?;
    let now = Utc::now();
    state.db.set_member(job.id, member.id, role, now).await?;
    let object = member_object(&job.spec.name, user);
    audit::record(
        state,
        caller,
        "member.set",
        object,
        Some(format!("role {role}")),
    )
    .await;
    Ok(kiln_api::Member {
        user: member.name,
        role: role.to_string(),
        updated_at: now,
    })
}

#[utoipa::path(operation_id = "delete_member", delete, path = "/api/v1/jobs/{job}/members/{user}", tag = "members", security(("bearer" = []), ("session" = [])),
    params(MemberPath),
    responses((status = 204, description = "The user has no role on the job any more (admins keep theirs)"),
        (status = 404, description = "No such job, or the user is not a member", body = kiln_api::Problem)))]
pub async fn delete<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(MemberPath { job, user }): ApiPath<MemberPath>,
) -> ApiResult<StatusCode> {
    remove_member(&state, &caller, &job, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes `user`'s role on job `job` away, for `caller`, a maintainer.
pub(crate) async fn remove_member<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    job: &str,
    user: &str,
) -> ApiResult<()> {
    let job = access::job(state, Some(caller), job, MemberRole::Maintainer).await?;
    let not_member = || {
        ApiError::not_found(format!(
            "`{user}` is not a member of job `{}`",
            job.spec.name
        ))
    };
    let member = state.db.get_user(user).await?.ok_or_else(not_member)?;
    if !state.db.remove_member(job.id, member.id).await? {
        return Err(not_member());
    }
    let object = member_object(&job.spec.name, user);
    audit::record(state, caller, "member.remove", object, None).await;
    Ok(())
}
