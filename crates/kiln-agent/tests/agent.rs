//! The agent against a small fake server that follows `agent.proto`'s
//! contract: sessions, sequenced idempotent log appends, step updates,
//! uploads and the end of tasks. The fake runs on a runtime of its own, so
//! "the server goes away" drops every connection at once, as a crash would.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::Stream;
use kiln_agent::{AgentConfig, LOG_BUDGET, run_agent};
use kiln_exec::CancellationToken;
use kiln_exec::process::ProcessExecutor;
use kiln_proto::v1::agent_server::{Agent, AgentServer};
use kiln_proto::v1::{
    Ack, ArtifactChunk, Assignment, Cancel, FinishTaskRequest, HeartbeatRequest, HeartbeatResponse,
    LogAck, LogChunk, ReportChunk, Secret, ServerMessage, SessionRequest, StepUpdate,
    server_message,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

const TOKEN: &str = "agent-secret-token";
const AGENT: &str = "agent-1";

#[derive(Default)]
struct State {
    /// Each session opened: the request, `authorization` and `x-kiln-agent`.
    sessions: Vec<(SessionRequest, String, String)>,
    session: Option<mpsc::UnboundedSender<Result<ServerMessage, Status>>>,
    /// Stored log chunks per task, by seq.
    logs: HashMap<i64, BTreeMap<i64, Vec<u8>>>,
    /// Problems the fake saw: gaps in seq, a chunk resent with other data.
    violations: Vec<String>,
    duplicates: usize,
    steps: Vec<StepUpdate>,
    artifacts: HashMap<String, Vec<u8>>,
    /// Each report as one chunk: the first's names, all the data.
    reports: Vec<ReportChunk>,
    finished: Vec<(FinishTaskRequest, Instant)>,
    heartbeats: Vec<HeartbeatRequest>,
    /// While set, appended chunks are stored but never acknowledged.
    hold_acks: bool,
    /// Tasks the next heartbeat answer says the agent lost.
    lose: Vec<i64>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("fake state lock")
    }

    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let agent = request
            .metadata()
            .get("x-kiln-agent")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {TOKEN}")) || agent != Some(AGENT) {
            return Err(Status::unauthenticated("bad agent credentials"));
        }
        Ok(())
    }

    fn send(&self, kind: server_message::Kind) {
        let state = self.state();
        let session = state.session.as_ref().expect("a session is open");
        session
            .send(Ok(ServerMessage { kind: Some(kind) }))
            .expect("the session is alive");
    }

    fn log_text(&self, task_id: i64) -> String {
        let state = self.state();
        let chunks = state.logs.get(&task_id).cloned().unwrap_or_default();
        let mut text = Vec::new();
        for (index, (seq, data)) in chunks.into_iter().enumerate() {
            assert_eq!(seq, index as i64, "log chunks are stored without gaps");
            text.extend(data);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn finish_of(&self, task_id: i64) -> Option<(FinishTaskRequest, Instant)> {
        let state = self.state();
        let mut finishes = state.finished.iter().filter(|(f, _)| f.task_id == task_id);
        finishes.next().cloned()
    }

    async fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.state()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for Fake {
    type SessionStream = SessionStream;

    /// The agent's token is its own already: nothing to register.
    async fn register(
        &self,
        request: Request<kiln_proto::v1::RegisterRequest>,
    ) -> Result<Response<kiln_proto::v1::RegisterResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(kiln_proto::v1::RegisterResponse::default()))
    }

    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<SessionStream>, Status> {
        self.check(&request)?;
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (auth, agent) = (header("authorization"), header("x-kiln-agent"));
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut state = self.state();
        state.sessions.push((request.into_inner(), auth, agent));
        state.session = Some(sender);
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|message| (message, receiver))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.check(&request)?;
        let mut state = self.state();
        state.heartbeats.push(request.into_inner());
        Ok(Response::new(HeartbeatResponse {
            lost_task_ids: std::mem::take(&mut state.lose),
            cancel_task_ids: Vec::new(),
        }))
    }

    async fn append_logs(
        &self,
        request: Request<Streaming<LogChunk>>,
    ) -> Result<Response<LogAck>, Status> {
        self.check(&request)?;
        let mut chunks = request.into_inner();
        let mut ack = LogAck::default();
        while let Some(chunk) = chunks.message().await? {
            let mut state = self.state();
            let state = &mut *state;
            let stored = state.logs.entry(chunk.task_id).or_default();
            let through = stored.keys().next_back().copied().unwrap_or(-1);
            if chunk.seq <= through {
                state.duplicates += 1;
                if stored.get(&chunk.seq) != Some(&chunk.data) {
                    state
                        .violations
                        .push(format!("chunk {} resent with other data", chunk.seq));
                }
            } else if chunk.seq == through + 1 {
                stored.insert(chunk.seq, chunk.data);
            } else {
                state
                    .violations
                    .push(format!("chunk {} after {through}: a gap", chunk.seq));
            }
            let through = stored.keys().next_back().copied().unwrap_or(-1);
            ack.stored_through.insert(chunk.task_id, through);
        }
        if self.state().hold_acks {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(ack))
    }

    async fn update_step(&self, request: Request<StepUpdate>) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        self.state().steps.push(request.into_inner());
        Ok(Response::new(Ack {}))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<ArtifactChunk>>,
    ) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        let mut chunks = request.into_inner();
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        while let Some(chunk) = chunks.message().await? {
            if !chunk.path.is_empty() {
                files.push((chunk.path.clone(), Vec::new()));
            }
            let Some((_, data)) = files.last_mut() else {
                return Err(Status::invalid_argument("the first chunk must name a file"));
            };
            data.extend(chunk.data);
        }
        self.state().artifacts.extend(files);
        Ok(Response::new(Ack {}))
    }

    async fn upload_report(
        &self,
        request: Request<Streaming<ReportChunk>>,
    ) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        let mut chunks = request.into_inner();
        let Some(mut report) = chunks.message().await? else {
            return Err(Status::invalid_argument("no report"));
        };
        while let Some(chunk) = chunks.message().await? {
            report.data.extend(chunk.data);
        }
        self.state().reports.push(report);
        Ok(Response::new(Ack {}))
    }

    async fn finish_task(
        &self,
        request: Request<FinishTaskRequest>,
    ) -> Result<Response<Ack>, Status> {
        self.check(&request)?;
        self.state()
            .finished
            .push((request.into_inner(), Instant::now()));
        Ok(Response::new(Ack {}))
    }
}

