use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_api::fields::AttemptNumber;
use kiln_api::url::segment;
use kiln_blob::BlobError;
use kiln_store::{Artifact, Database, JobId, MemberRole, TaskRow};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::bodies::{ArtifactPath, AttemptQuery, TaskPath};
use super::extract::{ApiPath, ApiQuery};
use super::range::{content_range, in_bytes, satisfiable};
use crate::access;
use crate::api::runs::find_run_of;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::results::artifact_key;
use crate::state::AppState;

pub(super) struct Located {
    pub job_id: JobId,
    pub number: i64,
    pub task: TaskRow,
}

/// The task, if `caller` may read its job.
pub(super) async fn find_task<D: Database>(
    state: &AppState<D>,
    caller: &Caller,
    TaskPath { job, number, task }: TaskPath,
) -> ApiResult<Located> {
    let job = access::job(state, caller.identity(), &job, MemberRole::Viewer).await?;
    // One task, not the whole run: runs may hold thousands of tasks.
    let Some(task) = state.db.find_task(job.id, number, &task).await? else {
        // Which is missing, for the message; only on this error path.
        find_run_of(state, &job, number).await?;
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

#[utoipa::path(operation_id = "list_results", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results", tag = "results", security((), ("bearer" = []), ("session" = [])),
    params(TaskPath, AttemptQuery),
    responses((status = 200, body = kiln_api::Results), (status = 404, body = kiln_api::Problem)))]
pub async fn list<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<TaskPath>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
) -> ApiResult<Json<kiln_api::Results>> {
    // Task names hold `[`, `=`, spaces…, and artifact paths anything a
    // file name may: every segment is encoded, so a link works as it is.
    let base = format!(
        "/api/v1/jobs/{}/runs/{}/tasks/{}",
        segment(&path.job),
        path.number,
        segment(&path.task)
    );
    let found = find_task(&state, &caller, path).await?;
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
                url: format!(
                    "{base}/results/artifacts/{}{pinned}",
                    path_segments(&a.path)
                ),
                path: a.path,
                size: a.size,
                content_type: a.content_type,
                expires_at: a.expires_at,
            })
            .collect(),
    }))
}

#[utoipa::path(operation_id = "get_junit", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/junit", tag = "results", security((), ("bearer" = []), ("session" = [])),
    params(TaskPath, AttemptQuery),
    responses((status = 200, description = "Suites, cases, failures and durations", body = Object), (status = 404, body = kiln_api::Problem)))]
pub async fn junit<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<TaskPath>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
) -> ApiResult<Response> {
    let found = find_task(&state, &caller, path).await?;
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

#[utoipa::path(operation_id = "get_artifact", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/artifacts/{path}", tag = "results", security((), ("bearer" = []), ("session" = [])),
    params(ArtifactPath, AttemptQuery,
        ("Range" = Option<String>, Header, description = "`bytes=START-[END]` or `bytes=-SUFFIX`: one range, e.g. to resume a download; a range in another unit is ignored")),
    responses((status = 200, description = "The file, with the content type of its extension", content_type = "*/*",
            headers(("Accept-Ranges" = String, description = "`bytes`: a download can resume with `Range`"),
                ("Content-Disposition" = String, description = "`attachment; filename=\"…\"; filename*=UTF-8''…`: the file's name in ASCII, and in UTF-8 percent-encoded (RFC 6266, RFC 8187)"))),
        (status = 206, description = "The part of the file the `Range` asks for", content_type = "*/*",
            headers(("Content-Range" = String, description = "`bytes START-END/LENGTH`"),
                ("Accept-Ranges" = String, description = "`bytes`"),
                ("Content-Disposition" = String, description = "As with `200`"))),
        (status = 404, body = kiln_api::Problem),
        (status = 416, description = "The `Range` is in bytes but not one range within the file", body = kiln_api::Problem,
            headers(("Content-Range" = String, description = "`bytes */LENGTH`: the file's length")))))]
pub async fn artifact<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
    ApiPath(ArtifactPath {
        job,
        number,
        task,
        path,
    }): ApiPath<ArtifactPath>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let found = find_task(&state, &caller, TaskPath { job, number, task }).await?;
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
    download(&state, &key, &artifact, headers.get(header::RANGE)).await
}

/// The artifact's file from the blob store, whole or the one range asked
/// for, streamed: it may be far bigger than memory.
async fn download<D>(
    state: &AppState<D>,
    key: &str,
    artifact: &Artifact,
    range: Option<&HeaderValue>,
) -> ApiResult<Response> {
    let gone = |e: BlobError| match e {
        BlobError::NotFound(_) => ApiError::not_found(format!(
            "the file of artifact `{}` is no longer stored",
            artifact.path
        )),
        e => ApiError::internal(e),
    };
    // The stored file's own length, which the offsets must fit.
    let length = state.blobs.size(key).await.map_err(gone)?;
    let part = match range {
        Some(range) if in_bytes(range) => Some(satisfiable(range, length)?),
        _ => None,
    };
    let (status, stream, size) = match part {
        Some((start, end)) => (
            StatusCode::PARTIAL_CONTENT,
            state.blobs.get_range_stream(key, start..end + 1).await,
            end - start + 1,
        ),
        None => (StatusCode::OK, state.blobs.get_stream(key).await, length),
    };
    let mut response = (status, Body::from_stream(stream.map_err(gone)?)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&artifact.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some((start, end)) = part
        && let Some(value) = content_range(start, end, length)
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    if let Some(value) = content_disposition(&artifact.path) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// An artifact's path in a URL: each segment percent-encoded, the `/`
/// between them kept, so the route decodes it back to the same path.
fn path_segments(path: &str) -> String {
    path.split('/')
        .map(|part| segment(part).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// RFC 8187's `attr-char`: what `filename*` keeps as it is.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment` with the file's name twice (RFC 6266 §4.3): `filename*`,
/// UTF-8 percent-encoded, which browsers and `curl -J` prefer, and before
/// it a plain `filename` for clients that know only that, in ASCII with `_`
/// for what a quoted string cannot hold or some clients would decode (`"`,
/// `\`, `%`, control and non-ASCII characters).
fn content_disposition(path: &str) -> Option<HeaderValue> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let fallback: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' | '%' => '_',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '_',
        })
        .collect();
    let encoded = utf8_percent_encode(name, ATTR_CHAR);
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::{content_disposition, path_segments};

    #[test]
    fn artifact_paths_are_encoded_per_segment() {
        assert_eq!(
            path_segments("o/résumé final #1.txt"),
            "o/r%C3%A9sum%C3%A9%20final%20%231.txt"
        );
        assert_eq!(path_segments("a?b/100%"), "a%3Fb/100%25");
    }

    #[test]
    fn a_disposition_names_the_file_in_ascii_and_in_utf8() {
        assert_eq!(
            content_disposition("o/résumé final #1.txt").unwrap(),
            "attachment; filename=\"r_sum_ final #1.txt\"; \
             filename*=UTF-8''r%C3%A9sum%C3%A9%20final%20#1.txt"
        );
        assert_eq!(
            content_disposition("say \"hi\"\\100%.log").unwrap(),
            "attachment; filename=\"say _hi__100_.log\"; \
             filename*=UTF-8''say%20%22hi%22%5C100%25.log"
        );
    }
}
