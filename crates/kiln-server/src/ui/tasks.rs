//! `/jobs/{job}/runs/{n}/tasks/{task}`: a task, the tail of its log
//! rendered here (visible before any script runs), its test report and
//! its artifacts; and the log view's two helpers for the page's script:
//!
//! - `…/log?from=A&to=B` (or `?line=N`, the window around line N; or
//!   nothing, the tail): lines A to B rendered, as JSON
//!   `{first, last, total, live, html}`, at most [`MAX_LINES`] at a time;
//! - `…/log/search?q=TEXT&line=N[&back=1]`: the first line after N (the
//!   last before it) holding `TEXT`, as `{line}` (`null` when none does).
//!
//! Both read the log through its line index (`crate::logs`), so they cost
//! the same deep in a 1 GB log as at its start, and answer to the same
//! visitors as the page.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_store::{Database, Job, TaskRow};
use kiln_ui::log::{LogView, Section};
use serde_json::json;

use super::Visitor;
use super::jobs::job_and_power;
use crate::error::{ApiError, ApiResult};
use crate::logs::{self, OpenLog};
use crate::state::AppState;
use crate::views;

/// The lines the page opens on: the log's last ones.
const TAIL_LINES: u64 = 1000;
/// The most lines one window request answers.
pub const MAX_LINES: u64 = 1000;
/// The longest search text.
const MAX_NEEDLE: usize = 256;

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

/// The job and task a visitor asks for, if they may read them.
async fn find<D: Database>(
    state: &AppState<D>,
    visitor: &Visitor,
    name: &str,
    number: i64,
    task_name: &str,
) -> ApiResult<(Job, TaskRow)> {
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
    Ok((job, task))
}

async fn page<D: Database>(
    state: &AppState<D>,
    visitor: &Visitor,
    name: &str,
    number: i64,
    task_name: &str,
) -> ApiResult<kiln_ui::pages::TaskPage> {
    let (job, task) = find(state, visitor, name, number, task_name).await?;
    let run =
        state.db.get_run_by_id(task.run_id).await?.ok_or_else(|| {
            ApiError::not_found(format!("run {number} of job `{name}` not found"))
        })?;
    let log = match task.started_at {
        Some(_) => {
            let log = logs::open(state, job.id, number, task.id, task.attempt).await?;
            let total = log.index.lines();
            let from = total.saturating_sub(TAIL_LINES) + 1;
            let lines = log.window(state, from, total + 1).await?;
            let mut view = view(visitor, &task, &log, name, number, task_name);
            view.lines = lines;
            Some(view)
        }
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
        log,
        raw_href: format!("{base}/results/console?attempt={}", task.attempt),
        report,
        artifacts,
    })
}

/// What the page knows of a log besides its lines: its size, its steps
/// as sections, whether it still grows.
///
/// A section is a step of the task's record whose `--- step N: name` line
/// (the executor writes it as the step starts) the index found; it runs
/// to the next such line. Its status and duration are the step record's.
fn view(
    visitor: &Visitor,
    task: &TaskRow,
    log: &OpenLog,
    name: &str,
    number: i64,
    task_name: &str,
) -> LogView {
    let task_view = views::task(task);
    let marks = log.index.steps();
    let sections = task_view
        .steps
        .iter()
        .enumerate()
        .map(|(k, step)| {
            let number = k as u32 + 1;
            let first = marks.iter().find(|m| m.number == number).map(|m| m.line);
            let end = marks
                .iter()
                .find(|m| m.number == number + 1)
                .map(|m| m.line);
            Section {
                number,
                name: step.name.clone(),
                status: step.status.clone(),
                duration: kiln_ui::time::elapsed(
                    step.started_at,
                    step.finished_at,
                    visitor.viewer.now,
                ),
                first_line: first,
                end_line: end,
            }
        })
        .collect();
    LogView {
        lines: Vec::new(),
        total_lines: log.index.lines(),
        length: log.index.length(),
        sections,
        window_href: format!("{}/log", kiln_ui::task_href(name, number, task_name)),
        live: !task.status.is_terminal(),
        unfinished: log.index.ends_unfinished(),
    }
}

/// A query's `name=value` pairs, percent-decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(&text.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(name), decode(value))
        })
        .collect()
}

/// A line number parameter: a whole number from 1.
fn line_param(pairs: &[(String, String)], name: &str) -> ApiResult<Option<u64>> {
    let Some((_, value)) = pairs.iter().find(|(n, _)| n == name) else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(ApiError::bad_request(format!(
            "`{name}` must be a line number (a whole number from 1), not `{value}`"
        ))),
    }
}

