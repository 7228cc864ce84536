use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_store::{Database, Id, TaskRow};
use serde::Deserialize;

use crate::api::jobs::find_job;
use crate::api::runs::find_run;
use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::results::{artifact_key, console_key};
use crate::state::AppState;

/// How often a followed console looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Chunks a followed console reads from the database at a time.
const FOLLOW_PAGE: usize = 256;
/// Bytes a followed console reads from a moved log at a time.
const FOLLOW_BLOB_PIECE: u64 = 1024 * 1024;

type TaskPath = Path<(String, i64, String)>;

struct Located {
    job_id: Id,
    number: i64,
    task: TaskRow,
}

async fn find_task<D: Database>(
    state: &AppState<D>,
    (job, number, task): (String, i64, String),
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

#[utoipa::path(operation_id = "list_results", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results", tag = "results", security(("bearer" = [])),
    params(("job" = String, Path), ("number" = i64, Path), ("task" = String, Path)),
    responses((status = 200, body = kiln_api::Results), (status = 404, body = kiln_api::Problem)))]
pub async fn list<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path(path): TaskPath,
) -> ApiResult<Json<kiln_api::Results>> {
    let base = format!("/api/v1/jobs/{}/runs/{}/tasks/{}", path.0, path.1, path.2);
    let found = find_task(&state, path).await?;
    let started = found.task.started_at.is_some();
    let junit = state.db.get_report(found.task.id, "junit").await?.is_some();
    let artifacts = state.db.list_artifacts(found.task.id).await?;
    Ok(Json(kiln_api::Results {
        console: started.then(|| format!("{base}/results/console")),
        junit: junit.then(|| format!("{base}/results/junit")),
        artifacts: artifacts
            .into_iter()
            .map(|a| kiln_api::Artifact {
                url: format!("{base}/results/artifacts/{}", a.path),
                path: a.path,
                size: a.size,
                content_type: a.content_type,
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsoleQuery {
    /// Keep the response open and stream new output until the task ends.
    #[serde(default)]
    follow: bool,
}

#[utoipa::path(operation_id = "get_console", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/console", tag = "results", security(("bearer" = [])),
    params(("job" = String, Path), ("number" = i64, Path), ("task" = String, Path), ConsoleQuery,
        ("Range" = Option<String>, Header, description = "bytes=START-[END]; ignored with follow=true")),
    responses((status = 200, content_type = "text/plain", body = String), (status = 206, content_type = "text/plain", body = String),
        (status = 404, body = kiln_api::Problem), (status = 416, body = kiln_api::Problem)))]
pub async fn console<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path(path): TaskPath,
    Query(query): Query<ConsoleQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let found = find_task(&state, path).await?;
    if query.follow {
        let blob_key = console_key(found.job_id, found.number, found.task.id);
        return Ok(follow(state, found.task.id, blob_key));
    }
    // A running task's log, and a small finished one's, is in the database
    // as chunks; a big finished one's was moved to the blob store (chunks
    // are dropped only once the blob is complete).
    let chunks = state.db.read_log(found.task.id, 0, usize::MAX).await?;
    if chunks.is_empty() && found.task.status.is_terminal() {
        let key = console_key(found.job_id, found.number, found.task.id);
        return blob_console(&state, &key, headers.get(header::RANGE)).await;
    }
    let log: Vec<u8> = chunks.into_iter().flat_map(|(_, data)| data).collect();
    ranged_text(log, headers.get(header::RANGE))
}

/// A console moved to the blob store, streamed (it may be hundreds of MB)
/// or, for a `Range`, just that part.
async fn blob_console<D: Database>(
    state: &AppState<D>,
    key: &str,
    range: Option<&HeaderValue>,
) -> ApiResult<Response> {
    let failed = |e: kiln_blob::BlobError| ApiError::internal(format!("reading the console: {e}"));
    let length = match state.blobs.size(key).await {
        Ok(length) => length,
        // A task that printed nothing.
        Err(kiln_blob::BlobError::NotFound(_)) => return ranged_text(Vec::new(), range),
        Err(e) => return Err(failed(e)),
    };
    let Some(range) = range else {
        let stream = state.blobs.get_stream(key).await.map_err(failed)?;
        let mut response = Body::from_stream(stream).into_response();
        text_headers(response.headers_mut());
        return Ok(response);
    };
    let (start, end) = satisfiable(range, length)?;
    let part = state
        .blobs
        .get_range(key, start..end + 1)
        .await
        .map_err(failed)?;
    Ok(partial(part.to_vec(), start, end, length))
}

fn text_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// The inclusive offsets a `Range` header asks for, or `416`.
fn satisfiable(range: &HeaderValue, length: u64) -> ApiResult<(u64, u64)> {
    parse_range(range.to_str().unwrap_or(""), length).ok_or_else(|| {
        let mut e = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!(
                "the range `{}` is not within the log's {length} bytes",
                range.to_str().unwrap_or("?")
            ),
        );
        e.errors.clear();
        e
    })
}

/// A `206` of bytes `start..=end` of a log of `length` bytes.
fn partial(part: Vec<u8>, start: u64, end: u64, length: u64) -> Response {
    let mut response = (StatusCode::PARTIAL_CONTENT, part).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{length}")) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}

/// Where a followed console has got to.
struct Following<D> {
    state: AppState<D>,
    task_id: Id,
    blob_key: String,
    /// The next chunk to read from the database.
    next: i64,
    /// Bytes sent so far: where the blob takes over if the chunks moved there.
    sent: u64,
    done: bool,
}

fn follow<D: Database>(state: AppState<D>, task_id: Id, blob_key: String) -> Response {
    let start = Following {
        state,
        task_id,
        blob_key,
        next: 0,
        sent: 0,
        done: false,
    };
    let stream = futures_util::stream::unfold(start, |mut at| async move {
        if at.done {
            return None;
        }
        match follow_step(&mut at).await {
            Ok(Some(bytes)) => {
                at.sent += bytes.len() as u64;
                Some((Ok(bytes), at))
            }
            Ok(None) => None,
            Err(e) => {
                at.done = true;
                Some((Err(std::io::Error::other(e)), at))
            }
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell reverse proxies not to buffer a live log.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The next piece of a followed console, waiting for one while the task
/// runs; `None` once everything was sent.
async fn follow_step<D: Database>(at: &mut Following<D>) -> Result<Option<bytes::Bytes>, String> {
    loop {
        // Read the status before the chunks: output written before the
        // task ended is then never missed.
        let ended = match at.state.db.get_task(at.task_id).await {
            Ok(Some(task)) => task.status.is_terminal(),
            Ok(None) => true,
            Err(e) => return Err(e.to_string()),
        };
        let chunks = at
            .state
            .db
            .read_log(at.task_id, at.next, FOLLOW_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(&(last, _)) = chunks.last() {
            // A full page may have more behind it, even once ended.
            at.done = ended && chunks.len() < FOLLOW_PAGE;
            at.next = last + 1;
            let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, data)| data).collect();
            return Ok(Some(bytes.into()));
        }
        if ended {
            // A big log moves to the blob store when its task ends: the
            // rest of it, past what was sent from the chunks, is there.
            let size = match at.state.blobs.size(&at.blob_key).await {
                Ok(size) => size,
                Err(kiln_blob::BlobError::NotFound(_)) => 0,
                Err(e) => return Err(e.to_string()),
            };
            if size <= at.sent {
                at.done = true;
                return Ok(None);
            }
            let end = size.min(at.sent + FOLLOW_BLOB_PIECE);
            at.done = end == size;
            return at
                .state
                .blobs
                .get_range(&at.blob_key, at.sent..end)
                .await
                .map(Some)
                .map_err(|e| e.to_string());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// Serves `log` whole, or the part a `Range: bytes=…` header asks for.
fn ranged_text(log: Vec<u8>, range: Option<&HeaderValue>) -> ApiResult<Response> {
    let length = log.len() as u64;
    let Some(range) = range else {
        let mut response = (StatusCode::OK, log).into_response();
        text_headers(response.headers_mut());
        return Ok(response);
    };
    let (start, end) = satisfiable(range, length)?;
    let part = log[start as usize..=end as usize].to_vec();
    Ok(partial(part, start, end, length))
}

/// Parses one `bytes=` range into inclusive offsets within `length` bytes.
pub fn parse_range(header: &str, length: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || length == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 {
            return None;
        }
        (length.saturating_sub(suffix), length - 1)
    } else {
        let start: u64 = first.parse().ok()?;
        let end = if last.is_empty() {
            length - 1
        } else {
            last.parse::<u64>().ok()?.min(length - 1)
        };
        (start, end)
    };
    (start <= end && start < length).then_some((start, end))
}

#[utoipa::path(operation_id = "get_junit", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/junit", tag = "results", security(("bearer" = [])),
    params(("job" = String, Path), ("number" = i64, Path), ("task" = String, Path)),
    responses((status = 200, description = "Suites, cases, failures and durations", body = Object), (status = 404, body = kiln_api::Problem)))]
pub async fn junit<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path(path): TaskPath,
) -> ApiResult<Response> {
    let found = find_task(&state, path).await?;
    let report = state
        .db
        .get_report(found.task.id, "junit")
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
    params(("job" = String, Path), ("number" = i64, Path), ("task" = String, Path), ("path" = String, Path, description = "The artifact's path in the workspace")),
    responses((status = 200, description = "The file, with its content type", content_type = "application/octet-stream"), (status = 404, body = kiln_api::Problem)))]
pub async fn artifact<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    Path((job, number, task, path)): Path<(String, i64, String, String)>,
) -> ApiResult<Response> {
    let found = find_task(&state, (job, number, task)).await?;
    let artifacts = state.db.list_artifacts(found.task.id).await?;
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
    let key = artifact_key(found.job_id, found.number, found.task.id, &artifact.path)
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

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-4", 10), Some((0, 4)));
        assert_eq!(parse_range("bytes=5-", 10), Some((5, 9)));
        assert_eq!(parse_range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(parse_range("bytes=8-100", 10), Some((8, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=5-2", 10), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }
}
