//! Commit statuses (DESIGN.md §6): every run of a job with a forge and a
//! commit is shown on that commit — pending when queued (GitLab: running
//! once started), its end state at the end — by a sender of its own, so a
//! slow or absent forge never delays a run.
//!
//! [`run_sender`] does two things in turn, woken by the change feed (any
//! run's change), by the next retry falling due, and by a periodic tick:
//!
//! 1. It records in the outbox (`kiln_store::statuses`) the state each run
//!    wants shown, read from the runs table: runs not yet ended, and those
//!    ended since its last look (all of them at start-up). A run's status
//!    is committed before it is read here, so a crash loses no status: the
//!    next look finds it again.
//! 2. It sends the due statuses, a few at a time, each with a timeout, and
//!    records what the forge said: delivered; try again later (5xx, rate
//!    limits: exponential backoff with jitter, or the forge's own
//!    `Retry-After` or reset time); or refused for good, shown on the run.
//!
//! The outbox keeps one row per commit and context with only the latest
//! wanted state, so a forge that comes back gets the last word, never an
//! older state after a newer one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use kiln_forge::ForgeKind;
use kiln_forge::status::{Answer, StatusUpdate};
use kiln_store::{
    CommitStatus, Database, StatusCandidate, StatusOutcome, StoreError, WantedStatus,
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::events::Change;
use crate::state::AppState;

/// How often the sender looks without being woken: for runs changed
/// through another server sharing the database.
pub const TICK: Duration = Duration::from_secs(30);

/// The least the sender waits between looks.
const MIN_WAIT: Duration = Duration::from_millis(100);

/// How long a forge has to answer one status.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How many statuses are sent at once.
const CONCURRENCY: usize = 8;

/// How many due statuses are claimed at once.
const BATCH: i64 = 32;

/// How many runs one look records at most; the rest wait for the next.
const CANDIDATES: i64 = 500;

/// A look covers runs that ended this long before the previous look
/// started too: servers sharing a database stamp ends with their own
/// clocks.
const LOOK_OVERLAP: Duration = Duration::from_secs(300);

/// The first retry's wait, doubled with each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The context of a job's statuses.
pub fn context(job: &str) -> String {
    format!("kiln/{job}")
}

/// Records wanted statuses and sends due ones until `shutdown`.
pub async fn run_sender<D: Database>(state: AppState<D>, shutdown: CancellationToken) {
    let client = match client() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("commit statuses will not be sent: no HTTP client: {e}");
            return;
        }
    };
    let mut changes = state.events.subscribe(None).receiver;
    let mut feed_open = true;
    let mut last_look: Option<DateTime<Utc>> = None;
    loop {
        let started = Utc::now();
        match record_wanted(&state, last_look).await {
            // A full page may have left older runs out: the window moves
            // on only once a look saw all it covers.
            Ok(true) => {}
            Ok(false) => last_look = Some(started - chrono_span(LOOK_OVERLAP)),
            Err(e) => tracing::warn!("commit statuses: reading runs failed: {e}"),
        }
        if let Err(e) = send_due(&state, &client).await {
            tracing::warn!("commit statuses: sending failed: {e}");
        }
        // Never a busy loop, even if a due status could not be sent.
        let wait = match state.db.next_status_due().await {
            Ok(Some(due)) => (due - Utc::now()).to_std().unwrap_or_default(),
            Ok(None) | Err(_) => TICK,
        }
        .clamp(MIN_WAIT, TICK);
        // Task and step changes are many; only a run's change (or its
        // lag, which may hide one) is worth a look.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                changed = changes.recv(), if feed_open => match changed {
                    Ok(published) if matches!(published.change, Change::Run(_)) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => feed_open = false,
                },
            }
        }
    }
}

fn chrono_span(span: Duration) -> chrono::Duration {
    chrono::Duration::from_std(span).unwrap_or(chrono::Duration::zero())
}

