//! A job's secrets, stored sealed.

use chrono::{DateTime, Utc};
use kiln_store::sql::{self, or_missing};
use kiln_store::values::ms;
use kiln_store::{JobId, Result, SecretInfo, SecretStore};

use crate::SqliteStore;

impl SecretStore for SqliteStore {
    async fn put_secret(
        &self,
        job_id: JobId,
        name: &str,
        sealed: &[u8],
        allow_forks: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let result = sqlx::query(
            "INSERT INTO secrets (job_id, name, sealed, updated_at, allow_forks) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, name) DO UPDATE \
             SET sealed = excluded.sealed, updated_at = excluded.updated_at, \
             allow_forks = excluded.allow_forks",
        )
        .bind(job_id)
        .bind(name)
        .bind(sealed)
        .bind(ms(now))
        .bind(allow_forks)
        .execute(&mut *tx)
        .await;
        or_missing(result, || format!("job {job_id}"))?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_secret(&self, job_id: JobId, name: &str) -> Result<bool> {
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

    async fn list_secrets(&self, job_id: JobId) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query(
            "SELECT name, updated_at, allow_forks FROM secrets WHERE job_id = ? ORDER BY name",
        )
        .bind(job_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(sql::secret_info).collect()
    }

    async fn sealed_secrets(
        &self,
        job_id: JobId,
        names: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT name, sealed FROM secrets WHERE job_id = ? \
             AND name IN (SELECT value FROM json_each(?)) ORDER BY name",
        )
        .bind(job_id)
        .bind(sql::json("secret names", names)?)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(sql::sealed).collect()
    }
}
