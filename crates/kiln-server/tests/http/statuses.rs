//! Commit statuses from a real server to a stand-in forge: an HTTP server
//! in the test that checks every status request — GitHub's against
//! GitHub's published OpenAPI description (npm `@octokit/openapi`),
//! GitLab's and Gitea's against their documented shapes — and can fail
//! as forges do (500, 429 with `Retry-After`, 422). Under `/git/` it
//! serves repositories over git's smart HTTP (`git http-backend`), with
//! their pull-request refs, as a forge does.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method as HttpMethod, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use kiln_store::queue::Retry;
use kiln_store::{Claim, Holder, JobStore, QueueStore, RunStore, Status, TaskResult};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::hooks::{SECRET, a_push, fixture, git, npm_examples};
use super::{Harness, PIPELINE};

/// The token every forge of these tests is given.
const TOKEN: &str = "forge-token-for-statuses";

/// A status request the stand-in took (answered 2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    /// Which API it came to: `github`, `gitlab` or `gitea`.
    api: &'static str,
    repository: String,
    sha: String,
    state: String,
    context: String,
    description: String,
    target_url: Option<String>,
}

/// What the stand-in does and has seen.
#[derive(Default)]
struct Script {
    /// Answers to give the next requests (status, headers), in order;
    /// `201` once they are spent.
    answers: VecDeque<(u16, Vec<(&'static str, &'static str)>)>,
    /// Commits the forge does not know: `422`, as GitHub answers.
    unknown: Vec<String>,
    /// Every request that conformed, whatever the answer.
    tries: usize,
    received: Vec<Received>,
    /// Requests that did not conform, and why.
    violations: Vec<String>,
    /// Requests served by `git http-backend`.
    git_requests: usize,
}

struct StandIn {
    url: String,
    script: Arc<Mutex<Script>>,
    /// Where the repositories it serves over smart HTTP live.
    git_root: Arc<tempfile::TempDir>,
}

