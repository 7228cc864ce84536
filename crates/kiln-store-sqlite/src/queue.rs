//! The queue: claims, leases, steps, the ends of tasks and expiry. What a
//! task's end means (retry, cancelled, which dependants run) and what its
//! run's status becomes are `kiln_store::queue`'s decisions; this module
//! reads the rows they need and writes back what they decide.

use chrono::{DateTime, Utc};
use kiln_store::Holder;
use kiln_store::queue::{self, AGENT_LOST, AfterEnd, Retry, Stop, TaskState};
use kiln_store::sql::{self, HELD_SELECT, HOLD_SELECT, Held, STATE_SELECT};
use kiln_store::values::{Corrupt, after, ms, status};
use kiln_store::{
    Claim, JobId, NO_AGENT_REASON, QueueStore, Result, RunId, Status, StepRow, StoreError,
    TaskHold, TaskId, TaskResult, TaskRow, Undelivered,
};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use crate::SqliteStore;
use crate::runs::task_row;

impl QueueStore for SqliteStore {
    async fn claim_task(&self, claim: &Claim) -> Result<Option<TaskRow>> {
        Ok(self.claim_tasks(claim, 1).await?.pop())
    }

    async fn claim_tasks(&self, claim: &Claim, max: usize) -> Result<Vec<TaskRow>> {
        let labels = sql::json("labels", &claim.labels)?;
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
        let mut claimed: Vec<(TaskId, RunId)> = Vec::new();
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
        let mut runs: Vec<RunId> = claimed.iter().map(|(_, run)| *run).collect();
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
            tasks.extend(self.get_task(task_id).await?);
        }
        Ok(tasks)
    }

    async fn requeue_undelivered(
        &self,
        holder: &str,
        which: Undelivered<'_>,
    ) -> Result<Vec<TaskId>> {
        let (ids, listed) = which.parts();
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
        .bind(sql::json("task ids", ids)?)
        .bind(listed)
        .fetch_all(&self.writer)
        .await?;
        Ok(requeued)
    }

    async fn end_leases(&self, agent: &str, now: DateTime<Utc>) -> Result<u64> {
        let ended = sqlx::query(
            "UPDATE tasks SET lease_expires_at = ? \
             WHERE lease_holder = ? AND status = 'running'",
        )
        .bind(ms(now) - 1)
        .bind(agent)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(ended)
    }

    async fn renew_lease(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        // One statement commits on its own: no transaction round trips.
        let renewed = sqlx::query(
            "UPDATE tasks SET lease_expires_at = ? \
             WHERE id = ? AND lease_holder = ? AND attempt = ? AND status = 'running'",
        )
        .bind(ms(until))
        .bind(task_id)
        .bind(holder.agent)
        .bind(holder.attempt)
        .execute(&self.writer)
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
        // One statement, holder check included: it runs alone on the one
        // writer, so nothing can come between the check and the write.
        let updated = sqlx::query(
            "UPDATE steps SET status = ?, exit_code = ?, started_at = ?, finished_at = ? \
             WHERE task_id = ? AND position = ? AND EXISTS (SELECT 1 FROM tasks \
             WHERE id = ? AND status = 'running' AND lease_holder = ? AND attempt = ?)",
        )
        .bind(step.status.as_str())
        .bind(step.exit_code)
        .bind(step.started_at.map(ms))
        .bind(step.finished_at.map(ms))
        .bind(task_id)
        .bind(step.index)
        .bind(task_id)
        .bind(holder.agent)
        .bind(holder.attempt)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if updated > 0 {
            return Ok(true);
        }
        // Nothing written: not held, or no such step.
        let holds = self.task_holds(&[task_id]).await?;
        match holds.first() {
            Some(task) if task.held_by(holder) => Err(StoreError::NotFound(format!(
                "step {} of task {task_id}",
                step.index
            ))),
            _ => Ok(false),
        }
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
        let mut touched = Vec::new();

        // Runs past their deadline first: their tasks end here rather than
        // being retried by the lease rule below. A blocked run waits: its
        // timeout counts from its approval (`approve_run`).
        let runs: Vec<RunId> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE finished_at IS NULL AND status <> 'blocked' \
             AND deadline < ? ORDER BY id",
        )
        .bind(ms(now))
        .fetch_all(&mut *tx)
        .await?;
        let stop = Stop::Deadline;
        for run_id in runs {
            let skipped: Vec<TaskId> = sqlx::query_scalar(
                "UPDATE tasks SET status = ?, reason = ?, finished_at = ? \
                 WHERE run_id = ? AND status IN ('pending', 'queued') RETURNING id",
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
                "UPDATE tasks SET status = ?, reason = ?, finished_at = ?, \
                 cancel_requested = 1, lease_holder = NULL, lease_expires_at = NULL \
                 WHERE run_id = ? AND status = 'running' RETURNING id",
            )
            .bind(stop.forced().map(Status::as_str))
            .bind(stop.reason())
            .bind(ms(now))
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await?;
            close_steps(&mut tx, run_id, now).await?;
            sqlx::query("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?")
                .bind(stop.forced().map(Status::as_str))
                .bind(ms(now))
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            touched.extend(skipped);
            touched.extend(stopped);
        }

        let lost = sqlx::query(&format!(
            "{HELD_SELECT} WHERE status = 'running' AND lease_expires_at < ? ORDER BY id"
        ))
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
             WHERE r.job_id = ? AND r.number = ? AND t.name = ?",
        )
        .bind(job_id)
        .bind(number)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        match id {
            Some(id) => self.get_task(id).await,
            None => Ok(None),
        }
    }

    async fn queued_label_sets(&self) -> Result<Vec<Vec<String>>> {
        let sets: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT runs_on FROM tasks WHERE status = 'queued'")
                .fetch_all(&self.reader)
                .await?;
        sets.iter()
            .map(|set| {
                serde_json::from_str(set).map_err(|e| Corrupt(format!("labels: {e}")).into())
            })
            .collect()
    }

    async fn note_unplaceable(&self, labels: &[String], reason: Option<&str>) -> Result<u64> {
        // The same serialisation as at insert, so the text compares equal.
        let labels = sql::json("labels", labels)?;
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

    async fn task_holds(&self, task_ids: &[TaskId]) -> Result<Vec<TaskHold>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "{HOLD_SELECT} WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"
        ))
        .bind(sql::json("task ids", task_ids)?)
        .fetch_all(&self.reader)
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
                .fetch_one(&self.reader)
                .await?,
        )
    }
}

