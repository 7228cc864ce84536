//! `GET …/results/console`: a task's log, whole, by byte range, or followed
//! live. Each attempt of a task has its own log; `?attempt=N` reads one,
//! and without it the attempts' logs are read one after another, each
//! after the first opened by `queue::attempt_header` — as `kiln run` shows
//! them. A follower moves on to the next attempt when a retry starts.
//!
//! A running task's log, and a small finished one's, is in the database as
//! sequenced chunks; a big finished one moves to the blob store when its
//! task ends (`results::finalize_console`), and its chunks are dropped only
//! once the blob is complete. So every reader looks at the chunks first and
//! goes to the blob store for what is no longer in the database: a log is
//! never missed or cut short while it moves.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_store::{Database, JobId, TaskId, queue};

use super::bodies::{ConsoleQuery, TaskPath};
use super::extract::{ApiPath, ApiQuery};
use super::range::satisfiable;
use super::results::{attempt_of, find_task};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::results::console_key;
use crate::state::AppState;

/// How often a followed console looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Chunks read from the database at a time (each at most 256 KiB).
const PAGE: usize = 32;
/// Bytes read from a moved log at a time.
const BLOB_PIECE: u64 = 1024 * 1024;

#[utoipa::path(operation_id = "get_console", get, path = "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/console", tag = "results", security((), ("bearer" = []), ("session" = [])),
    params(TaskPath, ConsoleQuery,
        ("Range" = Option<String>, Header, description = "`bytes=START-[END]` or `bytes=-SUFFIX`, of what the same request without it answers; ignored with follow=true")),
    responses((status = 200, description = "The whole log", content_type = "text/plain", body = String),
        (status = 206, description = "The part of the log the `Range` asks for", content_type = "text/plain", body = String,
            headers(("Content-Range" = String, description = "`bytes START-END/LENGTH`"))),
        (status = 404, body = kiln_api::Problem),
        (status = 416, description = "The `Range` is not one range within the log", body = kiln_api::Problem,
            headers(("Content-Range" = String, description = "`bytes */LENGTH`: the log's length")))))]
pub async fn console<D: Database>(
    caller: Caller,
    State(state): State<AppState<D>>,
    ApiPath(path): ApiPath<TaskPath>,
    ApiQuery(query): ApiQuery<ConsoleQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let found = find_task(&state, &caller, path).await?;
    let attempt = attempt_of(&found, query.attempt)?;
    let first = if query.attempt.is_some() { attempt } else { 1 };
    let cursor = Cursor {
        blob_key: console_key(found.job_id, found.number, found.task.id, first),
        job_id: found.job_id,
        number: found.number,
        task_id: found.task.id,
        attempt: first,
        only: query.attempt.is_some(),
        state,
        follow: query.follow,
        next: 0,
        sent: 0,
        done: false,
    };
    match headers.get(header::RANGE) {
        Some(range) if !query.follow => ranged(cursor, attempt, range).await,
        _ => Ok(streamed(cursor)),
    }
}

/// Where a reader of a console has got to.
struct Cursor<D> {
    state: AppState<D>,
    job_id: JobId,
    number: i64,
    task_id: TaskId,
    /// The attempt being read, and where its log moves when it is big.
    attempt: i64,
    blob_key: String,
    /// Only this attempt; otherwise every attempt from the first on.
    only: bool,
    /// Wait for more while the task runs, rather than end with what is there.
    follow: bool,
    /// The next chunk of the attempt's log to read from the database.
    next: i64,
    /// Bytes of the attempt's log sent so far: where the blob takes over if
    /// the chunks moved there.
    sent: u64,
    done: bool,
}

impl<D> Cursor<D> {
    fn blob_key_of(&self, attempt: i64) -> String {
        console_key(self.job_id, self.number, self.task_id, attempt)
    }

