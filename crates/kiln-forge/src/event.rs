//! A webhook delivery as a forge-neutral trigger.
//!
//! Each forge names its events in a header (`X-GitHub-Event`,
//! `X-Gitlab-Event`, `X-Gitea-Event`/`X-Forgejo-Event`) and describes them
//! in its own JSON. [`parse`] reads the ones that can start a run:
//!
//! | forge | push | tag | pull request |
//! | --- | --- | --- | --- |
//! | GitHub | `push` to `refs/heads/…` | `push` to `refs/tags/…` | `pull_request` opened, synchronize, reopened |
//! | GitLab | `Push Hook` | `Tag Push Hook` | `Merge Request Hook` open, reopen, update with `oldrev` |
//! | Gitea | `push` to `refs/heads/…` | `push` to `refs/tags/…` | `pull_request` opened, synchronized, reopened |
//!
//! Deletions (`after` all zeros) and every other event or action are
//! [`Outcome::Ignored`] with the reason, which the hook's answer carries:
//! forges switch off hooks that keep failing, so ignoring is not an error.
//! A tag's run is at the tag's commit, not at an annotated tag's own object.

use http::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{ForgeKind, is_zero_sha};

/// One webhook delivery, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// What identifies this delivery across the forge's redeliveries, so
    /// a second one starts nothing: GitHub's `X-GitHub-Delivery`, GitLab's
    /// `Idempotency-Key`; for Gitea, whose redeliveries carry a new id,
    /// the repository, event, ref and commit.
    pub key: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The forge checks that the hook answers (GitHub's `ping`).
    Ping,
    /// Nothing to run, and why.
    Ignored(String),
    Trigger(Box<Trigger>),
}

/// What a run is started for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub repository: Repository,
    pub kind: TriggerKind,
    /// The commit to run.
    pub sha: String,
    /// Where the change set starts: a push's `before` (none for a new
    /// branch or tag), a pull request's base commit.
    pub before: Option<String>,
    /// Who pushed or acted, as the forge names them.
    pub sender: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKind {
    Push { branch: String },
    Tag { name: String },
    PullRequest(PullRequest),
}

impl TriggerKind {
    /// The run's `event` (DESIGN.md §2).
    pub fn event(&self) -> &'static str {
        match self {
            TriggerKind::Push { .. } => "push",
            TriggerKind::Tag { .. } => "tag",
            TriggerKind::PullRequest(_) => "pull_request",
        }
    }
}

/// A pull (GitHub, Gitea) or merge (GitLab) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: i64,
    pub title: String,
    pub author: Option<String>,
    pub head_branch: String,
    pub base_branch: String,
    /// The head is in another repository than the base — or the forge
    /// does not say it is not (a deleted fork has no repository).
    pub from_fork: bool,
    /// The base repository's ref that holds the head commit, so a fork's
    /// commit is fetched without fetching from the fork.
    pub head_ref: String,
}

/// The repository an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// The forge's id of it (GitLab: the project id, which its API takes).
    pub id: Option<String>,
    /// `owner/name` (GitLab: the path with its namespace).
    pub full_name: String,
    /// The URLs it is cloned or browsed by.
    pub urls: Vec<String>,
}

/// A delivery that cannot be read: answered 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the delivery has no `{0}` header naming its event")]
    NoEventHeader(&'static str),
    #[error("the `{event}` event's body is not what {forge} sends: {message}")]
    Body {
        forge: ForgeKind,
        event: String,
        message: String,
    },
}

