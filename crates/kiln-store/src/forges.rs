//! Forges (DESIGN.md §6): the code hosts whose webhooks start runs, and the
//! queue of triggers their deliveries left. A webhook is answered once its
//! triggers are stored here; a worker makes the runs later
//! ([`crate::NewRun::queued_trigger`] marks one done in the run's own
//! transaction), so a crash between the two loses nothing and makes no run
//! twice. Tokens and webhook secrets arrive sealed: the store never sees
//! them in clear.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use kiln_pipeline::UnknownName;
use serde::{Deserialize, Serialize};

use crate::identity::ClosedSet;
use crate::{JobId, QueuedTriggerId, Result, Upserted};

names! {
    /// What a job does with a pull request from a fork (DESIGN.md §4).
    ForkPrs ("fork_prs") {
        Approve = "approve",
        Run = "run",
        Ignore = "ignore",
    }
}

/// The default `fork_prs`: a fork's pipeline runs only once a maintainer
/// says so.
pub fn fork_prs_default() -> ForkPrs {
    ForkPrs::Approve
}

names! {
    /// What made a run (its `trigger.kind`).
    TriggerKind ("trigger kind") {
        Api = "api",
        Webhook = "webhook",
        Cron = "cron",
        Poll = "poll",
        Rerun = "rerun",
    }
}

/// What made a run, and who: the API's caller, the forge's sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTrigger {
    pub kind: TriggerKind,
    pub user: Option<String>,
}

impl RunTrigger {
    pub fn new(kind: TriggerKind, user: Option<String>) -> RunTrigger {
        RunTrigger { kind, user }
    }
}

impl Default for RunTrigger {
    /// What runs made before triggers were kept read as.
    fn default() -> Self {
        RunTrigger::new(TriggerKind::Api, None)
    }
}

/// The pull request a run builds (DESIGN.md §4's run `pull_request`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: i64,
    pub title: String,
    pub author: Option<String>,
    pub head_branch: String,
    pub base_branch: String,
    pub from_fork: bool,
}

/// A forge as stored: its token and webhook secret sealed, or `None`
/// when not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forge {
    pub name: String,
    /// `github`, `gitlab` or `gitea` (the server checks it).
    pub kind: String,
    pub api_url: String,
    pub token: Option<Vec<u8>>,
    pub webhook_secret: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A forge to create or replace. A `None` token or secret keeps the one
/// stored (they are write-only: a client cannot send back what it cannot
/// read).
#[derive(Debug, Clone)]
pub struct NewForge<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub api_url: &'a str,
    pub token: Option<&'a [u8]>,
    pub webhook_secret: Option<&'a [u8]>,
}

/// A trigger a webhook delivery left for one job.
#[derive(Debug, Clone)]
pub struct NewQueuedTrigger {
    pub job_id: JobId,
    /// The delivery's key: a second trigger of the same job with the same
    /// key is a redelivery and is not queued again.
    pub delivery: String,
    /// The trigger as the server wrote it (JSON): the store keeps it as is.
    pub trigger: String,
}

/// A trigger waiting for its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTrigger {
    pub id: QueuedTriggerId,
    pub job_id: JobId,
    pub delivery: String,
    pub trigger: String,
    pub received_at: DateTime<Utc>,
}

/// Forges and the triggers their webhooks queued.
pub trait ForgeStore {
    /// Creates the forge or replaces its kind and API URL (and its token
    /// and secret, where given).
    fn put_forge(
        &self,
        forge: &NewForge<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Forge, Upserted)>> + Send;
    fn get_forge(&self, name: &str) -> impl Future<Output = Result<Option<Forge>>> + Send;
    /// By name.
    fn list_forges(&self) -> impl Future<Output = Result<Vec<Forge>>> + Send;
    /// False when there is none of that name; `Conflict` naming the jobs
    /// that still use it (their webhooks would stop without a word).
    fn delete_forge(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Queues the triggers in one transaction, skipping those whose job
    /// already has one with that delivery key (done or not); returns the
    /// jobs that got a new one.
    fn queue_triggers(
        &self,
        triggers: &[NewQueuedTrigger],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<JobId>>> + Send;
    /// Up to `limit` triggers not yet done, oldest first.
    fn pending_triggers(
        &self,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<QueuedTrigger>>> + Send;
    /// Marks a trigger done without a run (it cannot make one); false when
    /// it was done already.
    fn discard_trigger(
        &self,
        id: QueuedTriggerId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// Whether putting `new` would change nothing of `stored`: same kind and
/// URL, and no new token or secret (sealed values are never compared: a
/// new one is a change even if it seals the same text).
pub fn unchanged(stored: &Forge, new: &NewForge<'_>) -> bool {
    stored.kind == new.kind
        && stored.api_url == new.api_url
        && new.token.is_none()
        && new.webhook_secret.is_none()
}

/// Why a forge that `jobs` use cannot be deleted.
pub fn in_use(name: &str, jobs: &[String]) -> String {
    let list = jobs
        .iter()
        .map(|job| format!("`{job}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "forge `{name}` is used by job{} {list}: give {} another forge (or none) first",
        if jobs.len() == 1 { "" } else { "s" },
        if jobs.len() == 1 { "it" } else { "them" }
    )
}
