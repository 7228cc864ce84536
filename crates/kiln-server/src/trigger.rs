//! Turning a trigger into a run: find the commit, read and validate the
//! pipeline at that commit, check secrets, and store the run with its tasks
//! (and the pipeline's text, which a rerun repeats) in one transaction.
//! Used by the API and by forges' webhooks (`crate::webhooks`), and by cron
//! later: its errors say what went wrong, and each caller decides how to
//! tell it.

use chrono::Utc;
use kiln_pipeline::{ChangeSet, Event, Pipeline, Status};
use kiln_store::{
    Database, ForkPrs, Job, JobKind, NewAuditEntry, NewRun, NewTask, PullRequest, QueuedTriggerId,
    Run, RunDetail, RunTrigger, StoreError, TriggerKind,
};

use crate::state::AppState;

/// Why no run was made. A pipeline that is invalid, missing or needs a
/// secret that is not set is no such error: it still makes a run, `error`.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("a freestyle job has no commits: trigger it without `sha`")]
    FreestyleHasNoCommits,
    /// The branch or commit does not exist, or the repository cannot be
    /// reached.
    #[error("cannot resolve the commit: {0}")]
    Unresolvable(String),
    /// A rerun cannot be the same run again (what it lacks, and what to do).
    #[error("{0}")]
    NotRepeatable(String),
    /// The job's git credentials could not be read (the server's fault).
    #[error("cannot read the job's git credentials: {0}")]
    Credentials(String),
    /// The job's git credentials were set for another repository host.
    #[error("{0}")]
    CredentialsForAnotherHost(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub enum Target {
    Branch(Option<String>),
    Sha(String),
}

/// The most changed files a run's change set lists; a push or pull request
/// changing more is taken as changing everything (every `when.paths`
/// matches), which keeps a huge diff out of memory and the answer safe.
pub const CHANGE_SET_LIMIT: usize = 10_000;

/// Where a job's logs and artifacts live in the blob store.
pub fn job_blob_prefix(job_id: kiln_store::JobId) -> String {
    format!("jobs/{job_id}/")
}

/// What a run is made from.
struct Source {
    branch: Option<String>,
    sha: Option<String>,
    /// The pipeline file's text, or why there is none.
    pipeline: Result<String, String>,
    /// The files the push or pull request changed, for `when.paths`;
    /// `None` when unknown (then every task's `paths` match).
    changes: Option<ChangeSet>,
    /// What made the run, its pull request, and the webhook's queued
    /// trigger it is made for.
    made_by: MadeBy,
}

/// What made a run, beyond its commit and event.
#[derive(Default)]
struct MadeBy {
    trigger: RunTrigger,
    pull_request: Option<PullRequest>,
    tag: Option<String>,
    queued: Option<QueuedTriggerId>,
}

impl MadeBy {
    /// A run made by whoever `audit` names (the API's caller, or a rerun's).
    fn audited(kind: TriggerKind, audit: Option<&NewAuditEntry>) -> MadeBy {
        MadeBy {
            trigger: RunTrigger::new(kind, audit.map(|entry| entry.actor.clone())),
            ..MadeBy::default()
        }
    }
}

/// A run a forge's webhook asked for (`crate::webhooks` reads it from the
/// queued trigger), or that polling found (`crate::polling`).
pub struct FromForge {
    /// `webhook` or `poll`.
    pub kind: TriggerKind,
    /// The commit the forge named.
    pub sha: String,
    /// Where a push's change set starts (none for a new branch), or a pull
    /// request's base commit (none: the base branch's tip).
    pub before: Option<String>,
    pub branch: Option<String>,
    pub event: Event,
    /// The forge's sender.
    pub user: Option<String>,
    pub pull_request: Option<PullRequest>,
    /// A tag run's tag.
    pub tag: Option<String>,
    /// The base repository's ref that holds a pull request's head commit
    /// (`refs/pull/7/head`), fetched first.
    pub fetch_ref: Option<String>,
    /// Marked done in the run's own transaction (none for a poll's run).
    pub queued: Option<QueuedTriggerId>,
}

/// A new run of the job's pipeline as it is now: a freestyle job's stored
/// one, a git job's file at the commit `target` resolves to.
/// `audit`, if given, is written with the run (its object gets the run's
/// number).
pub async fn trigger<D: Database>(
    state: &AppState<D>,
    job: &Job,
    target: Target,
    event: Event,
    audit: Option<NewAuditEntry>,
) -> Result<RunDetail, TriggerError> {
    let source = match job.spec.kind {
        JobKind::Freestyle => {
            let branch = match target {
                Target::Branch(branch) => branch.or_else(|| job.spec.default_branch.clone()),
                Target::Sha(_) => return Err(TriggerError::FreestyleHasNoCommits),
            };
            Source {
                branch,
                sha: None,
                pipeline: Ok(job.spec.pipeline.clone().unwrap_or_default()),
                changes: None,
                made_by: MadeBy::audited(TriggerKind::Api, audit.as_ref()),
            }
        }
        JobKind::Git => {
            let url = job.spec.repository.clone().unwrap_or_default();
            let (branch, reference) = match target {
                Target::Branch(branch) => {
                    let branch = branch
                        .or_else(|| job.spec.default_branch.clone())
                        .unwrap_or_else(|| "main".into());
                    (Some(branch.clone()), kiln_git::Ref::Branch(branch))
                }
                Target::Sha(sha) => (None, kiln_git::Ref::Sha(sha)),
            };
            let auth = git_credentials(state, job).await?;
            let sha = state
                .git
                .resolve_with_auth(&url, reference, auth.as_ref())
                .await
                .map_err(|e| TriggerError::Unresolvable(e.to_string()))?;
            let pipeline = read_pipeline(state, job, &sha, auth.as_ref()).await;
            Source {
                branch,
                sha: Some(sha),
                pipeline,
                changes: None,
                made_by: MadeBy::audited(TriggerKind::Api, audit.as_ref()),
            }
        }
    };
    create(state, job, source, event, audit).await
}

/// A new run for a forge's webhook, at the commit the forge named. Unlike
/// [`trigger`], a commit that cannot be fetched still makes a run, `error`
/// with the reason: the forge said the commit exists, and whoever pushed
/// must see that Kiln could not build it. Fails only when the store does
/// (then the queued trigger stays, and is tried again), or with
/// `StoreError::Conflict` when another worker made the run.
pub async fn trigger_from_forge<D: Database>(
    state: &AppState<D>,
    job: &Job,
    from: FromForge,
    audit: Option<NewAuditEntry>,
) -> Result<RunDetail, TriggerError> {
    let made_by = MadeBy {
        trigger: RunTrigger::new(from.kind, from.user.clone()),
        pull_request: from.pull_request.clone(),
        tag: from.tag.clone(),
        queued: from.queued,
    };
    let (sha, pipeline, changes) = match job.spec.kind {
        // A freestyle job has no commits: its stored pipeline runs.
        JobKind::Freestyle => (
            None,
            Ok(job.spec.pipeline.clone().unwrap_or_default()),
            None,
        ),
        JobKind::Git => {
            let pipeline = forge_pipeline(state, job, &from).await;
            // Only worth the git work when there is a pipeline to filter.
            let changes = match &pipeline {
                Ok(_) => change_set(state, job, &from).await,
                Err(_) => None,
            };
            (Some(from.sha.clone()), pipeline, changes)
        }
    };
    let source = Source {
        branch: from.branch,
        sha,
        pipeline,
        changes,
        made_by,
    };
    create(state, job, source, from.event, audit).await
}

/// The pipeline at the forge's commit, fetched through the pull request's
/// ref if it has one; or why it cannot be read (the run's error).
async fn forge_pipeline<D: Database>(
    state: &AppState<D>,
    job: &Job,
    from: &FromForge,
) -> Result<String, String> {
    let url = job.spec.repository.clone().unwrap_or_default();
    let auth = git_credentials(state, job)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(reference) = &from.fetch_ref {
        let head = state
            .git
            .fetch_ref(&url, reference, auth.as_ref())
            .await
            .map_err(|e| format!("cannot fetch {reference}: {e}"))?;
        if head != from.sha {
            // The pull request moved on since this delivery: its newer
            // head has a delivery of its own. This one still builds the
            // commit it named, if the repository has it.
            tracing::info!(
                "{reference} of {url} is at {head} now, not {}; building {}",
                from.sha,
                from.sha
            );
        }
    }
    let sha = state
        .git
        .resolve_with_auth(&url, kiln_git::Ref::Sha(from.sha.clone()), auth.as_ref())
        .await
        .map_err(|e| format!("cannot fetch commit {}: {e}", from.sha))?;
    read_pipeline(state, job, &sha, auth.as_ref()).await
}

/// The files a forge's push (`before`..commit) or pull request (merge base
/// of its base and head..head) changed, or `None` when there is no change
/// set (a new branch, a tag) or git cannot tell: then every task runs,
/// which is the safe mistake. Past [`CHANGE_SET_LIMIT`] files, everything
/// changed.
async fn change_set<D: Database>(
    state: &AppState<D>,
    job: &Job,
    from: &FromForge,
) -> Option<ChangeSet> {
    let url = job.spec.repository.clone().unwrap_or_default();
    let auth = git_credentials(state, job).await.ok()?;
    let auth = auth.as_ref();
    let start = match from.event {
        Event::Push => from.before.clone()?,
        Event::PullRequest => {
            let base = match (&from.before, &from.pull_request) {
                (Some(base), _) => base.clone(),
                // GitLab names no base commit: its branch's tip is it.
                (None, Some(pr)) => {
                    let branch = kiln_git::Ref::Branch(pr.base_branch.clone());
                    let tip = state.git.resolve_with_auth(&url, branch, auth).await;
                    tip.inspect_err(|e| tracing::info!("no change set for {url}: {e}"))
                        .ok()?
                }
                (None, None) => return None,
            };
            let merge_base = state.git.merge_base(&url, &base, &from.sha, auth).await;
            match merge_base {
                Ok(Some(merge_base)) => merge_base,
                Ok(None) => return None,
                Err(e) => {
                    tracing::info!("no change set for {url}: {e}");
                    return None;
                }
            }
        }
        _ => return None,
    };
    let files = state
        .git
        .changed_files(&url, &start, &from.sha, auth, CHANGE_SET_LIMIT)
        .await;
    match files {
        Ok(Some(files)) => Some(ChangeSet::Files(files)),
        Ok(None) => Some(ChangeSet::Everything),
        Err(e) => {
            tracing::info!("no change set for {url} {start}..{}: {e}", from.sha);
            None
        }
    }
}

/// A new run that repeats `run`: its commit, branch and event, and the
/// pipeline text it was made from, not the job's pipeline now (running
/// that is a new trigger). Secrets and `when` are checked again, as for
/// any run.
pub async fn rerun<D: Database>(
    state: &AppState<D>,
    job: &Job,
    run: &Run,
    audit: Option<NewAuditEntry>,
) -> Result<RunDetail, TriggerError> {
    if run.sha.is_some() && job.spec.kind == JobKind::Freestyle {
        return Err(TriggerError::NotRepeatable(format!(
            "run {} built a commit, and job `{}` is now freestyle: it has no repository \
             to fetch that commit from; trigger a new run",
            run.number, job.spec.name
        )));
    }
    let pipeline = match (state.db.run_pipeline(run.id).await?, &run.sha) {
        (Some(text), _) => Ok(text),
        // Kept by none of the runs made before pipelines were kept, nor by
        // a git run whose file could not be read: read at the run's commit,
        // the file is what it was then.
        (None, Some(sha)) if job.spec.kind == JobKind::Git => {
            let auth = git_credentials(state, job).await?;
            read_pipeline(state, job, sha, auth.as_ref()).await
        }
        (None, _) => {
            return Err(TriggerError::NotRepeatable(format!(
                "run {} was made before Kiln kept the pipeline of each run, and job `{}`'s \
                 pipeline may have changed since; trigger a new run",
                run.number, job.spec.name
            )));
        }
    };
    let source = Source {
        branch: run.branch.clone(),
        sha: run.sha.clone(),
        pipeline,
        // Not kept with the run: a rerun runs every task `paths` filters.
        changes: None,
        made_by: MadeBy {
            pull_request: run.pull_request.clone(),
            tag: run.tag.clone(),
            ..MadeBy::audited(TriggerKind::Rerun, audit.as_ref())
        },
    };
    create(state, job, source, run.event, audit).await
}

/// A private repository's credentials: the job's GIT_USERNAME/GIT_PASSWORD.
async fn git_credentials<D: Database>(
    state: &AppState<D>,
    job: &Job,
) -> Result<Option<kiln_git::Credentials>, TriggerError> {
    use crate::secrets::{CredentialsError, OpenError};
    crate::secrets::git_credentials(state, job)
        .await
        .map_err(|e| match e {
            CredentialsError::Open(e @ OpenError::OtherHost { .. }) => {
                TriggerError::CredentialsForAnotherHost(e.to_string())
            }
            e => TriggerError::Credentials(e.to_string()),
        })
}

/// A git job's pipeline file at commit `sha` (full), or why it cannot be
/// read: that makes a run with status `error`, not a refusal.
async fn read_pipeline<D: Database>(
    state: &AppState<D>,
    job: &Job,
    sha: &str,
    auth: Option<&kiln_git::Credentials>,
) -> Result<String, String> {
    let url = job.spec.repository.as_deref().unwrap_or_default();
    let path = pipeline_path(job);
    match state.git.read_file_with_auth(url, sha, path, auth).await {
        Ok(Some(bytes)) => {
            String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))
        }
        Ok(None) => Err(format!(
            "the pipeline file {path} does not exist at commit {sha}"
        )),
        Err(e) => Err(format!("cannot read {path} at commit {sha}: {e}")),
    }
}