/// The fake server on a runtime of its own; dropping it drops every
/// connection, like a crashed server.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    address: SocketAddr,
}

impl Running {
    fn start(fake: Fake, address: SocketAddr) -> Running {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, bound_at) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("fake server runtime");
            runtime.block_on(async move {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                // Coming back on the same port right after a crash.
                socket.set_reuseaddr(true).expect("SO_REUSEADDR");
                socket.bind(address).expect("bind the fake server");
                let listener = socket.listen(64).expect("listen");
                bound
                    .send(listener.local_addr().expect("local address"))
                    .expect("report the address");
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(AgentServer::new(fake))
                        .serve_with_incoming(incoming),
                );
                let _ = stopped.await;
            });
            runtime.shutdown_background();
        });
        let address = bound_at.recv().expect("the fake server started");
        Running {
            stop: Some(stop),
            thread: Some(thread),
            address,
        }
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(address: SocketAddr, work_dir: &std::path::Path) -> AgentConfig {
    let executor = Arc::new(ProcessExecutor {
        inherit_env: true,
        work_root: Some(work_dir.to_path_buf()),
        isolation: Default::default(),
    });
    let mut config = AgentConfig::new(
        format!("http://{address}"),
        TOKEN,
        AGENT,
        executor,
        work_dir,
    );
    config.labels = vec!["linux".into(), "fast".into()];
    config.capacity = 2;
    config
}

/// An assignment of a freestyle task whose one step runs `script`.
fn assignment(task_id: i64, script: &str, extra: &str) -> Assignment {
    let mut yaml = String::from(
        "version: 1\ntasks:\n  build:\n    steps:\n      - name: main\n        run: |\n",
    );
    for line in script.lines() {
        yaml.push_str(&format!("          {line}\n"));
    }
    yaml.push_str(extra);
    let pipeline = kiln_pipeline::parse(".kiln.yml", &yaml).expect("a valid pipeline");
    let task = pipeline.tasks.into_iter().next().expect("one task");
    Assignment {
        task_id,
        task: Some((&task).into()),
        job: "demo".into(),
        run_number: 7,
        event: "manual".into(),
        lease_seconds: 3,
        attempt: 1,
        ..Assignment::default()
    }
}

