//! Storage for the server: the [`Database`] trait — one trait per concern
//! (jobs, secrets, runs, queue, logs, results, tokens, and [`identity`]'s
//! users, members, sessions, audit log and sign-ins) — implemented once
//! per backend (`kiln-store-sqlite`, `kiln-store-postgres`), each with its
//! own migrations and one module per concern. The queue's rules — how a
//! run's tasks start, what becomes of a task when an attempt ends, which
//! task may run once its needs end, what a run's status is — live in
//! [`queue`], pure and shared by both backends and by the offline runner
//! (`kiln run`), so a backend only moves rows.
//!
//! Time is passed in (`now`) rather than read from the clock, so tests can
//! expire leases and deadlines without sleeping.

#[macro_use]
pub mod identity;
pub mod forges;
pub mod polls;
pub mod queue;
#[cfg(feature = "sqlx")]
pub mod sql;
pub mod statuses;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod values;

use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};
pub use kiln_pipeline::{Event, Status};
use serde::{Deserialize, Serialize};

pub use forges::{
    Forge, ForgeStore, ForkPrs, NewForge, NewQueuedTrigger, PullRequest, QueuedTrigger, RunTrigger,
    TriggerKind, fork_prs_default,
};
pub use identity::{
    AuditEntry, AuditFilter, AuditStore, ClosedSet, Member, MemberRole, MemberStore, NewAuditEntry,
    NewUser, NewUserToken, Refusal, Session, SessionStore, SignInStore, TokenLookup, User,
    UserChange, UserRole, UserStore, UserToken, Visibility,
};
pub use polls::{JobPoll, MIN_POLL_INTERVAL_SECS, PollOutcome, PollStore};
pub use statuses::{
    CommitStatus, CommitStatusId, StatusCandidate, StatusOutcome, StatusStore, WantedStatus,
};

/// Ids of the store's rows, one type per kind of row so that a run's id
/// cannot be passed where a task's is meant. They are the database's own
/// numbers, shown as plain integers (in JSON too).
macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

ids! {
    /// A job's id (not its name, which is what users see).
    JobId;
    /// A run's id across all jobs (users see the job's run number instead).
    RunId;
    /// A task's id: what agents, logs and results are keyed by.
    TaskId;
    /// An API or agent token's id.
    TokenId;
    /// A user's id (users see names).
    UserId;
    /// An audit log entry's id: the log's order, and its paging cursor.
    AuditId;
    /// A webhook's trigger waiting for its run.
    QueuedTriggerId;
}

/// A backend's own error (sqlx's, a corrupt row, …), kept whole.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug)]
pub enum StoreError {
    /// What was not found; shown as "… not found".
    NotFound(String),
    /// A uniqueness or state rule refused the change (e.g. job exists).
    Conflict(String),
    /// The backend failed (connection, I/O, corrupt row). Shown as
    /// "database: " and the backend error's message; the error itself is
    /// kept (match and downcast it), and its own source is this error's
    /// source, so a report of the whole chain says each cause once.
    Backend(BackendError),
}

