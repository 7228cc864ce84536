//! The client against a small in-test server that follows DESIGN.md §4: it
//! answers each route with what it decoded from the request, so the tests
//! see exactly what the client sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use chrono::{TimeZone, Utc};
use futures_util::StreamExt;
use kiln_api::{
    Agent, AuditEntry, AuditList, Job, JobBody, Member, MemberBody, Problem, Results, Run, RunList,
    Secret, Token, TokenBody, TokenCreated, User, UserBody, UserPatchBody,
};
use kiln_client::{AuditFilter, Client, Error};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TOKEN: &str = "s3cret-token";
const MATRIX_TASK: &str = "test[db=pg,os=linux]";

/// What the server saw of the last request.
#[derive(Default)]
struct Seen {
    /// Path and query exactly as sent, before any decoding.
    raw_uri: String,
    authorization: Option<String>,
    body: Option<Value>,
}

#[derive(Clone, Default)]
struct Server {
    seen: Arc<Mutex<Seen>>,
    /// Chunks for the followed console; taken by the first follower.
    console: Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>,
}

impl Server {
    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }
}

fn at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
}

fn job(name: &str, body: &JobBody, change: Option<&str>) -> Job {
    Job {
        name: name.into(),
        kind: body.kind.clone(),
        repository: body.repository.clone(),
        pipeline_path: body.pipeline_path.clone(),
        default_branch: body.default_branch.clone(),
        pipeline: body.pipeline.clone(),
        visibility: body.visibility.clone().unwrap_or_else(|| "private".into()),
        forge: body.forge.clone(),
        fork_prs: body.fork_prs.clone().unwrap_or_else(|| "approve".into()),
        poll_interval: body.poll_interval.clone(),
        poll_error: None,
        created_at: at(),
        updated_at: at(),
        change: change.map(str::to_string),
    }
}

fn run(job: &str, number: i64, status: &str) -> Run {
    Run {
        job: job.into(),
        number,
        status: status.into(),
        branch: Some("main".into()),
        sha: Some("0123456789abcdef".into()),
        event: "api".into(),
        error: None,
        created_at: at(),
        started_at: None,
        finished_at: None,
        trigger: Default::default(),
        pull_request: None,
        tag: None,
        tasks: None,
        statuses: None,
    }
}

fn problem(status: StatusCode, title: &str, detail: &str, errors: &[&str]) -> Response {
    let problem = Problem {
        kind: "about:blank".into(),
        title: title.into(),
        status: status.as_u16(),
        detail: detail.into(),
        errors: errors.iter().map(|e| e.to_string()).collect(),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::to_vec(&problem).unwrap(),
    )
        .into_response()
}

/// Records the request, checks the token, and lets `/jobs/{status-NNN}`
/// answer with that error status.
async fn record(State(server): State<Server>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    {
        let mut seen = server.seen.lock().unwrap();
        seen.raw_uri = parts.uri.to_string();
        seen.authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_string());
        seen.body = serde_json::from_slice(&bytes).ok();
    }
    if parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid bearer token is needed",
            &[],
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

async fn get_job(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "forbidden" => problem(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this token may only read",
            &[],
        ),
        "invalid" => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid pipeline",
            "the job's pipeline has 2 problems",
            &[
                ".kiln.yml:3:5: unknown key `stpes`",
                ".kiln.yml:9:1: missing required key `tasks`",
            ],
        ),
        "plain-500" => (StatusCode::INTERNAL_SERVER_ERROR, "database on fire").into_response(),
        "garbled" => (StatusCode::OK, "{\"name\": 1}").into_response(),
        _ => problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!("no job `{name}`: see `kiln job list`"),
            &[],
        ),
    }
}

async fn put_job(Path(name): Path<String>, axum::Json(body): axum::Json<JobBody>) -> Response {
    let change = if name == "existing" {
        "unchanged"
    } else {
        "created"
    };
    axum::Json(job(&name, &body, Some(change))).into_response()
}

async fn create_job(axum::Json(body): axum::Json<JobBody>) -> Response {
    let name = body.name.clone().unwrap_or_default();
    (StatusCode::CREATED, axum::Json(job(&name, &body, None))).into_response()
}

