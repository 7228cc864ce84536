//! Conversions between the store's types and the plain values backends keep
//! in columns (unix milliseconds, status and kind names, task spec JSON).
//! Shared by every backend, so they store and read back the same text.

use chrono::{DateTime, TimeDelta, Utc};

use crate::{Event, JobKind, Status, StoreError, TokenKind};

/// A stored value this version cannot read: a row it did not write, or a
/// newer schema.
#[derive(Debug, thiserror::Error)]
#[error("corrupt row: {0}")]
pub struct Corrupt(pub String);

pub fn ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub fn time(millis: i64) -> Result<DateTime<Utc>, Corrupt> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| Corrupt(format!("timestamp {millis} is out of range")))
}

pub fn opt_time(millis: Option<i64>) -> Result<Option<DateTime<Utc>>, Corrupt> {
    millis.map(time).transpose()
}

/// `now + span`, refusing spans that do not fit (they come from callers,
/// so this is a caller error rather than a corrupt row).
pub fn after(now: DateTime<Utc>, span: std::time::Duration) -> Result<DateTime<Utc>, StoreError> {
    TimeDelta::from_std(span)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .ok_or_else(|| StoreError::Conflict(format!("duration {span:?} is too long")))
}

pub fn status(text: &str) -> Result<Status, Corrupt> {
    text.parse()
        .map_err(|e: kiln_pipeline::UnknownName| Corrupt(e.to_string()))
}

pub fn event(text: &str) -> Result<Event, Corrupt> {
    text.parse()
        .map_err(|e: kiln_pipeline::UnknownName| Corrupt(e.to_string()))
}

/// A name of one of the store's closed sets ([`crate::UserRole`],
/// [`crate::MemberRole`], [`crate::Visibility`]), as their `FromStr` reads it.
pub fn name<T: std::str::FromStr<Err = kiln_pipeline::UnknownName>>(
    text: &str,
) -> Result<T, Corrupt> {
    text.parse()
        .map_err(|e: kiln_pipeline::UnknownName| Corrupt(e.to_string()))
}

pub fn job_kind_str(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Git => "git",
        JobKind::Freestyle => "freestyle",
    }
}

pub fn job_kind(text: &str) -> Result<JobKind, Corrupt> {
    match text {
        "git" => Ok(JobKind::Git),
        "freestyle" => Ok(JobKind::Freestyle),
        other => Err(Corrupt(format!("unknown job kind `{other}`"))),
    }
}

pub fn token_kind_str(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::User => "user",
        TokenKind::Agent => "agent",
        TokenKind::Registration => "registration",
    }
}

pub fn token_kind(text: &str) -> Result<TokenKind, Corrupt> {
    match text {
        "user" => Ok(TokenKind::User),
        "agent" => Ok(TokenKind::Agent),
        "registration" => Ok(TokenKind::Registration),
        other => Err(Corrupt(format!("unknown token kind `{other}`"))),
    }
}

pub fn spec(json: &str) -> Result<kiln_pipeline::Task, Corrupt> {
    serde_json::from_str(json).map_err(|e| Corrupt(format!("task spec: {e}")))
}

pub fn spec_json(task: &kiln_pipeline::Task) -> Result<String, Corrupt> {
    // A Task is plain data; failing to encode it would be a bug upstream.
    serde_json::to_string(task).map_err(|e| Corrupt(format!("task spec: {e}")))
}
