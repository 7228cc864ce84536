//! The HTTP layer: routes, and the controllers behind them. Controllers
//! translate between HTTP and the store; rules live elsewhere.

pub(crate) mod admin;
pub mod bodies;
mod console;
mod events;
pub mod extract;
pub(crate) mod forges;
mod hooks;
pub(crate) mod jobs;
pub(crate) mod members;
mod range;
mod results;
pub(crate) mod runs;
pub(crate) mod secrets;
pub(crate) mod session;
mod system;
pub(crate) mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post, put};
use kiln_store::Database;

use crate::error::ApiError;
use crate::state::AppState;

pub use system::ApiDoc;

/// Largest request body accepted: a pipeline (1 MiB) with JSON escaping.
pub const MAX_BODY_BYTES: usize = 3 << 20;

/// Registers routes and remembers their paths, so tests can compare what
/// is served with what the OpenAPI document describes.
struct Routes<D> {
    router: Router<AppState<D>>,
    paths: Vec<&'static str>,
}

impl<D: Database> Routes<D> {
    fn add(mut self, path: &'static str, methods: MethodRouter<AppState<D>>) -> Self {
        self.router = self.router.route(path, methods);
        self.paths.push(path);
        self
    }
}

fn routes<D: Database>() -> Routes<D> {
    Routes {
        router: Router::new(),
        paths: Vec::new(),
    }
    .add("/healthz", get(system::healthz::<D>))
    .add("/metrics", get(system::metrics::<D>))
    .add("/api/openapi.json", get(system::openapi))
    .add("/api/v1/events", get(events::stream::<D>))
    .add("/api/v1/jobs", get(jobs::list::<D>).post(jobs::create::<D>))
    .add(
        "/api/v1/jobs/{job}",
        get(jobs::show::<D>)
            .put(jobs::upsert::<D>)
            .delete(jobs::delete::<D>),
    )
    .add(
        "/api/v1/jobs/{job}/runs",
        get(runs::list::<D>).post(runs::trigger::<D>),
    )
    .add("/api/v1/jobs/{job}/runs/{number}", get(runs::show::<D>))
    .add(
        "/api/v1/jobs/{job}/runs/{number}/cancel",
        post(runs::cancel::<D>),
    )
    .add(
        "/api/v1/jobs/{job}/runs/{number}/rerun",
        post(runs::rerun::<D>),
    )
    .add(
        "/api/v1/jobs/{job}/runs/{number}/approve",
        post(runs::approve::<D>),
    )
    .add(
        "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results",
        get(results::list::<D>),
    )
    .add(
        "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/console",
        get(console::console::<D>),
    )
    .add(
        "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/junit",
        get(results::junit::<D>),
    )
    .add(
        "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/artifacts/{*path}",
        get(results::artifact::<D>),
    )
    .add("/api/v1/jobs/{job}/secrets", get(secrets::list::<D>))
    .add(
        "/api/v1/jobs/{job}/secrets/{name}",
        put(secrets::put::<D>).delete(secrets::delete::<D>),
    )
    .add("/api/v1/jobs/{job}/members", get(members::list::<D>))
    .add(
        "/api/v1/jobs/{job}/members/{user}",
        put(members::put::<D>).delete(members::delete::<D>),
    )
    .add(
        "/api/v1/users",
        get(users::list::<D>).post(users::create::<D>),
    )
    .add(
        "/api/v1/users/{user}",
        get(users::show::<D>)
            .patch(users::update::<D>)
            .delete(users::delete::<D>),
    )
    .add(
        "/api/v1/tokens",
        get(users::list_tokens::<D>).post(users::create_token::<D>),
    )
    .add("/api/v1/tokens/{id}", delete(users::revoke_token::<D>))
    .add("/api/v1/agent-tokens", post(admin::create_agent_token::<D>))
    .add("/api/v1/agents", get(admin::agents::<D>))
    .add("/api/v1/agents/{agent}", delete(admin::delete_agent::<D>))
    .add("/api/v1/audit", get(admin::audit_log::<D>))
    .add("/api/v1/forges", get(forges::list::<D>))
    .add(
        "/api/v1/forges/{forge}",
        put(forges::put::<D>).delete(forges::delete::<D>),
    )
    // Bounded by the handler (`hooks::MAX_HOOK_BYTES`), not the API's limit.
    .add(
        "/hooks/{forge}",
        post(hooks::receive::<D>).layer(DefaultBodyLimit::disable()),
    )
    .add("/login", post(session::login::<D>))
    .add("/logout", post(session::logout::<D>))
}

pub fn router<D: Database>(state: AppState<D>) -> Router {
    routes::<D>()
        .router
        // The web UI's pages (not in the OpenAPI document: they answer HTML).
        .merge(crate::ui::router::<D>())
        .fallback(|| async {
            ApiError::not_found("no such route; the API is described at /api/openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The paths the router serves, in axum's `{param}` syntax.
pub fn served_paths<D: Database>() -> Vec<&'static str> {
    routes::<D>().paths
}
