//! The [`Database`] trait on SQLite: the default store of `kiln up` and of
//! a single server.
//!
//! SQLite has one writer at a time, so every method that writes runs in a
//! `BEGIN IMMEDIATE` transaction: the write lock is taken up front, and a
//! transaction never has to upgrade a read lock, which is where SQLite
//! returns `SQLITE_BUSY` without waiting. Writes go through a pool of one
//! connection, so writers of this process queue fairly in the pool instead
//! of polling the busy handler; other processes still wait on the busy
//! timeout. Reads use their own pool and, in WAL mode, never block writes.

mod codec;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_store::queue::{self, TaskState};
use kiln_store::{
    Artifact, Claim, Database, Id, Job, JobSpec, NO_AGENT_REASON, NewRun, Run, RunDetail,
    RunFilter, SecretInfo, Status, StepRow, StoreError, TaskHold, TaskResult, TaskRow, TokenInfo,
    TokenKind, Undelivered, Upserted,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use codec::{Error, Result, after, ms, time};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How long a writer of another process waits for the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Page size of `list_runs` when the filter asks for none (limit ≤ 0).
const DEFAULT_LIMIT: i64 = 50;
const RUN_TIMEOUT_REASON: &str = "the run reached its timeout";
const CANCELLED_REASON: &str = "the run was cancelled";
const AGENT_LOST: &str = "agent lost";

/// A Kiln store in one SQLite file. Cheap to clone (pools are shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, in WAL mode with
    /// foreign keys on, and brings its schema up to date.
    pub async fn open(path: &Path) -> kiln_store::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last commits
            // before a power loss; a CI server can live with that.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // A connection to a local file does not go stale: no ping (a round
        // trip to the connection's thread) before each use.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(Error::from)?;
        MIGRATOR.run(&writer).await.map_err(Error::from)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(Error::from)?;
        Ok(Self { reader, writer })
    }

    /// A private database in memory, gone when the store is dropped.
    pub async fn open_in_memory() -> kiln_store::Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(Error::from)?
            .foreign_keys(true);
        // An in-memory database lives as long as its one connection: never
        // let the pool close it, and share it between readers and writers.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(Error::from)?;
        MIGRATOR.run(&pool).await.map_err(Error::from)?;
        Ok(Self {
            reader: pool.clone(),
            writer: pool,
        })
    }

    /// The pool writes go through, for tools that load rows in bulk (the
    /// benchmarks). Use it only with `BEGIN IMMEDIATE` transactions.
    pub fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A read transaction: one consistent snapshot for multi-query reads.
    async fn read(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.reader.begin().await?)
    }
}

// --- jobs

impl SqliteStore {
    async fn create_job_(&self, spec: &JobSpec, now: DateTime<Utc>) -> Result<Job> {
        let mut tx = self.write().await?;
        let job = insert_job(&mut tx, spec, now)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("job `{}` already exists", spec.name)))?;
        tx.commit().await?;
        Ok(job)
    }

    async fn upsert_job_(&self, spec: &JobSpec, now: DateTime<Utc>) -> Result<(Job, Upserted)> {
        let mut tx = self.write().await?;
        if let Some(job) = insert_job(&mut tx, spec, now).await? {
            tx.commit().await?;
            return Ok((job, Upserted::Created));
        }
        let existing = job_by_name(&mut tx, &spec.name)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("job `{}` vanished", spec.name)))?;
        if existing.spec == *spec {
            tx.commit().await?;
            return Ok((existing, Upserted::Unchanged));
        }
        sqlx::query(
            "UPDATE jobs SET kind = ?, repository = ?, pipeline_path = ?, default_branch = ?, \
             pipeline = ?, updated_at = ? WHERE id = ?",
        )
        .bind(codec::job_kind_str(spec.kind))
        .bind(&spec.repository)
        .bind(&spec.pipeline_path)
        .bind(&spec.default_branch)
        .bind(&spec.pipeline)
        .bind(ms(now))
        .bind(existing.id)
        .execute(&mut *tx)
        .await?;
        let job = job_by_name(&mut tx, &spec.name)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("job `{}` vanished", spec.name)))?;
        tx.commit().await?;
        Ok((job, Upserted::Updated))
    }

    async fn get_job_(&self, name: &str) -> Result<Option<Job>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM jobs WHERE name = ?",
            codec::JOB_COLUMNS
        ))
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(codec::job).transpose()
    }

    async fn list_jobs_(&self) -> Result<Vec<Job>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM jobs ORDER BY name",
            codec::JOB_COLUMNS
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(codec::job).collect()
    }

    async fn delete_job_(&self, name: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query("DELETE FROM jobs WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }
}

/// Inserts the job; `None` when one of that name exists.
async fn insert_job(
    conn: &mut SqliteConnection,
    spec: &JobSpec,
    now: DateTime<Utc>,
) -> Result<Option<Job>> {
    let row = sqlx::query(&format!(
        "INSERT INTO jobs (name, kind, repository, pipeline_path, default_branch, pipeline, \
         created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO NOTHING RETURNING {}",
        codec::JOB_COLUMNS
    ))
    .bind(&spec.name)
    .bind(codec::job_kind_str(spec.kind))
    .bind(&spec.repository)
    .bind(&spec.pipeline_path)
    .bind(&spec.default_branch)
    .bind(&spec.pipeline)
    .bind(ms(now))
    .bind(ms(now))
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(codec::job).transpose()
}

async fn job_by_name(conn: &mut SqliteConnection, name: &str) -> Result<Option<Job>> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM jobs WHERE name = ?",
        codec::JOB_COLUMNS
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(codec::job).transpose()
}

// --- secrets

