//! The queue: claims, leases, steps, the ends of tasks and expiry. What a
//! task's end means (retry, cancelled, which dependants run) and what its
//! run's status becomes are `kiln_store::queue`'s decisions; this module
//! locks and reads the rows they need and writes back what they decide.

use chrono::{DateTime, Utc};
use kiln_store::Holder;
use kiln_store::queue::{self, AGENT_LOST, AfterEnd, Retry, Stop, TaskState};
use kiln_store::sql::{
    self, HELD_SELECT, HOLD_SELECT, Held, STATE_SELECT, STEP_SELECT, TASK_COLUMNS,
};
use kiln_store::values::{after, ms, status};
use kiln_store::{
    Claim, JobId, NO_AGENT_REASON, QueueStore, Result, RunId, Status, StepRow, StoreError,
    TaskHold, TaskId, TaskResult, TaskRow, Undelivered,
};
use sqlx::postgres::PgConnection;

use crate::runs::task_row;
use crate::{PostgresStore, lock_runs};

impl QueueStore for PostgresStore {
    async fn claim_task(&self, claim: &Claim) -> Result<Option<TaskRow>> {
        let lease_until = ms(after(claim.now, claim.lease)?);
        // One statement, so one round trip and a short-lived lock: among
        // the queued tasks all of whose `runs-on` labels the agent has, one
        // of the job with the fewest running tasks (then oldest, then lowest
        // id), so a job with a long queue cannot starve another (rows other
        // claimers hold are skipped, not waited for); made running, and its
        // run made running if it was still queued. Each job's queue head
        // (locked, so other claimers skip it for this short statement) and
        // running count are index lookups on the denormalised `tasks.job_id`.
        let row = sqlx::query(&format!(
            "WITH picked AS ( \
                 SELECT q.id, q.run_id FROM jobs j CROSS JOIN LATERAL ( \
                     SELECT t.id, t.run_id, t.queued_at FROM tasks t \
                     WHERE t.job_id = j.id AND t.status = 'queued' AND t.runs_on <@ $1 \
                     ORDER BY t.queued_at, t.id LIMIT 1 \
                     FOR NO KEY UPDATE SKIP LOCKED) q \
                 ORDER BY (SELECT COUNT(*) FROM tasks rt \
                     WHERE rt.job_id = j.id AND rt.status = 'running'), \
                 q.queued_at, q.id LIMIT 1), \
             claimed AS ( \
                 UPDATE tasks SET status = 'running', agent = $2, lease_holder = $2, \
                 lease_expires_at = $3, cancel_requested = FALSE, \
                 started_at = COALESCE(started_at, $4), \
                 reason = CASE WHEN tasks.reason LIKE $5 THEN NULL ELSE tasks.reason END \
                 FROM picked WHERE tasks.id = picked.id \
                 RETURNING tasks.*), \
             started AS ( \
                 UPDATE runs SET status = 'running', started_at = COALESCE(started_at, $4) \
                 WHERE id = (SELECT run_id FROM picked) AND status = 'queued') \
             SELECT {TASK_COLUMNS} FROM claimed"
        ))
        .bind(&claim.labels)
        .bind(&claim.holder)
        .bind(lease_until)
        .bind(ms(claim.now))
        .bind(format!("{NO_AGENT_REASON}%"))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut task = sql::task(&row)?;
        // Only the holder changes steps now, so reading them after the
        // claim committed is consistent.
        let rows = sqlx::query(&format!(
            "{STEP_SELECT} WHERE task_id = $1 ORDER BY position"
        ))
        .bind(task.id)
        .fetch_all(&self.pool)
        .await?;
        task.steps = rows
            .iter()
            .map(|row| sql::step(row).map(|(_, step)| step))
            .collect::<Result<_>>()?;
        Ok(Some(task))
    }

    async fn claim_tasks(&self, claim: &Claim, max: usize) -> Result<Vec<TaskRow>> {
        // Each claim is one statement already; a batch is a loop of them.
        let mut tasks = Vec::new();
        while tasks.len() < max {
            match self.claim_task(claim).await? {
                Some(task) => tasks.push(task),
                None => break,
            }
        }
        Ok(tasks)
    }

    async fn requeue_undelivered(
        &self,
        holder: &str,
        which: Undelivered<'_>,
    ) -> Result<Vec<TaskId>> {
        let (ids, listed) = which.parts();
        // No step started, so no log chunk exists to drop.
        let requeued = sqlx::query_scalar(
            "UPDATE tasks SET status = 'queued', lease_holder = NULL, lease_expires_at = NULL, \
             agent = CASE WHEN attempt = 1 THEN NULL ELSE agent END, \
             started_at = CASE WHEN attempt = 1 THEN NULL ELSE started_at END \
             WHERE lease_holder = $1 AND status = 'running' AND NOT cancel_requested \
             AND (id = ANY($2)) = $3 \
             AND NOT EXISTS (SELECT 1 FROM steps s \
              WHERE s.task_id = tasks.id AND s.status <> 'pending') \
             RETURNING id",
        )
        .bind(holder)
        .bind(ids)
        .bind(listed)
        .fetch_all(&self.pool)
        .await?;
        Ok(requeued)
    }

