use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::RunList;
use kiln_pipeline::{Event, Status};
use kiln_store::{Database, MemberRole, RunDetail, RunFilter};

use super::bodies::{JobPath, RunListQuery, RunPath, RunTrigger};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::access;
use crate::audit::{self, job_object};
use crate::auth::{Caller, Identity, SignedIn};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::trigger::{Target, trigger as start_run};
use crate::views;

#[utoipa::path(operation_id = "trigger_run", post, path = "/api/v1/jobs/{job}/runs", tag = "runs", security(("bearer" = []), ("session" = [])),
    request_body(content = Option<RunTrigger>, description = "Optional: without a body, or with `{}`, the job's default branch is built"),
    params(JobPath),
    responses((status = 201, description = "The run; status `error` with the reason when the pipeline is invalid, missing, or needs a secret that is not set", body = kiln_api::Run),
        (status = 404, body = kiln_api::Problem),
        (status = 422, description = "The body does not fit its schema, gives both `branch` and `sha`, names a commit that cannot be resolved, or a `sha` for a freestyle job", body = kiln_api::Problem)))]
pub async fn trigger<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<JobPath>,
    body: Option<ApiJson<RunTrigger>>,
) -> ApiResult<(StatusCode, Json<kiln_api::Run>)> {
    let job = access::job(&state, Some(&caller), &path.job, MemberRole::Developer).await?;
    let body = body.map(|ApiJson(b)| b).unwrap_or_default();
    let target = match (body.branch, body.sha) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable("give `branch` or `sha`, not both"));
        }
        (None, Some(sha)) => Target::Sha(sha.into()),
        (branch, None) => Target::Branch(branch.map(String::from)),
    };
    let audit = audit::entry(&caller, "run.trigger", job_object(&job.spec.name), None);
    let detail = start_run(&state, &job, target, Event::Api, Some(audit)).await?;
    Ok((StatusCode::CREATED, Json(views::run_detail(&detail))))
}

#[utoipa::path(operation_id = "list_runs", get, path = "/api/v1/jobs/{job}/runs", tag = "runs", security((), ("bearer" = []), ("session" = [])),
    params(JobPath, RunListQuery),
    responses((status = 200, body = RunList), (status = 404, body = kiln_api::Problem)))]
pub async fn list<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<JobPath>,
    ApiQuery(query): ApiQuery<RunListQuery>,
) -> ApiResult<Json<RunList>> {
    let job = access::job(&state, caller.identity(), &path.job, MemberRole::Viewer).await?;
    let status = query.status.0.map(parse_status).transpose()?;
    let limit = query.limit.get();
    let filter = RunFilter {
        status,
        branch: Some(query.branch).filter(|b| !b.is_empty()),
        before: query.cursor.0,
        limit,
    };
    let runs = state.db.list_runs(job.id, &filter).await?;
    let next_cursor = (runs.len() as i64 == limit)
        .then(|| runs.last().map(|r| r.number.to_string()))
        .flatten();
    Ok(Json(RunList {
        runs: runs.iter().map(views::run).collect(),
        next_cursor,
    }))
}

/// One of [`kiln_api::STATUSES`] as the pipeline's status.
fn parse_status(text: &str) -> ApiResult<Status> {
    text.parse()
        .map_err(|_| ApiError::internal(format!("`{text}` is in STATUSES but not a Status")))
}

/// The run, if `caller` may do what needs `need` on its job.
pub async fn find_run<D: Database>(
    state: &AppState<D>,
    caller: Option<&Identity>,
    job: &str,
    number: i64,
    need: MemberRole,
) -> ApiResult<(kiln_store::Job, RunDetail)> {
    let job = access::job(state, caller, job, need).await?;
    let run = find_run_of(state, &job, number).await?;
    Ok((job, run))
}

/// Run `number` of a job the caller was allowed.
pub async fn find_run_of<D: Database>(
    state: &AppState<D>,
    job: &kiln_store::Job,
    number: i64,
) -> ApiResult<RunDetail> {
    state.db.get_run(job.id, number).await?.ok_or_else(|| {
        ApiError::not_found(format!("run {number} of job `{}` not found", job.spec.name))
    })
}

/// Cancels `run` of `job` for `caller` — what the API's cancel and the
/// run page's share: refused once the run has ended; agents told, the live
/// feed and the audit log updated.
pub(crate) async fn cancel_run<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    job: &kiln_store::Job,
    run: &RunDetail,
) -> ApiResult<RunDetail> {
    let number = run.run.number;
    if run.run.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "run {number} already ended {}",
            run.run.status
        )));
    }
    let detail = state.db.cancel_run(job.id, number, Utc::now()).await?;
    state.work.notify_waiters();
    state.events.run_detail(&detail);
    let object = format!("{}/run/{number}", job_object(&job.spec.name));
    audit::record(state, caller, "run.cancel", object, None).await;
    Ok(detail)
}

#[utoipa::path(operation_id = "get_run", get, path = "/api/v1/jobs/{job}/runs/{number}", tag = "runs", security((), ("bearer" = []), ("session" = [])),
    params(RunPath),
    responses((status = 200, body = kiln_api::Run), (status = 404, body = kiln_api::Problem)))]