/// `GET /jobs/{job}/runs/{n}/tasks/{task}/log`.
pub async fn window<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path((name, number, task_name)): Path<(String, i64, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    match window_json(
        &state,
        &visitor,
        &name,
        number,
        &task_name,
        query.as_deref(),
    )
    .await
    {
        Ok(body) => no_store(Json(body).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn window_json<D: Database>(
    state: &AppState<D>,
    visitor: &Visitor,
    name: &str,
    number: i64,
    task_name: &str,
    query: Option<&str>,
) -> ApiResult<serde_json::Value> {
    let pairs = query_pairs(query);
    let from = line_param(&pairs, "from")?;
    let to = line_param(&pairs, "to")?;
    let around = line_param(&pairs, "line")?;
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(ApiError::bad_request(format!(
            "`to` ({to}) is before `from` ({from})"
        )));
    }
    let (job, task) = find(state, visitor, name, number, task_name).await?;
    let log = logs::open(state, job.id, number, task.id, task.attempt).await?;
    let total = log.index.lines();
    // Lines `from..to`, `to` excluded.
    let (from, to) = match (from, to, around) {
        (_, _, Some(line)) => {
            let from = line.saturating_sub(MAX_LINES / 2).max(1);
            (from, from + MAX_LINES)
        }
        (Some(from), Some(to), None) => (from, to.saturating_add(1).min(from + MAX_LINES)),
        (Some(from), None, None) => (from, from.saturating_add(MAX_LINES)),
        (None, Some(to), None) => (to.saturating_sub(MAX_LINES - 1).max(1), to + 1),
        (None, None, None) => (total.saturating_sub(TAIL_LINES) + 1, total + 1),
    };
    let lines = log.window(state, from, to).await?;
    let mut view = view(visitor, &task, &log, name, number, task_name);
    let html = kiln_ui::log::lines_html(&lines, &view).into_string();
    view.lines = lines;
    // A running task's steps change as lines come: the page updates their
    // heads from these.
    let sections: Vec<serde_json::Value> = view
        .sections
        .iter()
        .map(|s| json!({"number": s.number, "status": s.status, "duration": s.duration}))
        .collect();
    Ok(json!({
        "status": views::task(&task).status,
        "sections": sections,
        "first": view.lines.first().map(|l| l.number),
        "last": view.lines.last().map(|l| l.number),
        "total": total,
        "unfinished": log.index.ends_unfinished(),
        "live": view.live,
        "html": html,
    }))
}

/// `GET /jobs/{job}/runs/{n}/tasks/{task}/log/search`.
pub async fn search<D: Database>(
    visitor: Visitor,
    State(state): State<AppState<D>>,
    Path((name, number, task_name)): Path<(String, i64, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    match search_json(
        &state,
        &visitor,
        &name,
        number,
        &task_name,
        query.as_deref(),
    )
    .await
    {
        Ok(body) => no_store(Json(body).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn search_json<D: Database>(
    state: &AppState<D>,
    visitor: &Visitor,
    name: &str,
    number: i64,
    task_name: &str,
    query: Option<&str>,
) -> ApiResult<serde_json::Value> {
    let pairs = query_pairs(query);
    let needle = pairs
        .iter()
        .find(|(n, _)| n == "q")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if needle.is_empty() {
        return Err(ApiError::bad_request(
            "`q`, the text to search for, is empty",
        ));
    }
    if needle.len() > MAX_NEEDLE {
        return Err(ApiError::bad_request(format!(
            "`q` is longer than {MAX_NEEDLE} bytes"
        )));
    }
    if needle.contains('\n') {
        return Err(ApiError::bad_request("`q` must be on one line"));
    }
    let line = line_param(&pairs, "line")?;
    let back = pairs.iter().any(|(n, v)| n == "back" && v != "0");
    let (job, task) = find(state, visitor, name, number, task_name).await?;
    let log = logs::open(state, job.id, number, task.id, task.attempt).await?;
    // Without a line, forwards is from the start and backwards from the end.
    let past_end = log.index.lines() + 1;
    let line = match (back, line) {
        (true, None) => past_end,
        (true, Some(line)) => line.min(past_end),
        (false, line) => line.unwrap_or(0),
    };
    let found = log.search(state, &needle, line, back).await?;
    Ok(json!({ "line": found, "total": log.index.lines() }))
}

/// Log windows change while a task runs: never cached.
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("private, no-store"),
    );
    response
}
