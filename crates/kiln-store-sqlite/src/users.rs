//! Users and their passwords' hashes; the last enabled admin stays.

use chrono::{DateTime, Utc};
use kiln_store::identity::check_last_admin;
use kiln_store::sql::{self, USER_COLUMNS};
use kiln_store::values::ms;
use kiln_store::{NewUser, Result, StoreError, User, UserChange, UserId, UserStore};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use crate::SqliteStore;

impl UserStore for SqliteStore {
    async fn create_user(&self, user: &NewUser, now: DateTime<Utc>) -> Result<User> {
        let mut tx = self.write().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO users (name, role, password_hash, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING {USER_COLUMNS}"
        ))
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(ms(now))
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("user `{}` already exists", user.name)))?;
        let created = sql::user(&row)?;
        tx.commit().await?;
        Ok(created)
    }

    async fn get_user(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(sql::user).transpose()
    }

    async fn user_credentials(&self, name: &str) -> Result<Option<(User, Option<String>)>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| Ok((sql::user(&row)?, row.try_get("password_hash")?)))
            .transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(sql::user).collect()
    }

    async fn update_user(
        &self,
        name: &str,
        change: &UserChange,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let mut tx = self.write().await?;
        let user = user_by_name(&mut tx, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user `{name}`")))?;
        let (role, disabled) = change.applied_to(&user);
        check_last_admin(
            &user,
            Some((role, disabled)),
            &active_admins(&mut tx).await?,
        )?;
        let row = sqlx::query(&format!(
            "UPDATE users SET role = ?, disabled = ?, \
             password_hash = CASE WHEN ? THEN ? ELSE password_hash END, updated_at = ? \
             WHERE id = ? RETURNING {USER_COLUMNS}"
        ))
        .bind(role.as_str())
        .bind(disabled)
        .bind(change.password_hash.is_some())
        .bind(change.password_hash.clone().flatten())
        .bind(ms(now))
        .bind(user.id)
        .fetch_one(&mut *tx)
        .await?;
        let updated = sql::user(&row)?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let Some(user) = user_by_name(&mut tx, name).await? else {
            return Ok(false);
        };
        check_last_admin(&user, None, &active_admins(&mut tx).await?)?;
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn user_by_name(conn: &mut SqliteConnection, name: &str) -> Result<Option<User>> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?"))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(sql::user).transpose()
}

/// Every enabled admin; the write transaction keeps the answer true until
/// it commits (SQLite has one writer).
async fn active_admins(conn: &mut SqliteConnection) -> Result<Vec<UserId>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM users WHERE role = 'admin' AND NOT disabled")
            .fetch_all(&mut *conn)
            .await?,
    )
}