/// Reads a delivery from a forge of `kind`. Run it after
/// [`crate::signature::verify`], never before.
pub fn parse(kind: ForgeKind, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, EventError> {
    match kind {
        ForgeKind::Github => github(headers, body),
        ForgeKind::Gitlab => gitlab(headers, body),
        ForgeKind::Gitea => gitea(headers, body),
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn body_of<T: DeserializeOwned>(
    forge: ForgeKind,
    event: &str,
    body: &[u8],
) -> Result<T, EventError> {
    serde_json::from_slice(body).map_err(|e| EventError::Body {
        forge,
        event: event.to_string(),
        message: e.to_string(),
    })
}

fn ignored(reason: impl Into<String>) -> Outcome {
    Outcome::Ignored(reason.into())
}

/// A push to a branch or tag, or the reason it starts nothing.
fn push_outcome(
    reference: &str,
    after: &str,
    tag_commit: Option<&str>,
    before: &str,
    repository: Repository,
    sender: Option<String>,
) -> Outcome {
    if is_zero_sha(after) || after.is_empty() {
        return ignored(format!("`{reference}` was deleted"));
    }
    let before = Some(before.to_string()).filter(|b| !b.is_empty() && !is_zero_sha(b));
    if let Some(branch) = reference.strip_prefix("refs/heads/") {
        Outcome::Trigger(Box::new(Trigger {
            repository,
            kind: TriggerKind::Push {
                branch: branch.to_string(),
            },
            sha: after.to_string(),
            before,
            sender,
        }))
    } else if let Some(name) = reference.strip_prefix("refs/tags/") {
        Outcome::Trigger(Box::new(Trigger {
            repository,
            kind: TriggerKind::Tag {
                name: name.to_string(),
            },
            // An annotated tag's `after` is the tag object; the run is at
            // the commit it points to.
            sha: tag_commit.unwrap_or(after).to_string(),
            before: None,
            sender,
        }))
    } else {
        ignored(format!("`{reference}` is neither a branch nor a tag"))
    }
}

// ---- GitHub ---------------------------------------------------------------

#[derive(Deserialize)]
struct GithubRepository {
    id: Option<i64>,
    full_name: String,
    clone_url: Option<String>,
    ssh_url: Option<String>,
    git_url: Option<String>,
    html_url: Option<String>,
}

impl From<GithubRepository> for Repository {
    fn from(repo: GithubRepository) -> Repository {
        Repository {
            id: repo.id.map(|id| id.to_string()),
            full_name: repo.full_name,
            urls: [repo.clone_url, repo.ssh_url, repo.git_url, repo.html_url]
                .into_iter()
                .flatten()
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct Login {
    login: Option<String>,
    username: Option<String>,
}

impl Login {
    fn name(self) -> Option<String> {
        self.login.or(self.username)
    }
}

#[derive(Deserialize)]
struct Commit {
    id: String,
}

#[derive(Deserialize)]
struct GithubPush {
    #[serde(rename = "ref")]
    reference: String,
    before: String,
    after: String,
    head_commit: Option<Commit>,
    repository: GithubRepository,
    sender: Option<Login>,
}

#[derive(Deserialize)]
struct GithubPullRequestEvent {
    action: String,
    number: Option<i64>,
    pull_request: GithubPullRequest,
    repository: GithubRepository,
    sender: Option<Login>,
}

#[derive(Deserialize)]
struct GithubPullRequest {
    number: i64,
    title: String,
    user: Option<Login>,
    head: GithubBranch,
    base: GithubBranch,
}

#[derive(Deserialize)]
struct GithubBranch {
    #[serde(rename = "ref")]
    reference: String,
    sha: String,
    /// `null` when the head's fork was deleted.
    repo: Option<IdOnly>,
    /// Gitea's payloads carry the id here as well.
    repo_id: Option<i64>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: Option<i64>,
}

impl GithubBranch {
    fn repository_id(&self) -> Option<i64> {
        self.repo.as_ref().and_then(|r| r.id).or(self.repo_id)
    }
}

/// Whether the head is a fork: the ids differ, or one is unknown.
fn is_fork(head: Option<i64>, base: Option<i64>) -> bool {
    match (head, base) {
        (Some(head), Some(base)) => head != base,
        _ => true,
    }
}

fn github(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, EventError> {
    let forge = ForgeKind::Github;
    let event =
        header(headers, "x-github-event").ok_or(EventError::NoEventHeader("X-GitHub-Event"))?;
    let key = header(headers, "x-github-delivery").map(str::to_string);
    let outcome = match event {
        "ping" => Outcome::Ping,
        "push" => {
            let push: GithubPush = body_of(forge, event, body)?;
            push_outcome(
                &push.reference,
                &push.after,
                push.head_commit.as_ref().map(|c| c.id.as_str()),
                &push.before,
                push.repository.into(),
                push.sender.and_then(Login::name),
            )
        }
        "pull_request" => {
            let event_body: GithubPullRequestEvent = body_of(forge, event, body)?;
            pull_request_outcome(forge, event_body, &["opened", "synchronize", "reopened"])
        }
        other => ignored(format!("Kiln does not act on `{other}` events")),
    };
    Ok(Delivery { key, outcome })
}

/// GitHub's and Gitea's pull requests share a shape; `runs_on` lists the
/// actions that bring new code.
fn pull_request_outcome(
    forge: ForgeKind,
    event: GithubPullRequestEvent,
    runs_on: &[&str],
) -> Outcome {
    if !runs_on.contains(&event.action.as_str()) {
        return ignored(format!(
            "pull request action `{}` brings no new commits",
            event.action
        ));
    }
    let pr = event.pull_request;
    let number = event.number.unwrap_or(pr.number);
    let head_ref = match forge {
        ForgeKind::Gitlab => format!("refs/merge-requests/{number}/head"),
        ForgeKind::Github | ForgeKind::Gitea => format!("refs/pull/{number}/head"),
    };
    let from_fork = is_fork(pr.head.repository_id(), pr.base.repository_id());
    Outcome::Trigger(Box::new(Trigger {
        repository: event.repository.into(),
        sha: pr.head.sha,
        before: Some(pr.base.sha).filter(|s| !s.is_empty() && !is_zero_sha(s)),
        sender: event.sender.and_then(Login::name),
        kind: TriggerKind::PullRequest(PullRequest {
            number,
            title: pr.title,
            author: pr.user.and_then(Login::name),
            head_branch: pr.head.reference,
            base_branch: pr.base.reference,
            from_fork,
            head_ref,
        }),
    }))
}

// ---- Gitea and Forgejo -----------------------------------------------------

fn gitea(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, EventError> {
    let forge = ForgeKind::Gitea;
    let event = header(headers, "x-forgejo-event")
        .or_else(|| header(headers, "x-gitea-event"))
        .ok_or(EventError::NoEventHeader("X-Gitea-Event"))?;
    let (outcome, key) = match event {
        "push" => {
            let push: GithubPush = body_of(forge, event, body)?;
            let outcome = push_outcome(
                &push.reference,
                &push.after,
                push.head_commit.as_ref().map(|c| c.id.as_str()),
                &push.before,
                push.repository.into(),
                push.sender.and_then(Login::name),
            );
            let key = trigger_key(&outcome, event);
            (outcome, key)
        }
        "pull_request" => {
            let event_body: GithubPullRequestEvent = body_of(forge, event, body)?;
            let outcome =
                pull_request_outcome(forge, event_body, &["opened", "synchronized", "reopened"]);
            let key = trigger_key(&outcome, event);
            (outcome, key)
        }
        other => (
            ignored(format!("Kiln does not act on `{other}` events")),
            None,
        ),
    };
    Ok(Delivery { key, outcome })
}

/// Gitea gives a redelivery a new id, so a delivery is known by what it
/// says: repository, event, ref and commit.
fn trigger_key(outcome: &Outcome, event: &str) -> Option<String> {
    let Outcome::Trigger(trigger) = outcome else {
        return None;
    };
    let reference = match &trigger.kind {
        TriggerKind::Push { branch } => format!("refs/heads/{branch}"),
        TriggerKind::Tag { name } => format!("refs/tags/{name}"),
        TriggerKind::PullRequest(pr) => pr.head_ref.clone(),
    };
    Some(format!(
        "{}:{event}:{reference}:{}",
        trigger.repository.full_name, trigger.sha
    ))
}

// ---- GitLab ---------------------------------------------------------------

#[derive(Deserialize)]
struct GitlabProject {
    id: Option<i64>,
    path_with_namespace: String,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    web_url: Option<String>,
    http_url: Option<String>,
    ssh_url: Option<String>,
}

impl From<GitlabProject> for Repository {
    fn from(project: GitlabProject) -> Repository {
        Repository {
            id: project.id.map(|id| id.to_string()),
            full_name: project.path_with_namespace,
            urls: [
                project.git_http_url,
                project.git_ssh_url,
                project.web_url,
                project.http_url,
                project.ssh_url,
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }
}

#[derive(Deserialize)]
struct GitlabPush {
    #[serde(rename = "ref")]
    reference: String,
    before: String,
    after: String,
    /// The commit a tag points to (`after` is an annotated tag's object).
    checkout_sha: Option<String>,
    user_username: Option<String>,
    project: GitlabProject,
}

#[derive(Deserialize)]
struct GitlabMergeRequestEvent {
    user: Option<Login>,
    project: GitlabProject,
    object_attributes: GitlabMergeRequest,
}

#[derive(Deserialize)]
struct GitlabMergeRequest {
    iid: i64,
    title: String,
    action: Option<String>,
    /// Present on an `update` that brought new commits.
    oldrev: Option<String>,
    source_branch: String,
    target_branch: String,
    source_project_id: Option<i64>,
    target_project_id: Option<i64>,
    last_commit: Option<Commit>,
}

fn gitlab(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, EventError> {
    let forge = ForgeKind::Gitlab;
    let event =
        header(headers, "x-gitlab-event").ok_or(EventError::NoEventHeader("X-Gitlab-Event"))?;
    let key = header(headers, "idempotency-key").map(str::to_string);
    let outcome = match event {
        "Push Hook" | "Tag Push Hook" => {
            let push: GitlabPush = body_of(forge, event, body)?;
            push_outcome(
                &push.reference,
                &push.after,
                push.checkout_sha.as_deref(),
                &push.before,
                push.project.into(),
                push.user_username,
            )
        }
        "Merge Request Hook" => {
            let event_body: GitlabMergeRequestEvent = body_of(forge, event, body)?;
            merge_request_outcome(event_body)
        }
        other => ignored(format!("Kiln does not act on `{other}` events")),
    };
    Ok(Delivery { key, outcome })
}

fn merge_request_outcome(event: GitlabMergeRequestEvent) -> Outcome {
    let mr = event.object_attributes;
    let action = mr.action.as_deref().unwrap_or("");
    let new_code = match action {
        "open" | "reopen" => true,
        "update" => mr.oldrev.as_deref().is_some_and(|rev| !rev.is_empty()),
        _ => false,
    };
    if !new_code {
        return ignored(format!(
            "merge request action `{action}` brings no new commits"
        ));
    }
    let Some(last_commit) = mr.last_commit else {
        return ignored("the merge request names no commit");
    };
    let author = event.user.and_then(Login::name);
    Outcome::Trigger(Box::new(Trigger {
        repository: event.project.into(),
        sha: last_commit.id,
        // GitLab's event names no base commit; the merge base is found
        // from the branches when the change set is needed.
        before: None,
        sender: author.clone(),
        kind: TriggerKind::PullRequest(PullRequest {
            number: mr.iid,
            title: mr.title,
            author,
            head_branch: mr.source_branch,
            base_branch: mr.target_branch,
            from_fork: is_fork(mr.source_project_id, mr.target_project_id),
            head_ref: format!("refs/merge-requests/{}/head", mr.iid),
        }),
    }))
}
