//! The outbox of commit statuses.

use chrono::{DateTime, Utc};
use kiln_store::sql::{self, COMMIT_STATUS_SELECT};
use kiln_store::values::{ms, opt_time};
use kiln_store::{
    CommitStatus, CommitStatusId, Result, RunId, StatusCandidate, StatusOutcome, StatusStore,
    WantedStatus,
};

use crate::PostgresStore;

impl StatusStore for PostgresStore {
    async fn status_candidates(
        &self,
        finished_since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<StatusCandidate>> {
        let query =
            sql::status_candidates_select("r.finished_at IS NULL OR r.finished_at >= $1", "$2");
        let rows = sqlx::query(&query)
            .bind(finished_since.map_or(i64::MIN, ms))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sql::status_candidate).collect()
    }

    async fn want_status(&self, wanted: &WantedStatus<'_>, now: DateTime<Utc>) -> Result<bool> {
        // A newer run takes the row over; the same run changes it only with
        // a new status. A wait the forge asked for is kept.
        let changed = sqlx::query(
            "INSERT INTO commit_statuses (forge, repository, sha, context, run_id, run_status, \
             version, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7) \
             ON CONFLICT (forge, repository, sha, context) DO UPDATE SET \
             run_id = excluded.run_id, run_status = excluded.run_status, \
             version = commit_statuses.version + 1, \
             next_attempt_at = GREATEST(commit_statuses.next_attempt_at, excluded.next_attempt_at), \
             sent_at = NULL, error = NULL \
             WHERE excluded.run_id > commit_statuses.run_id \
             OR (excluded.run_id = commit_statuses.run_id \
             AND excluded.run_status <> commit_statuses.run_status) RETURNING id",
        )
        .bind(wanted.forge)
        .bind(wanted.repository)
        .bind(wanted.sha)
        .bind(wanted.context)
        .bind(wanted.run_id)
        .bind(wanted.run_status.as_str())
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?
        .is_some();
        Ok(changed)
    }

    async fn claim_statuses(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CommitStatus>> {
        let mut tx = self.write().await?;
        // Rows another server is claiming are skipped, not waited for.
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE commit_statuses SET claimed_until = $1 WHERE id IN (SELECT id FROM \
             commit_statuses WHERE (done_version IS NULL OR done_version < version) \
             AND next_attempt_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $2) \
             ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
        )
        .bind(ms(claim_until))
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let rows = sqlx::query(&format!(
            "{COMMIT_STATUS_SELECT} WHERE s.id = ANY($1) ORDER BY s.id"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(sql::commit_status).collect()
    }

    async fn settle_status(
        &self,
        id: CommitStatusId,
        version: i64,
        outcome: &StatusOutcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let query = match outcome {
            StatusOutcome::Delivered => sqlx::query(
                "UPDATE commit_statuses SET claimed_until = NULL, attempts = 0, \
                 done_version = GREATEST(COALESCE(done_version, 0), $1), \
                 sent_at = CASE WHEN version = $1 THEN $2 ELSE sent_at END, \
                 error = CASE WHEN version = $1 THEN NULL ELSE error END WHERE id = $3",
            )
            .bind(version)
            .bind(ms(now))
            .bind(id.0),
            StatusOutcome::Retry { at } => sqlx::query(
                "UPDATE commit_statuses SET claimed_until = NULL, attempts = attempts + 1, \
                 next_attempt_at = $1 WHERE id = $2",
            )
            .bind(ms(*at))
            .bind(id.0),
            StatusOutcome::Permanent(error) => sqlx::query(
                "UPDATE commit_statuses SET claimed_until = NULL, \
                 done_version = GREATEST(COALESCE(done_version, 0), $1), \
                 error = CASE WHEN version = $1 THEN $2 ELSE error END WHERE id = $3",
            )
            .bind(version)
            .bind(error.as_str())
            .bind(id.0),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn next_status_due(&self) -> Result<Option<DateTime<Utc>>> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(claimed_until, 0))) \
             FROM commit_statuses \
             WHERE done_version IS NULL OR done_version < version",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(opt_time(due)?)
    }

    async fn run_statuses(&self, run_id: RunId) -> Result<Vec<CommitStatus>> {
        let rows = sqlx::query(&format!(
            "{COMMIT_STATUS_SELECT} WHERE s.run_id = $1 ORDER BY s.forge, s.id"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sql::commit_status).collect()
    }
}
