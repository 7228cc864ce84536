//! Polling git jobs that have a `poll_interval` (DESIGN.md §6), for
//! repositories no webhook can reach. Every [`TICK`] the poller claims the
//! jobs whose poll is due (`PollStore::claim_poll`: of several servers on
//! one database, one polls a job at a time; the claim expires if that
//! server stops), lists the repository's branch heads and tags with
//! `git ls-remote`, and compares them with the refs of the last poll:
//!
//! - a new or moved branch head makes a `push` run of that branch, a new or
//!   moved tag a `tag` run of its commit, both with trigger kind `poll`; a
//!   moved head's change set (for `when.paths`) runs from its last commit;
//! - deleted refs start nothing;
//! - the first poll only records the refs: a job that starts being polled
//!   does not run every branch and tag it has.
//!
//! A repository that cannot be reached is logged and kept as the job's
//! `poll_error` (shown by `GET /api/v1/jobs/{job}`); the next interval tries
//! again. The next poll is due after the interval plus up to a tenth of it
//! of jitter, so that jobs made together do not poll together forever.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use kiln_pipeline::Event;
use kiln_store::{Database, Job, JobKind, JobPoll, NewAuditEntry, PollOutcome, TriggerKind};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::trigger::{FromForge, TriggerError};

/// How often the poller looks for jobs whose poll is due.
pub const TICK: Duration = Duration::from_secs(1);

/// How long a claim holds: longer than a slow `git ls-remote` (the git
/// cache's timeout) and the runs it makes, so a poll is never run twice at
/// once; if its server stops, another polls the job after this.
const CLAIM: Duration = Duration::from_secs(300);

/// Polls due jobs until `shutdown`.
pub async fn run_poller<D: Database>(state: AppState<D>, shutdown: CancellationToken) {
    let holder = holder_name();
    loop {
        poll_due(&state, &holder).await;
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// This server's name in claims: unique among the servers sharing a
/// database.
fn holder_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("poller-{}-{nanos:x}", std::process::id())
}

async fn poll_due<D: Database>(state: &AppState<D>, holder: &str) {
    let jobs = match state.db.list_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!("cannot list the jobs to poll: {e}");
            return;
        }
    };
    for job in jobs {
        let Some(interval) = job
            .spec
            .poll_interval
            .filter(|_| job.spec.kind == JobKind::Git)
        else {
            continue;
        };
        let now = Utc::now();
        let lease = now + CLAIM;
        match state.db.claim_poll(job.id, holder, now, lease).await {
            Ok(Some(last)) => poll(state, &job, holder, interval, last).await,
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot claim the poll of job `{}`: {e}", job.spec.name),
        }
    }
}

/// Polls one claimed job and records what it found.
async fn poll<D: Database>(
    state: &AppState<D>,
    job: &Job,
    holder: &str,
    interval: i64,
    last: JobPoll,
) {
    let name = &job.spec.name;
    let (refs, error) = match list_refs(state, job).await {
        Ok(now) => (
            Some(start_runs(state, job, last.refs.as_ref(), now).await),
            None,
        ),
        Err(error) => {
            tracing::warn!("polling job `{name}`: {error}; trying again in {interval} s");
            (None, Some(error))
        }
    };
    let polled_at = Utc::now();
    let outcome = PollOutcome {
        refs,
        error,
        polled_at,
        next_poll_at: polled_at + next_delay(interval, job.id.0),
    };
    if let Err(e) = state.db.finish_poll(job.id, holder, &outcome).await {
        tracing::warn!("cannot record the poll of job `{name}`: {e}");
    }
}

/// The wait until the next poll: the interval and up to a tenth of it
/// more, varying with the job and the time.
fn next_delay(interval: i64, seed: i64) -> chrono::Duration {
    let millis = interval.max(1).saturating_mul(1000);
    let spread = (millis / 10).max(1);
    let noise = Utc::now().timestamp_subsec_nanos() as i64 ^ seed.wrapping_mul(0x9E37_79B9);
    chrono::Duration::milliseconds(millis + noise.rem_euclid(spread))
}

async fn list_refs<D: Database>(
    state: &AppState<D>,
    job: &Job,
) -> Result<BTreeMap<String, String>, String> {
    let url = job.spec.repository.as_deref().unwrap_or_default();
    let auth = crate::secrets::git_credentials(state, job)
        .await
        .map_err(|e| format!("cannot read the job's git credentials: {e}"))?;
    state
        .git
        .list_refs(url, auth.as_ref())
        .await
        .map_err(|e| e.to_string())
}

/// Makes the runs of the refs that are new or moved since `before`, and
/// returns the refs to remember: those seen now, except that a ref whose
/// run could not be stored keeps its old commit, so the next poll tries
/// it again. With no `before` (the first poll), makes none.
async fn start_runs<D: Database>(
    state: &AppState<D>,
    job: &Job,
    before: Option<&BTreeMap<String, String>>,
    now: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let Some(before) = before else {
        return now;
    };
    let mut remembered = now.clone();
    for (name, sha) in &now {
        let old = before.get(name);
        if old == Some(sha) {
            continue;
        }
        let (event, branch, tag) = if let Some(branch) = name.strip_prefix("refs/heads/") {
            (Event::Push, Some(branch.to_string()), None)
        } else if let Some(tag) = name.strip_prefix("refs/tags/") {
            (Event::Tag, None, Some(tag.to_string()))
        } else {
            continue;
        };
        let from = FromForge {
            kind: TriggerKind::Poll,
            sha: sha.clone(),
            before: old.cloned().filter(|_| event == Event::Push),
            branch,
            event,
            user: None,
            pull_request: None,
            tag,
            fetch_ref: None,
            queued: None,
        };
        let audit = NewAuditEntry {
            actor: "poll".into(),
            action: "run.trigger".into(),
            object: crate::audit::job_object(&job.spec.name),
            detail: Some(format!("{event} of {name} at {sha}, found by polling")),
            source: None,
        };
        match crate::trigger::trigger_from_forge(state, job, from, Some(audit)).await {
            Ok(_) => {}
            Err(e @ TriggerError::Store(_)) => {
                tracing::warn!("job `{}`: no run of {name} yet: {e}", job.spec.name);
                match old {
                    Some(old) => remembered.insert(name.clone(), old.clone()),
                    None => remembered.remove(name),
                };
            }
            Err(e) => tracing::error!("job `{}`: no run of {name}: {e}", job.spec.name),
        }
    }
    remembered
}
