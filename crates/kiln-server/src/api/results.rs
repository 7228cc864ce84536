use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kiln_api::fields::AttemptNumber;
use kiln_store::{Database, JobId, TaskRow};

use super::bodies::{ArtifactPath, AttemptQuery, TaskPath};
use super::extract::{ApiPath, ApiQuery};
use crate::api::jobs::find_job;
use crate::api::runs::find_run;
use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::results::artifact_key;
use crate::state::AppState;

pub(super) struct Located {
    pub job_id: JobId,
    pub number: i64,
    pub task: TaskRow,
}

pub(super) async fn find_task<D: Database>(
    state: &AppState<D>,
    TaskPath { job, number, task }: TaskPath,
) -> ApiResult<Located> {
    let job = find_job(state, &job).await?;
    // One task, not the whole run: runs may hold thousands of tasks.
    let Some(task) = state.db.find_task(job.id, number, &task).await? else {
        // Which is missing, for the message; only on this error path.
        find_run(state, &job.spec.name, number).await?;
        return Err(ApiError::not_found(format!(
            "run {number} of job `{}` has no task `{task}`",
            job.spec.name
        )));
    };
    Ok(Located {
        job_id: job.id,
        number,
        task,
    })
}

/// The attempt a request for results means: the one `?attempt=` names,
/// or the task's latest.
pub(super) fn attempt_of(found: &Located, asked: Option<AttemptNumber>) -> ApiResult<i64> {
    match asked.map(AttemptNumber::get) {
        None => Ok(found.task.attempt),
        Some(n) if n <= found.task.attempt => Ok(n),
        Some(n) => Err(ApiError::not_found(format!(
            "task `{}` has no attempt {n}: it has had {} so far",
            found.task.name, found.task.attempt
        ))),
    }
}

#[utoipa::path(operation_id = "list_results", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results", tag = "results", security(("bearer" = [])),
    params(TaskPath, AttemptQuery),
    responses((status = 200, body = kiln_api::Results), (status = 404, body = kiln_api::Problem)))]
pub async fn list<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<TaskPath>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
) -> ApiResult<Json<kiln_api::Results>> {
    let base = format!(
        "/api/v1/jobs/{}/runs/{}/tasks/{}",
        path.job, path.number, path.task
    );
    let found = find_task(&state, path).await?;
    let attempt = attempt_of(&found, query.attempt)?;
    // Links to an attempt asked for by number stay with that attempt.
    let pinned = query
        .attempt
        .map(|_| format!("?attempt={attempt}"))
        .unwrap_or_default();
    let started = found.task.started_at.is_some();
    let junit = state
        .db
        .get_report(found.task.id, attempt, "junit")
        .await?
        .is_some();
    let artifacts = state.db.list_artifacts(found.task.id, attempt).await?;
    Ok(Json(kiln_api::Results {
        attempt,
        attempts: found.task.attempt,
        console: started.then(|| format!("{base}/results/console{pinned}")),
        junit: junit.then(|| format!("{base}/results/junit{pinned}")),
        artifacts: artifacts
            .into_iter()
            .map(|a| kiln_api::Artifact {
                url: format!("{base}/results/artifacts/{}{pinned}", a.path),
                path: a.path,
                size: a.size,
                content_type: a.content_type,
            })
            .collect(),
    }))
}

#[utoipa::path(operation_id = "get_junit", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/junit", tag = "results", security(("bearer" = [])),
    params(TaskPath, AttemptQuery),
    responses((status = 200, description = "Suites, cases, failures and durations", body = Object), (status = 404, body = kiln_api::Problem)))]
pub async fn junit<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<TaskPath>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
) -> ApiResult<Response> {
    let found = find_task(&state, path).await?;
    let attempt = attempt_of(&found, query.attempt)?;
    let report = state
        .db
        .get_report(found.task.id, attempt, "junit")
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("task `{}` has no JUnit report", found.task.name))
        })?;
    let mut response = report.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[utoipa::path(operation_id = "get_artifact", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/artifacts/{path}", tag = "results", security(("bearer" = [])),
    params(ArtifactPath, AttemptQuery),
    responses((status = 200, description = "The file, with the content type of its extension", content_type = "*/*"), (status = 404, body = kiln_api::Problem)))]
pub async fn artifact<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    ApiPath(ArtifactPath {
        job,
        number,
        task,
        path,
    }): ApiPath<ArtifactPath>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
) -> ApiResult<Response> {
    let found = find_task(&state, TaskPath { job, number, task }).await?;
    let attempt = attempt_of(&found, query.attempt)?;
    let artifacts = state.db.list_artifacts(found.task.id, attempt).await?;
    let artifact = artifacts
        .into_iter()
        .find(|a| a.path == path)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "task `{}` has no artifact `{path}`",
                found.task.name
            ))
        })?;
    // The key is recomputed, not taken from the row, so it always stays
    // under this task's prefix.
    let key = artifact_key(
        found.job_id,
        found.number,
        found.task.id,
        attempt,
        &artifact.path,
    )
    .map_err(ApiError::not_found)?;
    let stream = state
        .blobs
        .get_stream(&key)
        .await
        .map_err(ApiError::internal)?;
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&artifact.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&artifact.size.to_string()) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    let file_name = artifact
        .path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .replace('"', "");
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
