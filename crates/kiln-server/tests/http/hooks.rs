//! `POST /hooks/{forge}` on a real server: real deliveries (GitHub's own
//! published examples, GitLab and Gitea payloads of their documented
//! shapes), signed as each forge signs them, and the runs that exist
//! afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_store::{
    ForgeStore, JobStore, NewQueuedTrigger, PullRequest, Run, RunFilter, RunStore, Status,
    TriggerKind,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::Harness;

#[path = "hooks/paths.rs"]
mod paths;
#[path = "hooks/polling.rs"]
mod polling;

pub(super) const SECRET: &str = "It's a Secret to Everybody";

pub(super) fn npm_examples() -> Vec<(String, Value)> {
    let root = std::env::var("KILN_NPM_FIXTURES").unwrap_or_else(|_| "/opt/kiln-test/npm".into());
    let path = PathBuf::from(root)
        .join("node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; scripts/setup-test-env.sh installs GitHub's webhook examples",
            path.display()
        )
    });
    let index: Vec<Value> = serde_json::from_str(&text).unwrap();
    index
        .into_iter()
        .flat_map(|event| {
            let name = event["name"].as_str().unwrap().to_string();
            let examples = event["examples"].as_array().unwrap().clone();
            examples.into_iter().map(move |e| (name.clone(), e))
        })
        .collect()
}

pub(super) fn fixture(name: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-forge/tests/fixtures");
    std::fs::read(dir.join(name)).unwrap()
}

/// `X-Hub-Signature-256` as GitHub computes it: over the exact bytes sent.
pub(super) fn github_signature(body: &[u8]) -> String {
    format!(
        "sha256={}",
        kiln_forge::signature::hmac_sha256_hex(SECRET.as_bytes(), body)
    )
}

impl Harness {
    /// Stops this server and starts another on its database.
    pub(super) async fn restart(mut self) -> Harness {
        self.shutdown.cancel();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        Harness::start_in(dir).await
    }

