//! Jobs: what a job is and where its pipeline comes from.

use chrono::{DateTime, Utc};
use kiln_store::sql::{self, JOB_COLUMNS, or_missing};
use kiln_store::values::{Corrupt, job_kind_str, ms};
use kiln_store::{Job, JobSpec, JobStore, MemberRole, Result, StoreError, Upserted, UserId};
use sqlx::sqlite::SqliteConnection;

use crate::SqliteStore;

impl JobStore for SqliteStore {
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
        let existing = job_by_name(&mut tx, &spec.name).await?;
        if existing.spec == *spec {
            tx.commit().await?;
            return Ok((existing, Upserted::Unchanged));
        }
        sqlx::query(
            "UPDATE jobs SET kind = ?, repository = ?, pipeline_path = ?, default_branch = ?, \
             pipeline = ?, visibility = ?, forge = ?, fork_prs = ?, poll_interval = ?, updated_at = ? WHERE id = ?",
        )
        .bind(job_kind_str(spec.kind))
        .bind(&spec.repository)
        .bind(&spec.pipeline_path)
        .bind(&spec.default_branch)
        .bind(&spec.pipeline)
        .bind(spec.visibility.as_str())
        .bind(&spec.forge)
        .bind(spec.fork_prs.as_str())
        .bind(spec.poll_interval)
        .bind(ms(now))
        .bind(existing.id)
        .execute(&mut *tx)
        .await?;
        let job = job_by_name(&mut tx, &spec.name).await?;
        tx.commit().await?;
        Ok((job, Upserted::Updated))
    }

    async fn get_job(&self, name: &str) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(sql::job).transpose()
    }

    async fn list_jobs(&self) -> Result<Vec<Job>> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY name"))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(sql::job).collect()
    }

    async fn delete_job(&self, name: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query("DELETE FROM jobs WHERE name = ?")
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
    conn: &mut SqliteConnection,
    spec: &JobSpec,
    creator: Option<UserId>,
    now: DateTime<Utc>,
) -> Result<Option<Job>> {
    let result = sqlx::query(&format!(
        "INSERT INTO jobs (name, kind, repository, pipeline_path, default_branch, pipeline, \
         visibility, created_by, created_at, updated_at, forge, fork_prs, poll_interval) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
        sqlx::query("INSERT INTO members (job_id, user_id, role, updated_at) VALUES (?, ?, ?, ?)")
            .bind(job.id)
            .bind(creator)
            .bind(MemberRole::Maintainer.as_str())
            .bind(ms(now))
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(job))
}

/// The job of that name, which the caller knows exists.
async fn job_by_name(conn: &mut SqliteConnection, name: &str) -> Result<Job> {
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?"))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Corrupt(format!("job `{name}` vanished")))?;
    sql::job(&row)
}
