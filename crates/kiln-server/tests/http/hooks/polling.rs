//! Polling on a real server and a real repository: the first poll starts
//! nothing, a new commit starts one `push` run, a new tag one `tag` run,
//! and a repository that cannot be reached shows on the job.

use std::path::Path;
use std::time::Duration;

use kiln_store::{JobStore, PollStore, Run, TriggerKind};
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Harness, git};

fn commit(dir: &Path, file: &str, text: &str) -> String {
    std::fs::write(dir.join(file), text).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", file]);
    git(dir, &["rev-parse", "HEAD"])
}

impl Harness {
    /// A git job polled every `10s` as the API takes it, then every second
    /// (below what the API allows) so that the test is quick.
    async fn polled_job(&self, name: &str, url: &str) {
        let body = json!({"kind": "git", "repository": url, "poll_interval": "10s"});
        let answer = self
            .json(
                Method::PUT,
                &format!("/api/v1/jobs/{name}"),
                &body.to_string(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert_eq!(answer.body["poll_interval"], "10s");
        let mut job = self.db.get_job(name).await.unwrap().unwrap();
        job.spec.poll_interval = Some(1);
        self.db
            .upsert_job(&job.spec, None, chrono::Utc::now())
            .await
            .unwrap();
    }

    /// Waits until the job has been polled at least `polls` more times.
    async fn polled(&self, name: &str, polls: usize) {
        let job = self.db.get_job(name).await.unwrap().unwrap();
        let mut last = None;
        let mut seen = 0;
        for _ in 0..300 {
            let at = self
                .db
                .get_poll(job.id)
                .await
                .unwrap()
                .and_then(|p| p.polled_at);
            if at.is_some() && at != last {
                seen += 1;
                last = at;
                if seen > polls {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job `{name}` was not polled {polls} times in 30 s");
    }

    async fn runs_when(&self, name: &str, count: usize) -> Vec<Run> {
        for _ in 0..300 {
            let runs = self.runs_of(name).await;
            if runs.len() >= count {
                return runs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job `{name}` has fewer than {count} runs after 30 s");
    }
}

/// A polled repository: nothing runs at the first poll; a pushed commit
/// starts one `push` run of it, a pushed tag one `tag` run, both made by
/// `poll`; polling on finds nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_starts_one_run_per_new_head_or_tag() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "--quiet", "--initial-branch=main"]);
    commit(dir.path(), ".kiln.yml", super::super::PIPELINE);
    let url = format!("file://{}", dir.path().display());
    let server = Harness::start().await;
    server.polled_job("polled", &url).await;
    server.polled("polled", 1).await;
    assert!(
        server.runs_of("polled").await.is_empty(),
        "the first poll only records"
    );

    let pushed = commit(dir.path(), "a.txt", "a\n");
    let runs = server.runs_when("polled", 1).await;
    assert_eq!(runs[0].event, kiln_store::Event::Push);
    assert_eq!(runs[0].branch.as_deref(), Some("main"));
    assert_eq!(runs[0].sha.as_deref(), Some(pushed.as_str()));
    assert_eq!(runs[0].trigger.kind, TriggerKind::Poll);
    assert_eq!(runs[0].error, None);

    git(dir.path(), &["tag", "-a", "-m", "release", "v1"]);
    let runs = server.runs_when("polled", 2).await;
    assert_eq!(runs[1].event, kiln_store::Event::Tag);
    assert_eq!(runs[1].tag.as_deref(), Some("v1"));
    assert_eq!(
        runs[1].sha.as_deref(),
        Some(pushed.as_str()),
        "the tag's commit"
    );
    assert_eq!(runs[1].trigger.kind, TriggerKind::Poll);

    server.polled("polled", 3).await;
    assert_eq!(server.runs_of("polled").await.len(), 2, "no run twice");
}

/// A repository that cannot be reached is no crash: the job shows why, and
/// the API refuses intervals shorter than ten seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_repository_shows_on_the_job() {
    let server = Harness::start().await;
    server
        .polled_job("gone", "file:///nonexistent/kiln/repo")
        .await;
    server.polled("gone", 1).await;
    let shown = server.get("/api/v1/jobs/gone").await;
    let error = shown.body["poll_error"].as_str().unwrap_or_default();
    assert!(error.contains("ls-remote"), "{}", shown.body);
    assert!(server.runs_of("gone").await.is_empty());

    let body = json!({"kind": "git", "repository": "file:///srv/x", "poll_interval": "5s"});
    let refused = server
        .json(Method::PUT, "/api/v1/jobs/fast", &body.to_string())
        .await;
    assert!(
        refused
            .problem(StatusCode::UNPROCESSABLE_ENTITY)
            .contains("at least `10s`")
    );
}
