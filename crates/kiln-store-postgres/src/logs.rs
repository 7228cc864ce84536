//! Tasks' logs, one per attempt, in chunks idempotent on (task, attempt, seq).

use kiln_store::sql;
use kiln_store::{Holder, LogAppend, LogStore, QueueStore, Result, TaskId};

use crate::PostgresStore;

impl LogStore for PostgresStore {
    async fn append_log(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        seq: i64,
        data: &[u8],
    ) -> Result<bool> {
        let outcome = self
            .append_log_within(task_id, holder, seq, data, u64::MAX)
            .await?;
        Ok(outcome != LogAppend::NotHeld)
    }

    async fn append_log_within(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        seq: i64,
        data: &[u8],
        limit: u64,
    ) -> Result<LogAppend> {
        // The holder check is in the insert; a lease moving away
        // concurrently is no different from one moving just after. The
        // count's row lock orders appends of one attempt from any server, so
        // two of them cannot both slip under the limit.
        let mut tx = self.write().await?;
        let stored = sqlx::query(
            "INSERT INTO log_chunks (task_id, attempt, seq, data) \
             SELECT id, attempt, $2, $3 FROM tasks \
              WHERE id = $1 AND status = 'running' AND lease_holder = $4 AND attempt = $5 \
             ON CONFLICT (task_id, attempt, seq) DO NOTHING",
        )
        .bind(task_id)
        .bind(seq)
        .bind(data)
        .bind(holder.agent)
        .bind(holder.attempt)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if stored == 0 {
            drop(tx);
            // Nothing written: not held, or the chunk was stored before.
            let holds = self.task_holds(&[task_id]).await?;
            return Ok(if holds.first().is_some_and(|task| task.held_by(holder)) {
                LogAppend::Stored
            } else {
                LogAppend::NotHeld
            });
        }
        let length = i64::try_from(data.len()).unwrap_or(i64::MAX);
        let total: i64 = sqlx::query_scalar(
            "INSERT INTO log_sizes (task_id, attempt, bytes) VALUES ($1, $2, $3) \
             ON CONFLICT (task_id, attempt) DO UPDATE SET bytes = log_sizes.bytes + excluded.bytes \
             RETURNING bytes",
        )
        .bind(task_id)
        .bind(holder.attempt)
        .bind(length)
        .fetch_one(&mut *tx)
        .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if total <= limit {
            tx.commit().await?;
            return Ok(LogAppend::Stored);
        }
        let before = total - length;
        let kept = (limit - before).clamp(0, length);
        if kept == 0 {
            sqlx::query("DELETE FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND seq = $3")
                .bind(task_id)
                .bind(holder.attempt)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE log_chunks SET data = $4 WHERE task_id = $1 AND attempt = $2 AND seq = $3",
            )
            .bind(task_id)
            .bind(holder.attempt)
            .bind(seq)
            .bind(&data[..kept as usize])
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE log_sizes SET bytes = $3 WHERE task_id = $1 AND attempt = $2")
            .bind(task_id)
            .bind(holder.attempt)
            .bind(before + kept)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(LogAppend::OverLimit {
            kept: kept as usize,
        })
    }

    async fn read_log(
        &self,
        task_id: TaskId,
        attempt: i64,
        from: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT seq, data FROM log_chunks WHERE task_id = $1 AND attempt = $2 \
             AND seq >= $3 ORDER BY seq LIMIT $4",
        )
        .bind(task_id)
        .bind(attempt)
        .bind(from)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sql::log_chunk).collect()
    }

    async fn log_size(&self, task_id: TaskId, attempt: i64) -> Result<u64> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(octet_length(data)), 0)::BIGINT FROM log_chunks \
             WHERE task_id = $1 AND attempt = $2",
        )
        .bind(task_id)
        .bind(attempt)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    async fn delete_log(&self, task_id: TaskId, attempt: i64) -> Result<()> {
        sqlx::query("DELETE FROM log_chunks WHERE task_id = $1 AND attempt = $2")
            .bind(task_id)
            .bind(attempt)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
