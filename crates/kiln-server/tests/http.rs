//! The REST API's answers to requests it refuses, and its description of
//! them: an in-process server on a random port, on SQLite, driven over HTTP.
//! Every refusal is `application/problem+json`, including the ones the
//! framework would have answered in plain text. `hooks` drives forges'
//! webhooks through the same server.

#[path = "http/hooks.rs"]
mod hooks;
#[path = "http/statuses.rs"]
mod statuses;

use std::time::Duration;

use chrono::Utc;
use kiln_pipeline::Event;
use kiln_server::ServerConfig;
use kiln_store::{
    Claim, Holder, JobStore, LogStore, NewRun, QueueStore, RunStore, TokenKind, TokenStore,
};
use kiln_store_sqlite::SqliteStore;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

const ADMIN: &str = "kiln_admin_http_test_token";
/// The `--public-url` the test servers run with.
const PUBLIC_URL: &str = "https://ci.example.com";
const PIPELINE: &str = "version: 1\ntasks:\n  build:\n    steps:\n      - run: echo hello\n";

struct Harness {
    http: reqwest::Client,
    base: String,
    db: SqliteStore,
    /// The server's change feed: a test that changes runs through the
    /// store says so here, as the agents' service does.
    events: std::sync::Arc<kiln_server::events::EventHub>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An answer: status, headers and the body parsed as JSON (`null` if it is
/// not JSON).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts a problem of this status, and returns its `detail`.
    fn problem(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.headers[CONTENT_TYPE], "application/problem+json",
            "{status}: {}",
            self.body
        );
        assert_eq!(self.body["status"], status.as_u16(), "{}", self.body);
        assert_eq!(self.body["type"], "about:blank");
        self.body["detail"].as_str().unwrap().to_string()
    }
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_in(tempfile::tempdir().unwrap()).await
    }

    /// A server on the database (and key) in `dir`, made there if new.
    async fn start_in(dir: tempfile::TempDir) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = SqliteStore::open(&dir.path().join("kiln.db"))
            .await
            .unwrap();
        if !db.has_admin_token().await.unwrap() {
            db.insert_token(
                &kiln_crypto::hash_token(ADMIN),
                TokenKind::User,
                "admin",
                true,
                Utc::now(),
            )
            .await
            .unwrap();
        }
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            blob_url: None,
            agent_lease: Duration::from_secs(15),
            max_report_size: kiln_server::DEFAULT_MAX_REPORT_SIZE,
            limits: kiln_server::Limits::default(),
        };
        let mut state = kiln_server::app_state(db.clone(), &config).await.unwrap();
        state.public_url = Some(PUBLIC_URL.into());
        let events = state.events.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(kiln_server::serve(state, listener, None, shutdown.clone()));
        Harness {
            http: reqwest::Client::new(),
            base,
            db,
            events,
            shutdown,
            _dir: dir,
        }
    }

    /// Sends `body` as it is, with `content_type` if given.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.bytes().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn json(&self, method: Method, path: &str, body: &str) -> Answer {
        self.raw(method, path, Some("application/json"), body.to_string())
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.raw(Method::GET, path, None, "").await
    }

    async fn freestyle(&self, name: &str) {
        let body = json!({"kind": "freestyle", "pipeline": PIPELINE}).to_string();
        let answer = self
            .json(Method::PUT, &format!("/api/v1/jobs/{name}"), &body)
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_422_problems() {
    let server = Harness::start().await;
    server.freestyle("app").await;
    // serde reads an array as a struct's fields in order: `["feature-x"]`
    // used to trigger branch `feature-x`.
    for body in [r#"["feature-x"]"#, "42", r#""main""#, "true"] {
        let detail = server
            .json(Method::POST, "/api/v1/jobs/app/runs", body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(detail.contains("JSON object"), "{body}: {detail}");
    }
    for body in [r#"["app", "git"]"#, "null"] {
        server
            .json(Method::POST, "/api/v1/jobs", body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let runs = server.get("/api/v1/jobs/app/runs").await;
    assert_eq!(runs.body["runs"], json!([]), "a run was made");
}

#[tokio::test]
async fn unparsable_json_is_a_400_problem() {
    let server = Harness::start().await;
    server.freestyle("app").await;
    for body in ["{", "{\"branch\": }", "\u{0}", "{} {}", "nul"] {
        let detail = server
            .json(Method::POST, "/api/v1/jobs/app/runs", body)
            .await
            .problem(StatusCode::BAD_REQUEST);
        assert!(detail.contains("not JSON"), "{body:?}: {detail}");
    }
    server
        .json(Method::PUT, "/api/v1/jobs/app", "{\"kind\": \"git\",")
        .await
        .problem(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let server = Harness::start().await;
    server.freestyle("app").await;
    let body = json!({"kind": "freestyle", "pipeline": PIPELINE}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let detail = server
            .raw(Method::PUT, "/api/v1/jobs/b", content_type, body.clone())
            .await
            .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(detail.contains("application/json"), "{detail}");
    }
    // An optional body is optional, but when sent it is JSON.
    server
        .raw(
            Method::POST,
            "/api/v1/jobs/app/runs",
            Some("text/plain"),
            "{}",
        )
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // `+json` types are JSON.
    let answer = server
        .raw(
            Method::PUT,
            "/api/v1/jobs/c",
            Some("application/vnd.kiln+json; charset=utf-8"),
            body,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

#[tokio::test]
async fn unknown_and_invalid_fields_are_422_problems() {
    let server = Harness::start().await;
    server.freestyle("app").await;
    let cases = [
        (
            Method::POST,
            "/api/v1/jobs",
            json!({"name": "x", "kind": "git", "repository": "/r", "surprise": 1}),
            "surprise",
        ),
        (
            Method::POST,
            "/api/v1/jobs",
            json!({"name": "x", "kind": "svn"}),
            "svn",
        ),
        // Only PUT takes a job without a name: the URL names it.
        (
            Method::POST,
            "/api/v1/jobs",
            json!({"kind": "git", "repository": "/r"}),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/jobs",
            json!({"name": "x", "kind": "git", "repository": "-oProxyCommand=x"}),
            "repository",
        ),
        (
            Method::PUT,
            "/api/v1/jobs/x",
            json!({"kind": "git", "repository": "/r", "pipeline_path": "../etc/passwd"}),
            "pipeline_path",
        ),
        (
            Method::PUT,
            "/api/v1/jobs/x",
            json!({"kind": "freestyle", "pipeline": PIPELINE, "repository": "/r"}),
            "repository",
        ),
        (
            Method::POST,
            "/api/v1/jobs/app/runs",
            json!({"tag": "v1"}),
            "tag",
        ),
        (
            Method::POST,
            "/api/v1/jobs/app/runs",
            json!({"branch": "--upload-pack=x"}),
            "branch",
        ),
        (
            Method::POST,
            "/api/v1/jobs/app/runs",
            json!({"sha": "not-hex"}),
            "sha",
        ),
        (
            Method::POST,
            "/api/v1/jobs/app/runs",
            json!({"branch": "main", "sha": "abc123"}),
            "not both",
        ),
        (
            Method::PUT,
            "/api/v1/jobs/app/secrets/TOKEN",
            json!({"value": "abc"}),
            "4 to 65536",
        ),
        (
            Method::PUT,
            "/api/v1/jobs/app/secrets/TOKEN",
            json!({"value": "x".repeat(65537)}),
            "4 to 65536",
        ),
        (
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "has space"}),
            "token name",
        ),
        (
            Method::POST,
            "/api/v1/agent-tokens",
            json!({"name": "ok", "admin": true}),
            "admin",
        ),
    ];
    for (method, path, body, needle) in cases {
        let detail = server
            .json(method.clone(), path, &body.to_string())
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(detail.contains(needle), "{method} {path} {body}: {detail}");
    }
    // Non-ASCII secret values count in characters, as the schema does.
    let answer = server
        .json(
            Method::PUT,
            "/api/v1/jobs/app/secrets/TOKEN",
            &json!({"value": "é".repeat(65536)}).to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let server = Harness::start().await;
    let huge = json!({"kind": "freestyle", "pipeline": "x".repeat(4 << 20)}).to_string();
    let detail = server
        .json(Method::PUT, "/api/v1/jobs/huge", &huge)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail.contains("3 MiB"), "{detail}");
}

#[tokio::test]
async fn bad_path_and_query_parameters_are_422_problems() {
    let server = Harness::start().await;
    server.freestyle("app").await;
    for (method, path) in [
        (Method::GET, "/api/v1/jobs/app/runs/abc"),
        (Method::GET, "/api/v1/jobs/app/runs/99999999999999999999"),
        (Method::GET, "/api/v1/jobs/-app"),
        (Method::DELETE, "/api/v1/jobs/app/secrets/2FA"),
        (Method::GET, "/api/v1/jobs/app/runs?limit=0"),
        (Method::GET, "/api/v1/jobs/app/runs?limit=501"),
        (Method::GET, "/api/v1/jobs/app/runs?limit=ten"),
        (Method::GET, "/api/v1/jobs/app/runs?status=bogus"),
        (Method::GET, "/api/v1/jobs/app/runs?cursor=-1"),
        (
            Method::GET,
            "/api/v1/jobs/app/runs/1/tasks/build/results/console?follow=maybe",
        ),
    ] {
        server
            .raw(method, path, None, "")
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    // What was accepted before still is: empty filters mean none.
    let answer = server
        .get("/api/v1/jobs/app/runs?status=&branch=&cursor=&limit=500")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn a_trigger_takes_no_body_null_or_an_object() {
    let server = Harness::start().await;
    server.freestyle("app").await;
    let mut number = 0;
    for (content_type, body) in [
        (None, ""),
        (Some("application/json"), ""),
        (Some("application/json"), "null"),
        (Some("application/json"), "{}"),
        (Some("application/json"), r#"{"branch": "feature/x"}"#),
    ] {
        let answer = server
            .raw(Method::POST, "/api/v1/jobs/app/runs", content_type, body)
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{body:?}: {}",
            answer.body
        );
        number += 1;
        assert_eq!(answer.body["number"], number);
    }
    let answer = server.get("/api/v1/jobs/app/runs/5").await;
    assert_eq!(answer.body["branch"], "feature/x");
    // A freestyle job has no commits: the trigger error is a problem too.
    let detail = server
        .json(
            Method::POST,
            "/api/v1/jobs/app/runs",
            r#"{"sha": "abc123"}"#,
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("freestyle"), "{detail}");
}

/// A run that kept no pipeline (made before runs kept theirs), or that
/// built a commit of a job now freestyle, cannot be repeated: `409`, and no
/// run is made, rather than a run of something else.
#[tokio::test]
async fn a_run_that_cannot_be_repeated_is_a_409_problem() {
    let server = Harness::start().await;
    server.freestyle("app").await;
    let job = server.db.get_job("app").await.unwrap().unwrap();
    let unkept = NewRun {
        branch: Some("main".into()),
        sha: None,
        event: Event::Api,
        error: None,
        timeout: None,
        tasks: Vec::new(),
        pipeline: None,
        audit: None,
        trigger: kiln_store::RunTrigger::default(),
        pull_request: None,
        tag: None,
        queued_trigger: None,
        blocked: false,
    };
    let of_a_commit = NewRun {
        sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
        pipeline: Some(PIPELINE.into()),
        ..unkept.clone()
    };
    for (run, expected) in [(unkept, "kept the pipeline"), (of_a_commit, "freestyle")] {
        let number = server
            .db
            .create_run(job.id, run, Utc::now())
            .await
            .unwrap()
            .run
            .number;
        let detail = server
            .json(
                Method::POST,
                &format!("/api/v1/jobs/app/runs/{number}/rerun"),
                "",
            )
            .await
            .problem(StatusCode::CONFLICT);
        assert!(detail.contains(expected), "{detail}");
        assert!(detail.contains("trigger a new run"), "{detail}");
    }
    let runs = server.get("/api/v1/jobs/app/runs").await;
    assert_eq!(
        runs.body["runs"].as_array().unwrap().len(),
        2,
        "no run made"
    );
}

#[tokio::test]
async fn an_unsatisfiable_range_is_416_with_the_log_length() {
    let server = Harness::start().await;
    server.freestyle("app").await;
    let path = "/api/v1/jobs/app/runs/1/tasks/build/results/console";
    let answer = server
        .json(Method::POST, "/api/v1/jobs/app/runs", "{}")
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    // Nothing written yet: no range is within an empty log.
    let range = |value: &'static str| {
        server
            .http
            .get(format!("{}{path}", server.base))
            .bearer_auth(ADMIN)
            .header("range", value)
            .send()
    };
    let response = range("bytes=0-0").await.unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(response.headers()[CONTENT_RANGE], "bytes */0");

    // The task runs and writes 12 bytes.
    let task = server
        .db
        .claim_task(&Claim {
            holder: "tester".into(),
            labels: vec!["linux".into()],
            lease: Duration::from_secs(60),
            now: Utc::now(),
        })
        .await
        .unwrap()
        .expect("the task is queued");
    assert!(
        server
            .db
            .append_log(
                task.id,
                &Holder::new("tester", task.attempt),
                0,
                b"hello world\n"
            )
            .await
            .unwrap()
    );
    for asked in ["bytes=12-", "bytes=0-1,3-4", "items=0-1"] {
        let response = range(asked).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{asked}"
        );
        assert_eq!(response.headers()[CONTENT_RANGE], "bytes */12", "{asked}");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 416);
    }
    let response = range("bytes=6-").await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()[CONTENT_RANGE], "bytes 6-11/12");
    assert_eq!(response.text().await.unwrap(), "world\n");
}

#[tokio::test]
async fn routes_and_methods_not_served_are_problems() {
    let server = Harness::start().await;
    server
        .get("/api/v1/nothing")
        .await
        .problem(StatusCode::NOT_FOUND);
    server
        .raw(Method::PATCH, "/api/v1/jobs", None, "")
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED);
    let unauthenticated = server
        .http
        .post(format!("{}/api/v1/jobs", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        unauthenticated.headers()[CONTENT_TYPE],
        "application/problem+json"
    );
}

/// Each operation of the document, with its method and path.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

#[test]
fn every_protected_operation_documents_401_and_403() {
    let document = serde_json::to_value(kiln_server::api::ApiDoc::openapi()).unwrap();
    let mut protected = 0;
    for (method, path, operation) in operations(&document) {
        if operation["security"].as_array().is_none_or(Vec::is_empty) {
            assert!(
                !path.starts_with("/api/v1/"),
                "{method} {path} needs no token?"
            );
            continue;
        }
        protected += 1;
        for status in ["401", "403"] {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path} does not document {status}"
            );
        }
    }
    assert!(protected >= 19, "only {protected} protected operations");
}

#[test]
fn problems_are_declared_as_problem_json() {
    let document = serde_json::to_value(kiln_server::api::ApiDoc::openapi()).unwrap();
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let mut declared = 0;
    for (method, path, operation) in operations(&document) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            let content = response["content"].as_object();
            for (media_type, body) in content.into_iter().flatten() {
                if body["schema"] == problem {
                    assert_eq!(
                        media_type, "application/problem+json",
                        "{method} {path} {status}"
                    );
                    declared += 1;
                }
            }
            if status.starts_with(['4', '5']) {
                assert!(
                    response["content"]["application/problem+json"]["schema"] == problem,
                    "{method} {path} {status} is not declared as a problem"
                );
            }
        }
        // What the extractors answer is declared wherever they run.
        if operation["requestBody"].is_object() {
            for status in ["400", "413", "415", "422"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} reads a body but does not document {status}"
                );
            }
        }
        if operation["parameters"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["in"] == "path" || p["in"] == "query"))
        {
            assert!(
                operation["responses"]["422"].is_object(),
                "{method} {path} checks parameters but does not document 422"
            );
        }
    }
    assert!(declared > 40, "only {declared} problem responses");
    let console = &document["paths"]["/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/console"]
        ["get"]["responses"]["416"];
    assert!(console["headers"]["Content-Range"].is_object(), "{console}");
}

