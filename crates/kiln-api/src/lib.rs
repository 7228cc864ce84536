//! The shapes of the REST API (DESIGN.md §4), shared by `kiln server` and
//! the CLI client so the two cannot drift apart. Fields named in the design
//! are what scripts rely on; the rest are additions.

pub mod fields;
pub mod url;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Statuses of runs, tasks and steps (DESIGN.md §1).
pub const STATUSES: [&str; 10] = [
    "blocked",
    "pending",
    "queued",
    "running",
    "success",
    "failure",
    "cancelled",
    "timed_out",
    "skipped",
    "error",
];

/// Body of `POST /jobs` and `PUT /jobs/{job}` (where `name` may be omitted),
/// as the client builds it. The server reads it into stricter types of its
/// own, built from [`fields`], whose schemas the OpenAPI document shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `git` (repository + pipeline file) or `freestyle` (pipeline stored here).
    #[schema(example = "git")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Path of the pipeline file in the repository; `.kiln.yml` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_path: Option<String>,
    /// Branch built when a trigger names none; `main` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// Freestyle jobs: the pipeline YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// `private` (members only) or `public` (anyone may read its runs);
    /// private for a new job, unchanged for an existing one, when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    /// Git jobs: the forge whose webhooks trigger it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<String>,
    /// Git jobs: `approve` (the default), `run` or `ignore`: what a pull
    /// request from a fork does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_prs: Option<String>,
    /// Git jobs: poll the repository this often (e.g. `60s`, at least
    /// `10s`) for new branch heads and tags; not polled when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub name: String,
    pub kind: String,
    pub repository: Option<String>,
    pub pipeline_path: Option<String>,
    pub default_branch: Option<String>,
    pub pipeline: Option<String>,
    /// `private` or `public`.
    #[schema(example = "private")]
    pub visibility: String,
    /// The forge whose webhooks trigger it, if any.
    #[serde(default)]
    pub forge: Option<String>,
    /// What a pull request from a fork does: `approve`, `run` or `ignore`.
    #[serde(default = "approve")]
    #[schema(example = "approve")]
    pub fork_prs: String,
    /// How often the repository is polled (e.g. `60s`), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    /// Why the last poll of the repository failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// On `PUT` only: `created`, `updated` or `unchanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

fn approve() -> String {
    "approve".into()
}

/// Body of `POST /jobs/{job}/runs`: a branch or a commit, or neither for the
/// job's default branch (as the client builds it; see [`JobBody`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub job: String,
    pub number: i64,
    #[schema(example = "running")]
    pub status: String,
    pub branch: Option<String>,
    pub sha: Option<String>,
    #[schema(example = "api")]
    pub event: String,
    /// Why the run is `error`: e.g. a located pipeline error, or "agent lost".
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What made the run, and who.
    #[serde(default)]
    pub trigger: TriggeredBy,
    /// The pull request a `pull_request` run builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequest>,
    /// The tag a `tag` run builds (it has no branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Present on `GET /jobs/{job}/runs/{n}`; omitted in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Task>>,
    /// The commit statuses reported for the run, on `GET
    /// /jobs/{job}/runs/{n}` of a job with a forge; omitted in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<CommitStatus>>,
}

/// A run's state as its forge is told it on the commit (context
/// `kiln/{job}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommitStatus {
    /// The forge's name.
    pub forge: String,
    /// The forge's word for the state the commit should show:
    /// `pending`, `running` (GitLab), `success`, `failure`, `failed`
    /// (GitLab), `error`, `canceled` (GitLab).
    #[schema(example = "success")]
    pub state: String,
    /// When the forge took that state; `null` while it is on its way (or
    /// was refused).
    pub sent_at: Option<DateTime<Utc>>,
    /// Why the forge refused it for good (bad token, unknown commit, …).
    pub error: Option<String>,
}

/// What made a run: `api`, `webhook`, `cron`, `poll` or `rerun`, and who
/// (the API's caller, the forge's sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TriggeredBy {
    #[schema(example = "webhook")]
    pub kind: String,
    pub user: Option<String>,
}

impl Default for TriggeredBy {
    fn default() -> Self {
        TriggeredBy {
            kind: "api".into(),
            user: None,
        }
    }
}

