use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::{RunList, TriggerBody};
use kiln_pipeline::{Event, Status};
use kiln_store::{Database, RunDetail, RunFilter};
use serde::Deserialize;

use crate::api::jobs::find_job;
use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::trigger::{Target, trigger as start_run};
use crate::views;

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

#[utoipa::path(operation_id = "trigger_run", post, path = "/api/v1/jobs/{job}/runs", tag = "runs", security(("bearer" = [])), request_body = TriggerBody,
    params(("job" = String, Path)),
    responses((status = 201, description = "The run; status `error` with the reason when the pipeline is invalid", body = kiln_api::Run),
        (status = 404, body = kiln_api::Problem), (status = 422, body = kiln_api::Problem)))]
pub async fn trigger<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path(job): Path<String>,
    body: Option<Json<TriggerBody>>,
) -> ApiResult<(StatusCode, Json<kiln_api::Run>)> {
    let job = find_job(&state, &job).await?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let target = match (body.branch, body.sha) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable("give `branch` or `sha`, not both"));
        }
        (None, Some(sha)) => {
            if sha.is_empty() || sha.len() > 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ApiError::unprocessable(format!(
                    "`{sha}` is not a commit sha"
                )));
            }
            Target::Sha { sha, branch: None }
        }
        (branch, None) => {
            if let Some(b) = &branch
                && (b.is_empty()
                    || b.starts_with('-')
                    || b.contains(['\n', '\0', ' ', '~', '^', ':']))
            {
                return Err(ApiError::unprocessable(format!(
                    "`{b}` is not a branch name"
                )));
            }
            Target::Branch(branch)
        }
    };
    let detail = start_run(&state, &job, target, Event::Api).await?;
    Ok((StatusCode::CREATED, Json(views::run_detail(&detail))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs with this status.
    status: Option<String>,
    /// Only runs of this branch.
    branch: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 50 by default, at most 500.
    limit: Option<i64>,
}

#[utoipa::path(operation_id = "list_runs", get, path = "/api/v1/jobs/{job}/runs", tag = "runs", security(("bearer" = [])),
    params(("job" = String, Path), ListQuery),
    responses((status = 200, body = RunList), (status = 404, body = kiln_api::Problem), (status = 422, body = kiln_api::Problem)))]
pub async fn list<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path(job): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<RunList>> {
    let job = find_job(&state, &job).await?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_status(text)?),
    };
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ApiError::unprocessable(format!("`{text}` is not a cursor from this API"))
        })?),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::unprocessable(format!(
            "`limit` must be between 1 and {MAX_PAGE}"
        )));
    }
    let filter = RunFilter {
        status,
        branch: query.branch.filter(|b| !b.is_empty()),
        before,
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

fn parse_status(text: &str) -> ApiResult<Status> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        ApiError::unprocessable(format!(
            "unknown status `{text}`: expected one of {}",
            kiln_api::STATUSES.join(", ")
        ))
    })
}

pub async fn find_run<D: Database>(
    state: &AppState<D>,
    job: &str,
    number: i64,
) -> ApiResult<(kiln_store::Job, RunDetail)> {
    let job = find_job(state, job).await?;
    let run = state.db.get_run(job.id, number).await?.ok_or_else(|| {
        ApiError::not_found(format!("run {number} of job `{}` not found", job.spec.name))
    })?;
    Ok((job, run))
}

#[utoipa::path(operation_id = "get_run", get, path = "/api/v1/jobs/{job}/runs/{number}", tag = "runs", security(("bearer" = [])),
    params(("job" = String, Path), ("number" = i64, Path)),
    responses((status = 200, body = kiln_api::Run), (status = 404, body = kiln_api::Problem)))]
pub async fn show<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path((job, number)): Path<(String, i64)>,
) -> ApiResult<Json<kiln_api::Run>> {
    let (_, run) = find_run(&state, &job, number).await?;
    Ok(Json(views::run_detail(&run)))
}

#[utoipa::path(operation_id = "cancel_run", post, path = "/api/v1/jobs/{job}/runs/{number}/cancel", tag = "runs", security(("bearer" = [])),
    params(("job" = String, Path), ("number" = i64, Path)),
    responses((status = 200, body = kiln_api::Run), (status = 404, body = kiln_api::Problem), (status = 409, body = kiln_api::Problem)))]
pub async fn cancel<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path((job, number)): Path<(String, i64)>,
) -> ApiResult<Json<kiln_api::Run>> {
    let (job, run) = find_run(&state, &job, number).await?;
    if run.run.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "run {number} already ended {}",
            run.run.status
        )));
    }
    let detail = state.db.cancel_run(job.id, number, Utc::now()).await?;
    state.work.notify_waiters();
    Ok(Json(views::run_detail(&detail)))
}

#[utoipa::path(operation_id = "rerun_run", post, path = "/api/v1/jobs/{job}/runs/{number}/rerun", tag = "runs", security(("bearer" = [])),
    params(("job" = String, Path), ("number" = i64, Path)),
    responses((status = 201, description = "A new run of the same commit", body = kiln_api::Run), (status = 404, body = kiln_api::Problem)))]
pub async fn rerun<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path((job, number)): Path<(String, i64)>,
) -> ApiResult<(StatusCode, Json<kiln_api::Run>)> {
    let (job, run) = find_run(&state, &job, number).await?;
    let target = match run.run.sha {
        Some(sha) => Target::Sha {
            sha,
            branch: run.run.branch,
        },
        None => Target::Branch(run.run.branch),
    };
    let detail = start_run(&state, &job, target, run.run.event).await?;
    Ok((StatusCode::CREATED, Json(views::run_detail(&detail))))
}
