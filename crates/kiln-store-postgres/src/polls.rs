//! Polling state of git jobs with a `poll_interval`.

use chrono::{DateTime, Utc};
use kiln_store::polls::POLL_COLUMNS;
use kiln_store::sql;
use kiln_store::values::ms;
use kiln_store::{JobId, JobPoll, PollOutcome, PollStore, Result, StoreError};

use crate::PostgresStore;

impl PollStore for PostgresStore {
    async fn claim_poll(
        &self,
        job: JobId,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<JobPoll>> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO job_polls (job_id) VALUES ($1) ON CONFLICT (job_id) DO NOTHING")
            .bind(job)
            .execute(&mut *tx)
            .await?;
        // One statement decides: of two servers, the row lets one through.
        let row = sqlx::query(&format!(
            "UPDATE job_polls SET holder = $1, lease_until = $2 WHERE job_id = $3 \
             AND next_poll_at <= $4 AND (lease_until IS NULL OR lease_until <= $5) \
             RETURNING {POLL_COLUMNS}"
        ))
        .bind(holder)
        .bind(ms(lease_until))
        .bind(job)
        .bind(ms(now))
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let poll = row.as_ref().map(sql::job_poll).transpose()?;
        tx.commit().await?;
        Ok(poll)
    }

    async fn finish_poll(&self, job: JobId, holder: &str, outcome: &PollOutcome) -> Result<bool> {
        let refs = outcome
            .refs
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::backend)?;
        let mut tx = self.write().await?;
        let changed = sqlx::query(
            "UPDATE job_polls SET refs = COALESCE($1, refs), error = $2, polled_at = $3, \
             next_poll_at = $4, holder = NULL, lease_until = NULL \
             WHERE job_id = $5 AND holder = $6",
        )
        .bind(refs)
        .bind(&outcome.error)
        .bind(ms(outcome.polled_at))
        .bind(ms(outcome.next_poll_at))
        .bind(job)
        .bind(holder)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn get_poll(&self, job: JobId) -> Result<Option<JobPoll>> {
        let row = sqlx::query(&format!(
            "SELECT {POLL_COLUMNS} FROM job_polls WHERE job_id = $1"
        ))
        .bind(job)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sql::job_poll).transpose()
    }
}
