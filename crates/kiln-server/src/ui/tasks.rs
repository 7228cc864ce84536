//! `/jobs/{job}/runs/{n}/tasks/{task}`: a task, the tail of its log
//! rendered here (visible before any script runs), its test report and
//! its artifacts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use kiln_store::{Database, JobId, TaskRow};

use super::Visitor;
use super::jobs::job_and_power;
use crate::error::{ApiError, ApiResult};
use crate::results::console_key;
use crate::state::AppState;
use crate::views;

/// The most of a log's end the page reads, and the lines it shows of it.
const TAIL_BYTES: u64 = 512 * 1024;
const TAIL_LINES: usize = 1000;
/// Chunks read from the database at a time (each at most 256 KiB).
const PAGE: usize = 16;

/// `GET /jobs/{job}/runs/{n}/tasks/{task}`.
pub async fn show<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path((name, number, task_name)): Path<(String, i64, String)>,
) -> Response {
    match page(&state, &visitor, &name, number, &task_name).await {
        Ok(page) => visitor.page(StatusCode::OK, kiln_ui::pages::task(&visitor.viewer, &page)),
        Err(e) => visitor.refuse(e),
    }
}

async fn page<D: Database>(
    state: &AppState<D>,
    visitor: &Visitor,
    name: &str,
    number: i64,
    task_name: &str,
) -> ApiResult<kiln_ui::pages::TaskPage> {
    let (job, _) = job_and_power(state, visitor.identity.as_ref(), name).await?;
    let task = state
        .db
        .find_task(job.id, number, task_name)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "run {number} of job `{name}` has no task `{task_name}`"
            ))
        })?;
    let run =
        state.db.get_run_by_id(task.run_id).await?.ok_or_else(|| {
            ApiError::not_found(format!("run {number} of job `{name}` not found"))
        })?;
    let tail = match task.started_at {
        Some(_) => Some(log_tail(state, job.id, number, &task).await?),
        None => None,
    };
    let report = state
        .db
        .get_report(task.id, task.attempt, "junit")
        .await?
        .and_then(|json| serde_json::from_str::<kiln_junit::Report>(&json).ok());
    // The API's own links, which the session cookie opens.
    let base = format!(
        "/api/v1/jobs/{}/runs/{number}/tasks/{}",
        kiln_ui::segment(name),
        kiln_ui::segment(task_name)
    );
    let artifacts = state
        .db
        .list_artifacts(task.id, task.attempt)
        .await?
        .into_iter()
        .map(|artifact| {
            let path: Vec<String> = artifact.path.split('/').map(kiln_ui::segment).collect();
            kiln_api::Artifact {
                url: format!("{base}/results/artifacts/{}", path.join("/")),
                path: artifact.path,
                size: artifact.size,
                content_type: artifact.content_type,
                expires_at: artifact.expires_at,
            }
        })
        .collect();
    Ok(kiln_ui::pages::TaskPage {
        run: views::run(&run),
        task: views::task(&task),
        tail,
        raw_href: format!("{base}/results/console?attempt={}", task.attempt),
        report,
        artifacts,
    })
}

/// The end of the log of the task's latest attempt: at most
/// [`TAIL_BYTES`]. A log that moved to the blob store is read with one
/// ranged read of its end. One still in the database (a running task's,
/// or a small finished one's, at most `CONSOLE_KEPT_IN_DATABASE`) is read
/// a page of chunks at a time keeping only the end: the store has no read
/// from the end yet, so a long running log costs a scan, but never more
/// memory than the window.
async fn log_tail<D: Database>(
    state: &AppState<D>,
    job_id: JobId,
    number: i64,
    task: &TaskRow,
) -> ApiResult<kiln_ui::log::Tail> {
    let attempt = task.attempt;
    let in_database = state.db.log_size(task.id, attempt).await?;
    let (window, start, length) = if in_database > 0 {
        let mut window: Vec<u8> = Vec::new();
        let mut offset = 0u64;
        let mut next = 0i64;
        loop {
            let chunks = state.db.read_log(task.id, attempt, next, PAGE).await?;
            let Some(&(last, _)) = chunks.last() else {
                break;
            };
            next = last + 1;
            for (_, data) in chunks {
                offset += data.len() as u64;
                window.extend_from_slice(&data);
            }
            let keep = TAIL_BYTES as usize;
            if window.len() > 2 * keep {
                window.drain(..window.len() - keep);
            }
        }
        let keep = (TAIL_BYTES as usize).min(window.len());
        window.drain(..window.len() - keep);
        let start = offset - window.len() as u64;
        (window, start, offset)
    } else {
        let key = console_key(job_id, number, task.id, attempt);
        let size = match state.blobs.size(&key).await {
            Ok(size) => size,
            Err(kiln_blob::BlobError::NotFound(_)) => 0,
            Err(e) => return Err(ApiError::internal(e)),
        };
        let start = size.saturating_sub(TAIL_BYTES);
        let window = if size == 0 {
            Vec::new()
        } else {
            state
                .blobs
                .get_range(&key, start..size)
                .await
                .map_err(ApiError::internal)?
                .to_vec()
        };
        (window, start, size)
    };
    Ok(kiln_ui::log::tail(&window, start, length, TAIL_LINES))
}