impl StoreError {
    pub fn backend(error: impl Into<BackendError>) -> StoreError {
        StoreError::Backend(error.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(what) => write!(f, "{what} not found"),
            StoreError::Conflict(why) => f.write_str(why),
            StoreError::Backend(error) => write!(f, "database: {error}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Its message is already in ours: what caused it comes next.
            StoreError::Backend(error) => error.source(),
            _ => None,
        }
    }
}

impl From<values::Corrupt> for StoreError {
    fn from(error: values::Corrupt) -> Self {
        StoreError::backend(error)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Git,
    Freestyle,
}

/// What a client sends to create or replace a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub kind: JobKind,
    /// Git jobs: repository URL (`file://`, `http(s)://`, or a path).
    pub repository: Option<String>,
    /// Git jobs: path of the pipeline file in the repository.
    pub pipeline_path: Option<String>,
    pub default_branch: Option<String>,
    /// Freestyle jobs: the pipeline YAML.
    pub pipeline: Option<String>,
    /// Who may read it besides its members.
    #[serde(default = "private")]
    pub visibility: Visibility,
    /// Git jobs: the forge whose webhooks trigger it (a forge's name).
    #[serde(default)]
    pub forge: Option<String>,
    /// What a pull request from a fork does.
    #[serde(default = "fork_prs_default")]
    pub fork_prs: ForkPrs,
    /// Git jobs: poll the repository every this many seconds (at least
    /// [`MIN_POLL_INTERVAL_SECS`]); `None`: not polled.
    #[serde(default)]
    pub poll_interval: Option<i64>,
}

fn private() -> Visibility {
    Visibility::Private
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    #[serde(flatten)]
    pub spec: JobSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upserted {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub updated_at: DateTime<Utc>,
    /// Whether runs of pull requests from forks may receive it.
    pub allow_forks: bool,
}

/// A run to create, with its tasks already expanded from the pipeline.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub branch: Option<String>,
    pub sha: Option<String>,
    pub event: Event,
    /// `Some` makes the run `error` at once, with no tasks (e.g. an invalid
    /// pipeline, with its located message).
    pub error: Option<String>,
    /// Umbrella timeout; the run's deadline is counted from creation.
    pub timeout: Option<std::time::Duration>,
    pub tasks: Vec<NewTask>,
    /// The pipeline file's text the run was made from, kept so that a
    /// rerun repeats this run even after the job's pipeline changed;
    /// `None` when there was none to read (e.g. a missing file).
    pub pipeline: Option<String>,
    /// Who made the run, for the audit log, written in the run's own
    /// transaction; `/run/{number}` is appended to its object.
    pub audit: Option<NewAuditEntry>,
    /// What made the run, and who.
    pub trigger: RunTrigger,
    /// The pull request it builds, for `pull_request` runs.
    pub pull_request: Option<PullRequest>,
    /// The tag a `tag` run builds.
    pub tag: Option<String>,
    /// The webhook's trigger this run is made for: marked done in the
    /// run's transaction, which fails with `Conflict` (making nothing)
    /// when it was done already, so two workers never make two runs.
    pub queued_trigger: Option<QueuedTriggerId>,
    /// A pull request from a fork that waits for a maintainer's approval:
    /// its tasks are `blocked`, never claimed, until
    /// [`RunStore::approve_run`].
    pub blocked: bool,
}

#[derive(Debug, Clone)]
pub struct NewTask {
    /// The expanded task as the pipeline crate produced it; agents get it back.
    pub task: kiln_pipeline::Task,
    /// Set when `when` does not match this run: the task is `skipped` from the start.
    pub skip_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub job_id: JobId,
    pub job: String,
    pub number: i64,
    pub status: Status,
    pub branch: Option<String>,
    pub sha: Option<String>,
    pub event: Event,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    pub trigger: RunTrigger,
    pub pull_request: Option<PullRequest>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub id: TaskId,
    pub run_id: RunId,
    pub name: String,
    pub status: Status,
    /// Why it is in this status (skipped because…, error message, …).
    pub reason: Option<String>,
    pub spec: kiln_pipeline::Task,
    /// 1 for the first try; grows with each retry.
    pub attempt: i64,
    /// The agent that holds (or last held) the task.
    pub agent: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Set by cancel while running; the agent polls or is told.
    pub cancel_requested: bool,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    pub index: i64,
    pub name: String,
    pub status: Status,
    pub exit_code: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    pub run: Run,
    /// In pipeline order.
    pub tasks: Vec<TaskRow>,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<Status>,
    pub branch: Option<String>,
    /// Return runs with a number below this (newest first pagination).
    pub before: Option<i64>,
    /// At most this many runs; 0 (the default) or less means 50 ([`page_size`]).
    pub limit: i64,
}

impl RunFilter {
    /// How many runs a page holds at most: see [`page_size`].
    pub fn page_size(&self) -> i64 {
        page_size(self.limit)
    }
}

/// Whose runs [`RunStore::latest_runs`] lists: the jobs a viewer may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunScope {
    /// Every job's (an admin's view).
    All,
    /// Public jobs', and those of the jobs `user` is a member of (`None`:
    /// an anonymous visitor, public jobs only).
    Readable { user: Option<UserId> },
}

/// A page of [`RunStore::latest_runs`]: newest first, across jobs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatestRuns {
    /// Runs made before the run of this id only (keyset paging: the `id`
    /// of the last run of the previous page).
    pub before: Option<RunId>,
    /// At most this many runs; 0 or less means 50 ([`page_size`]).
    pub limit: i64,
}

/// How many rows a page of a list holds at most: `limit`, or 50 when it
/// is 0 or less (a filter's default).
pub fn page_size(limit: i64) -> i64 {
    if limit > 0 { limit } else { 50 }
}

