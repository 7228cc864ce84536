//! The web UI's controllers (DESIGN.md §7). Each finds what a page shows,
//! with the same access rules as the API (`crate::access`), and hands it
//! to `kiln_ui`, which renders it; HTTP stays here.
//!
//! - An anonymous visitor asking for what needs signing in, or for a job
//!   it may not read, is sent to `/login?next=…` (a private job and a
//!   missing one look the same to it). A signed-in user is told `404` for
//!   a job they may not read, `403` for what their role does not allow.
//! - Forms that change something are posted by the browser with the
//!   session cookie (SameSite=Lax), checked for the same origin
//!   ([`crate::auth`]), and must carry the session's form token
//!   ([`csrf_token`]), which a page of another site cannot know.
//! - Pages are `no-cache` and private; assets are immutable under a name
//!   that holds their hash. Both are gzipped for clients that accept it.

mod admin;
mod agents;
mod assets;
mod jobs;
mod runs;
pub mod session;
mod settings;
mod tasks;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use kiln_store::Database;
use kiln_ui::Viewer;

use crate::auth::{Caller, Credential, Identity, session_cookie};
use crate::error::ApiError;
use crate::state::AppState;

/// The UI's routes; `crate::api::router` merges them with the API's.
pub fn router<D: Database>() -> Router<AppState<D>> {
    Router::new()
        .route("/", get(runs::dashboard::<D>))
        .route("/login", get(session::login_page))
        .route("/jobs", get(jobs::list::<D>))
        .route("/jobs/{job}", get(jobs::show::<D>))
        .route("/jobs/{job}/trigger", post(jobs::trigger::<D>))
        .route("/jobs/{job}/badge.svg", get(jobs::badge::<D>))
        .route("/jobs/{job}/runs/{number}", get(runs::show::<D>))
        .route("/jobs/{job}/runs/{number}/cancel", post(runs::cancel::<D>))
        .route("/jobs/{job}/runs/{number}/rerun", post(runs::rerun::<D>))
        .route(
            "/jobs/{job}/runs/{number}/approve",
            post(runs::approve::<D>),
        )
        .route(
            "/jobs/{job}/runs/{number}/tasks/{task}",
            get(tasks::show::<D>),
        )
        .route(
            "/jobs/{job}/runs/{number}/tasks/{task}/log",
            get(tasks::window::<D>),
        )
        .route(
            "/jobs/{job}/runs/{number}/tasks/{task}/log/search",
            get(tasks::search::<D>),
        )
        .route("/agents", get(agents::list::<D>))
        // Settings and admin pages (ui/settings.rs, ui/admin.rs).
        .route(
            "/jobs/{job}/settings",
            get(settings::show::<D>).post(settings::update_job::<D>),
        )
        .route(
            "/jobs/{job}/settings/delete",
            post(settings::delete_job::<D>),
        )
        .route(
            "/jobs/{job}/settings/secrets",
            post(settings::put_secret::<D>),
        )
        .route(
            "/jobs/{job}/settings/secrets/{name}/delete",
            post(settings::delete_secret::<D>),
        )
        .route(
            "/jobs/{job}/settings/members",
            post(settings::put_member::<D>),
        )
        .route(
            "/jobs/{job}/settings/members/{user}/delete",
            post(settings::remove_member::<D>),
        )
        .route(
            "/settings/tokens",
            get(settings::tokens::<D>).post(settings::create_token::<D>),
        )
        .route(
            "/settings/tokens/{id}/revoke",
            post(settings::revoke_token::<D>),
        )
        .route(
            "/admin/users",
            get(admin::users::<D>).post(admin::create_user::<D>),
        )
        .route("/admin/users/{user}", post(admin::update_user::<D>))
        .route("/admin/users/{user}/delete", post(admin::delete_user::<D>))
        .route("/admin/audit", get(admin::audit::<D>))
        .route("/assets/{file}", get(assets::serve))
}