impl SqliteStore {
    async fn put_secret_(
        &self,
        job_id: Id,
        name: &str,
        sealed: &[u8],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let result = sqlx::query(
            "INSERT INTO secrets (job_id, name, sealed, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (job_id, name) DO UPDATE \
             SET sealed = excluded.sealed, updated_at = excluded.updated_at",
        )
        .bind(job_id)
        .bind(name)
        .bind(sealed)
        .bind(ms(now))
        .execute(&mut *tx)
        .await;
        match result {
            Err(e) if codec::is_missing_parent(&e) => {
                return Err(StoreError::NotFound(format!("job {job_id}")).into());
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(())
    }

    async fn delete_secret_(&self, job_id: Id, name: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query("DELETE FROM secrets WHERE job_id = ? AND name = ?")
            .bind(job_id)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn list_secrets_(&self, job_id: Id) -> Result<Vec<SecretInfo>> {
        let rows =
            sqlx::query("SELECT name, updated_at FROM secrets WHERE job_id = ? ORDER BY name")
                .bind(job_id)
                .fetch_all(&self.reader)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(SecretInfo {
                    name: row.try_get("name")?,
                    updated_at: time(row.try_get("updated_at")?)?,
                })
            })
            .collect()
    }

    async fn sealed_secrets_(
        &self,
        job_id: Id,
        names: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names = serde_json::to_string(names)
            .map_err(|e| Error::Corrupt(format!("secret names: {e}")))?;
        let rows = sqlx::query(
            "SELECT name, sealed FROM secrets WHERE job_id = ? \
             AND name IN (SELECT value FROM json_each(?)) ORDER BY name",
        )
        .bind(job_id)
        .bind(names)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, row.try_get("sealed")?)))
            .collect()
    }
}

// --- runs

impl SqliteStore {
    async fn create_run_(&self, job_id: Id, run: NewRun, now: DateTime<Utc>) -> Result<RunDetail> {
        let mut tx = self.write().await?;
        let number: i64 = sqlx::query_scalar(
            "UPDATE jobs SET next_run = next_run + 1 WHERE id = ? RETURNING next_run - 1",
        )
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;

        // The initial statuses, settled before anything is written: a task
        // whose need is skipped by `when` is skipped from the start.
        let mut states: Vec<TaskState> = run
            .tasks
            .iter()
            .map(|t| TaskState {
                name: t.task.name.clone(),
                status: if t.skip_reason.is_some() {
                    Status::Skipped
                } else if t.task.needs.is_empty() {
                    Status::Queued
                } else {
                    Status::Pending
                },
                needs: t.task.needs.clone(),
                allow_failure: t.task.allow_failure,
                reason: t.skip_reason.clone(),
            })
            .collect();
        let (status, error) = match &run.error {
            Some(error) => {
                states.clear();
                (Status::Error, Some(error.clone()))
            }
            None => {
                queue::settle(&mut states);
                (queue::run_status(&states), None)
            }
        };
        let deadline = match (&run.error, run.timeout) {
            (None, Some(timeout)) => Some(ms(after(now, timeout)?)),
            _ => None,
        };
        let finished_at = status.is_terminal().then_some(ms(now));
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (job_id, number, status, branch, sha, event, error, created_at, \
             finished_at, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(job_id)
        .bind(number)
        .bind(status.as_str())
        .bind(&run.branch)
        .bind(&run.sha)
        .bind(run.event.as_str())
        .bind(&error)
        .bind(ms(now))
        .bind(finished_at)
        .bind(deadline)
        .fetch_one(&mut *tx)
        .await?;

        for (position, (new, state)) in run.tasks.iter().zip(&states).enumerate() {
            let task = &new.task;
            let queued_at = (state.status == Status::Queued).then_some(ms(now));
            let finished_at = state.status.is_terminal().then_some(ms(now));
            let runs_on = serde_json::to_string(&kiln_store::placement_labels(task))
                .map_err(|e| Error::Corrupt(format!("labels: {e}")))?;
            let task_id: i64 = sqlx::query_scalar(
                "INSERT INTO tasks (run_id, position, name, status, reason, spec, runs_on, \
                 attempt, max_attempts, queued_at, finished_at, job_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, \
                 (SELECT job_id FROM runs WHERE id = ?1)) RETURNING id",
            )
            .bind(run_id)
            .bind(position as i64)
            .bind(&task.name)
            .bind(state.status.as_str())
            .bind(&state.reason)
            .bind(codec::spec_json(task)?)
            .bind(runs_on)
            .bind(i64::from(task.retry) + 1)
            .bind(queued_at)
            .bind(finished_at)
            .fetch_one(&mut *tx)
            .await?;
            // Steps of a task that will never run are skipped with it.
            let step_status = if state.status.is_terminal() {
                Status::Skipped
            } else {
                Status::Pending
            };
            for (index, step) in task.steps.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO steps (task_id, position, name, status) VALUES (?, ?, ?, ?)",
                )
                .bind(task_id)
                .bind(index as i64)
                .bind(&step.name)
                .bind(step_status.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        let detail = run_detail(&mut tx, run_id)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("run {run_id} vanished")))?;
        tx.commit().await?;
        Ok(detail)
    }

    async fn get_run_(&self, job_id: Id, number: i64) -> Result<Option<RunDetail>> {
        let mut tx = self.read().await?;
        let run_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM runs WHERE job_id = ? AND number = ?")
                .bind(job_id)
                .bind(number)
                .fetch_optional(&mut *tx)
                .await?;
        let detail = match run_id {
            Some(id) => run_detail(&mut tx, id).await?,
            None => None,
        };
        tx.commit().await?;
        Ok(detail)
    }

    async fn get_run_by_id_(&self, run_id: Id) -> Result<Option<Run>> {
        let row = sqlx::query(&format!("{} WHERE r.id = ?", codec::RUN_SELECT))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(codec::run).transpose()
    }