struct Harness {
    fake: Fake,
    server: Running,
    shutdown: CancellationToken,
    agent: tokio::task::JoinHandle<Result<(), kiln_agent::AgentError>>,
    /// The agent's `log_held_peak`.
    log_held_peak: Arc<AtomicUsize>,
    _work: tempfile::TempDir,
}

async fn start() -> Harness {
    let fake = Fake::default();
    let server = Running::start(fake.clone(), "127.0.0.1:0".parse().expect("address"));
    let work = tempfile::tempdir().expect("work dir");
    let shutdown = CancellationToken::new();
    let config = config(server.address, work.path());
    let log_held_peak = config.log_held_peak.clone();
    let agent = tokio::spawn(run_agent(config, shutdown.clone()));
    fake.wait_for("the session", Duration::from_secs(10), |s| {
        s.session.is_some()
    })
    .await;
    Harness {
        fake,
        server,
        shutdown,
        agent,
        log_held_peak,
        _work: work,
    }
}

impl Harness {
    /// Kills the fake server and starts it again on the same port, now
    /// acknowledging what it stores, and waits for the task `task_id` to end.
    async fn restart_acknowledging(&mut self, task_id: i64, within: Duration) -> FinishTaskRequest {
        let address = self.server.address;
        self.server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.fake.state().hold_acks = false;
        self.fake.state().session = None;
        self.server = Running::start(self.fake.clone(), address);
        self.fake
            .wait_for("the end of the task", within, |s| !s.finished.is_empty())
            .await;
        let (finish, _) = self
            .fake
            .finish_of(task_id)
            .unwrap_or_else(|| panic!("task {task_id} finished"));
        finish
    }
}

#[tokio::test]
async fn runs_a_freestyle_task_and_reports_everything() {
    let h = start().await;
    {
        let state = h.fake.state();
        let (session, auth, agent) = &state.sessions[0];
        assert_eq!(auth, &format!("Bearer {TOKEN}"));
        assert_eq!(agent, AGENT);
        assert_eq!(session.name, AGENT);
        assert_eq!(session.labels, vec!["linux", "fast"]);
        assert_eq!(session.capacity, 2);
        assert_eq!(session.executors, vec!["process"]);
        assert!(session.cpus >= 1.0);
        assert!(!session.draining);
        assert!(session.running.is_empty());
    }
    let mut task = assignment(
        1,
        "echo hello from $KILN_AGENT\necho token=$API_TOKEN\necho built > out.txt\necho \"<testsuite name=\\\"$API_TOKEN $(printf %s $API_TOKEN | base64)\\\" tests=\\\"0\\\"/>\" > report.xml",
        "    secrets: [API_TOKEN]\n    artifacts:\n      paths: [out.txt]\n    reports:\n      junit: [report.xml]\n",
    );
    task.secrets = vec![Secret {
        name: "API_TOKEN".into(),
        value: "s3cr3t-value".into(),
    }];
    h.fake.send(server_message::Kind::Assignment(task));
    h.fake
        .wait_for("the end of the task", Duration::from_secs(30), |s| {
            !s.finished.is_empty()
        })
        .await;

    let (finish, _) = h.fake.finish_of(1).expect("task 1 finished");
    assert_eq!(finish.status, "success", "reason: {}", finish.reason);
    let log = h.fake.log_text(1);
    assert!(log.contains("hello from agent-1\n"), "log: {log}");
    assert!(!log.contains("s3cr3t-value"), "secrets are masked: {log}");
    assert!(log.contains("token="), "log: {log}");
    {
        let state = h.fake.state();
        assert!(state.violations.is_empty(), "{:?}", state.violations);
        let steps: Vec<(i64, &str)> = state
            .steps
            .iter()
            .map(|s| (s.index, s.status.as_str()))
            .collect();
        // A step that starts and ends within one send is reported once.
        assert!(
            steps == [(0, "running"), (0, "success")] || steps == [(0, "success")],
            "{steps:?}"
        );
        assert!(
            state
                .steps
                .iter()
                .all(|s| s.task_id == 1 && s.name == "main")
        );
        let last = state.steps.last().expect("a step update");
        assert_eq!(last.exit_code, Some(0));
        assert!(last.started_at_ms.is_some() && last.finished_at_ms.is_some());
        assert_eq!(
            state.artifacts.get("out.txt").map(|d| d.as_slice()),
            Some(&b"built\n"[..])
        );
        assert_eq!(state.reports.len(), 1);
        assert_eq!(state.reports[0].kind, "junit");
        assert_eq!(state.reports[0].path, "report.xml");
        // The report is masked as the log is, encoded forms included.
        let report = String::from_utf8_lossy(&state.reports[0].data);
        assert!(report.contains("name=\"*** ***\""), "report: {report}");
    }
    h.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), h.agent)
        .await
        .expect("the agent exits when idle and shut down");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    drop(h.server);
}

