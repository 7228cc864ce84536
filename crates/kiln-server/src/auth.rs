//! Who is calling, as extractors: a bearer token, or a web session's
//! cookie. Both are looked up in the database on every request — no cache
//! — so a revoked or expired token, an ended session or a disabled user is
//! refused at the next request on every server sharing the database.
//! Tokens and session cookies are found by their SHA-256 hash; the
//! database never holds one.
//!
//! - [`Caller`]: anyone; `None` when no credential was sent (public jobs).
//! - [`SignedIn`]: a user.
//! - [`Admin`]: a user whose role is `admin`.
//!
//! A credential that is sent must be good: a bad token is `401` even on a
//! route anyone may call, so a script learns at once that its token died.
//! A stale session cookie is ignored instead (browsers keep cookies), and
//! a state-changing request carrying one must come from this site's pages.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use chrono::{TimeDelta, Utc};
use kiln_store::{Database, Refusal, TokenId, TokenKind, UserId, UserRole};

use crate::error::ApiError;
use crate::state::AppState;

/// The cookie that carries a web session.
pub const SESSION_COOKIE: &str = "kiln_session";

/// How long a session lasts after sign-in.
pub const SESSION_LIFETIME: TimeDelta = TimeDelta::days(7);

/// A signed-in caller.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None` only for an admin token made before users existed, which the
    /// first start after the upgrade gives to `admin`.
    pub user: Option<UserId>,
    /// The user's name (the audit log's actor).
    pub name: String,
    pub admin: bool,
    pub via: Credential,
    /// The client's address, for the audit log.
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Token(TokenId),
    Session,
}

/// Anyone: `Caller(None)` when the request carries no credential.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Identity>);

/// A user, by token or session.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Identity);

/// A user whose role is `admin`.
#[derive(Debug, Clone)]
pub struct Admin(pub Identity);

impl Caller {
    pub fn identity(&self) -> Option<&Identity> {
        self.0.as_ref()
    }
}

/// The client's address: the TCP peer's.
pub fn source_of(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

impl<D: Database> FromRequestParts<AppState<D>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<D>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = bearer(value)?;
            return by_token(state, token, source_of(parts))
                .await
                .map(Some)
                .map(Caller);
        }
        match session_cookie(&parts.headers) {
            Some(cookie) => by_session(state, parts, cookie).await.map(Caller),
            None => Ok(Caller(None)),
        }
    }
}

impl<D: Database> FromRequestParts<AppState<D>> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<D>,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller(Some(identity)) => Ok(SignedIn(identity)),
            Caller(None) => Err(ApiError::unauthorized(
                "this route needs `Authorization: Bearer <token>` or a signed-in session",
            )),
        }
    }
}

impl<D: Database> FromRequestParts<AppState<D>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<D>,
    ) -> Result<Self, Self::Rejection> {
        let SignedIn(identity) = SignedIn::from_request_parts(parts, state).await?;
        if !identity.admin {
            return Err(ApiError::forbidden("this route is for admins"));
        }
        Ok(Admin(identity))
    }
}

fn bearer(value: &axum::http::HeaderValue) -> Result<&str, ApiError> {
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))
}

async fn by_token<D: Database>(
    state: &AppState<D>,
    token: &str,
    source: Option<String>,
) -> Result<Identity, ApiError> {
    let now = Utc::now();
    let found = state
        .db
        .lookup_token(&kiln_crypto::hash_token(token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    if found.token.kind != TokenKind::User {
        return Err(ApiError::forbidden("agent tokens cannot call the user API"));
    }
    if let Some(refusal) = found.refusal(now) {
        return Err(ApiError::unauthorized(match refusal {
            Refusal::Revoked => "this token was revoked",
            Refusal::Expired => "this token has expired; make a new one with `kiln token create`",
            Refusal::UserDisabled => "this token's user is disabled",
        }));
    }
    if found.needs_touch(now)
        && let Err(e) = state.db.touch_token(found.token.id, now).await
    {
        tracing::warn!("cannot note when token {} was used: {e}", found.token.id);
    }
    let via = Credential::Token(found.token.id);
    match found.user {
        Some(user) => Ok(Identity {
            user: Some(user.id),
            admin: user.role == UserRole::Admin,
            name: user.name,
            via,
            source,
        }),
        None if found.token.is_admin => Ok(Identity {
            user: None,
            name: found.token.name,
            admin: true,
            via,
            source,
        }),
        None => Err(ApiError::unauthorized(
            "this token was made before users existed and belongs to no one; \
             ask an admin for a new one (`kiln token create --user NAME`)",
        )),
    }
}

/// The credential a request carried, kept by a response that lasts (the
/// event stream) to check it again: a token revoked or a session ended
/// while it is open ends it within moments, as a new request would be
/// refused.
#[derive(Clone)]
pub enum Presented {
    Nobody,
    Token(String),
    Session(String),
}

impl Presented {
    /// What [`Caller`] read from these headers (a token before a cookie).
    pub fn of(headers: &HeaderMap) -> Presented {
        if let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v).ok())
        {
            return Presented::Token(token.to_string());
        }
        match session_cookie(headers) {
            Some(cookie) => Presented::Session(cookie.to_string()),
            None => Presented::Nobody,
        }
    }

    /// Who the credential stands for now; `None` for nobody, or a session
    /// that ended; an error for a token that is no longer good.
    pub async fn check<D: Database>(
        &self,
        state: &AppState<D>,
        source: Option<String>,
    ) -> Result<Option<Identity>, ApiError> {
        match self {
            Presented::Nobody => Ok(None),
            Presented::Token(token) => by_token(state, token, source).await.map(Some),
            Presented::Session(cookie) => {
                let hash = kiln_crypto::hash_token(cookie);
                let session = state.db.find_session(&hash, Utc::now()).await?;
                Ok(session
                    .filter(|session| !session.user.disabled)
                    .map(|session| Identity {
                        user: Some(session.user.id),
                        admin: session.user.role == UserRole::Admin,
                        name: session.user.name,
                        via: Credential::Session,
                        source,
                    }))
            }
        }
    }
}