pub async fn show<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
    ApiPath(RunPath { job, number }): ApiPath<RunPath>,
) -> ApiResult<Json<kiln_api::Run>> {
    let (job, run) = find_run(&state, caller.identity(), &job, number, MemberRole::Viewer).await?;
    let mut shown = views::run_detail(&run);
    if job.spec.forge.is_some() {
        shown.statuses = Some(crate::statuses::shown(&state, run.run.id).await?);
    }
    Ok(Json(shown))
}

#[utoipa::path(operation_id = "cancel_run", post, path = "/api/v1/jobs/{job}/runs/{number}/cancel", tag = "runs", security(("bearer" = []), ("session" = [])),
    params(RunPath),
    responses((status = 200, body = kiln_api::Run), (status = 404, body = kiln_api::Problem), (status = 409, description = "The run has already ended", body = kiln_api::Problem)))]
pub async fn cancel<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(RunPath { job, number }): ApiPath<RunPath>,
) -> ApiResult<Json<kiln_api::Run>> {
    let (job, run) = find_run(&state, Some(&caller), &job, number, MemberRole::Developer).await?;
    let detail = cancel_run(&state, &caller, &job, &run).await?;
    Ok(Json(views::run_detail(&detail)))
}

#[utoipa::path(operation_id = "approve_run", post, path = "/api/v1/jobs/{job}/runs/{number}/approve", tag = "runs", security(("bearer" = []), ("session" = [])),
    params(RunPath),
    responses((status = 200, description = "The run, approved: its tasks are queued. The approval is for this run's commit only: a new push to the pull request makes a new run, blocked again", body = kiln_api::Run),
        (status = 403, description = "Approving is a maintainer's", body = kiln_api::Problem),
        (status = 404, body = kiln_api::Problem),
        (status = 409, description = "The run is not blocked: approved already, cancelled, or never waiting for an approval", body = kiln_api::Problem)))]
pub async fn approve<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(RunPath { job, number }): ApiPath<RunPath>,
) -> ApiResult<Json<kiln_api::Run>> {
    let (job, run) = find_run(&state, Some(&caller), &job, number, MemberRole::Maintainer).await?;
    let detail = approve_run(&state, &caller, &job, &run).await?;
    Ok(Json(views::run_detail(&detail)))
}

/// Approves `run` of `job` for `caller`, a maintainer — what the API's
/// approve and the run page's share: its tasks queued, agents woken, the
/// live feed and the audit log (with the commit approved) updated.
pub(crate) async fn approve_run<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    job: &kiln_store::Job,
    run: &RunDetail,
) -> ApiResult<RunDetail> {
    let number = run.run.number;
    if run.run.status != Status::Blocked {
        return Err(ApiError::conflict(format!(
            "run {number} is {}, not blocked: there is nothing to approve",
            run.run.status
        )));
    }
    let detail = state.db.approve_run(job.id, number, Utc::now()).await?;
    state.work.notify_waiters();
    state.events.run_detail(&detail);
    let object = format!("{}/run/{number}", job_object(&job.spec.name));
    let commit = detail.run.sha.as_deref().unwrap_or("(none)");
    let what = Some(format!("commit {commit}"));
    audit::record(state, caller, "run.approve", object, what).await;
    Ok(detail)
}

#[utoipa::path(operation_id = "rerun_run", post, path = "/api/v1/jobs/{job}/runs/{number}/rerun", tag = "runs", security(("bearer" = []), ("session" = [])),
    params(RunPath),
    responses((status = 201, description = "A new run that repeats this one: the same commit, branch, event and pipeline text (not the job's pipeline now)", body = kiln_api::Run),
        (status = 404, body = kiln_api::Problem),
        (status = 409, description = "The run cannot be repeated: it was made before runs kept their pipeline and its job is freestyle, or it built a commit and its job is now freestyle", body = kiln_api::Problem)))]
pub async fn rerun<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(RunPath { job, number }): ApiPath<RunPath>,
) -> ApiResult<(StatusCode, Json<kiln_api::Run>)> {
    let (job, run) = find_run(&state, Some(&caller), &job, number, MemberRole::Developer).await?;
    let detail = rerun_run(&state, &caller, &job, &run).await?;
    Ok((StatusCode::CREATED, Json(views::run_detail(&detail))))
}

/// A new run repeating `run`, audited as `caller`'s: what the API's rerun
/// and the run page's share.
pub(crate) async fn rerun_run<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    job: &kiln_store::Job,
    run: &RunDetail,
) -> ApiResult<RunDetail> {
    let detail = Some(format!("rerun of run {}", run.run.number));
    let audit = audit::entry(caller, "run.rerun", job_object(&job.spec.name), detail);
    Ok(crate::trigger::rerun(state, job, &run.run, Some(audit)).await?)
}

#[cfg(test)]
mod tests {
    /// The API's list of statuses is the pipeline's, in the same order.
    #[test]
    fn api_statuses_are_the_pipelines() {
        let names: Vec<&str> = kiln_pipeline::Status::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(names, kiln_api::STATUSES);
        for name in kiln_api::STATUSES {
            assert_eq!(super::parse_status(name).unwrap().as_str(), name);
        }
    }
}