#[tokio::test]
async fn a_repository_password_is_never_shown() {
    let h = start().await;
    let mut task = assignment(9, "true", "");
    // Nothing listens there: the fetch fails, after saying what it fetches.
    task.repository = "http://deploy:pa55-w0rd@127.0.0.1:9/app.git".into();
    task.sha = "0123456789abcdef0123456789abcdef01234567".into();
    h.fake.send(server_message::Kind::Assignment(task));
    h.fake
        .wait_for("the end of the task", Duration::from_secs(60), |s| {
            !s.finished.is_empty()
        })
        .await;
    let (finish, _) = h.fake.finish_of(9).expect("task 9 finished");
    let log = h.fake.log_text(9);
    assert!(
        log.contains("--- fetching http://***@127.0.0.1:9/app.git at 0123456"),
        "log: {log}"
    );
    for shown in [&log, &finish.reason] {
        assert!(!shown.contains("pa55-w0rd"), "{shown}");
    }
    h.shutdown.cancel();
    drop(h.server);
}

#[tokio::test]
async fn cancel_stops_a_task_within_a_second() {
    let h = start().await;
    h.fake.send(server_message::Kind::Assignment(assignment(
        2, "sleep 30", "",
    )));
    h.fake
        .wait_for("the step to start", Duration::from_secs(10), |s| {
            s.steps
                .iter()
                .any(|s| s.task_id == 2 && s.status == "running")
        })
        .await;
    // Let the shell really start sleeping.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cancelled_at = Instant::now();
    h.fake.send(server_message::Kind::Cancel(Cancel {
        task_id: 2,
        reason: "cancelled by a user".into(),
    }));
    h.fake
        .wait_for("the end of the task", Duration::from_secs(10), |s| {
            !s.finished.is_empty()
        })
        .await;
    let (finish, at) = h.fake.finish_of(2).expect("task 2 finished");
    assert_eq!(finish.status, "cancelled");
    // The process is gone within a second; reporting the end takes a round
    // trip or two more on a busy machine.
    let took = at - cancelled_at;
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    {
        let state = h.fake.state();
        assert!(
            state
                .steps
                .iter()
                .any(|s| s.task_id == 2 && s.status == "cancelled")
        );
    }
    h.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), h.agent).await;
}

#[tokio::test]
async fn reconnects_and_resends_unacknowledged_chunks() {
    let mut h = start().await;
    h.fake.state().hold_acks = true;
    let script = "for i in $(seq 1 30); do echo line $i; sleep 0.1; done";
    h.fake
        .send(server_message::Kind::Assignment(assignment(3, script, "")));
    h.fake
        .wait_for("some output stored", Duration::from_secs(10), |s| {
            s.logs.get(&3).is_some_and(|l| !l.is_empty())
        })
        .await;
    // The server crashes with chunks stored but not acknowledged, and comes
    // back on the same port.
    let finish = h.restart_acknowledging(3, Duration::from_secs(30)).await;
    assert_eq!(finish.status, "success", "reason: {}", finish.reason);
    let log = h.fake.log_text(3);
    let expected: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    assert!(log.contains(&expected), "every line once, in order: {log}");
    {
        let state = h.fake.state();
        assert!(state.violations.is_empty(), "{:?}", state.violations);
        assert!(state.duplicates > 0, "unacknowledged chunks were resent");
        assert!(state.sessions.len() >= 2, "the agent reconnected");
        assert!(
            state
                .sessions
                .iter()
                .skip(1)
                .any(|(s, _, _)| ids(&s.running) == vec![3]),
            "the new session names the running task"
        );
    }
    h.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), h.agent).await;
}

