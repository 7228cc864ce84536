//! Writing the audit log: every change made through the API, and every
//! sign-in, with who, what, which object and from where.

use chrono::Utc;
use kiln_store::{Database, NewAuditEntry};

use crate::auth::Identity;
use crate::state::AppState;

/// Appends an entry for a change `who` made. The change is already
/// committed, so a failure to write the entry is logged, not answered.
/// (Runs are audited in their own transaction: see [`entry`].)
pub async fn record<D: Database>(
    state: &AppState<D>,
    who: &Identity,
    action: &str,
    object: impl Into<String>,
    detail: Option<String>,
) {
    write(state, entry(who, action, object, detail)).await;
}

/// The entry for a change `who` makes, for a store call that writes it in
/// the change's own transaction (a run's creation).
pub fn entry(
    who: &Identity,
    action: &str,
    object: impl Into<String>,
    detail: Option<String>,
) -> NewAuditEntry {
    NewAuditEntry {
        actor: who.name.clone(),
        action: action.to_string(),
        object: object.into(),
        detail,
        source: who.source.clone(),
    }
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
    write(state, entry).await;
}

async fn write<D: Database>(state: &AppState<D>, entry: NewAuditEntry) {
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
