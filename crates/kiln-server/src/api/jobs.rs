use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::fields::JobName;
use kiln_store::{Database, JobKind, JobSpec, Upserted};

use super::bodies::{JobDefinition, JobPath, JobSource, NewJob};
use super::extract::{ApiJson, ApiPath};
use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

/// The stored form of a job, with defaults filled in. The body's types
/// checked its fields; what is left is the pipeline's validity.
pub fn job_spec(name: &JobName, source: JobSource) -> ApiResult<JobSpec> {
    match source {
        JobSource::Git {
            repository,
            pipeline_path,
            default_branch,
        } => Ok(JobSpec {
            name: name.to_string(),
            kind: JobKind::Git,
            repository: Some(repository.into()),
            pipeline_path: Some(pipeline_path.map_or_else(|| ".kiln.yml".into(), String::from)),
            default_branch: Some(default_branch.map_or_else(|| "main".into(), String::from)),
            pipeline: None,
        }),
        JobSource::Freestyle {
            pipeline,
            default_branch,
        } => {
            // A freestyle pipeline has no file: its errors name the field.
            if let Err(diagnostics) = kiln_pipeline::parse("pipeline", &pipeline) {
                let mut error = ApiError::unprocessable("the pipeline is not valid");
                error.errors = diagnostics.0.iter().map(ToString::to_string).collect();
                return Err(error);
            }
            Ok(JobSpec {
                name: name.to_string(),
                kind: JobKind::Freestyle,
                repository: None,
                pipeline_path: None,
                default_branch: default_branch.map(String::from),
                pipeline: Some(pipeline),
            })
        }
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

#[utoipa::path(operation_id = "create_job", post, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])), request_body = NewJob,
    responses((status = 201, description = "Created", body = kiln_api::Job), (status = 409, description = "A job of that name exists", body = kiln_api::Problem),
        (status = 422, description = "The body does not fit its schema, or the freestyle pipeline is not valid (`errors` says where)", body = kiln_api::Problem)))]
pub async fn create<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    ApiJson(body): ApiJson<NewJob>,
) -> ApiResult<(StatusCode, Json<kiln_api::Job>)> {
    let (name, source) = body.into_parts();
    let spec = job_spec(&name, source)?;
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
    params(JobPath), responses((status = 200, body = kiln_api::Job), (status = 404, body = kiln_api::Problem)))]
pub async fn show<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<JobPath>,
) -> ApiResult<Json<kiln_api::Job>> {
    Ok(Json(views::job(&find_job(&state, &path.job).await?)))
}

#[utoipa::path(operation_id = "put_job", put, path = "/api/v1/jobs/{job}", tag = "jobs", security(("bearer" = [])), request_body = JobDefinition,
    params(JobPath),
    responses((status = 201, description = "Created; `change` is `created`", body = kiln_api::Job),
        (status = 200, description = "Replaced; `change` is `updated` or `unchanged`", body = kiln_api::Job),
        (status = 422, description = "The body does not fit its schema, names another job, or the freestyle pipeline is not valid (`errors` says where)", body = kiln_api::Problem)))]
pub async fn upsert<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    ApiPath(JobPath { job: name }): ApiPath<JobPath>,
    ApiJson(body): ApiJson<JobDefinition>,
) -> ApiResult<(StatusCode, Json<kiln_api::Job>)> {
    let (body_name, source) = body.into_parts();
    if let Some(body_name) = body_name
        && body_name != name
    {
        return Err(ApiError::unprocessable(format!(
            "the body names job `{body_name}` but the URL names `{name}`"
        )));
    }
    let spec = job_spec(&name, source)?;
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
    params(JobPath), responses((status = 204, description = "Deleted, with its runs, logs, artifacts and secrets"), (status = 404, body = kiln_api::Problem)))]
pub async fn delete<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    ApiPath(JobPath { job: name }): ApiPath<JobPath>,
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