#[test]
fn request_schemas_are_as_strict_as_their_checks() {
    let document = serde_json::to_value(kiln_server::api::ApiDoc::openapi()).unwrap();
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["TokenName"]["pattern"],
        kiln_api::fields::TokenName::PATTERN
    );
    let secret = &document["paths"]["/api/v1/jobs/{job}/secrets/{name}"]["put"];
    let name = secret["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "name")
        .unwrap();
    assert_eq!(
        name["schema"]["pattern"],
        kiln_api::fields::SecretName::PATTERN
    );
    assert_eq!(schemas["SecretValue"]["maxLength"], 65536);
    // POST needs a name; PUT takes it from the URL.
    for (schema, name_required) in [
        ("NewGitJob", true),
        ("NewFreestyleJob", true),
        ("GitJob", false),
        ("FreestyleJob", false),
    ] {
        let required = schemas[schema]["required"].as_array().unwrap();
        assert_eq!(required.contains(&json!("name")), name_required, "{schema}");
        assert_eq!(schemas[schema]["additionalProperties"], false, "{schema}");
    }
    let runs = &document["paths"]["/api/v1/jobs/{job}/runs"];
    let limit = runs["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (
            limit["schema"]["minimum"].clone(),
            limit["schema"]["maximum"].clone()
        ),
        (json!(1), json!(500))
    );
    // The trigger's body is optional.
    assert_ne!(runs["post"]["requestBody"]["required"], true);
    assert_eq!(schemas["RunTrigger"]["maxProperties"], 1);
}

