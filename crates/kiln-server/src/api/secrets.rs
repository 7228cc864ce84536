use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kiln_store::{Database, MemberRole};

use kiln_api::fields::{SecretName, SecretValue};

use super::bodies::{JobPath, SecretPath, SecretValueBody};
use super::extract::{ApiJson, ApiPath};
use crate::access;
use crate::audit::{self, job_object};
use crate::auth::{Identity, SignedIn};
use crate::error::{ApiError, ApiResult};
use crate::secrets::seal_secret;
use crate::state::AppState;

#[utoipa::path(operation_id = "put_secret", put, path = "/api/v1/jobs/{job}/secrets/{name}", tag = "secrets", security(("bearer" = []), ("session" = [])), request_body = SecretValueBody,
    params(SecretPath),
    responses((status = 204, description = "Stored, encrypted; the value can never be read back"), (status = 404, body = kiln_api::Problem)))]
pub async fn put<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(SecretPath { job, name }): ApiPath<SecretPath>,
    ApiJson(body): ApiJson<SecretValueBody>,
) -> ApiResult<StatusCode> {
    put_secret(&state, &caller, &job, &name, &body.value, body.allow_forks).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stores (or replaces) secret `name` of job `job` for `caller`, a
/// maintainer: what the API and the job's settings page share.
pub(crate) async fn put_secret<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    job: &str,
    name: &SecretName,
    value: &SecretValue,
    allow_forks: bool,
) -> ApiResult<()> {
    let job = access::job(state, Some(caller), job, MemberRole::Maintainer).await?;
    let sealed = seal_secret(&state.key, &job, name, value.as_str());
    state
        .db
        .put_secret(job.id, name, &sealed, allow_forks, Utc::now())
        .await?;
    let object = format!("{}/secret/{name}", job_object(&job.spec.name));
    let detail = allow_forks.then(|| "allow_forks".to_string());
    audit::record(state, caller, "secret.put", object, detail).await;
    Ok(())
}

#[utoipa::path(operation_id = "delete_secret", delete, path = "/api/v1/jobs/{job}/secrets/{name}", tag = "secrets", security(("bearer" = []), ("session" = [])),
    params(SecretPath),
    responses((status = 204, description = "Deleted"), (status = 404, body = kiln_api::Problem)))]
pub async fn delete<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(SecretPath { job, name }): ApiPath<SecretPath>,
) -> ApiResult<StatusCode> {
    delete_secret(&state, &caller, &job, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes secret `name` of job `job` for `caller`, a maintainer.
pub(crate) async fn delete_secret<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    job: &str,
    name: &str,
) -> ApiResult<()> {
    let job = access::job(state, Some(caller), job, MemberRole::Maintainer).await?;
    if state.db.delete_secret(job.id, name).await? {
        let object = format!("{}/secret/{name}", job_object(&job.spec.name));
        audit::record(state, caller, "secret.delete", object, None).await;
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "job `{}` has no secret `{name}`",
            job.spec.name
        )))
    }
}

#[utoipa::path(operation_id = "list_secrets", get, path = "/api/v1/jobs/{job}/secrets", tag = "secrets", security(("bearer" = []), ("session" = [])),
    params(JobPath),
    responses((status = 200, description = "Names only: values are write-only", body = Vec<kiln_api::Secret>), (status = 404, body = kiln_api::Problem)))]
pub async fn list<D: Database>(
    SignedIn(caller): SignedIn,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<JobPath>,
) -> ApiResult<Json<Vec<kiln_api::Secret>>> {
    Ok(Json(list_secrets(&state, &caller, &path.job).await?))
}

/// The names of job `job`'s secrets, for `caller`, a developer.
pub(crate) async fn list_secrets<D: Database>(
    state: &AppState<D>,
    caller: &Identity,
    job: &str,
) -> ApiResult<Vec<kiln_api::Secret>> {
    let job = access::job(state, Some(caller), job, MemberRole::Developer).await?;
    let secrets = state.db.list_secrets(job.id).await?;
    Ok(secrets
        .into_iter()
        .map(|s| kiln_api::Secret {
            name: s.name,
            updated_at: s.updated_at,
            allow_forks: s.allow_forks,
        })
        .collect())
}