    /// Moves to the start of the next attempt's log.
    fn next_attempt(&mut self) {
        self.attempt += 1;
        self.blob_key = self.blob_key_of(self.attempt);
        self.next = 0;
        self.sent = 0;
    }
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
        // attempt ended is then never missed.
        let (ended, latest) = match at.state.db.get_task(at.task_id).await {
            Ok(Some(task)) => (
                task.status.is_terminal() || task.attempt > at.attempt,
                task.attempt,
            ),
            Ok(None) => (true, at.attempt),
            Err(e) => return Err(e.to_string()),
        };
        let chunks = at
            .state
            .db
            .read_log(at.task_id, at.attempt, at.next, PAGE)
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
                if !at.only && latest > at.attempt {
                    at.next_attempt();
                    return Ok(Some(queue::attempt_header(at.attempt).into()));
                }
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

/// The part of the console a `Range: bytes=…` header asks for: of one
/// attempt's log, or of all of them one after another (`latest` is the
/// task's latest attempt), as the same request without `Range` answers.
/// Streamed a page at a time like the whole console: a range of a log of
/// gigabytes costs the server no more memory than a page.
async fn ranged<D: Database>(
    at: Cursor<D>,
    latest: i64,
    range: &HeaderValue,
) -> ApiResult<Response> {
    let attempts = if at.only {
        at.attempt..=at.attempt
    } else {
        1..=latest
    };
    let mut pieces = Vec::new();
    for attempt in attempts {
        if attempt > 1 && !at.only {
            pieces.push(Piece::Header(queue::attempt_header(attempt)));
        }
        pieces.push(Piece::Log(attempt, log_length(&at, attempt).await?));
    }
    let length = pieces.iter().map(Piece::len).sum();
    let (start, end) = satisfiable(range, length)?;
    // What of each piece the range covers, with inclusive offsets in it.
    let mut parts = VecDeque::new();
    let mut offset = 0u64;
    for piece in pieces {
        let piece_end = offset + piece.len();
        if piece_end > start && offset <= end {
            let from = start.saturating_sub(offset);
            let to = (end + 1).min(piece_end) - offset - 1;
            parts.push_back((piece, from, to));
        }
        offset = piece_end;
    }
    let reader = RangeReader {
        at,
        parts,
        log: None,
    };
    let stream = futures_util::stream::unfold(reader, |mut reader| async move {
        match reader.next().await {
            Ok(Some(bytes)) => Some((Ok(bytes), reader)),
            Ok(None) => None,
            Err(e) => {
                // Ends the response short: the client sees it incomplete.
                reader.parts.clear();
                reader.log = None;
                Some((Err(std::io::Error::other(e)), reader))
            }
        }
    });
    Ok(partial(Body::from_stream(stream), start, end, length))
}

/// What a console is made of: attempts' logs and the lines between them.
enum Piece {
    Header(String),
    /// An attempt's log and its length.
    Log(i64, u64),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Header(text) => text.len() as u64,
            Piece::Log(_, length) => *length,
        }
    }
}

/// The length of an attempt's log, wherever it is.
async fn log_length<D: Database>(at: &Cursor<D>, attempt: i64) -> ApiResult<u64> {
    let in_database = at.state.db.log_size(at.task_id, attempt).await?;
    if in_database > 0 {
        return Ok(in_database);
    }
    blob_size(&at.state, &at.blob_key_of(attempt))
        .await
        .map_err(ApiError::internal)
}

/// Reads the parts of a range one page at a time.
struct RangeReader<D> {
    at: Cursor<D>,
    /// Pieces still to send, with the inclusive offsets to send of each.
    parts: VecDeque<(Piece, u64, u64)>,
    /// Where in the attempt's log being sent the reader is.
    log: Option<LogPosition>,
}

struct LogPosition {
    attempt: i64,
    /// The next byte to send, and the last one (inclusive).
    at: u64,
    to: u64,
    /// The next chunk to read, and the offset in the log where it starts.
    next_seq: i64,
    seq_offset: u64,
    /// The chunks ran out before `to`: the log moved to the blob store.
    in_blob: bool,
}

impl<D: Database> RangeReader<D> {
    async fn next(&mut self) -> Result<Option<bytes::Bytes>, String> {
        loop {
            let Some(log) = &mut self.log else {
                match self.parts.pop_front() {
                    None => return Ok(None),
                    Some((Piece::Header(text), from, to)) => {
                        let part = &text.as_bytes()[from as usize..=to as usize];
                        return Ok(Some(bytes::Bytes::copy_from_slice(part)));
                    }
                    Some((Piece::Log(attempt, _), from, to)) => {
                        self.log = Some(LogPosition {
                            attempt,
                            at: from,
                            to,
                            next_seq: 0,
                            seq_offset: 0,
                            in_blob: false,
                        });
                        continue;
                    }
                }
            };
            if log.at > log.to {
                self.log = None;
                continue;
            }
            if log.in_blob {
                let end = (log.to + 1).min(log.at + BLOB_PIECE);
                let key = self.at.blob_key_of(log.attempt);
                let part = self
                    .at
                    .state
                    .blobs
                    .get_range(&key, log.at..end)
                    .await
                    .map_err(|e| e.to_string())?;
                log.at = end;
                return Ok(Some(part));
            }
            let chunks = self
                .at
                .state
                .db
                .read_log(self.at.task_id, log.attempt, log.next_seq, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let Some(&(last, _)) = chunks.last() else {
                // Moved (even while it was read): the rest is in the blob.
                log.in_blob = true;
                continue;
            };
            log.next_seq = last + 1;
            let mut part = Vec::new();
            for (_, data) in chunks {
                let chunk_end = log.seq_offset + data.len() as u64;
                if chunk_end > log.at && log.seq_offset <= log.to {
                    let from = (log.at - log.seq_offset) as usize;
                    let to = ((log.to + 1).min(chunk_end) - log.seq_offset) as usize;
                    part.extend_from_slice(&data[from..to]);
                    log.at = log.seq_offset + to as u64;
                }
                log.seq_offset = chunk_end;
            }
            if !part.is_empty() {
                return Ok(Some(part.into()));
            }
        }
    }
}

fn text_plain() -> HeaderValue {
    HeaderValue::from_static("text/plain; charset=utf-8")
}

/// A `206` of bytes `start..=end` of a log of `length` bytes.
fn partial(part: Body, start: u64, end: u64, length: u64) -> Response {
    let mut response = (StatusCode::PARTIAL_CONTENT, part).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, text_plain());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
    if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{length}")) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}
