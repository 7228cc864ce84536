//! Turning a trigger into a run: find the commit, read and validate the
//! pipeline at that commit, check secrets, and store the run with its tasks
//! in one transaction. Used by the API now, and by cron and webhooks later:
//! its errors say what went wrong, and each caller decides how to tell it.

use chrono::Utc;
use kiln_pipeline::{Event, Pipeline};
use kiln_store::{Database, Job, JobKind, NewRun, NewTask, RunDetail, StoreError};

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
    /// The job's git credentials could not be read (the server's fault).
    #[error("cannot read the job's git credentials: {0}")]
    Credentials(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub enum Target {
    Branch(Option<String>),
    /// A commit, and the branch it is reported under (a rerun keeps it).
    Sha {
        sha: String,
        branch: Option<String>,
    },
}

/// Where a job's logs and artifacts live in the blob store.
pub fn job_blob_prefix(job_id: kiln_store::JobId) -> String {
    format!("jobs/{job_id}/")
}

pub async fn trigger<D: Database>(
    state: &AppState<D>,
    job: &Job,
    target: Target,
    event: Event,
) -> Result<RunDetail, TriggerError> {
    let (branch, sha, text): (Option<String>, Option<String>, Result<String, String>) =
        match job.spec.kind {
            JobKind::Freestyle => {
                let branch = match target {
                    Target::Branch(branch) => branch.or_else(|| job.spec.default_branch.clone()),
                    Target::Sha { .. } => return Err(TriggerError::FreestyleHasNoCommits),
                };
                (
                    branch,
                    None,
                    Ok(job.spec.pipeline.clone().unwrap_or_default()),
                )
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
                    Target::Sha { sha, branch } => (branch, kiln_git::Ref::Sha(sha)),
                };
                // A private repository: the job's GIT_USERNAME/GIT_PASSWORD.
                let auth = crate::secrets::git_credentials(state, job)
                    .await
                    .map_err(TriggerError::Credentials)?;
                let sha = state
                    .git
                    .resolve_with_auth(&url, reference, auth.as_ref())
                    .await
                    .map_err(|e| TriggerError::Unresolvable(e.to_string()))?;
                let path = job
                    .spec
                    .pipeline_path
                    .clone()
                    .unwrap_or_else(|| ".kiln.yml".into());
                let text = match state
                    .git
                    .read_file_with_auth(&url, &sha, &path, auth.as_ref())
                    .await
                {
                    Ok(Some(bytes)) => {
                        String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))
                    }
                    Ok(None) => Err(format!(
                        "the pipeline file {path} does not exist at commit {sha}"
                    )),
                    Err(e) => Err(format!("cannot read {path} at commit {sha}: {e}")),
                };
                (branch, Some(sha), text)
            }
        };
    let path = job.spec.pipeline_path.as_deref().unwrap_or(".kiln.yml");
    let planned = match &text {
        Ok(text) => match kiln_pipeline::parse(path, text) {
            Ok(pipeline) => plan(state, job, pipeline, branch.as_deref(), event).await?,
            Err(diagnostics) => Err(diagnostics.to_string()),
        },
        Err(message) => Err(message.clone()),
    };
    // Kept with the run, so that a rerun can repeat it.
    let pipeline = text.ok();
    let run = match planned {
        Ok((timeout, tasks)) => NewRun {
            branch,
            sha,
            event,
            error: None,
            timeout,
            tasks,
            pipeline,
        },
        Err(error) => NewRun {
            branch,
            sha,
            event,
            error: Some(error),
            timeout: None,
            tasks: Vec::new(),
            pipeline,
        },
    };
    let detail = state.db.create_run(job.id, run, Utc::now()).await?;
    state.work.notify_waiters();
    state.metrics.run_created();
    Ok(detail)
}

type Planned = Result<(Option<std::time::Duration>, Vec<NewTask>), String>;

/// Checks that every secret the run's tasks name exists, and marks the tasks
/// whose `when` does not match as skipped.
async fn plan<D: Database>(
    state: &AppState<D>,
    job: &Job,
    pipeline: Pipeline,
    branch: Option<&str>,
    event: Event,
) -> Result<Planned, StoreError> {
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
            let skip_reason = task
                .when
                .as_ref()
                .filter(|w| !w.matches(branch, event))
                .map(|_| {
                    format!(
                        "`when` does not match branch {} and event {event}",
                        branch.unwrap_or("(none)")
                    )
                });
            NewTask { task, skip_reason }
        })
        .collect();
    Ok(Ok((pipeline.timeout.map(|t| t.as_std()), tasks)))
}
