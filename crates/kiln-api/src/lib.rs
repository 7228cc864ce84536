//! The shapes of the REST API (DESIGN.md §4), shared by `kiln server` and
//! the CLI client so the two cannot drift apart. Fields named in the design
//! are what scripts rely on; the rest are additions.

pub mod fields;
pub mod url;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Statuses of runs, tasks and steps (DESIGN.md §1).
pub const STATUSES: [&str; 9] = [
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub name: String,
    pub kind: String,
    pub repository: Option<String>,
    pub pipeline_path: Option<String>,
    pub default_branch: Option<String>,
    pub pipeline: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// On `PUT` only: `created`, `updated` or `unchanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
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
    /// Present on `GET /jobs/{job}/runs/{n}`; omitted in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Task>>,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    pub name: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTokenBody {
    /// A name to recognise the token by, e.g. the agent's host.
    pub name: String,
}

/// A newly made token: the only time its value is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub name: String,
    pub token: String,
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