    async fn end_leases(&self, agent: &str, now: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE tasks SET lease_expires_at = $1 \
             WHERE lease_holder = $2 AND status = 'running'",
        )
        .bind(ms(now) - 1)
        .bind(agent)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn renew_lease(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let renewed = sqlx::query(
            "UPDATE tasks SET lease_expires_at = $1 \
             WHERE id = $2 AND lease_holder = $3 AND attempt = $4 AND status = 'running'",
        )
        .bind(ms(until))
        .bind(task_id)
        .bind(holder.agent)
        .bind(holder.attempt)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed > 0)
    }

    async fn update_step(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        step: &StepRow,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        // Shared lock: a concurrent finish waits for this step to be written.
        let held: Option<TaskId> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE id = $1 AND lease_holder = $2 AND attempt = $3 \
             AND status = 'running' FOR SHARE",
        )
        .bind(task_id)
        .bind(holder.agent)
        .bind(holder.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        let updated = sqlx::query(
            "UPDATE steps SET status = $1, exit_code = $2, started_at = $3, finished_at = $4 \
             WHERE task_id = $5 AND position = $6",
        )
        .bind(step.status.as_str())
        .bind(step.exit_code)
        .bind(step.started_at.map(ms))
        .bind(step.finished_at.map(ms))
        .bind(task_id)
        .bind(step.index)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!(
                "step {} of task {task_id}",
                step.index
            )));
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn finish_task(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        result: &TaskResult,
    ) -> Result<Option<Status>> {
        if !result.status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "a task cannot finish as {}",
                result.status
            )));
        }
        let mut tx = self.write().await?;
        let run_id: Option<RunId> = sqlx::query_scalar("SELECT run_id FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(run_id) = run_id else {
            tx.rollback().await?;
            return Ok(None);
        };
        lock_runs(&mut tx, &[run_id]).await?;
        let task = match held(&mut tx, task_id).await? {
            Some(task) if task.by(holder) => task,
            _ => {
                tx.rollback().await?;
                return Ok(None);
            }
        };
        let reason = result.reason.as_deref();
        let ended = end_task(
            &mut tx,
            &task,
            result.status,
            reason,
            result.retry,
            result.now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    async fn expire(&self, now: DateTime<Utc>) -> Result<Vec<TaskId>> {
        let mut tx = self.write().await?;
        // Find the candidates without locks, lock their runs in the common
        // order, then look again: another server may have handled them.
        let mut runs: Vec<RunId> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE finished_at IS NULL AND status <> 'blocked' \
             AND deadline < $1 UNION SELECT run_id FROM tasks WHERE status = 'running' AND lease_expires_at < $1",
        )
        .bind(ms(now))
        .fetch_all(&mut *tx)
        .await?;
        if runs.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        runs.sort_unstable();
        lock_runs(&mut tx, &runs).await?;
        let mut touched = Vec::new();

        // Runs past their deadline first: their tasks end here rather than
        // being retried by the lease rule below.
        let late: Vec<RunId> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE id = ANY($1) AND finished_at IS NULL \
             AND status <> 'blocked' AND deadline < $2 ORDER BY id",
        )
        .bind(&runs)
        .bind(ms(now))
        .fetch_all(&mut *tx)
        .await?;
        let stop = Stop::Deadline;
        for run_id in late {
            let skipped: Vec<TaskId> = sqlx::query_scalar(
                "UPDATE tasks SET status = $1, reason = $2, finished_at = $3 \
                 WHERE run_id = $4 AND status IN ('pending', 'queued') RETURNING id",
            )
            .bind(stop.unstarted().as_str())
            .bind(stop.reason())
            .bind(ms(now))
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await?;
            // The flag tells the agent to stop; the cleared lease makes its
            // later reports fail the holder check.
            let stopped: Vec<TaskId> = sqlx::query_scalar(
                "UPDATE tasks SET status = $1, reason = $2, finished_at = $3, \
                 cancel_requested = TRUE, lease_holder = NULL, lease_expires_at = NULL \
                 WHERE run_id = $4 AND status = 'running' RETURNING id",
            )
            .bind(stop.forced().map(Status::as_str))
            .bind(stop.reason())
            .bind(ms(now))
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await?;
            close_steps(&mut tx, run_id, now).await?;
            sqlx::query("UPDATE runs SET status = $1, finished_at = $2 WHERE id = $3")
                .bind(stop.forced().map(Status::as_str))
                .bind(ms(now))
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            touched.extend(skipped);
            touched.extend(stopped);
        }

        // Their rows are locked: what is read now stays true.
        let lost = sqlx::query(&format!(
            "{HELD_SELECT} WHERE run_id = ANY($1) AND status = 'running' \
             AND lease_expires_at < $2 ORDER BY id"
        ))
        .bind(&runs)
        .bind(ms(now))
        .fetch_all(&mut *tx)
        .await?;
        for row in &lost {
            let task = sql::held(row)?;
            end_task(
                &mut tx,
                &task,
                Status::Error,
                Some(AGENT_LOST),
                Retry::Allowed,
                now,
            )
            .await?;
            touched.push(task.id);
        }
        tx.commit().await?;
        touched.sort_unstable();
        touched.dedup();
        Ok(touched)
    }

    async fn get_task(&self, task_id: TaskId) -> Result<Option<TaskRow>> {
        let mut tx = self.read().await?;
        let task = task_row(&mut tx, task_id).await?;
        tx.commit().await?;
        Ok(task)
    }

    async fn find_task(&self, job_id: JobId, number: i64, name: &str) -> Result<Option<TaskRow>> {
        let id: Option<TaskId> = sqlx::query_scalar(
            "SELECT t.id FROM tasks t JOIN runs r ON r.id = t.run_id \
             WHERE r.job_id = $1 AND r.number = $2 AND t.name = $3",
        )
        .bind(job_id)
        .bind(number)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        match id {
            Some(id) => self.get_task(id).await,
            None => Ok(None),
        }
    }

    async fn queued_label_sets(&self) -> Result<Vec<Vec<String>>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT runs_on FROM tasks WHERE status = 'queued'")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn note_unplaceable(&self, labels: &[String], reason: Option<&str>) -> Result<u64> {
        let prefix = format!("{NO_AGENT_REASON}%");
        let changed = sqlx::query(
            "UPDATE tasks SET reason = $1 WHERE status = 'queued' AND runs_on = $2 \
             AND reason IS DISTINCT FROM $1 \
             AND ((reason IS NULL AND $1 IS NOT NULL) OR reason LIKE $3)",
        )
        .bind(reason)
        .bind(labels)
        .bind(prefix)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed)
    }

    async fn task_holds(&self, task_ids: &[TaskId]) -> Result<Vec<TaskHold>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!("{HOLD_SELECT} WHERE id = ANY($1) ORDER BY id"))
            .bind(task_ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sql::task_hold).collect()
    }

    async fn task_counts(&self) -> Result<Vec<(Status, i64)>> {
        self.counts("tasks").await
    }

    async fn run_counts(&self) -> Result<Vec<(Status, i64)>> {
        self.counts("runs").await
    }

    async fn queue_depth(&self) -> Result<i64> {
        // `tasks_claim` leads with the status: this reads the queued
        // entries of the index only.
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE status = 'queued'")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

impl PostgresStore {
    async fn counts(&self, table: &str) -> Result<Vec<(Status, i64)>> {
        let rows = sqlx::query(&format!(
            "SELECT status, COUNT(*) AS n FROM {table} GROUP BY status ORDER BY status"
        ))
        .fetch_all(&self.pool)
        .await?;
        sql::counts(&rows)
    }
}

async fn held(conn: &mut PgConnection, task_id: TaskId) -> Result<Option<Held>> {
    let row = sqlx::query(&format!("{HELD_SELECT} WHERE id = $1"))
        .bind(task_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(sql::held).transpose()
}

/// Ends an attempt of a running task as `queue::after_end` decides: the
/// task queued again for its next attempt, or ended; then settles its
/// run. Returns the task's status now. The caller holds the run's locks.
async fn end_task(
    conn: &mut PgConnection,
    task: &Held,
    status: Status,
    reason: Option<&str>,
    retry: Retry,
    now: DateTime<Utc>,
) -> Result<Status> {
    let status = match queue::after_end(&task.attempt(), status, reason, retry) {
        AfterEnd::Retry { next, note } => {
            sqlx::query(
                "UPDATE tasks SET status = 'queued', attempt = $1, reason = $2, \
                 lease_holder = NULL, lease_expires_at = NULL, queued_at = $3 WHERE id = $4",
            )
            .bind(next)
            .bind(note)
            .bind(ms(now))
            .bind(task.id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE steps SET status = 'pending', exit_code = NULL, started_at = NULL, \
                 finished_at = NULL WHERE task_id = $1",
            )
            .bind(task.id)
            .execute(&mut *conn)
            .await?;
            Status::Queued
        }
        AfterEnd::End(status) => {
            sqlx::query(
                "UPDATE tasks SET status = $1, reason = $2, finished_at = $3, lease_holder = NULL, \
                 lease_expires_at = NULL WHERE id = $4",
            )
            .bind(status.as_str())
            .bind(reason)
            .bind(ms(now))
            .bind(task.id)
            .execute(&mut *conn)
            .await?;
            status
        }
    };
    settle_run(conn, task.run_id, Some(task.id), now).await?;
    Ok(status)
}

/// Applies the queue's rules to a run after one of its tasks changed:
/// releases or skips dependants, closes the steps of ended tasks, and
/// stores the run's status. The caller holds the run's locks.
///
/// `ended` is the task whose end caused this, when there is one: if no task
/// of the run is pending, nothing can be released or skipped, and the
/// run's status follows from counts alone (see `queue::status_from_counts`).
pub(crate) async fn settle_run(
    conn: &mut PgConnection,
    run_id: RunId,
    ended: Option<TaskId>,
    now: DateTime<Utc>,
) -> Result<()> {
    if let Some(task_id) = ended {
        // Which statuses the run's tasks are in (as counts of one): an
        // index seek per status, however wide the run.
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT s FROM unnest(ARRAY['pending', 'queued', 'running', 'success', 'failure', \
             'cancelled', 'timed_out', 'skipped', 'error']) AS s \
             WHERE EXISTS (SELECT 1 FROM tasks WHERE run_id = $1 AND status = s)",
        )
        .bind(run_id)
        .fetch_all(&mut *conn)
        .await?;
        let counts = present
            .iter()
            .map(|name| Ok((status(name)?, 1)))
            .collect::<Result<Vec<_>>>()?;
        if let Some(status) = queue::status_from_counts(&counts) {
            close_task_steps(conn, task_id, now).await?;
            sqlx::query(
                "UPDATE runs SET status = $1 WHERE id = $2 AND finished_at IS NULL AND status <> $3",
            )
            .bind(status.as_str())
            .bind(run_id)
            .bind(status.as_str())
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
    }
    let rows = sqlx::query(&format!(
        "{STATE_SELECT} WHERE run_id = $1 ORDER BY position"
    ))
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    let (ids, mut states): (Vec<TaskId>, Vec<TaskState>) = rows
        .iter()
        .map(sql::task_state)
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    for index in queue::settle(&mut states) {
        let state = &states[index];
        if state.status == Status::Queued {
            sqlx::query("UPDATE tasks SET status = 'queued', queued_at = $1 WHERE id = $2")
                .bind(ms(now))
                .bind(ids[index])
                .execute(&mut *conn)
                .await?;
        } else {
            sqlx::query(
                "UPDATE tasks SET status = $1, reason = $2, finished_at = $3 WHERE id = $4",
            )
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
    let finished_at = status.is_terminal().then_some(ms(now));
    // A run that already ended (its deadline passed) keeps its outcome.
    sqlx::query(
        "UPDATE runs SET status = $1, error = COALESCE(error, $2), finished_at = $3 \
         WHERE id = $4 AND finished_at IS NULL",
    )
    .bind(status.as_str())
    .bind(queue::run_error(&states))
    .bind(finished_at)
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Steps of the run's ended tasks that never ran are `skipped`; one left
/// running ends with its task's status.
async fn close_steps(conn: &mut PgConnection, run_id: RunId, now: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "UPDATE steps SET status = 'skipped' WHERE status = 'pending' AND task_id IN \
         (SELECT id FROM tasks WHERE run_id = $1 AND finished_at IS NOT NULL)",
    )
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE steps SET status = t.status, finished_at = COALESCE(steps.finished_at, $1) \
         FROM tasks t WHERE t.id = steps.task_id AND steps.status = 'running' \
         AND t.run_id = $2 AND t.finished_at IS NOT NULL",
    )
    .bind(ms(now))
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`close_steps`] for one task: its own steps, not a scan of the run.
async fn close_task_steps(
    conn: &mut PgConnection,
    task_id: TaskId,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE steps SET status = CASE WHEN steps.status = 'pending' THEN 'skipped' \
          ELSE t.status END, \
         finished_at = CASE WHEN steps.status = 'running' \
          THEN COALESCE(steps.finished_at, $1) ELSE steps.finished_at END \
         FROM tasks t WHERE t.id = $2 AND steps.task_id = $2 \
         AND steps.status IN ('pending', 'running') AND t.finished_at IS NOT NULL",
    )
    .bind(ms(now))
    .bind(task_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