impl StandIn {
    async fn start() -> StandIn {
        let openapi = Arc::new(github_openapi());
        let script = Arc::new(Mutex::new(Script::default()));
        let shared = script.clone();
        let git_root = Arc::new(tempfile::tempdir().unwrap());
        let (git_script, root) = (script.clone(), git_root.path().to_path_buf());
        let app = axum::Router::new()
            .route(
                "/git/{*path}",
                axum::routing::any(
                    move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: Bytes| {
                        git_script.lock().unwrap().git_requests += 1;
                        let root = root.clone();
                        async move { git_http_backend(&root, &method, &uri, &headers, body).await }
                    },
                ),
            )
            .fallback(
                move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let (script, openapi) = (shared.clone(), openapi.clone());
                    async move { answer(&script, &openapi, &method, &uri, &headers, &body) }
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        StandIn {
            url,
            script,
            git_root,
        }
    }

    /// Serves a bare copy of the repository in `dir` as `owner/name.git`,
    /// pull-request refs included; its smart-HTTP URL.
    fn serve_repository(&self, dir: &Path, full_name: &str) -> String {
        let bare = self.git_root.path().join(format!("{full_name}.git"));
        std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
        git(
            self.git_root.path(),
            &[
                "clone",
                "--quiet",
                "--mirror",
                dir.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        format!("{}/git/{full_name}.git", self.url)
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    /// Waits until `count` statuses were taken; returns them all.
    async fn received(&self, count: usize) -> Vec<Received> {
        self.received_until(|received| received.len() >= count)
            .await
    }

    /// Waits until the statuses taken so far satisfy `done`; returns them.
    async fn received_until(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..300 {
            {
                let script = self.script();
                assert!(script.violations.is_empty(), "{:?}", script.violations);
                if done(&script.received) {
                    return script.received.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "statuses did not arrive within 30s: {:?}",
            self.script().received
        );
    }
}

/// Checks the request, then answers as scripted.
fn answer(
    script: &Mutex<Script>,
    openapi: &Value,
    method: &HttpMethod,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let path = uri.path();
    let checked = serde_json::from_slice::<Value>(body)
        .map_err(|e| format!("{path}: the body is not JSON: {e}"))
        .and_then(|body| {
            if let Some(rest) = path.strip_prefix("/github") {
                github_request(openapi, method, rest, headers, &body)
            } else if let Some(rest) = path.strip_prefix("/gitea") {
                documented_request(&gitea(), method, rest, headers, &body)
            } else if let Some(rest) = path.strip_prefix("/gitlab") {
                documented_request(&gitlab(), method, rest, headers, &body)
            } else {
                Err(format!("{method} {path}: no such API"))
            }
        });
    let mut script = script.lock().unwrap();
    let received = match checked {
        Ok(received) => received,
        Err(why) => {
            script.violations.push(why.clone());
            return (axum::http::StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    script.tries += 1;
    if script.unknown.contains(&received.sha) {
        let message = json!({"message": format!("No commit found for SHA: {}", received.sha)});
        return (
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(message),
        )
            .into_response();
    }
    if let Some((status, extra)) = script.answers.pop_front() {
        let mut response =
            (axum::http::StatusCode::from_u16(status).unwrap(), "not now").into_response();
        for (name, value) in extra {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    let state = received.state.clone();
    script.received.push(received);
    (
        axum::http::StatusCode::CREATED,
        axum::Json(json!({"state": state})),
    )
        .into_response()
}

/// git's smart HTTP through `git http-backend`, run as the CGI program
/// it is: the request in its environment and on its input, the answer's
/// headers and body on its output.
async fn git_http_backend(
    root: &Path,
    method: &HttpMethod,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    use tokio::io::AsyncWriteExt;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path().trim_start_matches("/git"))
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let out = output.stdout;
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| (at, at + 2))
        })
        .expect("git http-backend answers with CGI headers");
    let mut response = Response::new(axum::body::Body::from(out[end.1..].to_vec()));
    for line in String::from_utf8_lossy(&out[..end.0]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or("200").parse().unwrap();
            *response.status_mut() = axum::http::StatusCode::from_u16(code).unwrap();
        } else {
            response.headers_mut().insert(
                axum::http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
    }
    response
}

fn github_openapi() -> Value {
    let root = std::env::var("KILN_NPM_FIXTURES").unwrap_or_else(|_| "/opt/kiln-test/npm".into());
    let path =
        PathBuf::from(root).join("node_modules/@octokit/openapi/generated/api.github.com.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; scripts/setup-test-env.sh installs GitHub's OpenAPI description",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The path's parameters when `path` is an instance of `template`
/// (`/repos/{owner}/{repo}/statuses/{sha}`).
fn path_parameters(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let wanted: Vec<&str> = template.split('/').collect();
    let given: Vec<&str> = path.split('/').collect();
    if wanted.len() != given.len() {
        return None;
    }
    let mut parameters = Vec::new();
    for (want, got) in wanted.iter().zip(&given) {
        match want.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(name) if !got.is_empty() => parameters.push((name.to_string(), got.to_string())),
            Some(_) => return None,
            None if want == got => {}
            None => return None,
        }
    }
    Some(parameters)
}

fn parameter<'a>(parameters: &'a [(String, String)], name: &str) -> &'a str {
    parameters
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

/// A GitHub status request, checked against the published description:
/// a path of the operation's template, its method, its body schema, and
/// the token.
fn github_request(
    openapi: &Value,
    method: &HttpMethod,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Received, String> {
    const TEMPLATE: &str = "/repos/{owner}/{repo}/statuses/{sha}";
    let operation = &openapi["paths"][TEMPLATE][method.as_str().to_ascii_lowercase()];
    if !operation.is_object() {
        return Err(format!("GitHub has no {method} {TEMPLATE}"));
    }
    let parameters = path_parameters(TEMPLATE, path)
        .ok_or_else(|| format!("{path} is not an instance of {TEMPLATE}"))?;
    let content_type = header(headers, "content-type");
    if !content_type.starts_with("application/json") {
        return Err(format!("content type `{content_type}`"));
    }
    let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
    let mut errors = Vec::new();
    conforms(schema, body, openapi, "body", &mut errors);
    if !errors.is_empty() {
        return Err(format!("{path}: {}", errors.join("; ")));
    }
    if header(headers, "authorization") != format!("Bearer {TOKEN}") {
        return Err(format!("{path}: no bearer token"));
    }
    received("github", &parameters, body, "context")
}

/// A status API as its forge documents it: the path, the states, the
/// header that carries the token and the field that holds the context.
struct Documented {
    api: &'static str,
    path: &'static str,
    states: &'static [&'static str],
    token_header: &'static str,
    token: String,
    context: &'static str,
}

/// Gitea's (and Forgejo's): `Authorization: token …`.
fn gitea() -> Documented {
    Documented {
        api: "gitea",
        path: "/repos/{owner}/{repo}/statuses/{sha}",
        states: &["pending", "success", "error", "failure", "warning"],
        token_header: "authorization",
        token: format!("token {TOKEN}"),
        context: "context",
    }
}

/// GitLab's: the project by id or path, `PRIVATE-TOKEN`, the context in
/// `name`.
fn gitlab() -> Documented {
    Documented {
        api: "gitlab",
        path: "/projects/{owner}/statuses/{sha}",
        states: &["pending", "running", "success", "failed", "canceled"],
        token_header: "private-token",
        token: TOKEN.to_string(),
        context: "name",
    }
}

/// A `POST` of a status to `documented`'s API, checked against it.
fn documented_request(
    documented: &Documented,
    method: &HttpMethod,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Received, String> {
    let api = documented.api;
    let parameters = path_parameters(documented.path, path)
        .filter(|_| method == HttpMethod::POST)
        .ok_or_else(|| format!("{api} has no {method} {path}"))?;
    if !body["state"]
        .as_str()
        .is_some_and(|s| documented.states.contains(&s))
    {
        return Err(format!("{api} has no state {}", body["state"]));
    }
    if header(headers, documented.token_header) != documented.token {
        return Err(format!("{path}: no {api} token"));
    }
    received(api, &parameters, body, documented.context)
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn received(
    api: &'static str,
    parameters: &[(String, String)],
    body: &Value,
    context: &str,
) -> Result<Received, String> {
    let description = body["description"].as_str().unwrap_or("").to_string();
    if description.chars().count() > 140 {
        return Err(format!("description over 140 characters: {description}"));
    }
    let repo = parameter(parameters, "repo");
    let owner = parameter(parameters, "owner");
    Ok(Received {
        api,
        repository: if repo.is_empty() {
            owner.to_string()
        } else {
            format!("{owner}/{repo}")
        },
        sha: parameter(parameters, "sha").to_string(),
        state: body["state"].as_str().unwrap_or("").to_string(),
        context: body[context].as_str().unwrap_or("").to_string(),
        description,
        target_url: body["target_url"].as_str().map(str::to_string),
    })
}

/// Whether `value` conforms to `schema`, for the part of JSON Schema
/// (OpenAPI 3.0's dialect) GitHub's description uses; a keyword this
/// checker does not know is an error rather than passed over.
fn conforms(schema: &Value, value: &Value, root: &Value, at: &str, errors: &mut Vec<String>) {
    const KNOWN: [&str; 16] = [
        "$ref",
        "type",
        "properties",
        "required",
        "enum",
        "nullable",
        "description",
        "default",
        "example",
        "examples",
        "title",
        "anyOf",
        "oneOf",
        "maxLength",
        "additionalProperties",
        "format",
    ];
    let Some(keywords) = schema.as_object() else {
        errors.push(format!("{at}: the schema is not an object"));
        return;
    };
    for keyword in keywords.keys() {
        if !KNOWN.contains(&keyword.as_str()) {
            errors.push(format!("{at}: the checker does not know `{keyword}`"));
        }
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let target = reference
            .trim_start_matches("#/")
            .split('/')
            .fold(root, |node, key| &node[key]);
        return conforms(target, value, root, at, errors);
    }
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(options) = schema[combinator].as_array() {
            let passing = options
                .iter()
                .filter(|option| {
                    let mut mine = Vec::new();
                    conforms(option, value, root, at, &mut mine);
                    mine.is_empty()
                })
                .count();
            if passing == 0 || (combinator == "oneOf" && passing > 1) {
                errors.push(format!(
                    "{at}: {value} matches {passing} of its {combinator}"
                ));
            }
        }
    }
    if let Some(kind) = schema["type"].as_str() {
        let fits = match kind {
            "string" => value.is_string(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => false,
        };
        if !fits {
            errors.push(format!("{at}: {value} is not of type {kind}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is none of {allowed:?}"));
    }
    if let (Some(limit), Some(text)) = (schema["maxLength"].as_u64(), value.as_str())
        && text.chars().count() as u64 > limit
    {
        errors.push(format!("{at}: longer than {limit}"));
    }
    if let Some(required) = schema["required"].as_array() {
        for name in required.iter().filter_map(Value::as_str) {
            if value.get(name).is_none() {
                errors.push(format!("{at}: `{name}` is required"));
            }
        }
    }
    if let (Some(properties), Some(fields)) = (schema["properties"].as_object(), value.as_object())
    {
        for (name, field) in fields {
            match properties.get(name) {
                Some(property) => conforms(property, field, root, &format!("{at}.{name}"), errors),
                None if schema["additionalProperties"] == false => {
                    errors.push(format!("{at}: `{name}` is not a property"))
                }
                None => {}
            }
        }
    }
}

/// A repository whose `main` holds the tests' pipeline; its URL and
/// commit.
fn repository(dir: &Path) -> (String, String) {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join(".kiln.yml"), PIPELINE).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", "pipeline"]);
    let main = git(dir, &["rev-parse", "HEAD"]);
    (format!("file://{}", dir.display()), main)
}

/// A server with forge `hub` (GitHub, at the stand-in) and its job `app`,
/// whose repository's `main` was pushed (`before` is told the commit
/// first): the server, the repository's directory and the commit.
async fn pushed(
    stand_in: &StandIn,
    before: impl FnOnce(&str),
) -> (Harness, tempfile::TempDir, String) {
    let server = Harness::start().await;
    server.status_forge("hub", "github", stand_in).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, main) = repository(dir.path());
    before(&main);
    server.forge_job("app", &url, "hub").await;
    server.push("hub", &url, &main, "push-1").await;
    (server, dir, main)
}

impl Harness {
    /// A forge of `kind` at the stand-in's API for it, with a token.
    async fn status_forge(&self, name: &str, kind: &str, stand_in: &StandIn) {
        let body = json!({
            "kind": kind,
            "api_url": format!("{}/{kind}", stand_in.url),
            "token": TOKEN,
            "webhook_secret": SECRET,
        });
        let path = format!("/api/v1/forges/{name}");
        let answer = self.json(Method::PUT, &path, &body.to_string()).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }

    async fn forge_job(&self, name: &str, repository: &str, forge: &str) {
        let body = json!({"kind": "git", "repository": repository, "forge": forge});
        let path = format!("/api/v1/jobs/{name}");
        let answer = self.json(Method::PUT, &path, &body.to_string()).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }

    /// Pushes `sha` to `main` of the job's repository, as GitHub tells it.
    async fn push(&self, forge: &str, url: &str, sha: &str, delivery: &str) {
        let mut push = a_push(&npm_examples());
        push["ref"] = json!("refs/heads/main");
        push["after"] = json!(sha);
        push["head_commit"]["id"] = json!(sha);
        push["repository"]["clone_url"] = json!(url);
        let body = serde_json::to_vec(&push).unwrap();
        let (status, answer) = self.github(forge, "push", delivery, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        self.settled().await;
    }

    /// Runs the only queued task of run `number` to success, as an agent
    /// would through the queue, and tells the change feed so.
    async fn succeed(&self, job: &str, number: i64) {
        let job = self.db.get_job(job).await.unwrap().unwrap();
        let run = self.db.get_run(job.id, number).await.unwrap().unwrap();
        let claim = Claim {
            holder: "agent-1".into(),
            labels: Vec::new(),
            lease: Duration::from_secs(60),
            now: Utc::now(),
        };
        let task = self.db.claim_task(&claim).await.unwrap().unwrap();
        assert_eq!(task.run_id, run.run.id);
        let result = TaskResult {
            status: Status::Success,
            reason: None,
            retry: Retry::Allowed,
            now: Utc::now(),
        };
        let holder = Holder::new("agent-1", task.attempt);
        self.db
            .finish_task(task.id, &holder, &result)
            .await
            .unwrap();
        self.events.touch_all(run.run.id);
    }

    /// The run's `statuses` once `done` says they are settled.
    async fn statuses_until(&self, job: &str, number: i64, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/v1/jobs/{job}/runs/{number}");
        for _ in 0..300 {
            let shown = self.get(&path).await;
            assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
            if done(&shown.body["statuses"]) {
                return shown.body["statuses"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "run {number}'s statuses did not settle: {}",
            self.get(&path).await.body
        );
    }
}

/// A push's run is pending on GitHub once the forge recovers from a 500
/// and a 429 with `Retry-After`, then success when it succeeds; a rerun
/// whose states change while the forge is down again leaves its last
/// state, never an older one, as the commit's last word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_reach_github_in_order_once_it_recovers() {
    let stand_in = StandIn::start().await;
    stand_in
        .script()
        .answers
        .extend([(500, vec![]), (429, vec![("retry-after", "1")])]);
    let (server, _dir, main) = pushed(&stand_in, |_| {}).await;

    let received = stand_in.received(1).await;
    assert_eq!(stand_in.script().tries, 3, "a 500, a 429, then taken");
    let pending = Received {
        api: "github",
        // The forge's own name of the repository, from its webhook.
        repository: "Codertocat/Hello-World".into(),
        sha: main.clone(),
        state: "pending".into(),
        context: "kiln/app".into(),
        description: "queued".into(),
        target_url: Some(format!("{}/jobs/app/runs/1", super::PUBLIC_URL)),
    };
    assert_eq!(received, std::slice::from_ref(&pending));
    let shown = server
        .statuses_until("app", 1, |s| s[0]["sent_at"].is_string())
        .await;
    assert_eq!(shown[0]["forge"], "hub");
    assert_eq!(shown[0]["state"], "pending");
    assert_eq!(shown[0]["error"], Value::Null);

    server.succeed("app", 1).await;
    let received = stand_in.received(2).await;
    let success = Received {
        state: "success".into(),
        description: "1 of 1 task passed".into(),
        ..pending.clone()
    };
    assert_eq!(received, [pending.clone(), success.clone()]);
    let shown = server
        .statuses_until("app", 1, |s| {
            s[0]["state"] == "success" && s[0]["sent_at"].is_string()
        })
        .await;
    assert_eq!(shown.as_array().unwrap().len(), 1, "{shown}");

    // Down again: the rerun's queued and successful states are both
    // wanted before the forge takes anything, and only the newest goes.
    stand_in
        .script()
        .answers
        .extend([(503, vec![]), (503, vec![])]);
    let rerun = server
        .json(Method::POST, "/api/v1/jobs/app/runs/1/rerun", "")
        .await;
    assert_eq!(rerun.status, StatusCode::CREATED, "{}", rerun.body);
    assert_eq!(rerun.body["number"], 2);
    server.succeed("app", 2).await;
    let rerun_success = Received {
        target_url: Some(format!("{}/jobs/app/runs/2", super::PUBLIC_URL)),
        ..success.clone()
    };
    stand_in
        .received_until(|r| r.last() == Some(&rerun_success))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let script = stand_in.script();
    assert!(script.violations.is_empty(), "{:?}", script.violations);
    assert_eq!(
        script.received.last(),
        Some(&rerun_success),
        "nothing came after the last word: {:?}",
        script.received
    );
    // The rerun's queued state may have gone through before its success
    // (the forge was down for both), but nothing of run 1 came back.
    let rerun = &script.received[2..];
    assert!(
        rerun
            .iter()
            .all(|r| r.target_url == rerun_success.target_url),
        "{rerun:?}"
    );
}

/// A status the forge refuses for good (a commit it does not know) is not
/// tried again, and the run says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_status_shows_on_the_run() {
    let stand_in = StandIn::start().await;
    let (server, _dir, _) = pushed(&stand_in, |main| {
        stand_in.script().unknown.push(main.to_string());
    })
    .await;

    let shown = server
        .statuses_until("app", 1, |s| s[0]["error"].is_string())
        .await;
    let error = shown[0]["error"].as_str().unwrap();
    assert!(error.contains("422"), "{error}");
    assert!(error.contains("No commit found for SHA"), "{error}");
    assert_eq!(shown[0]["state"], "pending");
    assert_eq!(shown[0]["sent_at"], Value::Null);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stand_in.script().tries, 1, "a refusal is not retried");
}

/// GitLab and Gitea get their own paths, tokens and words: a run that
/// ends `error` (its commit cannot be fetched) is `failed` on GitLab's
/// project (by id) and `error` on Gitea's repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_and_gitea_get_statuses_in_their_own_shapes() {
    let stand_in = StandIn::start().await;
    let server = Harness::start().await;
    server.status_forge("lab", "gitlab", &stand_in).await;
    server.status_forge("tea", "gitea", &stand_in).await;
    server.forge_job("diaspora", "mike/diaspora", "lab").await;
    server.forge_job("webhooks", "gitea/webhooks", "tea").await;

    let headers = [
        ("x-gitlab-event", "Push Hook".to_string()),
        ("x-gitlab-token", SECRET.to_string()),
        ("idempotency-key", "k-1".to_string()),
    ];
    let (status, answer) = server
        .deliver("lab", &headers, fixture("gitlab-push.json"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let body = fixture("gitea-push.json");
    let signature = kiln_forge::signature::hmac_sha256_hex(SECRET.as_bytes(), &body);
    let headers = [
        ("x-gitea-event", "push".to_string()),
        ("x-gitea-signature", signature),
    ];
    let (status, answer) = server.deliver("tea", &headers, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    server.settled().await;

    let mut received = stand_in.received(2).await;
    received.sort_by_key(|r| r.api);
    let shapes: Vec<(&str, &str, &str, &str, &str)> = received
        .iter()
        .map(|r| {
            (
                r.api,
                r.repository.as_str(),
                r.sha.as_str(),
                r.state.as_str(),
                r.context.as_str(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        [
            (
                "gitea",
                "gitea/webhooks",
                "bffeb74224043ba2feb48d137756c8a9331c449a",
                "error",
                "kiln/webhooks"
            ),
            (
                "gitlab",
                "15",
                "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
                "failed",
                "kiln/diaspora"
            ),
        ]
    );
    for status in &received {
        assert!(
            status.description.starts_with("error: "),
            "the description says what happened: {status:?}"
        );
    }
    let shown = server
        .statuses_until("diaspora", 1, |s| s[0]["sent_at"].is_string())
        .await;
    assert_eq!(shown[0]["state"], "failed");
    assert_eq!(shown[0]["forge"], "lab");
}

/// A run that ends while no server runs still gets its final status: the
/// next server finds it in the runs table and sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_ended_while_the_server_was_down_still_reports_its_end() {
    let stand_in = StandIn::start().await;
    let (server, _dir, main) = pushed(&stand_in, |_| {}).await;
    let received = stand_in.received(1).await;
    assert_eq!(received[0].state, "pending");

    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What an agent's last report leaves, with no server to see it.
    server.succeed("app", 1).await;
    let server = server.restart().await;
    let received = stand_in.received(2).await;
    assert_eq!(
        (
            received[1].sha.as_str(),
            received[1].state.as_str(),
            received[1].description.as_str()
        ),
        (main.as_str(), "success", "1 of 1 task passed")
    );
    let shown = server
        .statuses_until("app", 1, |s| {
            s[0]["state"] == "success" && s[0]["sent_at"].is_string()
        })
        .await;
    assert_eq!(shown[0]["error"], Value::Null);
}

/// The whole round trip with a forge as a forge is: the repository served
/// over smart HTTP with its pull-request ref, a push and a pull request
/// delivered as GitHub delivers them, each run made from its commit as
/// fetched over HTTP (the pull request's through `refs/pull/1/head`, which
/// no branch holds), and each commit told `pending` under `kiln/app`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_served_over_smart_http_runs_and_reports_its_pull_request() {
    let stand_in = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, main, head) = super::hooks::repository(dir.path());
    let url = stand_in.serve_repository(dir.path(), "octo/app");
    let server = Harness::start().await;
    server.status_forge("hub", "github", &stand_in).await;
    server.forge_job("app", &url, "hub").await;
    server.push("hub", &url, &main, "push-1").await;

    let (_, mut pr) = npm_examples()
        .into_iter()
        .find(|(e, p)| e == "pull_request" && p["action"] == "opened")
        .unwrap();
    pr["number"] = json!(1);
    pr["pull_request"]["number"] = json!(1);
    pr["pull_request"]["head"]["sha"] = json!(head);
    pr["pull_request"]["head"]["ref"] = json!("feature");
    pr["pull_request"]["base"]["ref"] = json!("main");
    pr["pull_request"]["head"]["repo"] = pr["pull_request"]["base"]["repo"].clone();
    pr["repository"]["clone_url"] = json!(url);
    let body = serde_json::to_vec(&pr).unwrap();
    let (status, answer) = server.github("hub", "pull_request", "pr-1", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    server.settled().await;
    assert!(
        stand_in.script().git_requests > 0,
        "the commits came over smart HTTP"
    );

    let job = server.db.get_job("app").await.unwrap().unwrap();
    for (number, sha, task) in [(1, &main, "build"), (2, &head, "pr")] {
        let run = server.db.get_run(job.id, number).await.unwrap().unwrap();
        assert_eq!(run.run.status, Status::Queued, "{:?}", run.run.error);
        assert_eq!(run.run.sha.as_deref(), Some(sha.as_str()));
        let tasks: Vec<&str> = run.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(tasks, [task], "run {number} is its commit's pipeline");
    }

    let received = stand_in.received(2).await;
    let mut told: Vec<(&str, &str, &str)> = received
        .iter()
        .map(|r| (r.sha.as_str(), r.state.as_str(), r.context.as_str()))
        .collect();
    told.sort();
    let mut want = vec![
        (main.as_str(), "pending", "kiln/app"),
        (head.as_str(), "pending", "kiln/app"),
    ];
    want.sort();
    assert_eq!(told, want);
}
