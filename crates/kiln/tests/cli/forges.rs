//! Forges end to end: `kiln forge set` and `kiln job create --forge`, then
//! signed GitHub deliveries naming real commits of a real repository, run
//! by the server's agent to their end, with the variables a pull request's
//! tasks see.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{ADMIN, Server};
use crate::support::{GitRepo, kiln_as};

pub(crate) const SECRET: &str = "a webhook secret";

const PIPELINE: &str = r#"version: 1
tasks:
  show:
    steps:
      - run: echo "event=$KILN_EVENT branch=$KILN_BRANCH sha=$KILN_COMMIT_SHA pr=${KILN_PR_NUMBER:-none} head=${KILN_PR_HEAD_BRANCH:-none} base=${KILN_PR_BASE_BRANCH:-none} tag=${KILN_TAG:-none}"
"#;

pub(crate) fn kiln(server: &Server, args: &[&str], stdin: &str) -> String {
    let (ok, text) = kiln_as(server, ADMIN, args, stdin);
    assert!(ok, "kiln {args:?}: {text}");
    text
}

/// A repository as GitHub describes it in its events, cloned from `url`.
fn repository(url: &str) -> Value {
    json!({"id": 42, "full_name": "team/app", "clone_url": url,
           "html_url": "https://github.example.com/team/app"})
}

pub(crate) async fn deliver(server: &Server, event: &str, delivery: &str, body: &Value) -> Value {
    let body = serde_json::to_vec(body).unwrap();
    let signature = kiln_forge::signature::hmac_sha256_hex(SECRET.as_bytes(), &body);
    let response = server
        .request(Method::POST, "/hooks/hub", None)
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

/// Polls until job `app` has run `number`.
async fn run_made(server: &Server, number: i64) {
    for _ in 0..300 {
        let runs = server.json("/api/v1/jobs/app/runs").await;
        if runs["runs"].as_array().unwrap().len() as i64 >= number {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("run {number} of app was never made");
}

async fn log_of(server: &Server, number: i64) -> String {
    let path = format!("/api/v1/jobs/app/runs/{number}/tasks/show/results/console");
    server.get(&path).await.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_pushes_and_pull_requests_run_their_commits_to_the_end() {
    let server = Server::start(None);
    let repo = GitRepo::new(&[(".kiln.yml", PIPELINE)]);
    let main = repo.head();
    // A pull request's head that no branch holds, only the pull ref.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    let head = repo.commit(&[("feature.txt", "new\n")], "feature");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["update-ref", "refs/pull/7/head", &head]);
    repo.git(&["branch", "-q", "-D", "feature"]);

    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), format!("{SECRET}\n")).unwrap();
    let secret_path = secret_file.path().to_str().unwrap();
    let set = kiln(
        &server,
        &[
            "forge",
            "set",
            "hub",
            "--kind",
            "github",
            "--api-url",
            "https://api.github.com",
            "--webhook-secret-file",
            secret_path,
            "--token-file",
            "-",
        ],
        "a-token\n",
    );
    assert!(set.contains("created forge `hub` (github)"), "{set}");
    let listed = kiln(&server, &["forge", "list"], "");
    assert!(listed.contains("hub") && listed.contains("yes"), "{listed}");
    let url = repo.url();
    kiln(
        &server,
        &[
            "job",
            "create",
            "app",
            "--repository",
            &url,
            "--forge",
            "hub",
        ],
        "",
    );

    let push = json!({
        "ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000",
        "after": main, "head_commit": {"id": main},
        "repository": repository(&url), "sender": {"login": "ada"},
    });
    let answer = deliver(&server, "push", "push-1", &push).await;
    assert_eq!(answer["queued"], json!(["app"]), "{answer}");
    run_made(&server, 1).await;
    let run = server.wait_for_run("app", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(run["trigger"], json!({"kind": "webhook", "user": "ada"}));
    let log = log_of(&server, 1).await;
    assert!(
        log.contains(&format!(
            "event=push branch=main sha={main} pr=none head=none base=none tag=none"
        )),
        "{log}"
    );

    let pull = json!({
        "action": "opened", "number": 7,
        "pull_request": {
            "number": 7, "title": "A feature", "user": {"login": "bea"},
            "head": {"ref": "feature", "sha": head, "repo": {"id": 42}},
            "base": {"ref": "main", "sha": main, "repo": {"id": 42}},
        },
        "repository": repository(&url), "sender": {"login": "bea"},
    });
    let answer = deliver(&server, "pull_request", "pr-1", &pull).await;
    assert_eq!(answer["queued"], json!(["app"]), "{answer}");
    run_made(&server, 2).await;
    let run = server.wait_for_run("app", 2).await;
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(run["sha"], json!(head));
    assert_eq!(
        run["pull_request"],
        json!({"number": 7, "title": "A feature", "author": "bea", "head_branch": "feature",
               "base_branch": "main", "from_fork": false})
    );
    let log = log_of(&server, 2).await;
    assert!(
        log.contains(&format!(
            "event=pull_request branch=main sha={head} pr=7 head=feature base=main tag=none"
        )),
        "{log}"
    );

    // The same delivery again starts nothing.
    let again = deliver(&server, "pull_request", "pr-1", &pull).await;
    assert_eq!(again["queued"], json!([]), "{again}");
    // A rerun of a pull request's run is that pull request's again.
    let (status, rerun) = server
        .send(Method::POST, "/api/v1/jobs/app/runs/2/rerun", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rerun}");
    assert_eq!(rerun["trigger"]["kind"], "rerun");
    assert_eq!(rerun["pull_request"]["number"], 7);
    let runs = server.json("/api/v1/jobs/app/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 3);

    // A tag pushed: a run of its commit, with no branch, that knows its tag.
    repo.git(&["tag", "v1.0"]);
    let tag = json!({
        "ref": "refs/tags/v1.0", "before": "0000000000000000000000000000000000000000",
        "after": main, "head_commit": {"id": main},
        "repository": repository(&url), "sender": {"login": "ada"},
    });
    let answer = deliver(&server, "push", "tag-1", &tag).await;
    assert_eq!(answer["queued"], json!(["app"]), "{answer}");
    run_made(&server, 4).await;
    let run = server.wait_for_run("app", 4).await;
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(
        (&run["event"], &run["branch"], &run["tag"]),
        (&json!("tag"), &Value::Null, &json!("v1.0"))
    );
    let log = log_of(&server, 4).await;
    assert!(
        log.contains(&format!(
            "event=tag branch= sha={main} pr=none head=none base=none tag=v1.0"
        )),
        "{log}"
    );
}
