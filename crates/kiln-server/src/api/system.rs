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
        healthz_doc, metrics_doc, openapi, super::events::stream,
        super::jobs::list, super::jobs::create, super::jobs::show, super::jobs::upsert, super::jobs::delete,
        super::runs::trigger, super::runs::list, super::runs::show, super::runs::cancel, super::runs::rerun, super::runs::approve,
        super::results::list, super::console::console, super::results::junit, super::results::artifact,
        super::secrets::put, super::secrets::delete, super::secrets::list,
        super::members::list, super::members::put, super::members::delete,
        super::users::list, super::users::create, super::users::show, super::users::update, super::users::delete,
        super::users::list_tokens, super::users::create_token, super::users::revoke_token,
        super::admin::create_agent_token, super::admin::agents, super::admin::delete_agent, super::admin::audit_log,
        super::forges::list, super::forges::put, super::forges::delete, super::hooks::receive,
        super::session::login, crate::ui::session::login_page, super::session::logout,
    ),
    modifiers(&BearerAuth, &ExtractorResponses)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        use utoipa::openapi::security::{ApiKey, ApiKeyValue};
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "The web UI's session, set by `POST /login`; requests that change something must come from the same origin",
            ))),
        );
    }
}

/// Declares, on every operation, the answers its extractors give (see
/// `super::extract` and `crate::auth`), so no handler can forget one:
/// `401`/`403` where a token is needed, `400`/`413`/`415`/`422` where a JSON
/// body is read, `422` where path or query parameters are checked. And every
/// problem is declared as `application/problem+json`, what is sent.
struct ExtractorResponses;

impl utoipa::Modify for ExtractorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let mut implied = Vec::new();
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    implied.extend([StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN]);
                }
                if operation.request_body.is_some() {
                    implied.extend([
                        StatusCode::BAD_REQUEST,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        StatusCode::UNPROCESSABLE_ENTITY,
                    ]);
                }
                let checked_parameters = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query));
                if checked_parameters {
                    implied.push(StatusCode::UNPROCESSABLE_ENTITY);
                }
                let responses = &mut operation.responses.responses;
                for status in implied {
                    responses.entry(status.as_str().into()).or_insert_with(|| {
                        let mut response = utoipa::openapi::Response::new("");
                        as_problem(status.as_str(), &mut response);
                        response.into()
                    });
                }
                for (status, response) in responses.iter_mut() {
                    if let utoipa::openapi::RefOr::T(response) = response {
                        as_problem(status, response);
                    }
                }
            }
        }
    }
}

/// Declares a problem response as `application/problem+json`, described
/// by its status when nothing more is said.
fn as_problem(status: &str, response: &mut utoipa::openapi::Response) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr};
    let problem = RefOr::Ref(Ref::from_schema_name("Problem"));
    let declared = response.content.shift_remove("application/json");
    let is_problem = match &declared {
        Some(content) => matches!(&content.schema, Some(schema) if *schema == problem),
        None => response.content.is_empty() && status.starts_with(['4', '5']),
    };
    if !is_problem {
        if let Some(content) = declared {
            response.content.insert("application/json".into(), content);
        }
        return;
    }
    response.content.insert(
        crate::error::PROBLEM_JSON.into(),
        ContentBuilder::new().schema(Some(problem)).build(),
    );
    if response.description.is_empty() {
        response.description = status
            .parse::<u16>()
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .into();
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

/// Prometheus metrics; needs no token unless the server was started with
/// `KILN_METRICS_TOKEN`, then `Authorization: Bearer <that token>`.
#[utoipa::path(operation_id = "metrics", get, path = "/metrics", tag = "system",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "The server has a metrics token (KILN_METRICS_TOKEN) and the request did not carry it", body = kiln_api::Problem, content_type = "application/problem+json")))]
#[allow(dead_code)]
fn metrics_doc() {}

pub async fn metrics<D: Database>(
    State(state): State<AppState<D>>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(expected) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|token| kiln_crypto::hash_token(token.trim()));
        // Hashes are compared, so the time taken says nothing of the token.
        if given.as_deref() != Some(&**expected) {
            return crate::error::ApiError::unauthorized(
                "this server's /metrics needs `Authorization: Bearer <token>` with the token it \
                 was started with (KILN_METRICS_TOKEN)",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kiln-metrics\""),
            )
            .into_response();
        }
    }
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
