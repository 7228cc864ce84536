//! The agent side of the server over real gRPC: an in-process server on
//! random ports (HTTP and gRPC) on SQLite, a raw `kiln_proto` client playing
//! the agent, jobs triggered over HTTP.

use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_proto::v1::agent_client::AgentClient;
use kiln_proto::v1::{
    ArtifactChunk, FinishTaskRequest, HeartbeatRequest, LogChunk, ReportChunk, ServerMessage,
    SessionRequest, StepUpdate, TaskAttempt, server_message,
};
use kiln_server::ServerConfig;
use kiln_store::{TokenKind, TokenStore};
use kiln_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Streaming};

const ADMIN: &str = "kiln_admin_grpc_test_token";
const AGENT: &str = "kiln_agent_grpc_test_token";

struct Harness {
    http: reqwest::Client,
    base: String,
    grpc: String,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    async fn start(lease: Duration) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(&dir.path().join("kiln.db"))
            .await
            .unwrap();
        db.insert_token(
            &kiln_crypto::hash_token(ADMIN),
            TokenKind::User,
            "admin",
            true,
            Utc::now(),
        )
        .await
        .unwrap();
        for name in AGENTS {
            let hash = kiln_crypto::hash_token(&agent_token(name));
            let token = kiln_store::NewAgentToken {
                hash: &hash,
                name,
                labels: None,
                max_capacity: None,
            };
            db.insert_agent_token(&token, Utc::now()).await.unwrap();
        }
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            blob_url: None,
            agent_lease: lease,
            max_report_size: REPORT_LIMIT,
            limits: kiln_server::Limits::default(),
        };
        let state = kiln_server::app_state(db, &config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let grpc = format!("http://{}", grpc_listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(kiln_server::serve(
            state,
            listener,
            Some(grpc_listener),
            shutdown.clone(),
        ));
        Harness {
            http: reqwest::Client::new(),
            base,
            grpc,
            shutdown,
            server: Some(server),
            _dir: dir,
        }
    }

    async fn client(&self) -> AgentClient<Channel> {
        AgentClient::connect(self.grpc.clone()).await.unwrap()
    }

    /// Creates a freestyle job.
    async fn job(&self, name: &str, pipeline: &str) {
        let response = self
            .http
            .put(format!("{}/api/v1/jobs/{name}", self.base))
            .bearer_auth(ADMIN)
            .json(&json!({"kind": "freestyle", "pipeline": pipeline}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    async fn trigger(&self, job: &str) {
        let response = self
            .http
            .post(format!("{}/api/v1/jobs/{job}/runs", self.base))
            .bearer_auth(ADMIN)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }

    /// Waits until the reason of `task` in run 1 of `job` satisfies `ready`.
    async fn task_reason(&self, job: &str, task: &str, ready: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let run = self.json(&format!("/api/v1/jobs/{job}/runs/1")).await;
            let reason = run["tasks"]
                .as_array()
                .and_then(|tasks| tasks.iter().find(|t| t["name"] == task))
                .and_then(|t| t["reason"].as_str())
                .unwrap_or_default()
                .to_string();
            if ready(&reason) {
                return reason;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until run 1 of `job` has finished; returns it.
    async fn finished_run(&self, job: &str) -> Value {
        let started = Instant::now();
        loop {
            let run = self.json(&format!("/api/v1/jobs/{job}/runs/1")).await;
            let status = run["status"].as_str().unwrap_or_default().to_string();
            if !["pending", "queued", "running"].contains(&status.as_str()) {
                return run;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The token of agent `name` (each agent of these tests has its own).
fn agent_token(name: &str) -> String {
    format!("{AGENT}-{name}")
}

/// Agents these tests run, each with its own token.
const AGENTS: &[&str] = &[
    "a",
    "a1",
    "b",
    "docker-box",
    "dup",
    "first",
    "gpu-box",
    "leaver",
    "plain",
    "process-box",
    "second",
    "solo",
    "stayer",
    "x",
];

/// A request carrying a token and the agent's name; `AGENT` stands for the
/// named agent's own token.
fn call<T>(message: T, token: &str, agent: Option<&str>) -> Request<T> {
    let token = match agent {
        Some(name) if token == AGENT => agent_token(name),
        _ => token.to_string(),
    };
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(agent) = agent {
        request
            .metadata_mut()
            .insert("x-kiln-agent", agent.parse().unwrap());
    }
    request
}

async fn session(
    client: &mut AgentClient<Channel>,
    name: &str,
    labels: &[&str],
) -> Streaming<ServerMessage> {
    session_with(client, name, labels, &["process"]).await
}

async fn session_with(
    client: &mut AgentClient<Channel>,
    name: &str,
    labels: &[&str],
    executors: &[&str],
) -> Streaming<ServerMessage> {
    let hello = SessionRequest {
        name: name.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        capacity: 2,
        executors: executors.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    };
    client
        .session(call(hello, AGENT, Some(name)))
        .await
        .unwrap()
        .into_inner()
}

async fn next(stream: &mut Streaming<ServerMessage>, within: Duration) -> server_message::Kind {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("no message in time")
        .unwrap()
        .expect("the stream ended")
        .kind
        .unwrap()
}

async fn assignment(stream: &mut Streaming<ServerMessage>) -> kiln_proto::v1::Assignment {
    match next(stream, Duration::from_secs(5)).await {
        server_message::Kind::Assignment(a) => a,
        other => panic!("expected an assignment, got {other:?}"),
    }
}

async fn finish(client: &mut AgentClient<Channel>, agent: &str, task_id: i64, status: &str) {
    let request = FinishTaskRequest {
        task_id,
        attempt: 1,
        status: status.into(),
        reason: String::new(),
        not_retryable: false,
    };
    client
        .finish_task(call(request, AGENT, Some(agent)))
        .await
        .unwrap();
}

const ONE_TASK: &str = "version: 1\ntasks:\n  build:\n    steps: [{run: 'true'}]\n";

#[tokio::test]
async fn an_idle_agent_gets_a_task_at_once_and_its_dependant_after_success() {
    let server = Harness::start(Duration::from_secs(15)).await;
    server
        .job(
            "chain",
            "version: 1\ntasks:\n  build:\n    steps: [{run: 'true'}]\n  test:\n    needs: [build]\n    steps: [{run: 'true'}]\n",
        )
        .await;
    let mut client = server.client().await;
    let mut stream = session(&mut client, "a1", &["linux"]).await;
    // Let the session register before the trigger, so the timing below is
    // the trigger-to-assignment path alone.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    server.trigger("chain").await;
    let first = assignment(&mut stream).await;
    let latency = started.elapsed();
    eprintln!("trigger to assignment: {latency:?}");
    // Generous for a loaded machine, far below any polling interval.
    assert!(latency < Duration::from_millis(500), "took {latency:?}");
    assert_eq!(first.job, "chain");
    assert_eq!(first.run_number, 1);
    assert_eq!(first.event, "api");
    assert_eq!(first.attempt, 1);
    assert_eq!(first.lease_seconds, 15);
    assert_eq!(first.task.as_ref().unwrap().name, "build");

    // The dependant is released by the success, and sent right away.
    finish(&mut client, "a1", first.task_id, "success").await;
    let second = assignment(&mut stream).await;
    assert_eq!(second.task.as_ref().unwrap().name, "test");

    let agents = server.json("/api/v1/agents").await;
    assert_eq!(agents[0]["name"], "a1");
    assert_eq!(agents[0]["state"], "busy");
    assert_eq!(agents[0]["running_tasks"], json!(["test"]));

    finish(&mut client, "a1", second.task_id, "success").await;
    assert_eq!(server.finished_run("chain").await["status"], "success");
    let agents = server.json("/api/v1/agents").await;
    assert_eq!(agents[0]["state"], "idle");
}

#[tokio::test]
async fn runs_on_routes_a_task_only_to_a_matching_agent() {
    // A short lease: the "no agent" reason waits one lease after start.
    let server = Harness::start(Duration::from_secs(1)).await;
    server
        .job(
            "gpu",
            "version: 1\ntasks:\n  train:\n    runs-on: [gpu]\n    steps: [{run: 'true'}]\n",
        )
        .await;
    let mut client = server.client().await;
    let mut plain = session(&mut client, "plain", &["linux"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.trigger("gpu").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), plain.message())
            .await
            .is_err(),
        "an agent without the label got the task"
    );
    let reason = server.task_reason("gpu", "train", |r| !r.is_empty()).await;
    assert_eq!(
        reason, "no connected agent can take this task (labels: gpu)",
        "a task no agent can take says so"
    );
    let mut gpu = session(&mut client, "gpu-box", &["linux", "gpu"]).await;
    let task = assignment(&mut gpu).await;
    assert_eq!(task.task.unwrap().name, "train");
    let run = server.json("/api/v1/jobs/gpu/runs/1").await;
    assert_eq!(run["tasks"][0]["status"], "running");
    assert!(
        run["tasks"][0]["reason"].is_null(),
        "the reason is cleared once an agent could take it: {run}"
    );
}

#[tokio::test]
async fn a_task_with_services_goes_only_to_a_docker_agent() {
    let server = Harness::start(Duration::from_secs(1)).await;
    server
        .job(
            "db",
            "version: 1\ntasks:\n  it:\n    image: alpine:3\n    services:\n      pg: {image: postgres:16}\n    steps: [{run: 'true'}]\n",
        )
        .await;
    let mut client = server.client().await;
    let mut process = session(&mut client, "process-box", &["linux"]).await;
    server.trigger("db").await;
    let reason = server.task_reason("db", "it", |r| !r.is_empty()).await;
    assert_eq!(
        reason,
        "no connected agent can take this task (labels: executor:docker)"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), process.message())
            .await
            .is_err(),
        "a process agent got a task with services"
    );
    let mut docker = session_with(&mut client, "docker-box", &["linux"], &["docker"]).await;
    let task = assignment(&mut docker).await;
    assert_eq!(task.task.unwrap().services[0].image, "postgres:16");
}

#[tokio::test]
async fn tokens_are_checked() {
    let server = Harness::start(Duration::from_secs(15)).await;
    let mut client = server.client().await;
    let hello = SessionRequest {
        name: "x".into(),
        capacity: 1,
        ..Default::default()
    };
    let user = client
        .session(call(hello.clone(), ADMIN, None))
        .await
        .unwrap_err();
    assert_eq!(user.code(), Code::PermissionDenied);
    let unknown = client
        .session(call(hello.clone(), "kiln_agent_nope", None))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let missing = client.session(Request::new(hello)).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    // An agent's token is its own: a session or a call under another
    // agent's name is refused.
    let impostor = SessionRequest {
        name: "a".into(),
        capacity: 1,
        ..Default::default()
    };
    let as_b = call(impostor, &agent_token("b"), None);
    let refused = client.session(as_b).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    assert!(refused.message().contains("agent `b`'s"), "{refused}");
    let as_a = call(HeartbeatRequest::default(), &agent_token("b"), Some("a"));
    let heartbeat = client.heartbeat(as_a).await.unwrap_err();
    assert_eq!(heartbeat.code(), Code::PermissionDenied, "{heartbeat}");
}

#[tokio::test]
async fn only_the_holder_may_report_and_logs_are_idempotent() {
    let server = Harness::start(Duration::from_secs(15)).await;
    server.job("logs", ONE_TASK).await;
    let mut client = server.client().await;
    let mut stream = session(&mut client, "a", &["linux"]).await;
    server.trigger("logs").await;
    let task = assignment(&mut stream).await;

    // Agent b is an agent too, but does not hold the task.
    let chunk = LogChunk {
        task_id: task.task_id,
        attempt: 1,
        seq: 0,
        data: b"hello from a\n".to_vec(),
    };
    let stolen = client
        .append_logs(call(
            futures_util::stream::iter(vec![chunk.clone()]),
            AGENT,
            Some("b"),
        ))
        .await
        .unwrap_err();
    assert_eq!(stolen.code(), Code::PermissionDenied);
    assert!(
        stolen
            .message()
            .contains("agent b does not hold attempt 1 of task"),
        "{stolen}"
    );
    let request = FinishTaskRequest {
        task_id: task.task_id,
        attempt: 1,
        status: "success".into(),
        reason: String::new(),
        not_retryable: false,
    };
    let stolen = client
        .finish_task(call(request, AGENT, Some("b")))
        .await
        .unwrap_err();
    assert_eq!(stolen.code(), Code::PermissionDenied);

    // Steps are recorded for the holder only, with known statuses only.
    let step = |status: &str| StepUpdate {
        task_id: task.task_id,
        attempt: 1,
        index: 0,
        name: "step 1".into(),
        status: status.into(),
        exit_code: Some(0),
        started_at_ms: Some(Utc::now().timestamp_millis()),
        finished_at_ms: Some(Utc::now().timestamp_millis()),
    };
    let bad = client
        .update_step(call(step("great"), AGENT, Some("a")))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let stolen = client
        .update_step(call(step("success"), AGENT, Some("b")))
        .await
        .unwrap_err();
    assert_eq!(stolen.code(), Code::PermissionDenied);
    client
        .update_step(call(step("success"), AGENT, Some("a")))
        .await
        .unwrap();

    // The same chunk twice (a resend after a reconnect) is stored once.
    for _ in 0..2 {
        let ack = client
            .append_logs(call(
                futures_util::stream::iter(vec![
                    chunk.clone(),
                    LogChunk {
                        task_id: task.task_id,
                        attempt: 1,
                        seq: 1,
                        data: b"second line\n".to_vec(),
                    },
                ]),
                AGENT,
                Some("a"),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.stored_through.get(&task.task_id), Some(&1));
    }
    finish(&mut client, "a", task.task_id, "success").await;
    assert_eq!(server.finished_run("logs").await["status"], "success");
    let console = server
        .get("/api/v1/jobs/logs/runs/1/tasks/build/results/console")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(console, "hello from a\nsecond line\n");
    let run = server.json("/api/v1/jobs/logs/runs/1").await;
    assert_eq!(run["tasks"][0]["steps"][0]["status"], "success", "{run}");
    assert_eq!(run["tasks"][0]["steps"][0]["exit_code"], 0, "{run}");
}

#[tokio::test]
async fn shutdown_ends_open_sessions_and_both_servers() {
    let mut server = Harness::start(Duration::from_secs(15)).await;
    let mut client = server.client().await;
    let mut stream = session(&mut client, "a", &["linux"]).await;
    server.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the session outlived the server");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    let served = tokio::time::timeout(Duration::from_secs(5), server.server.take().unwrap())
        .await
        .expect("serve did not return after shutdown");
    served.unwrap().unwrap();
}

#[tokio::test]
async fn cancel_over_rest_is_pushed_within_a_second() {
    let server = Harness::start(Duration::from_secs(15)).await;
    server.job("slow", ONE_TASK).await;
    let mut client = server.client().await;
    let mut stream = session(&mut client, "a", &["linux"]).await;
    server.trigger("slow").await;
    let task = assignment(&mut stream).await;

    let started = Instant::now();
    let response = server
        .http
        .post(format!("{}/api/v1/jobs/slow/runs/1/cancel", server.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    match next(&mut stream, Duration::from_secs(1)).await {
        server_message::Kind::Cancel(cancel) => assert_eq!(cancel.task_id, task.task_id),
        other => panic!("expected a cancel, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // The heartbeat says so too.
    let answer = client
        .heartbeat(call(
            HeartbeatRequest {
                tasks: vec![TaskAttempt {
                    task_id: task.task_id,
                    attempt: 1,
                }],
                draining: false,
            },
            AGENT,
            Some("a"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.cancel_task_ids, vec![task.task_id]);
    finish(&mut client, "a", task.task_id, "cancelled").await;
    assert_eq!(server.finished_run("slow").await["status"], "cancelled");
}

#[tokio::test]
async fn artifacts_and_junit_reports_are_stored() {
    let server = Harness::start(Duration::from_secs(15)).await;
    server.job("results", ONE_TASK).await;
    let mut client = server.client().await;
    let mut stream = session(&mut client, "a", &["linux"]).await;
    server.trigger("results").await;
    let task = assignment(&mut stream).await;

    // Two files in one call, the first in several pieces.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut chunks: Vec<ArtifactChunk> = big
        .chunks(64 * 1024)
        .enumerate()
        .map(|(i, piece)| ArtifactChunk {
            task_id: task.task_id,
            attempt: 1,
            path: if i == 0 {
                "out/data.bin".into()
            } else {
                String::new()
            },
            data: piece.to_vec(),
        })
        .collect();
    chunks.push(ArtifactChunk {
        task_id: task.task_id,
        attempt: 1,
        path: "report.json".into(),
        data: b"{\"ok\":true}".to_vec(),
    });
    client
        .upload_artifact(call(futures_util::stream::iter(chunks), AGENT, Some("a")))
        .await
        .unwrap();
    // A path leaving the task's place is refused.
    let escape = client
        .upload_artifact(call(
            futures_util::stream::iter(vec![ArtifactChunk {
                task_id: task.task_id,
                attempt: 1,
                path: "../../x".into(),
                data: b"x".to_vec(),
            }]),
            AGENT,
            Some("a"),
        ))
        .await
        .unwrap_err();
    assert_eq!(escape.code(), Code::InvalidArgument);

    for (name, tests) in [("a.xml", "t1"), ("b.xml", "t2")] {
        let xml = format!(
            "<testsuite name=\"{name}\" tests=\"1\"><testcase classname=\"c\" name=\"{tests}\"/></testsuite>"
        );
        client
            .upload_report(call(
                report(task.task_id, name, xml.as_bytes()),
                AGENT,
                Some("a"),
            ))
            .await
            .unwrap();
    }
    // Just under the limit, in many pieces: kept whole.
    let cases = (REPORT_LIMIT as usize - 100) / 32;
    let mut suite = String::from("<testsuite name=\"big\">");
    for i in 0..cases {
        suite.push_str(&format!("<testcase name=\"case-{i:08}\"/>"));
    }
    suite.push_str("</testsuite>");
    assert!(
        suite.len() as u64 <= REPORT_LIMIT && suite.len() > 900_000,
        "{}",
        suite.len()
    );
    client
        .upload_report(call(
            report(task.task_id, "big.xml", suite.as_bytes()),
            AGENT,
            Some("a"),
        ))
        .await
        .unwrap();
    // Over it: refused, saying which file and the limit.
    let over = format!("{suite}{}", " ".repeat(200));
    let refused = client
        .upload_report(call(
            report(task.task_id, "over.xml", over.as_bytes()),
            AGENT,
            Some("a"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("over.xml") && refused.message().contains("--max-report-size"),
        "{refused:?}"
    );
    let bad = client
        .upload_report(call(
            report(task.task_id, "bad.xml", b"<not junit"),
            AGENT,
            Some("a"),
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    finish(&mut client, "a", task.task_id, "success").await;

    let prefix = "/api/v1/jobs/results/runs/1/tasks/build/results";
    let response = server
        .get(&format!("{prefix}/artifacts/out/data.bin"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), big);
    let response = server.get(&format!("{prefix}/artifacts/report.json")).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "{\"ok\":true}");

    let junit = server.json(&format!("{prefix}/junit")).await;
    let text = junit.to_string();
    assert!(text.contains("t1") && text.contains("t2"), "{junit}");
    assert!(
        text.contains(&format!("case-{:08}", cases - 1)),
        "the big report's last case"
    );
    assert!(!text.contains("over.xml"));
}

/// The report limit of the harness's server.
const REPORT_LIMIT: u64 = 1024 * 1024;

/// A report upload: `content` in 64 KiB pieces, the first naming the file.
fn report(
    task_id: i64,
    path: &str,
    content: &[u8],
) -> futures_util::stream::Iter<std::vec::IntoIter<ReportChunk>> {
    let pieces: Vec<ReportChunk> = content
        .chunks(64 * 1024)
        .enumerate()
        .map(|(i, data)| ReportChunk {
            task_id,
            attempt: 1,
            kind: if i == 0 {
                "junit".into()
            } else {
                String::new()
            },
            path: if i == 0 { path.into() } else { String::new() },
            data: data.to_vec(),
        })
        .collect();
    futures_util::stream::iter(pieces)
}

#[tokio::test]
async fn a_lease_not_renewed_expires_and_the_task_is_retried_then_lost() {
    let server = Harness::start(Duration::from_secs(1)).await;
    server
        .job(
            "flaky",
            "version: 1\ntasks:\n  build:\n    retry: 1\n    steps: [{run: 'true'}]\n",
        )
        .await;
    let mut client = server.client().await;
    let mut first = session(&mut client, "first", &["linux"]).await;
    server.trigger("flaky").await;
    let task = assignment(&mut first).await;
    assert_eq!(task.attempt, 1);
    // Renewing keeps it: after twice the lease it is still ours.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let answer = client
            .heartbeat(call(
                HeartbeatRequest {
                    tasks: vec![TaskAttempt {
                        task_id: task.task_id,
                        attempt: 1,
                    }],
                    draining: false,
                },
                AGENT,
                Some("first"),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.lost_task_ids.is_empty());
    }
    // "first" reconnects draining (so it is not offered the retry itself),
    // still running the task, then goes silent; a second agent shows up and
    // gets the retry once the lease expires.
    drop(first);
    let mut first = {
        let hello = SessionRequest {
            name: "first".into(),
            labels: vec!["linux".into()],
            capacity: 1,
            draining: true,
            running: vec![TaskAttempt {
                task_id: task.task_id,
                attempt: 1,
            }],
            ..Default::default()
        };
        client
            .session(call(hello, AGENT, Some("first")))
            .await
            .unwrap()
            .into_inner()
    };
    let mut second = session(&mut client, "second", &["linux"]).await;
    let retry = assignment(&mut second).await;
    assert_eq!(retry.task_id, task.task_id);
    assert_eq!(retry.attempt, 2);
    // The first learns it lost the task, from the stream and the heartbeat.
    match next(&mut first, Duration::from_secs(3)).await {
        server_message::Kind::Cancel(cancel) => assert_eq!(cancel.task_id, task.task_id),
        other => panic!("expected a cancel, got {other:?}"),
    }
    let answer = client
        .heartbeat(call(
            HeartbeatRequest {
                tasks: vec![TaskAttempt {
                    task_id: task.task_id,
                    attempt: 1,
                }],
                draining: true,
            },
            AGENT,
            Some("first"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.lost_task_ids, vec![task.task_id]);
    let late = client
        .finish_task(call(
            FinishTaskRequest {
                task_id: task.task_id,
                attempt: 1,
                status: "success".into(),
                reason: String::new(),
                not_retryable: false,
            },
            AGENT,
            Some("first"),
        ))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::PermissionDenied);

    // The second goes silent too: no retry is left, the task ends "agent lost".
    let run = server.finished_run("flaky").await;
    assert_eq!(run["status"], "error", "{run}");
    let reason = run["tasks"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("agent lost"), "{run}");
    drop(second);
}

#[tokio::test]
async fn a_new_session_replaces_the_old_and_a_vanished_holder_is_lost() {
    let server = Harness::start(Duration::from_secs(15)).await;
    server.job("one", ONE_TASK).await;
    let mut client = server.client().await;
    let mut old = session(&mut client, "dup", &["linux"]).await;
    let mut new = session(&mut client, "dup", &["linux"]).await;
    let ended = tokio::time::timeout(Duration::from_secs(2), old.message())
        .await
        .expect("the replaced session did not end");
    assert!(matches!(ended, Ok(None)), "{ended:?}");

    server.trigger("one").await;
    assignment(&mut new).await;
    // The agent vanishes while it holds the task: listed as lost.
    drop(new);
    let started = Instant::now();
    loop {
        let agents = server.json("/api/v1/agents").await;
        if agents[0]["state"] == "lost" {
            assert_eq!(agents[0]["name"], "dup");
            assert_eq!(agents[0]["running_tasks"], json!(["build"]));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{agents}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_assignment_the_agent_never_read_goes_back_to_the_queue_at_once() {
    // A lease far longer than the test: only the give-back can free the task.
    let server = Harness::start(Duration::from_secs(60)).await;
    server.job("one", ONE_TASK).await;
    let mut client = server.client().await;
    let unread = session(&mut client, "leaver", &["linux"]).await;
    server.trigger("one").await;
    let started = Instant::now();
    while server.json("/api/v1/jobs/one/runs/1").await["tasks"][0]["status"] != "running" {
        assert!(started.elapsed() < Duration::from_secs(5), "never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It leaves without reading its stream (as on SIGTERM right after the
    // claim) and says, draining, that it runs nothing.
    drop(unread);
    let hello = SessionRequest {
        name: "leaver".into(),
        labels: vec!["linux".into()],
        capacity: 2,
        draining: true,
        ..Default::default()
    };
    let _farewell = client
        .session(call(hello, AGENT, Some("leaver")))
        .await
        .unwrap()
        .into_inner();
    let run = server.json("/api/v1/jobs/one/runs/1").await;
    assert_eq!(run["tasks"][0]["status"], "queued", "{run}");
    assert_eq!(run["tasks"][0]["agent"], Value::Null, "{run}");
    let mut next_agent = session(&mut client, "stayer", &["linux"]).await;
    let task = assignment(&mut next_agent).await;
    assert_eq!(task.attempt, 1, "a give-back is not a retry");
    finish(&mut client, "stayer", task.task_id, "success").await;
    let run = server.finished_run("one").await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["tasks"][0]["agent"], "stayer", "{run}");
}

/// A task retried onto the agent that lost it: whatever the lost attempt
/// still sends — output, a step, an artifact, a report, its end — is
/// refused and changes nothing; the new attempt reports as usual.
#[tokio::test]
async fn a_stale_attempt_changes_nothing_after_a_retry_on_the_same_agent() {
    let server = Harness::start(Duration::from_secs(1)).await;
    server
        .job(
            "flaky",
            "version: 1\ntasks:\n  build:\n    retry: 1\n    steps: [{run: 'true'}]\n",
        )
        .await;
    let mut client = server.client().await;
    let mut solo = session(&mut client, "solo", &["linux"]).await;
    server.trigger("flaky").await;
    let first = assignment(&mut solo).await;
    assert_eq!(first.attempt, 1);
    // No heartbeat: the lease runs out and the task comes back, to the
    // same agent, as attempt 2.
    let second = loop {
        match next(&mut solo, Duration::from_secs(5)).await {
            server_message::Kind::Assignment(a) => break a,
            server_message::Kind::Cancel(_) => continue,
        }
    };
    assert_eq!((second.task_id, second.attempt), (first.task_id, 2));
    let task_id = first.task_id;
    fn denied<T>(result: Result<tonic::Response<T>, tonic::Status>, what: &str) {
        let status = result.map(|_| ()).unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status}");
        assert!(status.message().contains("attempt 1"), "{what}: {status}");
    }
    let late_log = LogChunk {
        task_id,
        attempt: 1,
        seq: 0,
        data: b"late output of attempt 1\n".to_vec(),
    };
    denied(
        client
            .append_logs(call(
                futures_util::stream::iter(vec![late_log]),
                AGENT,
                Some("solo"),
            ))
            .await,
        "log",
    );
    let late_step = StepUpdate {
        task_id,
        attempt: 1,
        index: 0,
        name: "true".into(),
        status: "failure".into(),
        exit_code: Some(1),
        started_at_ms: None,
        finished_at_ms: None,
    };
    denied(
        client
            .update_step(call(late_step, AGENT, Some("solo")))
            .await,
        "step",
    );
    let late_artifact = ArtifactChunk {
        task_id,
        attempt: 1,
        path: "stale.txt".into(),
        data: b"from attempt 1".to_vec(),
    };
    denied(
        client
            .upload_artifact(call(
                futures_util::stream::iter(vec![late_artifact]),
                AGENT,
                Some("solo"),
            ))
            .await,
        "artifact",
    );
    let late_finish = FinishTaskRequest {
        task_id,
        attempt: 1,
        status: "failure".into(),
        reason: "late".into(),
        not_retryable: false,
    };
    denied(
        client
            .finish_task(call(late_finish, AGENT, Some("solo")))
            .await,
        "finish",
    );
    // Nothing of it shows: the task runs its second attempt.
    let run = server.json("/api/v1/jobs/flaky/runs/1").await;
    assert_eq!(run["tasks"][0]["status"], "running", "{run}");
    assert_eq!(run["tasks"][0]["attempt"], 2, "{run}");
    let results = server
        .json("/api/v1/jobs/flaky/runs/1/tasks/build/results")
        .await;
    assert!(!results.to_string().contains("stale.txt"), "{results}");

    // The current attempt reports and ends the task.
    let log = LogChunk {
        task_id,
        attempt: 2,
        seq: 0,
        data: b"attempt two\n".to_vec(),
    };
    client
        .append_logs(call(
            futures_util::stream::iter(vec![log]),
            AGENT,
            Some("solo"),
        ))
        .await
        .unwrap();
    let finish = FinishTaskRequest {
        task_id,
        attempt: 2,
        status: "success".into(),
        reason: String::new(),
        not_retryable: false,
    };
    client
        .finish_task(call(finish, AGENT, Some("solo")))
        .await
        .unwrap();
    let run = server.finished_run("flaky").await;
    assert_eq!(run["status"], "success", "{run}");
    let console = server
        .get("/api/v1/jobs/flaky/runs/1/tasks/build/results/console?attempt=2")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(console, "attempt two\n");
    // A call with no attempt at all is refused outright.
    let unnamed = FinishTaskRequest {
        task_id,
        status: "success".into(),
        ..Default::default()
    };
    let status = client
        .finish_task(call(unnamed, AGENT, Some("solo")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
}

/// Agent `a`, holding its own token, tries everything against agent `b`'s
/// task and beyond its own grant; then an admin removes it. Every attempt
/// is refused and changes nothing the API shows.
#[tokio::test]
async fn a_hostile_agent_is_refused_everything_and_changes_nothing() {
    let server = Harness::start(Duration::from_secs(15)).await;
    server.job("victim", ONE_TASK).await;
    let mut client = server.client().await;
    let mut b = session(&mut client, "b", &["linux"]).await;
    server.trigger("victim").await;
    let task = assignment(&mut b).await;
    let task_id = task.task_id;
    let before = server.json("/api/v1/jobs/victim/runs/1").await;

    fn refused<T>(result: Result<tonic::Response<T>, tonic::Status>, what: &str) {
        let status = result.map(|_| ()).unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status}");
    }
    // With its own token, as itself, about b's task.
    let log = LogChunk {
        task_id,
        attempt: 1,
        seq: 0,
        data: b"injected\n".to_vec(),
    };
    refused(
        client
            .append_logs(call(
                futures_util::stream::iter(vec![log]),
                AGENT,
                Some("a"),
            ))
            .await,
        "logs",
    );
    let step = StepUpdate {
        task_id,
        attempt: 1,
        index: 0,
        name: "true".into(),
        status: "failure".into(),
        ..Default::default()
    };
    refused(
        client.update_step(call(step, AGENT, Some("a"))).await,
        "step",
    );
    let artifact = ArtifactChunk {
        task_id,
        attempt: 1,
        path: "planted.txt".into(),
        data: b"x".to_vec(),
    };
    refused(
        client
            .upload_artifact(call(
                futures_util::stream::iter(vec![artifact]),
                AGENT,
                Some("a"),
            ))
            .await,
        "artifact",
    );
    let finish = FinishTaskRequest {
        task_id,
        attempt: 1,
        status: "success".into(),
        ..Default::default()
    };
    refused(
        client
            .finish_task(call(finish.clone(), AGENT, Some("a")))
            .await,
        "finish",
    );
    // With its own token, claiming to be b.
    refused(
        client
            .finish_task(call(finish, &agent_token("a"), Some("b")))
            .await,
        "finish as b",
    );
    let as_b = SessionRequest {
        name: "b".into(),
        capacity: 1,
        ..Default::default()
    };
    refused(
        client.session(call(as_b, &agent_token("a"), None)).await,
        "session as b",
    );
    // Nothing of it shows.
    assert_eq!(server.json("/api/v1/jobs/victim/runs/1").await, before);
    let console = server
        .get("/api/v1/jobs/victim/runs/1/tasks/build/results/console")
        .await
        .text()
        .await
        .unwrap();
    assert!(!console.contains("injected"), "{console}");

    // Beyond its grant: labels and capacity the admin did not give.
    let made: Value = server
        .http
        .post(format!("{}/api/v1/agent-tokens", server.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "limited", "labels": ["linux"], "max_capacity": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limited = made["token"].as_str().unwrap().to_string();
    for (labels, capacity, what) in [
        (vec!["linux", "gpu"], 1, "gpu"),
        (vec!["linux"], 1000, "at most 1"),
    ] {
        let hello = SessionRequest {
            name: "limited".into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            capacity,
            ..Default::default()
        };
        let status = client
            .session(call(hello, &limited, None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status}");
        assert!(status.message().contains(what), "{status}");
    }
    // Within it, it connects.
    let hello = SessionRequest {
        name: "limited".into(),
        labels: vec!["linux".into()],
        capacity: 1,
        ..Default::default()
    };
    client.session(call(hello, &limited, None)).await.unwrap();

    // An admin removes b: its token stops working at once, its session
    // ends, and its task goes back to the queue.
    let removed = server
        .http
        .delete(format!("{}/api/v1/agents/b", server.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), reqwest::StatusCode::NO_CONTENT);
    let ended = tokio::time::timeout(Duration::from_secs(5), b.message())
        .await
        .expect("the stream ends");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    let beat = HeartbeatRequest {
        tasks: vec![TaskAttempt {
            task_id,
            attempt: 1,
        }],
        draining: false,
    };
    let status = client
        .heartbeat(call(beat, AGENT, Some("b")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert!(status.message().contains("revoked"), "{status}");
    let run = server.json("/api/v1/jobs/victim/runs/1").await;
    assert_eq!(run["tasks"][0]["status"], "error", "{run}");
    assert!(
        run["tasks"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("agent lost"),
        "{run}"
    );
}

#[tokio::test]
async fn a_heartbeat_listing_more_tasks_than_an_agent_can_run_is_refused() {
    let server = Harness::start(Duration::from_secs(15)).await;
    let mut client = server.client().await;
    let beat = HeartbeatRequest {
        tasks: (1..=65)
            .map(|task_id| TaskAttempt {
                task_id,
                attempt: 1,
            })
            .collect(),
        draining: false,
    };
    let status = client
        .heartbeat(call(beat, AGENT, Some("a")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("at most 64"), "{status}");
}
