//! From a pipeline task to a [`TaskSpec`]: the same environment, secrets and
//! labels whoever runs it — `kiln run`, the server's worker or an agent.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_pipeline::{Event, Task};

use crate::{SourceTree, TaskSpec};

/// What a run is about: fills the `KILN_*` variables.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub job: String,
    pub run_number: u64,
    pub branch: Option<String>,
    pub sha: Option<String>,
    pub event: Event,
    /// Name of whoever runs the task (`local` under `kiln run`).
    pub agent: String,
    /// The pull request a `pull_request` run builds.
    pub pull_request: Option<PullRequestContext>,
    /// The tag a `tag` run builds.
    pub tag: Option<String>,
}

/// What a pull request's tasks see of it (`KILN_PR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestContext {
    pub number: i64,
    pub head_branch: String,
    pub base_branch: String,
}

/// Builds the executor's view of a task: `CI`/`KILN_*` first, then the
/// pipeline's env, then `extra_env`; `secrets` must hold only the secrets the
/// task names (the caller looks them up).
pub fn task_spec(
    task: &Task,
    context: &RunContext,
    secrets: Vec<(String, String)>,
    extra_env: &[(String, String)],
    source: Arc<SourceTree>,
    outputs: PathBuf,
    mut labels: Vec<(String, String)>,
) -> TaskSpec {
    let mut env: Vec<(String, String)> = vec![
        ("CI".into(), "true".into()),
        ("KILN".into(), "true".into()),
        ("KILN_JOB".into(), context.job.clone()),
        ("KILN_RUN".into(), context.run_number.to_string()),
        ("KILN_TASK".into(), task.name.clone()),
        ("KILN_AGENT".into(), context.agent.clone()),
        (
            "KILN_COMMIT_SHA".into(),
            context.sha.clone().unwrap_or_default(),
        ),
        (
            "KILN_BRANCH".into(),
            context.branch.clone().unwrap_or_default(),
        ),
        ("KILN_EVENT".into(), context.event.to_string()),
    ];
    if let Some(pr) = &context.pull_request {
        env.push(("KILN_PR_NUMBER".into(), pr.number.to_string()));
        env.push(("KILN_PR_HEAD_BRANCH".into(), pr.head_branch.clone()));
        env.push(("KILN_PR_BASE_BRANCH".into(), pr.base_branch.clone()));
    }
    if let Some(tag) = &context.tag {
        env.push(("KILN_TAG".into(), tag.clone()));
    }
    for (key, value) in task.env.iter().chain(extra_env) {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    labels.push(("kiln.run".into(), context.run_number.to_string()));
    TaskSpec {
        name: task.name.clone(),
        image: task.image.clone(),
        build: task.build.clone(),
        services: task.services.clone(),
        env,
        secrets,
        steps: task.steps.clone(),
        timeout: task.timeout.map(|t| t.as_std()),
        resources: task.resources.clone(),
        artifacts: task.artifacts.paths.clone(),
        reports: task.reports.junit.clone(),
        source,
        outputs,
        labels,
    }
}

/// File-system-safe form of a task name, for its directory of outputs.
pub fn task_dir_name(name: &str) -> String {
    name.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect()
}
