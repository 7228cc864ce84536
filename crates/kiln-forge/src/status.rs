//! Commit statuses: the request that shows a run's state on its commit,
//! and what to do with the forge's answer.
//!
//! | run | GitHub | GitLab | Gitea |
//! | --- | --- | --- | --- |
//! | queued, blocked | `pending` | `pending` | `pending` |
//! | running | `pending` | `running` | `pending` |
//! | success, skipped | `success` | `success` | `success` |
//! | failure, timed out | `failure` | `failed` | `failure` |
//! | cancelled | `error` | `canceled` | `error` |
//! | error | `error` | `failed` | `error` |
//!
//! GitHub and Gitea have no "running" and no "cancelled"; the description
//! says what happened, in at most 140 characters (GitHub's limit).

use std::time::Duration;

use serde_json::json;

use crate::ForgeKind;

/// The most a description holds, in characters.
pub const DESCRIPTION_LIMIT: usize = 140;

/// A run's state on one commit, to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub kind: ForgeKind,
    /// The forge's API root, e.g. `https://api.github.com`,
    /// `https://gitlab.example.com/api/v4`, `https://gitea.example.com/api/v1`.
    pub api_url: String,
    /// GitHub and Gitea: `owner/name`; GitLab: the project id (or its
    /// path, which is percent-encoded here).
    pub repository: String,
    pub sha: String,
    /// Kiln's run status: `queued`, `running`, `success`, …
    pub run_status: String,
    /// `kiln/{job}`.
    pub context: String,
    /// The run's page.
    pub target_url: Option<String>,
    pub description: String,
}

/// An HTTP request, for the server's client to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: serde_json::Value,
}

/// The forge's word for a run's status.
pub fn forge_state(kind: ForgeKind, run_status: &str) -> &'static str {
    match (kind, run_status) {
        (_, "success" | "skipped") => "success",
        (ForgeKind::Gitlab, "running") => "running",
        (ForgeKind::Gitlab, "failure" | "timed_out" | "error") => "failed",
        (ForgeKind::Gitlab, "cancelled") => "canceled",
        (_, "failure" | "timed_out") => "failure",
        (_, "cancelled" | "error") => "error",
        _ => "pending",
    }
}

/// Whether a run in `run_status` has its last word said.
pub fn is_final(run_status: &str) -> bool {
    matches!(
        run_status,
        "success" | "skipped" | "failure" | "timed_out" | "cancelled" | "error"
    )
}

