//! The lease sweeper: ends the tasks of agents that stopped heart-beating
//! (retrying them when `retry` allows, else `error: agent lost`) and runs
//! past their deadline.

use std::time::Duration;

use chrono::Utc;
use kiln_store::Database;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often lost leases and passed deadlines are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Ends lost leases and overdue runs, on a timer, until `shutdown`, after a
/// grace period of one lease from start.
pub async fn run_sweeper<D: Database>(state: AppState<D>, shutdown: CancellationToken) {
    // Leases may have run out while this server was down, through no fault
    // of the agents: give them one lease to reconnect and renew before any
    // task is declared lost.
    tokio::select! {
        _ = tokio::time::sleep(state.agents.lease) => {}
        _ = shutdown.cancelled() => return,
    }
    loop {
        match state.db.expire(Utc::now()).await {
            Ok(touched) if !touched.is_empty() => {
                state.work.notify_waiters();
                crate::events::touch_tasks(&state, &touched).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("expiring leases failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
