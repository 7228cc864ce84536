//! Conversions between rows and `kiln-store` types. Everything read back is
//! checked: a row this crate did not write (or a newer schema) gives an
//! error, never a panic.

use chrono::{DateTime, TimeDelta, Utc};
use kiln_store::{
    Artifact, Event, Job, JobKind, JobSpec, Run, Status, StepRow, StoreError, TaskRow, TokenInfo,
    TokenKind,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

/// This crate's error: what `?` converts into inside the backend, turned
/// into a [`StoreError`] at the trait boundary.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<Error> for StoreError {
    fn from(error: Error) -> Self {
        match error {
            Error::Store(error) => error,
            other => StoreError::Backend(other.to_string()),
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `error` is a foreign-key violation: the row referred to (job,
/// task) does not exist.
pub(crate) fn is_missing_parent(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_foreign_key_violation())
}

pub(crate) fn ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub(crate) fn time(millis: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| Error::Corrupt(format!("timestamp {millis} is out of range")))
}

pub(crate) fn opt_time(millis: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    millis.map(time).transpose()
}

/// `now + span`, refusing spans that do not fit (they come from callers,
/// so this is a caller error rather than a corrupt row).
pub(crate) fn after(now: DateTime<Utc>, span: std::time::Duration) -> Result<DateTime<Utc>> {
    TimeDelta::from_std(span)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .ok_or_else(|| StoreError::Conflict(format!("duration {span:?} is too long")).into())
}

const STATUSES: [Status; 9] = [
    Status::Pending,
    Status::Queued,
    Status::Running,
    Status::Success,
    Status::Failure,
    Status::Cancelled,
    Status::TimedOut,
    Status::Skipped,
    Status::Error,
];

pub(crate) fn status(text: &str) -> Result<Status> {
    STATUSES
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| Error::Corrupt(format!("unknown status `{text}`")))
}

const EVENTS: [Event; 6] = [
    Event::Push,
    Event::PullRequest,
    Event::Tag,
    Event::Cron,
    Event::Manual,
    Event::Api,
];

pub(crate) fn event(text: &str) -> Result<Event> {
    EVENTS
        .into_iter()
        .find(|e| e.as_str() == text)
        .ok_or_else(|| Error::Corrupt(format!("unknown event `{text}`")))
}

pub(crate) fn job_kind_str(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Git => "git",
        JobKind::Freestyle => "freestyle",
    }
}

fn job_kind(text: &str) -> Result<JobKind> {
    match text {
        "git" => Ok(JobKind::Git),
        "freestyle" => Ok(JobKind::Freestyle),
        other => Err(Error::Corrupt(format!("unknown job kind `{other}`"))),
    }
}

pub(crate) fn token_kind_str(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::User => "user",
        TokenKind::Agent => "agent",
    }
}

fn token_kind(text: &str) -> Result<TokenKind> {
    match text {
        "user" => Ok(TokenKind::User),
        "agent" => Ok(TokenKind::Agent),
        other => Err(Error::Corrupt(format!("unknown token kind `{other}`"))),
    }
}

pub(crate) fn spec(json: &str) -> Result<kiln_pipeline::Task> {
    serde_json::from_str(json).map_err(|e| Error::Corrupt(format!("task spec: {e}")))
}

pub(crate) fn spec_json(task: &kiln_pipeline::Task) -> Result<String> {
    // A Task is plain data; failing to encode it would be a bug upstream.
    serde_json::to_string(task).map_err(|e| Error::Corrupt(format!("task spec: {e}")))
}

pub(crate) const JOB_COLUMNS: &str = "id, name, kind, repository, pipeline_path, default_branch, \
     pipeline, created_at, updated_at";