#[tokio::test]
async fn shutdown_drains_running_tasks_then_returns() {
    let h = start().await;
    h.fake.send(server_message::Kind::Assignment(assignment(
        4,
        "sleep 1\necho finished",
        "",
    )));
    h.fake
        .wait_for("the step to start", Duration::from_secs(10), |s| {
            s.steps
                .iter()
                .any(|s| s.task_id == 4 && s.status == "running")
        })
        .await;
    h.shutdown.cancel();
    h.fake
        .wait_for("a draining session", Duration::from_secs(10), |s| {
            s.sessions.iter().any(|(s, _, _)| s.draining)
        })
        .await;
    assert!(h.fake.finish_of(4).is_none(), "the task still runs");
    let ended = tokio::time::timeout(Duration::from_secs(20), h.agent)
        .await
        .expect("the agent returns once the task is done");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    let (finish, _) = h.fake.finish_of(4).expect("task 4 reported before exit");
    assert_eq!(finish.status, "success", "reason: {}", finish.reason);
    assert!(h.fake.log_text(4).contains("finished\n"));
    {
        let state = h.fake.state();
        let draining = state
            .sessions
            .iter()
            .find(|(s, _, _)| s.draining)
            .map(|(s, _, _)| ids(&s.running));
        assert_eq!(draining, Some(vec![4]));
    }
    drop(h.server);
}

#[tokio::test]
async fn an_idle_agent_says_it_leaves_before_it_returns() {
    let h = start().await;
    h.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), h.agent)
        .await
        .expect("the agent exits when idle and shut down");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    // The server learns it runs nothing, so what was sent to it but never
    // arrived can go to another agent at once.
    let farewell = h
        .fake
        .state()
        .sessions
        .iter()
        .find(|(s, _, _)| s.draining)
        .map(|(s, _, _)| ids(&s.running));
    assert_eq!(farewell, Some(vec![]));
    drop(h.server);
}

#[tokio::test]
async fn an_idle_agent_whose_server_is_gone_still_exits_on_shutdown() {
    let mut h = start().await;
    h.server.kill();
    h.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(15), h.agent)
        .await
        .expect("the agent exits without a server to say goodbye to");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test]
async fn checks_out_exactly_the_runs_commit() {
    let repo = tempfile::tempdir().expect("repo dir");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("hello.txt"), "first\n").expect("write");
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "first"]);
    let first = git(repo.path(), &["rev-parse", "HEAD"]);
    std::fs::write(repo.path().join("hello.txt"), "second\n").expect("write");
    git(repo.path(), &["commit", "-q", "-am", "second"]);

    let h = start().await;
    let mut task = assignment(5, "cat hello.txt\ntest ! -e .git && echo no-git", "");
    task.repository = repo.path().display().to_string();
    task.sha = first.clone();
    task.branch = "main".into();
    task.event = "push".into();
    h.fake.send(server_message::Kind::Assignment(task));
    h.fake
        .wait_for("the end of the task", Duration::from_secs(30), |s| {
            !s.finished.is_empty()
        })
        .await;
    let (finish, _) = h.fake.finish_of(5).expect("task 5 finished");
    assert_eq!(finish.status, "success", "reason: {}", finish.reason);
    let log = h.fake.log_text(5);
    assert!(
        log.contains("first\n"),
        "the run's commit, not the tip: {log}"
    );
    assert!(!log.contains("second"), "{log}");
    assert!(log.contains("no-git\n"), "{log}");
    h.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), h.agent).await;
}

#[tokio::test]
async fn a_task_the_heartbeat_says_is_lost_stops_unreported() {
    let h = start().await;
    h.fake.send(server_message::Kind::Assignment(assignment(
        6, "sleep 30", "",
    )));
    h.fake
        .wait_for(
            "a heartbeat naming the task",
            Duration::from_secs(10),
            |s| s.heartbeats.iter().any(|b| ids(&b.tasks) == vec![6]),
        )
        .await;
    h.fake.state().lose = vec![6];
    let seen = h.fake.state().heartbeats.len();
    // Within a heartbeat or two the task is stopped and no longer renewed.
    h.fake
        .wait_for(
            "a heartbeat without the task",
            Duration::from_secs(10),
            |s| {
                s.heartbeats
                    .iter()
                    .skip(seen + 1)
                    .any(|b| b.tasks.is_empty())
            },
        )
        .await;
    assert!(h.fake.finish_of(6).is_none(), "a lost task is not reported");
    h.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), h.agent)
        .await
        .expect("nothing is left running");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    assert!(h.fake.finish_of(6).is_none(), "a lost task is not reported");
}

