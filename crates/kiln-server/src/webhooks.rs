//! From a forge's trigger to runs, in two steps that a crash cannot
//! split badly:
//!
//! 1. [`queue`] (called by `POST /hooks/{forge}` once the delivery is
//!    signed and read) finds the jobs of that forge that build the event's
//!    repository and stores one queued trigger per job, all in one
//!    transaction, unique on (job, delivery): a redelivery queues nothing.
//!    No git work happens here, so the forge is answered at once.
//! 2. [`run_worker`], woken by the intake (and by a periodic tick, for
//!    triggers a crash left behind), makes each queued trigger's run with
//!    `trigger::trigger_from_forge`, which marks the trigger done in the
//!    run's own transaction: a run is made once, or not at all.
//!
//! Pull requests from forks: `fork_prs: ignore` ignores them; `approve`
//! makes their runs `blocked` until a maintainer approves each one; `run`
//! runs them at once. Either way a fork's run gets only the secrets that
//! allow forks (`crate::scheduler`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_forge::event::{Trigger, TriggerKind};
use kiln_pipeline::Event;
use kiln_store::{
    Database, ForkPrs, JobKind, NewAuditEntry, NewQueuedTrigger, PullRequest, QueuedTrigger,
    StoreError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::trigger::{FromForge, TriggerError};

/// How often the worker looks for queued triggers nobody woke it for
/// (left by a crash, or by another server sharing the database).
pub const TICK: Duration = Duration::from_secs(30);

/// How many queued triggers the worker reads at once.
const BATCH: i64 = 32;

/// What the intake did with a trigger, for the hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The jobs a run was queued for.
    pub jobs: Vec<String>,
    /// What a person reading the forge's delivery log should know.
    pub message: String,
}

/// A queued trigger as the worker reads it back: what the run is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRun {
    pub forge: String,
    pub event: Event,
    pub sha: String,
    pub branch: Option<String>,
    /// A tag run's tag (its run has no branch).
    #[serde(default)]
    pub tag: Option<String>,
    /// Where the change set starts, for `when.paths`.
    #[serde(default)]
    pub before: Option<String>,
    pub sender: Option<String>,
    #[serde(default)]
    pub pull_request: Option<PullRequest>,
    /// The base repository's ref that holds a pull request's head.
    #[serde(default)]
    pub head_ref: Option<String>,
    /// The repository as the forge names it (`owner/name`), and its id
    /// (GitLab's project id): where the run's commit status goes.
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub repository_id: Option<String>,
}

impl QueuedRun {
    /// The run a forge's trigger asks for. A pull request's run is on its
    /// base branch (DESIGN.md §2: `KILN_BRANCH` is the base branch, and
    /// `when: branch` matches pull requests into it); a tag's run has no
    /// branch.
    pub fn of(forge: &str, trigger: &Trigger) -> QueuedRun {
        let (event, branch, tag, pull_request, head_ref) = match &trigger.kind {
            TriggerKind::Push { branch } => (Event::Push, Some(branch.clone()), None, None, None),
            TriggerKind::Tag { name } => (Event::Tag, None, Some(name.clone()), None, None),
            TriggerKind::PullRequest(pr) => (
                Event::PullRequest,
                Some(pr.base_branch.clone()),
                None,
                Some(PullRequest {
                    number: pr.number,
                    title: pr.title.clone(),
                    author: pr.author.clone(),
                    head_branch: pr.head_branch.clone(),
                    base_branch: pr.base_branch.clone(),
                    from_fork: pr.from_fork,
                }),
                Some(pr.head_ref.clone()),
            ),
        };
        QueuedRun {
            forge: forge.to_string(),
            event,
            sha: trigger.sha.clone(),
            branch,
            tag,
            before: trigger.before.clone(),
            sender: trigger.sender.clone(),
            pull_request,
            head_ref,
            repository: Some(trigger.repository.full_name.clone()),
            repository_id: trigger.repository.id.clone(),
        }
    }
}

