//! Who may call what (DESIGN.md §1, §5), cell by cell: every operation of
//! `/api/v1`, as the server's own OpenAPI document lists them, against every
//! kind of caller, on a real `kiln server` over HTTP, on SQLite and on
//! PostgreSQL. A refused cell must leave everything as it was; a route the
//! table below does not decide fails the test.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{ADMIN, PgDatabase, Server};

/// A pipeline whose task leaves an artifact and a test report, so every
/// results route has something to answer.
const PIPELINE: &str = r#"
version: 1
tasks:
  build:
    secrets: [TOKEN]
    steps:
      - run: |
          echo "built" > out.txt
          echo '<testsuite name="s" tests="1"><testcase classname="c" name="t"/></testsuite>' > junit.xml
    artifacts: { paths: [out.txt] }
    reports: { junit: [junit.xml] }
"#;

/// What a developer would like to run: the job's secret, encoded past the
/// log's masking.
const EXFILTRATE: &str = r#"
version: 1
tasks:
  build:
    secrets: [TOKEN]
    steps:
      - run: echo "$TOKEN" | base64
"#;

const SECRET: &str = "hunter2-but-longer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Viewer,
    Developer,
    Maintainer,
    Other,
    Admin,
    Revoked,
    Expired,
    Disabled,
}

const EVERYONE: [Who; 9] = [
    Who::Anonymous,
    Who::Viewer,
    Who::Developer,
    Who::Maintainer,
    Who::Other,
    Who::Admin,
    Who::Revoked,
    Who::Expired,
    Who::Disabled,
];

/// A member role, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Viewer,
    Developer,
    Maintainer,
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Anyone; a bad token is still refused.
    Anyone,
    /// Any signed-in user.
    SignedIn,
    /// An admin.
    Admin,
    /// The owner of the object, or an admin; others are told it does not
    /// exist.
    OwnerOrAdmin,
    /// A role on the job of the path (`app`, private).
    Job(Role),
}

/// State an admin sets up before each cell, so allowed calls that destroy
/// something find it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prepare {
    Nothing,
    /// The job `doomed`, with the same members as `app`.
    DoomedJob,
    /// The secret `DOOMED` of `app`.
    DoomedSecret,
    /// `target` a viewer of `app`.
    TargetMember,
    /// The user `doomed-user`.
    DoomedUser,
    /// A fresh token of `target`, whose id is the path's `{id}`.
    TargetToken,
    /// The agent `doomed-agent`, with a token.
    DoomedAgent,
    /// The forge `doomed-forge`, with a webhook secret.
    DoomedForge,
}

struct Route {
    method: Method,
    path: &'static str,
    need: Need,
    /// The status an allowed caller gets.
    ok: u16,
    body: Option<Value>,
    prepare: Prepare,
}

fn route(
    method: Method,
    path: &'static str,
    need: Need,
    ok: u16,
    body: Option<Value>,
    prepare: Prepare,
) -> Route {
    Route {
        method,
        path,
        need,
        ok,
        body,
        prepare,
    }
}

