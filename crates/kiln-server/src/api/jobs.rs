use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::JobBody;
use kiln_store::{Database, JobKind, JobSpec, Upserted};

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

/// Job names appear in URLs and in `KILN_JOB`: keep them plain.
pub fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let valid = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "`{name}` is not a valid {what} name: use letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most 64 characters"
        )))
    }
}

/// Checks a job body and turns it into the stored form with defaults filled in.
pub fn job_spec(name: &str, body: JobBody) -> ApiResult<JobSpec> {
    check_name("job", name)?;
    if let Some(body_name) = &body.name
        && body_name != name
    {
        return Err(ApiError::unprocessable(format!(
            "the body names job `{body_name}` but the URL names `{name}`"
        )));
    }
    match body.kind.as_str() {
        "git" => {
            let repository = body
                .repository
                .filter(|r| !r.trim().is_empty())
                .ok_or_else(|| ApiError::unprocessable("a git job needs `repository`"))?;
            if repository.starts_with('-') || repository.contains(['\n', '\r', '\0']) {
                return Err(ApiError::unprocessable(format!(
                    "`{repository}` is not a repository URL"
                )));
            }
            if body.pipeline.is_some() {
                return Err(ApiError::unprocessable(
                    "a git job reads its pipeline from the repository; `pipeline` is for freestyle jobs",
                ));
            }
            let pipeline_path = body.pipeline_path.unwrap_or_else(|| ".kiln.yml".into());
            let path = std::path::Path::new(&pipeline_path);
            if path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(ApiError::unprocessable(
                    "`pipeline_path` must be a relative path inside the repository",
                ));
            }
            Ok(JobSpec {
                name: name.into(),
                kind: JobKind::Git,
                repository: Some(repository),
                pipeline_path: Some(pipeline_path),
                default_branch: Some(body.default_branch.unwrap_or_else(|| "main".into())),
                pipeline: None,
            })
        }
        "freestyle" => {
            let pipeline = body.pipeline.ok_or_else(|| {
                ApiError::unprocessable("a freestyle job needs `pipeline` (YAML text)")
            })?;
            if body.repository.is_some() || body.pipeline_path.is_some() {
                return Err(ApiError::unprocessable(
                    "a freestyle job has no repository; use kind `git` to build from one",
                ));
            }
            // A freestyle pipeline has no file: its errors name the field.
            if let Err(diagnostics) = kiln_pipeline::parse("pipeline", &pipeline) {
                let mut error = ApiError::unprocessable("the pipeline is not valid");
                error.errors = diagnostics.0.iter().map(ToString::to_string).collect();
                return Err(error);
            }
            Ok(JobSpec {
                name: name.into(),
                kind: JobKind::Freestyle,
                repository: None,
                pipeline_path: None,
                default_branch: body.default_branch,
                pipeline: Some(pipeline),
            })
        }
        other => Err(ApiError::unprocessable(format!(
            "unknown job kind `{other}`: expected `git` or `freestyle`"
        ))),
    }
}

pub async fn find_job<D: Database>(state: &AppState<D>, name: &str) -> ApiResult<kiln_store::Job> {
    state
        .db
        .get_job(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job `{name}` not found")))
}

#[utoipa::path(operation_id = "list_jobs", get, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    responses((status = 200, body = Vec<kiln_api::Job>)))]
pub async fn list<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
) -> ApiResult<Json<Vec<kiln_api::Job>>> {
    let jobs = state.db.list_jobs().await?;
    Ok(Json(jobs.iter().map(views::job).collect()))
}

#[utoipa::path(operation_id = "create_job", post, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])), request_body = JobBody,
    responses((status = 201, body = kiln_api::Job), (status = 409, body = kiln_api::Problem), (status = 422, body = kiln_api::Problem)))]
pub async fn create<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Json(body): Json<JobBody>,
) -> ApiResult<(StatusCode, Json<kiln_api::Job>)> {
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::unprocessable("the job needs a `name`"))?;
    let spec = job_spec(&name, body)?;
    let job = state
        .db
        .create_job(&spec, Utc::now())
        .await
        .map_err(|e| match e {
            kiln_store::StoreError::Conflict(_) => ApiError::conflict(format!(
                "job `{name}` exists; use PUT /api/v1/jobs/{name} to replace it"
            )),
            e => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(views::job(&job))))
}

#[utoipa::path(operation_id = "get_job", get, path = "/api/v1/jobs/{job}", tag = "jobs", security(("bearer" = [])),
    params(("job" = String, Path)), responses((status = 200, body = kiln_api::Job), (status = 404, body = kiln_api::Problem)))]
pub async fn show<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
) -> ApiResult<Json<kiln_api::Job>> {
    Ok(Json(views::job(&find_job(&state, &name).await?)))
}

#[utoipa::path(operation_id = "put_job", put, path = "/api/v1/jobs/{job}", tag = "jobs", security(("bearer" = [])), request_body = JobBody,
    params(("job" = String, Path)),
    responses((status = 201, body = kiln_api::Job), (status = 200, body = kiln_api::Job), (status = 422, body = kiln_api::Problem)))]
pub async fn upsert<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
    Json(body): Json<JobBody>,
) -> ApiResult<(StatusCode, Json<kiln_api::Job>)> {
    let spec = job_spec(&name, body)?;
    let (job, change) = state.db.upsert_job(&spec, Utc::now()).await?;
    let mut view = views::job(&job);
    let (status, change) = match change {
        Upserted::Created => (StatusCode::CREATED, "created"),
        Upserted::Updated => (StatusCode::OK, "updated"),
        Upserted::Unchanged => (StatusCode::OK, "unchanged"),
    };
    view.change = Some(change.into());
    Ok((status, Json(view)))
}

#[utoipa::path(operation_id = "delete_job", delete, path = "/api/v1/jobs/{job}", tag = "jobs", security(("bearer" = [])),
    params(("job" = String, Path)), responses((status = 204), (status = 404, body = kiln_api::Problem)))]
pub async fn delete<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let job = find_job(&state, &name).await?;
    if !state.db.delete_job(&name).await? {
        return Err(ApiError::not_found(format!("job `{name}` not found")));
    }
    if let Err(e) = state
        .blobs
        .delete_prefix(&crate::trigger::job_blob_prefix(job.id))
        .await
    {
        tracing::warn!("job {name} deleted, but not all of its logs and artifacts: {e}");
    }
    Ok(StatusCode::NO_CONTENT)
}
