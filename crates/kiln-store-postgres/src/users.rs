//! Users and their passwords' hashes; the last enabled admin stays.

use chrono::{DateTime, Utc};
use kiln_store::identity::check_last_admin;
use kiln_store::sql::{self, USER_COLUMNS};
use kiln_store::values::ms;
use kiln_store::{NewUser, Result, StoreError, User, UserChange, UserId, UserStore};
use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::PostgresStore;

impl UserStore for PostgresStore {
    async fn create_user(&self, user: &NewUser, now: DateTime<Utc>) -> Result<User> {
        let row = sqlx::query(&format!(
            "INSERT INTO users (name, role, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING {USER_COLUMNS}"
        ))
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(ms(now))
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("user `{}` already exists", user.name)))?;
        let created = sql::user(&row)?;
        Ok(created)
    }

    async fn get_user(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sql::user).transpose()
    }

    async fn user_credentials(&self, name: &str) -> Result<Option<(User, Option<String>)>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((sql::user(&row)?, row.try_get("password_hash")?)))
            .transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .fetch_all(&self.pool)
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
        let admins = lock_active_admins(&mut tx).await?;
        let checked = match user_by_name(&mut tx, name).await? {
            None => Err(StoreError::NotFound(format!("user `{name}`"))),
            Some(user) => {
                let after = change.applied_to(&user);
                check_last_admin(&user, Some(after), &admins).map(|()| (user, after))
            }
        };
        let (user, (role, disabled)) = match checked {
            Ok(checked) => checked,
            Err(refused) => {
                tx.rollback().await?;
                return Err(refused);
            }
        };
        let row = sqlx::query(&format!(
            "UPDATE users SET role = $1, disabled = $2, \
             password_hash = CASE WHEN $3 THEN $4 ELSE password_hash END, updated_at = $5 \
             WHERE id = $6 RETURNING {USER_COLUMNS}"
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
        let admins = lock_active_admins(&mut tx).await?;
        let Some(user) = user_by_name(&mut tx, name).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        if let Err(refused) = check_last_admin(&user, None, &admins) {
            tx.rollback().await?;
            return Err(refused);
        }
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The user, locked until the transaction ends.
async fn user_by_name(conn: &mut PgConnection, name: &str) -> Result<Option<User>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE name = $1 FOR UPDATE"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(sql::user).transpose()
}

/// Every enabled admin, locked in id order until the transaction ends.
/// Every change that may remove an admin takes these locks first (then
/// its user's row), so two servers demoting the last two admins at once
/// queue instead of each seeing the other still there: the second one
/// re-reads the row the first changed (READ COMMITTED re-checks a locked
/// row's new version against the WHERE) and finds it no longer an admin.
async fn lock_active_admins(conn: &mut PgConnection) -> Result<Vec<UserId>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM users WHERE role = 'admin' AND NOT disabled ORDER BY id FOR UPDATE",
    )
    .fetch_all(&mut *conn)
    .await?)
}
