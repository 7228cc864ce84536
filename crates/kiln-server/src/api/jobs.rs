use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::fields::JobName;
use kiln_store::{Database, JobKind, JobSpec, MemberRole, Upserted, Visibility};

use super::bodies::{JobDefinition, JobPath, JobSource, NewJob};
use super::extract::{ApiJson, ApiPath};
use crate::access::{self, Decision};
use crate::audit::{self, job_object};
use crate::auth::{Caller, SignedIn};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

/// The stored form of a job, with defaults filled in. The body's types
/// checked its fields; what is left is the pipeline's validity.
pub fn job_spec(name: &JobName, source: JobSource, visibility: Visibility) -> ApiResult<JobSpec> {
    match source {
        JobSource::Git {
            repository,
            pipeline_path,
            default_branch,
            forge,
            fork_prs,
            poll_interval,
        } => Ok(JobSpec {
            name: name.to_string(),
            kind: JobKind::Git,
            repository: Some(repository.into()),
            pipeline_path: Some(pipeline_path.map_or_else(|| ".kiln.yml".into(), String::from)),
            default_branch: Some(default_branch.map_or_else(|| "main".into(), String::from)),
            pipeline: None,
            visibility,
            forge: forge.map(String::from),
            fork_prs: fork_prs.unwrap_or_else(kiln_store::fork_prs_default),
            poll_interval,
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
                visibility,
                forge: None,
                fork_prs: kiln_store::fork_prs_default(),
                poll_interval: None,
            })
        }
    }
}

#[utoipa::path(operation_id = "list_jobs", get, path = "/api/v1/jobs", tag = "jobs", security((), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<kiln_api::Job>)))]
pub async fn list<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
) -> ApiResult<Json<Vec<kiln_api::Job>>> {
    let jobs = state.db.list_jobs().await?;
    let roles = match caller.identity().and_then(|identity| identity.user) {
        Some(user) => state.db.member_roles(user).await?,
        None => Vec::new(),
    };
    let role_of = |job: &kiln_store::Job| {
        roles
            .iter()
            .find(|(id, _)| *id == job.id)
            .map(|(_, role)| *role)
    };
    let readable = jobs.iter().filter(|job| {
        let decision = access::decide(
            caller.identity(),
            job.spec.visibility,
            role_of(job),
            MemberRole::Viewer,
        );
        decision == Decision::Allowed
    });
    Ok(Json(readable.map(views::job).collect()))
}

#[utoipa::path(operation_id = "create_job", post, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = []), ("session" = [])), request_body = NewJob,
    responses((status = 201, description = "Created", body = kiln_api::Job), (status = 409, description = "A job of that name exists", body = kiln_api::Problem),
        (status = 422, description = "The body does not fit its schema, or the freestyle pipeline is not valid (`errors` says where)", body = kiln_api::Problem)))]
pub async fn create<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiJson(body): ApiJson<NewJob>,
) -> ApiResult<(StatusCode, Json<kiln_api::Job>)> {
    let (name, source, visibility) = body.into_parts();
    let spec = job_spec(&name, source, visibility.unwrap_or(Visibility::Private))?;
    check_forge(&state, &spec).await?;
    let job = create_job(&state, &caller, &spec).await?;
    Ok((StatusCode::CREATED, Json(views::job(&job))))
}

/// A job's `forge` must name a forge: a typo would otherwise leave its
/// webhooks starting nothing, without a word.
async fn check_forge<D: Database>(state: &AppState<D>, spec: &JobSpec) -> ApiResult<()> {
    let Some(forge) = &spec.forge else {
        return Ok(());
    };
    if state.db.get_forge(forge).await?.is_none() {
        return Err(ApiError::unprocessable(format!(
            "forge `{forge}` does not exist: an admin creates it with \
             `kiln forge set {forge} --kind github|gitlab|gitea --api-url URL`"
        )));
    }
    Ok(())
}

/// Creates the job with `caller` as its creator and maintainer, and audits it.
async fn create_job<D: Database>(
    state: &AppState<D>,
    caller: &crate::auth::Identity,
    spec: &JobSpec,
) -> ApiResult<kiln_store::Job> {
    let name = &spec.name;
    let job = state
        .db
        .create_job(spec, caller.user, Utc::now())
        .await
        .map_err(|e| match e {
            kiln_store::StoreError::Conflict(_) => ApiError::conflict(format!(
                "job `{name}` exists; use PUT /api/v1/jobs/{name} to replace it (as its maintainer)"
            )),
            e => e.into(),
        })?;
    audit::record(state, caller, "job.create", job_object(name), None).await;
    Ok(job)
}

#[utoipa::path(operation_id = "get_job", get, path = "/api/v1/jobs/{job}", tag = "jobs", security((), ("bearer" = []), ("session" = [])),
    params(JobPath), responses((status = 200, body = kiln_api::Job), (status = 404, body = kiln_api::Problem)))]
