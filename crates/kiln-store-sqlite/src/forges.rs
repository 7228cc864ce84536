//! Forges and the triggers their webhooks queued.

use chrono::{DateTime, Utc};
use kiln_store::sql::{self, FORGE_COLUMNS, QUEUED_TRIGGER_COLUMNS};
use kiln_store::values::ms;
use kiln_store::{
    Forge, ForgeStore, JobId, NewForge, NewQueuedTrigger, QueuedTrigger, QueuedTriggerId, Result,
    RunId, StoreError, Upserted,
};
use sqlx::sqlite::SqliteConnection;

use crate::SqliteStore;

impl ForgeStore for SqliteStore {
    async fn put_forge(
        &self,
        forge: &NewForge<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Forge, Upserted)> {
        let mut tx = self.write().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO forges (name, kind, api_url, token, webhook_secret, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING \
             RETURNING {FORGE_COLUMNS}"
        ))
        .bind(forge.name)
        .bind(forge.kind)
        .bind(forge.api_url)
        .bind(forge.token)
        .bind(forge.webhook_secret)
        .bind(ms(now))
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = inserted {
            let created = sql::forge(&row)?;
            tx.commit().await?;
            return Ok((created, Upserted::Created));
        }
        let row = sqlx::query(&format!(
            "SELECT {FORGE_COLUMNS} FROM forges WHERE name = ?"
        ))
        .bind(forge.name)
        .fetch_one(&mut *tx)
        .await?;
        let existing = sql::forge(&row)?;
        if kiln_store::forges::unchanged(&existing, forge) {
            tx.commit().await?;
            return Ok((existing, Upserted::Unchanged));
        }
        let row = sqlx::query(&format!(
            "UPDATE forges SET kind = ?, api_url = ?, token = COALESCE(?, token), \
             webhook_secret = COALESCE(?, webhook_secret), updated_at = ? WHERE name = ? \
             RETURNING {FORGE_COLUMNS}"
        ))
        .bind(forge.kind)
        .bind(forge.api_url)
        .bind(forge.token)
        .bind(forge.webhook_secret)
        .bind(ms(now))
        .bind(forge.name)
        .fetch_one(&mut *tx)
        .await?;
        let updated = sql::forge(&row)?;
        tx.commit().await?;
        Ok((updated, Upserted::Updated))
    }

    async fn get_forge(&self, name: &str) -> Result<Option<Forge>> {
        let row = sqlx::query(&format!(
            "SELECT {FORGE_COLUMNS} FROM forges WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(sql::forge).transpose()
    }

    async fn list_forges(&self) -> Result<Vec<Forge>> {
        let rows = sqlx::query(&format!("SELECT {FORGE_COLUMNS} FROM forges ORDER BY name"))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(sql::forge).collect()
    }

    async fn delete_forge(&self, name: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let users: Vec<String> =
            sqlx::query_scalar("SELECT name FROM jobs WHERE forge = ? ORDER BY name")
                .bind(name)
                .fetch_all(&mut *tx)
                .await?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(kiln_store::forges::in_use(
                name, &users,
            )));
        }
        let deleted = sqlx::query("DELETE FROM forges WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn queue_triggers(
        &self,
        triggers: &[NewQueuedTrigger],
        now: DateTime<Utc>,
    ) -> Result<Vec<JobId>> {
        let mut tx = self.write().await?;
        let mut queued = Vec::new();
        for trigger in triggers {
            let job: Option<JobId> = sqlx::query_scalar(
                "INSERT INTO queued_triggers (job_id, delivery, payload, received_at) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (job_id, delivery) DO NOTHING RETURNING job_id",
            )
            .bind(trigger.job_id)
            .bind(&trigger.delivery)
            .bind(&trigger.trigger)
            .bind(ms(now))
            .fetch_optional(&mut *tx)
            .await?;
            queued.extend(job);
        }
        tx.commit().await?;
        Ok(queued)
    }

    async fn pending_triggers(&self, limit: i64) -> Result<Vec<QueuedTrigger>> {
        let rows = sqlx::query(&format!(
            "SELECT {QUEUED_TRIGGER_COLUMNS} FROM queued_triggers WHERE done_at IS NULL \
             ORDER BY id LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(sql::queued_trigger).collect()
    }

    async fn discard_trigger(&self, id: QueuedTriggerId, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = mark_trigger_done(&mut tx, id, None, now).await?;
        tx.commit().await?;
        Ok(done)
    }
}

/// Marks the trigger done (with the run made for it); false when it was
/// done already.
pub(crate) async fn mark_trigger_done(
    conn: &mut SqliteConnection,
    id: QueuedTriggerId,
    run: Option<RunId>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let changed = sqlx::query(
        "UPDATE queued_triggers SET done_at = ?, run_id = ? WHERE id = ? AND done_at IS NULL",
    )
    .bind(ms(now))
    .bind(run)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(changed > 0)
}
