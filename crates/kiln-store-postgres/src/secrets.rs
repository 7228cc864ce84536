//! A job's secrets, stored sealed.

use chrono::{DateTime, Utc};
use kiln_store::sql::{self, or_missing};
use kiln_store::values::ms;
use kiln_store::{JobId, Result, SecretInfo, SecretStore};

use crate::PostgresStore;

impl SecretStore for PostgresStore {
    async fn put_secret(
        &self,
        job_id: JobId,
        name: &str,
        sealed: &[u8],
        allow_forks: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        // One statement: its own transaction.
        let result = sqlx::query(
            "INSERT INTO secrets (job_id, name, sealed, updated_at, allow_forks) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id, name) DO UPDATE \
             SET sealed = excluded.sealed, updated_at = excluded.updated_at, \
             allow_forks = excluded.allow_forks",
        )
        .bind(job_id)
        .bind(name)
        .bind(sealed)
        .bind(ms(now))
        .bind(allow_forks)
        .execute(&self.pool)
        .await;
        or_missing(result, || format!("job {job_id}"))?;
        Ok(())
    }

    async fn delete_secret(&self, job_id: JobId, name: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM secrets WHERE job_id = $1 AND name = $2")
            .bind(job_id)
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn list_secrets(&self, job_id: JobId) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query(
            "SELECT name, updated_at, allow_forks FROM secrets WHERE job_id = $1 ORDER BY name",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
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
            "SELECT name, sealed FROM secrets WHERE job_id = $1 AND name = ANY($2) ORDER BY name",
        )
        .bind(job_id)
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sql::sealed).collect()
    }
}