    async fn forge(&self, name: &str, kind: &str, secret: Option<&str>) {
        let mut body = json!({"kind": kind, "api_url": "https://forge.example.com/api"});
        if let Some(secret) = secret {
            body["webhook_secret"] = json!(secret);
        }
        let answer = self
            .json(
                Method::PUT,
                &format!("/api/v1/forges/{name}"),
                &body.to_string(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert_eq!(answer.body["has_webhook_secret"], secret.is_some());
    }

    async fn hooked_job(&self, name: &str, repository: &str, forge: &str, fork_prs: &str) {
        let body =
            json!({"kind": "git", "repository": repository, "forge": forge, "fork_prs": fork_prs});
        let answer = self
            .json(
                Method::PUT,
                &format!("/api/v1/jobs/{name}"),
                &body.to_string(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert_eq!(answer.body["forge"], forge);
    }

    /// Posts a delivery with these headers (no token: a forge has none).
    pub(super) async fn deliver(
        &self,
        forge: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/hooks/{forge}", self.base))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub(super) async fn github(
        &self,
        forge: &str,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let headers = [
            ("x-github-event", event.to_string()),
            ("x-github-delivery", delivery.to_string()),
            ("x-hub-signature-256", github_signature(&body)),
        ];
        self.deliver(forge, &headers, body).await
    }

    /// Waits until the worker has made every queued trigger's run.
    pub(super) async fn settled(&self) {
        for _ in 0..600 {
            if self.db.pending_triggers(1).await.unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("queued triggers left after a minute");
    }

    pub(super) async fn runs_of(&self, job: &str) -> Vec<Run> {
        let job = self.db.get_job(job).await.unwrap().unwrap();
        let filter = RunFilter {
            limit: 10_000,
            ..RunFilter::default()
        };
        let mut runs = self.db.list_runs(job.id, &filter).await.unwrap();
        runs.reverse();
        runs
    }
}

/// What a run says about its trigger: event, branch, sha, pull request
/// number, trigger kind and user.
type Seen = (
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    TriggerKind,
    Option<String>,
);

fn seen(run: &Run) -> Seen {
    (
        run.event.to_string(),
        run.branch.clone(),
        run.sha.clone(),
        run.pull_request.as_ref().map(|pr| pr.number),
        run.trigger.kind,
        run.trigger.user.clone(),
    )
}

/// Every example GitHub publishes, delivered to a server with a job for
/// each example repository: exactly the pushes, tags and pull requests
/// (opened, synchronized, reopened; from forks too, under `fork_prs: run`)
/// make runs, each with its event, branch, commit, pull request and
/// sender; everything else is answered 2xx with the reason and makes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_github_example_starts_exactly_its_runs() {
    let server = Harness::start().await;
    server.forge("hub", "github", Some(SECRET)).await;
    let examples = npm_examples();
    let mut jobs = BTreeMap::<String, String>::new();
    for (_, payload) in &examples {
        if let Some(full_name) = payload["repository"]["full_name"].as_str()
            && !jobs.contains_key(full_name)
        {
            let job = format!("gh-{}", jobs.len());
            // The full name matches the events, and is no repository git
            // can fetch here: every run ends `error`, saying why.
            server.hooked_job(&job, full_name, "hub", "run").await;
            jobs.insert(full_name.to_string(), job);
        }
    }
    let mut expected = BTreeMap::<String, Vec<Seen>>::new();
    let mut answers = BTreeMap::<&str, usize>::new();
    let mut fork_heads = std::collections::BTreeSet::<String>::new();
    for (i, (event, payload)) in examples.iter().enumerate() {
        let body = serde_json::to_vec(payload).unwrap();
        let (status, answer) = server.github("hub", event, &format!("d-{i}"), body).await;
        let message = answer["message"].as_str().unwrap_or_default().to_string();
        let sender = payload["sender"]["login"].as_str().map(str::to_string);
        let job = payload["repository"]["full_name"]
            .as_str()
            .map(|n| jobs[n].clone());
        let action = payload["action"].as_str().unwrap_or_default();
        let wanted: Option<Seen> = match event.as_str() {
            "ping" => {
                assert_eq!(status, StatusCode::OK, "{answer}");
                *answers.entry("ping").or_default() += 1;
                None
            }
            "push" if payload["deleted"] != Value::Bool(true) => {
                let reference = payload["ref"].as_str().unwrap();
                let sha = payload["head_commit"]["id"]
                    .as_str()
                    .or(payload["after"].as_str())
                    .map(str::to_string);
                Some(match reference.strip_prefix("refs/tags/") {
                    Some(_) => ("tag".into(), None, sha, None, TriggerKind::Webhook, sender),
                    None => {
                        let branch = reference.strip_prefix("refs/heads/").map(str::to_string);
                        (
                            "push".into(),
                            branch,
                            sha,
                            None,
                            TriggerKind::Webhook,
                            sender,
                        )
                    }
                })
            }
            "pull_request" if ["opened", "synchronize", "reopened"].contains(&action) => {
                let pr = &payload["pull_request"];
                let fork = pr["head"]["repo"]["id"] != pr["base"]["repo"]["id"]
                    || pr["head"]["repo"].is_null();
                // The jobs' `fork_prs: run`: a fork's pull request runs too.
                if fork {
                    fork_heads.insert(pr["head"]["sha"].as_str().unwrap().to_string());
                    *answers.entry("fork").or_default() += 1;
                }
                Some((
                    "pull_request".into(),
                    pr["base"]["ref"].as_str().map(str::to_string),
                    pr["head"]["sha"].as_str().map(str::to_string),
                    pr["number"].as_i64(),
                    TriggerKind::Webhook,
                    sender,
                ))
            }
            _ => {
                assert_eq!(status, StatusCode::ACCEPTED, "`{event}`: {answer}");
                assert!(message.starts_with("ignored: "), "`{event}`: {message}");
                *answers.entry("ignored").or_default() += 1;
                None
            }
        };
        if let Some(wanted) = wanted {
            let job = job.unwrap();
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
            assert_eq!(answer["queued"], json!([job]), "{answer}");
            expected.entry(job).or_default().push(wanted);
            *answers.entry("queued").or_default() += 1;
        }
    }
    for kind in ["ping", "ignored", "queued"] {
        assert!(
            answers.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {answers:?}"
        );
    }
    server.settled().await;
    for job in jobs.values() {
        let runs = server.runs_of(job).await;
        let made: Vec<Seen> = runs.iter().map(seen).collect();
        let wanted = expected.remove(job).unwrap_or_default();
        assert_eq!(made, wanted, "runs of {job}");
        for run in &runs {
            assert_eq!(run.status, Status::Error, "{run:?}");
            let error = run.error.as_deref().unwrap_or_default();
            assert!(error.starts_with("cannot fetch "), "{error}");
            if run.event == kiln_store::Event::PullRequest {
                let pr = run.pull_request.as_ref().unwrap();
                assert_eq!(Some(&pr.base_branch), run.branch.as_ref());
                let head = run.sha.as_deref().unwrap_or_default();
                assert_eq!(pr.from_fork, fork_heads.contains(head), "{run:?}");
            }
        }
    }
    // The run's page shows what made it.
    let (job, _) = jobs.iter().next().map(|(n, j)| (j.clone(), n)).unwrap();
    let shown = server.get(&format!("/api/v1/jobs/{job}/runs/1")).await;
    assert_eq!(shown.body["trigger"]["kind"], "webhook", "{}", shown.body);
}

pub(super) fn a_push(examples: &[(String, Value)]) -> Value {
    examples
        .iter()
        .find(|(event, p)| {
            event == "push"
                && p["deleted"] == Value::Bool(false)
                && p["ref"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("refs/heads/"))
        })
        .map(|(_, p)| p.clone())
        .unwrap()
}

/// A delivery whose signature is missing, malformed or made with another
/// secret, or sent to a forge with no secret, is 401 and stores nothing;
/// a forge that does not exist is 404.
#[tokio::test]
async fn bad_signatures_are_refused_and_store_nothing() {
    let server = Harness::start().await;
    server.forge("hub", "github", Some(SECRET)).await;
    server.forge("open", "github", None).await;
    let push = a_push(&npm_examples());
    let full_name = push["repository"]["full_name"].as_str().unwrap();
    server.hooked_job("app", full_name, "hub", "approve").await;
    server
        .hooked_job("open-app", full_name, "open", "approve")
        .await;
    let body = serde_json::to_vec(&push).unwrap();
    let wrong = format!(
        "sha256={}",
        kiln_forge::signature::hmac_sha256_hex(b"another secret", &body)
    );
    let event = ("x-github-event", "push".to_string());
    for (forge, headers) in [
        ("hub", vec![event.clone()]),
        (
            "hub",
            vec![event.clone(), ("x-hub-signature-256", wrong.clone())],
        ),
        (
            "hub",
            vec![event.clone(), ("x-hub-signature-256", "sha256=zz".into())],
        ),
        (
            "hub",
            vec![
                event.clone(),
                ("x-hub-signature-256", github_signature(b"other bytes")),
            ],
        ),
        // Without a secret, nothing can be believed, even a signed body.
        (
            "open",
            vec![
                event.clone(),
                ("x-hub-signature-256", github_signature(&body)),
            ],
        ),
    ] {
        let (status, answer) = server.deliver(forge, &headers, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}: {answer}");
        assert!(answer["detail"].as_str().is_some(), "{answer}");
    }
    let (status, answer) = server.github("gone", "push", "d-1", body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("`gone`"));
    // Signed, but not what GitHub sends for that event: 400, with why.
    let (status, answer) = server
        .github("hub", "push", "d-2", b"{\"ref\":1}".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(server.db.pending_triggers(10).await.unwrap().is_empty());
    for job in ["app", "open-app"] {
        assert!(server.runs_of(job).await.is_empty(), "{job}");
    }
    // Over GitHub's 25 MiB: 413 before anything is read.
    let huge = vec![b' '; (25 << 20) + 1];
    let (status, _) = server.github("hub", "push", "d-3", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// The same delivery again (GitHub's "Redeliver") starts no second run; a
/// new delivery of the same push does.
#[tokio::test]
async fn a_redelivery_starts_no_second_run() {
    let server = Harness::start().await;
    server.forge("hub", "github", Some(SECRET)).await;
    let push = a_push(&npm_examples());
    let full_name = push["repository"]["full_name"].as_str().unwrap();
    server.hooked_job("app", full_name, "hub", "approve").await;
    let body = serde_json::to_vec(&push).unwrap();
    let (status, first) = server.github("hub", "push", "d-1", body.clone()).await;
    assert_eq!(
        (status, &first["queued"]),
        (StatusCode::ACCEPTED, &json!(["app"]))
    );
    server.settled().await;
    let (status, again) = server.github("hub", "push", "d-1", body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["queued"], json!([]));
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("received before"),
        "{again}"
    );
    server.settled().await;
    assert_eq!(server.runs_of("app").await.len(), 1);
    server.github("hub", "push", "d-2", body).await;
    server.settled().await;
    assert_eq!(server.runs_of("app").await.len(), 2);
    // The audit log says which forge started each run, and who made the forge.
    let audit = server.get("/api/v1/audit?action=run.trigger").await;
    let actors: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["forge/hub", "forge/hub"], "{}", audit.body);
    let made = server.get("/api/v1/audit?action=forge.create").await;
    assert_eq!(
        made.body["entries"][0]["object"], "forge/hub",
        "{}",
        made.body
    );
}

/// A trigger the intake stored but no run was made for (the server
/// stopped in between) is made into its run when a server starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_left_by_a_stopped_server_runs_at_the_next_start() {
    let server = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, main, _) = repository(dir.path());
    server.forge("hub", "github", Some(SECRET)).await;
    server.hooked_job("app", &url, "hub", "approve").await;
    let job = server.db.get_job("app").await.unwrap().unwrap();
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What the intake stores, committed just before the server stopped.
    let run = kiln_server::webhooks::QueuedRun {
        forge: "hub".into(),
        event: kiln_store::Event::Push,
        sha: main.clone(),
        branch: Some("main".into()),
        tag: None,
        before: None,
        sender: Some("ada".into()),
        pull_request: None,
        head_ref: None,
        repository: None,
        repository_id: None,
    };
    let left = NewQueuedTrigger {
        job_id: job.id,
        delivery: "d-left".into(),
        trigger: serde_json::to_string(&run).unwrap(),
    };
    server
        .db
        .queue_triggers(&[left], chrono::Utc::now())
        .await
        .unwrap();
    assert!(server.runs_of("app").await.is_empty());

    let again = server.restart().await;
    again.settled().await;
    let runs = again.runs_of("app").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].sha.as_deref(), Some(main.as_str()));
    assert_eq!(runs[0].status, Status::Queued, "{:?}", runs[0].error);
    assert_eq!(runs[0].trigger.user.as_deref(), Some("ada"));
}

/// GitLab (its token header) and Gitea (its signature, and GitHub's
/// headers besides) are told apart by the URL's forge alone; their
/// pushes, tags and merge/pull requests make runs, the rest nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_and_gitea_deliveries_are_read_by_the_urls_forge() {
    let server = Harness::start().await;
    server.forge("lab", "gitlab", Some(SECRET)).await;
    server.forge("tea", "gitea", Some(SECRET)).await;
    server
        .hooked_job(
            "diaspora",
            "git@example.com:mike/diaspora.git",
            "lab",
            "ignore",
        )
        .await;
    server
        .hooked_job("example", "jsmith/example", "lab", "ignore")
        .await;
    let project = "https://example.com/awesome_space/awesome_project.git";
    server.hooked_job("awesome", project, "lab", "ignore").await;
    server
        .hooked_job(
            "webhooks",
            "ssh://gitea@localhost:2222/gitea/webhooks.git",
            "tea",
            "approve",
        )
        .await;
    let gitlab = [
        ("Push Hook", "gitlab-push.json", Some("diaspora")),
        ("Push Hook", "gitlab-push-branch-deleted.json", None),
        ("Tag Push Hook", "gitlab-tag-push.json", Some("example")),
        (
            "Merge Request Hook",
            "gitlab-merge-request-open.json",
            Some("awesome"),
        ),
        (
            "Merge Request Hook",
            "gitlab-merge-request-update-commits.json",
            Some("awesome"),
        ),
        (
            "Merge Request Hook",
            "gitlab-merge-request-update-title.json",
            None,
        ),
        (
            "Merge Request Hook",
            "gitlab-merge-request-close.json",
            None,
        ),
        (
            "Merge Request Hook",
            "gitlab-merge-request-open-fork.json",
            None,
        ),
    ];
    for (i, (event, file, job)) in gitlab.into_iter().enumerate() {
        let headers = [
            ("x-gitlab-event", event.to_string()),
            ("x-gitlab-token", SECRET.to_string()),
            ("idempotency-key", format!("k-{i}")),
        ];
        let (status, answer) = server.deliver("lab", &headers, fixture(file)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{file}: {answer}");
        let queued = json!(job.into_iter().collect::<Vec<_>>());
        assert_eq!(answer["queued"], queued, "{file}: {answer}");
        if file.contains("fork") {
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap()
                    .contains("fork_prs: ignore"),
                "{answer}"
            );
        }
        // GitHub's way of signing means nothing to a GitLab forge.
        let body = fixture(file);
        let github_way = [
            ("x-gitlab-event", event.to_string()),
            ("x-hub-signature-256", github_signature(&body)),
        ];
        let (status, _) = server.deliver("lab", &github_way, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{file}");
    }
    let gitea = [
        ("push", "gitea-push.json", true),
        ("push", "gitea-push-tag.json", true),
        ("pull_request", "gitea-pull-request-opened.json", true),
        (
            "pull_request",
            "gitea-pull-request-synchronized-fork.json",
            false,
        ),
        ("pull_request", "gitea-pull-request-closed.json", false),
    ];
    for (event, file, runs) in gitea {
        let body = fixture(file);
        let signature = kiln_forge::signature::hmac_sha256_hex(SECRET.as_bytes(), &body);
        let headers = [
            ("x-gitea-event", event.to_string()),
            ("x-github-event", event.to_string()),
            ("x-gitea-signature", signature),
        ];
        let (status, answer) = server.deliver("tea", &headers, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{file}: {answer}");
        let queued = if runs { json!(["webhooks"]) } else { json!([]) };
        assert_eq!(answer["queued"], queued, "{file}: {answer}");
    }
    server.settled().await;
    let of = |runs: Vec<Run>| -> Vec<(String, Option<String>, Option<i64>)> {
        runs.iter()
            .map(|r| {
                (
                    r.event.to_string(),
                    r.branch.clone(),
                    r.pull_request.as_ref().map(|p| p.number),
                )
            })
            .collect()
    };
    let pushed = of(server.runs_of("diaspora").await);
    assert_eq!(pushed, [("push".into(), Some("master".into()), None)]);
    let merged = of(server.runs_of("awesome").await);
    let merge_request = (
        "pull_request".to_string(),
        Some("master".to_string()),
        Some(1),
    );
    assert_eq!(merged, [merge_request.clone(), merge_request]);
    let tags: Vec<(String, Option<String>, Option<String>)> = server
        .runs_of("example")
        .await
        .iter()
        .map(|r| (r.event.to_string(), r.tag.clone(), r.sha.clone()))
        .collect();
    // At the tag's commit, not the annotated tag's own object.
    let commit = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
    let tag = (
        "tag".to_string(),
        Some("v1.0.0".to_string()),
        Some(commit.to_string()),
    );
    assert_eq!(tags, [tag]);
    let tea: Vec<(String, Option<String>)> = server
        .runs_of("webhooks")
        .await
        .iter()
        .map(|r| (r.event.to_string(), r.branch.clone()))
        .collect();
    assert_eq!(tea[0], ("push".into(), Some("develop".into())));
    assert_eq!(tea[1].0, "tag");
    assert_eq!(tea[2].0, "pull_request");
    assert_eq!(tea.len(), 3);
}

pub(super) fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repository with a pipeline on `main`, and a pull request's head that
/// only `refs/pull/1/head` holds (as on a forge, for a fork's commits).
pub(super) fn repository(dir: &Path) -> (String, String, String) {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join(".kiln.yml"), super::PIPELINE).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", "pipeline"]);
    let main = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["checkout", "--quiet", "-b", "feature"]);
    let pipeline = "version: 1\ntasks:\n  pr:\n    steps:\n      - run: echo pull request\n";
    std::fs::write(dir.join(".kiln.yml"), pipeline).unwrap();
    git(dir, &["commit", "--quiet", "-am", "feature"]);
    let head = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["checkout", "--quiet", "main"]);
    git(dir, &["update-ref", "refs/pull/1/head", &head]);
    git(dir, &["branch", "--quiet", "-D", "feature"]);
    (format!("file://{}", dir.display()), main, head)
}

