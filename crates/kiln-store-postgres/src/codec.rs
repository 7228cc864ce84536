//! Conversions between rows and `kiln-store` types. Everything read back is
//! checked: a row this crate did not write (or a newer schema) gives an
//! error, never a panic.

use kiln_store::{
    Artifact, Job, JobSpec, Run, Status, StepRow, StoreError, TaskHold, TaskRow, TokenInfo,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

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

pub(crate) use kiln_store::values::{
    after, event, job_kind, job_kind_str, ms, opt_time, spec, spec_json, status, time, token_kind,
    token_kind_str,
};

impl From<kiln_store::values::Corrupt> for Error {
    fn from(error: kiln_store::values::Corrupt) -> Self {
        Error::Corrupt(error.0)
    }
}

pub(crate) const JOB_COLUMNS: &str = "id, name, kind, repository, pipeline_path, default_branch, \
     pipeline, created_at, updated_at";

pub(crate) fn job(row: &PgRow) -> Result<Job> {
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

pub(crate) fn run(row: &PgRow) -> Result<Run> {
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

/// The columns [`task`] reads.
macro_rules! task_columns {
    () => {
        "id, run_id, name, status, reason, spec, attempt, agent, lease_expires_at, \
         cancel_requested, queued_at, started_at, finished_at"
    };
}

/// The columns [`task`] reads, for `SELECT … FROM` a CTE of tasks.
pub(crate) const TASK_COLUMNS: &str = task_columns!();

/// Selects tasks as [`task`] reads them; callers append `WHERE …`.
pub(crate) const TASK_SELECT: &str = concat!("SELECT ", task_columns!(), " FROM tasks");

/// A task without its steps (the caller adds them).
pub(crate) fn task(row: &PgRow) -> Result<TaskRow> {
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

pub(crate) fn step(row: &PgRow) -> Result<(i64, StepRow)> {
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

pub(crate) fn artifact(row: &PgRow) -> Result<Artifact> {
    Ok(Artifact {
        path: row.try_get("path")?,
        size: row.try_get("size")?,
        content_type: row.try_get("content_type")?,
        blob_key: row.try_get("blob_key")?,
    })
}

pub(crate) fn token(row: &PgRow) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        kind: token_kind(row.try_get("kind")?)?,
        name: row.try_get("name")?,
        is_admin: row.try_get("is_admin")?,
    })
}

/// Counts per status, from `SELECT status, COUNT(*) AS n … GROUP BY status`.
pub(crate) fn counts(rows: &[PgRow]) -> Result<Vec<(Status, i64)>> {
    rows.iter()
        .map(|row| Ok((status(row.try_get("status")?)?, row.try_get("n")?)))
        .collect()
}

pub fn task_hold(row: &PgRow) -> Result<TaskHold> {
    Ok(TaskHold {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        name: row.try_get("name")?,
        status: status(row.try_get("status")?)?,
        agent: row.try_get("agent")?,
        cancel_requested: row.try_get("cancel_requested")?,
        started_at: opt_time(row.try_get("started_at")?)?,
    })
}