/// The form token of the session whose cookie is `cookie`: derived from
/// it, so it needs no storage and ends with the session. Another site's
/// page can post the cookie (SameSite=Lax permits top-level POSTs in some
/// browsers) but cannot read it, so it cannot know the token.
pub fn csrf_token(cookie: &str) -> String {
    kiln_crypto::hash_token(&format!("kiln-ui-form:{cookie}"))
}

/// Who asks for a page, and how they want the answer.
pub struct Visitor {
    pub identity: Option<Identity>,
    pub viewer: Viewer,
    /// The path and query asked for: where sign-in leads back to.
    pub here: String,
    gzip: bool,
}

impl<D: Database> FromRequestParts<AppState<D>> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<D>,
    ) -> Result<Self, Self::Rejection> {
        let gzip = accepts_gzip(&parts.headers);
        let now = Utc::now();
        let Caller(identity) = Caller::from_request_parts(parts, state)
            .await
            .map_err(|e| problem_page(&Viewer::anonymous(now), gzip, &e))?;
        let csrf = match &identity {
            Some(Identity {
                via: Credential::Session,
                ..
            }) => session_cookie(&parts.headers).map(csrf_token),
            _ => None,
        };
        let viewer = Viewer {
            user: identity.as_ref().map(|i| i.name.clone()),
            admin: identity.as_ref().is_some_and(|i| i.admin),
            csrf,
            now,
        };
        let here = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        Ok(Visitor {
            identity,
            viewer,
            here,
            gzip,
        })
    }
}

impl Visitor {
    /// A page.
    pub fn page(&self, status: StatusCode, html: String) -> Response {
        html_response(status, html, self.gzip)
    }

    /// The answer to a refusal or failure: sign-in for an anonymous
    /// visitor who may not see it, else a page that says why.
    pub fn refuse(&self, error: ApiError) -> Response {
        let hidden = error.status == StatusCode::NOT_FOUND && self.identity.is_none();
        if error.status == StatusCode::UNAUTHORIZED || hidden {
            return self.sign_in();
        }
        problem_page(&self.viewer, self.gzip, &error)
    }

    /// To the sign-in form, and back here after.
    pub fn sign_in(&self) -> Response {
        Redirect::to(&format!(
            "/login?next={}",
            kiln_ui::segment(&session::safe_next(&self.here))
        ))
        .into_response()
    }

    /// The signed-in user who posted a form with `token`, if it is their
    /// session's form token.
    pub fn form_author(&self, token: &str) -> Result<&Identity, Box<Response>> {
        let Some(identity) = &self.identity else {
            return Err(Box::new(self.sign_in()));
        };
        let good = self.viewer.csrf.as_deref().is_some_and(|expected| {
            kiln_crypto::constant_time_eq(expected.as_bytes(), token.as_bytes())
        });
        if !good {
            return Err(Box::new(self.refuse(ApiError::forbidden(
                "this form is out of date or was not sent from this server's page: \
                 reload the page and try again",
            ))));
        }
        Ok(identity)
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// Pages smaller than this go as they are: gzip would save too little.
const GZIP_FROM: usize = 1400;

/// What every page's answer carries: no caching of what may be private,
/// and a policy that lets the page load only this server's own files.
pub fn html_response(status: StatusCode, html: String, gzip: bool) -> Response {
    let compressed = gzip && html.len() >= GZIP_FROM;
    let mut response = if compressed {
        (status, kiln_ui::gzip(html.as_bytes())).into_response()
    } else {
        (status, html).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if compressed {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept-Encoding, Cookie"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Log colours of 256-colour codes are inline `style` attributes.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; \
             style-src-attr 'unsafe-inline'; script-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

/// A page that says what went wrong, with the error's status.
fn problem_page(viewer: &Viewer, gzip: bool, error: &ApiError) -> Response {
    let title = match error.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::UNAUTHORIZED => "Sign in first",
        StatusCode::CONFLICT => "Not possible now",
        status if status.is_server_error() => "Something failed",
        _ => "Cannot do that",
    };
    let html = kiln_ui::pages::problem(viewer, error.status.as_u16(), title, &error.detail);
    let mut response = html_response(error.status, html, gzip);
    for (name, value) in &error.headers {
        response.headers_mut().insert(name, value.clone());
    }
    response
}
