//! Members of jobs, and each job's visibility and creator.

use chrono::{DateTime, Utc};
use kiln_store::sql::{self, MEMBER_SELECT, or_missing};
use kiln_store::values::{ms, name};
use kiln_store::{Job, JobId, Member, MemberRole, MemberStore, Result, UserId};

use crate::SqliteStore;

impl MemberStore for SqliteStore {
    async fn set_member(
        &self,
        job: JobId,
        user: UserId,
        role: MemberRole,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let result = sqlx::query(
            "INSERT INTO members (job_id, user_id, role, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (job_id, user_id) DO UPDATE SET role = excluded.role, \
             updated_at = excluded.updated_at",
        )
        .bind(job)
        .bind(user)
        .bind(role.as_str())
        .bind(ms(now))
        .execute(&mut *tx)
        .await;
        or_missing(result, || format!("job {job} or user {user}"))?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_members(&self, job: JobId) -> Result<Vec<Member>> {
        let rows = sqlx::query(&format!(
            "{MEMBER_SELECT} WHERE m.job_id = ? ORDER BY u.name"
        ))
        .bind(job)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(sql::member).collect()
    }

    async fn remove_member(&self, job: JobId, user: UserId) -> Result<bool> {
        let mut tx = self.write().await?;
        let removed = sqlx::query("DELETE FROM members WHERE job_id = ? AND user_id = ?")
            .bind(job)
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(removed > 0)
    }

    async fn role_of(&self, job: JobId, user: UserId) -> Result<Option<MemberRole>> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM members WHERE job_id = ? AND user_id = ?")
                .bind(job)
                .bind(user)
                .fetch_optional(&self.reader)
                .await?;
        Ok(role.as_deref().map(name).transpose()?)
    }

    async fn job_and_role(
        &self,
        name: &str,
        user: Option<UserId>,
    ) -> Result<Option<(Job, Option<MemberRole>)>> {
        let row = sqlx::query(&sql::job_and_role_select("?", "?"))
            .bind(user)
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(sql::job_and_role).transpose()
    }

    async fn member_roles(&self, user: UserId) -> Result<Vec<(JobId, MemberRole)>> {
        let rows = sqlx::query("SELECT job_id, role FROM members WHERE user_id = ?")
            .bind(user)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(sql::member_role).collect()
    }
}
