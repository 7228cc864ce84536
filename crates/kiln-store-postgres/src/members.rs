//! Members of jobs, and each job's visibility and creator.

use chrono::{DateTime, Utc};
use kiln_store::sql::{self, MEMBER_SELECT, or_missing};
use kiln_store::values::{ms, name};
use kiln_store::{JobAccess, JobId, Member, MemberRole, MemberStore, Result, UserId};

use crate::PostgresStore;

impl MemberStore for PostgresStore {
    async fn set_member(
        &self,
        job: JobId,
        user: UserId,
        role: MemberRole,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let result = sqlx::query(
            "INSERT INTO members (job_id, user_id, role, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id, user_id) DO UPDATE SET role = excluded.role, \
             updated_at = excluded.updated_at",
        )
        .bind(job)
        .bind(user)
        .bind(role.as_str())
        .bind(ms(now))
        .execute(&self.pool)
        .await;
        or_missing(result, || format!("job {job} or user {user}"))?;
        Ok(())
    }

    async fn list_members(&self, job: JobId) -> Result<Vec<Member>> {
        let rows = sqlx::query(&format!(
            "{MEMBER_SELECT} WHERE m.job_id = $1 ORDER BY u.name"
        ))
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sql::member).collect()
    }

    async fn remove_member(&self, job: JobId, user: UserId) -> Result<bool> {
        let removed = sqlx::query("DELETE FROM members WHERE job_id = $1 AND user_id = $2")
            .bind(job)
            .bind(user)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed > 0)
    }

    async fn role_of(&self, job: JobId, user: UserId) -> Result<Option<MemberRole>> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM members WHERE job_id = $1 AND user_id = $2")
                .bind(job)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        Ok(role.as_deref().map(name).transpose()?)
    }

    async fn job_access(&self, job: JobId) -> Result<Option<JobAccess>> {
        let row = sqlx::query("SELECT visibility, created_by FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sql::job_access).transpose()
    }

    async fn set_job_access(&self, job: JobId, access: &JobAccess) -> Result<bool> {
        let result = sqlx::query("UPDATE jobs SET visibility = $1, created_by = $2 WHERE id = $3")
            .bind(access.visibility.as_str())
            .bind(access.created_by)
            .bind(job)
            .execute(&self.pool)
            .await;
        let changed = or_missing(result, || "the job's creator".to_string())?;
        Ok(changed.rows_affected() > 0)
    }
}