/// Queues a run of `trigger` for every job of `forge` that builds its
/// repository, in one transaction; `delivery` tells a redelivery.
pub async fn queue<D: Database>(
    state: &AppState<D>,
    forge: &str,
    delivery: &str,
    trigger: &Trigger,
) -> Result<Queued, StoreError> {
    let run = QueuedRun::of(forge, trigger);
    let payload = serde_json::to_string(&run).map_err(StoreError::backend)?;
    let jobs = state.db.list_jobs().await?;
    let matching: Vec<_> = jobs
        .iter()
        .filter(|job| job.spec.kind == JobKind::Git && job.spec.forge.as_deref() == Some(forge))
        .filter(|job| {
            job.spec.repository.as_deref().is_some_and(|repository| {
                kiln_forge::repository::same_repository(repository, &trigger.repository)
            })
        })
        .collect();
    if matching.is_empty() {
        return Ok(Queued {
            jobs: Vec::new(),
            message: format!(
                "no job of forge `{forge}` builds repository `{}`",
                trigger.repository.full_name
            ),
        });
    }
    let mut notes = Vec::new();
    let mut wanted = Vec::new();
    for job in matching {
        let name = &job.spec.name;
        if run.pull_request.as_ref().is_some_and(|pr| pr.from_fork) {
            match job.spec.fork_prs {
                ForkPrs::Ignore => {
                    notes.push(format!(
                        "job `{name}` ignores pull requests from forks (`fork_prs: ignore`)"
                    ));
                    continue;
                }
                // The run is made `blocked` (`trigger::create`); either way
                // it gets only the secrets that allow forks.
                ForkPrs::Approve => notes.push(format!(
                    "job `{name}`: a pull request from a fork waits for a maintainer's approval"
                )),
                ForkPrs::Run => {}
            }
        }
        wanted.push(NewQueuedTrigger {
            job_id: job.id,
            delivery: delivery.to_string(),
            trigger: payload.clone(),
        });
    }
    let queued_ids = if wanted.is_empty() {
        Vec::new()
    } else {
        state.db.queue_triggers(&wanted, Utc::now()).await?
    };
    let queued: Vec<String> = jobs
        .iter()
        .filter(|job| queued_ids.contains(&job.id))
        .map(|job| job.spec.name.clone())
        .collect();
    let seen_before = wanted.len() - queued.len();
    if !queued.is_empty() {
        state.hooks.notify_one();
        notes.insert(
            0,
            format!(
                "queued a {} run of {}",
                run.event,
                queued
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if seen_before > 0 {
        notes.push(format!(
            "delivery `{delivery}` was received before: its runs were queued then"
        ));
    }
    Ok(Queued {
        jobs: queued,
        message: notes.join("; "),
    })
}

/// Makes the runs of queued triggers until `shutdown`: when the intake
/// wakes it, and every [`TICK`].
pub async fn run_worker<D: Database>(state: AppState<D>, shutdown: CancellationToken) {
    let wake: Arc<Notify> = state.hooks.clone();
    loop {
        drain(&state).await;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Makes the runs of the queued triggers there are now. Stops at the first
/// store failure: the next wake or tick tries again, rather than spinning.
async fn drain<D: Database>(state: &AppState<D>) {
    loop {
        let batch = match state.db.pending_triggers(BATCH).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!("cannot read the queued webhook triggers: {e}");
                return;
            }
        };
        let full = batch.len() as i64 == BATCH;
        for queued in batch {
            if let Err(e) = make_run(state, &queued).await {
                tracing::warn!(
                    "the run of webhook delivery {} for job {} is not made yet: {e}",
                    queued.delivery,
                    queued.job_id
                );
                return;
            }
        }
        if !full {
            return;
        }
    }
}

/// Makes the run of one queued trigger (or drops a trigger that cannot
/// make one).
async fn make_run<D: Database>(
    state: &AppState<D>,
    queued: &QueuedTrigger,
) -> Result<(), StoreError> {
    let run: QueuedRun = match serde_json::from_str(&queued.trigger) {
        Ok(run) => run,
        Err(e) => {
            // Written by this code; a newer server's shape, maybe.
            tracing::error!("queued trigger {} cannot be read ({e}); dropped", queued.id);
            state.db.discard_trigger(queued.id, Utc::now()).await?;
            return Ok(());
        }
    };
    let jobs = state.db.list_jobs().await?;
    let Some(job) = jobs.into_iter().find(|job| job.id == queued.job_id) else {
        // Deleted since: its triggers went with it, but a race may leave one.
        state.db.discard_trigger(queued.id, Utc::now()).await?;
        return Ok(());
    };
    let audit = NewAuditEntry {
        actor: format!("forge/{}", run.forge),
        action: "run.trigger".into(),
        object: crate::audit::job_object(&job.spec.name),
        detail: Some(format!(
            "{} webhook delivery {} by {}",
            run.event,
            queued.delivery,
            run.sender.as_deref().unwrap_or("(unknown)")
        )),
        source: None,
    };
    let from = FromForge {
        kind: kiln_store::TriggerKind::Webhook,
        sha: run.sha,
        before: run.before,
        branch: run.branch,
        event: run.event,
        user: run.sender,
        pull_request: run.pull_request,
        tag: run.tag,
        fetch_ref: run.head_ref,
        queued: Some(queued.id),
    };
    match crate::trigger::trigger_from_forge(state, &job, from, Some(audit)).await {
        Ok(_) => Ok(()),
        // Another worker made it.
        Err(TriggerError::Store(StoreError::Conflict(_))) => Ok(()),
        Err(TriggerError::Store(e)) => Err(e),
        Err(e) => {
            // `trigger_from_forge` turns what git says into the run's error;
            // anything else is a bug, and retrying would not help.
            tracing::error!("queued trigger {} made no run: {e}; dropped", queued.id);
            state.db.discard_trigger(queued.id, Utc::now()).await?;
            Ok(())
        }
    }
}
