//! `when.paths` on a real server: real repositories, signed GitHub pushes
//! and pull requests, and which tasks of the run are skipped, and why.

use std::path::Path;

use kiln_store::{JobStore, RunStore, Status};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Harness, SECRET, a_push, git, npm_examples};

/// Four tasks, one for each kind of filter.
const PIPELINE: &str = "version: 1
tasks:
  src:
    when: { paths: [\"src/**\"] }
    steps: [{ run: echo src }]
  not-docs:
    when: { paths: [\"**\", \"!docs/**\"] }
    steps: [{ run: echo not docs }]
  docs:
    when: { paths: docs/** }
    steps: [{ run: echo docs }]
  always:
    steps: [{ run: echo always }]
";

const NO_MATCH: &str = "no changed file matches `when.paths`";

fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

impl Harness {
    /// Delivers a push of `branch` from `before` to `after` and waits for
    /// its run; returns each task's name, status and reason.
    async fn pushed(
        &self,
        url: &str,
        branch: &str,
        before: &str,
        after: &str,
    ) -> Vec<(String, Status, Option<String>)> {
        let mut push = a_push(&npm_examples());
        push["ref"] = json!(format!("refs/heads/{branch}"));
        push["before"] = json!(before);
        push["after"] = json!(after);
        push["created"] = json!(before.bytes().all(|b| b == b'0'));
        push["head_commit"]["id"] = json!(after);
        push["repository"]["clone_url"] = json!(url);
        let delivery = format!("push-{before}-{after}");
        let (status, answer) = self
            .github("hub", "push", &delivery, serde_json::to_vec(&push).unwrap())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        self.last_run_tasks().await
    }

    async fn last_run_tasks(&self) -> Vec<(String, Status, Option<String>)> {
        self.settled().await;
        let runs = self.runs_of("app").await;
        let job = self.db.get_job("app").await.unwrap().unwrap();
        let last = runs.last().expect("a run");
        let detail = self.db.get_run(job.id, last.number).await.unwrap().unwrap();
        assert_eq!(detail.run.error, None);
        detail
            .tasks
            .into_iter()
            .map(|t| (t.name, t.status, t.reason))
            .collect()
    }
}

fn skipped(tasks: &[(String, Status, Option<String>)]) -> Vec<(&str, Option<&str>)> {
    tasks
        .iter()
        .filter(|(_, status, _)| *status == Status::Skipped)
        .map(|(name, _, reason)| (name.as_str(), reason.as_deref()))
        .collect()
}

async fn server_with_repository(dir: &Path) -> (Harness, String, String) {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    let first = commit(
        dir,
        &[
            (".kiln.yml", PIPELINE),
            ("src/lib.rs", "// v1\n"),
            ("docs/guide.md", "v1\n"),
        ],
        "first",
    );
    let server = Harness::start().await;
    server.forge("hub", "github", Some(SECRET)).await;
    let url = format!("file://{}", dir.display());
    server.hooked_job("app", &url, "hub", "approve").await;
    (server, url, first)
}

/// A push changing only `docs/` skips the tasks whose paths leave docs
/// out, saying so, and runs the others; a push changing `src/` runs the
/// source tasks and skips the docs one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_runs_the_tasks_its_changed_files_match() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, first) = server_with_repository(dir.path()).await;

    let docs = commit(dir.path(), &[("docs/guide.md", "v2\n")], "docs");
    let tasks = server.pushed(&url, "main", &first, &docs).await;
    assert_eq!(
        skipped(&tasks),
        [("src", Some(NO_MATCH)), ("not-docs", Some(NO_MATCH))],
        "{tasks:?}"
    );

    let src = commit(dir.path(), &[("src/lib.rs", "// v2\n")], "src");
    let tasks = server.pushed(&url, "main", &docs, &src).await;
    assert_eq!(skipped(&tasks), [("docs", Some(NO_MATCH))], "{tasks:?}");
    assert!(
        tasks
            .iter()
            .any(|(name, status, _)| name == "src" && *status == Status::Queued),
        "{tasks:?}"
    );
}

/// A new branch's push has no change set: every task runs, whatever its
/// paths. So does a run from the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_branch_runs_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, _first) = server_with_repository(dir.path()).await;
    git(dir.path(), &["checkout", "--quiet", "-b", "topic"]);
    let topic = commit(dir.path(), &[("docs/guide.md", "topic\n")], "topic");
    let zeros = "0".repeat(40);
    let tasks = server.pushed(&url, "topic", &zeros, &topic).await;
    assert_eq!(skipped(&tasks), [], "{tasks:?}");
    assert_eq!(tasks.len(), 4);

    let answer = server
        .json(
            reqwest::Method::POST,
            "/api/v1/jobs/app/runs",
            &json!({"branch": "topic"}).to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let tasks = server.last_run_tasks().await;
    assert_eq!(skipped(&tasks), [], "{tasks:?}");
}

/// A pull request's change set runs from the merge base of its base and
/// head: the base branch moving on (here, in docs) after the pull request
/// branched off does not count as the pull request's change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_requests_change_set_starts_at_the_merge_base() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, _first) = server_with_repository(dir.path()).await;
    git(dir.path(), &["checkout", "--quiet", "-b", "feature"]);
    let head = commit(dir.path(), &[("src/lib.rs", "// feature\n")], "feature");
    git(dir.path(), &["checkout", "--quiet", "main"]);
    let base = commit(dir.path(), &[("docs/guide.md", "main moved\n")], "docs");
    git(dir.path(), &["update-ref", "refs/pull/1/head", &head]);

    let examples = npm_examples();
    let (_, mut pr): (String, Value) = examples
        .iter()
        .find(|(e, p)| e == "pull_request" && p["action"] == "opened")
        .cloned()
        .unwrap();
    pr["number"] = json!(1);
    pr["pull_request"]["number"] = json!(1);
    pr["pull_request"]["head"]["sha"] = json!(head);
    pr["pull_request"]["head"]["ref"] = json!("feature");
    pr["pull_request"]["base"]["ref"] = json!("main");
    pr["pull_request"]["base"]["sha"] = json!(base);
    pr["pull_request"]["head"]["repo"] = pr["pull_request"]["base"]["repo"].clone();
    pr["repository"]["clone_url"] = json!(url);
    pr["pull_request"]["base"]["repo"]["clone_url"] = json!(url);
    let (status, answer) = server
        .github(
            "hub",
            "pull_request",
            "pr-1",
            serde_json::to_vec(&pr).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let tasks = server.last_run_tasks().await;
    assert_eq!(skipped(&tasks), [("docs", Some(NO_MATCH))], "{tasks:?}");
}
