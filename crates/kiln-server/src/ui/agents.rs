//! `/agents`: admins see the agents connected to this server and the queue.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use kiln_store::Database;

use super::Visitor;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /agents`.
pub async fn list<D: Database>(visitor: Visitor, State(state): State<AppState<D>>) -> Response {
    match &visitor.identity {
        None => return visitor.sign_in(),
        Some(identity) if !identity.admin => {
            return visitor.refuse(ApiError::forbidden("the agents page is for admins"));
        }
        Some(_) => {}
    }
    let queued = match state.db.queue_depth().await {
        Ok(queued) => queued,
        Err(e) => return visitor.refuse(e.into()),
    };
    let agents = state.metrics.agents();
    visitor.page(
        StatusCode::OK,
        kiln_ui::pages::agents(&visitor.viewer, &agents, queued),
    )
}