/// Every `/api/v1` operation's decision. One line per operation.
fn routes() -> Vec<Route> {
    use Need::*;
    use Prepare::*;
    use Role::{Developer, Maintainer, Viewer};
    vec![
        // The changes of the jobs the caller may read: anyone may open it
        // (the filtering is kiln-server's tests/events.rs's); `?timeout=0` below ends it.
        route(Method::GET, "/api/v1/events", Anyone, 200, None, Nothing),
        route(Method::GET, "/api/v1/jobs", Anyone, 200, None, Nothing),
        route(
            Method::POST,
            "/api/v1/jobs",
            SignedIn,
            201,
            Some(json!({"name": "new-job", "kind": "freestyle", "pipeline": PIPELINE})),
            Nothing,
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{job}",
            Job(Viewer),
            200,
            None,
            Nothing,
        ),
        route(
            Method::PUT,
            "/api/v1/jobs/{job}",
            Job(Maintainer),
            200,
            Some(json!({"kind": "freestyle", "pipeline": EXFILTRATE})),
            Nothing,
        ),
        route(
            Method::DELETE,
            "/api/v1/jobs/{job}",
            Job(Maintainer),
            204,
            None,
            DoomedJob,
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{job}/runs",
            Job(Viewer),
            200,
            None,
            Nothing,
        ),
        route(
            Method::POST,
            "/api/v1/jobs/{job}/runs",
            Job(Developer),
            201,
            None,
            Nothing,
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{job}/runs/{number}",
            Job(Viewer),
            200,
            None,
            Nothing,
        ),
        // Run 1 has ended: an allowed cancel is told so.
        route(
            Method::POST,
            "/api/v1/jobs/{job}/runs/{number}/cancel",
            Job(Developer),
            409,
            None,
            Nothing,
        ),
        route(
            Method::POST,
            "/api/v1/jobs/{job}/runs/{number}/rerun",
            Job(Developer),
            201,
            None,
            Nothing,
        ),
        // Approving is a maintainer's; run 1 is not blocked, so an
        // allowed caller is told there is nothing to approve.
        route(
            Method::POST,
            "/api/v1/jobs/{job}/runs/{number}/approve",
            Job(Maintainer),
            409,
            None,
            Nothing,
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results",
            Job(Viewer),
            200,
            None,
            Nothing,
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/console",
            Job(Viewer),
            200,
            None,
            Nothing,
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/junit",
            Job(Viewer),
            200,
            None,
            Nothing,
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{job}/runs/{number}/tasks/{task}/results/artifacts/{path}",
            Job(Viewer),
            200,
            None,
            Nothing,
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{job}/secrets",
            Job(Developer),
            200,
            None,
            Nothing,
        ),
        route(
            Method::PUT,
            "/api/v1/jobs/{job}/secrets/{name}",
            Job(Maintainer),
            204,
            Some(json!({"value": SECRET})),
            Nothing,
        ),
        route(
            Method::DELETE,
            "/api/v1/jobs/{job}/secrets/{name}",
            Job(Maintainer),
            204,
            None,
            DoomedSecret,
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{job}/members",
            Job(Viewer),
            200,
            None,
            Nothing,
        ),
        route(
            Method::PUT,
            "/api/v1/jobs/{job}/members/{user}",
            Job(Maintainer),
            200,
            Some(json!({"role": "developer"})),
            TargetMember,
        ),
        route(
            Method::DELETE,
            "/api/v1/jobs/{job}/members/{user}",
            Job(Maintainer),
            204,
            None,
            TargetMember,
        ),
        route(Method::GET, "/api/v1/users", Admin, 200, None, Nothing),
        route(
            Method::POST,
            "/api/v1/users",
            Admin,
            201,
            Some(json!({"name": "new-user", "password": "a long enough password"})),
            Nothing,
        ),
        route(
            Method::GET,
            "/api/v1/users/{user}",
            Admin,
            200,
            None,
            Nothing,
        ),
        route(
            Method::PATCH,
            "/api/v1/users/{user}",
            Admin,
            200,
            Some(json!({"role": "admin"})),
            Nothing,
        ),
        route(
            Method::DELETE,
            "/api/v1/users/{user}",
            Admin,
            204,
            None,
            DoomedUser,
        ),
        route(Method::GET, "/api/v1/tokens", SignedIn, 200, None, Nothing),
        route(
            Method::POST,
            "/api/v1/tokens",
            SignedIn,
            201,
            Some(json!({"name": "mine", "expires_in": "1h"})),
            Nothing,
        ),
        route(
            Method::DELETE,
            "/api/v1/tokens/{id}",
            OwnerOrAdmin,
            204,
            None,
            TargetToken,
        ),
        route(
            Method::POST,
            "/api/v1/agent-tokens",
            Admin,
            201,
            Some(json!({"name": "agent-1"})),
            Nothing,
        ),
        route(Method::GET, "/api/v1/agents", Admin, 200, None, Nothing),
        route(
            Method::DELETE,
            "/api/v1/agents/{agent}",
            Admin,
            204,
            None,
            DoomedAgent,
        ),
        route(Method::GET, "/api/v1/audit", Admin, 200, None, Nothing),
        route(Method::GET, "/api/v1/forges", Admin, 200, None, Nothing),
        route(
            Method::PUT,
            "/api/v1/forges/{forge}",
            Admin,
            200,
            Some(json!({"kind": "gitea", "api_url": "https://forge.example.com/api/v1"})),
            DoomedForge,
        ),
        route(
            Method::DELETE,
            "/api/v1/forges/{forge}",
            Admin,
            204,
            None,
            DoomedForge,
        ),
    ]
}