async fn list_runs(
    Path(job): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> axum::Json<RunList> {
    // The query is echoed in the runs' fields so the test can check it.
    let mut first = run(&job, 2, query.get("status").map_or("success", |s| s));
    first.branch = query.get("branch").cloned();
    axum::Json(RunList {
        runs: vec![first],
        next_cursor: query.get("cursor").map(|c| format!("after-{c}")),
    })
}

async fn results(Path((job, n, task)): Path<(String, i64, String)>) -> axum::Json<Results> {
    axum::Json(Results {
        attempt: 1,
        attempts: 1,
        console: Some(format!(
            "/api/v1/jobs/{job}/runs/{n}/tasks/{task}/results/console"
        )),
        junit: None,
        artifacts: vec![],
    })
}

const LOG: &str = "line one\nline two\n";

async fn console(
    State(server): State<Server>,
    Path((_job, _n, task)): Path<(String, i64, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if query.get("follow").map(String::as_str) == Some("true") {
        let Some(receiver) = server.console.lock().unwrap().take() else {
            return problem(StatusCode::CONFLICT, "Conflict", "followed twice", &[]);
        };
        // Each chunk is sent as soon as the test hands it over; the body ends
        // when the test drops its sender, as the server's does when a task ends.
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((Ok::<_, std::io::Error>(chunk), receiver))
        });
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    if task == "ignores-range" {
        return LOG.into_response();
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    match range {
        None => LOG.into_response(),
        Some(start) if start >= LOG.len() => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        Some(start) => (
            StatusCode::PARTIAL_CONTENT,
            [(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{}", LOG.len() - 1, LOG.len()),
            )],
            LOG[start..].to_string(),
        )
            .into_response(),
    }
}

fn user(name: &str, role: &str, has_password: bool) -> User {
    User {
        name: name.into(),
        role: role.into(),
        disabled: false,
        has_password,
        created_at: at(),
    }
}

async fn create_user(axum::Json(body): axum::Json<UserBody>) -> Response {
    let role = body.role.as_deref().unwrap_or("user");
    let created = user(&body.name, role, body.password.is_some());
    (StatusCode::CREATED, axum::Json(created)).into_response()
}

async fn update_user(
    Path(name): Path<String>,
    axum::Json(body): axum::Json<UserPatchBody>,
) -> axum::Json<User> {
    let mut updated = user(&name, body.role.as_deref().unwrap_or("user"), false);
    updated.disabled = body.disabled.unwrap_or(false);
    updated.has_password = body.password.is_some();
    axum::Json(updated)
}

/// The caller's tokens, or those of `?user=`, named after whose they are.
async fn list_tokens(
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Vec<Token>> {
    let owner = query.get("user").map_or("caller", String::as_str);
    axum::Json(vec![Token {
        id: 4,
        name: format!("{owner}-laptop"),
        user: owner.into(),
        created_at: at(),
        expires_at: None,
        last_used_at: Some(at()),
        revoked_at: None,
    }])
}

async fn create_token(axum::Json(body): axum::Json<TokenBody>) -> Response {
    let created = TokenCreated {
        id: 5,
        name: body.name,
        token: "kiln_user_abc".into(),
        expires_at: body.expires_in.map(|_| at()),
    };
    (StatusCode::CREATED, axum::Json(created)).into_response()
}

async fn put_member(
    Path((_job, user)): Path<(String, String)>,
    axum::Json(body): axum::Json<MemberBody>,
) -> axum::Json<Member> {
    axum::Json(Member {
        user,
        role: body.role,
        updated_at: at(),
    })
}

/// One entry made of the filters, and a cursor made of the one sent.
async fn audit(
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> axum::Json<AuditList> {
    let field = |key: &str| query.get(key).cloned().unwrap_or_default();
    axum::Json(AuditList {
        entries: vec![AuditEntry {
            id: 1,
            at: at(),
            actor: field("actor"),
            action: field("action"),
            object: field("object"),
            detail: None,
            source: Some("127.0.0.1".into()),
        }],
        next_cursor: query.get("cursor").map(|c| format!("after-{c}")),
    })
}

fn router(server: Server) -> Router {
    let api =
        Router::new()
            .route(
                "/jobs",
                get(|| async { axum::Json(Vec::<Job>::new()) }).post(create_job),
            )
            .route(
                "/jobs/{job}",
                get(get_job)
                    .put(put_job)
                    .delete(|| async { StatusCode::NO_CONTENT }),
            )
            .route(
                "/jobs/{job}/runs",
                get(list_runs).post(
                    |Path(job): Path<String>,
                     axum::Json(body): axum::Json<kiln_api::TriggerBody>| async move {
                        let mut created = run(&job, 7, "queued");
                        created.branch = body.branch;
                        created.sha = body.sha;
                        (StatusCode::CREATED, axum::Json(created))
                    },
                ),
            )
            .route(
                "/jobs/{job}/runs/{n}",
                get(|Path((job, n)): Path<(String, i64)>| async move {
                    let mut found = run(&job, n, "running");
                    found.tasks = Some(vec![]);
                    axum::Json(found)
                }),
            )
            .route(
                "/jobs/{job}/runs/{n}/cancel",
                post(|Path((job, n)): Path<(String, i64)>| async move {
                    axum::Json(run(&job, n, "cancelled"))
                }),
            )
            .route("/jobs/{job}/runs/{n}/tasks/{task}/results", get(results))
            .route(
                "/jobs/{job}/runs/{n}/tasks/{task}/results/console",
                get(console),
            )
            .route(
                "/jobs/{job}/runs/{n}/tasks/{task}/results/junit",
                get(
                    |Path((_, _, task)): Path<(String, i64, String)>| async move {
                        axum::Json(json!({"task": task, "tests": 3, "failures": 1}))
                    },
                ),
            )
            .route(
                "/jobs/{job}/runs/{n}/tasks/{task}/results/artifacts/{*path}",
                get(
                    |Path((_, _, task, path)): Path<(String, i64, String, String)>| async move {
                        format!("{task} {path}")
                    },
                ),
            )
            .route(
                "/jobs/{job}/secrets",
                get(|| async {
                    axum::Json(vec![Secret {
                        name: "CRATES_TOKEN".into(),
                        updated_at: at(),
                        allow_forks: false,
                    }])
                }),
            )
            .route(
                "/jobs/{job}/secrets/{name}",
                put(|| async { StatusCode::NO_CONTENT })
                    .delete(|| async { StatusCode::NO_CONTENT }),
            )
            .route(
                "/agent-tokens",
                post(
                    |axum::Json(body): axum::Json<kiln_api::AgentTokenBody>| async move {
                        (
                            StatusCode::CREATED,
                            axum::Json(TokenCreated {
                                id: 7,
                                name: body.name,
                                token: "kiln_agent_abc".into(),
                                expires_at: None,
                            }),
                        )
                    },
                ),
            )
            .route(
                "/agents",
                get(|| async {
                    axum::Json(vec![Agent {
                        name: "builder-1".into(),
                        labels: vec!["linux".into()],
                        state: "idle".into(),
                        running_tasks: vec![],
                        last_heartbeat: Some(at()),
                    }])
                }),
            )
            .route(
                "/users",
                get(|| async { axum::Json(vec![user("admin", "admin", true)]) }).post(create_user),
            )
            .route(
                "/users/{user}",
                get(|Path(name): Path<String>| async move {
                    axum::Json(user(&name, "user", false))
                })
                .patch(update_user)
                .delete(|| async { StatusCode::NO_CONTENT }),
            )
            .route("/tokens", get(list_tokens).post(create_token))
            .route(
                "/tokens/{id}",
                delete(|Path(_id): Path<i64>| async { StatusCode::NO_CONTENT }),
            )
            .route(
                "/jobs/{job}/members",
                get(|| async {
                    axum::Json(vec![Member {
                        user: "ada".into(),
                        role: "maintainer".into(),
                        updated_at: at(),
                    }])
                }),
            )
            .route(
                "/jobs/{job}/members/{user}",
                put(put_member).delete(|| async { StatusCode::NO_CONTENT }),
            )
            .route("/audit", get(audit));
    Router::new()
        .nest("/api/v1", api)
        .layer(middleware::from_fn_with_state(server.clone(), record))
        .with_state(server)
}

/// Starts the server on a free port; returns its state and `host:port`.
async fn start() -> (Server, String) {
    let server = Server::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = router(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (server, address)
}

async fn client() -> (Server, Client) {
    let (server, address) = start().await;
    // No scheme: `http://` is assumed.
    let client = Client::new(&address, Some(TOKEN)).unwrap();
    (server, client)
}

#[tokio::test]
async fn task_names_are_percent_encoded_and_decode_back() {
    let (server, client) = client().await;
    let results = client.results("my job", 3, MATRIX_TASK).await.unwrap();
    assert_eq!(
        server.seen(|s| s.raw_uri.clone()),
        "/api/v1/jobs/my%20job/runs/3/tasks/test%5Bdb%3Dpg%2Cos%3Dlinux%5D/results"
    );
    // The server's router decoded every segment back to the exact names.
    assert_eq!(
        results.console.as_deref(),
        Some("/api/v1/jobs/my job/runs/3/tasks/test[db=pg,os=linux]/results/console")
    );

    let junit = client.junit("app", 3, MATRIX_TASK).await.unwrap();
    assert_eq!(junit["task"], MATRIX_TASK);

    // An artifact path keeps its `/` between components, each escaped.
    let bytes = client
        .artifact("app", 3, MATRIX_TASK, "target/report [x].txt")
        .await
        .unwrap();
    assert_eq!(
        &bytes[..],
        format!("{MATRIX_TASK} target/report [x].txt").as_bytes()
    );
    assert!(
        server
            .seen(|s| s.raw_uri.clone())
            .ends_with("/results/artifacts/target/report%20%5Bx%5D.txt")
    );
    let error = client
        .artifact("app", 3, "t", "../../secrets")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error}");
}

#[tokio::test]
async fn bearer_token_is_sent_and_bodies_round_trip() {
    let (server, client) = client().await;
    assert!(client.list_jobs().await.unwrap().is_empty());
    assert_eq!(
        server.seen(|s| s.authorization.clone()).as_deref(),
        Some("Bearer s3cret-token")
    );

    let body = JobBody {
        name: None,
        kind: "git".into(),
        repository: Some("https://example.com/app.git".into()),
        pipeline_path: None,
        default_branch: Some("trunk".into()),
        pipeline: None,
        visibility: None,
        forge: None,
        fork_prs: None,
        poll_interval: None,
    };
    let created = client.put_job("app", &body).await.unwrap();
    assert_eq!(created.change.as_deref(), Some("created"));
    assert_eq!(created.default_branch.as_deref(), Some("trunk"));
    assert_eq!(
        server.seen(|s| s.body.clone()).unwrap(),
        json!({"kind": "git", "repository": "https://example.com/app.git", "default_branch": "trunk"})
    );
    let again = client.put_job("existing", &body).await.unwrap();
    assert_eq!(again.change.as_deref(), Some("unchanged"));

    let posted = client
        .create_job(&JobBody {
            name: Some("free".into()),
            kind: "freestyle".into(),
            pipeline: Some("version: 1\n".into()),
            repository: None,
            pipeline_path: None,
            default_branch: None,
            visibility: None,
            forge: None,
            fork_prs: None,
            poll_interval: None,
        })
        .await
        .unwrap();
    assert_eq!(posted.name, "free");
    client.delete_job("app").await.unwrap();

    let triggered = client
        .trigger(
            "app",
            &kiln_api::TriggerBody {
                branch: Some("feature/x".into()),
                sha: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((triggered.number, triggered.status.as_str()), (7, "queued"));
    assert_eq!(triggered.branch.as_deref(), Some("feature/x"));
    assert_eq!(
        server.seen(|s| s.body.clone()).unwrap(),
        json!({"branch": "feature/x"})
    );

    let page = client
        .list_runs("app", Some("failure"), Some("feature/x"), Some("c1"))
        .await
        .unwrap();
    assert_eq!(
        server.seen(|s| s.raw_uri.clone()),
        "/api/v1/jobs/app/runs?status=failure&branch=feature%2Fx&cursor=c1"
    );
    assert_eq!(page.runs[0].status, "failure");
    assert_eq!(page.runs[0].branch.as_deref(), Some("feature/x"));
    assert_eq!(page.next_cursor.as_deref(), Some("after-c1"));
    client.list_runs("app", None, None, None).await.unwrap();
    assert_eq!(server.seen(|s| s.raw_uri.clone()), "/api/v1/jobs/app/runs");

    assert_eq!(client.get_run("app", 4).await.unwrap().status, "running");
    assert_eq!(
        client.cancel_run("app", 4).await.unwrap().status,
        "cancelled"
    );
    assert_eq!(
        server.seen(|s| s.raw_uri.clone()),
        "/api/v1/jobs/app/runs/4/cancel"
    );

    client
        .put_secret("app", "CRATES_TOKEN", "v@lue\n", false)
        .await
        .unwrap();
    assert_eq!(
        server.seen(|s| s.body.clone()).unwrap(),
        json!({"value": "v@lue\n"})
    );
    assert_eq!(
        client.list_secrets("app").await.unwrap()[0].name,
        "CRATES_TOKEN"
    );
    client.delete_secret("app", "CRATES_TOKEN").await.unwrap();

    let body = kiln_api::AgentTokenBody {
        name: "builder-1".into(),
        labels: Some(vec!["linux".into()]),
        max_capacity: Some(4),
    };
    let token = client.create_agent_token(&body).await.unwrap();
    assert_eq!(token.token, "kiln_agent_abc");
    assert_eq!(client.list_agents().await.unwrap()[0].labels, ["linux"]);
}

#[tokio::test]
async fn users_tokens_members_and_the_audit_log() {
    let (server, client) = client().await;
    let seen_uri = || server.seen(|s| s.raw_uri.clone());
    let seen_body = || server.seen(|s| s.body.clone());

    assert_eq!(client.list_users().await.unwrap()[0].role, "admin");
    assert_eq!(seen_uri(), "/api/v1/users");
    let created = client
        .create_user(&UserBody {
            name: "ada".into(),
            role: None,
            password: Some("correct horse".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        (created.name.as_str(), created.role.as_str()),
        ("ada", "user")
    );
    assert!(created.has_password);
    assert_eq!(
        seen_body().unwrap(),
        json!({"name": "ada", "password": "correct horse"})
    );
    assert_eq!(
        client.get_user("ada lovelace").await.unwrap().name,
        "ada lovelace"
    );
    assert_eq!(seen_uri(), "/api/v1/users/ada%20lovelace");
    let updated = client
        .update_user(
            "ada",
            &UserPatchBody {
                role: Some("admin".into()),
                disabled: Some(true),
                password: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.role, "admin");
    assert!(updated.disabled);
    // Fields left out are not sent, so the server keeps them.
    assert_eq!(
        seen_body().unwrap(),
        json!({"role": "admin", "disabled": true})
    );
    client.delete_user("ada").await.unwrap();
    assert_eq!(seen_uri(), "/api/v1/users/ada");
    let error = client.delete_user("..").await.unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error}");

    let mine = client.list_tokens(None).await.unwrap();
    assert_eq!(seen_uri(), "/api/v1/tokens");
    assert_eq!(mine[0].user, "caller");
    let adas = client.list_tokens(Some("ada&x")).await.unwrap();
    assert_eq!(seen_uri(), "/api/v1/tokens?user=ada%26x");
    assert_eq!(adas[0].user, "ada&x");
    let token = client
        .create_token(&TokenBody {
            name: "ci".into(),
            expires_in: Some("30d".into()),
            user: Some("ada".into()),
        })
        .await
        .unwrap();
    assert_eq!((token.id, token.token.as_str()), (5, "kiln_user_abc"));
    assert_eq!(token.expires_at, Some(at()));
    assert_eq!(
        seen_body().unwrap(),
        json!({"name": "ci", "expires_in": "30d", "user": "ada"})
    );
    client.revoke_token(5).await.unwrap();
    assert_eq!(seen_uri(), "/api/v1/tokens/5");

    assert_eq!(client.list_members("my app").await.unwrap()[0].user, "ada");
    assert_eq!(seen_uri(), "/api/v1/jobs/my%20app/members");
    let member = client.set_member("app", "ada", "developer").await.unwrap();
    assert_eq!(
        (member.user.as_str(), member.role.as_str()),
        ("ada", "developer")
    );
    assert_eq!(seen_uri(), "/api/v1/jobs/app/members/ada");
    assert_eq!(seen_body().unwrap(), json!({"role": "developer"}));
    client.remove_member("app", "ada").await.unwrap();
    assert_eq!(seen_uri(), "/api/v1/jobs/app/members/ada");

    let everything = client
        .audit(&AuditFilter::default(), None, None)
        .await
        .unwrap();
    assert_eq!(seen_uri(), "/api/v1/audit");
    assert_eq!(everything.next_cursor, None);
    let filter = AuditFilter {
        actor: Some("admin".into()),
        action: Some("user.create".into()),
        object: Some("job/my app".into()),
    };
    let page = client.audit(&filter, Some("c7"), Some(20)).await.unwrap();
    assert_eq!(
        seen_uri(),
        "/api/v1/audit?actor=admin&action=user.create&object=job%2Fmy+app&cursor=c7&limit=20"
    );
    let entry = &page.entries[0];
    assert_eq!(
        (
            entry.actor.as_str(),
            entry.action.as_str(),
            entry.object.as_str()
        ),
        ("admin", "user.create", "job/my app")
    );
    assert_eq!(page.next_cursor.as_deref(), Some("after-c7"));
}

#[tokio::test]
async fn console_ranges() {
    let (_server, client) = client().await;
    assert_eq!(
        &client.console("app", 1, "t", None, None).await.unwrap()[..],
        LOG.as_bytes()
    );
    assert_eq!(
        &client.console("app", 1, "t", None, Some(9)).await.unwrap()[..],
        b"line two\n"
    );
    // Past the end: nothing new yet, not an error.
    assert!(
        client
            .console("app", 1, "t", None, Some(99))
            .await
            .unwrap()
            .is_empty()
    );
    // A server that ignores `Range` still yields only the bytes asked for.
    assert_eq!(
        &client
            .console("app", 1, "ignores-range", None, Some(9))
            .await
            .unwrap()[..],
        b"line two\n"
    );
}

#[tokio::test]
async fn error_statuses_map_to_errors_with_actionable_messages() {
    let (_server, address) = start().await;
    let anonymous = Client::new(&format!("http://{address}/"), None).unwrap();
    let error = anonymous.list_jobs().await.unwrap_err();
    assert!(matches!(error, Error::Unauthorized), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the server refused the token (401): set --token or KILN_TOKEN"
    );

    let client = Client::new(&address, Some(TOKEN)).unwrap();
    let error = client.get_job("forbidden").await.unwrap_err();
    assert!(matches!(error, Error::Forbidden { .. }), "{error:?}");
    assert_eq!(error.status(), Some(403));
    assert_eq!(
        error.to_string(),
        "the server refused this request (403 Forbidden): this token may only read"
    );

    let error = client.get_job("nope").await.unwrap_err();
    match &error {
        Error::Api { status, problem } => {
            assert_eq!(*status, 404);
            assert_eq!(problem.title, "Not Found");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        "Not Found: no job `nope`: see `kiln job list`"
    );

    let error = client.get_job("invalid").await.unwrap_err();
    assert_eq!(error.status(), Some(422));
    assert_eq!(
        error.to_string(),
        "Invalid pipeline: the job's pipeline has 2 problems\n  \
         .kiln.yml:3:5: unknown key `stpes`\n  \
         .kiln.yml:9:1: missing required key `tasks`"
    );

    // Not problem+json (e.g. from a proxy): the status and body still show.
    let error = client.get_job("plain-500").await.unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert_eq!(
        error.to_string(),
        "Internal Server Error: `database on fire`"
    );

    let error = client.get_job("garbled").await.unwrap_err();
    assert!(matches!(error, Error::Decode { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("unexpected response from http://"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_server_says_so() {
    // A port that was free a moment ago and that nothing listens on now.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = Client::new(&format!("http://{address}"), Some(TOKEN)).unwrap();
    let error = client.list_jobs().await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot reach the Kiln server at http://{address}: "
        )),
        "{message}"
    );
    assert!(
        message.ends_with("; is it running? (set --server or KILN_SERVER)"),
        "{message}"
    );
    assert!(error.is_transient());
}

/// The stream's next item, failing the test rather than hanging.
async fn next<S: futures_util::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream yields in time")
}

#[tokio::test]
async fn follow_console_yields_chunks_as_they_are_written() {
    let (server, client) = client().await;
    let (sender, receiver) = mpsc::channel(4);
    *server.console.lock().unwrap() = Some(receiver);
    sender
        .send(Bytes::from_static(b"compiling\n"))
        .await
        .unwrap();
    let mut stream = client
        .follow_console("app", 2, MATRIX_TASK, None)
        .await
        .unwrap();
    assert!(
        server
            .seen(|s| s.raw_uri.clone())
            .ends_with("/tasks/test%5Bdb%3Dpg%2Cos%3Dlinux%5D/results/console?follow=true")
    );
    // Each chunk arrives while the server still holds the response open.
    let first = next(&mut stream).await;
    assert_eq!(&first.unwrap().unwrap()[..], b"compiling\n");
    sender.send(Bytes::from_static(b"testing\n")).await.unwrap();
    let second = next(&mut stream).await;
    assert_eq!(&second.unwrap().unwrap()[..], b"testing\n");
    // The task ends: the server closes the stream, and so does the client's.
    drop(sender);
    let end = next(&mut stream).await;
    assert!(end.is_none());
}