fn pipeline_path(job: &Job) -> &str {
    job.spec.pipeline_path.as_deref().unwrap_or(".kiln.yml")
}

/// Parses and plans `source`'s pipeline and stores the run, its text kept
/// with it so that a rerun can repeat it.
async fn create<D: Database>(
    state: &AppState<D>,
    job: &Job,
    source: Source,
    event: Event,
    audit: Option<NewAuditEntry>,
) -> Result<RunDetail, TriggerError> {
    let Source {
        branch,
        sha,
        pipeline,
        changes,
        made_by,
    } = source;
    let planned = match &pipeline {
        Ok(text) => match kiln_pipeline::parse(pipeline_path(job), text) {
            Ok(parsed) => {
                let on = On {
                    branch: branch.as_deref(),
                    event,
                    changes: changes.as_ref(),
                };
                plan(state, job, parsed, on).await?
            }
            Err(diagnostics) => Err(diagnostics.to_string()),
        },
        Err(message) => Err(message.clone()),
    };
    let (error, timeout, tasks) = match planned {
        Ok((timeout, tasks)) => (None, timeout, tasks),
        Err(error) => (Some(error), None, Vec::new()),
    };
    // A fork's pipeline waits for a maintainer whichever way its run is
    // made — a webhook, or a rerun of a fork run (which a developer could
    // otherwise use to skip the approval: cancel, then rerun).
    let blocked = made_by.pull_request.as_ref().is_some_and(|pr| pr.from_fork)
        && job.spec.fork_prs == ForkPrs::Approve;
    let run = NewRun {
        branch,
        sha,
        event,
        error,
        timeout,
        tasks,
        pipeline: pipeline.ok(),
        audit,
        trigger: made_by.trigger,
        pull_request: made_by.pull_request,
        tag: made_by.tag,
        queued_trigger: made_by.queued,
        blocked,
    };
    let detail = state.db.create_run(job.id, run, Utc::now()).await?;
    if detail.run.status == Status::Blocked {
        tracing::info!(
            "run {} of job `{}` builds a pull request from a fork: blocked until a maintainer \
             approves it",
            detail.run.number,
            job.spec.name
        );
    }
    state.work.notify_waiters();
    state.events.run_detail(&detail);
    state.metrics.run_created();
    Ok(detail)
}