/// What `who` gets from a route that needs `need`, when allowed `ok`.
fn expected(who: Who, route: &Route) -> u16 {
    if matches!(who, Who::Revoked | Who::Expired | Who::Disabled) {
        return 401;
    }
    let signed_in = who != Who::Anonymous;
    match route.need {
        Need::Anyone => route.ok,
        Need::SignedIn if signed_in => route.ok,
        Need::Admin | Need::OwnerOrAdmin if who == Who::Admin => route.ok,
        Need::Admin if signed_in => 403,
        Need::OwnerOrAdmin if signed_in => 404,
        Need::SignedIn | Need::Admin | Need::OwnerOrAdmin => 401,
        Need::Job(need) => {
            let power = match who {
                Who::Viewer => Some(Role::Viewer),
                Who::Developer => Some(Role::Developer),
                Who::Maintainer | Who::Admin => Some(Role::Maintainer),
                _ => None,
            };
            match power {
                Some(power) if power >= need => route.ok,
                Some(_) => 403,
                // Reads are open to anyone (public jobs), so a private
                // job is not found; the rest need a user first.
                None if !signed_in && need > Role::Viewer => 401,
                // A job one may not see cannot be replaced by a `PUT`
                // that would create it: its name is taken.
                None if route.method == Method::PUT && route.path == "/api/v1/jobs/{job}" => 409,
                None => 404,
            }
        }
    }
}

struct Fixture {
    server: Server,
    tokens: Vec<(Who, Option<String>)>,
}

impl Fixture {
    fn token(&self, who: Who) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(w, _)| *w == who)
            .and_then(|(_, token)| token.as_deref())
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        call(&self.server, method, path, Some(ADMIN), body).await
    }

    async fn admin_ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.admin(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer
    }

    /// Everything a refused call must not change, as an admin reads it.
    async fn snapshot(&self) -> Value {
        let mut all = Vec::new();
        for path in [
            "/api/v1/jobs",
            "/api/v1/jobs/app",
            "/api/v1/jobs/app/secrets",
            "/api/v1/jobs/app/members",
            "/api/v1/jobs/doomed/members",
            "/api/v1/users",
            "/api/v1/tokens?user=target",
            "/api/v1/forges",
        ] {
            all.push(self.admin(Method::GET, path, None).await.1);
        }
        // Run numbers only: runs that allowed cells started still move.
        let runs = self
            .admin(Method::GET, "/api/v1/jobs/app/runs", None)
            .await
            .1;
        let numbers: Vec<Value> = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["number"].clone())
            .collect();
        all.push(Value::Array(numbers));
        Value::Array(all)
    }

    async fn prepare(&self, prepare: Prepare) -> Option<String> {
        match prepare {
            Prepare::Nothing => {}
            Prepare::DoomedJob => {
                self.admin_ok(
                    Method::PUT,
                    "/api/v1/jobs/doomed",
                    Some(json!({"kind": "freestyle", "pipeline": PIPELINE})),
                )
                .await;
                self.members_of("doomed").await;
            }
            Prepare::DoomedSecret => {
                self.admin_ok(
                    Method::PUT,
                    "/api/v1/jobs/app/secrets/DOOMED",
                    Some(json!({"value": "doomed-value"})),
                )
                .await;
            }
            Prepare::TargetMember => {
                self.admin_ok(
                    Method::PUT,
                    "/api/v1/jobs/app/members/target",
                    Some(json!({"role": "viewer"})),
                )
                .await;
            }
            Prepare::DoomedUser => {
                let (status, answer) = self
                    .admin(
                        Method::POST,
                        "/api/v1/users",
                        Some(json!({"name": "doomed-user"})),
                    )
                    .await;
                assert!(
                    status == StatusCode::CREATED || status == StatusCode::CONFLICT,
                    "{answer}"
                );
            }
            Prepare::DoomedAgent => {
                let (status, answer) = self
                    .admin(
                        Method::POST,
                        "/api/v1/agent-tokens",
                        Some(json!({"name": "doomed-agent"})),
                    )
                    .await;
                assert!(
                    status == StatusCode::CREATED || status == StatusCode::CONFLICT,
                    "{answer}"
                );
            }
            Prepare::DoomedForge => {
                self.admin_ok(
                    Method::PUT,
                    "/api/v1/forges/doomed-forge",
                    Some(
                        json!({"kind": "github", "api_url": "https://api.github.com",
                        "webhook_secret": "doomed-secret"}),
                    ),
                )
                .await;
            }
            Prepare::TargetToken => {
                let made = self
                    .admin_ok(
                        Method::POST,
                        "/api/v1/tokens",
                        Some(json!({"name": "target-token", "user": "target"})),
                    )
                    .await;
                return Some(made["id"].to_string());
            }
        }
        None
    }

    /// Undoes what an allowed call did that later cells would trip on.
    async fn clean_up(&self, route: &Route) {
        match (route.method.as_str(), route.path) {
            ("POST", "/api/v1/jobs") => {
                self.admin_ok(Method::DELETE, "/api/v1/jobs/new-job", None)
                    .await;
            }
            ("PUT", "/api/v1/jobs/{job}") => {
                self.admin_ok(
                    Method::PUT,
                    "/api/v1/jobs/app",
                    Some(json!({"kind": "freestyle", "pipeline": PIPELINE})),
                )
                .await;
            }
            ("POST", "/api/v1/users") => {
                self.admin_ok(Method::DELETE, "/api/v1/users/new-user", None)
                    .await;
            }
            ("PATCH", "/api/v1/users/{user}") => {
                self.admin_ok(
                    Method::PATCH,
                    "/api/v1/users/target",
                    Some(json!({"role": "user"})),
                )
                .await;
            }
            _ => {}
        }
    }

    /// Gives `job` the members of the matrix.
    async fn members_of(&self, job: &str) {
        for (user, role) in [
            ("vera", "viewer"),
            ("dev", "developer"),
            ("mae", "maintainer"),
        ] {
            self.admin_ok(
                Method::PUT,
                &format!("/api/v1/jobs/{job}/members/{user}"),
                Some(json!({"role": role})),
            )
            .await;
        }
    }
}

