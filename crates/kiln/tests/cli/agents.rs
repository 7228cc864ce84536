//! `kiln server` with real `kiln agent` processes over gRPC on loopback:
//! routing by label, agents killed or drained mid-task, cancellation, and a
//! server killed and restarted mid-run.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::server::Server;
use crate::support::GitRepo;

const AGENT_TOKEN: &str = "kiln_agent_shared_test_token";

pub(crate) struct Agent {
    child: Child,
    pub(crate) output: Arc<Mutex<String>>,
    work_dir: Option<tempfile::TempDir>,
}

impl Agent {
    pub(crate) fn start(server: &Server, name: &str, labels: &str, capacity: u32) -> Agent {
        Agent::start_with(server, name, labels, capacity, "process")
    }

    /// [`Agent::start`] with another executor.
    pub(crate) fn start_with(
        server: &Server,
        name: &str,
        labels: &str,
        capacity: u32,
        executor: &str,
    ) -> Agent {
        let work_dir = tempfile::tempdir().unwrap();
        Agent::start_in(server, name, labels, capacity, executor, work_dir)
    }

    /// [`Agent::start_with`] in a work directory an earlier run of the
    /// agent left (with the token its registration gave it).
    pub(crate) fn start_in(
        server: &Server,
        name: &str,
        labels: &str,
        capacity: u32,
        executor: &str,
        work_dir: tempfile::TempDir,
    ) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "agent",
                "--server",
                &server.grpc,
                "--token",
                AGENT_TOKEN,
                "--executor",
                executor,
            ])
            .args([
                "--name",
                name,
                "--labels",
                labels,
                "--capacity",
                &capacity.to_string(),
                "--work-dir",
            ])
            .arg(work_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (output, tx) = (output.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("connected") {
                        tx.send(()).ok();
                    }
                    output.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("agent {name} did not connect:\n{}", output.lock().unwrap());
        }
        Agent {
            child,
            output,
            work_dir: Some(work_dir),
        }
    }

    /// The agent's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's work directory (its `--work-dir`).
    pub(crate) fn work_dir(&self) -> &std::path::Path {
        self.work_dir.as_ref().expect("the work directory").path()
    }

    /// SIGKILL; returns the work directory, to start the agent again in.
    pub(crate) fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.work_dir.take().expect("the work directory")
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < limit,
                "the agent did not exit:\n{}",
                self.output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the status of task `task` (claimed: `running`) or, with