/// Which of a holder's tasks [`QueueStore::requeue_undelivered`] considers.
#[derive(Debug, Clone, Copy)]
pub enum Undelivered<'a> {
    /// Just these: their assignment could not be sent.
    These(&'a [TaskId]),
    /// All it holds but these, which it says it runs (a new session's list).
    AllBut(&'a [TaskId]),
}

impl Undelivered<'_> {
    /// The listed ids and whether they are the ones meant (`These`) or the
    /// ones spared (`AllBut`).
    pub fn parts(&self) -> (&[TaskId], bool) {
        match self {
            Undelivered::These(ids) => (ids, true),
            Undelivered::AllBut(ids) => (ids, false),
        }
    }
}

/// The label an agent with executor `kind` offers besides its own, and a
/// task that only that executor can run requires.
pub fn executor_label(kind: &str) -> String {
    format!("executor:{kind}")
}

/// The labels a task needs of the agent that runs it: its `runs-on`, plus
/// `executor:docker` when it has services (only containers can provide
/// them). A task with an `image` but no services may run on a `process`
/// agent, on the host, as `kiln run --executor process` does.
pub fn placement_labels(task: &kiln_pipeline::Task) -> Vec<String> {
    let mut labels = task.runs_on.clone();
    if !task.services.is_empty() {
        labels.push(executor_label("docker"));
    }
    labels.sort();
    labels.dedup();
    labels
}

/// How the reason of a queued task that no connected agent can take
/// starts; the dispatcher sets it and clears it when such an agent comes.
pub const NO_AGENT_REASON: &str = "no connected agent can take this task";

/// Who holds a task and whether it must stop: the little an agent's calls
/// and the dispatcher check, without loading the task's spec and steps.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskHold {
    pub id: TaskId,
    pub run_id: RunId,
    pub name: String,
    pub status: Status,
    /// The current attempt: what an agent's uploads are filed under.
    pub attempt: i64,
    /// The agent that holds (or last held) the task.
    pub agent: Option<String>,
    pub cancel_requested: bool,
    pub started_at: Option<DateTime<Utc>>,
}

impl TaskHold {
    /// Whether `holder` holds the task: it runs, under `holder`'s agent,
    /// in `holder`'s attempt.
    pub fn held_by(&self, holder: &Holder<'_>) -> bool {
        self.status == Status::Running
            && self.agent.as_deref() == Some(holder.agent)
            && self.attempt == holder.attempt
    }
}

/// Who may report on a task: the agent that holds its lease, for the
/// attempt it was given. A report for an attempt that is no longer the
/// task's current one (a late call of a lost attempt, after a retry on the
/// same agent) is refused like one from another agent, and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder<'a> {
    pub agent: &'a str,
    pub attempt: i64,
}

impl<'a> Holder<'a> {
    pub fn new(agent: &'a str, attempt: i64) -> Holder<'a> {
        Holder { agent, attempt }
    }
}

/// A request for work from an agent.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The agent's name; becomes the lease holder.
    pub holder: String,
    pub labels: Vec<String>,
    pub lease: std::time::Duration,
    pub now: DateTime<Utc>,
}

/// How a task ended, as its agent reports it.
#[derive(Debug, Clone)]
pub struct TaskResult {
    /// success, failure, timed_out, cancelled or error.
    pub status: Status,
    pub reason: Option<String>,
    /// Whether another attempt could end otherwise (see `queue::Retry`).
    pub retry: queue::Retry,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub size: i64,
    pub content_type: String,
    /// Key in the blob store.
    pub blob_key: String,
    /// When the pipeline's `artifacts: expire-in` runs out for this file
    /// (counted from its upload); `None`: only the server's retention
    /// applies. Kept for the retention curator.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// What became of a log chunk offered under a size limit
/// ([`LogStore::append_log_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAppend {
    /// Stored, or stored before under the same `seq`.
    Stored,
    /// The holder does not hold the task: nothing was stored.
    NotHeld,
    /// The chunk would take the attempt's log past the limit: only its
    /// first `kept` bytes were stored.
    OverLimit { kept: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    User,
    /// An agent's own: usable only under its name, within its grant.
    Agent,
    /// A secret agents share only to register a new name, which gets its
    /// own agent token (`KILN_AGENT_TOKEN`).
    Registration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: TokenId,
    pub kind: TokenKind,
    pub name: String,
    pub is_admin: bool,
    /// Agent tokens: the labels the agent may offer; `None`: any.
    pub agent_labels: Option<Vec<String>>,
    /// Agent tokens: the most tasks the agent may take at once; `None`:
    /// the server's limit.
    pub max_capacity: Option<i64>,
}

/// An agent token to store: bound to the agent's name and what it may
/// announce.
#[derive(Debug, Clone)]
pub struct NewAgentToken<'a> {
    pub hash: &'a str,
    pub name: &'a str,
    pub labels: Option<&'a [String]>,
    pub max_capacity: Option<i64>,
}

