//! `GET /api/v1/events` over real HTTP: an in-process server on random
//! ports (HTTP and gRPC) on SQLite, a raw `kiln_proto` client playing the
//! agent, and clients reading the stream with reqwest as a browser's
//! `EventSource` would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use kiln_proto::v1::agent_client::AgentClient;
use kiln_proto::v1::{
    FinishTaskRequest, ServerMessage, SessionRequest, StepUpdate, server_message,
};
use kiln_server::ServerConfig;
use kiln_server::events::{Change, EventHub, EventSettings, TaskChange};
use kiln_store::{Status, TokenKind, TokenStore};
use kiln_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

const ADMIN: &str = "kiln_admin_events_test_token";
const AGENT_TOKEN: &str = "kiln_agent_events_test_token";
const AGENT: &str = "events-agent";
const ONE_TASK: &str = "version: 1\ntasks:\n  build:\n    steps: [{run: 'true'}, {run: 'true'}]\n";

/// How the tests run the streams: keep-alives and access checks quicker
/// than a person would need, so nothing waits 15 seconds.
const SETTINGS: EventSettings = EventSettings {
    keep_alive: Duration::from_millis(300),
    flush_every: Duration::from_millis(250),
    access_for: Duration::from_millis(500),
};

struct Harness {
    http: reqwest::Client,
    base: String,
    grpc: String,
    events: Arc<EventHub>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    async fn start() -> Harness {
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
        let hash = kiln_crypto::hash_token(AGENT_TOKEN);
        let token = kiln_store::NewAgentToken {
            hash: &hash,
            name: AGENT,
            labels: None,
            max_capacity: None,
        };
        db.insert_agent_token(&token, Utc::now()).await.unwrap();
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            blob_url: None,
            agent_lease: Duration::from_secs(15),
            max_report_size: kiln_server::DEFAULT_MAX_REPORT_SIZE,
            limits: kiln_server::Limits::default(),
        };
        let mut state = kiln_server::app_state(db, &config).await.unwrap();
        state.events = Arc::new(EventHub::new(SETTINGS));
        let events = state.events.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let grpc = format!("http://{}", grpc_listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(kiln_server::serve(
            state,
            listener,
            Some(grpc_listener),
            shutdown.clone(),
        ));
        Harness {
            http: reqwest::Client::new(),
            base,
            grpc,
            events,
            shutdown,
            _dir: dir,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn job(&self, name: &str, visibility: &str) {
        let body = json!({"kind": "freestyle", "pipeline": ONE_TASK, "visibility": visibility});
        self.call(
            reqwest::Method::PUT,
            &format!("/api/v1/jobs/{name}"),
            Some(body),
        )
        .await;
    }

    async fn trigger(&self, job: &str) -> i64 {
        let run = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{job}/runs"),
                None,
            )
            .await;
        run["number"].as_i64().unwrap()
    }

    /// A user who is a member of nothing, and a token of theirs (and its id).
    async fn outsider(&self, name: &str) -> (String, i64) {
        self.call(
            reqwest::Method::POST,
            "/api/v1/users",
            Some(json!({"name": name})),
        )
        .await;
        let created = self
            .call(
                reqwest::Method::POST,
                "/api/v1/tokens",
                Some(json!({"name": "laptop", "user": name})),
            )
            .await;
        (
            created["token"].as_str().unwrap().to_string(),
            created["id"].as_i64().unwrap(),
        )
    }

    /// Opens `/api/v1/events` (with `query`) as `token` (anonymous without).
    async fn open(&self, query: &str, token: Option<&str>, last_id: Option<u64>) -> Reader {
        let mut request = self.http.get(format!("{}/api/v1/events{query}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{query}"
        );
        Reader::spawn(response)
    }

    async fn agent(&self) -> (AgentClient<Channel>, Streaming<ServerMessage>) {
        let mut client = AgentClient::connect(self.grpc.clone()).await.unwrap();
        let hello = SessionRequest {
            name: AGENT.into(),
            capacity: 4,
            executors: vec!["process".into()],
            ..Default::default()
        };
        let stream = client.session(call(hello)).await.unwrap().into_inner();
        (client, stream)
    }
}

fn call<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {AGENT_TOKEN}").parse().unwrap(),
    );
    metadata.insert("x-kiln-agent", AGENT.parse().unwrap());
    request
}

