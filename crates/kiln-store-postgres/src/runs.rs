//! Runs and their tasks as a whole: creating, reading, listing, cancelling.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kiln_store::queue::{self, Stop};
use kiln_store::sql::{self, RUN_SELECT, STEP_SELECT, TASK_SELECT};
use kiln_store::values::{Corrupt, after, ms, status};
use kiln_store::{
    JobId, LatestRuns, NewAuditEntry, NewRun, Result, Run, RunDetail, RunFilter, RunId, RunScope,
    RunStore, StepRow, StoreError, TaskId, TaskRow,
};
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, QueryBuilder};

use crate::queue::settle_run;
use crate::{PostgresStore, lock_runs};

impl RunStore for PostgresStore {
    async fn create_run(
        &self,
        job_id: JobId,
        run: NewRun,
        now: DateTime<Utc>,
    ) -> Result<RunDetail> {
        let mut tx = self.write().await?;
        // The row lock on the job serialises numbering.
        let number: i64 = sqlx::query_scalar(
            "UPDATE jobs SET next_run = next_run + 1 WHERE id = $1 RETURNING next_run - 1",
        )
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;

        // The initial statuses, settled before anything is written.
        let start = queue::start_run(&run);
        let deadline = match (&start.error, run.timeout) {
            (None, Some(timeout)) => Some(ms(after(now, timeout)?)),
            _ => None,
        };
        let finished_at = start.status.is_terminal().then_some(ms(now));
        let pull_request = run
            .pull_request
            .as_ref()
            .map(|pr| sql::json("pull request", pr))
            .transpose()?;
        let run_id: RunId = sqlx::query_scalar(
            "INSERT INTO runs (job_id, number, status, branch, sha, event, error, created_at, \
             finished_at, deadline, pipeline, trigger_kind, trigger_user, pull_request, tag) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
        )
        .bind(job_id)
        .bind(number)
        .bind(start.status.as_str())
        .bind(&run.branch)
        .bind(&run.sha)
        .bind(run.event.as_str())
        .bind(&start.error)
        .bind(ms(now))
        .bind(finished_at)
        .bind(deadline)
        .bind(&run.pipeline)
        .bind(run.trigger.kind.as_str())
        .bind(&run.trigger.user)
        .bind(pull_request)
        .bind(&run.tag)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(queued) = run.queued_trigger
            && !crate::forges::mark_trigger_done(&mut tx, queued, Some(run_id), now).await?
        {
            // Another worker made its run: dropping the transaction undoes this one.
            return Err(StoreError::Conflict(format!(
                "queued trigger {queued} has its run already"
            )));
        }

        for (position, (new, state)) in run.tasks.iter().zip(&start.tasks).enumerate() {
            let task = &new.task;
            let queued_at = (state.status == kiln_store::Status::Queued).then_some(ms(now));
            let finished_at = state.status.is_terminal().then_some(ms(now));
            let task_id: TaskId = sqlx::query_scalar(
                "INSERT INTO tasks (run_id, position, name, status, reason, spec, runs_on, \
                 attempt, max_attempts, queued_at, finished_at, job_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, \
                 (SELECT job_id FROM runs WHERE id = $1)) RETURNING id",
            )
            .bind(run_id)
            .bind(position as i64)
            .bind(&task.name)
            .bind(state.status.as_str())
            .bind(&state.reason)
            .bind(kiln_store::values::spec_json(task)?)
            .bind(kiln_store::placement_labels(task))
            .bind(queue::max_attempts(task))
            .bind(queued_at)
            .bind(finished_at)
            .fetch_one(&mut *tx)
            .await?;
            // All of a task's steps in one statement: each is a round trip.
            let names: Vec<&str> = task.steps.iter().map(|s| s.name.as_str()).collect();
            sqlx::query(
                "INSERT INTO steps (task_id, position, name, status) \
                 SELECT $1, step.position - 1, step.name, $3 \
                 FROM unnest($2::text[]) WITH ORDINALITY AS step (name, position)",
            )
            .bind(task_id)
            .bind(&names)
            .bind(state.step_status().as_str())
            .execute(&mut *tx)
            .await?;
        }
        if let Some(entry) = &run.audit {
            let object = format!("{}/run/{number}", entry.object);
            let entry = NewAuditEntry {
                object,
                ..entry.clone()
            };
            crate::audit::insert_audit(&mut tx, &entry, now).await?;
        }
        let detail = run_detail(&mut tx, run_id)
            .await?
            .ok_or_else(|| Corrupt(format!("run {run_id} vanished")))?;
        tx.commit().await?;
        Ok(detail)
    }

