//! Tasks' logs, one per attempt, in chunks idempotent on (task, attempt, seq).

use kiln_store::sql;
use kiln_store::{Holder, LogStore, QueueStore, Result, TaskId};

use crate::SqliteStore;

impl LogStore for SqliteStore {
    async fn append_log(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        seq: i64,
        data: &[u8],
    ) -> Result<bool> {
        // One statement, holder check included: it runs alone on the one
        // writer, so nothing can come between the check and the write.
        let stored = sqlx::query(
            "INSERT INTO log_chunks (task_id, attempt, seq, data) \
             SELECT id, attempt, ?2, ?3 FROM tasks \
              WHERE id = ?1 AND status = 'running' AND lease_holder = ?4 AND attempt = ?5 \
             ON CONFLICT (task_id, attempt, seq) DO NOTHING",
        )
        .bind(task_id)
        .bind(seq)
        .bind(data)
        .bind(holder.agent)
        .bind(holder.attempt)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if stored > 0 {
            return Ok(true);
        }
        // Nothing written: not held, or the chunk was stored before.
        let holds = self.task_holds(&[task_id]).await?;
        Ok(holds.first().is_some_and(|task| task.held_by(holder)))
    }

    async fn read_log(
        &self,
        task_id: TaskId,
        attempt: i64,
        from: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT seq, data FROM log_chunks WHERE task_id = ? AND attempt = ? AND seq >= ? \
             ORDER BY seq LIMIT ?",
        )
        .bind(task_id)
        .bind(attempt)
        .bind(from)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(sql::log_chunk).collect()
    }

    async fn log_size(&self, task_id: TaskId, attempt: i64) -> Result<u64> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(length(data)), 0) FROM log_chunks \
             WHERE task_id = ? AND attempt = ?",
        )
        .bind(task_id)
        .bind(attempt)
        .fetch_one(&self.reader)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    async fn delete_log(&self, task_id: TaskId, attempt: i64) -> Result<()> {
        sqlx::query("DELETE FROM log_chunks WHERE task_id = ? AND attempt = ?")
            .bind(task_id)
            .bind(attempt)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
