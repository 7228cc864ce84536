//! `POST …/runs/{n}/rerun` repeats the run: its commit, branch, event and
//! the pipeline text it was made from, even after the job's pipeline
//! changed; a new trigger runs the pipeline as it is now. On a real server
//! whose worker runs the tasks.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{Server, create_git_job};
use crate::support::GitRepo;

const OLD: &str = "version: 1
tasks:
  old-build:
    steps:
      - run: echo \"old pipeline on $KILN_BRANCH ($KILN_EVENT)\"
";

const NEW: &str = "version: 1
tasks:
  new-build:
    steps:
      - run: echo \"new pipeline on $KILN_BRANCH ($KILN_EVENT)\"
";

fn task_names(run: &Value) -> Vec<&str> {
    run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

async fn post(server: &Server, path: &str, body: Value) -> Value {
    let (status, run) = server.send(Method::POST, path, body).await;
    assert_eq!(status, StatusCode::CREATED, "POST {path}: {run}");
    run
}

/// Waits for the run to succeed; returns the log of its task `task`.
async fn log_of(server: &Server, job: &str, number: i64, task: &str) -> String {
    let run = server.wait_for_run(job, number).await;
    assert_eq!(run["status"], "success", "{run:#}");
    let path = format!("/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/console");
    server.get(&path).await.text().await.unwrap()
}

#[tokio::test]
async fn a_freestyle_rerun_runs_the_old_pipeline_and_a_trigger_the_new() {
    let server = Server::start(None);
    let put = |pipeline: &str, branch: &str| {
        server.send(
            Method::PUT,
            "/api/v1/jobs/app",
            json!({"kind": "freestyle", "pipeline": pipeline, "default_branch": branch}),
        )
    };
    let (status, job) = put(OLD, "main").await;
    assert!(status.is_success(), "{job}");
    let first = post(&server, "/api/v1/jobs/app/runs", json!({})).await;
    assert_eq!(task_names(&first), ["old-build"]);
    let log = log_of(&server, "app", 1, "old-build").await;
    assert!(log.contains("old pipeline on main (api)"), "{log}");

    // The job changes: another pipeline, another default branch.
    let (status, job) = put(NEW, "release").await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["change"], "updated", "{job}");

    let rerun = post(&server, "/api/v1/jobs/app/runs/1/rerun", json!({})).await;
    assert_eq!(rerun["number"], 2);
    assert_eq!(task_names(&rerun), ["old-build"], "{rerun:#}");
    assert_eq!(rerun["branch"], "main");
    assert_eq!(rerun["event"], "api");
    let log = log_of(&server, "app", 2, "old-build").await;
    assert!(log.contains("old pipeline on main (api)"), "{log}");

    // A rerun of the rerun is still the first run again.
    let again = post(&server, "/api/v1/jobs/app/runs/2/rerun", json!({})).await;
    assert_eq!(task_names(&again), ["old-build"], "{again:#}");
    assert_eq!(again["branch"], "main");
    server.wait_for_run("app", 3).await;

    let fresh = post(&server, "/api/v1/jobs/app/runs", json!({})).await;
    assert_eq!(fresh["number"], 4);
    assert_eq!(task_names(&fresh), ["new-build"], "{fresh:#}");
    let log = log_of(&server, "app", 4, "new-build").await;
    assert!(log.contains("new pipeline on release (api)"), "{log}");
}

#[tokio::test]
async fn a_git_rerun_runs_the_same_commit_and_pipeline_after_the_path_changed() {
    let server = Server::start(None);
    let repo = GitRepo::new(&[(".kiln.yml", OLD), ("ci/other.yml", NEW)]);
    let sha = repo.head();
    create_git_job(&server, "app", &repo).await;
    let first = post(&server, "/api/v1/jobs/app/runs", json!({})).await;
    assert_eq!(first["sha"], sha.as_str());
    assert_eq!(task_names(&first), ["old-build"]);
    server.wait_for_run("app", 1).await;

    // A newer commit, and the job now reads another file.
    let newer = repo.commit(&[("README", "newer\n")], "newer");
    let (status, job) = server
        .send(
            Method::PUT,
            "/api/v1/jobs/app",
            json!({"kind": "git", "repository": repo.url(), "pipeline_path": "ci/other.yml"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");

    let rerun = post(&server, "/api/v1/jobs/app/runs/1/rerun", json!({})).await;
    assert_eq!(rerun["sha"], sha.as_str(), "the same commit, not the head");
    assert_eq!(rerun["branch"], "main");
    assert_eq!(task_names(&rerun), ["old-build"], "{rerun:#}");
    let log = log_of(&server, "app", 2, "old-build").await;
    assert!(log.contains("old pipeline on main (api)"), "{log}");

    let fresh = post(&server, "/api/v1/jobs/app/runs", json!({})).await;
    assert_eq!(fresh["sha"], newer.as_str());
    assert_eq!(task_names(&fresh), ["new-build"], "{fresh:#}");
}
