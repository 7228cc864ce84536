use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_store::Database;
use utoipa::OpenApi;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln", description = "The Kiln CI server's REST API. Errors are application/problem+json (RFC 9457)."),
    paths(
        healthz_doc, metrics_doc, openapi,
        super::jobs::list, super::jobs::create, super::jobs::show, super::jobs::upsert, super::jobs::delete,
        super::runs::trigger, super::runs::list, super::runs::show, super::runs::cancel, super::runs::rerun,
        super::results::list, super::console::console, super::results::junit, super::results::artifact,
        super::secrets::put, super::secrets::delete, super::secrets::list,
        super::admin::create_agent_token, super::admin::create_user_token, super::admin::agents,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Liveness and database reachability; needs no token.
#[utoipa::path(operation_id = "healthz", get, path = "/healthz", tag = "system",
    responses((status = 200, description = "The server and its database answer", body = String), (status = 503, body = kiln_api::Problem)))]
#[allow(dead_code)]
fn healthz_doc() {}

pub async fn healthz<D: Database>(State(state): State<AppState<D>>) -> Response {
    match state.db.has_admin_token().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => crate::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database does not answer: {e}"),
        )
        .into_response(),
    }
}

/// Prometheus metrics; needs no token.
#[utoipa::path(operation_id = "metrics", get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
#[allow(dead_code)]
fn metrics_doc() {}

pub async fn metrics<D: Database>(State(state): State<AppState<D>>) -> Response {
    match crate::metrics::render(&state).await {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}

/// This document.
#[utoipa::path(operation_id = "get_openapi", get, path = "/api/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
