//! API and agent tokens, by the hash of their secret; users' tokens
//! expire, are revoked, and note when they were last used.

use chrono::{DateTime, Utc};
use kiln_store::identity::TOUCH_INTERVAL;
use kiln_store::sql::{
    self, TOKEN_COLUMNS, TOKEN_LOOKUP_SELECT, TOKEN_OWNER_SELECT, USER_TOKEN_SELECT, or_missing,
};
use kiln_store::values::{ms, token_kind_str};
use kiln_store::{
    NewAgentToken, NewUserToken, Result, StoreError, TokenId, TokenInfo, TokenKind, TokenLookup,
    TokenStore, User, UserId, UserToken,
};

use crate::SqliteStore;

impl TokenStore for SqliteStore {
    async fn insert_token(
        &self,
        hash: &str,
        kind: TokenKind,
        name: &str,
        is_admin: bool,
        now: DateTime<Utc>,
    ) -> Result<TokenId> {
        let mut tx = self.write().await?;
        let id: Option<TokenId> = sqlx::query_scalar(
            "INSERT INTO tokens (hash, kind, name, is_admin, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (hash) DO NOTHING RETURNING id",
        )
        .bind(hash)
        .bind(token_kind_str(kind))
        .bind(name)
        .bind(is_admin)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| StoreError::Conflict("this token already exists".into()))?;
        tx.commit().await?;
        Ok(id)
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenInfo>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(sql::token).transpose()
    }

    async fn has_admin_token(&self) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens WHERE is_admin)")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    async fn insert_user_token(
        &self,
        token: &NewUserToken<'_>,
        now: DateTime<Utc>,
    ) -> Result<TokenId> {
        let mut tx = self.write().await?;
        let result = sqlx::query_scalar(
            "INSERT INTO tokens (hash, kind, name, is_admin, created_at, user_id, expires_at) \
             VALUES (?, 'user', ?, 0, ?, ?, ?) ON CONFLICT (hash) DO NOTHING RETURNING id",
        )
        .bind(token.hash)
        .bind(token.name)
        .bind(ms(now))
        .bind(token.user)
        .bind(token.expires_at.map(ms))
        .fetch_optional(&mut *tx)
        .await;
        let id: TokenId = or_missing(result, || format!("user {}", token.user))?
            .ok_or_else(|| StoreError::Conflict("this token already exists".into()))?;
        tx.commit().await?;
        Ok(id)
    }

    async fn list_user_tokens(&self, user: UserId) -> Result<Vec<UserToken>> {
        let rows = sqlx::query(&format!(
            "{USER_TOKEN_SELECT} WHERE t.user_id = ? ORDER BY t.id"
        ))
        .bind(user)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(sql::user_token).collect()
    }

    async fn revoke_token(&self, id: TokenId, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.write().await?;
        let revoked =
            sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ms(now))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(revoked > 0)
    }

    async fn insert_agent_token(
        &self,
        token: &NewAgentToken<'_>,
        now: DateTime<Utc>,
    ) -> Result<TokenId> {
        let labels = token
            .labels
            .map(|labels| sql::json("labels", &labels))
            .transpose()?;
        let mut tx = self.write().await?;
        let taken: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE kind = 'agent' AND name = ? \
             AND revoked_at IS NULL)",
        )
        .bind(token.name)
        .fetch_one(&mut *tx)
        .await?;
        if taken {
            return Err(StoreError::Conflict(format!(
                "agent `{}` has a token already",
                token.name
            )));
        }
        let id: Option<TokenId> = sqlx::query_scalar(
            "INSERT INTO tokens (hash, kind, name, is_admin, created_at, agent_labels, \
             max_capacity) VALUES (?, 'agent', ?, 0, ?, ?, ?) \
             ON CONFLICT (hash) DO NOTHING RETURNING id",
        )
        .bind(token.hash)
        .bind(token.name)
        .bind(ms(now))
        .bind(labels)
        .bind(token.max_capacity)
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| StoreError::Conflict("this token already exists".into()))?;
        tx.commit().await?;
        Ok(id)
    }

    async fn revoke_agent_tokens(&self, name: &str, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.write().await?;
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked_at = ? \
             WHERE kind = 'agent' AND name = ? AND revoked_at IS NULL",
        )
        .bind(ms(now))
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(revoked)
    }

    async fn token_owner(&self, id: TokenId) -> Result<Option<User>> {
        let row = sqlx::query(&format!("{TOKEN_OWNER_SELECT} WHERE t.id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(sql::owner).transpose()
    }

    async fn adopt_admin_tokens(&self, user: UserId) -> Result<u64> {
        let mut tx = self.write().await?;
        let result = sqlx::query(
            "UPDATE tokens SET user_id = ? WHERE is_admin AND kind = 'user' AND user_id IS NULL",
        )
        .bind(user)
        .execute(&mut *tx)
        .await;
        let adopted = or_missing(result, || format!("user {user}"))?.rows_affected();
        tx.commit().await?;
        Ok(adopted)
    }

    async fn lookup_token(&self, hash: &str) -> Result<Option<TokenLookup>> {
        let row = sqlx::query(&format!("{TOKEN_LOOKUP_SELECT} WHERE t.hash = ?"))
            .bind(hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(sql::token_lookup).transpose()
    }

    async fn touch_token(&self, id: TokenId, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.write().await?;
        let touched = sqlx::query(
            "UPDATE tokens SET last_used_at = ? \
             WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
        )
        .bind(ms(now))
        .bind(id)
        .bind(ms(now - TOUCH_INTERVAL))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(touched > 0)
    }
}