/// The HTTP client statuses are sent with; rustls with *ring*, as the
/// rest of Kiln.
fn client() -> reqwest::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Records the state of every run whose commit does not show it yet (up
/// to [`CANDIDATES`] of them); whether there may be more.
async fn record_wanted<D: Database>(
    state: &AppState<D>,
    last_look: Option<DateTime<Utc>>,
) -> Result<bool, StoreError> {
    let candidates = state.db.status_candidates(last_look, CANDIDATES).await?;
    let full = candidates.len() as i64 >= CANDIDATES;
    let mut forges = std::collections::HashMap::new();
    for candidate in &candidates {
        if !forges.contains_key(&candidate.forge) {
            // A forge given no token takes webhooks only: its runs are
            // not reported (rather than each refused for want of one).
            let kind = state
                .db
                .get_forge(&candidate.forge)
                .await?
                .filter(|forge| forge.token.is_some())
                .and_then(|forge| forge.kind.parse::<ForgeKind>().ok());
            forges.insert(candidate.forge.clone(), kind);
        }
        let kind = forges.get(&candidate.forge).copied().flatten();
        // A run of a job whose forge is gone (or has no token) has
        // nowhere to go.
        let Some(kind) = kind else { continue };
        let repository = repository(kind, candidate).unwrap_or_default();
        let context = context(&candidate.job);
        let wanted = WantedStatus {
            forge: &candidate.forge,
            repository: &repository,
            sha: &candidate.sha,
            context: &context,
            run_id: candidate.run_id,
            run_status: candidate.status,
        };
        state.db.want_status(&wanted, Utc::now()).await?;
    }
    Ok(full)
}

/// What the forge's API calls the run's repository: the forge's own word
/// from the webhook that made the run (or the job's latest one) — for
/// GitLab its project id — else the name in the job's `repository`.
fn repository(kind: ForgeKind, candidate: &StatusCandidate) -> Option<String> {
    let from_trigger = candidate.trigger.as_deref().and_then(|text| {
        let trigger: crate::webhooks::QueuedRun = serde_json::from_str(text).ok()?;
        let id = trigger.repository_id.filter(|_| kind == ForgeKind::Gitlab);
        id.or(trigger.repository)
    });
    from_trigger.or_else(|| {
        candidate
            .job_repository
            .as_deref()
            .and_then(kiln_forge::repository::api_name)
    })
}

/// Claims the due statuses and sends them, [`CONCURRENCY`] at a time.
async fn send_due<D: Database>(
    state: &AppState<D>,
    client: &reqwest::Client,
) -> Result<(), StoreError> {
    loop {
        let now = Utc::now();
        // Held past the request's timeout, so no other sender takes a
        // status whose send may still arrive.
        let until = now + chrono_span(REQUEST_TIMEOUT * 6);
        let due = state.db.claim_statuses(now, until, BATCH).await?;
        if due.is_empty() {
            return Ok(());
        }
        let count = due.len();
        let settled: Vec<Result<(), StoreError>> = futures_util::stream::iter(due)
            .map(|status| send_one(state, client, status))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for result in settled {
            result?;
        }
        if (count as i64) < BATCH {
            return Ok(());
        }
    }
}

/// Sends one status and records the forge's answer.
async fn send_one<D: Database>(
    state: &AppState<D>,
    client: &reqwest::Client,
    status: CommitStatus,
) -> Result<(), StoreError> {
    let outcome = match attempt(state, client, &status).await? {
        Answer::Delivered => StatusOutcome::Delivered,
        Answer::Permanent(error) => {
            tracing::warn!(
                "commit status {} of {} on {}: {error}",
                status.context,
                status.sha,
                status.forge
            );
            StatusOutcome::Permanent(error)
        }
        Answer::Retry { after, reason } => {
            let wait = after.unwrap_or_else(|| backoff(status.attempts));
            tracing::info!(
                "commit status {} of {} on {}: {reason}; trying again in {}s",
                status.context,
                status.sha,
                status.forge,
                wait.as_secs()
            );
            StatusOutcome::Retry {
                at: Utc::now() + chrono_span(wait),
            }
        }
    };
    state
        .db
        .settle_status(status.id, status.version, &outcome, Utc::now())
        .await
}

/// The wait before the next try after `attempts` failed ones: doubling
/// from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], plus up to half again of
/// jitter so statuses failed together do not come back together.
fn backoff(attempts: i64) -> Duration {
    let doubled = FIRST_BACKOFF
        .saturating_mul(1u32 << attempts.clamp(0, 16) as u32)
        .min(MAX_BACKOFF);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = doubled.mul_f64(f64::from(nanos % 1000) / 2000.0);
    doubled + jitter
}

/// One try: the request built from the row and the run, sent, and the
/// answer read. What keeps it from being sent at all is a permanent
/// answer that says why.
async fn attempt<D: Database>(
    state: &AppState<D>,
    client: &reqwest::Client,
    status: &CommitStatus,
) -> Result<Answer, StoreError> {
    let Some(forge) = state.db.get_forge(&status.forge).await? else {
        return Ok(Answer::Permanent(format!(
            "forge `{}` no longer exists",
            status.forge
        )));
    };
    let Ok(kind) = forge.kind.parse::<ForgeKind>() else {
        return Ok(Answer::Permanent(format!(
            "forge `{}` has an unknown kind `{}`",
            forge.name, forge.kind
        )));
    };
    if status.repository.is_empty() {
        return Ok(Answer::Permanent(format!(
            "no repository name for forge `{}`: give the job its repository's forge URL \
             or `owner/name`, or trigger it by the forge's webhook",
            forge.name
        )));
    }
    let Some(sealed) = forge.token.as_deref() else {
        return Ok(Answer::Permanent(format!(
            "forge `{}` has no token: set one (`kiln forge set {} --token-file …`) to report statuses",
            forge.name, forge.name
        )));
    };
    let place = crate::api::forges::sealed_place(&forge.name, "token");
    let Ok(token) = kiln_crypto::open(&state.key, sealed, &place) else {
        return Ok(Answer::Permanent(format!(
            "forge `{}`'s token does not open with this server's key: set it again",
            forge.name
        )));
    };
    let token = String::from_utf8_lossy(&token).into_owned();
    let Some(run) = state.db.get_run_by_id(status.run_id).await? else {
        return Ok(Answer::Permanent("the run no longer exists".into()));
    };
    let tasks = match state.db.get_run(run.job_id, run.number).await? {
        Some(detail) => detail.tasks,
        None => Vec::new(),
    };
    let task_states: Vec<(&str, &str)> = tasks
        .iter()
        .map(|task| (task.name.as_str(), task.status.as_str()))
        .collect();
    let run_status = status.run_status.as_str();
    let update = StatusUpdate {
        kind,
        api_url: forge.api_url.clone(),
        repository: status.repository.clone(),
        sha: status.sha.clone(),
        run_status: run_status.to_string(),
        context: status.context.clone(),
        target_url: state.public_url.as_deref().map(|base| {
            format!(
                "{}/jobs/{}/runs/{}",
                base.trim_end_matches('/'),
                run.job,
                run.number
            )
        }),
        description: kiln_forge::status::summary(run_status, &task_states, run.error.as_deref()),
    };
    let request = kiln_forge::status::request(&update, &token);
    let mut builder = client
        .request(request.method.clone(), &request.url)
        .json(&request.body);
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    let response = match builder.send().await {
        Ok(response) => response,
        Err(e) => {
            return Ok(Answer::Retry {
                after: None,
                reason: format!("no answer from {}: {e}", forge.api_url),
            });
        }
    };
    let code = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    Ok(kiln_forge::status::classify(code, &headers, &body, now))
}

/// The statuses run `run` holds, as the API shows them.
pub async fn shown<D: Database>(
    state: &AppState<D>,
    run: kiln_store::RunId,
) -> Result<Vec<kiln_api::CommitStatus>, StoreError> {
    let statuses = state.db.run_statuses(run).await?;
    Ok(statuses
        .iter()
        .map(|status| {
            let kind = status
                .forge_kind
                .as_deref()
                .and_then(|kind| kind.parse::<ForgeKind>().ok());
            kiln_api::CommitStatus {
                forge: status.forge.clone(),
                state: kind
                    .map_or("pending", |kind| {
                        kiln_forge::status::forge_state(kind, status.run_status.as_str())
                    })
                    .to_string(),
                sent_at: status.sent_at,
                error: status.error.clone(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stops_growing() {
        let first = backoff(0);
        assert!(first >= FIRST_BACKOFF && first <= FIRST_BACKOFF * 3 / 2);
        let third = backoff(2);
        assert!(third >= FIRST_BACKOFF * 4 && third <= FIRST_BACKOFF * 6);
        let late = backoff(40);
        assert!(late >= MAX_BACKOFF && late <= MAX_BACKOFF * 3 / 2);
    }
}