/// The pull (or merge) request a run builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullRequest {
    pub number: i64,
    pub title: String,
    pub author: Option<String>,
    pub head_branch: String,
    pub base_branch: String,
    /// The head is in another repository than the base (or the forge did
    /// not say it is not).
    pub from_fork: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub name: String,
    pub status: String,
    /// Why the task is in its status (skipped because…, error message).
    pub reason: Option<String>,
    pub agent: Option<String>,
    pub attempt: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub name: String,
    pub status: String,
    pub exit_code: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET …/tasks/{task}/results`: the kinds of result a task has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Results {
    /// The attempt these results are of.
    pub attempt: i64,
    /// How many attempts the task has had so far.
    pub attempts: i64,
    /// Path of the console log (always present once the task started).
    pub console: Option<String>,
    /// Path of the parsed JUnit report, when the task produced one.
    pub junit: Option<String>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    pub path: String,
    pub size: i64,
    pub content_type: String,
    /// Where to download it: a path to append to the server's address, each
    /// segment percent-encoded (UTF-8), so it is used as it is.
    pub url: String,
    /// When the file's `artifacts: expire-in` runs out (counted from its
    /// upload), after which the server may delete it; `null` when the
    /// pipeline gave none (the server's retention still applies).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Body of `PUT /forges/{forge}`. `token` and `webhook_secret` are
/// write-only: left out, the stored ones stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgeBody {
    /// `github`, `gitlab` or `gitea` (Forgejo is `gitea`).
    #[schema(example = "github")]
    pub kind: String,
    /// The forge's API address (GitHub: `https://api.github.com`).
    #[schema(example = "https://api.github.com")]
    pub api_url: String,
    /// An access token for commit statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The secret the forge signs its webhooks with; without one, every
    /// delivery is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// A forge, without its token and secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Forge {
    pub name: String,
    #[schema(example = "github")]
    pub kind: String,
    pub api_url: String,
    pub has_token: bool,
    pub has_webhook_secret: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// On `PUT` only: `created`, `updated` or `unchanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

/// The answer to a webhook delivery: what it started, or why nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HookAnswer {
    /// What Kiln made of the delivery, for the forge's delivery log.
    pub message: String,
    /// The jobs a run was queued for.
    #[serde(default)]
    pub queued: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    pub value: String,
    /// Whether runs of pull requests from forks may receive it (default
    /// false: a fork's code could print it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_forks: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    pub name: String,
    pub updated_at: DateTime<Utc>,
    /// Whether runs of pull requests from forks receive it.
    #[serde(default)]
    pub allow_forks: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTokenBody {
    /// The agent's name: the only one the token may be used under.
    pub name: String,
    /// The labels the agent may offer; any when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// The most tasks the agent may take at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_capacity: Option<i64>,
}

/// A newly made token: the only time its value is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub id: i64,
    pub name: String,
    pub token: String,
    /// User tokens: when it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Body of `POST /tokens`, as the client builds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    pub name: String,
    /// How long it works, e.g. `30d`, `12h`; forever when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// Admins: the user the token is for; the caller when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A user token as `GET /tokens` lists it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: i64,
    pub name: String,
    /// Its owner.
    pub user: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// To the minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Set once it is revoked; revoked tokens stay listed.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    /// `admin` or `user`.
    #[schema(example = "user")]
    pub role: String,
    pub disabled: bool,
    /// Whether the user can sign in to the web UI.
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /users`, as the client builds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Body of `PATCH /users/{user}`, as the client builds it: fields left out
/// stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatchBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// A user's role on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub user: String,
    /// `viewer`, `developer` or `maintainer`.
    #[schema(example = "developer")]
    pub role: String,
    pub updated_at: DateTime<Utc>,
}

/// Body of `PUT /jobs/{job}/members/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who: a user's name (`anonymous` for failed sign-ins of no one).
    pub actor: String,
    /// What, e.g. `job.update`, `secret.put`, `user.sign_in_failed`.
    #[schema(example = "job.update")]
    pub action: String,
    /// Which, e.g. `job/app`, `job/app/secret/TOKEN`, `user/ada`.
    #[schema(example = "job/app")]
    pub object: String,
    pub detail: Option<String>,
    /// The client's address.
    pub source: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Body of `POST /login` (JSON or a form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub name: String,
    pub labels: Vec<String>,
    /// idle, busy, draining or lost.
    pub state: String,
    pub running_tasks: Vec<String>,
    pub last_heartbeat: Option<DateTime<Utc>>,
}

/// An error, as `application/problem+json` (RFC 9457).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// Located pipeline errors, when the problem is an invalid pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}