    async fn list_runs_(&self, job_id: Id, filter: &RunFilter) -> Result<Vec<Run>> {
        let mut query = QueryBuilder::<Sqlite>::new(codec::RUN_SELECT);
        query.push(" WHERE r.job_id = ").push_bind(job_id);
        if let Some(status) = filter.status {
            query.push(" AND r.status = ").push_bind(status.as_str());
        }
        if let Some(branch) = &filter.branch {
            query.push(" AND r.branch = ").push_bind(branch.clone());
        }
        if let Some(before) = filter.before {
            query.push(" AND r.number < ").push_bind(before);
        }
        let limit = if filter.limit > 0 {
            filter.limit
        } else {
            DEFAULT_LIMIT
        };
        query
            .push(" ORDER BY r.number DESC LIMIT ")
            .push_bind(limit);
        let rows = query.build().fetch_all(&self.reader).await?;
        rows.iter().map(codec::run).collect()
    }

    async fn cancel_run_(&self, job_id: Id, number: i64, now: DateTime<Utc>) -> Result<RunDetail> {
        let mut tx = self.write().await?;
        let row = sqlx::query("SELECT id, status FROM runs WHERE job_id = ? AND number = ?")
            .bind(job_id)
            .bind(number)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("run #{number}")))?;
        let run_id: i64 = row.try_get("id")?;
        let status = codec::status(row.try_get("status")?)?;
        if status.is_terminal() {
            tx.rollback().await?;
            return Err(
                StoreError::Conflict(format!("run #{number} already ended {status}")).into(),
            );
        }
        sqlx::query(
            "UPDATE tasks SET status = 'cancelled', reason = ?, finished_at = ? \
             WHERE run_id = ? AND status IN ('pending', 'queued')",
        )
        .bind(CANCELLED_REASON)
        .bind(ms(now))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        // Running tasks end when their agent reports back (as `cancelled`).
        sqlx::query(
            "UPDATE tasks SET cancel_requested = 1 WHERE run_id = ? AND status = 'running'",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        settle_run(&mut tx, run_id, None, now).await?;
        let detail = run_detail(&mut tx, run_id)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("run {run_id} vanished")))?;
        tx.commit().await?;
        Ok(detail)
    }
}

async fn run_detail(conn: &mut SqliteConnection, run_id: Id) -> Result<Option<RunDetail>> {
    let Some(row) = sqlx::query(&format!("{} WHERE r.id = ?", codec::RUN_SELECT))
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let run = codec::run(&row)?;
    let rows = sqlx::query(&format!(
        "{} WHERE run_id = ? ORDER BY position",
        codec::TASK_SELECT
    ))
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut tasks = rows.iter().map(codec::task).collect::<Result<Vec<_>>>()?;
    let rows = sqlx::query(&format!(
        "{} WHERE task_id IN (SELECT id FROM tasks WHERE run_id = ?) ORDER BY task_id, position",
        codec::STEP_SELECT
    ))
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut steps: HashMap<i64, Vec<StepRow>> = HashMap::new();
    for row in &rows {
        let (task_id, step) = codec::step(row)?;
        steps.entry(task_id).or_default().push(step);
    }
    for task in &mut tasks {
        task.steps = steps.remove(&task.id).unwrap_or_default();
    }
    Ok(Some(RunDetail { run, tasks }))
}

async fn task_row(conn: &mut SqliteConnection, task_id: Id) -> Result<Option<TaskRow>> {
    let Some(row) = sqlx::query(&format!("{} WHERE id = ?", codec::TASK_SELECT))
        .bind(task_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut task = codec::task(&row)?;
    let rows = sqlx::query(&format!(
        "{} WHERE task_id = ? ORDER BY position",
        codec::STEP_SELECT
    ))
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await?;
    task.steps = rows
        .iter()
        .map(|row| codec::step(row).map(|(_, step)| step))
        .collect::<Result<_>>()?;
    Ok(Some(task))
}

// --- queue

/// The fields of a task that decide how it may end.
struct Held {
    id: Id,
    run_id: Id,
    status: Status,
    attempt: i64,
    max_attempts: i64,
    cancel_requested: bool,
    lease_holder: Option<String>,
}

async fn held(conn: &mut SqliteConnection, task_id: Id) -> Result<Option<Held>> {
    let Some(row) = sqlx::query(
        "SELECT id, run_id, status, attempt, max_attempts, cancel_requested, lease_holder \
         FROM tasks WHERE id = ?",
    )
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(Held {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        status: codec::status(row.try_get("status")?)?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        cancel_requested: row.try_get("cancel_requested")?,
        lease_holder: row.try_get("lease_holder")?,
    }))
}

