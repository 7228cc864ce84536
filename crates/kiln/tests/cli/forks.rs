//! Pull requests from forks end to end (DESIGN.md §6): signed GitHub
//! deliveries of a fork's pull request naming real commits that only the
//! base repository's `refs/pull/N/head` holds, run by the server's agent.
//! With `fork_prs: approve` the run waits, `blocked`, for a maintainer's
//! `kiln approve`, which holds for that head commit only; with `run` it
//! runs at once. Either way only the secrets set with `--allow-forks`
//! reach it, and a task naming another ends `error` saying so.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::forges::{SECRET, deliver, kiln};
use crate::server::Server;
use crate::support::{GitRepo, kiln_as};
use crate::ui::{Browser, PASSWORD};

const PUBLIC_VALUE: &str = "shared-with-forks-7";
const DEPLOY_VALUE: &str = "never-for-forks-9";

/// The fork's first commit: a task using the one secret forks may have.
const SHARED_ONLY: &str = r#"version: 1
tasks:
  shared:
    secrets: [PUBLIC_TOKEN]
    steps:
      - run: test "$PUBLIC_TOKEN" = "shared-with-forks-7" && echo "public=$PUBLIC_TOKEN"
"#;

/// The fork's second commit: it also asks for the deploy key.
const WANTS_DEPLOY: &str = r#"version: 1
tasks:
  shared:
    secrets: [PUBLIC_TOKEN]
    steps:
      - run: test "$PUBLIC_TOKEN" = "shared-with-forks-7" && echo "public=$PUBLIC_TOKEN"
  deploy:
    secrets: [DEPLOY_KEY]
    steps:
      - run: echo "deploy=$DEPLOY_KEY"
"#;

