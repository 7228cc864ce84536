//! API and agent tokens, by the hash of their secret.

use chrono::{DateTime, Utc};
use kiln_store::sql;
use kiln_store::values::{ms, token_kind_str};
use kiln_store::{Result, StoreError, TokenId, TokenInfo, TokenKind, TokenStore};

use crate::PostgresStore;

impl TokenStore for PostgresStore {
    async fn insert_token(
        &self,
        hash: &str,
        kind: TokenKind,
        name: &str,
        is_admin: bool,
        now: DateTime<Utc>,
    ) -> Result<TokenId> {
        let id: Option<TokenId> = sqlx::query_scalar(
            "INSERT INTO tokens (hash, kind, name, is_admin, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING RETURNING id",
        )
        .bind(hash)
        .bind(token_kind_str(kind))
        .bind(name)
        .bind(is_admin)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        id.ok_or_else(|| StoreError::Conflict("this token already exists".into()))
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenInfo>> {
        let row = sqlx::query("SELECT id, kind, name, is_admin FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sql::token).transpose()
    }

    async fn has_admin_token(&self) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens WHERE is_admin)")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