/// Hashes a password off the async threads: argon2id takes tens of
/// milliseconds of CPU on purpose.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || kiln_crypto::hash_password(&password))
        .await
        .map_err(ApiError::internal)
}

/// Checks a password against a stored hash off the async threads. Without
/// a hash (an unknown user, or one with no password) it still spends the
/// time of a check, so the answer's timing does not tell them apart.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || match stored {
        Some(stored) => kiln_crypto::verify_password(&password, &stored),
        None => {
            static DECOY: std::sync::LazyLock<String> =
                std::sync::LazyLock::new(|| kiln_crypto::hash_password("decoy password"));
            kiln_crypto::verify_password(&password, &DECOY);
            false
        }
    })
    .await
    .map_err(ApiError::internal)
}

/// The value of the session cookie, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

async fn by_session<D: Database>(
    state: &AppState<D>,
    parts: &Parts,
    cookie: &str,
) -> Result<Option<Identity>, ApiError> {
    let now = Utc::now();
    let hash = kiln_crypto::hash_token(cookie);
    let Some(session) = state.db.find_session(&hash, now).await? else {
        return Ok(None);
    };
    if session.user.disabled {
        return Ok(None);
    }
    check_same_origin(&parts.method, &parts.headers)?;
    if session.last_seen_at <= now - kiln_store::identity::TOUCH_INTERVAL
        && let Err(e) = state.db.touch_session(&hash, now).await
    {
        tracing::warn!("cannot note when a session was last seen: {e}");
    }
    Ok(Some(Identity {
        user: Some(session.user.id),
        admin: session.user.role == UserRole::Admin,
        name: session.user.name,
        via: Credential::Session,
        source: source_of(parts),
    }))
}

/// Refuses a state-changing request that a browser sent from another site
/// (cross-site request forgery): its `Origin` must be this server's host,
/// or, without one, `Sec-Fetch-Site` must say `same-origin`.
pub fn check_same_origin(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let same = match text(header::ORIGIN) {
        Some(origin) => {
            let host = text(header::HOST);
            let origin_host = origin.split_once("://").map(|(_, rest)| rest);
            matches!((origin_host, host), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
        }
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin"),
    };
    if same {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "a request that changes something, sent with a session cookie, must come from this \
             server's own pages (its Origin is another site's, or missing)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn same_origin_is_required_for_changes_only() {
        let host = ("host", "ci.example:8080");
        for (method, pairs, allowed) in [
            (Method::GET, vec![("origin", "https://evil.example")], true),
            (
                Method::POST,
                vec![host, ("origin", "http://ci.example:8080")],
                true,
            ),
            (
                Method::POST,
                vec![host, ("origin", "HTTPS://CI.example:8080")],
                true,
            ),
            (
                Method::POST,
                vec![host, ("origin", "https://evil.example")],
                false,
            ),
            (
                Method::POST,
                vec![host, ("origin", "https://ci.example")],
                false,
            ),
            (Method::DELETE, vec![host, ("origin", "null")], false),
            (Method::PUT, vec![host], false),
            (
                Method::PUT,
                vec![host, ("sec-fetch-site", "same-origin")],
                true,
            ),
            (
                Method::PUT,
                vec![host, ("sec-fetch-site", "cross-site")],
                false,
            ),
            (
                Method::POST,
                vec![("origin", "http://ci.example:8080")],
                false,
            ),
        ] {
            assert_eq!(
                check_same_origin(&method, &headers(&pairs)).is_ok(),
                allowed,
                "{method} {pairs:?}"
            );
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=1; kiln_session=abc ; b=2")]);
        assert_eq!(session_cookie(&map), Some("abc"));
        let map = headers(&[("cookie", "a=1"), ("cookie", "kiln_session=xyz")]);
        assert_eq!(session_cookie(&map), Some("xyz"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "kiln_session=")])),
            None
        );
        assert_eq!(
            session_cookie(&headers(&[("cookie", "kiln_sessionx=1")])),
            None
        );
    }
}