impl SqliteStore {
    async fn counts(&self, table: &str) -> Result<Vec<(Status, i64)>> {
        let rows = sqlx::query(&format!(
            "SELECT status, COUNT(*) AS n FROM {table} GROUP BY status ORDER BY status"
        ))
        .fetch_all(&self.reader)
        .await?;
        sql::counts(&rows)
    }
}

async fn held(conn: &mut SqliteConnection, task_id: TaskId) -> Result<Option<Held>> {
    let row = sqlx::query(&format!("{HELD_SELECT} WHERE id = ?"))
        .bind(task_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(sql::held).transpose()
}

/// Ends an attempt of a running task as `queue::after_end` decides: the
/// task queued again for its next attempt, or ended; then settles its
/// run. Returns the task's status now.
async fn end_task(
    conn: &mut SqliteConnection,
    task: &Held,
    status: Status,
    reason: Option<&str>,
    retry: Retry,
    now: DateTime<Utc>,
) -> Result<Status> {
    let status = match queue::after_end(&task.attempt(), status, reason, retry) {
        AfterEnd::Retry { next, note } => {
            sqlx::query(
                "UPDATE tasks SET status = 'queued', attempt = ?, reason = ?, \
                 lease_holder = NULL, lease_expires_at = NULL, queued_at = ? WHERE id = ?",
            )
            .bind(next)
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
            Status::Queued
        }
        AfterEnd::End(status) => {
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
            status
        }
    };
    settle_run(conn, task.run_id, Some(task.id), now).await?;
    Ok(status)
}

/// Applies the queue's rules to a run after one of its tasks changed:
/// releases or skips dependants, closes the steps of ended tasks, and
/// stores the run's status.
///
/// `ended` is the task whose end caused this, when there is one: if no task
/// of the run is pending, nothing can be released or skipped, and the
/// run's status follows from counts alone (see `queue::status_from_counts`).
pub(crate) async fn settle_run(
    conn: &mut SqliteConnection,
    run_id: RunId,
    ended: Option<TaskId>,
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
            .iter()
            .map(|name| Ok((status(name)?, 1)))
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
    let rows = sqlx::query(&format!(
        "{STATE_SELECT} WHERE run_id = ? ORDER BY position"
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
    let finished_at = status.is_terminal().then_some(ms(now));
    // A run that already ended (its deadline passed) keeps its outcome.
    sqlx::query(
        "UPDATE runs SET status = ?, error = COALESCE(error, ?), finished_at = ? \
         WHERE id = ? AND finished_at IS NULL",
    )
    .bind(status.as_str())
    .bind(queue::run_error(&states))
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
async fn close_steps(conn: &mut SqliteConnection, run_id: RunId, now: DateTime<Utc>) -> Result<()> {
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
    task_id: TaskId,
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