/// `step`, of that step of it (the agent has it in hand) is `wanted`.
async fn wait_status(
    server: &Server,
    (job, run): (&str, i64),
    task: usize,
    step: Option<usize>,
    wanted: &str,
) -> Value {
    let started = Instant::now();
    loop {
        let detail = server.json(&format!("/api/v1/jobs/{job}/runs/{run}")).await;
        let status = match step {
            Some(step) => &detail["tasks"][task]["steps"][step]["status"],
            None => &detail["tasks"][task]["status"],
        };
        if status == wanted {
            return detail;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "task {task} (step {step:?}) never became {wanted}: {detail:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(crate) async fn wait_task_status(
    server: &Server,
    job: &str,
    run: i64,
    task: usize,
    wanted: &str,
) -> Value {
    wait_status(server, (job, run), task, None, wanted).await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn tasks_route_to_agents_whose_labels_match() {
    let server = Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    let _amd = Agent::start(&server, "amd-1", "linux,amd64", 2);
    let _arm = Agent::start(&server, "arm-1", "linux,arm64", 2);
    let _win = Agent::start(&server, "win-1", "windows", 2);
    let pipeline = "version: 1\ntasks:\n  amd:\n    runs-on: [linux, amd64]\n    steps: [{run: echo on $KILN_AGENT}]\n  arm:\n    runs-on: [arm64]\n    steps: [{run: echo on $KILN_AGENT}]\n  win:\n    runs-on: [windows]\n    steps: [{run: echo on $KILN_AGENT}]\n  any:\n    needs: [amd, arm, win]\n    runs-on: [linux]\n    steps: [{run: echo on $KILN_AGENT}]\n";
    let run = server.freestyle("routed", pipeline).await;
    let detail = server.wait_for_run("routed", run).await;
    assert_eq!(detail["status"], "success", "{detail:#}");
    let agent_of = |i: usize| detail["tasks"][i]["agent"].as_str().unwrap().to_string();
    assert_eq!(agent_of(0), "amd-1");
    assert_eq!(agent_of(1), "arm-1");
    assert_eq!(agent_of(2), "win-1");
    assert!(
        ["amd-1", "arm-1"].contains(&agent_of(3).as_str()),
        "{detail:#}"
    );
    let log = server
        .get(&format!(
            "/api/v1/jobs/routed/runs/{run}/tasks/arm/results/console"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(log.contains("on arm-1"), "{log}");

    let agents = server.json("/api/v1/agents").await;
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for name in ["amd-1", "arm-1", "win-1"] {
        assert!(names.contains(&name), "{agents:#}");
    }
}

/// SIGKILL an agent mid-task; with `retry: 1` the task finishes on another
/// agent, with `retry: 0` it ends `error: agent lost` — within the lease.
#[tokio::test]
async fn a_killed_agents_task_is_retried_elsewhere_or_ends_agent_lost() {
    let server = &Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    let victim = Agent::start(server, "victim", "linux", 2);
    let pipeline = "version: 1\ntasks:\n  retried:\n    retry: 1\n    steps: [{run: echo attempt on $KILN_AGENT; sleep 4; echo finished on $KILN_AGENT}]\n  lost:\n    steps: [{run: sleep 4}]\n";
    let run = server.freestyle("fragile", pipeline).await;
    wait_task_status(server, "fragile", run, 0, "running").await;
    wait_task_status(server, "fragile", run, 1, "running").await;
    drop(victim); // SIGKILL
    let killed_at = Instant::now();
    let _rescuer = Agent::start(server, "rescuer", "linux", 2);

    let detail = server.wait_for_run("fragile", run).await;
    let retried = &detail["tasks"][0];
    assert_eq!(retried["status"], "success", "{detail:#}");
    assert_eq!(retried["agent"], "rescuer");
    assert_eq!(retried["attempt"], 2);
    let lost = &detail["tasks"][1];
    assert_eq!(lost["status"], "error", "{detail:#}");
    assert!(
        lost["reason"].as_str().unwrap_or("").contains("agent lost"),
        "{detail:#}"
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "took {:?}",
        killed_at.elapsed()
    );
    let log = server
        .get(&format!(
            "/api/v1/jobs/fragile/runs/{run}/tasks/retried/results/console"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(log.contains("finished on rescuer"), "{log}");
}

/// An agent idle for longer than a short lease keeps its first task: its
/// heartbeats follow the lease its assignment brings, not a default.
#[tokio::test]
async fn a_short_lease_is_kept_by_an_agent_that_was_idle() {
    let server =
        &Server::start_for_agents_with_lease(tempfile::tempdir().unwrap(), "127.0.0.1:0", "2s");
    let _agent = Agent::start(server, "patient", "linux", 1);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let run = server
        .freestyle(
            "slow",
            "version: 1\ntasks:\n  slow:\n    steps: [{run: sleep 5 && echo done}]\n",
        )
        .await;
    let detail = server.wait_for_run("slow", run).await;
    assert_eq!(detail["status"], "success", "{detail:#}");
    assert_eq!(detail["tasks"][0]["attempt"], 1, "{detail:#}");
}

#[tokio::test]
async fn sigterm_lets_a_busy_agent_finish_its_task_then_exit() {
    let server = Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    let mut agent = Agent::start(&server, "drainer", "linux", 1);
    let run = server.freestyle("drain",
        "version: 1\ntasks:\n  work:\n    steps: [{run: sleep 2; echo finished-while-draining}]\n",
    )
    .await;
    // Busy means its step runs: a task claimed for it a moment before the
    // signal may not have reached it, and then goes back to the queue.
    wait_status(&server, ("drain", run), 0, Some(0), "running").await;
    agent.signal("-TERM");
    let code = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", agent.output.lock().unwrap());
    let detail = server.wait_for_run("drain", run).await;
    assert_eq!(detail["status"], "success", "{detail:#}");
    let log = server
        .get(&format!(
            "/api/v1/jobs/drain/runs/{run}/tasks/work/results/console"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(log.contains("finished-while-draining"), "{log}");
}

#[tokio::test]
async fn cancel_kills_the_task_process_within_a_second() {
    let server = Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    let _agent = Agent::start(&server, "canceller", "linux", 1);
    // A distinctive duration, so this test finds its own process only.
    let run = server
        .freestyle(
            "stopme",
            "version: 1\ntasks:\n  long:\n    steps: [{run: sleep 73.21}]\n",
        )
        .await;
    wait_task_status(&server, "stopme", run, 0, "running").await;
    let alive = || {
        Command::new("pgrep")
            .args(["-f", "sleep 73.21"])
            .output()
            .unwrap()
            .status
            .success()
    };
    let started = Instant::now();
    while !alive() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the step never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = server
        .send(
            Method::POST,
            &format!("/api/v1/jobs/stopme/runs/{run}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let cancelled_at = Instant::now();
    while alive() {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(1),
            "the task's process outlived the cancel by a second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let detail = server.wait_for_run("stopme", run).await;
    assert_eq!(detail["status"], "cancelled", "{detail:#}");
}

#[tokio::test]
async fn a_server_killed_and_restarted_mid_run_still_completes_the_run_with_its_whole_log() {
    let grpc = format!("127.0.0.1:{}", free_port());
    let server = Server::start_for_agents(tempfile::tempdir().unwrap(), &grpc);
    let agent = Agent::start(&server, "steady", "linux", 1);
    let pipeline = "version: 1\ntasks:\n  ticks:\n    steps: [{run: for i in 1 2 3 4 5 6 7 8; do echo tick-$i; sleep 0.5; done}]\n  after:\n    needs: [ticks]\n    steps: [{run: echo after-ran}]\n";
    let run = server.freestyle("survivor", pipeline).await;
    wait_task_status(&server, "survivor", run, 0, "running").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let data_dir = server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let server = Server::start_for_agents(data_dir, &grpc);
    let detail = server.wait_for_run("survivor", run).await;
    assert_eq!(detail["status"], "success", "{detail:#}");
    // The agent said when it lost the server, and when it had it back.
    let output = agent.output.lock().unwrap().clone();
    let lost = output
        .find(&format!("agent steady cannot reach http://{grpc}"))
        .unwrap_or_else(|| panic!("the agent did not say it lost its server:\n{output}"));
    assert!(
        output[lost..].contains("agent steady connected"),
        "the agent did not say it was back:\n{output}"
    );
    assert_eq!(
        detail["tasks"][0]["attempt"], 1,
        "the task should not have been restarted: {detail:#}"
    );
    let log = server
        .get(&format!(
            "/api/v1/jobs/survivor/runs/{run}/tasks/ticks/results/console"
        ))
        .await
        .text()
        .await
        .unwrap();
    for i in 1..=8 {
        assert_eq!(
            log.matches(&format!("tick-{i}\n")).count(),
            1,
            "tick-{i} lost or doubled:\n{log}"
        );
    }
}

/// An agent given the HTTP API's address, or an address without a scheme,
/// ends at once with one error that says what `--server` expects, instead
/// of saying it connected and retrying forever (or saying nothing).
#[tokio::test]
async fn an_agent_given_a_wrong_server_address_exits_saying_what_was_expected() {
    let server = Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    let grpc_host = server.grpc.trim_start_matches("http://").to_string();
    for (address, expected) in [
        (server.url.as_str(), "--grpc-listen"),
        (grpc_host.as_str(), "no scheme"),
    ] {
        let work_dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["agent", "--server", address, "--token", AGENT_TOKEN])
            .args(["--executor", "process", "--name", "lost", "--work-dir"])
            .arg(work_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("the agent with --server {address} did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
        assert!(!stdout.contains("connected"), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "one error: {stderr}");
        assert!(stderr.contains(expected), "--server {address}: {stderr}");
    }
    let agents = server.json("/api/v1/agents").await;
    assert_eq!(agents, json!([]), "no agent registered");
}

/// A private repository over smart HTTP with basic authentication: the
/// server (to resolve the branch and read the pipeline) and the agent (to
/// fetch the commit) use the job's `GIT_USERNAME`/`GIT_PASSWORD` secrets,
/// which the task itself does not get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_is_fetched_with_the_jobs_git_secrets() {
    const PASSWORD: &str = "tok-private-repo-5Qx8";
    let pipeline = "version: 1\ntasks:\n  show:\n    steps: [{run: 'cat plan.txt; echo \"seen:[$GIT_PASSWORD]\"'}]\n";
    let repo = GitRepo::new(&[(".kiln.yml", pipeline), ("plan.txt", "for the team only\n")]);
    let served = tempfile::tempdir().unwrap();
    let cloned = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(repo.path())
        .arg(served.path().join("repo.git"))
        .status()
        .unwrap();
    assert!(cloned.success());
    let http =
        kiln_git::testing::HttpGit::start(served.path().to_path_buf(), "ci-bot", PASSWORD, false)
            .await;
    let url = format!("http://127.0.0.1:{}/repo.git", http.port);

    let server = Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    let agent = Agent::start(&server, "fetcher", "linux", 1);
    let (status, job) = server
        .send(
            Method::POST,
            "/api/v1/jobs",
            json!({"name": "private", "kind": "git", "repository": url}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{job}");
    let (status, problem) = server
        .send(Method::POST, "/api/v1/jobs/private/runs", json!({}))
        .await;
    assert_eq!(
        status,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "without credentials: {problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot resolve the commit"),
        "{problem}"
    );

    for (name, value) in [("GIT_USERNAME", "ci-bot"), ("GIT_PASSWORD", PASSWORD)] {
        let (status, body) = server
            .send(
                Method::PUT,
                &format!("/api/v1/jobs/private/secrets/{name}"),
                json!({"value": value}),
            )
            .await;
        assert!(status.is_success(), "{name}: {status} {body}");
    }
    let (status, run) = server
        .send(Method::POST, "/api/v1/jobs/private/runs", json!({}))
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{run}");
    assert_eq!(run["sha"], repo.head().as_str());
    let detail = server.wait_for_run("private", 1).await;
    assert_eq!(detail["status"], "success", "{detail:#}");
    assert_eq!(detail["tasks"][0]["agent"], "fetcher");
    let log = server
        .get("/api/v1/jobs/private/runs/1/tasks/show/results/console")
        .await
        .text()
        .await
        .unwrap();
    assert!(log.contains("for the team only"), "{log}");
    assert!(log.contains("seen:[]"), "the task got the password: {log}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(!agent.output.lock().unwrap().contains(PASSWORD));
    let requests = http.log.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("git-upload-pack") && r.ends_with("auth=true")),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|r| !r.contains(PASSWORD)),
        "{requests:?}"
    );

    // The repository moves to another host (`localhost` is not the host
    // the credentials were set for): they are not sent there, and the
    // trigger says why, until they are set again for it.
    let moved = format!("http://localhost:{}/repo.git", http.port);
    let (status, body) = server
        .send(
            Method::PUT,
            "/api/v1/jobs/private",
            json!({"kind": "git", "repository": moved}),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, problem) = server
        .send(Method::POST, "/api/v1/jobs/private/runs", json!({}))
        .await;
    assert_eq!(
        status,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("GIT_") && detail.contains(&format!("localhost:{}", http.port)),
        "{problem}"
    );
    let to_moved = |requests: &[String]| {
        requests
            .iter()
            .filter(|r| r.contains("host=localhost"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        to_moved(&http.log.lock().unwrap())
            .iter()
            .all(|r| r.ends_with("auth=false")),
        "credentials went to the new host: {:?}",
        http.log.lock().unwrap()
    );
    for (name, value) in [("GIT_USERNAME", "ci-bot"), ("GIT_PASSWORD", PASSWORD)] {
        server
            .send(
                Method::PUT,
                &format!("/api/v1/jobs/private/secrets/{name}"),
                json!({"value": value}),
            )
            .await;
    }
    let (status, run) = server
        .send(Method::POST, "/api/v1/jobs/private/runs", json!({}))
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "set again: {run}");
    assert_eq!(server.wait_for_run("private", 2).await["status"], "success");
    assert!(
        to_moved(&http.log.lock().unwrap())
            .iter()
            .any(|r| r.ends_with("auth=true")),
        "{:?}",
        http.log.lock().unwrap()
    );
}