pub(crate) fn job(row: &SqliteRow) -> Result<Job> {
    Ok(Job {
        id: row.try_get("id")?,
        spec: JobSpec {
            name: row.try_get("name")?,
            kind: job_kind(row.try_get("kind")?)?,
            repository: row.try_get("repository")?,
            pipeline_path: row.try_get("pipeline_path")?,
            default_branch: row.try_get("default_branch")?,
            pipeline: row.try_get("pipeline")?,
        },
        created_at: time(row.try_get("created_at")?)?,
        updated_at: time(row.try_get("updated_at")?)?,
    })
}

/// Selects runs as [`run`] reads them; callers append `WHERE …`.
pub(crate) const RUN_SELECT: &str = "SELECT r.id, r.job_id, j.name AS job, r.number, r.status, \
     r.branch, r.sha, r.event, r.error, r.created_at, r.started_at, r.finished_at, r.deadline \
     FROM runs r JOIN jobs j ON j.id = r.job_id";

pub(crate) fn run(row: &SqliteRow) -> Result<Run> {
    Ok(Run {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        job: row.try_get("job")?,
        number: row.try_get("number")?,
        status: status(row.try_get("status")?)?,
        branch: row.try_get("branch")?,
        sha: row.try_get("sha")?,
        event: event(row.try_get("event")?)?,
        error: row.try_get("error")?,
        created_at: time(row.try_get("created_at")?)?,
        started_at: opt_time(row.try_get("started_at")?)?,
        finished_at: opt_time(row.try_get("finished_at")?)?,
        deadline: opt_time(row.try_get("deadline")?)?,
    })
}

/// Selects tasks as [`task`] reads them; callers append `WHERE …`.
pub(crate) const TASK_SELECT: &str = "SELECT id, run_id, name, status, reason, spec, attempt, \
     agent, lease_expires_at, cancel_requested, queued_at, started_at, finished_at FROM tasks";

/// A task without its steps (the caller adds them).
pub(crate) fn task(row: &SqliteRow) -> Result<TaskRow> {
    Ok(TaskRow {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        name: row.try_get("name")?,
        status: status(row.try_get("status")?)?,
        reason: row.try_get("reason")?,
        spec: spec(row.try_get("spec")?)?,
        attempt: row.try_get("attempt")?,
        agent: row.try_get("agent")?,
        lease_expires_at: opt_time(row.try_get("lease_expires_at")?)?,
        cancel_requested: row.try_get("cancel_requested")?,
        queued_at: opt_time(row.try_get("queued_at")?)?,
        started_at: opt_time(row.try_get("started_at")?)?,
        finished_at: opt_time(row.try_get("finished_at")?)?,
        steps: Vec::new(),
    })
}

/// Selects steps as [`step`] reads them, with their `task_id`.
pub(crate) const STEP_SELECT: &str =
    "SELECT task_id, position, name, status, exit_code, started_at, finished_at FROM steps";

pub(crate) fn step(row: &SqliteRow) -> Result<(i64, StepRow)> {
    Ok((
        row.try_get("task_id")?,
        StepRow {
            index: row.try_get("position")?,
            name: row.try_get("name")?,
            status: status(row.try_get("status")?)?,
            exit_code: row.try_get("exit_code")?,
            started_at: opt_time(row.try_get("started_at")?)?,
            finished_at: opt_time(row.try_get("finished_at")?)?,
        },
    ))
}

pub(crate) fn artifact(row: &SqliteRow) -> Result<Artifact> {
    Ok(Artifact {
        path: row.try_get("path")?,
        size: row.try_get("size")?,
        content_type: row.try_get("content_type")?,
        blob_key: row.try_get("blob_key")?,
    })
}

pub(crate) fn token(row: &SqliteRow) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        kind: token_kind(row.try_get("kind")?)?,
        name: row.try_get("name")?,
        is_admin: row.try_get("is_admin")?,
    })
}

/// Counts per status, from `SELECT status, COUNT(*) AS n … GROUP BY status`.
pub(crate) fn counts(rows: &[SqliteRow]) -> Result<Vec<(Status, i64)>> {
    rows.iter()
        .map(|row| Ok((status(row.try_get("status")?)?, row.try_get("n")?)))
        .collect()
}
