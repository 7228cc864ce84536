//! Signing in from the browser: the form (`GET /login`), and what a form
//! post to `POST /login` is answered with (a redirect, or the form again
//! with the error). `crate::api::session` checks the password and makes
//! the session for both the API and the form.

use axum::Form;
use axum::extract::{FromRequest, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use kiln_store::Database;
use kiln_ui::Viewer;
use serde::Deserialize;

use super::{Visitor, html_response, problem_page};
use crate::api::bodies::SignIn;
use crate::error::ApiError;
use crate::state::AppState;

/// `?next=`: where to go once signed in.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NextQuery {
    pub next: String,
}

/// `next` if it is a path on this server, else `/`: a sign-in link must
/// not send anyone to another site (`//evil.example`, `/\evil.example`).
pub fn safe_next(next: &str) -> String {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\');
    if local { next.to_string() } else { "/".into() }
}

/// Whether a request is a browser's form post (which wants a page back)
/// rather than a script's (which wants JSON).
pub fn is_browser_form(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    text(header::CONTENT_TYPE).starts_with("application/x-www-form-urlencoded")
        && text(header::ACCEPT).contains("text/html")
}

/// `GET /login`: the form, or straight on for a signed-in visitor.
/// The one page in the API's document: `/login` serves both, and a client
/// asking which methods it takes should find them all there.
#[utoipa::path(operation_id = "sign_in_page", get, path = "/login", tag = "session",
    params(("next" = Option<String>, Query, description = "Where to go once signed in: a path on this server (anything else leads to `/`)")),
    responses((status = 200, description = "The sign-in form, an HTML page", content_type = "text/html", body = String),
        (status = 303, description = "Already signed in: on to `next`", headers(("Location" = String)))))]
pub async fn login_page(
    visitor: Visitor,
    query: Result<Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let next = safe_next(&query.map(|Query(q)| q.next).unwrap_or_default());
    if visitor.identity.is_some() {
        return Redirect::to(&next).into_response();
    }
    visitor.page(
        StatusCode::OK,
        kiln_ui::pages::login(&visitor.viewer, &next, None, ""),
    )
}

/// `POST /login` from the form: signed in, on to `next`; refused, the
/// form again with why (and the name typed, not the password).
pub async fn sign_in_form<D: Database>(
    state: &AppState<D>,
    parts: Parts,
    body: axum::body::Body,
) -> Response {
    let viewer = Viewer::anonymous(Utc::now());
    let gzip = false;
    let next = safe_next(
        &Query::<NextQuery>::try_from_uri(&parts.uri)
            .map(|Query(q)| q.next)
            .unwrap_or_default(),
    );
    if let Err(e) = crate::api::session::refuse_foreign_origin(&parts.headers) {
        return problem_page(&viewer, gzip, &e);
    }
    let request = Request::from_parts(parts.clone(), body);
    let form = match Form::<SignIn>::from_request(request, &()).await {
        Ok(Form(form)) => form,
        Err(e) => {
            let error = ApiError::unprocessable(format!("the form is not valid: {e}"));
            return problem_page(&viewer, gzip, &error);
        }
    };
    let username = form.username.clone();
    match crate::api::session::sign_in(state, &parts, form).await {
        Ok((_, cookie)) => {
            let mut response = Redirect::to(&next).into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Err(error) => {
            let html = kiln_ui::pages::login(&viewer, &next, Some(&error.detail), &username);
            let mut response = html_response(error.status, html, gzip);
            for (name, value) in &error.headers {
                response.headers_mut().insert(name, value.clone());
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(
            safe_next("/jobs/app?status=failure"),
            "/jobs/app?status=failure"
        );
        for foreign in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "",
            "jobs",
            "/a\nb",
        ] {
            assert_eq!(safe_next(foreign), "/", "{foreign:?}");
        }
    }
}
