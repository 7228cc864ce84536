//! Failed sign-ins per name, to slow down guessing.

use chrono::{DateTime, Utc};
use kiln_store::values::ms;
use kiln_store::{Result, SignInStore};

use crate::SqliteStore;

impl SignInStore for SqliteStore {
    async fn record_failed_sign_in(&self, name: &str, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO failed_sign_ins (name, at) VALUES (?, ?)")
            .bind(name)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn failed_sign_ins(&self, name: &str, since: DateTime<Utc>) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM failed_sign_ins WHERE name = ? AND at >= ?")
                .bind(name)
                .bind(ms(since))
                .fetch_one(&self.reader)
                .await?,
        )
    }

    async fn clear_failed_sign_ins(&self, name: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM failed_sign_ins WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
