//! The audit log: appended to, listed newest first.

use chrono::{DateTime, Utc};
use kiln_store::sql::{self, AUDIT_COLUMNS};
use kiln_store::values::ms;
use kiln_store::{AuditEntry, AuditFilter, AuditId, AuditStore, NewAuditEntry, Result};
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, QueryBuilder};

use crate::PostgresStore;

impl AuditStore for PostgresStore {
    async fn append_audit(&self, entry: &NewAuditEntry, now: DateTime<Utc>) -> Result<AuditId> {
        let mut conn = self.pool.acquire().await?;
        insert_audit(&mut conn, entry, now).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut query =
            QueryBuilder::<Postgres>::new(format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE 1 = 1"));
        if let Some(actor) = &filter.actor {
            query.push(" AND actor = ").push_bind(actor.clone());
        }
        if let Some(action) = &filter.action {
            query.push(" AND action = ").push_bind(action.clone());
        }
        if let Some(prefix) = &filter.object_prefix {
            // substr, not LIKE: no wildcard in a name to escape.
            query
                .push(" AND substr(object, 1, length(")
                .push_bind(prefix.clone())
                .push(")) = ")
                .push_bind(prefix.clone());
        }
        if let Some(before) = filter.before {
            query.push(" AND id < ").push_bind(before);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(filter.page_size());
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(sql::audit_entry).collect()
    }
}

/// Appends `entry` in the caller's transaction (a change and its entry
/// commit together).
pub(crate) async fn insert_audit(
    conn: &mut PgConnection,
    entry: &NewAuditEntry,
    now: DateTime<Utc>,
) -> Result<AuditId> {
    Ok(sqlx::query_scalar(
        "INSERT INTO audit (at, actor, action, object, detail, source) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(ms(now))
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.object)
    .bind(&entry.detail)
    .bind(&entry.source)
    .fetch_one(&mut *conn)
    .await?)
}
