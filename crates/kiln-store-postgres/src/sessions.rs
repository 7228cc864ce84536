//! Web sign-in sessions, by the hash of their cookie's value.

use chrono::{DateTime, Utc};
use kiln_store::identity::TOUCH_INTERVAL;
use kiln_store::sql::{self, SESSION_SELECT, or_missing};
use kiln_store::values::ms;
use kiln_store::{Result, Session, SessionStore, StoreError, UserId};

use crate::PostgresStore;

impl SessionStore for PostgresStore {
    async fn create_session(
        &self,
        hash: &str,
        user: UserId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let result = sqlx::query(
            "INSERT INTO sessions (hash, user_id, created_at, expires_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(user)
        .bind(ms(now))
        .bind(ms(expires_at))
        .bind(ms(now))
        .execute(&self.pool)
        .await;
        if or_missing(result, || format!("user {user}"))?.rows_affected() == 0 {
            return Err(StoreError::Conflict("this session already exists".into()));
        }
        Ok(())
    }

    async fn find_session(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<Session>> {
        let row = sqlx::query(&format!(
            "{SESSION_SELECT} WHERE s.hash = $1 AND s.expires_at > $2"
        ))
        .bind(hash)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sql::session).transpose()
    }

    async fn touch_session(&self, hash: &str, now: DateTime<Utc>) -> Result<bool> {
        let touched = sqlx::query(
            "UPDATE sessions SET last_seen_at = $1 WHERE hash = $2 AND last_seen_at <= $3",
        )
        .bind(ms(now))
        .bind(hash)
        .bind(ms(now - TOUCH_INTERVAL))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(touched > 0)
    }

    async fn delete_session(&self, hash: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn delete_user_sessions(&self, user: UserId) -> Result<u64> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted)
    }
}
