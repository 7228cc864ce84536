use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::SecretBody;
use kiln_store::Database;

use crate::api::jobs::find_job;
use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::secrets::seal_secret;
use crate::state::AppState;

/// Largest secret value: enough for keys and certificates.
const MAX_SECRET_BYTES: usize = 64 * 1024;

fn check_secret_name(name: &str) -> ApiResult<()> {
    let valid = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "`{name}` is not a valid secret name: letters, digits and `_`, not starting with a digit"
        )))
    }
}

#[utoipa::path(operation_id = "put_secret", put, path = "/api/v1/jobs/{job}/secrets/{name}", tag = "secrets", security(("bearer" = [])), request_body = SecretBody,
    params(("job" = String, Path), ("name" = String, Path)),
    responses((status = 204, description = "Stored, encrypted; the value can never be read back"), (status = 404, body = kiln_api::Problem), (status = 422, body = kiln_api::Problem)))]
pub async fn put<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path((job, name)): Path<(String, String)>,
    Json(body): Json<SecretBody>,
) -> ApiResult<StatusCode> {
    check_secret_name(&name)?;
    if body.value.is_empty() || body.value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::unprocessable(format!(
            "a secret's value must be 1 to {MAX_SECRET_BYTES} bytes"
        )));
    }
    let job = find_job(&state, &job).await?;
    let sealed = seal_secret(&state.key, job.id, &name, &body.value);
    state
        .db
        .put_secret(job.id, &name, &sealed, Utc::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(operation_id = "delete_secret", delete, path = "/api/v1/jobs/{job}/secrets/{name}", tag = "secrets", security(("bearer" = [])),
    params(("job" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = kiln_api::Problem)))]
pub async fn delete<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path((job, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let job = find_job(&state, &job).await?;
    if state.db.delete_secret(job.id, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "job `{}` has no secret `{name}`",
            job.spec.name
        )))
    }
}

#[utoipa::path(operation_id = "list_secrets", get, path = "/api/v1/jobs/{job}/secrets", tag = "secrets", security(("bearer" = [])),
    params(("job" = String, Path)),
    responses((status = 200, description = "Names only: values are write-only", body = Vec<kiln_api::Secret>), (status = 404, body = kiln_api::Problem)))]
pub async fn list<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path(job): Path<String>,
) -> ApiResult<Json<Vec<kiln_api::Secret>>> {
    let job = find_job(&state, &job).await?;
    let secrets = state.db.list_secrets(job.id).await?;
    Ok(Json(
        secrets
            .into_iter()
            .map(|s| kiln_api::Secret {
                name: s.name,
                updated_at: s.updated_at,
            })
            .collect(),
    ))
}