/// A push naming a real commit of a real repository makes a run of that
/// commit's pipeline, queued for agents; a pull request's head, which no
/// branch holds, is fetched through `refs/pull/1/head` and run, with the
/// pull request on the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_pull_requests_run_their_real_commits() {
    let server = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, main, head) = repository(dir.path());
    server.forge("hub", "github", Some(SECRET)).await;
    server.hooked_job("app", &url, "hub", "approve").await;
    let examples = npm_examples();
    let mut push = a_push(&examples);
    push["ref"] = json!("refs/heads/main");
    push["after"] = json!(main);
    push["head_commit"]["id"] = json!(main);
    push["repository"]["clone_url"] = json!(url);
    let (status, answer) = server
        .github("hub", "push", "push-1", serde_json::to_vec(&push).unwrap())
        .await;
    assert_eq!(
        (status, &answer["queued"]),
        (StatusCode::ACCEPTED, &json!(["app"])),
        "{answer}"
    );

    let (_, mut pr) = examples
        .iter()
        .find(|(e, p)| e == "pull_request" && p["action"] == "opened")
        .cloned()
        .unwrap();
    pr["number"] = json!(1);
    pr["pull_request"]["number"] = json!(1);
    pr["pull_request"]["head"]["sha"] = json!(head);
    pr["pull_request"]["head"]["ref"] = json!("feature");
    pr["pull_request"]["base"]["ref"] = json!("main");
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
    assert_eq!(
        (status, &answer["queued"]),
        (StatusCode::ACCEPTED, &json!(["app"])),
        "{answer}"
    );
    server.settled().await;

    let runs = server.runs_of("app").await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let job = server.db.get_job("app").await.unwrap().unwrap();
    let pushed = server
        .db
        .get_run(job.id, runs[0].number)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed.run.status, Status::Queued, "{:?}", pushed.run.error);
    assert_eq!(pushed.run.sha.as_deref(), Some(main.as_str()));
    assert_eq!(pushed.run.branch.as_deref(), Some("main"));
    assert_eq!(
        pushed
            .tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["build"]
    );

    let pulled = server
        .db
        .get_run(job.id, runs[1].number)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pulled.run.status, Status::Queued, "{:?}", pulled.run.error);
    assert_eq!(pulled.run.sha.as_deref(), Some(head.as_str()));
    assert_eq!(pulled.run.event, kiln_store::Event::PullRequest);
    assert_eq!(
        pulled.run.branch.as_deref(),
        Some("main"),
        "KILN_BRANCH is the base branch"
    );
    assert_eq!(
        pulled
            .tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["pr"]
    );
    let author = pr["pull_request"]["user"]["login"]
        .as_str()
        .map(str::to_string);
    assert_eq!(
        pulled.run.pull_request,
        Some(PullRequest {
            number: 1,
            title: pr["pull_request"]["title"].as_str().unwrap().into(),
            author,
            head_branch: "feature".into(),
            base_branch: "main".into(),
            from_fork: false,
        })
    );
    let shown = server
        .get(&format!("/api/v1/jobs/app/runs/{}", runs[1].number))
        .await;
    assert_eq!(
        shown.body["pull_request"]["head_branch"], "feature",
        "{}",
        shown.body
    );
    assert_eq!(shown.body["trigger"]["kind"], "webhook");

    // A forge that jobs use cannot be deleted; the refusal names them.
    let refused = server.json(Method::DELETE, "/api/v1/forges/hub", "").await;
    assert!(refused.problem(StatusCode::CONFLICT).contains("`app`"));
    assert!(server.db.get_forge("hub").await.unwrap().is_some());
}
