//! Bearer-token authentication as extractors: a handler that takes
//! [`User`] or [`Admin`] cannot run without a valid token of that kind.
//! Tokens are looked up by their SHA-256 hash; the database never holds one.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use kiln_store::{Database, TokenInfo, TokenKind};

use crate::error::ApiError;
use crate::state::AppState;

/// A caller with a user token.
pub struct User(pub TokenInfo);

/// A caller with an admin user token.
pub struct Admin(pub TokenInfo);

async fn token_of<D: Database>(parts: &Parts, state: &AppState<D>) -> Result<TokenInfo, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("this route needs `Authorization: Bearer <token>`")
    })?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
        })?;
    state
        .db
        .find_token(&kiln_crypto::hash_token(token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
}

impl<D: Database> FromRequestParts<AppState<D>> for User {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<D>,
    ) -> Result<Self, Self::Rejection> {
        let token = token_of(parts, state).await?;
        if token.kind != TokenKind::User {
            return Err(ApiError::forbidden("agent tokens cannot call the user API"));
        }
        Ok(User(token))
    }
}

impl<D: Database> FromRequestParts<AppState<D>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<D>,
    ) -> Result<Self, Self::Rejection> {
        let User(token) = User::from_request_parts(parts, state).await?;
        if !token.is_admin {
            return Err(ApiError::forbidden("this route needs an admin token"));
        }
        Ok(Admin(token))
    }
}
