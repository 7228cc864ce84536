//! Loading a big history fast, for benchmarks (the `bench` feature).

use chrono::{DateTime, Utc};
use kiln_store::JobId;

use crate::SqliteStore;

impl SqliteStore {
    /// Stores `count` finished runs of job `job_id` in one statement, numbered
    /// after its existing ones, for benchmarks and load tests that need a big
    /// history fast (`create_run` one by one would take minutes).
    pub async fn seed_finished_runs(
        &self,
        job_id: JobId,
        count: i64,
        since: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
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
        sqlx::query("ANALYZE").execute(&self.writer).await?;
        Ok(())
    }
}
