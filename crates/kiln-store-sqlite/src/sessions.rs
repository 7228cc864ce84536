//! Web sign-in sessions, by the hash of their cookie's value.

use chrono::{DateTime, Utc};
use kiln_store::identity::TOUCH_INTERVAL;
use kiln_store::sql::{self, SESSION_SELECT, or_missing};
use kiln_store::values::ms;
use kiln_store::{Result, Session, SessionStore, StoreError, UserId};

use crate::SqliteStore;

impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        hash: &str,
        user: UserId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let result = sqlx::query(
            "INSERT INTO sessions (hash, user_id, created_at, expires_at, last_seen_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(user)
        .bind(ms(now))
        .bind(ms(expires_at))
        .bind(ms(now))
        .execute(&mut *tx)
        .await;
        if or_missing(result, || format!("user {user}"))?.rows_affected() == 0 {
            return Err(StoreError::Conflict("this session already exists".into()));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn find_session(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<Session>> {
        let row = sqlx::query(&format!(
            "{SESSION_SELECT} WHERE s.hash = ? AND s.expires_at > ?"
        ))
        .bind(hash)
        .bind(ms(now))
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(sql::session).transpose()
    }

    async fn touch_session(&self, hash: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.write().await?;
        let touched = sqlx::query(
            "UPDATE sessions SET last_seen_at = ? WHERE hash = ? AND last_seen_at <= ?",
        )
        .bind(ms(now))
        .bind(hash)
        .bind(ms(now - TOUCH_INTERVAL))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(touched > 0)
    }

    async fn delete_session(&self, hash: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query("DELETE FROM sessions WHERE hash = ?")
            .bind(hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn delete_user_sessions(&self, user: UserId) -> Result<u64> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}