#[tokio::test]
async fn a_new_attempt_of_a_task_in_hand_replaces_the_old_one() {
    let h = start().await;
    h.fake.send(server_message::Kind::Assignment(assignment(
        8, "sleep 30", "",
    )));
    h.fake
        .wait_for("the step to start", Duration::from_secs(10), |s| {
            s.steps
                .iter()
                .any(|s| s.task_id == 8 && s.status == "running")
        })
        .await;
    // The same assignment again (as after a reconnect) changes nothing.
    h.fake.send(server_message::Kind::Assignment(assignment(
        8, "sleep 30", "",
    )));
    let mut retried = assignment(8, "echo second attempt", "");
    retried.attempt = 2;
    h.fake.send(server_message::Kind::Assignment(retried));
    h.fake
        .wait_for("the end of the task", Duration::from_secs(10), |s| {
            !s.finished.is_empty()
        })
        .await;
    // Give a wrongly reported first attempt time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let state = h.fake.state();
        let ends: Vec<&str> = state
            .finished
            .iter()
            .map(|(f, _)| f.status.as_str())
            .collect();
        assert_eq!(ends, vec!["success"], "only the new attempt is reported");
    }
    h.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), h.agent)
        .await
        .expect("the first attempt was stopped");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
}

#[tokio::test]
async fn a_flooding_task_waits_for_acknowledgements_and_loses_nothing() {
    let mut h = start().await;
    // Reading pauses once the budget is reached, so each of stdout and
    // stderr may add one read (16 KiB) beyond it, plus a line of Kiln's own.
    let bound = LOG_BUDGET + 64 * 1024;
    let count = 8_000_000;
    let expected: String = (1..=count).map(|i| format!("{i}\n")).collect();
    assert!(expected.len() > 7 * LOG_BUDGET);
    h.fake.state().hold_acks = true;
    h.fake.send(server_message::Kind::Assignment(assignment(
        9,
        &format!("seq 1 {count}"),
        "",
    )));
    // The server stores what it gets but acknowledges nothing: the agent
    // holds output until the budget is full, then the task waits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.log_held_peak.load(Ordering::SeqCst) < LOG_BUDGET {
        assert!(Instant::now() < deadline, "the budget never filled up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time in which an agent without a bound would go far past it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = h.log_held_peak.load(Ordering::SeqCst);
    assert!(
        peak <= bound,
        "held {peak} bytes unacknowledged, budget {LOG_BUDGET}"
    );

    // The server goes down with output stored but unacknowledged, and comes
    // back acknowledging: the rest flows, resent where needed, once each.
    let finish = h.restart_acknowledging(9, Duration::from_secs(60)).await;
    assert_eq!(finish.status, "success", "reason: {}", finish.reason);
    let log = h.fake.log_text(9);
    let output = log.strip_prefix("--- step 1: main\n").unwrap_or_else(|| {
        panic!(
            "the log starts with the step: {:?}",
            &log[..80.min(log.len())]
        )
    });
    assert_eq!(output.len(), expected.len(), "every byte arrived once");
    assert!(output == expected, "the output arrived in order");
    {
        let state = h.fake.state();
        assert!(state.violations.is_empty(), "{:?}", state.violations);
        assert!(state.duplicates > 0, "unacknowledged chunks were resent");
    }
    let peak = h.log_held_peak.load(Ordering::SeqCst);
    assert!(
        peak <= bound,
        "held {peak} bytes unacknowledged, budget {LOG_BUDGET}"
    );
    h.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), h.agent).await;
}

/// An event this agent does not know (a newer server) fails the task with
/// the reason, rather than running it as if it were another event.
#[tokio::test]
async fn an_unknown_event_fails_the_task_saying_so() {
    let h = start().await;
    let mut task = assignment(9, "echo should not run", "");
    task.event = "merge_group".into();
    h.fake.send(server_message::Kind::Assignment(task));
    h.fake
        .wait_for("the end of the task", Duration::from_secs(30), |s| {
            !s.finished.is_empty()
        })
        .await;
    let (finish, _) = h.fake.finish_of(9).expect("task 9 finished");
    assert_eq!(finish.status, "error");
    assert!(
        finish.reason.contains("unknown event `merge_group`"),
        "{}",
        finish.reason
    );
    assert!(!h.fake.log_text(9).contains("should not run\n"));
}

/// The task ids of what an agent says it runs.
fn ids(running: &[kiln_proto::v1::TaskAttempt]) -> Vec<i64> {
    running.iter().map(|task| task.task_id).collect()
}