/// The document is valid OpenAPI 3.1 to an independent validator (from
/// PyPI; scripts/setup-test-env.sh installs it).
#[test]
fn the_document_is_valid_openapi() {
    use std::io::Write;
    let document = kiln_server::api::ApiDoc::openapi().to_json().unwrap();
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(sys.stdin))",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/setup-test-env.sh installs what it needs)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(document.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "openapi-spec-validator refuses the document (or is not installed: run scripts/setup-test-env.sh)"
    );
}

const PASSWORD: &str = "correct horse battery";

impl Harness {
    /// `POST /login` as JSON, with these extra headers.
    async fn sign_in(&self, password: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/login", self.base))
            .json(&json!({"username": "ada", "password": password}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// A request carrying only the session cookie (and `origin`, if given).
    async fn with_cookie(
        &self,
        method: Method,
        path: &str,
        cookie: &str,
        origin: Option<&str>,
    ) -> StatusCode {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", format!("kiln_session={cookie}"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.unwrap().status()
    }

    async fn user_ada(&self) {
        let body = json!({"name": "ada", "password": PASSWORD}).to_string();
        let answer = self.json(Method::POST, "/api/v1/users", &body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert_eq!(answer.body["has_password"], true);
    }
}

/// The cookie's value and attributes from a sign-in's answer.
fn session_of(response: &reqwest::Response) -> (String, String) {
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let value = set
        .strip_prefix("kiln_session=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_string();
    (value, set)
}

#[tokio::test]
async fn a_session_cookie_works_from_this_site_only_until_sign_out() {
    let server = Harness::start().await;
    server.user_ada().await;
    server.freestyle("app").await;
    let body = json!({"role": "developer"}).to_string();
    let answer = server
        .json(Method::PUT, "/api/v1/jobs/app/members/ada", &body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    let wrong = server.sign_in("not the password", &[]).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());
    let signed_in = server.sign_in(PASSWORD, &[]).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let (cookie, attributes) = session_of(&signed_in);
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert!(!attributes.contains("Secure"), "plain HTTP: {attributes}");
    let behind_tls = server
        .sign_in(PASSWORD, &[("x-forwarded-proto", "https")])
        .await;
    assert!(session_of(&behind_tls).1.contains("; Secure"));

    let host = server.base.trim_start_matches("http://").to_string();
    let here = format!("http://{host}");
    assert_eq!(
        server
            .with_cookie(Method::GET, "/api/v1/jobs/app", &cookie, None)
            .await,
        StatusCode::OK
    );
    // Changes need the same origin: a page elsewhere cannot trigger runs.
    for origin in [None, Some("https://evil.example"), Some("null")] {
        assert_eq!(
            server
                .with_cookie(Method::POST, "/api/v1/jobs/app/runs", &cookie, origin)
                .await,
            StatusCode::FORBIDDEN,
            "{origin:?}"
        );
    }
    let runs = server.get("/api/v1/jobs/app/runs").await;
    assert_eq!(runs.body["runs"], json!([]), "a refused trigger made a run");
    assert_eq!(
        server
            .with_cookie(Method::POST, "/api/v1/jobs/app/runs", &cookie, Some(&here))
            .await,
        StatusCode::CREATED
    );
    // A sign-in posted from another site is refused.
    let forged = server
        .sign_in(PASSWORD, &[("origin", "https://evil.example")])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    // Signing in again with the cookie ends the old session.
    let again = server
        .sign_in(PASSWORD, &[("cookie", &format!("kiln_session={cookie}"))])
        .await;
    let (fresh, _) = session_of(&again);
    assert_ne!(fresh, cookie);
    assert_eq!(
        server
            .with_cookie(Method::GET, "/api/v1/tokens", &cookie, None)
            .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .with_cookie(Method::GET, "/api/v1/tokens", &fresh, None)
            .await,
        StatusCode::OK
    );
    let out = server
        .http
        .post(format!("{}/logout", server.base))
        .header("cookie", format!("kiln_session={fresh}"))
        .header("origin", &here)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(session_of(&out).1.contains("Max-Age=0"));
    assert_eq!(
        server
            .with_cookie(Method::GET, "/api/v1/tokens", &fresh, None)
            .await,
        StatusCode::UNAUTHORIZED
    );
    // An HTML form signs in too.
    let form = server
        .http
        .post(format!("{}/login", server.base))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!(
            "username=ada&password={}",
            PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);

    let audit = server.get("/api/v1/audit?actor=ada").await;
    let actions: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.sign_in",
            "user.sign_out",
            "user.sign_in",
            "run.trigger",
            "user.sign_in",
            "user.sign_in",
            "user.sign_in_failed"
        ]
    );
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_slowed_down_and_audited() {
    let server = Harness::start().await;
    server.user_ada().await;
    for _ in 0..5 {
        assert_eq!(
            server.sign_in("guess-guess", &[]).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right password waits now: guessing is one try per 30 s.
    let throttled = server.sign_in(PASSWORD, &[]).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "30");
    let problem: Value = throttled.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("too many"));
    // A name that does not exist is answered the same way.
    let unknown = server
        .http
        .post(format!("{}/login", server.base))
        .json(&json!({"username": "nobody", "password": "whatever-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let audit = server.get("/api/v1/audit?object=user/").await;
    let seen: Vec<(&str, &str)> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    let failed = seen
        .iter()
        .filter(|(who, what)| *who == "ada" && *what == "user.sign_in_failed")
        .count();
    assert_eq!(failed, 5, "{seen:?}");
    assert!(seen.contains(&("ada", "user.sign_in_throttled")));
    assert!(seen.contains(&("nobody", "user.sign_in_failed")));
}

#[tokio::test]
async fn bad_identity_input_is_refused_and_changes_nothing() {
    let server = Harness::start().await;
    server.user_ada().await;
    server.freestyle("app").await;
    let body = json!({"name": "root", "role": "admin"}).to_string();
    let answer = server.json(Method::POST, "/api/v1/users", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let users_before = server.get("/api/v1/users").await.body;
    let cases = [
        (
            Method::POST,
            "/api/v1/users",
            json!({"name": "eve", "role": "owner"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown role `owner`",
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"name": "ada"}),
            StatusCode::CONFLICT,
            "ada",
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"name": "eve", "password": "a"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "8 to 1024",
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"name": "eve", "password": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "8 to 1024",
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"name": "e ve"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "user name",
        ),
        (
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "t", "user": "ada", "expires_in": "-1d"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lifetime",
        ),
        (
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "t", "user": "ada", "expires_in": "0s"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lifetime",
        ),
        (
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "t", "user": "nobody"}),
            StatusCode::NOT_FOUND,
            "nobody",
        ),
        (
            Method::PUT,
            "/api/v1/jobs/app/members/nobody",
            json!({"role": "viewer"}),
            StatusCode::NOT_FOUND,
            "nobody",
        ),
        (
            Method::PUT,
            "/api/v1/jobs/app/members/ada",
            json!({"role": "owner"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "viewer, developer, maintainer",
        ),
        (
            Method::PATCH,
            "/api/v1/users/root",
            json!({"role": "user"}),
            StatusCode::CONFLICT,
            "last enabled admin",
        ),
        (
            Method::PATCH,
            "/api/v1/users/root",
            json!({"disabled": true}),
            StatusCode::CONFLICT,
            "last enabled admin",
        ),
        (
            Method::DELETE,
            "/api/v1/users/root",
            json!({}),
            StatusCode::CONFLICT,
            "last enabled admin",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let detail = server
            .json(method.clone(), path, &body.to_string())
            .await
            .problem(status);
        assert!(detail.contains(needle), "{method} {path} {body}: {detail}");
    }
    // A disabled user gets no new token.
    let body = json!({"disabled": true}).to_string();
    let answer = server.json(Method::PATCH, "/api/v1/users/ada", &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body = json!({"name": "t", "user": "ada"}).to_string();
    let detail = server
        .json(Method::POST, "/api/v1/tokens", &body)
        .await
        .problem(StatusCode::CONFLICT);
    assert!(detail.contains("disabled"), "{detail}");
    let body = json!({"disabled": false}).to_string();
    server.json(Method::PATCH, "/api/v1/users/ada", &body).await;

    assert_eq!(server.get("/api/v1/users").await.body, users_before);
    let tokens = server.get("/api/v1/tokens?user=ada").await;
    assert_eq!(tokens.body, json!([]), "no token was made");
    let members = server.get("/api/v1/jobs/app/members").await;
    assert_eq!(members.body, json!([]), "no member was set");
}

/// An artifact's `expires_at` (from `artifacts: expire-in`) is in the
/// document, optional like the expiry itself.
#[test]
fn artifacts_document_their_expiry() {
    let document = serde_json::to_value(kiln_server::api::ApiDoc::openapi()).unwrap();
    let artifact = &document["components"]["schemas"]["Artifact"];
    assert!(
        artifact["properties"]["expires_at"].is_object(),
        "{artifact:#}"
    );
    let required = artifact["required"].as_array().unwrap();
    assert!(!required.contains(&json!("expires_at")), "{artifact:#}");
}