/// Ends a running task with `status`, or queues it again when it failed and
/// has attempts left. The caller settles the run afterwards.
async fn end_task(
    conn: &mut SqliteConnection,
    task: &Held,
    status: Status,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Status> {
    let retry = !task.cancel_requested
        && matches!(status, Status::Failure | Status::Error | Status::TimedOut)
        && task.attempt < task.max_attempts;
    if retry {
        let note = match reason {
            Some(reason) => format!("attempt {} ended {status}: {reason}", task.attempt),
            None => format!("attempt {} ended {status}", task.attempt),
        };
        sqlx::query(
            "UPDATE tasks SET status = 'queued', attempt = attempt + 1, reason = ?, \
             lease_holder = NULL, lease_expires_at = NULL, queued_at = ? WHERE id = ?",
        )
        .bind(note)
        .bind(ms(now))
        .bind(task.id)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE steps SET status = 'pending', exit_code = NULL, started_at = NULL, \
             finished_at = NULL WHERE task_id = ?",
        )
        .bind(task.id)
        .execute(&mut *conn)
        .await?;
        // The next attempt numbers its log chunks from the start again;
        // keeping the old ones would make it look already written.
        sqlx::query("DELETE FROM log_chunks WHERE task_id = ?")
            .bind(task.id)
            .execute(&mut *conn)
            .await?;
        return Ok(Status::Queued);
    }
    // A task whose run was cancelled ends `cancelled`, whatever its agent saw.
    let status = if task.cancel_requested {
        Status::Cancelled
    } else {
        status
    };
    sqlx::query(
        "UPDATE tasks SET status = ?, reason = ?, finished_at = ?, lease_holder = NULL, \
         lease_expires_at = NULL WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(ms(now))
    .bind(task.id)
    .execute(&mut *conn)
    .await?;
    Ok(status)
}

/// Applies the queue's rules to a run after one of its tasks changed:
/// releases or skips dependants, closes the steps of ended tasks, and
/// stores the run's status.
///
/// `ended` is the task whose end caused this, when there is one: if no task
/// of the run is pending, nothing can be released or skipped, and the
/// run's status follows from counts alone (see `queue::status_from_counts`).
async fn settle_run(
    conn: &mut SqliteConnection,
    run_id: Id,
    ended: Option<Id>,
    now: DateTime<Utc>,
) -> Result<()> {
    if let Some(task_id) = ended {
        // Which statuses the run's tasks are in (as counts of one): an
        // index seek per status, however wide the run.
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT column1 FROM (VALUES ('pending'), ('queued'), ('running'), ('success'), \
             ('failure'), ('cancelled'), ('timed_out'), ('skipped'), ('error')) \
             WHERE EXISTS (SELECT 1 FROM tasks WHERE run_id = ? AND status = column1)",
        )
        .bind(run_id)
        .fetch_all(&mut *conn)
        .await?;
        let counts = present
            .into_iter()
            .map(|status| Ok((codec::status(&status)?, 1)))
            .collect::<Result<Vec<_>>>()?;
        if let Some(status) = queue::status_from_counts(&counts) {
            close_task_steps(conn, task_id, now).await?;
            sqlx::query(
                "UPDATE runs SET status = ? WHERE id = ? AND finished_at IS NULL AND status <> ?",
            )
            .bind(status.as_str())
            .bind(run_id)
            .bind(status.as_str())
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
    }
    let rows = sqlx::query(
        "SELECT id, name, status, reason, spec FROM tasks WHERE run_id = ? ORDER BY position",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut states = Vec::with_capacity(rows.len());
    for row in &rows {
        let spec = codec::spec(row.try_get("spec")?)?;
        ids.push(row.try_get::<i64, _>("id")?);
        states.push(TaskState {
            name: row.try_get("name")?,
            status: codec::status(row.try_get("status")?)?,
            needs: spec.needs,
            allow_failure: spec.allow_failure,
            reason: row.try_get("reason")?,
        });
    }
    for index in queue::settle(&mut states) {
        let state = &states[index];
        if state.status == Status::Queued {
            sqlx::query("UPDATE tasks SET status = 'queued', queued_at = ? WHERE id = ?")
                .bind(ms(now))
                .bind(ids[index])
                .execute(&mut *conn)
                .await?;
        } else {
            sqlx::query("UPDATE tasks SET status = ?, reason = ?, finished_at = ? WHERE id = ?")
                .bind(state.status.as_str())
                .bind(&state.reason)
                .bind(ms(now))
                .bind(ids[index])
                .execute(&mut *conn)
                .await?;
        }
    }
    close_steps(conn, run_id, now).await?;

    let status = queue::run_status(&states);
    // A run ending `error` says why: the first errored task's reason
    // ("agent lost", an infrastructure message).
    let error = if status == Status::Error {
        states.iter().find(|s| s.status == Status::Error).map(|s| {
            s.reason
                .clone()
                .unwrap_or_else(|| format!("task `{}` ended error", s.name))
        })
    } else {
        None
    };
    let finished_at = status.is_terminal().then_some(ms(now));
    // A run that already ended (its deadline passed) keeps its outcome.
    sqlx::query(
        "UPDATE runs SET status = ?, error = COALESCE(error, ?), finished_at = ? \
         WHERE id = ? AND finished_at IS NULL",
    )
    .bind(status.as_str())
    .bind(error)
    .bind(finished_at)
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How [`close_steps`] and [`close_task_steps`] set a step of an ended task
/// (SET sees the old `status`): one never run is `skipped`, one left running
/// ends with its task's status.
const CLOSED_STEP: &str = "UPDATE steps SET \
     status = CASE WHEN status = 'pending' THEN 'skipped' \
      ELSE (SELECT t.status FROM tasks t WHERE t.id = steps.task_id) END, \
     finished_at = CASE WHEN status = 'running' THEN COALESCE(finished_at, ?) \
      ELSE finished_at END \
     WHERE status IN ('pending', 'running') AND";

/// Closes the open steps of the run's ended tasks, in one statement (each
/// is a round trip to the single writer).
async fn close_steps(conn: &mut SqliteConnection, run_id: Id, now: DateTime<Utc>) -> Result<()> {
    sqlx::query(&format!(
        "{CLOSED_STEP} task_id IN \
         (SELECT id FROM tasks WHERE run_id = ? AND finished_at IS NOT NULL)"
    ))
    .bind(ms(now))
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`close_steps`] for one task: its own steps, not a scan of the run.
async fn close_task_steps(
    conn: &mut SqliteConnection,
    task_id: Id,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(&format!(
        "{CLOSED_STEP} task_id = ? AND EXISTS \
         (SELECT 1 FROM tasks WHERE id = ? AND finished_at IS NOT NULL)"
    ))
    .bind(ms(now))
    .bind(task_id)
    .bind(task_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl SqliteStore {
    async fn claim_task_(&self, claim: &Claim) -> Result<Option<TaskRow>> {
        Ok(self.claim_tasks_(claim, 1).await?.pop())
    }

    async fn claim_tasks_(&self, claim: &Claim, max: usize) -> Result<Vec<TaskRow>> {
        let labels = serde_json::to_string(&claim.labels)
            .map_err(|e| Error::Corrupt(format!("labels: {e}")))?;
        let lease_until = ms(after(claim.now, claim.lease)?);
        let mut tx = self.write().await?;
        // Among the queued tasks all of whose `runs-on` labels the agent has,
        // one of the job with the fewest running tasks (then oldest, then
        // lowest id), so a job with a long queue cannot starve another; made
        // running in the same statement. Per job, its oldest matching task
        // and its running count are index lookups on the denormalised
        // `tasks.job_id`. The write lock is held, so no other claimer sees
        // it queued. Every statement here waits for the one writer
        // connection, hence as few as possible, and a batch in one
        // transaction.
        let mut claimed: Vec<(i64, i64)> = Vec::new();
        while claimed.len() < max {
            let row = sqlx::query(
                "UPDATE tasks SET status = 'running', agent = ?, lease_holder = ?, \
                 lease_expires_at = ?, cancel_requested = 0, \
                 started_at = COALESCE(started_at, ?), \
                 reason = CASE WHEN reason LIKE ? THEN NULL ELSE reason END WHERE id = \
                 (SELECT q.id FROM jobs j JOIN tasks q ON q.id = \
                  (SELECT t.id FROM tasks t WHERE t.job_id = j.id AND t.status = 'queued' \
                   AND NOT EXISTS (SELECT 1 FROM json_each(t.runs_on) l \
                   WHERE l.value NOT IN (SELECT value FROM json_each(?))) \
                   ORDER BY t.queued_at, t.id LIMIT 1) \
                  ORDER BY (SELECT COUNT(*) FROM tasks rt \
                   WHERE rt.job_id = j.id AND rt.status = 'running'), \
                  q.queued_at, q.id LIMIT 1) \
                 RETURNING id, run_id",
            )
            .bind(&claim.holder)
            .bind(&claim.holder)
            .bind(lease_until)
            .bind(ms(claim.now))
            .bind(format!("{NO_AGENT_REASON}%"))
            .bind(&labels)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { break };
            claimed.push((row.try_get("id")?, row.try_get("run_id")?));
        }
        let mut runs: Vec<i64> = claimed.iter().map(|(_, run)| *run).collect();
        runs.sort_unstable();
        runs.dedup();
        for run_id in runs {
            sqlx::query(
                "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?) \
                 WHERE id = ? AND status = 'queued'",
            )
            .bind(ms(claim.now))
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        // Only the holder changes the tasks now, so reading them on a reader
        // connection, off the writer, is consistent.
        let mut tasks = Vec::with_capacity(claimed.len());
        for (task_id, _) in claimed {
            tasks.extend(self.get_task_(task_id).await?);
        }
        Ok(tasks)
    }

    async fn requeue_undelivered_(&self, holder: &str, which: Undelivered<'_>) -> Result<Vec<Id>> {
        let (ids, listed) = which.parts();
        let ids =
            serde_json::to_string(ids).map_err(|e| Error::Corrupt(format!("task ids: {e}")))?;
        // One statement on the writer: nothing comes between the checks and
        // the write. No step started, so no log chunk exists to drop.
        let requeued = sqlx::query_scalar(
            "UPDATE tasks SET status = 'queued', lease_holder = NULL, lease_expires_at = NULL, \
             agent = CASE WHEN attempt = 1 THEN NULL ELSE agent END, \
             started_at = CASE WHEN attempt = 1 THEN NULL ELSE started_at END \
             WHERE lease_holder = ? AND status = 'running' AND cancel_requested = 0 \
             AND (id IN (SELECT value FROM json_each(?))) = ? \
             AND NOT EXISTS (SELECT 1 FROM steps s \
              WHERE s.task_id = tasks.id AND s.status <> 'pending') \
             RETURNING id",
        )
        .bind(holder)
        .bind(ids)
        .bind(listed)
        .fetch_all(&self.writer)
        .await?;
        Ok(requeued)
    }

    async fn renew_lease_(&self, task_id: Id, holder: &str, until: DateTime<Utc>) -> Result<bool> {
        // One statement commits on its own: no transaction round trips.
        let renewed = sqlx::query(
            "UPDATE tasks SET lease_expires_at = ? \
             WHERE id = ? AND lease_holder = ? AND status = 'running'",
        )
        .bind(ms(until))
        .bind(task_id)
        .bind(holder)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(renewed > 0)
    }

    async fn update_step_(&self, task_id: Id, holder: &str, step: &StepRow) -> Result<bool> {
        // One statement, holder check included: it runs alone on the one
        // writer, so nothing can come between the check and the write.
        let updated = sqlx::query(
            "UPDATE steps SET status = ?, exit_code = ?, started_at = ?, finished_at = ? \
             WHERE task_id = ? AND position = ? AND EXISTS (SELECT 1 FROM tasks \
             WHERE id = ? AND status = 'running' AND lease_holder = ?)",
        )
        .bind(step.status.as_str())
        .bind(step.exit_code)
        .bind(step.started_at.map(ms))
        .bind(step.finished_at.map(ms))
        .bind(task_id)
        .bind(step.index)
        .bind(task_id)
        .bind(holder)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if updated > 0 {
            return Ok(true);
        }
        // Nothing written: not held, or no such step.
        let holds = self.task_holds_(&[task_id]).await?;
        match holds.first() {
            Some(task)
                if task.status == Status::Running && task.agent.as_deref() == Some(holder) =>
            {
                Err(StoreError::NotFound(format!("step {} of task {task_id}", step.index)).into())
            }
            _ => Ok(false),
        }
    }

    async fn finish_task_(
        &self,
        task_id: Id,
        holder: &str,
        result: &TaskResult,
    ) -> Result<Option<Status>> {
        if !result.status.is_terminal() {
            return Err(
                StoreError::Conflict(format!("a task cannot finish as {}", result.status)).into(),
            );
        }
        let mut tx = self.write().await?;
        let task = match held(&mut tx, task_id).await? {
            Some(task)
                if task.status == Status::Running
                    && task.lease_holder.as_deref() == Some(holder) =>
            {
                task
            }
            _ => {
                tx.rollback().await?;
                return Ok(None);
            }
        };
        let ended = end_task(
            &mut tx,
            &task,
            result.status,
            result.reason.as_deref(),
            result.now,
        )
        .await?;
        settle_run(&mut tx, task.run_id, Some(task.id), result.now).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    async fn expire_(&self, now: DateTime<Utc>) -> Result<Vec<Id>> {
        let mut tx = self.write().await?;
        let mut touched = Vec::new();

        // Runs past their deadline first: their tasks end here rather than
        // being retried by the lease rule below.
        let runs: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE finished_at IS NULL AND deadline < ? ORDER BY id",
        )
        .bind(ms(now))
        .fetch_all(&mut *tx)
        .await?;
        for run_id in runs {
            let skipped: Vec<i64> = sqlx::query_scalar(
                "UPDATE tasks SET status = 'skipped', reason = ?, finished_at = ? \
                 WHERE run_id = ? AND status IN ('pending', 'queued') RETURNING id",
            )
            .bind(RUN_TIMEOUT_REASON)
            .bind(ms(now))
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await?;
            // The flag tells the agent to stop; the cleared lease makes its
            // later reports fail the holder check.
            let stopped: Vec<i64> = sqlx::query_scalar(
                "UPDATE tasks SET status = 'timed_out', reason = ?, finished_at = ?, \
                 cancel_requested = 1, lease_holder = NULL, lease_expires_at = NULL \
                 WHERE run_id = ? AND status = 'running' RETURNING id",
            )
            .bind(RUN_TIMEOUT_REASON)
            .bind(ms(now))
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await?;
            close_steps(&mut tx, run_id, now).await?;
            sqlx::query("UPDATE runs SET status = 'timed_out', finished_at = ? WHERE id = ?")
                .bind(ms(now))
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            touched.extend(skipped);
            touched.extend(stopped);
        }

        let lost: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < ? ORDER BY id",
        )
        .bind(ms(now))
        .fetch_all(&mut *tx)
        .await?;
        for task_id in lost {
            let Some(task) = held(&mut tx, task_id).await? else {
                continue;
            };
            end_task(&mut tx, &task, Status::Error, Some(AGENT_LOST), now).await?;
            settle_run(&mut tx, task.run_id, Some(task.id), now).await?;
            touched.push(task_id);
        }
        tx.commit().await?;
        touched.sort_unstable();
        touched.dedup();
        Ok(touched)
    }

    async fn queued_label_sets_(&self) -> Result<Vec<Vec<String>>> {
        let sets: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT runs_on FROM tasks WHERE status = 'queued'")
                .fetch_all(&self.reader)
                .await?;
        sets.iter()
            .map(|set| {
                serde_json::from_str(set).map_err(|e| Error::Corrupt(format!("labels: {e}")))
            })
            .collect()
    }

    async fn note_unplaceable_(&self, labels: &[String], reason: Option<&str>) -> Result<u64> {
        // The same serialisation as at insert, so the text compares equal.
        let labels =
            serde_json::to_string(labels).map_err(|e| Error::Corrupt(format!("labels: {e}")))?;
        let prefix = format!("{NO_AGENT_REASON}%");
        let changed = sqlx::query(
            "UPDATE tasks SET reason = ?1 WHERE status = 'queued' AND runs_on = ?2 \
             AND reason IS NOT ?1 \
             AND ((reason IS NULL AND ?1 IS NOT NULL) OR reason LIKE ?3)",
        )
        .bind(reason)
        .bind(labels)
        .bind(prefix)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(changed)
    }

    async fn task_holds_(&self, task_ids: &[Id]) -> Result<Vec<TaskHold>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(task_ids)
            .map_err(|e| Error::Corrupt(format!("task ids: {e}")))?;
        let rows = sqlx::query(
            "SELECT id, run_id, name, status, agent, cancel_requested, started_at \
             FROM tasks WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
        )
        .bind(ids)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(codec::task_hold).collect()
    }

    async fn find_task_(&self, job_id: Id, number: i64, name: &str) -> Result<Option<TaskRow>> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT t.id FROM tasks t JOIN runs r ON r.id = t.run_id \
             WHERE r.job_id = ? AND r.number = ? AND t.name = ?",
        )
        .bind(job_id)
        .bind(number)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        match id {
            Some(id) => self.get_task_(id).await,
            None => Ok(None),
        }
    }

    async fn get_task_(&self, task_id: Id) -> Result<Option<TaskRow>> {
        let mut tx = self.read().await?;
        let task = task_row(&mut tx, task_id).await?;
        tx.commit().await?;
        Ok(task)
    }

    async fn counts(&self, table: &str) -> Result<Vec<(Status, i64)>> {
        let rows = sqlx::query(&format!(
            "SELECT status, COUNT(*) AS n FROM {table} GROUP BY status ORDER BY status"
        ))
        .fetch_all(&self.reader)
        .await?;
        codec::counts(&rows)
    }
}

// --- logs, results, tokens

impl SqliteStore {
    async fn append_log_(&self, task_id: Id, holder: &str, seq: i64, data: &[u8]) -> Result<bool> {
        // One statement, holder check included: it runs alone on the one
        // writer, so nothing can come between the check and the write.
        let stored = sqlx::query(
            "INSERT INTO log_chunks (task_id, seq, data) SELECT ?1, ?2, ?3 \
             WHERE EXISTS (SELECT 1 FROM tasks \
              WHERE id = ?1 AND status = 'running' AND lease_holder = ?4) \
             ON CONFLICT (task_id, seq) DO NOTHING",
        )
        .bind(task_id)
        .bind(seq)
        .bind(data)
        .bind(holder)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if stored > 0 {
            return Ok(true);
        }
        // Nothing written: not held, or the chunk was stored before.
        let holds = self.task_holds_(&[task_id]).await?;
        Ok(holds.first().is_some_and(|task| task.held_by(holder)))
    }

    async fn read_log_(&self, task_id: Id, from: i64, limit: usize) -> Result<Vec<(i64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT seq, data FROM log_chunks WHERE task_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
        )
        .bind(task_id)
        .bind(from)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("seq")?, row.try_get("data")?)))
            .collect()
    }

    async fn log_size_(&self, task_id: Id) -> Result<u64> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(length(data)), 0) FROM log_chunks WHERE task_id = ?",
        )
        .bind(task_id)
        .fetch_one(&self.reader)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    async fn delete_log_(&self, task_id: Id) -> Result<()> {
        sqlx::query("DELETE FROM log_chunks WHERE task_id = ?")
            .bind(task_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn add_artifact_(&self, task_id: Id, artifact: &Artifact) -> Result<()> {
        let mut tx = self.write().await?;
        // Uploading the same path again (an agent retrying) replaces it.
        let result = sqlx::query(
            "INSERT INTO artifacts (task_id, path, size, content_type, blob_key) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (task_id, path) DO UPDATE SET \
             size = excluded.size, content_type = excluded.content_type, \
             blob_key = excluded.blob_key",
        )
        .bind(task_id)
        .bind(&artifact.path)
        .bind(artifact.size)
        .bind(&artifact.content_type)
        .bind(&artifact.blob_key)
        .execute(&mut *tx)
        .await;
        missing_task(result, task_id)?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_artifacts_(&self, task_id: Id) -> Result<Vec<Artifact>> {
        let rows = sqlx::query(
            "SELECT path, size, content_type, blob_key FROM artifacts \
             WHERE task_id = ? ORDER BY path",
        )
        .bind(task_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(codec::artifact).collect()
    }

    async fn put_report_(&self, task_id: Id, kind: &str, json: &str) -> Result<()> {
        let mut tx = self.write().await?;
        let result = sqlx::query(
            "INSERT INTO reports (task_id, kind, json) VALUES (?, ?, ?) \
             ON CONFLICT (task_id, kind) DO UPDATE SET json = excluded.json",
        )
        .bind(task_id)
        .bind(kind)
        .bind(json)
        .execute(&mut *tx)
        .await;
        missing_task(result, task_id)?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_report_(&self, task_id: Id, kind: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT json FROM reports WHERE task_id = ? AND kind = ?")
                .bind(task_id)
                .bind(kind)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn insert_token_(
        &self,
        hash: &str,
        kind: TokenKind,
        name: &str,
        is_admin: bool,
        now: DateTime<Utc>,
    ) -> Result<Id> {
        let mut tx = self.write().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO tokens (hash, kind, name, is_admin, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (hash) DO NOTHING RETURNING id",
        )
        .bind(hash)
        .bind(codec::token_kind_str(kind))
        .bind(name)
        .bind(is_admin)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| StoreError::Conflict("this token already exists".into()))?;
        tx.commit().await?;
        Ok(id)
    }

    async fn find_token_(&self, hash: &str) -> Result<Option<TokenInfo>> {
        let row = sqlx::query("SELECT id, kind, name, is_admin FROM tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(codec::token).transpose()
    }

    async fn has_admin_token_(&self) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens WHERE is_admin)")
                .fetch_one(&self.reader)
                .await?,
        )
    }
}

/// Maps a foreign-key failure on a task's child row to `NotFound`.
fn missing_task<T>(result: std::result::Result<T, sqlx::Error>, task_id: Id) -> Result<T> {
    match result {
        Err(e) if codec::is_missing_parent(&e) => {
            Err(StoreError::NotFound(format!("task {task_id}")).into())
        }
        other => Ok(other?),
    }
}

// The trait delegates to the methods above, which use this crate's error
// so `?` works on sqlx's; here it becomes a `StoreError`.
impl Database for SqliteStore {
    async fn create_job(&self, spec: &JobSpec, now: DateTime<Utc>) -> kiln_store::Result<Job> {
        Ok(self.create_job_(spec, now).await?)
    }

    async fn upsert_job(
        &self,
        spec: &JobSpec,
        now: DateTime<Utc>,
    ) -> kiln_store::Result<(Job, Upserted)> {
        Ok(self.upsert_job_(spec, now).await?)
    }

    async fn get_job(&self, name: &str) -> kiln_store::Result<Option<Job>> {
        Ok(self.get_job_(name).await?)
    }

    async fn list_jobs(&self) -> kiln_store::Result<Vec<Job>> {
        Ok(self.list_jobs_().await?)
    }

    async fn delete_job(&self, name: &str) -> kiln_store::Result<bool> {
        Ok(self.delete_job_(name).await?)
    }

    async fn put_secret(
        &self,
        job_id: Id,
        name: &str,
        sealed: &[u8],
        now: DateTime<Utc>,
    ) -> kiln_store::Result<()> {
        Ok(self.put_secret_(job_id, name, sealed, now).await?)
    }

    async fn delete_secret(&self, job_id: Id, name: &str) -> kiln_store::Result<bool> {
        Ok(self.delete_secret_(job_id, name).await?)
    }

    async fn list_secrets(&self, job_id: Id) -> kiln_store::Result<Vec<SecretInfo>> {
        Ok(self.list_secrets_(job_id).await?)
    }

    async fn sealed_secrets(
        &self,
        job_id: Id,
        names: &[String],
    ) -> kiln_store::Result<Vec<(String, Vec<u8>)>> {
        Ok(self.sealed_secrets_(job_id, names).await?)
    }

    async fn create_run(
        &self,
        job_id: Id,
        run: NewRun,
        now: DateTime<Utc>,
    ) -> kiln_store::Result<RunDetail> {
        Ok(self.create_run_(job_id, run, now).await?)
    }

    async fn get_run_by_id(&self, run_id: Id) -> kiln_store::Result<Option<Run>> {
        Ok(self.get_run_by_id_(run_id).await?)
    }

    async fn get_run(&self, job_id: Id, number: i64) -> kiln_store::Result<Option<RunDetail>> {
        Ok(self.get_run_(job_id, number).await?)
    }

    async fn list_runs(&self, job_id: Id, filter: &RunFilter) -> kiln_store::Result<Vec<Run>> {
        Ok(self.list_runs_(job_id, filter).await?)
    }

    async fn cancel_run(
        &self,
        job_id: Id,
        number: i64,
        now: DateTime<Utc>,
    ) -> kiln_store::Result<RunDetail> {
        Ok(self.cancel_run_(job_id, number, now).await?)
    }

    async fn claim_task(&self, claim: &Claim) -> kiln_store::Result<Option<TaskRow>> {
        Ok(self.claim_task_(claim).await?)
    }

    async fn claim_tasks(&self, claim: &Claim, max: usize) -> kiln_store::Result<Vec<TaskRow>> {
        Ok(self.claim_tasks_(claim, max).await?)
    }

    async fn requeue_undelivered(
        &self,
        holder: &str,
        which: Undelivered<'_>,
    ) -> kiln_store::Result<Vec<Id>> {
        Ok(self.requeue_undelivered_(holder, which).await?)
    }

    async fn renew_lease(
        &self,
        task_id: Id,
        holder: &str,
        until: DateTime<Utc>,
    ) -> kiln_store::Result<bool> {
        Ok(self.renew_lease_(task_id, holder, until).await?)
    }

    async fn update_step(
        &self,
        task_id: Id,
        holder: &str,
        step: &StepRow,
    ) -> kiln_store::Result<bool> {
        Ok(self.update_step_(task_id, holder, step).await?)
    }

    async fn finish_task(
        &self,
        task_id: Id,
        holder: &str,
        result: &TaskResult,
    ) -> kiln_store::Result<Option<Status>> {
        Ok(self.finish_task_(task_id, holder, result).await?)
    }

    async fn expire(&self, now: DateTime<Utc>) -> kiln_store::Result<Vec<Id>> {
        Ok(self.expire_(now).await?)
    }

    async fn get_task(&self, task_id: Id) -> kiln_store::Result<Option<TaskRow>> {
        Ok(self.get_task_(task_id).await?)
    }

    async fn find_task(
        &self,
        job_id: Id,
        number: i64,
        name: &str,
    ) -> kiln_store::Result<Option<TaskRow>> {
        Ok(self.find_task_(job_id, number, name).await?)
    }

    async fn queued_label_sets(&self) -> kiln_store::Result<Vec<Vec<String>>> {
        Ok(self.queued_label_sets_().await?)
    }

    async fn note_unplaceable(
        &self,
        labels: &[String],
        reason: Option<&str>,
    ) -> kiln_store::Result<u64> {
        Ok(self.note_unplaceable_(labels, reason).await?)
    }

    async fn task_holds(&self, task_ids: &[Id]) -> kiln_store::Result<Vec<TaskHold>> {
        Ok(self.task_holds_(task_ids).await?)
    }

    async fn task_counts(&self) -> kiln_store::Result<Vec<(Status, i64)>> {
        Ok(self.counts("tasks").await?)
    }

    async fn run_counts(&self) -> kiln_store::Result<Vec<(Status, i64)>> {
        Ok(self.counts("runs").await?)
    }

    async fn append_log(
        &self,
        task_id: Id,
        holder: &str,
        seq: i64,
        data: &[u8],
    ) -> kiln_store::Result<bool> {
        Ok(self.append_log_(task_id, holder, seq, data).await?)
    }

    async fn read_log(
        &self,
        task_id: Id,
        from: i64,
        limit: usize,
    ) -> kiln_store::Result<Vec<(i64, Vec<u8>)>> {
        Ok(self.read_log_(task_id, from, limit).await?)
    }

    async fn log_size(&self, task_id: Id) -> kiln_store::Result<u64> {
        Ok(self.log_size_(task_id).await?)
    }

    async fn delete_log(&self, task_id: Id) -> kiln_store::Result<()> {
        Ok(self.delete_log_(task_id).await?)
    }

    async fn add_artifact(&self, task_id: Id, artifact: &Artifact) -> kiln_store::Result<()> {
        Ok(self.add_artifact_(task_id, artifact).await?)
    }

    async fn list_artifacts(&self, task_id: Id) -> kiln_store::Result<Vec<Artifact>> {
        Ok(self.list_artifacts_(task_id).await?)
    }

    async fn put_report(&self, task_id: Id, kind: &str, json: &str) -> kiln_store::Result<()> {
        Ok(self.put_report_(task_id, kind, json).await?)
    }

    async fn get_report(&self, task_id: Id, kind: &str) -> kiln_store::Result<Option<String>> {
        Ok(self.get_report_(task_id, kind).await?)
    }

    async fn insert_token(
        &self,
        hash: &str,
        kind: TokenKind,
        name: &str,
        is_admin: bool,
        now: DateTime<Utc>,
    ) -> kiln_store::Result<Id> {
        Ok(self.insert_token_(hash, kind, name, is_admin, now).await?)
    }

    async fn find_token(&self, hash: &str) -> kiln_store::Result<Option<TokenInfo>> {
        Ok(self.find_token_(hash).await?)
    }

    async fn has_admin_token(&self) -> kiln_store::Result<bool> {
        Ok(self.has_admin_token_().await?)
    }
}

impl SqliteStore {
    /// Stores `count` finished runs of job `job_id` in one statement, numbered
    /// after its existing ones, for benchmarks and load tests that need a big
    /// history fast (`create_run` one by one would take minutes).
    pub async fn seed_finished_runs(
        &self,
        job_id: i64,
        count: i64,
        since: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        let mut tx = self.write_pool().begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?2) \
             INSERT INTO runs (job_id, number, status, branch, sha, event, created_at, \
             started_at, finished_at) \
             SELECT ?1, n, CASE WHEN n % 7 = 0 THEN 'failure' ELSE 'success' END, \
             CASE n % 3 WHEN 0 THEN 'main' WHEN 1 THEN 'dev' ELSE 'feature-' || (n % 50) END, \
             printf('%040x', n), 'push', ?3 + n * 1000, ?3 + n * 1000, ?3 + n * 1000 + 500 \
             FROM seq",
        )
        .bind(job_id)
        .bind(count)
        .bind(since.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE jobs SET next_run = ?1 + 1 WHERE id = ?2")
            .bind(count)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        sqlx::query("ANALYZE").execute(self.write_pool()).await?;
        Ok(())
    }
}
