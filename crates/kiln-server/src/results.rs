//! Where results live and how they are stored: console logs and artifacts
//! in the blob store under the job's prefix, JUnit reports parsed into JSON
//! in the database.

use kiln_store::{Database, JobId, TaskId};

use crate::state::AppState;

/// Where an attempt's files go: a first attempt's directly under its task
/// (where every attempt's went before attempts were kept apart), later
/// ones under `attempts/N`.
fn attempt_prefix(job_id: JobId, run: i64, task_id: TaskId, attempt: i64) -> String {
    let task = format!(
        "{}runs/{run}/tasks/{task_id}",
        crate::trigger::job_blob_prefix(job_id)
    );
    if attempt <= 1 {
        task
    } else {
        format!("{task}/attempts/{attempt}")
    }
}

/// Consoles of a run share one directory (on a local store, a directory
/// per task would cost a directory inode for every task, a notable part of
/// a trivial task's cost). A first attempt's is `TASK.log`, later ones'
/// `TASK.ATTEMPT.log`.
pub fn console_key(job_id: JobId, run: i64, task_id: TaskId, attempt: i64) -> String {
    let consoles = format!(
        "{}runs/{run}/consoles",
        crate::trigger::job_blob_prefix(job_id)
    );
    if attempt <= 1 {
        format!("{consoles}/{task_id}.log")
    } else {
        format!("{consoles}/{task_id}.{attempt}.log")
    }
}

/// The blob key of an artifact; refuses paths that would leave the task's prefix.
pub fn artifact_key(
    job_id: JobId,
    run: i64,
    task_id: TaskId,
    attempt: i64,
    path: &str,
) -> Result<String, String> {
    let prefix = attempt_prefix(job_id, run, task_id, attempt);
    let mut parts: Vec<&str> = prefix.split('/').collect();
    parts.push("artifacts");
    parts.extend(path.split('/'));
    kiln_blob::blob_key(&parts).map_err(|e| format!("artifact path `{path}` is not allowed: {e}"))
}

/// A content type from the file name, so browsers show logs and reports
/// inline and download archives.
pub fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "txt" | "log" | "md" | "csv" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Consoles up to this size stay in the database, as the chunks they came
/// in: a file per small log costs more than the log (creating one was
/// nearly a fifth of the server's work for a trivial task). Bigger ones
/// move to the blob store when their task ends, so the database keeps no
/// large logs.
pub const CONSOLE_KEPT_IN_DATABASE: u64 = 256 * 1024;

/// Chunks read from the database per step while a console moves.
const MOVE_PAGE: usize = 64;

/// Moves the log of an attempt that ended from database chunks into the
/// blob store, where it is served from from then on, when it is too big to
/// stay.
pub async fn finalize_console<D: Database>(
    state: &AppState<D>,
    job_id: JobId,
    run: i64,
    task_id: TaskId,
    attempt: i64,
) -> Result<(), String> {
    let size = state
        .db
        .log_size(task_id, attempt)
        .await
        .map_err(|e| e.to_string())?;
    if size <= CONSOLE_KEPT_IN_DATABASE {
        return Ok(());
    }
    // Streamed a page at a time: a log may be far bigger than memory. Its
    // line index is made on the way and kept next to it, so the task page
    // opens any window of it without reading it from the start.
    let db = state.db.clone();
    let indexer = crate::logs::Indexer::default();
    let feeder = indexer.clone();
    let pages = futures_util::stream::try_unfold(0i64, move |next| {
        let db = db.clone();
        let feeder = feeder.clone();
        async move {
            let chunks = db.read_log(task_id, attempt, next, MOVE_PAGE).await?;
            let Some(&(last, _)) = chunks.last() else {
                return Ok::<_, kiln_store::StoreError>(None);
            };
            let page: Vec<u8> = chunks.into_iter().flat_map(|(_, data)| data).collect();
            feeder.feed(&page);
            Ok(Some((bytes::Bytes::from(page), last + 1)))
        }
    });
    let key = console_key(job_id, run, task_id, attempt);
    state
        .blobs
        .put_stream(&key, pages)
        .await
        .map_err(|e| format!("storing the console log: {e}"))?;
    // Without its index the log still opens: the first view makes one.
    if let Some(text) = indexer.text()
        && let Err(e) = state
            .blobs
            .put(&crate::logs::index_key(&key), text.into_bytes())
            .await
    {
        tracing::warn!(key, error = %e, "could not keep a log's line index");
    }
    // Readers look in the database first and in the blob store when the
    // database has nothing, so the log is readable throughout.
    state
        .db
        .delete_log(task_id, attempt)
        .await
        .map_err(|e| e.to_string())
}