/// One message of the stream, as `EventSource` would hand it over; a
/// keep-alive comment is `event` `:`.
#[derive(Debug, Clone)]
struct Message {
    event: String,
    id: Option<u64>,
    data: Value,
    at: Instant,
}

impl Message {
    /// The changes of an `event: changes`.
    fn changes(&self) -> Vec<Change> {
        if self.event != "changes" {
            return Vec::new();
        }
        serde_json::from_value(self.data.clone()).unwrap()
    }
}

/// Reads a stream on its own task, message by message.
struct Reader {
    messages: mpsc::UnboundedReceiver<Message>,
    seen: Vec<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reader {
    fn spawn(response: reqwest::Response) -> Reader {
        let (sender, messages) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(bytes)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let mut message = Message {
                        event: "message".into(),
                        id: None,
                        data: Value::Null,
                        at: Instant::now(),
                    };
                    let mut data = String::new();
                    for line in block.lines() {
                        if line.starts_with(':') {
                            message.event = ":".into();
                        } else if let Some(value) = line.strip_prefix("event:") {
                            message.event = value.trim().into();
                        } else if let Some(value) = line.strip_prefix("id:") {
                            message.id = Some(value.trim().parse().unwrap());
                        } else if let Some(value) = line.strip_prefix("data:") {
                            data.push_str(value.trim_start());
                        }
                    }
                    message.data = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if sender.send(message).is_err() {
                        return;
                    }
                }
            }
        });
        Reader {
            messages,
            seen: Vec::new(),
            task,
        }
    }

    /// Reads until `done` holds for what was read (keep-alives aside), or
    /// fails after `within`.
    async fn until(&mut self, within: Duration, done: impl Fn(&[Change]) -> bool) {
        let started = Instant::now();
        loop {
            if done(&self.changes()) {
                return;
            }
            let left = within.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.messages.recv()).await {
                Ok(Some(message)) => self.seen.push(message),
                Ok(None) => panic!("the stream ended; read: {:#?}", self.seen),
                Err(_) => panic!("not seen in {within:?}; read: {:#?}", self.changes()),
            }
        }
    }

    /// Reads whatever arrives for `time`.
    async fn for_a_while(&mut self, time: Duration) {
        let until = tokio::time::Instant::now() + time;
        while let Ok(Some(message)) = tokio::time::timeout_at(until, self.messages.recv()).await {
            self.seen.push(message);
        }
    }

    /// Reads until the server ends the stream.
    async fn until_it_ends(&mut self, within: Duration) {
        let ended = tokio::time::timeout(within, async {
            while let Some(message) = self.messages.recv().await {
                self.seen.push(message);
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "the stream did not end; read: {:#?}",
            self.seen
        );
    }

    fn changes(&self) -> Vec<Change> {
        self.seen.iter().flat_map(Message::changes).collect()
    }

    fn messages_of(&self, event: &str) -> Vec<&Message> {
        self.seen.iter().filter(|m| m.event == event).collect()
    }
}

/// The statuses the changes gave run `number` of `job`, in order, repeats
/// dropped.
fn run_statuses(changes: &[Change], job: &str, number: i64) -> Vec<Status> {
    let mut statuses: Vec<Status> = Vec::new();
    for change in changes {
        if let Change::Run(run) = change
            && run.job == job
            && run.number == number
            && statuses.last() != Some(&run.status)
        {
            statuses.push(run.status);
        }
    }
    statuses
}

fn task_statuses(changes: &[Change], task: &str) -> Vec<Status> {
    let mut statuses: Vec<Status> = Vec::new();
    for change in changes {
        if let Change::Task(t) = change
            && t.task == task
            && statuses.last() != Some(&t.status)
        {
            statuses.push(t.status);
        }
    }
    statuses
}

fn mentions(changes: &[Change], job: &str) -> bool {
    changes.iter().any(|c| c.job() == job)
}

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_run_is_seen_going_from_queued_to_running_to_success_with_its_tasks_and_steps() {
    let server = Harness::start().await;
    server.job("app", "private").await;
    let mut stream = server.open("", Some(ADMIN), None).await;
    let (mut agent, mut assignments) = server.agent().await;

    let number = server.trigger("app").await;
    let assignment = match tokio::time::timeout(WITHIN, assignments.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .kind
        .unwrap()
    {
        server_message::Kind::Assignment(a) => a,
        other => panic!("expected an assignment, got {other:?}"),
    };
    stream
        .until(WITHIN, |c| {
            run_statuses(c, "app", number) == [Status::Queued, Status::Running]
                && task_statuses(c, "build") == [Status::Running]
        })
        .await;

    // The agent runs the steps, as a real one reports them.
    let now = Utc::now().timestamp_millis();
    for (index, status, finished) in [
        (0, "running", None),
        (0, "success", Some(now)),
        (1, "running", None),
    ] {
        let update = StepUpdate {
            task_id: assignment.task_id,
            attempt: 1,
            index,
            name: format!("step {index}"),
            status: status.into(),
            exit_code: finished.map(|_| 0),
            started_at_ms: Some(now),
            finished_at_ms: finished,
        };
        agent.update_step(call(update)).await.unwrap();
    }
    stream
        .until(WITHIN, |changes| {
            let steps: Vec<_> = changes
                .iter()
                .filter_map(|c| match c {
                    Change::Step(step) => Some((step.index, step.status)),
                    _ => None,
                })
                .collect();
            steps.contains(&(0, Status::Success)) && steps.contains(&(1, Status::Running))
        })
        .await;

    let finish = FinishTaskRequest {
        task_id: assignment.task_id,
        attempt: 1,
        status: "success".into(),
        reason: String::new(),
        not_retryable: false,
    };
    agent.finish_task(call(finish)).await.unwrap();
    stream
        .until(WITHIN, |c| {
            run_statuses(c, "app", number) == [Status::Queued, Status::Running, Status::Success]
        })
        .await;
    let changes = stream.changes();
    assert_eq!(
        task_statuses(&changes, "build"),
        [Status::Running, Status::Success]
    );
    let ended = changes
        .iter()
        .rev()
        .find_map(|c| match c {
            Change::Task(task) if task.task == "build" => Some(task.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ended.attempt, 1);
    assert!(ended.started_at.is_some() && ended.finished_at.is_some());
    let run = changes
        .iter()
        .rev()
        .find_map(|c| match c {
            Change::Run(run) => Some(run.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(run.event, "api");
    assert!(run.finished_at.is_some());
    // Every message has an id, and they only grow.
    let ids: Vec<u64> = stream
        .messages_of("changes")
        .iter()
        .map(|m| m.id.unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn a_private_job_is_seen_by_admins_and_members_only_and_a_public_one_by_anyone() {
    let server = Harness::start().await;
    server.job("hidden", "private").await;
    server.job("open", "public").await;
    let (outsider, _) = server.outsider("vera").await;
    let mut admin = server.open("", Some(ADMIN), None).await;
    let mut vera = server.open("", Some(&outsider), None).await;
    let mut anonymous = server.open("", None, None).await;

    // The private run first: whoever sees the public one after it would
    // have been sent the private one by then.
    server.trigger("hidden").await;
    server.trigger("open").await;
    for reader in [&mut admin, &mut vera, &mut anonymous] {
        reader
            .until(WITHIN, |c| run_statuses(c, "open", 1) == [Status::Queued])
            .await;
    }
    assert_eq!(
        run_statuses(&admin.changes(), "hidden", 1),
        [Status::Queued]
    );
    assert!(!mentions(&vera.changes(), "hidden"), "{:?}", vera.changes());
    assert!(
        !mentions(&anonymous.changes(), "hidden"),
        "{:?}",
        anonymous.changes()
    );

    // Asking for the private job by name is answered as if it did not
    // exist, as its other routes are.
    let refused = server
        .http
        .get(format!("{}/api/v1/events?job=hidden", server.base))
        .bearer_auth(&outsider)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let refused = server
        .http
        .get(format!("{}/api/v1/events?job=hidden", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);

    // A filtered stream gets its job's changes only.
    let mut only_open = server.open("?job=open&run=2", None, None).await;
    server.trigger("hidden").await;
    server.trigger("open").await;
    server.trigger("open").await;
    only_open
        .until(WITHIN, |c| run_statuses(c, "open", 2) == [Status::Queued])
        .await;
    only_open.for_a_while(Duration::from_millis(600)).await;
    let changes = only_open.changes();
    assert!(
        changes.iter().all(|c| c.job() == "open" && c.run() == 2),
        "{changes:?}"
    );
}

#[tokio::test]
async fn a_members_session_sees_its_private_job_until_it_signs_out() {
    let server = Harness::start().await;
    server.job("team", "private").await;
    server
        .call(
            reqwest::Method::POST,
            "/api/v1/users",
            Some(json!({"name": "ada", "password": "correct horse battery"})),
        )
        .await;
    server
        .call(
            reqwest::Method::PUT,
            "/api/v1/jobs/team/members/ada",
            Some(json!({"role": "viewer"})),
        )
        .await;
    let signed_in = server
        .http
        .post(format!("{}/login", server.base))
        .json(&json!({"username": "ada", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // As a browser's `EventSource` opens it: the cookie, no token.
    let response = server
        .http
        .get(format!("{}/api/v1/events", server.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = Reader::spawn(response);
    server.trigger("team").await;
    stream
        .until(WITHIN, |c| run_statuses(c, "team", 1) == [Status::Queued])
        .await;

    // Signing out ends the session, and the stream with it at its next
    // message.
    let host = server.base.trim_start_matches("http://").to_string();
    let signed_out = server
        .http
        .post(format!("{}/logout", server.base))
        .header("cookie", &cookie)
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 204);
    tokio::time::sleep(SETTINGS.access_for).await;
    server.trigger("team").await;
    stream.until_it_ends(WITHIN).await;
    assert!(run_statuses(&stream.changes(), "team", 2).is_empty());
}

#[tokio::test]
async fn a_revoked_token_ends_its_stream() {
    let server = Harness::start().await;
    let (token, id) = server.outsider("rex").await;
    let mut stream = server.open("", Some(&token), None).await;
    server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
        )
        .await;
    // The next change the stream would send makes it check its token.
    server.job("open", "public").await;
    tokio::time::sleep(SETTINGS.access_for).await;
    server.trigger("open").await;
    stream.until_it_ends(WITHIN).await;
    assert!(stream.changes().is_empty(), "{:?}", stream.changes());
}

#[tokio::test]
async fn a_resume_with_last_event_id_gets_what_was_missed_once() {
    let server = Harness::start().await;
    server.job("app", "public").await;
    let mut first = server.open("", Some(ADMIN), None).await;
    server.trigger("app").await;
    first
        .until(WITHIN, |c| run_statuses(c, "app", 1) == [Status::Queued])
        .await;
    let last = first.messages_of("changes").last().unwrap().id.unwrap();
    drop(first);

    // While the client is away.
    server.trigger("app").await;
    server.trigger("app").await;

    let mut resumed = server.open("?timeout=2", Some(ADMIN), Some(last)).await;
    resumed.until_it_ends(WITHIN).await;
    let changes = resumed.changes();
    let runs: Vec<i64> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Run(run) => Some(run.number),
            _ => None,
        })
        .collect();
    assert_eq!(runs, [2, 3], "{changes:?}");
    assert!(resumed.messages_of("reset").is_empty());
    assert!(
        resumed
            .messages_of("changes")
            .iter()
            .all(|m| m.id.unwrap() > last)
    );

    // `timeout=0` only replays; `after` is the header's stand-in.
    let mut replay = server
        .open(&format!("?timeout=0&after={last}"), Some(ADMIN), None)
        .await;
    replay.until_it_ends(WITHIN).await;
    assert_eq!(run_statuses(&replay.changes(), "app", 3), [Status::Queued]);

    // An id older than what is kept means: reload.
    for _ in 0..kiln_server::events::RING_SIZE {
        server
            .events
            .publish(task_change("app", 9, "noise", Status::Queued));
    }
    let mut stale = server.open("?timeout=1", Some(ADMIN), Some(last)).await;
    stale.until_it_ends(WITHIN).await;
    let resets = stale.messages_of("reset");
    assert_eq!(resets.len(), 1, "{:#?}", stale.seen);
    assert_eq!(resets[0].id, Some(server.events.latest()));
    assert!(stale.changes().is_empty());
}

fn task_change(job: &str, run: i64, task: &str, status: Status) -> Change {
    Change::Task(TaskChange {
        job: job.into(),
        run,
        task: task.into(),
        status,
        attempt: 1,
        reason: None,
        started_at: None,
        finished_at: None,
    })
}

#[tokio::test]
async fn a_burst_of_changes_is_coalesced_to_a_few_messages_a_second() {
    let server = Harness::start().await;
    server.job("wide", "public").await;
    let mut stream = server.open("", None, None).await;
    // 200 tasks, each going queued → running → success, spread over two
    // seconds: 600 changes, as a wide run makes them.
    let started = Instant::now();
    let statuses = [Status::Queued, Status::Running, Status::Success];
    for status in statuses {
        for task in 0..200 {
            server
                .events
                .publish(task_change("wide", 1, &format!("t{task}"), status));
            if task % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let burst = started.elapsed();
    stream
        .until(WITHIN, |changes| {
            (0..200).all(|task| {
                let name = format!("t{task}");
                changes.iter().rev().find_map(|c| match c {
                    Change::Task(t) if t.task == name => Some(t.status),
                    _ => None,
                }) == Some(Status::Success)
            })
        })
        .await;
    let messages = stream.messages_of("changes");
    let span = messages.last().unwrap().at - messages[0].at;
    // One message at once, then one per 250 ms at most.
    let most = 2 + (span.as_millis() / SETTINGS.flush_every.as_millis()) as usize;
    eprintln!(
        "{} messages for 600 changes over {burst:?} (stream span {span:?})",
        messages.len()
    );
    assert!(messages.len() <= most, "{} > {most}", messages.len());
    assert!(messages.len() < 30, "{}", messages.len());
    // Latest wins: no message names a task twice.
    for message in &messages {
        let changes = message.changes();
        let mut names: Vec<&str> = changes
            .iter()
            .map(|c| match c {
                Change::Task(t) => t.task.as_str(),
                _ => "",
            })
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all);
    }
}

#[tokio::test]
async fn a_client_that_falls_behind_is_told_to_reload() {
    let server = Harness::start().await;
    server.job("wide", "public").await;
    let mut stream = server.open("", None, None).await;
    // More distinct changes at once than a client's backlog may hold.
    for task in 0..3 * kiln_server::events::RING_SIZE {
        server
            .events
            .publish(task_change("wide", 1, &format!("t{task}"), Status::Queued));
    }
    stream.for_a_while(Duration::from_secs(2)).await;
    let resets = stream.messages_of("reset");
    assert_eq!(resets.len(), 1, "{:#?}", stream.messages_of("reset"));
    assert_eq!(resets[0].id, Some(server.events.latest()));
    // And it goes on: what comes after the reset arrives.
    server
        .events
        .publish(task_change("wide", 1, "after", Status::Running));
    stream
        .until(WITHIN, |c| {
            c.iter()
                .any(|c| matches!(c, Change::Task(t) if t.task == "after"))
        })
        .await;
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alives() {
    let server = Harness::start().await;
    let mut stream = server.open("", None, None).await;
    stream.for_a_while(SETTINGS.keep_alive * 4).await;
    let comments = stream.messages_of(":");
    assert!(comments.len() >= 2, "{:#?}", stream.seen);
    assert!(stream.changes().is_empty());
}

#[tokio::test]
async fn bad_parameters_are_422_problems() {
    let server = Harness::start().await;
    for (query, last_id) in [
        ("?run=1", None),
        ("?timeout=100000", None),
        ("?timeout=-1", None),
        ("?timeout=0", Some("yesterday")),
    ] {
        let mut request = server
            .http
            .get(format!("{}/api/v1/events{query}", server.base));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 422, "{query} {last_id:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}
