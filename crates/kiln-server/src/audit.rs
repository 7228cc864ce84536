//! Writing the audit log: every change made through the API, and every
//! sign-in, with who, what, which object and from where.

use chrono::Utc;
use kiln_store::{Database, NewAuditEntry};

use crate::auth::Identity;
use crate::state::AppState;

/// Appends an entry for a change `who` made. The change is already
/// committed, so a failure to write the entry is logged, not answered.
pub async fn record<D: Database>(
    state: &AppState<D>,
    who: &Identity,
    action: &str,
    object: impl Into<String>,
    detail: Option<String>,
) {
    append(state, &who.name, who.source.clone(), action, object, detail).await;
}

/// Appends an entry for an actor that is not (yet) an identity: a sign-in.
pub async fn append<D: Database>(
    state: &AppState<D>,
    actor: &str,
    source: Option<String>,
    action: &str,
    object: impl Into<String>,
    detail: Option<String>,
) {
    let entry = NewAuditEntry {
        actor: actor.to_string(),
        action: action.to_string(),
        object: object.into(),
        detail,
        source,
    };
    if let Err(e) = state.db.append_audit(&entry, Utc::now()).await {
        tracing::error!(
            "cannot write the audit entry {} {} by {}: {e}",
            entry.action,
            entry.object,
            entry.actor
        );
    }
}

/// The audit object naming a job.
pub fn job_object(job: &str) -> String {
    format!("job/{job}")
}