/// Everything the server stores: one trait per concern, which each backend
/// implements in a module of that name. Implementations must make each
/// method atomic (one transaction), and [`QueueStore::claim_task`] must never
/// hand one task to two holders, whatever the concurrency.
pub trait Database:
    JobStore
    + SecretStore
    + RunStore
    + QueueStore
    + LogStore
    + ResultStore
    + TokenStore
    + UserStore
    + MemberStore
    + SessionStore
    + AuditStore
    + SignInStore
    + ForgeStore
    + StatusStore
    + PollStore
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Database for T where
    T: JobStore
        + SecretStore
        + RunStore
        + QueueStore
        + LogStore
        + ResultStore
        + TokenStore
        + UserStore
        + MemberStore
        + SessionStore
        + AuditStore
        + SignInStore
        + ForgeStore
        + StatusStore
        + PollStore
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Jobs: what a job is, where its pipeline comes from.
pub trait JobStore {
    /// `Conflict` when the name is taken. A `creator` is kept as the job's
    /// creator and made its maintainer, in the same transaction.
    fn create_job(
        &self,
        spec: &JobSpec,
        creator: Option<UserId>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Job>> + Send;
    /// Creates the job as [`JobStore::create_job`] does, or replaces the
    /// spec of the one of that name (whose creator and members stay).
    fn upsert_job(
        &self,
        spec: &JobSpec,
        creator: Option<UserId>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Job, Upserted)>> + Send;
    fn get_job(&self, name: &str) -> impl Future<Output = Result<Option<Job>>> + Send;
    fn list_jobs(&self) -> impl Future<Output = Result<Vec<Job>>> + Send;
    /// Deletes the job and everything of it (runs, tasks, logs, secrets).
    fn delete_job(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// A job's secrets. Values arrive and leave sealed; the store never sees plaintext.
pub trait SecretStore {
    fn put_secret(
        &self,
        job_id: JobId,
        name: &str,
        sealed: &[u8],
        allow_forks: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn delete_secret(&self, job_id: JobId, name: &str)
    -> impl Future<Output = Result<bool>> + Send;
    fn list_secrets(&self, job_id: JobId) -> impl Future<Output = Result<Vec<SecretInfo>>> + Send;
    fn sealed_secrets(
        &self,
        job_id: JobId,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send;
}

/// Runs and their tasks as a whole.
pub trait RunStore {
    /// Numbers the run (1, 2, 3… per job), stores it and its tasks in one
    /// transaction, as [`queue::start_run`] starts them: tasks with no
    /// needs `queued`, the rest `pending`, those skipped by `when` (and
    /// their dependants) `skipped`.
    fn create_run(
        &self,
        job_id: JobId,
        run: NewRun,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<RunDetail>> + Send;
    /// The run a task belongs to, found by the run's id (workers know only that).
    fn get_run_by_id(&self, run_id: RunId) -> impl Future<Output = Result<Option<Run>>> + Send;
    fn get_run(
        &self,
        job_id: JobId,
        number: i64,
    ) -> impl Future<Output = Result<Option<RunDetail>>> + Send;
    /// The pipeline text run `run_id` was made from ([`NewRun::pipeline`]);
    /// `None` when it kept none (or there is no such run). Not part of
    /// [`Run`]: lists of runs need not carry every run's pipeline.
    fn run_pipeline(&self, run_id: RunId) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Newest first.
    fn list_runs(
        &self,
        job_id: JobId,
        filter: &RunFilter,
    ) -> impl Future<Output = Result<Vec<Run>>> + Send;
    /// The newest runs of the jobs in `scope`, newest (highest id) first,
    /// in one query: the dashboard's list, whatever the number of jobs.
    fn latest_runs(
        &self,
        scope: RunScope,
        page: LatestRuns,
    ) -> impl Future<Output = Result<Vec<Run>>> + Send;
    /// Ends pending and queued tasks `cancelled` and flags running ones; the
    /// run is `cancelled` once no task runs. `Conflict` if already finished.
    fn cancel_run(
        &self,
        job_id: JobId,
        number: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<RunDetail>> + Send;
    /// Approves a `blocked` run: its `blocked` tasks are queued and the run
    /// is settled again. `Conflict` when the run is not `blocked` (approved
    /// already, cancelled, or never blocked), `NotFound` when there is no
    /// such run.
    fn approve_run(
        &self,
        job_id: JobId,
        number: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<RunDetail>> + Send;
}

/// The queue: claims, leases, steps, ends of tasks, and expiry.
pub trait QueueStore {
    /// Takes a queued task all of whose `runs-on` labels `claim.labels`
    /// has, makes it `running` under `claim.holder`'s lease, and starts its
    /// run if still queued; `None` when nothing matches. Fair between jobs:
    /// among the matching tasks it picks one of the job with the fewest
    /// tasks currently `running`, ties broken by the oldest `queued_at`,
    /// then the lowest task id. Concurrent claimers never get the same task.
    fn claim_task(&self, claim: &Claim) -> impl Future<Output = Result<Option<TaskRow>>> + Send;
    /// Up to `max` claims for one holder at once, each as [`QueueStore::claim_task`]
    /// picks it (so fairness between jobs holds within the batch); fewer
    /// when fewer match.
    fn claim_tasks(
        &self,
        claim: &Claim,
        max: usize,
    ) -> impl Future<Output = Result<Vec<TaskRow>>> + Send;
    /// Puts back in the queue the tasks `holder` was given that never
    /// reached it: held under its lease, no step started, not being
    /// cancelled, and chosen by `which`. They go back as if never claimed:
    /// the same attempt and place in line. Returns their ids.
    fn requeue_undelivered(
        &self,
        holder: &str,
        which: Undelivered<'_>,
    ) -> impl Future<Output = Result<Vec<TaskId>>> + Send;
    /// Ends the leases of every task `agent` holds at `now`, so the next
    /// [`QueueStore::expire`] treats them as lost (retried or ended);
    /// how many.
    fn end_leases(
        &self,
        agent: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Extends the lease; false when `holder` no longer holds the task.
    fn renew_lease(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn update_step(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        step: &StepRow,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Records the end of a task (retrying it when `retry` allows), releases
    /// or skips its dependants and settles the run. Returns the task's
    /// status now (`queued` when it will be retried); `None` when `holder`
    /// does not hold it.
    fn finish_task(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        result: &TaskResult,
    ) -> impl Future<Output = Result<Option<Status>>> + Send;
    /// Ends tasks whose lease expired before `now` (retry, or `error` with
    /// "agent lost") and runs past their deadline; returns the tasks touched.
    fn expire(&self, now: DateTime<Utc>) -> impl Future<Output = Result<Vec<TaskId>>> + Send;
    fn get_task(&self, task_id: TaskId) -> impl Future<Output = Result<Option<TaskRow>>> + Send;
    /// The task `name` of run `number` of the job, without loading the
    /// run's other tasks.
    fn find_task(
        &self,
        job_id: JobId,
        number: i64,
        name: &str,
    ) -> impl Future<Output = Result<Option<TaskRow>>> + Send;
    /// The distinct label sets (see [`placement_labels`]) that queued
    /// tasks need, each sorted.
    fn queued_label_sets(&self) -> impl Future<Output = Result<Vec<Vec<String>>>> + Send;
    /// Sets `reason` on the queued tasks that need exactly `labels` (as
    /// given by [`QueueStore::queued_label_sets`]) and have no reason or one
    /// starting with [`NO_AGENT_REASON`]; with `None`, clears reasons that
    /// start with it. Returns how many tasks changed.
    fn note_unplaceable(
        &self,
        labels: &[String],
        reason: Option<&str>,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// The holds of those of `task_ids` that exist, in id order: one query
    /// for what would be one `get_task` each.
    fn task_holds(&self, task_ids: &[TaskId])
    -> impl Future<Output = Result<Vec<TaskHold>>> + Send;
    /// Count of tasks per status, for metrics.
    fn task_counts(&self) -> impl Future<Output = Result<Vec<(Status, i64)>>> + Send;
    /// Tasks waiting for an agent: one count over the claim index, cheap
    /// enough for every metrics scrape.
    fn queue_depth(&self) -> impl Future<Output = Result<i64>> + Send;
    fn run_counts(&self) -> impl Future<Output = Result<Vec<(Status, i64)>>> + Send;
}

/// Tasks' logs, one per attempt, in chunks idempotent on (task, attempt, seq).
pub trait LogStore {
    /// Stores a chunk of the log of the task's current attempt if `holder`
    /// holds the task (a chunk already stored under `seq` is kept as it
    /// is); false when it does not.
    fn append_log(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        seq: i64,
        data: &[u8],
    ) -> impl Future<Output = Result<bool>> + Send;
    /// [`LogStore::append_log`] that keeps the attempt's log at `limit`
    /// bytes at most, counted in the database (so the limit holds across
    /// restarts and servers): a chunk that would cross it is cut to what
    /// fits (possibly nothing), atomically with the count.
    fn append_log_within(
        &self,
        task_id: TaskId,
        holder: &Holder<'_>,
        seq: i64,
        data: &[u8],
        limit: u64,
    ) -> impl Future<Output = Result<LogAppend>> + Send;
    /// Up to `limit` chunks of `attempt`'s log with `seq >= from`, in order.
    fn read_log(
        &self,
        task_id: TaskId,
        attempt: i64,
        from: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(i64, Vec<u8>)>>> + Send;
    /// Bytes of `attempt`'s log held in the database.
    fn log_size(&self, task_id: TaskId, attempt: i64) -> impl Future<Output = Result<u64>> + Send;
    /// Drops `attempt`'s log chunks (once the log is kept elsewhere).
    fn delete_log(&self, task_id: TaskId, attempt: i64) -> impl Future<Output = Result<()>> + Send;
}

/// What tasks leave behind: artifacts and reports, each attempt's apart.
pub trait ResultStore {
    fn add_artifact(
        &self,
        task_id: TaskId,
        attempt: i64,
        artifact: &Artifact,
    ) -> impl Future<Output = Result<()>> + Send;
    fn list_artifacts(
        &self,
        task_id: TaskId,
        attempt: i64,
    ) -> impl Future<Output = Result<Vec<Artifact>>> + Send;
    fn put_report(
        &self,
        task_id: TaskId,
        attempt: i64,
        kind: &str,
        json: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    fn get_report(
        &self,
        task_id: TaskId,
        attempt: i64,
        kind: &str,
    ) -> impl Future<Output = Result<Option<String>>> + Send;
}

/// API and agent tokens; only their hashes are ever stored.
pub trait TokenStore {
    fn insert_token(
        &self,
        hash: &str,
        kind: TokenKind,
        name: &str,
        is_admin: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<TokenId>> + Send;
    fn find_token(&self, hash: &str) -> impl Future<Output = Result<Option<TokenInfo>>> + Send;
    fn has_admin_token(&self) -> impl Future<Output = Result<bool>> + Send;
    /// Stores a token owned by a user (kind `user`, not admin by itself);
    /// `Conflict` for a hash in use, `NotFound` for an unknown user.
    fn insert_user_token(
        &self,
        token: &NewUserToken<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<TokenId>> + Send;
    /// The user's tokens, revoked ones too, oldest first; never their hashes.
    fn list_user_tokens(&self, user: UserId)
    -> impl Future<Output = Result<Vec<UserToken>>> + Send;
    /// Marks the token revoked at `now`; false when there is no such token
    /// or it was already revoked.
    fn revoke_token(
        &self,
        id: TokenId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Stores an agent's token; `Conflict` when an unrevoked agent token
    /// of that name exists (one agent, one name), or the hash is in use.
    fn insert_agent_token(
        &self,
        token: &NewAgentToken<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<TokenId>> + Send;
    /// Revokes every token of the agent `name`; how many.
    fn revoke_agent_tokens(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// The user the token belongs to; `None` when there is no such token
    /// or it belongs to no user (agents' tokens).
    fn token_owner(&self, id: TokenId) -> impl Future<Output = Result<Option<User>>> + Send;
    /// Gives `user` the admin tokens that have no owner (made before users
    /// existed, or on first start before the user); how many it took.
    fn adopt_admin_tokens(&self, user: UserId) -> impl Future<Output = Result<u64>> + Send;
    /// The token with its owner's state, in one query, whatever that state
    /// (see [`TokenLookup::refusal`]).
    fn lookup_token(&self, hash: &str) -> impl Future<Output = Result<Option<TokenLookup>>> + Send;
    /// Sets `last_used_at` to `now` if it is unset or older than
    /// [`identity::TOUCH_INTERVAL`]; whether it wrote.
    fn touch_token(
        &self,
        id: TokenId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
}
