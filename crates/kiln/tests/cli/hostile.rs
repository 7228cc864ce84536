//! An agent turned hostile: a hand-written gRPC client holding agent `a`'s
//! own token goes after the task a real `kiln agent` named `b` is running,
//! and beyond its own grant. Everything is refused, and neither the API nor
//! the database shows a trace of it.

use kiln_proto::v1::agent_client::AgentClient;
use kiln_proto::v1::{
    ArtifactChunk, FinishTaskRequest, HeartbeatRequest, LogChunk, SessionRequest, StepUpdate,
    TaskAttempt,
};
use kiln_store::{LogStore, QueueStore, ResultStore, Status, TaskId};
use reqwest::Method;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

use crate::agents::{Agent, wait_task_status};
use crate::server::Server;

const PIPELINE: &str = "version: 1\ntasks:\n  build:\n    steps:\n      - run: echo started; sleep 3; echo done by $KILN_AGENT > out.txt; cat out.txt\n    artifacts:\n      paths: [out.txt]\n";
/// Task ids an attacker would guess: the first few the database hands out.
const GUESSES: std::ops::RangeInclusive<i64> = 1..=3;

fn call<T>(message: T, token: &str, agent: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(agent) = agent {
        metadata.insert("x-kiln-agent", agent.parse().unwrap());
    }
    request
}

/// Whether a call was refused (not merely failed in transit).
fn refused<T>(result: Result<tonic::Response<T>, tonic::Status>, what: &str) {
    let status = result.map(|_| ()).expect_err(what);
    assert!(
        matches!(
            status.code(),
            Code::PermissionDenied | Code::Unauthenticated | Code::NotFound
        ),
        "{what}: {status}"
    );
}

#[tokio::test]
async fn a_hostile_agent_cannot_touch_a_real_agents_task() {
    let server = Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    let _b = Agent::start(&server, "b", "linux", 1);
    let (status, made) = server
        .send(
            Method::POST,
            "/api/v1/agent-tokens",
            json!({"name": "a", "labels": ["linux"], "max_capacity": 1}),
        )
        .await;
    assert!(status.is_success(), "{made}");
    let token = made["token"].as_str().unwrap().to_string();
    let run = server.freestyle("victim", PIPELINE).await;
    wait_task_status(&server, "victim", run, 0, "running").await;

    let mut client = AgentClient::<Channel>::connect(server.grpc.clone())
        .await
        .unwrap();
    for task_id in GUESSES {
        for attempt in 1..=2 {
            let what = |call: &str| format!("{call} on task {task_id} attempt {attempt}");
            let log = LogChunk {
                task_id,
                attempt,
                seq: 0,
                data: b"injected by a\n".to_vec(),
            };
            let logs = futures_util::stream::iter(vec![log]);
            refused(
                client.append_logs(call(logs, &token, Some("a"))).await,
                &what("logs"),
            );
            let step = StepUpdate {
                task_id,
                attempt,
                index: 0,
                name: "forged".into(),
                status: "failure".into(),
                ..Default::default()
            };
            refused(
                client.update_step(call(step, &token, Some("a"))).await,
                &what("step"),
            );
            let chunk = ArtifactChunk {
                task_id,
                attempt,
                path: "planted.txt".into(),
                data: b"planted by a".to_vec(),
            };
            let chunks = futures_util::stream::iter(vec![chunk]);
            refused(
                client
                    .upload_artifact(call(chunks, &token, Some("a")))
                    .await,
                &what("artifact"),
            );
            let finish = FinishTaskRequest {
                task_id,
                attempt,
                status: "success".into(),
                ..Default::default()
            };
            refused(
                client
                    .finish_task(call(finish.clone(), &token, Some("a")))
                    .await,
                &what("finish"),
            );
            // The same, claiming to be b with a's token.
            refused(
                client.finish_task(call(finish, &token, Some("b"))).await,
                &what("finish as b"),
            );
        }
    }
    // A session as b, and as itself beyond its grant.
    for (name, labels, capacity) in [
        ("b", vec!["linux"], 1),
        ("a", vec!["linux", "gpu"], 1),
        ("a", vec!["linux"], 64),
    ] {
        let hello = SessionRequest {
            name: name.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            capacity,
            ..Default::default()
        };
        refused(
            client.session(call(hello, &token, None)).await,
            &format!("session as {name} with {labels:?} × {capacity}"),
        );
    }

    // b's task ends as b ran it.
    let detail = server.wait_for_run("victim", run).await;
    assert_eq!(detail["status"], "success", "{detail:#}");
    assert_eq!(detail["tasks"][0]["agent"], "b", "{detail:#}");
    assert_eq!(detail["tasks"][0]["steps"][0]["status"], "success");
    let results = "/api/v1/jobs/victim/runs/1/tasks/build/results";
    let console = server
        .get(&format!("{results}/console"))
        .await
        .text()
        .await
        .unwrap();
    assert!(console.contains("done by b"), "{console}");
    assert!(!console.contains("injected"), "{console}");
    let artifacts = server.json(results).await;
    let listed = artifacts.to_string();
    assert!(listed.contains("out.txt"), "{listed}");
    assert!(!listed.contains("planted"), "{listed}");

    // Revoked, a's token opens nothing any more.
    let removed = server
        .request(
            Method::DELETE,
            "/api/v1/agents/a",
            Some(crate::server::ADMIN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), reqwest::StatusCode::NO_CONTENT);
    let beat = HeartbeatRequest {
        tasks: vec![TaskAttempt {
            task_id: 1,
            attempt: 1,
        }],
        draining: false,
    };
    let status = client
        .heartbeat(call(beat, &token, Some("a")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");

    // The database holds b's task as b finished it: its steps, its log and
    // its one artifact, and no task any other way.
    let db = kiln_store_sqlite::SqliteStore::open(&server.data_dir.path().join("kiln.db"))
        .await
        .unwrap();
    for task_id in GUESSES {
        let Some(task) = db.get_task(TaskId(task_id)).await.unwrap() else {
            continue;
        };
        assert_eq!(task.status, Status::Success, "{task:?}");
        assert_eq!(task.agent.as_deref(), Some("b"), "{task:?}");
        assert_eq!(task.attempt, 1, "{task:?}");
        assert!(task.steps.iter().all(|s| s.name != "forged"), "{task:?}");
        let artifacts = db.list_artifacts(TaskId(task_id), 1).await.unwrap();
        let paths: Vec<&str> = artifacts.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["out.txt"]);
        let log = db.read_log(TaskId(task_id), 1, 0, 1000).await.unwrap();
        let log: Vec<u8> = log.into_iter().flat_map(|(_, bytes)| bytes).collect();
        assert!(
            !String::from_utf8_lossy(&log).contains("injected"),
            "{}",
            String::from_utf8_lossy(&log)
        );
    }
}
