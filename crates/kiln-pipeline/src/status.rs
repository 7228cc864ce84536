use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Status of a run, a task or a step (DESIGN.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A run (and its tasks) that waits for a maintainer's approval before
    /// anything of it may run: a pull request from a fork.
    Blocked,
    Pending,
    Queued,
    Running,
    Success,
    Failure,
    Cancelled,
    TimedOut,
    Skipped,
    Error,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Blocked,
        Status::Pending,
        Status::Queued,
        Status::Running,
        Status::Success,
        Status::Failure,
        Status::Cancelled,
        Status::TimedOut,
        Status::Skipped,
        Status::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Blocked => "blocked",
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Cancelled => "cancelled",
            Status::TimedOut => "timed_out",
            Status::Skipped => "skipped",
            Status::Error => "error",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Status::Blocked | Status::Pending | Status::Queued | Status::Running
        )
    }
}

/// A status or event name that is not one of Kiln's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.what, self.name)
    }
}

impl std::error::Error for UnknownName {}

impl FromStr for Status {
    type Err = UnknownName;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownName {
                what: "status",
                name: text.to_string(),
            })
    }
}

impl FromStr for Event {
    type Err = UnknownName;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Event::ALL
            .into_iter()
            .find(|e| e.as_str() == text)
            .ok_or_else(|| UnknownName {
                what: "event",
                name: text.to_string(),
            })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a run; `when.event` filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Push,
    PullRequest,
    Tag,
    Cron,
    Manual,
    Api,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::Push,
        Event::PullRequest,
        Event::Tag,
        Event::Cron,
        Event::Manual,
        Event::Api,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Push => "push",
            Event::PullRequest => "pull_request",
            Event::Tag => "tag",
            Event::Cron => "cron",
            Event::Manual => "manual",
            Event::Api => "api",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
