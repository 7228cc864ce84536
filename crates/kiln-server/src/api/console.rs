//! `GET …/results/console`: a task's log, whole, by byte range, or followed
//! live.
//!
//! A running task's log, and a small finished one's, is in the database as
//! sequenced chunks; a big finished one moves to the blob store when its
//! task ends (`results::finalize_console`), and its chunks are dropped only
//! once the blob is complete. So every reader looks at the chunks first and
//! goes to the blob store for what is no longer in the database: a log is
//! never missed or cut short while it moves.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_store::{Database, TaskId};

use super::bodies::{ConsoleQuery, TaskPath};
use super::extract::{ApiPath, ApiQuery};
use super::range::satisfiable;
use super::results::find_task;
use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::results::console_key;
use crate::state::AppState;

/// How often a followed console looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Chunks read from the database at a time (each at most 256 KiB).
const PAGE: usize = 32;
/// Bytes read from a moved log at a time.
const BLOB_PIECE: u64 = 1024 * 1024;

#[utoipa::path(operation_id = "get_console", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/console", tag = "results", security(("bearer" = [])),
    params(TaskPath, ConsoleQuery,
        ("Range" = Option<String>, Header, description = "`bytes=START-[END]` or `bytes=-SUFFIX`; ignored with follow=true")),
    responses((status = 200, description = "The whole log", content_type = "text/plain", body = String),
        (status = 206, description = "The part of the log the `Range` asks for", content_type = "text/plain", body = String,
            headers(("Content-Range" = String, description = "`bytes START-END/LENGTH`"))),
        (status = 404, body = kiln_api::Problem),
        (status = 416, description = "The `Range` is not one range within the log", body = kiln_api::Problem,
            headers(("Content-Range" = String, description = "`bytes */LENGTH`: the log's length")))))]
pub async fn console<D: Database>(
    _: User,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<TaskPath>,
    ApiQuery(query): ApiQuery<ConsoleQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let found = find_task(&state, path).await?;
    let cursor = Cursor {
        blob_key: console_key(found.job_id, found.number, found.task.id),
        task_id: found.task.id,
        state,
        follow: query.follow,
        next: 0,
        sent: 0,
        done: false,
    };
    match headers.get(header::RANGE) {
        Some(range) if !query.follow => ranged(cursor, range).await,
        _ => Ok(streamed(cursor)),
    }
}

/// Where a reader of a console has got to.
struct Cursor<D> {
    state: AppState<D>,
    task_id: TaskId,
    blob_key: String,
    /// Wait for more while the task runs, rather than end with what is there.
    follow: bool,
    /// The next chunk to read from the database.
    next: i64,
    /// Bytes sent so far: where the blob takes over if the chunks moved there.
    sent: u64,
    done: bool,
}

/// The whole console as a stream, a page at a time (it may be hundreds of
/// MB); followed, it stays open until the task ends.
fn streamed<D: Database>(cursor: Cursor<D>) -> Response {
    let follow = cursor.follow;
    let stream = futures_util::stream::unfold(cursor, |mut at| async move {
        if at.done {
            return None;
        }
        match next_piece(&mut at).await {
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
    headers.insert(header::CONTENT_TYPE, text_plain());
    if follow {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Tell reverse proxies not to buffer a live log.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    } else {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    response
}

/// The next piece of the console; `None` once everything was sent. While
/// the task runs, a follower waits for more.
async fn next_piece<D: Database>(at: &mut Cursor<D>) -> Result<Option<bytes::Bytes>, String> {
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
            .read_log(at.task_id, at.next, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(&(last, _)) = chunks.last() {
            at.next = last + 1;
            let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, data)| data).collect();
            return Ok(Some(bytes.into()));
        }
        if ended {
            // The rest, past what was sent from the chunks, is in the blob
            // store if the log moved there.
            let size = blob_size(&at.state, &at.blob_key).await?;
            if size <= at.sent {
                at.done = true;
                return Ok(None);
            }
            let end = size.min(at.sent + BLOB_PIECE);
            return at
                .state
                .blobs
                .get_range(&at.blob_key, at.sent..end)
                .await
                .map(Some)
                .map_err(|e| e.to_string());
        }
        if !at.follow {
            at.done = true;
            return Ok(None);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// 0 when the log never moved to the blob store.
async fn blob_size<D>(state: &AppState<D>, key: &str) -> Result<u64, String> {
    match state.blobs.size(key).await {
        Ok(size) => Ok(size),
        Err(kiln_blob::BlobError::NotFound(_)) => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}

/// The part of the console a `Range: bytes=…` header asks for.
async fn ranged<D: Database>(at: Cursor<D>, range: &HeaderValue) -> ApiResult<Response> {
    let in_database = at.state.db.log_size(at.task_id).await?;
    if in_database > 0 {
        let (start, end) = satisfiable(range, in_database)?;
        if let Some(part) = chunk_range(&at, start, end).await? {
            return Ok(partial(part, start, end, in_database));
        }
        // The chunks moved to the blob store while they were read.
    }
    let length = blob_size(&at.state, &at.blob_key)
        .await
        .map_err(ApiError::internal)?;
    let (start, end) = satisfiable(range, length)?;
    let part = at
        .state
        .blobs
        .get_range(&at.blob_key, start..end + 1)
        .await
        .map_err(ApiError::internal)?;
    Ok(partial(part.to_vec(), start, end, length))
}

/// Bytes `start..=end` of the log held as chunks, read a page at a time;
/// `None` if the chunks ran out before `end` (they moved).
async fn chunk_range<D: Database>(
    at: &Cursor<D>,
    start: u64,
    end: u64,
) -> ApiResult<Option<Vec<u8>>> {
    let mut part = Vec::with_capacity((end - start + 1) as usize);
    let (mut next, mut offset) = (0i64, 0u64);
    while offset <= end {
        let chunks = at.state.db.read_log(at.task_id, next, PAGE).await?;
        let Some(&(last, _)) = chunks.last() else {
            return Ok(None);
        };
        next = last + 1;
        for (_, data) in chunks {
            let chunk_end = offset + data.len() as u64;
            if chunk_end > start && offset <= end {
                let from = start.saturating_sub(offset) as usize;
                let to = ((end + 1).min(chunk_end) - offset) as usize;
                part.extend_from_slice(&data[from..to]);
            }
            offset = chunk_end;
        }
    }
    Ok(Some(part))
}

fn text_plain() -> HeaderValue {
    HeaderValue::from_static("text/plain; charset=utf-8")
}

/// A `206` of bytes `start..=end` of a log of `length` bytes.
fn partial(part: Vec<u8>, start: u64, end: u64, length: u64) -> Response {
    let mut response = (StatusCode::PARTIAL_CONTENT, part).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, text_plain());
    if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{length}")) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}