async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server.request(method, path, token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Users, tokens and the private job `app` with one finished run.
async fn fixture(server: Server) -> Fixture {
    let mut fixture = Fixture {
        server,
        tokens: vec![(Who::Anonymous, None), (Who::Admin, Some(ADMIN.into()))],
    };
    for name in ["vera", "dev", "mae", "otto", "rex", "exp", "dina", "target"] {
        fixture
            .admin_ok(Method::POST, "/api/v1/users", Some(json!({"name": name})))
            .await;
    }
    let token_of = async |user: &str, expires_in: Option<&str>| -> (String, i64) {
        let mut body = json!({"name": "matrix", "user": user});
        if let Some(lifetime) = expires_in {
            body["expires_in"] = json!(lifetime);
        }
        let made = fixture
            .admin_ok(Method::POST, "/api/v1/tokens", Some(body))
            .await;
        (
            made["token"].as_str().unwrap().to_string(),
            made["id"].as_i64().unwrap(),
        )
    };
    let mut tokens = Vec::new();
    for (who, user) in [
        (Who::Viewer, "vera"),
        (Who::Developer, "dev"),
        (Who::Maintainer, "mae"),
        (Who::Other, "otto"),
        (Who::Disabled, "dina"),
    ] {
        tokens.push((who, Some(token_of(user, None).await.0)));
    }
    let (revoked, revoked_id) = token_of("rex", None).await;
    let (expired, _) = token_of("exp", Some("1s")).await;
    tokens.push((Who::Revoked, Some(revoked)));
    tokens.push((Who::Expired, Some(expired)));
    fixture.tokens.extend(tokens);
    fixture
        .admin_ok(
            Method::DELETE,
            &format!("/api/v1/tokens/{revoked_id}"),
            None,
        )
        .await;
    fixture
        .admin_ok(
            Method::PATCH,
            "/api/v1/users/dina",
            Some(json!({"disabled": true})),
        )
        .await;

    fixture
        .admin_ok(
            Method::PUT,
            "/api/v1/jobs/app",
            Some(json!({"kind": "freestyle", "pipeline": PIPELINE})),
        )
        .await;
    fixture.members_of("app").await;
    fixture
        .admin_ok(
            Method::PUT,
            "/api/v1/jobs/app/secrets/TOKEN",
            Some(json!({"value": SECRET})),
        )
        .await;
    let run = fixture
        .admin_ok(Method::POST, "/api/v1/jobs/app/runs", None)
        .await;
    assert_eq!(run["number"], 1);
    let run = fixture.server.wait_for_run("app", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    // The expired token's second has passed by now; make sure.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fixture
}

/// The `/api/v1` operations the server documents at `/api/openapi.json`
/// (and so serves: `openapi_documents_every_served_route` holds the
/// document to the router).
async fn documented(server: &Server) -> BTreeSet<(String, String)> {
    let document = server.json("/api/openapi.json").await;
    let mut all = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            all.insert((method.to_uppercase(), path.clone()));
        }
    }
    all
}

