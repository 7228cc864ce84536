//! Signing in to the web UI and out: `POST /login` checks a name and
//! password and sets the session cookie; `POST /logout` ends the session.
//! Sessions live in the database, so every server accepts them.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use chrono::{TimeDelta, Utc};
use kiln_store::Database;

use super::bodies::SignIn;
use super::extract::ApiJson;
use crate::audit;
use crate::auth::{SESSION_COOKIE, SESSION_LIFETIME, session_cookie, source_of, verify_password};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views;

/// Failed sign-ins for one name within [`THROTTLE_WINDOW`] after which
/// that name may try only once per [`THROTTLE_PAUSE`].
const THROTTLE_AFTER: i64 = 5;
const THROTTLE_WINDOW: TimeDelta = TimeDelta::minutes(15);
const THROTTLE_PAUSE: TimeDelta = TimeDelta::seconds(30);

/// A sign-in, as JSON or as an HTML form posts it.
pub struct SignInBody(SignIn);

impl<S: Send + Sync> FromRequest<S> for SignInBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            let Form(body) = Form::<SignIn>::from_request(req, state)
                .await
                .map_err(|e| ApiError::unprocessable(format!("the form is not valid: {e}")))?;
            Ok(SignInBody(body))
        } else {
            let ApiJson(body) = ApiJson::<SignIn>::from_request(req, state).await?;
            Ok(SignInBody(body))
        }
    }
}

/// A sign-in posted from another site's page is refused: it would sign the
/// browser in as someone else (login forgery). Clients that send no
/// `Origin` (scripts) are not browsers and pass.
pub(crate) fn refuse_foreign_origin(headers: &HeaderMap) -> ApiResult<()> {
    if headers.contains_key(header::ORIGIN) {
        crate::auth::check_same_origin(&axum::http::Method::POST, headers)?;
    }
    Ok(())
}

/// `Secure` when the client reached the server over TLS: the server's own
/// (`tls`), or a TLS-ending proxy's, as it says.
fn cookie(value: &str, max_age: i64, headers: &HeaderMap, tls: bool) -> HeaderValue {
    let secure = tls
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let text = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[utoipa::path(operation_id = "sign_in", post, path = "/login", tag = "session",
    request_body(content = SignIn, description = "JSON, or the form fields `username` and `password`", content_type = "application/json"),
    responses((status = 200, description = "Signed in: the session cookie is set (HttpOnly, SameSite=Lax)", body = kiln_api::User,
            headers(("Set-Cookie" = String, description = "`kiln_session=…`"))),
        (status = 401, description = "Wrong name or password, or a disabled user", body = kiln_api::Problem),
        (status = 403, description = "Posted from another site's page", body = kiln_api::Problem),
        (status = 429, description = "Too many failed sign-ins for this name: try again after `Retry-After` seconds", body = kiln_api::Problem)))]
pub async fn login<D: Database>(
    State(state): State<AppState<D>>,
    request: Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    // A browser's form gets a page back (crate::ui), a script JSON.
    if crate::ui::session::is_browser_form(&parts.headers) {
        return Ok(crate::ui::session::sign_in_form(&state, parts, body).await);
    }
    refuse_foreign_origin(&parts.headers)?;
    let SignInBody(body) =
        SignInBody::from_request(Request::from_parts(parts.clone(), body), &()).await?;
    let (user, cookie) = sign_in(&state, &parts, body).await?;
    let mut response = Json(views::user(&user)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Checks a name and password (slowed down after repeated failures) and
/// starts a session: the user, and the `Set-Cookie` value of the session.
pub(crate) async fn sign_in<D: Database>(
    state: &AppState<D>,
    parts: &axum::http::request::Parts,
    SignIn { username, password }: SignIn,
) -> ApiResult<(kiln_store::User, HeaderValue)> {
    let source = source_of(parts);
    // What the log keeps of a name that may be anything a client sent.
    let username: String = username.chars().take(64).collect();
    let object = format!("user/{username}");
    let now = Utc::now();
    let recent = state
        .db
        .failed_sign_ins(&username, now - THROTTLE_WINDOW)
        .await?;
    if recent >= THROTTLE_AFTER
        && state
            .db
            .failed_sign_ins(&username, now - THROTTLE_PAUSE)
            .await?
            > 0
    {
        audit::append(
            state,
            &username,
            source,
            "user.sign_in_throttled",
            object,
            None,
        )
        .await;
        let seconds = THROTTLE_PAUSE.num_seconds();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed sign-ins for `{username}`: try again in {seconds} seconds"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(seconds)));
    }
    let found = state.db.user_credentials(&username).await?;
    let (user, stored) = match found {
        Some((user, stored)) => (Some(user), stored),
        None => (None, None),
    };
    let valid = verify_password(password, stored).await?;
    let user = match user {
        Some(user) if valid && !user.disabled => user,
        _ => {
            state.db.record_failed_sign_in(&username, now).await?;
            audit::append(
                state,
                &username,
                source,
                "user.sign_in_failed",
                object,
                None,
            )
            .await;
            return Err(ApiError::unauthorized("wrong user name or password"));
        }
    };
    state.db.clear_failed_sign_ins(&username).await?;
    // A new session on every sign-in, and the old one ended: a cookie
    // planted before sign-in is worth nothing after it.
    if let Some(old) = session_cookie(&parts.headers) {
        state
            .db
            .delete_session(&kiln_crypto::hash_token(old))
            .await?;
    }
    let value = kiln_crypto::new_token("kiln_s_");
    let hash = kiln_crypto::hash_token(&value);
    state
        .db
        .create_session(&hash, user.id, now + SESSION_LIFETIME, now)
        .await?;
    audit::append(state, &user.name, source, "user.sign_in", object, None).await;
    let cookie = cookie(
        &value,
        SESSION_LIFETIME.num_seconds(),
        &parts.headers,
        state.tls,
    );
    Ok((user, cookie))
}

#[utoipa::path(operation_id = "sign_out", post, path = "/logout", tag = "session",
    responses((status = 204, description = "Signed out: the session is ended and its cookie cleared"),
        (status = 403, description = "Posted from another site's page", body = kiln_api::Problem)))]
pub async fn logout<D: Database>(
    State(state): State<AppState<D>>,
    request: Request,
) -> ApiResult<Response> {
    let (parts, _) = request.into_parts();
    // The sign-out button of a page goes back to the sign-in form.
    let mut response = if crate::ui::session::is_browser_form(&parts.headers) {
        axum::response::Redirect::to("/login").into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    if let Some(value) = session_cookie(&parts.headers) {
        crate::auth::check_same_origin(&parts.method, &parts.headers)?;
        let hash = kiln_crypto::hash_token(value);
        if let Some(session) = state.db.find_session(&hash, Utc::now()).await? {
            state.db.delete_session(&hash).await?;
            let object = format!("user/{}", session.user.name);
            let source = source_of(&parts);
            audit::append(
                &state,
                &session.user.name,
                source,
                "user.sign_out",
                object,
                None,
            )
            .await;
        }
        response
            .headers_mut()
            .insert(header::SET_COOKIE, cookie("", 0, &parts.headers, state.tls));
    }
    Ok(response)
}
