//! `GET /api/v1/events` from a real `kiln server` with its worker: a wide
//! run watched live by a client reading the stream as a browser would.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::server::{ADMIN, Server};

/// One `event: changes` message: when it came, and its changes.
struct Message {
    at: Instant,
    changes: Vec<Value>,
}

/// Reads `response` until `done` holds for all changes read so far (or
/// `within` passes); returns the messages.
async fn read_until(
    response: reqwest::Response,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Message> {
    let started = Instant::now();
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut messages: Vec<Message> = Vec::new();
    let mut all: Vec<Value> = Vec::new();
    while !done(&all) {
        let left = within.saturating_sub(started.elapsed());
        let chunk = tokio::time::timeout(left, body.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not seen in {within:?}; last changes: {:?}",
                    all.iter().rev().take(5).collect::<Vec<_>>()
                )
            })
            .expect("the stream ended")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !block.lines().any(|line| line == "event: changes") {
                continue;
            }
            let data: String = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            let changes: Vec<Value> = serde_json::from_str(&data).unwrap();
            all.extend(changes.iter().cloned());
            messages.push(Message {
                at: Instant::now(),
                changes,
            });
        }
    }
    messages
}

/// The statuses run 1 of `job` went through, repeats dropped.
fn run_statuses(changes: &[Value], job: &str) -> Vec<String> {
    let mut statuses: Vec<String> = Vec::new();
    for change in changes {
        if change["kind"] == "run" && change["job"] == job && change["number"] == 1 {
            let status = change["status"].as_str().unwrap().to_string();
            if statuses.last() != Some(&status) {
                statuses.push(status);
            }
        }
    }
    statuses
}

#[tokio::test]
async fn events_follow_a_wide_run_live_at_a_few_messages_a_second() {
    let server = Server::start(None);
    let tasks = 200;
    let mut pipeline = String::from("version: 1\ntasks:\n");
    for task in 0..tasks {
        pipeline.push_str(&format!("  t{task}:\n    steps: [{{run: 'true'}}]\n"));
    }
    let response = server
        .request(reqwest::Method::GET, "/api/v1/events", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    let number = server.freestyle("wide", &pipeline).await;
    assert_eq!(number, 1);
    let messages = read_until(response, Duration::from_secs(120), |changes| {
        run_statuses(changes, "wide").last().map(String::as_str) == Some("success")
    })
    .await;
    let changes: Vec<Value> = messages.iter().flat_map(|m| m.changes.clone()).collect();
    assert_eq!(
        run_statuses(&changes, "wide"),
        ["queued", "running", "success"]
    );
    // Every task was seen ending, and no message named one task twice.
    let mut ended: Vec<&str> = changes
        .iter()
        .filter(|c| c["kind"] == "task" && c["status"] == "success")
        .map(|c| c["task"].as_str().unwrap())
        .collect();
    ended.sort_unstable();
    ended.dedup();
    assert_eq!(ended.len(), tasks, "tasks seen ending: {ended:?}");
    for message in &messages {
        let mut keys: Vec<String> = message
            .changes
            .iter()
            .map(|c| format!("{}/{}/{}", c["kind"], c["task"], c["index"]))
            .collect();
        let all = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), all, "a message repeats a change");
    }
    // Coalesced: in no second did the client get more than a few
    // messages, however many of the run's tasks changed in it.
    let busiest = messages
        .iter()
        .map(|m| {
            messages
                .iter()
                .filter(|n| n.at >= m.at && n.at < m.at + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    let span = messages.last().unwrap().at - messages[0].at;
    eprintln!(
        "{} changes in {} messages over {span:?}; busiest second: {busiest}",
        changes.len(),
        messages.len()
    );
    // One message per 250 ms at most, as the server sends them (the first
    // at once); as they arrive here, delivery's jitter on a busy machine
    // may bring one more into a second.
    let most = 2 + (span.as_millis() / 250) as usize;
    assert!(
        messages.len() <= most,
        "{} messages > {most}",
        messages.len()
    );
    assert!(busiest <= 6, "{busiest} messages in one second");

    // An open stream does not hold up a graceful stop.
    let open = server
        .request(reqwest::Method::GET, "/api/v1/events", None)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let stopping = Instant::now();
    server.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the stop took {:?}",
        stopping.elapsed()
    );
    drop(open);
}