async fn walk(server: Server) {
    let routes = routes();
    let decided: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let documented = documented(&server).await;
    let undecided: Vec<_> = documented.difference(&decided).collect();
    assert!(
        undecided.is_empty(),
        "routes with no access decision in this matrix: {undecided:?}"
    );
    let stale: Vec<_> = decided.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "decisions for routes not served: {stale:?}"
    );

    let fixture = fixture(server).await;
    let mut failures = Vec::new();
    for route in &routes {
        for who in EVERYONE {
            let id = fixture.prepare(route.prepare).await;
            let path = route
                .path
                .replace(
                    "{job}",
                    if route.prepare == Prepare::DoomedJob {
                        "doomed"
                    } else {
                        "app"
                    },
                )
                .replace("{number}", "1")
                .replace("{task}", "build")
                .replace("{path}", "out.txt")
                .replace(
                    "{name}",
                    if route.prepare == Prepare::DoomedSecret {
                        "DOOMED"
                    } else {
                        "TOKEN"
                    },
                )
                .replace(
                    "{user}",
                    if route.prepare == Prepare::DoomedUser {
                        "doomed-user"
                    } else {
                        "target"
                    },
                )
                .replace("{id}", id.as_deref().unwrap_or("0"))
                .replace("{agent}", "doomed-agent")
                .replace("{forge}", "doomed-forge");
            // The event stream lasts until the client leaves, unless told.
            let path = if route.path == "/api/v1/events" {
                format!("{path}?timeout=0")
            } else {
                path
            };
            let want = expected(who, route);
            let before = fixture.snapshot().await;
            let (status, answer) = call(
                &fixture.server,
                route.method.clone(),
                &path,
                fixture.token(who),
                route.body.clone(),
            )
            .await;
            let cell = format!("{who:?} {} {path}", route.method);
            if status.as_u16() != want {
                failures.push(format!("{cell}: expected {want}, got {status}: {answer}"));
                continue;
            }
            if status.is_client_error() && want != route.ok {
                let problem = answer["status"].as_u64() == Some(u64::from(want))
                    && answer["detail"].as_str().is_some_and(|d| !d.is_empty());
                if !problem {
                    failures.push(format!("{cell}: not a problem+json: {answer}"));
                }
                let after = fixture.snapshot().await;
                if before != after {
                    failures.push(format!(
                        "{cell}: refused, yet something changed:\nbefore {before}\nafter  {after}"
                    ));
                }
            } else {
                fixture.clean_up(route).await;
            }
        }
    }
    // A forge's webhook is authenticated by its signature alone: no
    // token, an admin's included, lets an unsigned delivery in.
    fixture.prepare(Prepare::DoomedForge).await;
    for who in EVERYONE {
        let request = fixture
            .server
            .request(Method::POST, "/hooks/doomed-forge", fixture.token(who))
            .header("x-github-event", "ping")
            .body("{}");
        let status = request.send().await.unwrap().status();
        if status != StatusCode::UNAUTHORIZED {
            failures.push(format!(
                "{who:?} POST /hooks/doomed-forge unsigned: got {status}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells of the access matrix are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_matrix_on_sqlite() {
    walk(Server::start(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_matrix_on_postgres() {
    let database = PgDatabase::new();
    walk(Server::start(Some(&database.url))).await;
}

/// Makes user `name` and a token for it; returns the token.
async fn user_with_token(server: &Server, name: &str) -> String {
    let (status, answer) = call(
        server,
        Method::POST,
        "/api/v1/users",
        Some(ADMIN),
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, made) = call(
        server,
        Method::POST,
        "/api/v1/tokens",
        Some(ADMIN),
        Some(json!({"name": "t", "user": name})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    made["token"].as_str().unwrap().to_string()
}

/// A revocation made through one server is refused by another sharing the
/// database on the very next request: no server caches tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_at_once_by_another_server() {
    let database = PgDatabase::new();
    let first = Server::start(Some(&database.url));
    let second = Server::start(Some(&database.url));
    let token = user_with_token(&first, "ada").await;
    let (status, mine) = call(&second, Method::GET, "/api/v1/tokens", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let id = mine[0]["id"].as_i64().unwrap();
    assert!(mine[0]["last_used_at"].is_string(), "use is noted: {mine}");

    let (status, _) = call(
        &first,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "its owner revokes it");
    let revoked_at = std::time::Instant::now();
    let (status, answer) = call(&second, Method::GET, "/api/v1/jobs", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("revoked"),
        "{answer}"
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(1));

    // Disabling the user stops its other tokens on every server too.
    let other = call(
        &first,
        Method::POST,
        "/api/v1/tokens",
        Some(ADMIN),
        Some(json!({"name": "second", "user": "ada"})),
    )
    .await
    .1["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = call(&second, Method::GET, "/api/v1/jobs", Some(&other), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &first,
        Method::PATCH,
        "/api/v1/users/ada",
        Some(ADMIN),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = call(&second, Method::GET, "/api/v1/jobs", Some(&other), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("disabled"));
}

/// `echo $SECRET | base64` walks past the log's masking; only a maintainer
/// may put it in a job's pipeline, and a job of one's own has no secrets
/// of another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_cannot_read_a_secret_back_through_the_pipeline() {
    let server = Server::start(None);
    let dev = user_with_token(&server, "dev").await;
    server.freestyle("app", PIPELINE).await;
    for (method, path, body) in [
        (
            Method::PUT,
            "/api/v1/jobs/app/members/dev",
            json!({"role": "developer"}),
        ),
        (
            Method::PUT,
            "/api/v1/jobs/app/secrets/TOKEN",
            json!({"value": SECRET}),
        ),
    ] {
        let (status, answer) = call(&server, method, path, Some(ADMIN), Some(body)).await;
        assert!(status.is_success(), "{answer}");
    }
    let before = server.json("/api/v1/jobs/app").await;

    let (status, answer) = call(
        &server,
        Method::PUT,
        "/api/v1/jobs/app",
        Some(&dev),
        Some(json!({"kind": "freestyle", "pipeline": EXFILTRATE})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("maintainer"));
    assert_eq!(server.json("/api/v1/jobs/app").await, before, "unchanged");

    // What the developer may do runs the maintainer's pipeline.
    let (status, run) = call(
        &server,
        Method::POST,
        "/api/v1/jobs/app/runs",
        Some(&dev),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let number = run["number"].as_i64().unwrap();
    assert_eq!(
        server.wait_for_run("app", number).await["status"],
        "success"
    );
    let console = server
        .get(&format!(
            "/api/v1/jobs/app/runs/{number}/tasks/build/results/console"
        ))
        .await
        .text()
        .await
        .unwrap();
    let encoded = "aHVudGVyMi1idXQtbG9uZ2VyCg=="; // base64 of SECRET and a newline
    assert!(
        !console.contains(encoded) && !console.contains(SECRET),
        "{console}"
    );

    // Its own job, with the same pipeline, is given no secret of `app`.
    let (status, answer) = call(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(&dev),
        Some(json!({"name": "mine", "kind": "freestyle", "pipeline": EXFILTRATE})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (_, run) = call(
        &server,
        Method::POST,
        "/api/v1/jobs/mine/runs",
        Some(&dev),
        None,
    )
    .await;
    assert_eq!(run["status"], "error", "{run}");
    assert!(run["error"].as_str().unwrap().contains("TOKEN"), "{run}");
}

/// A public job is read by anyone, signed in or not — but not its secrets'
/// names, and nothing is changed without a role; lists show only what the
/// caller may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_jobs_are_read_by_anyone_and_lists_show_only_readable_jobs() {
    let server = Server::start(None);
    let otto = user_with_token(&server, "otto").await;
    server.freestyle("private-app", PIPELINE).await;
    let (status, answer) = call(
        &server,
        Method::PUT,
        "/api/v1/jobs/private-app/secrets/TOKEN",
        Some(ADMIN),
        Some(json!({"value": SECRET})),
    )
    .await;
    assert!(status.is_success(), "{answer}");
    let (status, answer) = call(
        &server,
        Method::POST,
        "/api/v1/jobs",
        Some(ADMIN),
        Some(json!({"name": "open-app", "kind": "freestyle", "pipeline": "version: 1\ntasks:\n  build:\n    steps:\n      - run: echo open\n", "visibility": "public"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["visibility"], "public");
    let (_, run) = call(
        &server,
        Method::POST,
        "/api/v1/jobs/open-app/runs",
        Some(ADMIN),
        None,
    )
    .await;
    let number = run["number"].as_i64().unwrap();
    server.wait_for_run("open-app", number).await;

    for token in [None, Some(otto.as_str())] {
        let (status, jobs) = call(&server, Method::GET, "/api/v1/jobs", token, None).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = jobs
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["open-app"], "{token:?}");
        let console = server
            .request(
                Method::GET,
                &format!("/api/v1/jobs/open-app/runs/{number}/tasks/build/results/console"),
                token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(console.status(), StatusCode::OK);
        assert!(console.text().await.unwrap().contains("open"));
        let (status, _) = call(
            &server,
            Method::GET,
            "/api/v1/jobs/open-app/secrets",
            token,
            None,
        )
        .await;
        assert_eq!(
            status,
            if token.is_some() {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            }
        );
        let (status, _) = call(
            &server,
            Method::POST,
            "/api/v1/jobs/open-app/runs",
            token,
            None,
        )
        .await;
        assert_ne!(status, StatusCode::CREATED);
        let (status, _) = call(
            &server,
            Method::GET,
            "/api/v1/jobs/private-app",
            token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (_, runs) = call(
        &server,
        Method::GET,
        "/api/v1/jobs/open-app/runs",
        None,
        None,
    )
    .await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "no run was added"
    );

    // The admin sees both; the audit log says who made them.
    let (_, jobs) = call(&server, Method::GET, "/api/v1/jobs", Some(ADMIN), None).await;
    assert_eq!(jobs.as_array().unwrap().len(), 2);
    let audit = server.json("/api/v1/audit?action=job.create").await;
    let made: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["object"].as_str().unwrap()))
        .collect();
    assert_eq!(
        made,
        [("admin", "job/open-app"), ("admin", "job/private-app")]
    );
    let entry = &audit["entries"][0];
    assert_eq!(entry["source"], "127.0.0.1", "{entry}");
    let secrets = server
        .json("/api/v1/audit?object=job/private-app/secret")
        .await;
    assert_eq!(secrets["entries"][0]["action"], "secret.put");
    assert!(
        !secrets.to_string().contains(SECRET),
        "values never reach the log"
    );
}

/// The server's own embedded agent cannot be removed from under it (it
/// would stop the server); an unknown agent is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_agent_cannot_be_removed() {
    let server = Server::start(None);
    let (status, answer) = call(
        &server,
        Method::DELETE,
        "/api/v1/agents/server",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("embedded"));
    let (status, _) = call(
        &server,
        Method::DELETE,
        "/api/v1/agents/nobody",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // It still runs tasks.
    let number = server
        .freestyle("still", "version: 1\ntasks:\n  t:\n    steps: [echo ok]\n")
        .await;
    assert_eq!(
        server.wait_for_run("still", number).await["status"],
        "success"
    );
}
