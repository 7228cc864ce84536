//! Jobs: what a job is and where its pipeline comes from.

use chrono::{DateTime, Utc};
use kiln_store::sql::{self, JOB_COLUMNS, or_missing};
use kiln_store::values::{Corrupt, job_kind_str, ms};
use kiln_store::{Job, JobSpec, JobStore, MemberRole, Result, StoreError, Upserted, UserId};
use sqlx::postgres::PgConnection;

use crate::PostgresStore;

impl JobStore for PostgresStore {
    async fn create_job(
        &self,
        spec: &JobSpec,
        creator: Option<UserId>,
        now: DateTime<Utc>,
    ) -> Result<Job> {
        let mut tx = self.write().await?;
        let job = insert_job(&mut tx, spec, creator, now)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("job `{}` already exists", spec.name)))?;
        tx.commit().await?;
        Ok(job)
    }

    async fn upsert_job(
        &self,
        spec: &JobSpec,
        creator: Option<UserId>,
        now: DateTime<Utc>,
    ) -> Result<(Job, Upserted)> {
        let mut tx = self.write().await?;
        if let Some(job) = insert_job(&mut tx, spec, creator, now).await? {
            tx.commit().await?;
            return Ok((job, Upserted::Created));
        }
        // Locked, so two servers upserting at once compare with what the
        // other wrote.
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE name = $1 FOR NO KEY UPDATE"
        ))
        .bind(&spec.name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Corrupt(format!("job `{}` vanished", spec.name)))?;
        let existing = sql::job(&row)?;
        if existing.spec == *spec {
            tx.commit().await?;
            return Ok((existing, Upserted::Unchanged));
        }
        let row = sqlx::query(&format!(
            "UPDATE jobs SET kind = $1, repository = $2, pipeline_path = $3, \
             default_branch = $4, pipeline = $5, visibility = $6, updated_at = $7, forge = $9, fork_prs = $10, poll_interval = $11 WHERE id = $8 \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(job_kind_str(spec.kind))
        .bind(&spec.repository)
        .bind(&spec.pipeline_path)
        .bind(&spec.default_branch)
        .bind(&spec.pipeline)
        .bind(spec.visibility.as_str())
        .bind(ms(now))
        .bind(existing.id)
        .bind(&spec.forge)
        .bind(spec.fork_prs.as_str())
        .bind(spec.poll_interval)
        .fetch_one(&mut *tx)
        .await?;
        let job = sql::job(&row)?;
        tx.commit().await?;
        Ok((job, Upserted::Updated))
    }

    async fn get_job(&self, name: &str) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sql::job).transpose()
    }

    async fn list_jobs(&self) -> Result<Vec<Job>> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sql::job).collect()
    }

    async fn delete_job(&self, name: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        // Tasks, then runs, in id order, before the cascade deletes them in
        // whatever order it likes.
        sqlx::query(
            "SELECT t.id FROM tasks t JOIN runs r ON r.id = t.run_id JOIN jobs j ON j.id = r.job_id \
             WHERE j.name = $1 ORDER BY t.id FOR UPDATE OF t",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "SELECT r.id FROM runs r JOIN jobs j ON j.id = r.job_id \
             WHERE j.name = $1 ORDER BY r.id FOR UPDATE OF r",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM jobs WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }
}

/// Inserts the job, its creator as maintainer; `None` when one of that
/// name exists.
async fn insert_job(
    conn: &mut PgConnection,
    spec: &JobSpec,
    creator: Option<UserId>,
    now: DateTime<Utc>,
) -> Result<Option<Job>> {
    let result = sqlx::query(&format!(
        "INSERT INTO jobs (name, kind, repository, pipeline_path, default_branch, pipeline, \
         visibility, created_by, created_at, updated_at, forge, fork_prs, poll_interval) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12) \
         ON CONFLICT (name) DO NOTHING RETURNING {JOB_COLUMNS}"
    ))
    .bind(&spec.name)
    .bind(job_kind_str(spec.kind))
    .bind(&spec.repository)
    .bind(&spec.pipeline_path)
    .bind(&spec.default_branch)
    .bind(&spec.pipeline)
    .bind(spec.visibility.as_str())
    .bind(creator)
    .bind(ms(now))
    .bind(&spec.forge)
    .bind(spec.fork_prs.as_str())
    .bind(spec.poll_interval)
    .fetch_optional(&mut *conn)
    .await;
    let Some(row) = or_missing(result, || format!("user {creator:?}"))? else {
        return Ok(None);
    };
    let job = sql::job(&row)?;
    if let Some(creator) = creator {
        sqlx::query(
            "INSERT INTO members (job_id, user_id, role, updated_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(job.id)
        .bind(creator)
        .bind(MemberRole::Maintainer.as_str())
        .bind(ms(now))
        .execute(&mut *conn)
        .await?;
    }
    Ok(Some(job))
}
