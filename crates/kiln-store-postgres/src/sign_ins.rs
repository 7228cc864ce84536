//! Failed sign-ins per name, to slow down guessing.

use chrono::{DateTime, Utc};
use kiln_store::values::ms;
use kiln_store::{Result, SignInStore};

use crate::PostgresStore;

impl SignInStore for PostgresStore {
    async fn record_failed_sign_in(&self, name: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("INSERT INTO failed_sign_ins (name, at) VALUES ($1, $2)")
            .bind(name)
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn failed_sign_ins(&self, name: &str, since: DateTime<Utc>) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM failed_sign_ins WHERE name = $1 AND at >= $2")
                .bind(name)
                .bind(ms(since))
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn clear_failed_sign_ins(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM failed_sign_ins WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
