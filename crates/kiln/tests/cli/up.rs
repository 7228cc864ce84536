//! `kiln up`: the all-in-one server whose embedded agent is a real agent
//! over gRPC, with a generated admin token, on a git repository job.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::GitRepo;

struct Up {
    child: Child,
    url: String,
    /// The admin token printed on first start, if it was printed.
    token: Option<String>,
    http: reqwest::Client,
}

impl Up {
    fn start(data_dir: &std::path::Path) -> Up {
        Up::start_with_stderr(data_dir, Stdio::inherit())
    }

    fn start_with_stderr(data_dir: &std::path::Path, stderr: Stdio) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--executor",
                "process",
                "--data-dir",
            ])
            .arg(data_dir)
            .env_remove("KILN_ADMIN_TOKEN")
            .env_remove("KILN_AGENT_TOKEN")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // A piped stderr is closed at once: nobody reads it any more.
        drop(child.stderr.take());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                tx.send(line).ok();
            }
        });
        let (mut url, mut token, mut connected) = (None, None, false);
        let started = Instant::now();
        while url.is_none() || !connected {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("kiln up did not start");
            if let Some(found) = line.split("listening on ").nth(1) {
                url = Some(found.trim().to_string());
            }
            if let Some(found) = line.split("admin token (shown once, keep it): ").nth(1) {
                token = Some(found.trim().to_string());
            }
            // The embedded agent announces itself like any agent.
            if line.starts_with("agent embedded connected") {
                connected = true;
            }
            assert!(started.elapsed() < Duration::from_secs(60));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        Up {
            child,
            url: url.unwrap(),
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{method} {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn get(&self, token: &str, path: &str) -> Value {
        self.send(token, reqwest::Method::GET, path, Value::Null)
            .await
    }

    /// Triggers a run of `job` and waits for its end; returns it.
    async fn run_to_end(&self, token: &str, job: &str) -> Value {
        let run = self
            .send(
                token,
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{job}/runs"),
                json!({}),
            )
            .await;
        self.wait_for_run(token, job, run["number"].as_i64().unwrap())
            .await
    }

    async fn wait_for_run(&self, token: &str, job: &str, number: i64) -> Value {
        let started = Instant::now();
        loop {
            let run = self
                .get(token, &format!("/api/v1/jobs/{job}/runs/{number}"))
                .await;
            if !["pending", "queued", "running"].contains(&run["status"].as_str().unwrap_or("")) {
                return run;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{run:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM; returns the exit code.
    fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "kiln up ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiln_up_runs_a_repository_pipeline_on_its_embedded_agent() {
    let repo = GitRepo::new(&[(
        ".kiln.yml",
        "version: 1\ntasks:\n  build:\n    steps:\n      - run: echo built > out.txt && cat out.txt\n  test:\n    needs: [build]\n    steps:\n      - run: echo tested\n",
    )]);
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path());
    let token = up
        .token
        .clone()
        .expect("the first start prints an admin token");

    let agents = up.get(&token, "/api/v1/agents").await;
    let agents = agents.as_array().expect("a list of agents");
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0]["name"], "embedded");
    assert_eq!(agents[0]["labels"], json!(["linux"]));

    up.send(
        &token,
        reqwest::Method::PUT,
        "/api/v1/jobs/app",
        json!({"kind": "git", "repository": repo.url()}),
    )
    .await;
    let run = up.run_to_end(&token, "app").await;
    assert_eq!(run["status"], "success", "{run:#}");
    for task in run["tasks"].as_array().unwrap() {
        assert_eq!(task["agent"], "embedded", "{task}");
    }

    // The embedded agent's token is its own, kept owner-only, and is not a
    // user token.
    let token_file = data.path().join("embedded-agent.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let agent_token = std::fs::read_to_string(&token_file).unwrap();
    let refused = up
        .http
        .get(format!("{}/api/v1/jobs", up.url))
        .bearer_auth(agent_token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);

    assert_eq!(up.stop(), Some(0), "SIGTERM drains and exits 0");

    // Started again on the same data: no new admin token, the same agent.
    let again = Up::start(data.path());
    assert_eq!(again.token, None, "the admin token is printed only once");
    let run = again.run_to_end(&token, "app").await;
    assert_eq!(run["status"], "success", "{run:#}");
}

/// A server whose stderr is gone (its terminal closed, its supervisor's
/// reader ended) still stops on SIGTERM: saying it shuts down must not
/// fail the shutdown.
#[test]
fn sigterm_stops_kiln_up_whose_stderr_is_closed() {
    let data_dir = tempfile::tempdir().unwrap();
    let up = Up::start_with_stderr(data_dir.path(), Stdio::piped());
    assert_eq!(up.stop(), Some(0));
}