/// `text` cut to [`DESCRIPTION_LIMIT`] characters, ending in `…` when cut.
pub fn description(text: &str) -> String {
    if text.chars().count() <= DESCRIPTION_LIMIT {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(DESCRIPTION_LIMIT - 1).collect();
    cut.push('…');
    cut
}

/// What a run's status says in a few words, for the description:
/// `queued`, `running`, or at the end how many tasks passed and which
/// failed ("3 of 4 tasks passed; lint failed"). `tasks` are the run's
/// tasks' names and statuses; `error` the run's own error, said when no
/// task ran. Cut to [`DESCRIPTION_LIMIT`].
pub fn summary(run_status: &str, tasks: &[(&str, &str)], error: Option<&str>) -> String {
    let text = match run_status {
        "queued" | "pending" => "queued".to_string(),
        "blocked" => "waiting for a maintainer's approval".to_string(),
        "running" => "running".to_string(),
        _ => {
            let ran: Vec<&(&str, &str)> = tasks.iter().filter(|(_, s)| *s != "skipped").collect();
            let passed = ran.iter().filter(|(_, s)| *s == "success").count();
            let failed: Vec<&str> = ran
                .iter()
                .filter(|(_, s)| matches!(*s, "failure" | "error" | "timed_out"))
                .map(|(name, _)| *name)
                .collect();
            let mut text = match (ran.len(), error) {
                (0, Some(error)) => format!("error: {error}"),
                (0, None) => "no task ran".to_string(),
                (1, _) => format!("{passed} of 1 task passed"),
                (n, _) => format!("{passed} of {n} tasks passed"),
            };
            if !failed.is_empty() {
                text.push_str(&format!("; {} failed", failed.join(", ")));
            }
            match run_status {
                "cancelled" => format!("cancelled: {text}"),
                "timed_out" => format!("timed out: {text}"),
                _ => text,
            }
        }
    };
    description(&text)
}

/// The request that sets `update` on the forge, authenticated by `token`.
pub fn request(update: &StatusUpdate, token: &str) -> Request {
    let api = update.api_url.trim_end_matches('/');
    let state = forge_state(update.kind, &update.run_status);
    let description = description(&update.description);
    match update.kind {
        ForgeKind::Github => Request {
            method: http::Method::POST,
            url: format!("{api}/repos/{}/statuses/{}", update.repository, update.sha),
            headers: vec![
                ("authorization", format!("Bearer {token}")),
                ("accept", "application/vnd.github+json".into()),
                ("x-github-api-version", "2022-11-28".into()),
            ],
            body: json!({
                "state": state,
                "target_url": update.target_url,
                "description": description,
                "context": update.context,
            }),
        },
        ForgeKind::Gitea => Request {
            method: http::Method::POST,
            url: format!("{api}/repos/{}/statuses/{}", update.repository, update.sha),
            headers: vec![("authorization", format!("token {token}"))],
            body: json!({
                "state": state,
                "target_url": update.target_url,
                "description": description,
                "context": update.context,
            }),
        },
        ForgeKind::Gitlab => Request {
            method: http::Method::POST,
            url: format!(
                "{api}/projects/{}/statuses/{}",
                percent_encode_path(&update.repository),
                update.sha
            ),
            headers: vec![("private-token", token.to_string())],
            body: json!({
                "state": state,
                "target_url": update.target_url,
                "description": description,
                "name": update.context,
            }),
        },
    }
}

/// GitLab takes `group/name` as one path segment, slashes encoded.
fn percent_encode_path(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What the forge's answer means for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Delivered,
    /// Try again: after the forge's own wait when it names one.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Trying again would fail the same way (bad token, no such commit).
    Permanent(String),
}

/// Reads the forge's answer. `now_unix` is the time of the answer, for
/// rate-limit reset headers that name a moment rather than a wait.
pub fn classify(status: u16, headers: &http::HeaderMap, body: &str, now_unix: u64) -> Answer {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let short_body: String = body.chars().take(200).collect();
    if (200..300).contains(&status) {
        return Answer::Delivered;
    }
    // GitHub answers a spent rate limit with 403 (or 429) and
    // `x-ratelimit-remaining: 0`; GitLab with 429 and `RateLimit-Reset`.
    let rate_limited =
        status == 429 || (status == 403 && text("x-ratelimit-remaining") == Some("0"));
    if rate_limited || status >= 500 {
        let retry_after = text("retry-after").and_then(|v| v.parse::<u64>().ok());
        let reset = text("x-ratelimit-reset")
            .or_else(|| text("ratelimit-reset"))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|at| at.saturating_sub(now_unix));
        let after = retry_after.or(reset).map(Duration::from_secs);
        let reason = if rate_limited {
            format!("rate limited ({status})")
        } else {
            format!("the forge answered {status}: {short_body}")
        };
        return Answer::Retry { after, reason };
    }
    Answer::Permanent(format!("the forge answered {status}: {short_body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(kind: ForgeKind, status: &str) -> StatusUpdate {
        StatusUpdate {
            kind,
            api_url: "https://forge.example/api/".into(),
            repository: "octo/app".into(),
            sha: "6113728f27ae82c7b1a177c8d03f9e96e0adf246".into(),
            run_status: status.into(),
            context: "kiln/app".into(),
            target_url: Some("https://ci.example/jobs/app/runs/4".into()),
            description: "3 of 4 tasks passed; lint failed".into(),
        }
    }

    #[test]
    fn each_forge_gets_its_own_words() {
        assert_eq!(forge_state(ForgeKind::Github, "running"), "pending");
        assert_eq!(forge_state(ForgeKind::Gitlab, "running"), "running");
        assert_eq!(forge_state(ForgeKind::Gitea, "running"), "pending");
        assert_eq!(forge_state(ForgeKind::Gitlab, "failure"), "failed");
        assert_eq!(forge_state(ForgeKind::Gitlab, "cancelled"), "canceled");
        assert_eq!(forge_state(ForgeKind::Github, "cancelled"), "error");
        assert_eq!(forge_state(ForgeKind::Github, "timed_out"), "failure");
        assert_eq!(forge_state(ForgeKind::Gitea, "queued"), "pending");
        assert_eq!(forge_state(ForgeKind::Gitea, "blocked"), "pending");
    }

    #[test]
    fn requests_follow_each_forges_api() {
        let github = request(&update(ForgeKind::Github, "failure"), "t0k");
        assert_eq!(
            github.url,
            "https://forge.example/api/repos/octo/app/statuses/6113728f27ae82c7b1a177c8d03f9e96e0adf246"
        );
        assert_eq!(github.body["state"], "failure");
        assert_eq!(github.body["context"], "kiln/app");
        assert!(
            github
                .headers
                .contains(&("authorization", "Bearer t0k".into()))
        );

        let mut gitlab_update = update(ForgeKind::Gitlab, "running");
        gitlab_update.repository = "group/sub/app".into();
        let gitlab = request(&gitlab_update, "t0k");
        assert_eq!(
            gitlab.url,
            "https://forge.example/api/projects/group%2Fsub%2Fapp/statuses/6113728f27ae82c7b1a177c8d03f9e96e0adf246"
        );
        assert_eq!(gitlab.body["state"], "running");
        assert_eq!(gitlab.body["name"], "kiln/app");
        assert!(gitlab.headers.contains(&("private-token", "t0k".into())));

        let gitea = request(&update(ForgeKind::Gitea, "success"), "t0k");
        assert!(
            gitea
                .headers
                .contains(&("authorization", "token t0k".into()))
        );
        assert_eq!(gitea.body["state"], "success");
    }

    #[test]
    fn summaries_say_what_happened() {
        let tasks = [
            ("build", "success"),
            ("test", "success"),
            ("docs", "success"),
            ("lint", "failure"),
            ("deploy", "skipped"),
        ];
        assert_eq!(
            summary("failure", &tasks, None),
            "3 of 4 tasks passed; lint failed"
        );
        assert_eq!(summary("success", &tasks[..3], None), "3 of 3 tasks passed");
        assert_eq!(summary("queued", &tasks, None), "queued");
        assert_eq!(summary("running", &tasks, None), "running");
        assert_eq!(
            summary("cancelled", &[("build", "cancelled")], None),
            "cancelled: 0 of 1 task passed"
        );
        assert_eq!(
            summary("error", &[], Some(".kiln.yml:3: unknown key `stpes`")),
            "error: .kiln.yml:3: unknown key `stpes`"
        );
        let many: Vec<String> = (0..60).map(|i| format!("task-{i}")).collect();
        let failing: Vec<(&str, &str)> = many.iter().map(|n| (n.as_str(), "failure")).collect();
        assert_eq!(
            summary("failure", &failing, None).chars().count(),
            DESCRIPTION_LIMIT
        );
    }

    #[test]
    fn descriptions_are_cut_to_the_limit() {
        let long = "é".repeat(300);
        let cut = description(&long);
        assert_eq!(cut.chars().count(), DESCRIPTION_LIMIT);
        assert!(cut.ends_with('…'));
        assert_eq!(description("short"), "short");
    }

    #[test]
    fn answers_say_whether_to_try_again() {
        let none = http::HeaderMap::new();
        assert_eq!(classify(201, &none, "", 0), Answer::Delivered);
        assert!(matches!(
            classify(502, &none, "", 0),
            Answer::Retry { after: None, .. }
        ));
        assert!(
            matches!(classify(422, &none, "No commit found", 0), Answer::Permanent(m) if m.contains("No commit found"))
        );

        let mut wait = http::HeaderMap::new();
        wait.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            classify(429, &wait, "", 0),
            Answer::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "rate limited (429)".into()
            }
        );

        let mut spent = http::HeaderMap::new();
        spent.insert("x-ratelimit-remaining", "0".parse().unwrap());
        spent.insert("x-ratelimit-reset", "1000060".parse().unwrap());
        assert_eq!(
            classify(403, &spent, "", 1_000_000),
            Answer::Retry {
                after: Some(Duration::from_secs(60)),
                reason: "rate limited (403)".into()
            }
        );
        // A 403 with limit left is a token without the right.
        assert!(matches!(classify(403, &none, "", 0), Answer::Permanent(_)));
    }
}
