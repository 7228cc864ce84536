//! Kiln's adapter to code hosts — "forges" (DESIGN.md §6): GitHub (and
//! GitHub Enterprise), GitLab, and Gitea with Forgejo.
//!
//! - [`signature`]: is a webhook delivery from the forge? Checked before
//!   anything else of it is read.
//! - [`event`]: a delivery's body and headers as one forge-neutral
//!   [`event::Trigger`] (push, tag, pull request), or the reason Kiln
//!   ignores it.
//! - [`repository`]: whether a job's `repository` names the event's.
//! - [`status`]: the HTTP request that reports a run's state on a commit,
//!   and what to do with the forge's answer.
//!
//! Architecture invariant: no I/O and no HTTP client here. The server
//! (`kiln-server`) receives the requests, stores, and sends; this crate
//! only knows each forge's published contract, so every rule is testable
//! against real payloads without a network.

pub mod event;
pub mod repository;
pub mod signature;
pub mod status;

use std::fmt;
use std::str::FromStr;

/// Which forge's contract a forge speaks. Forgejo is a Gitea fork with the
/// same webhooks and API, so it is `gitea`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForgeKind {
    Github,
    Gitlab,
    Gitea,
}

impl ForgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Github => "github",
            ForgeKind::Gitlab => "gitlab",
            ForgeKind::Gitea => "gitea",
        }
    }
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind that is none of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown forge kind `{0}`: use `github`, `gitlab` or `gitea` (Forgejo is `gitea`)")]
pub struct UnknownKind(pub String);

impl FromStr for ForgeKind {
    type Err = UnknownKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "github" => Ok(ForgeKind::Github),
            "gitlab" => Ok(ForgeKind::Gitlab),
            "gitea" | "forgejo" => Ok(ForgeKind::Gitea),
            other => Err(UnknownKind(other.to_string())),
        }
    }
}

/// A commit id that stands for "nothing": the `before` of a new branch,
/// the `after` of a deleted one.
pub(crate) fn is_zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}
