//! What tasks leave behind: artifacts (their bytes are in the blob store)
//! and reports.

use kiln_store::sql::{self, or_missing};
use kiln_store::values::ms;
use kiln_store::{Artifact, Result, ResultStore, TaskId};

use crate::PostgresStore;

impl ResultStore for PostgresStore {
    async fn add_artifact(&self, task_id: TaskId, attempt: i64, artifact: &Artifact) -> Result<()> {
        // Uploading the same path again (an agent retrying) replaces it.
        let result = sqlx::query(
            "INSERT INTO artifacts \
             (task_id, attempt, path, size, content_type, blob_key, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (task_id, attempt, path) DO UPDATE SET \
             size = excluded.size, content_type = excluded.content_type, \
             blob_key = excluded.blob_key, expires_at = excluded.expires_at",
        )
        .bind(task_id)
        .bind(attempt)
        .bind(&artifact.path)
        .bind(artifact.size)
        .bind(&artifact.content_type)
        .bind(&artifact.blob_key)
        .bind(artifact.expires_at.map(ms))
        .execute(&self.pool)
        .await;
        or_missing(result, || format!("task {task_id}"))?;
        Ok(())
    }

    async fn list_artifacts(&self, task_id: TaskId, attempt: i64) -> Result<Vec<Artifact>> {
        let rows = sqlx::query(
            "SELECT path, size, content_type, blob_key, expires_at FROM artifacts \
             WHERE task_id = $1 AND attempt = $2 ORDER BY path",
        )
        .bind(task_id)
        .bind(attempt)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sql::artifact).collect()
    }

    async fn put_report(
        &self,
        task_id: TaskId,
        attempt: i64,
        kind: &str,
        json: &str,
    ) -> Result<()> {
        let result = sqlx::query(
            "INSERT INTO reports (task_id, attempt, kind, json) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (task_id, attempt, kind) DO UPDATE SET json = excluded.json",
        )
        .bind(task_id)
        .bind(attempt)
        .bind(kind)
        .bind(json)
        .execute(&self.pool)
        .await;
        or_missing(result, || format!("task {task_id}"))?;
        Ok(())
    }

    async fn get_report(
        &self,
        task_id: TaskId,
        attempt: i64,
        kind: &str,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT json FROM reports WHERE task_id = $1 AND attempt = $2 AND kind = $3",
        )
        .bind(task_id)
        .bind(attempt)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?)
    }
}
