//! The task page's log windows over real HTTP while an agent (a raw
//! `kiln_proto` client) writes the log over real gRPC: the same lines, with
//! the same numbers and colours, whether the log is still in the
//! database's chunks (cut anywhere, even inside a line or an escape, and
//! stored out of order) or moved to the blob store with its line index.

use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_proto::v1::agent_client::AgentClient;
use kiln_proto::v1::{FinishTaskRequest, LogChunk, ServerMessage, SessionRequest, server_message};
use kiln_server::ServerConfig;
use kiln_store::{TokenKind, TokenStore};
use kiln_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

const ADMIN: &str = "kiln_admin_log_view_test_token";
const AGENT: &str = "kiln_agent_log_view_test_token_a";

struct Harness {
    http: reqwest::Client,
    base: String,
    grpc: String,
    shutdown: CancellationToken,
    dir: tempfile::TempDir,
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
        let hash = kiln_crypto::hash_token(AGENT);
        let token = kiln_store::NewAgentToken {
            hash: &hash,
            name: "a",
            labels: None,
            max_capacity: None,
        };
        db.insert_agent_token(&token, Utc::now()).await.unwrap();
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            blob_url: None,
            agent_lease: Duration::from_secs(15),
            max_report_size: 1 << 20,
            limits: kiln_server::Limits::default(),
        };
        let state = kiln_server::app_state(db, &config).await.unwrap();
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
            shutdown,
            dir,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    async fn json(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }
}

fn call<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {AGENT}").parse().unwrap());
    request
        .metadata_mut()
        .insert("x-kiln-agent", "a".parse().unwrap());
    request
}

async fn assignment(stream: &mut Streaming<ServerMessage>) -> kiln_proto::v1::Assignment {
    let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no assignment in time")
        .unwrap()
        .expect("the stream ended");
    match message.kind.unwrap() {
        server_message::Kind::Assignment(a) => a,
        other => panic!("expected an assignment, got {other:?}"),
    }
}

async fn append(client: &mut AgentClient<Channel>, task_id: i64, chunks: &[(i64, &[u8])]) {
    let chunks: Vec<LogChunk> = chunks
        .iter()
        .map(|&(seq, data)| LogChunk {
            task_id,
            attempt: 1,
            seq,
            data: data.to_vec(),
        })
        .collect();
    client
        .append_logs(call(futures_util::stream::iter(chunks)))
        .await
        .unwrap();
}

/// 20 000 coloured lines, about 430 KB: more than the database keeps of a
/// finished log. Line `k` reads `line k` in colour `k % 8`.
fn log() -> Vec<u8> {
    let mut log = Vec::new();
    for k in 1..=20_000 {
        log.extend_from_slice(format!("\x1b[3{}mline {k}\x1b[0m padding\n", k % 8).as_bytes());
    }
    log
}

/// What the page shows of line `k`.
fn rendered(k: u64) -> String {
    format!("<span class=\"f{}\">line {k}</span> padding", k % 8)
}

#[tokio::test]
async fn windows_of_a_log_read_the_same_from_database_chunks_and_from_the_blob_store() {
    let server = Harness::start().await;
    server
        .send(
            reqwest::Method::PUT,
            "/api/v1/jobs/view",
            json!({"kind": "freestyle", "visibility": "public",
                   "pipeline": "version: 1\ntasks:\n  build:\n    steps: [{run: 'true'}]\n"}),
        )
        .await;
    let mut client = AgentClient::connect(server.grpc.clone()).await.unwrap();
    let hello = SessionRequest {
        name: "a".into(),
        labels: vec!["linux".into()],
        capacity: 2,
        executors: vec!["process".into()],
        ..Default::default()
    };
    let mut stream = client.session(call(hello)).await.unwrap().into_inner();
    server
        .send(reqwest::Method::POST, "/api/v1/jobs/view/runs", json!({}))
        .await;
    let task = assignment(&mut stream).await;

    // Chunks of an odd size cut lines and escapes anywhere; the second
    // arrives after the third (a resend), once the page has read past it.
    let log = log();
    let pieces: Vec<&[u8]> = log.chunks(7001).collect();
    append(&mut client, task.task_id, &[(0, pieces[0]), (2, pieces[2])]).await;
    let path = "/jobs/view/runs/1/tasks/build/log";
    let early = server.json(&format!("{path}?from=1&to=3")).await;
    assert_eq!(early["live"], true);
    assert!(early["html"].as_str().unwrap().contains(&rendered(2)));
    let rest: Vec<(i64, &[u8])> = pieces
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != 0 && *k != 2)
        .map(|(k, piece)| (k as i64, *piece))
        .collect();
    append(&mut client, task.task_id, &rest).await;

    let window = |from: u64| format!("{path}?from={from}&to={}", from + 2);
    let running = server.json(&window(12_345)).await;
    assert_eq!(running["total"], 20_000);
    assert_eq!(running["first"], 12_345);
    assert_eq!(running["last"], 12_347);
    let html = running["html"].as_str().unwrap().to_string();
    for k in 12_345..=12_347 {
        assert!(html.contains(&rendered(k)), "line {k} in {html}");
    }
    let found = server
        .json(&format!("{path}/search?q=LINE%2015000%1B"))
        .await;
    assert_eq!(found["line"], 15_000, "search reads every chunk");

    // The task ends: the log moves to the blob store with its index, and
    // reads the same from there.
    let request = FinishTaskRequest {
        task_id: task.task_id,
        attempt: 1,
        status: "success".into(),
        reason: String::new(),
        not_retryable: false,
    };
    client.finish_task(call(request)).await.unwrap();
    let started = Instant::now();
    let index = loop {
        let mut found = Vec::new();
        let mut dirs = vec![server.dir.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.to_string_lossy().ends_with(".log.index") {
                    found.push(path);
                }
            }
        }
        if let Some(index) = found.pop() {
            break index;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no line index was kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&index).unwrap();
    assert!(text.starts_with("kiln-log-index 1\n"), "{text}");
    // Wait for the chunks to go: then the window is read from the blob.
    let started = Instant::now();
    loop {
        let run = server.json("/api/v1/jobs/view/runs/1").await;
        if run["status"] == "success" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{run:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = server.json(&window(12_345)).await;
    assert_eq!(finished["live"], false);
    assert_eq!(finished["html"], html.as_str());
    let tail = server.json(path).await;
    assert_eq!(tail["first"], 19_001);
    assert_eq!(tail["last"], 20_000);
    assert!(
        tail["html"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{}</span></div>", rendered(20_000)))
    );
}