pub async fn show<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<JobPath>,
) -> ApiResult<Json<kiln_api::Job>> {
    let job = access::job(&state, caller.identity(), &path.job, MemberRole::Viewer).await?;
    let mut view = views::job(&job);
    if job.spec.poll_interval.is_some() {
        // Why polling does not work is what someone reading the job needs.
        view.poll_error = state.db.get_poll(job.id).await?.and_then(|p| p.error);
    }
    Ok(Json(view))
}

#[utoipa::path(operation_id = "put_job", put, path = "/api/v1/jobs/{job}", tag = "jobs", security(("bearer" = []), ("session" = [])), request_body = JobDefinition,
    params(JobPath),
    responses((status = 201, description = "Created; `change` is `created`", body = kiln_api::Job),
        (status = 200, description = "Replaced; `change` is `updated` or `unchanged`", body = kiln_api::Job),
        (status = 422, description = "The body does not fit its schema, names another job, or the freestyle pipeline is not valid (`errors` says where)", body = kiln_api::Problem)))]
pub async fn upsert<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(JobPath { job: name }): ApiPath<JobPath>,
    ApiJson(body): ApiJson<JobDefinition>,
) -> ApiResult<(StatusCode, Json<kiln_api::Job>)> {
    let (body_name, source, visibility) = body.into_parts();
    if let Some(body_name) = body_name
        && body_name != name
    {
        return Err(ApiError::unprocessable(format!(
            "the body names job `{body_name}` but the URL names `{name}`"
        )));
    }
    let (job, change) = upsert_job(&state, &caller, &name, source, visibility).await?;
    let mut view = views::job(&job);
    let (status, change) = match change {
        Upserted::Created => (StatusCode::CREATED, "created"),
        Upserted::Updated => (StatusCode::OK, "updated"),
        Upserted::Unchanged => (StatusCode::OK, "unchanged"),
    };
    view.change = Some(change.into());
    Ok((status, Json(view)))
}

/// Creates job `name`, or replaces it for `caller`, its maintainer, with
/// `source` (and `visibility`, or the job's own when `None`): what the
/// API's `PUT` and the job's settings page share.
pub(crate) async fn upsert_job<D: Database>(
    state: &AppState<D>,
    caller: &crate::auth::Identity,
    name: &JobName,
    source: JobSource,
    visibility: Option<Visibility>,
) -> ApiResult<(kiln_store::Job, Upserted)> {
    // Replacing a job — its repository, its pipeline — is a maintainer's:
    // a pipeline can print the secrets it is given.
    let existing = match access::job(state, Some(caller), name, MemberRole::Maintainer).await {
        Ok(job) => Some(job),
        Err(e) if e.status == StatusCode::NOT_FOUND => None,
        Err(e) => return Err(e),
    };
    let visibility = visibility
        .or(existing.as_ref().map(|job| job.spec.visibility))
        .unwrap_or(Visibility::Private);
    let spec = job_spec(name, source, visibility)?;
    check_forge(state, &spec).await?;
    Ok(match existing {
        None => (create_job(state, caller, &spec).await?, Upserted::Created),
        Some(_) => {
            let (job, change) = state.db.upsert_job(&spec, caller.user, Utc::now()).await?;
            if change != Upserted::Unchanged {
                audit::record(state, caller, "job.update", job_object(name), None).await;
            }
            (job, change)
        }
    })
}

#[utoipa::path(operation_id = "delete_job", delete, path = "/api/v1/jobs/{job}", tag = "jobs", security(("bearer" = []), ("session" = [])),
    params(JobPath), responses((status = 204, description = "Deleted, with its runs, logs, artifacts and secrets"), (status = 404, body = kiln_api::Problem)))]
pub async fn delete<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(JobPath { job: name }): ApiPath<JobPath>,
) -> ApiResult<StatusCode> {
    delete_job(&state, &caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes job `name` with its runs, logs, artifacts and secrets, for
/// `caller`, its maintainer: what the API and the job's settings page share.
pub(crate) async fn delete_job<D: Database>(
    state: &AppState<D>,
    caller: &crate::auth::Identity,
    name: &str,
) -> ApiResult<()> {
    let job = access::job(state, Some(caller), name, MemberRole::Maintainer).await?;
    if !state.db.delete_job(name).await? {
        return Err(access::not_found(name));
    }
    audit::record(state, caller, "job.delete", job_object(name), None).await;
    if let Err(e) = state
        .blobs
        .delete_prefix(&crate::trigger::job_blob_prefix(job.id))
        .await
    {
        tracing::warn!("job {name} deleted, but not all of its logs and artifacts: {e}");
    }
    Ok(())
}
