//! Polling a git job's repository (DESIGN.md §6): the refs it had at the
//! last poll, the last poll's error, when the next poll is due, and a claim
//! with an expiry, so that of several servers on one database only one
//! polls a job at a time.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{JobId, Result};

/// The shortest `poll_interval` a job may have, in seconds: shorter would
/// load the forge more than it helps.
pub const MIN_POLL_INTERVAL_SECS: i64 = 10;

/// A job's polling state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPoll {
    pub job_id: JobId,
    /// Branch heads and tags (`refs/heads/…`, `refs/tags/…`) to commits, as
    /// the last successful poll saw them; `None` before the first one.
    pub refs: Option<BTreeMap<String, String>>,
    pub polled_at: Option<DateTime<Utc>>,
    /// Why the last poll failed; `None` when it succeeded.
    pub error: Option<String>,
    pub next_poll_at: DateTime<Utc>,
}

pub trait PollStore {
    /// Claims the poll of `job` for `holder` until `lease_until` if it is
    /// due (`next_poll_at` reached, or never polled) and nobody else's
    /// claim is running; returns the state to compare with, or `None` when
    /// not claimed. Never gives one poll to two holders.
    fn claim_poll(
        &self,
        job: JobId,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<JobPoll>>> + Send;
    /// Records the outcome of `holder`'s poll and frees the claim: the refs
    /// seen (`None` keeps the stored ones, as after a failed poll) and the
    /// error, if any. False when `holder` no longer held the claim.
    fn finish_poll(
        &self,
        job: JobId,
        holder: &str,
        outcome: &PollOutcome,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn get_poll(&self, job: JobId) -> impl Future<Output = Result<Option<JobPoll>>> + Send;
}

/// What one poll found.
#[derive(Debug, Clone, Default)]
pub struct PollOutcome {
    pub refs: Option<BTreeMap<String, String>>,
    pub error: Option<String>,
    pub polled_at: DateTime<Utc>,
    pub next_poll_at: DateTime<Utc>,
}

/// The columns [`crate::sql::job_poll`] reads.
pub const POLL_COLUMNS: &str = "job_id, refs, polled_at, error, next_poll_at";