type Planned = Result<(Option<std::time::Duration>, Vec<NewTask>), String>;

/// What a run's tasks' `when` is matched against.
struct On<'a> {
    branch: Option<&'a str>,
    event: Event,
    changes: Option<&'a ChangeSet>,
}

/// Checks that every secret the run's tasks name exists, and marks the tasks
/// whose `when` does not match as skipped.
async fn plan<D: Database>(
    state: &AppState<D>,
    job: &Job,
    pipeline: Pipeline,
    on: On<'_>,
) -> Result<Planned, StoreError> {
    let On {
        branch,
        event,
        changes,
    } = on;
    let stored = state.db.list_secrets(job.id).await?;
    let mut missing: Vec<&str> = Vec::new();
    for task in &pipeline.tasks {
        for name in &task.secrets {
            if !stored.iter().any(|s| &s.name == name) && !missing.contains(&name.as_str()) {
                missing.push(name);
            }
        }
    }
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Ok(Err(format!(
            "the pipeline needs secret{} {list}, not set for job `{}`: set with `kiln secret set {} NAME`",
            if missing.len() == 1 { "" } else { "s" },
            job.spec.name,
            job.spec.name
        )));
    }
    let tasks = pipeline
        .tasks
        .into_iter()
        .map(|task| {
            let skip_reason = task.when.as_ref().and_then(|w| {
                if !w.matches(branch, event) {
                    Some(format!(
                        "`when` does not match branch {} and event {event}",
                        branch.unwrap_or("(none)")
                    ))
                } else if !w.matches_paths(changes) {
                    Some("no changed file matches `when.paths`".to_string())
                } else {
                    None
                }
            });
            NewTask { task, skip_reason }
        })
        .collect();
    Ok(Ok((pipeline.timeout.map(|t| t.as_std()), tasks)))
}