    async fn get_run_by_id(&self, run_id: RunId) -> Result<Option<Run>> {
        let row = sqlx::query(&format!("{RUN_SELECT} WHERE r.id = $1"))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sql::run).transpose()
    }

    async fn get_run(&self, job_id: JobId, number: i64) -> Result<Option<RunDetail>> {
        let mut tx = self.read().await?;
        let run_id: Option<RunId> =
            sqlx::query_scalar("SELECT id FROM runs WHERE job_id = $1 AND number = $2")
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

    async fn run_pipeline(&self, run_id: RunId) -> Result<Option<String>> {
        let pipeline: Option<Option<String>> =
            sqlx::query_scalar("SELECT pipeline FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(pipeline.flatten())
    }

    async fn list_runs(&self, job_id: JobId, filter: &RunFilter) -> Result<Vec<Run>> {
        let mut query = QueryBuilder::<Postgres>::new(RUN_SELECT);
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
        query
            .push(" ORDER BY r.number DESC LIMIT ")
            .push_bind(filter.page_size());
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(sql::run).collect()
    }

    async fn latest_runs(&self, scope: RunScope, page: LatestRuns) -> Result<Vec<Run>> {
        // Newest first by id, which grows with every run made: the primary
        // key's order, so the first page reads no more rows than it shows
        // when most runs are readable.
        let mut query = QueryBuilder::<Postgres>::new(RUN_SELECT);
        query.push(" WHERE TRUE");
        if let RunScope::Readable { user } = scope {
            query.push(" AND (j.visibility = 'public'");
            if let Some(user) = user {
                query
                    .push(" OR r.job_id IN (SELECT job_id FROM members WHERE user_id = ")
                    .push_bind(user)
                    .push(")");
            }
            query.push(")");
        }
        if let Some(before) = page.before {
            query.push(" AND r.id < ").push_bind(before);
        }
        query
            .push(" ORDER BY r.id DESC LIMIT ")
            .push_bind(kiln_store::page_size(page.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(sql::run).collect()
    }

    async fn cancel_run(
        &self,
        job_id: JobId,
        number: i64,
        now: DateTime<Utc>,
    ) -> Result<RunDetail> {
        let mut tx = self.write().await?;
        let (run_id, run_status) = run_to_change(&mut tx, job_id, number).await?;
        if run_status.is_terminal() {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "run #{number} already ended {run_status}"
            )));
        }
        sqlx::query(
            "UPDATE tasks SET status = $1, reason = $2, finished_at = $3 \
             WHERE run_id = $4 AND status IN ('blocked', 'pending', 'queued')",
        )
        .bind(Stop::Cancel.unstarted().as_str())
        .bind(Stop::Cancel.reason())
        .bind(ms(now))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        // Running tasks end when their agent reports back (`queue::after_end`).
        sqlx::query(
            "UPDATE tasks SET cancel_requested = TRUE WHERE run_id = $1 AND status = 'running'",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        let detail = settled_detail(&mut tx, run_id, now).await?;
        tx.commit().await?;
        Ok(detail)
    }

    async fn approve_run(
        &self,
        job_id: JobId,
        number: i64,
        now: DateTime<Utc>,
    ) -> Result<RunDetail> {
        let mut tx = self.write().await?;
        let (run_id, run_status) = run_to_change(&mut tx, job_id, number).await?;
        if run_status != kiln_store::Status::Blocked {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "run #{number} is {run_status}, not blocked: there is nothing to approve"
            )));
        }
        sqlx::query(
            "UPDATE tasks SET status = 'queued', queued_at = $1 \
             WHERE run_id = $2 AND status = 'blocked'",
        )
        .bind(ms(now))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        // The run's timeout counts from its approval: the time it waited
        // for a maintainer is not the pipeline's.
        sqlx::query(
            "UPDATE runs SET deadline = deadline + ($1 - created_at) \
             WHERE id = $2 AND deadline IS NOT NULL",
        )
        .bind(ms(now))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        let detail = settled_detail(&mut tx, run_id, now).await?;
        tx.commit().await?;
        Ok(detail)
    }
}

/// The id and status of run `number` of a job, locked: a cancel or an
/// approval is about to change it.
async fn run_to_change(
    conn: &mut PgConnection,
    job_id: JobId,
    number: i64,
) -> Result<(RunId, kiln_store::Status)> {
    let run_id: RunId = sqlx::query_scalar("SELECT id FROM runs WHERE job_id = $1 AND number = $2")
        .bind(job_id)
        .bind(number)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("run #{number}")))?;
    lock_runs(conn, &[run_id]).await?;
    let run_status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok((run_id, status(&run_status)?))
}

/// The run once its tasks' changes are settled into its status.
async fn settled_detail(
    conn: &mut PgConnection,
    run_id: RunId,
    now: DateTime<Utc>,
) -> Result<RunDetail> {
    settle_run(conn, run_id, None, now).await?;
    run_detail(conn, run_id)
        .await?
        .ok_or_else(|| Corrupt(format!("run {run_id} vanished")).into())
}

pub(crate) async fn run_detail(
    conn: &mut PgConnection,
    run_id: RunId,
) -> Result<Option<RunDetail>> {
    let Some(row) = sqlx::query(&format!("{RUN_SELECT} WHERE r.id = $1"))
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let run = sql::run(&row)?;
    let rows = sqlx::query(&format!(
        "{TASK_SELECT} WHERE run_id = $1 ORDER BY position"
    ))
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut tasks = rows.iter().map(sql::task).collect::<Result<Vec<_>>>()?;
    let rows = sqlx::query(&format!(
        "{STEP_SELECT} WHERE task_id IN (SELECT id FROM tasks WHERE run_id = $1) \
         ORDER BY task_id, position"
    ))
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut steps: HashMap<TaskId, Vec<StepRow>> = HashMap::new();
    for row in &rows {
        let (task_id, step) = sql::step(row)?;
        steps.entry(task_id).or_default().push(step);
    }
    for task in &mut tasks {
        task.steps = steps.remove(&task.id).unwrap_or_default();
    }
    Ok(Some(RunDetail { run, tasks }))
}

pub(crate) async fn task_row(conn: &mut PgConnection, task_id: TaskId) -> Result<Option<TaskRow>> {
    let Some(row) = sqlx::query(&format!("{TASK_SELECT} WHERE id = $1"))
        .bind(task_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut task = sql::task(&row)?;
    let rows = sqlx::query(&format!(
        "{STEP_SELECT} WHERE task_id = $1 ORDER BY position"
    ))
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await?;
    task.steps = rows
        .iter()
        .map(|row| sql::step(row).map(|(_, step)| step))
        .collect::<Result<_>>()?;
    Ok(Some(task))
}