/// A user with a password and `role` on the jobs `app` and `app-run`;
/// returns a token of theirs.
async fn member(server: &Server, name: &str, role: &str) -> String {
    let (status, body) = server
        .send(
            Method::POST,
            "/api/v1/users",
            json!({"name": name, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for job in ["app", "app-run"] {
        let path = format!("/api/v1/jobs/{job}/members/{name}");
        let (status, body) = server.send(Method::PUT, &path, json!({"role": role})).await;
        assert!(status.is_success(), "{body}");
    }
    let (status, token) = server
        .send(
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "cli", "user": name}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    token["token"].as_str().unwrap().to_string()
}

/// A fork's pull request #3 into `main` of the repository at `url`, its
/// head at `head`: the head repository's id is not the base's.
fn fork_pull_request(action: &str, url: &str, head: &str, main: &str) -> Value {
    let repository = json!({"id": 42, "full_name": "team/app", "clone_url": url,
                            "html_url": "https://github.example.com/team/app"});
    json!({
        "action": action, "number": 3,
        "pull_request": {
            "number": 3, "title": "Improve things", "user": {"login": "stranger"},
            "head": {"ref": "improve", "sha": head,
                     "repo": {"id": 777, "full_name": "stranger/app"}},
            "base": {"ref": "main", "sha": main, "repo": {"id": 42}},
        },
        "repository": repository, "sender": {"login": "stranger"},
    })
}

/// Run `number` of `job`, once the webhook worker has made it.
async fn run_made(server: &Server, job: &str, number: i64) -> Value {
    for _ in 0..300 {
        let response = server
            .get(&format!("/api/v1/jobs/{job}/runs/{number}"))
            .await;
        if response.status() == StatusCode::OK {
            return response.json().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("run {number} of {job} was never made");
}

async fn log_of(server: &Server, job: &str, number: i64, task: &str) -> String {
    let path = format!("/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/console");
    server.get(&path).await.text().await.unwrap()
}

fn task<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {run:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_pull_requests_wait_for_approval_and_get_only_fork_secrets() {
    let server = Server::start(None);
    let repo = GitRepo::new(&[(".kiln.yml", SHARED_ONLY)]);
    let main = repo.head();
    // The fork's commits: on the forge only `refs/pull/3/head` holds them.
    repo.git(&["checkout", "-q", "-b", "improve"]);
    let first = repo.commit(&[("a.txt", "a\n")], "first");
    let second = repo.commit(&[(".kiln.yml", WANTS_DEPLOY)], "second");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["update-ref", "refs/pull/3/head", &first]);
    repo.git(&["branch", "-q", "-D", "improve"]);

    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), format!("{SECRET}\n")).unwrap();
    kiln(
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
            secret_file.path().to_str().unwrap(),
        ],
        "",
    );
    let url = repo.url();
    for (job, fork_prs) in [("app", "approve"), ("app-run", "run")] {
        kiln(
            &server,
            &[
                "job",
                "create",
                job,
                "--repository",
                &url,
                "--forge",
                "hub",
                "--fork-prs",
                fork_prs,
            ],
            "",
        );
        let set = kiln(
            &server,
            &["secret", "set", job, "PUBLIC_TOKEN", "--allow-forks"],
            PUBLIC_VALUE,
        );
        assert!(set.contains("pull requests from forks receive it"), "{set}");
        kiln(&server, &["secret", "set", job, "DEPLOY_KEY"], DEPLOY_VALUE);
    }
    let listed = server.json("/api/v1/jobs/app/secrets").await;
    let allowed: Vec<(&str, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["allow_forks"] == true))
        .collect();
    assert_eq!(allowed, [("DEPLOY_KEY", false), ("PUBLIC_TOKEN", true)]);
    let developer = member(&server, "dev", "developer").await;
    let maintainer = member(&server, "maint", "maintainer").await;

    // Opened: `app` waits; `app-run` runs at once.
    let answer = deliver(
        &server,
        "pull_request",
        "fork-1",
        &fork_pull_request("opened", &url, &first, &main),
    )
    .await;
    assert_eq!(answer["queued"], json!(["app", "app-run"]), "{answer}");
    let blocked = run_made(&server, "app", 1).await;
    assert_eq!(blocked["status"], "blocked", "{blocked:#}");
    assert_eq!(blocked["sha"], json!(first));
    assert_eq!(blocked["pull_request"]["from_fork"], true);
    assert_eq!(task(&blocked, "shared")["status"], "blocked");
    run_made(&server, "app-run", 1).await;
    let ran = server.wait_for_run("app-run", 1).await;
    assert_eq!(ran["status"], "success", "{ran:#}");
    // Nothing of the blocked run ran meanwhile.
    let still = server.json("/api/v1/jobs/app/runs/1").await;
    assert_eq!(still["status"], "blocked", "{still:#}");
    assert_eq!(task(&still, "shared")["started_at"], Value::Null);

    // A developer may not approve; a maintainer may, once.
    let (ok, refused) = kiln_as(&server, &developer, &["approve", "app", "1"], "");
    assert!(!ok, "{refused}");
    let response = server
        .request(
            Method::POST,
            "/api/v1/jobs/app/runs/1/approve",
            Some(&developer),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (ok, approved) = kiln_as(&server, &maintainer, &["approve", "app", "1"], "");
    assert!(ok, "{approved}");
    assert!(
        approved.contains(&format!("approved run #1 of app (commit {first})")),
        "{approved}"
    );
    let run = server.wait_for_run("app", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    let log = log_of(&server, "app", 1, "shared").await;
    assert!(
        log.contains("public=***"),
        "the allowed secret, masked: {log}"
    );
    assert!(!log.contains(PUBLIC_VALUE), "{log}");
    let (status, again) = server
        .send(Method::POST, "/api/v1/jobs/app/runs/1/approve", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let audit = server.json("/api/v1/audit?action=run.approve").await;
    assert!(
        audit.to_string().contains(&format!("commit {first}")),
        "the approval is audited with its commit: {audit}"
    );

    // A new push to the pull request: a new run, blocked again, whose
    // approval the first one's does not give.
    repo.git(&["update-ref", "refs/pull/3/head", &second]);
    let answer = deliver(
        &server,
        "pull_request",
        "fork-2",
        &fork_pull_request("synchronize", &url, &second, &main),
    )
    .await;
    assert_eq!(answer["queued"], json!(["app", "app-run"]), "{answer}");
    let pushed = run_made(&server, "app", 2).await;
    assert_eq!(pushed["status"], "blocked", "{pushed:#}");
    assert_eq!(pushed["sha"], json!(second));
    let (ok, approved) = kiln_as(&server, &maintainer, &["approve", "app", "2"], "");
    assert!(ok, "{approved}");
    let run = server.wait_for_run("app", 2).await;
    // The task naming a secret forks do not get ends `error` saying so;
    // the other one runs, and the run shows both.
    assert_eq!(run["status"], "error", "{run:#}");
    assert_eq!(task(&run, "shared")["status"], "success", "{run:#}");
    let deploy = task(&run, "deploy");
    assert_eq!(deploy["status"], "error", "{run:#}");
    let reason = deploy["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("secret `DEPLOY_KEY` is withheld")
            && reason.contains("pull request #3 from a fork")
            && reason.contains("--allow-forks"),
        "{reason}"
    );
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("DEPLOY_KEY"),
        "{run:#}"
    );

    // `fork_prs: run` ran the new push at once, and withheld the deploy key too.
    run_made(&server, "app-run", 2).await;
    let ran = server.wait_for_run("app-run", 2).await;
    assert_eq!(ran["status"], "error", "{ran:#}");
    let reason = task(&ran, "deploy")["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("secret `DEPLOY_KEY` is withheld"),
        "{ran:#}"
    );
    assert!(
        !log_of(&server, "app-run", 2, "deploy")
            .await
            .contains(DEPLOY_VALUE)
    );

    // A rerun of a fork's run is a fork's run: blocked again, and it can be
    // cancelled without ever running.
    let (status, rerun) = server
        .send(Method::POST, "/api/v1/jobs/app/runs/1/rerun", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rerun}");
    assert_eq!(rerun["status"], "blocked", "{rerun:#}");
    assert_eq!(rerun["pull_request"]["from_fork"], true);
    let (status, cancelled) = server
        .send(Method::POST, "/api/v1/jobs/app/runs/3/cancel", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled:#}");
    let (status, late) = server
        .send(Method::POST, "/api/v1/jobs/app/runs/3/approve", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{late}");

    // On the run page a maintainer approves with the button.
    let (status, rerun) = server
        .send(Method::POST, "/api/v1/jobs/app/runs/1/rerun", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rerun}");
    let browser = Browser::start(&server, "forks").await;
    browser.goto("/login?next=%2Fjobs%2Fapp%2Fruns%2F4").await;
    browser.sign_in("maint", PASSWORD).await;
    browser.arrive(|here| here == "/jobs/app/runs/4").await;
    assert_eq!(browser.text("#run-status").await, "blocked");
    assert!(
        browser
            .text("#blocked-note")
            .await
            .contains("maintainer approves")
    );
    browser.screenshot("blocked").await;
    browser.click("#approve").await;
    browser.reload_until("#run-status", "success").await;
    assert!(
        !browser.has("#approve").await,
        "an approved run has no approve button"
    );
}
