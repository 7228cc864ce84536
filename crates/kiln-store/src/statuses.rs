//! Commit statuses (DESIGN.md §6): the outbox of what each forge should
//! show on a commit for a job's runs.
//!
//! The outbox is derived from the runs table, not written beside every
//! status change: the server's sender asks for [`StatusStore::status_candidates`]
//! — runs of jobs with a forge and a commit whose status the outbox does
//! not hold yet — and records each as wanted. A run's status is committed
//! before anything reads it here, so a crash between a run's end and its
//! status loses nothing: the next look finds the run again. This keeps the
//! queue's hot paths (claims, task ends, the sweeper) free of forge work.
//!
//! One row per (forge, repository, sha, context) keeps only the latest
//! wanted state: a newer run of the job on the same commit takes the row
//! over, an older one never takes it back, and every change bumps the
//! row's version so a send of an older state is never recorded as the last
//! word.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::{Result, RunId, Status};

/// A commit status row's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitStatusId(pub i64);

/// A run whose state its commit may not show yet: what the server needs
/// to decide where the status goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCandidate {
    pub run_id: RunId,
    pub job: String,
    /// The job's `repository` as written.
    pub job_repository: Option<String>,
    /// The job's forge's name.
    pub forge: String,
    pub number: i64,
    pub status: Status,
    pub sha: String,
    /// The webhook trigger that made the run, or else the newest one of its
    /// job (JSON as the server queued it): the forge's own name for the
    /// repository, when the job's `repository` is a local clone.
    pub trigger: Option<String>,
}

/// The state a commit should show, to record in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedStatus<'a> {
    pub forge: &'a str,
    /// What the forge's API calls the repository: `owner/name` or a
    /// GitLab project id or path. Empty when it cannot be told: such a
    /// status is refused for good by the sender, which says why.
    pub repository: &'a str,
    pub sha: &'a str,
    /// `kiln/{job}` (the candidates' look relies on it).
    pub context: &'a str,
    pub run_id: RunId,
    pub run_status: Status,
}

/// A row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub id: CommitStatusId,
    pub forge: String,
    /// The forge's kind, `None` once the forge is gone.
    pub forge_kind: Option<String>,
    pub repository: String,
    pub sha: String,
    pub context: String,
    pub run_id: RunId,
    /// The run status the commit should show (the forge's word is made
    /// from it and the forge's kind).
    pub run_status: Status,
    /// Grows with every change of the wanted state.
    pub version: i64,
    /// Failed tries of this row since its last delivery.
    pub attempts: i64,
    /// When the wanted state was delivered; `None` until it is.
    pub sent_at: Option<DateTime<Utc>>,
    /// Why the forge refused the wanted state for good.
    pub error: Option<String>,
}

/// What became of a send of version `version` of a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusOutcome {
    Delivered,
    /// Try again at `at` (no earlier, even for a newer state: the forge
    /// asked for the wait).
    Retry {
        at: DateTime<Utc>,
    },
    /// The forge will never take it; shown on the run.
    Permanent(String),
}

/// The outbox of commit statuses.
pub trait StatusStore {
    /// Up to `limit` runs, newest first, of jobs whose forge has a token,
    /// with a commit, unfinished or finished at or after `finished_since`
    /// (all when `None`), whose current status no outbox row holds and
    /// whose row no newer run of the job took over (context `kiln/{job}`).
    fn status_candidates(
        &self,
        finished_since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<StatusCandidate>>> + Send;
    /// Records `wanted` as the state its commit should show, due at once
    /// (or after a wait the forge asked for). False when nothing changed:
    /// the row holds that already, or a newer run of the job holds it.
    fn want_status(
        &self,
        wanted: &WantedStatus<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Up to `limit` due statuses, soonest first, each kept from other
    /// senders until `claim_until` or its [`StatusStore::settle_status`].
    fn claim_statuses(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<CommitStatus>>> + Send;
    /// Records what became of sending version `version` of status `id`,
    /// and releases the claim. A delivery or refusal of a version that is
    /// no longer the row's leaves the newer state due.
    fn settle_status(
        &self,
        id: CommitStatusId,
        version: i64,
        outcome: &StatusOutcome,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// When the next status falls due (or, when it is claimed, its claim
    /// ends), if any is waiting.
    fn next_status_due(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;
    /// The statuses run `run_id` holds, by forge.
    fn run_statuses(&self, run_id: RunId)
    -> impl Future<Output = Result<Vec<CommitStatus>>> + Send;
}
