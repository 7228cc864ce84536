//! `kiln server` as a real process on a random port, driven over HTTP, on
//! SQLite and on PostgreSQL, with real git repositories and the in-process
//! worker running tasks on the process executor.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::GitRepo;

pub const ADMIN: &str = "kiln_admin_test_token_0123456789";
/// The password of the user `admin` (`KILN_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "admin-test-password-42";
const POSTGRES: &str = "postgres://kiln:kiln@127.0.0.1:5432/kiln";

pub struct Server {
    child: Child,
    pub url: String,
    /// `http://127.0.0.1:PORT` of the agents' gRPC endpoint.
    pub grpc: String,
    pub data_dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Server {
    /// A server with its in-process worker running tasks.
    pub fn start(database: Option<&str>) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), database)
    }

    pub fn start_in(data_dir: tempfile::TempDir, database: Option<&str>) -> Server {
        Server::launch(data_dir, database, true, "127.0.0.1:0", "3s")
    }

    /// A server with no worker of its own: only remote agents run tasks.
    pub fn start_for_agents(data_dir: tempfile::TempDir, grpc_listen: &str) -> Server {
        Server::start_for_agents_with_lease(data_dir, grpc_listen, "3s")
    }

    /// [`Server::start_for_agents`] with the agents' lease (`--agent-lease`).
    pub fn start_for_agents_with_lease(
        data_dir: tempfile::TempDir,
        grpc_listen: &str,
        agent_lease: &str,
    ) -> Server {
        Server::launch(data_dir, None, false, grpc_listen, agent_lease)
    }

    fn launch(
        data_dir: tempfile::TempDir,
        database: Option<&str>,
        worker: bool,
        grpc_listen: &str,
        agent_lease: &str,
    ) -> Server {
        Server::launch_with(
            data_dir,
            database,
            worker,
            grpc_listen,
            agent_lease,
            &[],
            &[],
        )
    }

    /// A server for remote agents only, with more arguments and
    /// environment variables.
    pub fn start_for_agents_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        Server::launch_with(data_dir, None, false, "127.0.0.1:0", "3s", args, env)
    }

    fn launch_with(
        data_dir: tempfile::TempDir,
        database: Option<&str>,
        worker: bool,
        grpc_listen: &str,
        agent_lease: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                grpc_listen,
                "--data-dir",
            ])
            .arg(data_dir.path());
        if worker {
            command.args(["--worker", "--worker-executor", "process"]);
        } else {
            // Agents' tests kill agents: a short lease finds that out quickly.
            command.args(["--agent-lease", agent_lease]);
        }
        command.args(args).envs(env.iter().copied());
        command
            .env("KILN_ADMIN_TOKEN", ADMIN)
            .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("KILN_AGENT_TOKEN", "kiln_agent_shared_test_token")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = database {
            command.args(["--database-url", url]);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    tx.send(("http", url.trim().to_string())).ok();
                }
                if let Some(address) = line.split("agents connect to ").nth(1) {
                    let address = address.trim().trim_end_matches(" (gRPC)");
                    tx.send(("grpc", address.to_string())).ok();
                }
            }
        });
        let (mut url, mut grpc) = (String::new(), String::new());
        while url.is_empty() || grpc.is_empty() {
            match rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the server did not start listening")
            {
                ("http", value) => url = value,
                (_, value) => grpc = value,
            }
        }
        // reqwest is built without a default TLS provider; plain HTTP still needs one chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Server {
            child,
            url,
            grpc,
            data_dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, Some(ADMIN))
            .send()
            .await
            .unwrap()
    }

    /// `GET path` with `Range: range`.
    pub async fn get_range(&self, path: &str, range: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, Some(ADMIN))
            .header("Range", range)
            .send()
            .await
            .unwrap()
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let response = self
            .request(method, path, Some(ADMIN))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Creates (or replaces) the freestyle job `job` and triggers it;
    /// returns the run's number.
    pub async fn freestyle(&self, job: &str, pipeline: &str) -> i64 {
        let (status, body) = self
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/jobs/{job}"),
                json!({"kind": "freestyle", "pipeline": pipeline}),
            )
            .await;
        assert!(status.is_success(), "{body}");
        let (status, run) = self
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{job}/runs"),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        run["number"].as_i64().unwrap()
    }

    pub async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// Polls the run until it ends; returns it.
    pub async fn wait_for_run(&self, job: &str, number: i64) -> Value {
        let started = Instant::now();
        loop {
            let run = self
                .json(&format!("/api/v1/jobs/{job}/runs/{number}"))
                .await;
            let status = run["status"].as_str().unwrap_or("").to_string();
            if !["pending", "queued", "running"].contains(&status.as_str()) {
                return run;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "run {job}/{number} never ended: {run:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no chance to clean up; returns the data directory.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as a service manager would send, then wait for the exit.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the server ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh PostgreSQL database for one test, dropped with it.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub fn new() -> PgDatabase {
        let name = format!("kiln_e2e_{}_{}", std::process::id(), rand_suffix());
        psql(&format!("CREATE DATABASE {name}"));
        PgDatabase {
            url: format!("postgres://kiln:kiln@127.0.0.1:5432/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn psql(sql: &str) {
    let output = Command::new("psql")
        .args([POSTGRES, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "PostgreSQL must run for these tests (scripts/setup-test-env.sh starts it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos:x}")
}

const PIPELINE_V1: &str = r#"
version: 1
tasks:
  build:
    steps:
      - name: compile
        run: |
          echo "building $KILN_JOB run $KILN_RUN at $KILN_COMMIT_SHA on $KILN_BRANCH ($KILN_EVENT)"
          cat version.txt
          mkdir -p dist && echo "binary $(cat version.txt)" > dist/app.txt
          seq 1 200 > dist/numbers.txt
    artifacts: { paths: [dist/] }
  test:
    needs: [build]
    matrix: { shard: [1, 2] }
    steps:
      - run: |
          echo "shard ${{ matrix.shard }}"
          cat > junit.xml <<XML
          <testsuite name="unit-${{ matrix.shard }}" tests="2" failures="1">
            <testcase classname="m" name="passes" time="0.5"/>
            <testcase classname="m" name="fails" time="0.25"><failure message="expected 1, got 2">assertion failed</failure></testcase>
          </testsuite>
          XML
    reports: { junit: [junit.xml] }
  deploy:
    needs: [test]
    when: { event: [push] }
    steps:
      - run: echo never via the API
"#;

pub async fn create_git_job(server: &Server, name: &str, repo: &GitRepo) {
    let (status, job) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs",
            json!({"name": name, "kind": "git", "repository": repo.url()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["pipeline_path"], ".kiln.yml");
    assert_eq!(job["default_branch"], "main");
}

async fn git_job_flow(server: &Server) {
    let repo = GitRepo::new(&[(".kiln.yml", PIPELINE_V1), ("version.txt", "v1\n")]);
    let first_sha = repo.head();
    let second_sha = repo.commit(&[("version.txt", "v2\n")], "v2");
    create_git_job(server, "app", &repo).await;

    // By branch: the head of main.
    let (status, run) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs/app/runs",
            json!({"branch": "main"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["number"], 1);
    assert_eq!(run["sha"], second_sha.as_str());
    assert_eq!(run["event"], "api");
    let names: Vec<&str> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build", "test[shard=1]", "test[shard=2]", "deploy"]);
    assert_eq!(run["tasks"][0]["status"], "queued");
    assert_eq!(run["tasks"][1]["status"], "pending");
    assert_eq!(run["tasks"][3]["status"], "skipped");

    let run = server.wait_for_run("app", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    let build = &run["tasks"][0];
    assert_eq!(build["status"], "success");
    assert_eq!(build["steps"][0]["name"], "compile");
    assert_eq!(build["steps"][0]["exit_code"], 0);
    assert!(build["started_at"].is_string() && build["finished_at"].is_string());

    // The log, whole and by range.
    let base = "/api/v1/jobs/app/runs/1/tasks/build";
    let response = server.get(&format!("{base}/results/console")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let log = response.text().await.unwrap();
    assert!(
        log.contains(&format!("building app run 1 at {second_sha} on main (api)")),
        "{log}"
    );
    assert!(log.contains("v2"), "{log}");
    let response = server
        .request(
            reqwest::Method::GET,
            &format!("{base}/results/console"),
            Some(ADMIN),
        )
        .header("Range", "bytes=4-9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 4-9/{}", log.len()).as_str()
    );
    assert_eq!(response.text().await.unwrap(), &log[4..10]);

    // Results, the artifact with its content type, the parsed JUnit report.
    let results = server.json(&format!("{base}/results")).await;
    let paths: Vec<&str> = results["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["dist/app.txt", "dist/numbers.txt"]);
    let response = server
        .get(&format!("{base}/results/artifacts/dist/app.txt"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(response.text().await.unwrap(), "binary v2\n");
    let missing = server
        .get(&format!(
            "{base}/results/artifacts/dist/../../../etc/passwd"
        ))
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let junit = server
        .json("/api/v1/jobs/app/runs/1/tasks/test%5Bshard%3D2%5D/results/junit")
        .await;
    assert_eq!(junit["tests"], 2, "{junit:#}");
    assert_eq!(junit["failures"], 1, "{junit:#}");
    let cases = junit["suites"][0]["cases"].as_array().unwrap();
    assert!(
        cases
            .iter()
            .any(|c| c["name"] == "fails" && c["status"] == "failed"),
        "{junit:#}"
    );

    // By sha: the older commit, and the pipeline as it was then.
    let (status, run) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs/app/runs",
            json!({"sha": &first_sha[..12]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["number"], 2);
    assert_eq!(run["sha"], first_sha.as_str());
    let run = server.wait_for_run("app", 2).await;
    assert_eq!(run["status"], "success", "{run:#}");
    let log = server
        .get("/api/v1/jobs/app/runs/2/tasks/build/results/console")
        .await
        .text()
        .await
        .unwrap();
    assert!(log.contains("v1") && !log.contains("v2"), "{log}");

    // A rerun builds the same commit again, under the same branch.
    let (status, rerun) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs/app/runs/1/rerun",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rerun}");
    assert_eq!(rerun["number"], 3);
    assert_eq!(rerun["sha"], second_sha.as_str());
    assert_eq!(rerun["branch"], "main");
    assert_eq!(server.wait_for_run("app", 3).await["status"], "success");

    // Listing, filtering and paging.
    let list = server.json("/api/v1/jobs/app/runs?limit=2").await;
    let numbers: Vec<i64> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2]);
    let cursor = list["next_cursor"].as_str().unwrap().to_string();
    let next = server
        .json(&format!("/api/v1/jobs/app/runs?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(next["runs"][0]["number"], 1);
    assert!(next["next_cursor"].is_null(), "{next}");
    let by_branch = server.json("/api/v1/jobs/app/runs?branch=main").await;
    assert_eq!(
        by_branch["runs"].as_array().unwrap().len(),
        2,
        "run 2 was by sha, with no branch"
    );
    let failed = server.json("/api/v1/jobs/app/runs?status=failure").await;
    assert_eq!(failed["runs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn git_job_runs_logs_results_on_sqlite() {
    let server = Server::start(None);
    git_job_flow(&server).await;
}

#[tokio::test]
async fn git_job_runs_logs_results_on_postgres() {
    let database = PgDatabase::new();
    let server = Server::start(Some(&database.url));
    git_job_flow(&server).await;
}

/// The start-up lines say what the server uses: PostgreSQL (without the
/// URL's password) rather than a data directory's SQLite, and where the
/// admin token came from.
#[test]
fn startup_lines_name_the_database_and_the_admin_tokens_origin() {
    let database = PgDatabase::new();
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .args(["--database-url", &database.url, "--data-dir"])
        .arg(data_dir.path())
        .env("KILN_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    while !printed.contains("web sign-in") {
        let line = lines
            .next()
            .expect("the server printed its start-up lines")
            .unwrap();
        printed.push_str(&(line + "\n"));
    }
    let _ = child.kill();
    let _ = child.wait();
    let location = database.url.split('@').nth(1).unwrap();
    assert!(
        printed.contains(&format!("database: PostgreSQL at {location}\n")),
        "{printed}"
    );
    assert!(
        !printed.contains("kiln:kiln"),
        "the password is printed: {printed}"
    );
    assert!(!printed.contains("SQLite"), "{printed}");
    assert!(
        printed.contains("admin token: the one in KILN_ADMIN_TOKEN"),
        "{printed}"
    );
    // No KILN_ADMIN_PASSWORD: one is made and shown, this once.
    let password = printed
        .split("web sign-in: user `admin`, password (shown once, keep it): ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no generated password: {printed}"));
    assert_eq!(password.len(), 20, "{password}");
}

#[tokio::test]
async fn invalid_pipeline_makes_an_error_run_with_the_located_message() {
    let server = Server::start(None);
    let repo = GitRepo::new(&[(".kiln.yml", "version: 1\ntasks:\n  a:\n    stepz: []\n")]);
    create_git_job(&server, "broken", &repo).await;
    let (status, run) = server
        .send(reqwest::Method::POST, "/api/v1/jobs/broken/runs", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(run["status"], "error");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains(".kiln.yml:4:5") && error.contains("did you mean `steps`"),
        "{error}"
    );
    assert_eq!(
        server.json("/api/v1/jobs/broken/runs/1").await["status"],
        "error"
    );

    // A freestyle job with the same mistake is refused when created.
    let (status, problem) = server
        .send(
            reqwest::Method::PUT,
            "/api/v1/jobs/free",
            json!({"kind": "freestyle", "pipeline": "version: 1\ntasks:\n  a:\n    stepz: []\n"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        problem["errors"][0].as_str().unwrap().contains("4:5"),
        "{problem}"
    );
}

#[tokio::test]
async fn cancel_stops_a_running_task_and_ends_the_run() {
    let server = Server::start(None);
    let pipeline = "version: 1\ntasks:\n  slow:\n    steps:\n      - run: echo started; sleep 60\n  after:\n    needs: [slow]\n    steps:\n      - run: 'true'\n";
    let (status, _) = server
        .send(
            reqwest::Method::PUT,
            "/api/v1/jobs/slow",
            json!({"kind": "freestyle", "pipeline": pipeline}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    server
        .send(reqwest::Method::POST, "/api/v1/jobs/slow/runs", json!({}))
        .await;
    let started = Instant::now();
    loop {
        let run = server.json("/api/v1/jobs/slow/runs/1").await;
        if run["tasks"][0]["status"] == "running" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{run:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs/slow/runs/1/cancel",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let cancelled_at = Instant::now();
    let run = server.wait_for_run("slow", 1).await;
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert_eq!(run["tasks"][0]["status"], "cancelled");
    assert_eq!(run["tasks"][1]["status"], "cancelled");
    let (status, problem) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs/slow/runs/1/cancel",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
}

#[tokio::test]
async fn status_codes_follow_the_contract() {
    let server = Server::start(None);
    let get = |token: Option<&'static str>| {
        server
            .request(reqwest::Method::GET, "/api/v1/jobs", token)
            .send()
    };
    // Anyone may list jobs (public ones); changes need a token.
    let listed = get(None).await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(listed.json::<Value>().await.unwrap(), json!([]));
    let response = server
        .request(reqwest::Method::POST, "/api/v1/jobs", None)
        .json(&json!({"name": "x", "kind": "git", "repository": "/r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    assert!(problem["detail"].as_str().unwrap().contains("Bearer"));
    assert_eq!(
        get(Some("kiln_wrong")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Agent tokens cannot use the user API.
    assert_eq!(
        get(Some("kiln_agent_shared_test_token"))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );

    // A user who is not an admin may use the API but not make agent tokens.
    let (status, _) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/users",
            json!({"name": "dev"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, created) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/tokens",
            json!({"name": "laptop", "user": "dev"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let user = created["token"].as_str().unwrap().to_string();
    let response = server
        .request(reqwest::Method::GET, "/api/v1/jobs", Some(&user))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = server
        .request(reqwest::Method::POST, "/api/v1/agent-tokens", Some(&user))
        .json(&json!({"name": "a1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (status, agent) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/agent-tokens",
            json!({"name": "a1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let response = server
        .request(
            reqwest::Method::GET,
            "/api/v1/jobs",
            Some(agent["token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    assert_eq!(
        server.get("/api/v1/jobs/nope").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/api/v1/jobs/nope/runs/1").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/api/v1/no-such-route").await.status(),
        StatusCode::NOT_FOUND
    );
    let body = json!({"name": "dup", "kind": "freestyle", "pipeline": "version: 1\ntasks:\n  a:\n    steps: [{run: 'true'}]\n"});
    assert_eq!(
        server
            .send(reqwest::Method::POST, "/api/v1/jobs", body.clone())
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        server
            .send(reqwest::Method::POST, "/api/v1/jobs", body)
            .await
            .0,
        StatusCode::CONFLICT
    );
    let gone = json!({"kind": "freestyle", "pipeline": "version: 1\ntasks:\n  a:\n    steps: [{run: 'true'}]\n"});
    let (status, _) = server
        .send(reqwest::Method::PUT, "/api/v1/jobs/gone", gone)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = server
        .send(reqwest::Method::DELETE, "/api/v1/jobs/gone", json!(null))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/api/v1/jobs/gone").await.status(),
        StatusCode::NOT_FOUND
    );
    let (status, problem) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs",
            json!({"name": "x", "kind": "svn"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["detail"].as_str().unwrap().contains("svn"));
    let (status, _) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs/dup/runs",
            json!({"branch": "a", "sha": "b"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = server
        .send(
            reqwest::Method::GET,
            "/api/v1/jobs/dup/runs?status=bogus",
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs",
            json!({"name": "x", "kind": "git", "surprise": 1}),
        )
        .await;
    assert!(
        status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
        "{status}"
    );
    // Bodies over the limit are refused before they are read whole.
    let huge = "x".repeat(4 << 20);
    let (status, _) = server
        .send(
            reqwest::Method::PUT,
            "/api/v1/jobs/huge",
            json!({"kind": "freestyle", "pipeline": huge}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn secrets_are_write_only_encrypted_at_rest_masked_and_required() {
    let server = Server::start(None);
    let pipeline = "version: 1\ntasks:\n  use:\n    secrets: [DEPLOY_TOKEN]\n    steps:\n      - run: echo \"token=$DEPLOY_TOKEN\"\n";
    server
        .send(
            reqwest::Method::PUT,
            "/api/v1/jobs/sec",
            json!({"kind": "freestyle", "pipeline": pipeline}),
        )
        .await;

    // Without the secret the run fails, naming it.
    let (_, run) = server
        .send(reqwest::Method::POST, "/api/v1/jobs/sec/runs", json!({}))
        .await;
    assert_eq!(run["status"], "error");
    assert!(
        run["error"].as_str().unwrap().contains("`DEPLOY_TOKEN`"),
        "{run}"
    );

    let plaintext = "pl41ntext-v4lue-that-must-not-leak";
    let (status, _) = server
        .send(
            reqwest::Method::PUT,
            "/api/v1/jobs/sec/secrets/DEPLOY_TOKEN",
            json!({"value": plaintext}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let listed = server.json("/api/v1/jobs/sec/secrets").await;
    assert_eq!(listed[0]["name"], "DEPLOY_TOKEN");
    assert!(!listed.to_string().contains(plaintext));

    let (_, run) = server
        .send(reqwest::Method::POST, "/api/v1/jobs/sec/runs", json!({}))
        .await;
    let run = server
        .wait_for_run("sec", run["number"].as_i64().unwrap())
        .await;
    assert_eq!(run["status"], "success", "{run:#}");
    let log = server
        .get(&format!(
            "/api/v1/jobs/sec/runs/{}/tasks/use/results/console",
            run["number"]
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        log.contains("token=***") && !log.contains(plaintext),
        "{log}"
    );

    // No endpoint returns it, and the database holds only ciphertext.
    for path in [
        "/api/v1/jobs/sec",
        "/api/v1/jobs/sec/runs",
        "/api/v1/jobs/sec/secrets",
        "/api/v1/jobs/sec/runs/2",
    ] {
        let body = server.get(path).await.text().await.unwrap();
        assert!(!body.contains(plaintext), "{path} leaked the secret");
    }
    let data_dir = server.stop();
    for name in ["kiln.db", "kiln.db-wal"] {
        if let Ok(bytes) = std::fs::read(data_dir.path().join(name)) {
            assert!(
                !bytes
                    .windows(plaintext.len())
                    .any(|w| w == plaintext.as_bytes()),
                "{name} holds the plaintext"
            );
        }
    }
    assert!(data_dir.path().join("kiln.db").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data_dir.path().join("secret.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the key file is readable by others");
}

#[tokio::test]
async fn openapi_documents_every_served_route_and_probes_answer() {
    let server = Server::start(None);
    let response = server
        .request(reqwest::Method::GET, "/api/openapi.json", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let documented: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut served: Vec<String> =
        kiln_server::api::served_paths::<kiln_store_sqlite::SqliteStore>()
            .into_iter()
            .map(|p| p.replace("{*path}", "{path}"))
            .collect();
    served.sort();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    assert_eq!(
        documented_sorted, served,
        "served routes and the OpenAPI document differ"
    );

    // Every documented operation is routed: no 404 "no such route", no 405.
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            let concrete = path
                .replace("{job}", "nojob")
                .replace("{number}", "1")
                .replace("{task}", "t")
                .replace("{path}", "a")
                .replace("{name}", "N");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = server
                .request(method.clone(), &concrete, Some(ADMIN))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_ne!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            if response.status() == StatusCode::NOT_FOUND {
                let problem: Value = response.json().await.unwrap();
                assert!(
                    !problem["detail"]
                        .as_str()
                        .unwrap()
                        .contains("no such route"),
                    "{method} {path} is not routed"
                );
            }
        }
    }

    let health = server
        .request(reqwest::Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = server
        .request(reqwest::Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "kiln_runs{status=\"success\"}",
        "kiln_queue_depth",
        "kiln_task_queue_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
}

#[tokio::test]
async fn a_restart_loses_nothing() {
    let server = Server::start(None);
    let pipeline = "version: 1\ntasks:\n  a:\n    steps:\n      - run: echo persisted-output\n";
    server.freestyle("keep", pipeline).await;
    assert_eq!(server.wait_for_run("keep", 1).await["status"], "success");
    let data_dir = server.stop();

    let server = Server::start_in(data_dir, None);
    let run = server.json("/api/v1/jobs/keep/runs/1").await;
    assert_eq!(run["status"], "success");
    let log = server
        .get("/api/v1/jobs/keep/runs/1/tasks/a/results/console")
        .await
        .text()
        .await
        .unwrap();
    assert!(log.contains("persisted-output"), "{log}");
    let (_, run) = server
        .send(reqwest::Method::POST, "/api/v1/jobs/keep/runs", json!({}))
        .await;
    assert_eq!(run["number"], 2, "numbering continues after a restart");
}

fn kiln_client(server: &Server, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_SERVER", &server.url)
        .env("KILN_TOKEN", ADMIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        std::io::Write::write_all(&mut input, text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn all_output(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_cli_client_applies_triggers_follows_and_reads_logs() {
    let server = Server::start(None);
    let repo = GitRepo::new(&[(
        ".kiln.yml",
        "version: 1\ntasks:\n  hello:\n    secrets: [GREETING_KEY]\n    steps:\n      - run: echo \"hello from the cli, key $GREETING_KEY\"\n",
    )]);
    let jobs = format!(
        "jobs:\n  - name: cli-app\n    kind: git\n    repository: {}\n",
        repo.url()
    );
    let file = server.data_dir.path().join("jobs.yml");
    std::fs::write(&file, jobs).unwrap();
    let file = file.to_str().unwrap();

    let output = kiln_client(&server, &["apply", "-f", file], None);
    assert!(output.status.success(), "{}", all_output(&output));
    assert!(
        all_output(&output).contains("created"),
        "{}",
        all_output(&output)
    );
    let output = kiln_client(&server, &["apply", "-f", file], None);
    assert!(
        all_output(&output).contains("unchanged"),
        "apply is not idempotent: {}",
        all_output(&output)
    );

    let output = kiln_client(
        &server,
        &["secret", "set", "cli-app", "GREETING_KEY"],
        Some("cli-s3cret\n"),
    );
    assert!(output.status.success(), "{}", all_output(&output));

    let output = kiln_client(&server, &["trigger", "cli-app", "--follow"], None);
    let text = all_output(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("success"), "{text}");

    let output = kiln_client(&server, &["runs", "cli-app"], None);
    assert!(
        all_output(&output).contains("success"),
        "{}",
        all_output(&output)
    );
    let output = kiln_client(&server, &["logs", "cli-app", "1", "hello"], None);
    let text = all_output(&output);
    assert!(text.contains("hello from the cli, key ***"), "{text}");
    assert!(!text.contains("cli-s3cret"), "{text}");

    let output = kiln_client(&server, &["runs", "cli-app", "--output", "json"], None);
    let runs: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(runs.to_string().contains("\"number\":1"), "{runs}");

    let mut wrong = Command::new(env!("CARGO_BIN_EXE_kiln"));
    let output = wrong
        .args(["job", "list"])
        .env("KILN_SERVER", &server.url)
        .env("KILN_TOKEN", "kiln_wrong")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        all_output(&output).contains("KILN_TOKEN"),
        "{}",
        all_output(&output)
    );
}

#[tokio::test]
async fn console_follow_streams_live_and_ends_with_the_task() {
    let server = Server::start(None);
    let pipeline = "version: 1\ntasks:\n  ticker:\n    steps:\n      - run: for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.4; done\n";
    server.freestyle("tick", pipeline).await;
    let started = Instant::now();
    while server.json("/api/v1/jobs/tick/runs/1").await["tasks"][0]["status"] != "running" {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut response = server
        .get("/api/v1/jobs/tick/runs/1/tasks/ticker/results/console?follow=true")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let first = response.chunk().await.unwrap().expect("a first chunk");
    let status_at_first_chunk = server.json("/api/v1/jobs/tick/runs/1").await["status"].clone();
    assert_eq!(
        status_at_first_chunk, "running",
        "the first output should arrive while the task runs"
    );
    let mut log = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        log.extend_from_slice(&chunk);
    }
    // The stream ended by itself, once the task had ended.
    let run = server.json("/api/v1/jobs/tick/runs/1").await;
    assert_eq!(run["status"], "success", "{run:#}");
    let log = String::from_utf8(log).unwrap();
    let positions: Vec<usize> = (1..=6)
        .map(|i| log.find(&format!("line-{i}\n")).expect(&log))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{log}");
}

/// Files under `dir` whose names end with `suffix`, recursively.
pub(crate) fn files_ending_with(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                files_ending_with(&path, suffix)
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
            {
                vec![path]
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// Reads a followed console to its end.
async fn follow_to_end(server: &Server, path: &str) -> Vec<u8> {
    let mut response = server.get(&format!("{path}?follow=true")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut log = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        log.extend_from_slice(&chunk);
    }
    log
}

/// A big console moves to the blob store when its task ends and a small one
/// stays in the database; read whole, by range, followed live while it
/// moves, or followed after, each reads the same.
#[tokio::test]
async fn a_big_console_moves_to_the_blob_store_and_reads_the_same_everywhere() {
    let server = Server::start(None);
    // About 1.6 MB in four bursts, so a follower reads some of it live and
    // one that comes after reads it from the blob store in several pieces.
    let pipeline = "version: 1\ntasks:\n  loud:\n    steps:\n      - run: for p in 1 2 3 4; do i=0; while [ $i -lt 12000 ]; do echo \"line-$p-$i ....................\"; i=$((i+1)); done; sleep 0.3; done\n  quiet:\n    steps: [{run: 'for i in 1 2 3 4 5; do echo hush-$i; sleep 0.1; done'}]\n";
    server.freestyle("big", pipeline).await;
    let loud = "/api/v1/jobs/big/runs/1/tasks/loud/results/console";
    let started = Instant::now();
    while server.json("/api/v1/jobs/big/runs/1").await["tasks"][0]["status"] != "running" {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = follow_to_end(&server, loud).await;
    let run = server.wait_for_run("big", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");

    let whole = server.get(loud).await.bytes().await.unwrap().to_vec();
    let text = String::from_utf8(whole.clone()).unwrap();
    let expected: Vec<String> = (1..=4)
        .flat_map(|p| (0..12000).map(move |i| format!("line-{p}-{i} ....................")))
        .collect();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("line-")).collect();
    assert_eq!(lines, expected, "every line once, in order");
    assert_eq!(live, whole, "followed live");
    assert_eq!(follow_to_end(&server, loud).await, whole, "followed after");
    let part = server
        .request(reqwest::Method::GET, loud, Some(ADMIN))
        .header("Range", "bytes=300000-300099")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap(), whole[300000..300100]);
    let beyond = server
        .request(reqwest::Method::GET, loud, Some(ADMIN))
        .header("Range", "bytes=99999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let blobs = files_ending_with(&server.data_dir.path().join("blobs"), ".log");
    assert_eq!(blobs.len(), 1, "only the big console is a blob: {blobs:?}");
    assert_eq!(std::fs::read(&blobs[0]).unwrap(), whole);
    // The small one, printed in several chunks, is read from the database,
    // by range too (across its chunks).
    let quiet_path = "/api/v1/jobs/big/runs/1/tasks/quiet/results/console";
    let quiet = server.get(quiet_path).await.text().await.unwrap();
    let (from, to) = (
        quiet.find("hush-2").expect(&quiet),
        quiet.find("hush-5").expect(&quiet),
    );
    let part = server
        .request(reqwest::Method::GET, quiet_path, Some(ADMIN))
        .header("Range", format!("bytes={from}-{}", to - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.text().await.unwrap(),
        "hush-2\nhush-3\nhush-4\n",
        "{quiet}"
    );
}

/// A task retried twice keeps each attempt's log, JUnit report and
/// artifacts: read by attempt, or — the console — all attempts one after
/// another, whole, by range, or followed from the first attempt on.
#[tokio::test]
async fn every_attempt_keeps_its_log_report_and_artifacts() {
    let server = Server::start(None);
    let counter = tempfile::tempdir().unwrap();
    // Each attempt runs as a task user of its own: the directory is theirs
    // to write, and a rename replaces what an earlier attempt's user wrote.
    std::fs::set_permissions(
        counter.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let count = counter.path().join("count");
    let count = count.display();
    let pipeline = format!(
        "version: 1\ntasks:\n  flaky:\n    retry: 2\n    steps:\n      - run: |\n          n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}.new; mv -f {count}.new {count}\n          echo \"attempt-$n says hi\"\n          echo \"<testsuite name='s' tests='1'><testcase name='case-$n'/></testsuite>\" > report.xml\n          echo $n > out.txt\n          sleep 1\n          [ $n -ge 3 ]\n    artifacts: {{ paths: [out.txt] }}\n    reports: {{ junit: [report.xml] }}\n"
    );
    server.freestyle("flaky", &pipeline).await;
    let task = "/api/v1/jobs/flaky/runs/1/tasks/flaky";
    let started = Instant::now();
    while server.json("/api/v1/jobs/flaky/runs/1").await["tasks"][0]["status"] != "running" {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let console = format!("{task}/results/console");
    let live = follow_to_end(&server, &console).await;
    let run = server.wait_for_run("flaky", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(run["tasks"][0]["attempt"], 3, "{run:#}");

    let whole = server.get(&console).await.bytes().await.unwrap().to_vec();
    let text = String::from_utf8(whole.clone()).unwrap();
    let order: Vec<usize> = [
        "attempt-1 says hi\n",
        "--- attempt 2\n",
        "attempt-2 says hi\n",
        "--- attempt 3\n",
        "attempt-3 says hi\n",
    ]
    .iter()
    .map(|line| {
        text.find(line)
            .unwrap_or_else(|| panic!("{line:?} in {text}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(
        live, whole,
        "a follower from the first attempt saw them all"
    );

    // A range across the line between two attempts reads the same bytes.
    let (from, to) = (order[1] - 3, order[2] + 5);
    let part = server
        .request(reqwest::Method::GET, &console, Some(ADMIN))
        .header("Range", format!("bytes={from}-{to}"))
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes {from}-{to}/{}", whole.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), whole[from..=to]);

    let first = server
        .get(&format!("{console}?attempt=1"))
        .await
        .text()
        .await
        .unwrap();
    assert!(first.contains("attempt-1 says hi"), "{first}");
    assert!(
        !first.contains("attempt-2") && !first.contains("--- attempt"),
        "{first}"
    );

    // Results by attempt: the report and the file of that attempt.
    for n in 1..=3 {
        let results = server.json(&format!("{task}/results?attempt={n}")).await;
        assert_eq!(results["attempt"], n, "{results:#}");
        assert_eq!(results["attempts"], 3, "{results:#}");
        let junit = server.json(results["junit"].as_str().unwrap()).await;
        assert!(
            junit.to_string().contains(&format!("case-{n}")),
            "attempt {n}'s report: {junit}"
        );
        assert!(!junit.to_string().contains(&format!("case-{}", n % 3 + 1)));
        let url = results["artifacts"][0]["url"].as_str().unwrap();
        let file = server.get(url).await.text().await.unwrap();
        assert_eq!(file, format!("{n}\n"), "attempt {n}'s out.txt via {url}");
    }
    let latest = server.json(&format!("{task}/results")).await;
    assert_eq!(latest["attempt"], 3, "{latest:#}");

    // The CLI shows them the same way: all, or the one asked for.
    let all = kiln_client(&server, &["logs", "flaky", "1", "flaky"], None);
    assert_eq!(all.stdout, whole, "{}", all_output(&all));
    let second = kiln_client(
        &server,
        &["logs", "flaky", "1", "flaky", "--attempt", "2"],
        None,
    );
    let second = String::from_utf8(second.stdout).unwrap();
    assert!(second.contains("attempt-2 says hi"), "{second}");
    assert!(
        !second.contains("attempt-1") && !second.contains("attempt-3"),
        "{second}"
    );
    let missing = server.get(&format!("{console}?attempt=4")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(
        missing.text().await.unwrap().contains("has had 3 so far"),
        "says how many attempts there were"
    );
}

/// A JUnit report of 160 000 cases (11 MB, past gRPC's 4 MiB message
/// limit) is streamed from the agent, kept and served.
#[tokio::test]
async fn an_eleven_megabyte_junit_report_is_kept_and_served() {
    let server = Server::start(None);
    let pipeline = "version: 1\ntasks:\n  suite:\n    steps:\n      - run: |\n          { echo '<testsuite name=\"huge\">'; seq 1 160000 | sed 's|.*|<testcase classname=\"suite.with.a.long.class.name\" name=\"case-&\"/>|'; echo '</testsuite>'; } > report.xml\n          wc -c report.xml\n    reports: { junit: [report.xml] }\n";
    server.freestyle("huge", pipeline).await;
    let run = server.wait_for_run("huge", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    let task = "/api/v1/jobs/huge/runs/1/tasks/suite/results";
    let console = server
        .get(&format!("{task}/console"))
        .await
        .text()
        .await
        .unwrap();
    let size: u64 = console
        .lines()
        .find_map(|line| line.strip_suffix(" report.xml")?.trim().parse().ok())
        .expect(&console);
    assert!(size > 11_000_000, "{size} bytes: {console}");
    assert!(!console.contains("not kept"), "{console}");
    let results = server.json(task).await;
    let junit = server
        .json(results["junit"].as_str().expect("a report"))
        .await;
    let text = junit.to_string();
    assert!(text.contains("160000"), "the total is there");
    assert!(text.contains("\"case-160000\""), "and the last case");
}

/// A secret in the names of a task's files and in its JUnit report shows
/// nowhere the server answers: console notes, the results listing, the
/// JUnit API, artifact URLs, the task's reason.
#[tokio::test]
async fn a_secret_in_file_names_and_reports_shows_nowhere() {
    let server = Server::start(None);
    let secret = "s3cr3t-in-names-0123";
    let pipeline = "version: 1\ntasks:\n  leaky:\n    secrets: [TOK]\n    steps:\n      - run: |\n          mkdir -p o\n          echo data > \"o/out-$TOK.txt\"\n          ln -s /etc/passwd \"o/link-$TOK.txt\"\n          echo \"<testsuite name='s-$TOK' tests='1'><testcase classname='c-$TOK' name='case-$TOK'><failure message='got $TOK'>$TOK</failure><system-out>tok is $TOK</system-out></testcase></testsuite>\" > \"r-$TOK.xml\"\n    artifacts: { paths: [\"o/*\"] }\n    reports: { junit: [\"r-*.xml\"] }\n";
    server
        .send(
            reqwest::Method::PUT,
            "/api/v1/jobs/names",
            json!({"kind": "freestyle", "pipeline": pipeline}),
        )
        .await;
    server
        .send(
            reqwest::Method::PUT,
            "/api/v1/jobs/names/secrets/TOK",
            json!({"value": secret}),
        )
        .await;
    let (_, run) = server
        .send(reqwest::Method::POST, "/api/v1/jobs/names/runs", json!({}))
        .await;
    let run = server
        .wait_for_run("names", run["number"].as_i64().unwrap())
        .await;
    assert_eq!(run["status"], "success", "{run:#}");
    let task = "/api/v1/jobs/names/runs/1/tasks/leaky";
    let console = server
        .get(&format!("{task}/results/console"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        console.contains("link-***.txt"),
        "the refusal is noted: {console}"
    );
    let results = server.json(&format!("{task}/results")).await;
    assert_eq!(
        results["artifacts"][0]["path"], "o/out-***.txt",
        "{results:#}"
    );
    let url = results["artifacts"][0]["url"].as_str().unwrap();
    let file = server.get(url).await;
    assert_eq!(file.status(), StatusCode::OK, "{url}");
    assert_eq!(file.text().await.unwrap(), "data\n");
    let junit = server.json(results["junit"].as_str().unwrap()).await;
    assert!(junit.to_string().contains("case-***"), "{junit}");
    for (what, text) in [
        ("console", console),
        ("results", results.to_string()),
        ("junit", junit.to_string()),
        (
            "run",
            server.json("/api/v1/jobs/names/runs/1").await.to_string(),
        ),
    ] {
        assert!(!text.contains(secret), "{what} shows the secret: {text}");
    }
}

/// A task that cannot run as written where it was sent ends `error` at
/// once, whatever its `retry`: here, no image for a docker agent.
#[tokio::test]
async fn a_task_that_cannot_run_as_written_is_not_retried() {
    let server = Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    let _agent = crate::agents::Agent::start_with(&server, "boxed", "linux", 1, "docker");
    let pipeline = "version: 1\ntasks:\n  bare:\n    retry: 2\n    steps: [{run: 'true'}]\n";
    server.freestyle("asis", pipeline).await;
    let run = server.wait_for_run("asis", 1).await;
    assert_eq!(run["status"], "error", "{run:#}");
    let task = &run["tasks"][0];
    assert_eq!(task["attempt"], 1, "not retried: {run:#}");
    assert!(
        task["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no `image`"),
        "{run:#}"
    );
}

/// The environment a server was started with holds its tokens; what it
/// starts (here git, asking a host that never answers) inherits none.
#[tokio::test]
async fn the_servers_secrets_leave_its_environment() {
    let server = Server::start(None);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/never.git",
        silent.local_addr().unwrap().port()
    );
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs",
            json!({"name": "stuck", "kind": "git", "repository": url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let trigger = server.send(reqwest::Method::POST, "/api/v1/jobs/stuck/runs", json!({}));
    let look = async {
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no git process of the server was seen"
            );
            let children = processes_under(server.pid());
            let git: Vec<String> = children
                .iter()
                .filter_map(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
                .map(|env| String::from_utf8_lossy(&env).into_owned())
                .filter(|env| env.contains("PATH="))
                .collect();
            if !git.is_empty() {
                return git;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let environments = tokio::select! {
        environments = look => environments,
        answer = trigger => panic!("the trigger answered before git was seen: {answer:?}"),
    };
    for env in environments {
        for name in [
            "KILN_ADMIN_TOKEN",
            "KILN_ADMIN_PASSWORD",
            "KILN_AGENT_TOKEN",
            ADMIN,
            ADMIN_PASSWORD,
            "kiln_agent_shared",
        ] {
            assert!(
                !env.contains(name),
                "a child of the server has {name}: {env}"
            );
        }
    }
    drop(silent);
    // The password the environment gave signs `admin` in.
    let signed_in = reqwest::Client::new()
        .post(format!("{}/login", server.url))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::OK);
    let user: Value = signed_in.json().await.unwrap();
    assert_eq!(user["role"], "admin");
}

/// Every process below `pid` (children, grandchildren, …).
fn processes_under(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 2..];
            let parent = after.split(' ').nth(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}
