//! The server's limits on what a task may store (`--max-log-bytes`,
//! `--max-artifact-file-bytes`), `artifacts: expire-in` recorded on the
//! files, and `/metrics` behind `KILN_METRICS_TOKEN`: a real server and a
//! real agent process.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::agents::Agent;
use crate::server::{Server, files_ending_with};

const LOG_LIMIT: u64 = 300 * 1024;
const LOG_NOTE: &str = "kiln: log limit of 300 KiB reached; the rest of this task's output was \
                        dropped (--max-log-bytes)\n";

#[tokio::test]
async fn a_log_over_the_limit_keeps_its_start_and_fails_the_task() {
    let server = Server::start_for_agents_with(&["--max-log-bytes", "300KiB"], &[]);
    let _agent = Agent::start(&server, "chatty", "linux", 1);
    // About 2 MB of output, then a long sleep the limit must cut short.
    let pipeline = "version: 1\ntasks:\n  flood:\n    steps:\n      - run: |\n          echo FIRST-LINE\n          yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopq | head -n 30000\n          sleep 60\n          echo NEVER-PRINTED\n";
    let started = Instant::now();
    let run = server.freestyle("flood", pipeline).await;
    let detail = server.wait_for_run("flood", run).await;
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the task ran on past the limit: {detail:#}"
    );
    let task = &detail["tasks"][0];
    assert_eq!(task["status"], "failure", "{detail:#}");
    let reason = task["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("log limit of 300 KiB reached") && reason.contains("--max-log-bytes"),
        "{detail:#}"
    );

    let console = server
        .get(&format!(
            "/api/v1/jobs/flood/runs/{run}/tasks/flood/results/console"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(console.contains("FIRST-LINE"), "the start is kept");
    assert!(!console.contains("NEVER-PRINTED"));
    assert!(
        console.ends_with(LOG_NOTE),
        "the log ends with the note: …{}",
        &console[console.len().saturating_sub(300)..]
    );
    assert!(
        console.len() as u64 <= LOG_LIMIT + 1 + LOG_NOTE.len() as u64,
        "{} bytes kept",
        console.len()
    );
    assert!(
        console.len() as u64 >= LOG_LIMIT,
        "everything up to the limit is kept: {} bytes",
        console.len()
    );

    // Past 256 KiB the console moved to the blob store: the file there is
    // what the server keeps, and it is no bigger.
    // (It moves just after the task ends.)
    let moving = Instant::now();
    let logs = loop {
        let logs = files_ending_with(&server.data_dir.path().join("blobs"), ".log");
        if !logs.is_empty() || moving.elapsed() > Duration::from_secs(20) {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(logs.len(), 1, "{logs:?}");
    let stored = std::fs::metadata(&logs[0]).unwrap().len();
    assert_eq!(stored, console.len() as u64);

    // The agent took the answer as the end of the task and is free again.
    let quick = "version: 1\ntasks:\n  quick:\n    steps: [{run: echo still working}]\n";
    let next = server.freestyle("quick", quick).await;
    let detail = server.wait_for_run("quick", next).await;
    assert_eq!(detail["status"], "success", "{detail:#}");
}

#[tokio::test]
async fn an_artifact_over_the_file_limit_fails_its_task_naming_the_file() {
    let server = Server::start_for_agents_with(&["--max-artifact-file-bytes", "100KiB"], &[]);
    let _agent = Agent::start(&server, "hoarder", "linux", 1);
    let pipeline = "version: 1\ntasks:\n  keep:\n    steps:\n      - run: head -c 400000 /dev/zero > big.bin\n    artifacts: { paths: [big.bin] }\n";
    let run = server.freestyle("hoard", pipeline).await;
    let detail = server.wait_for_run("hoard", run).await;
    let task = &detail["tasks"][0];
    assert_eq!(task["status"], "failure", "{detail:#}");
    let reason = task["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("`big.bin`")
            && reason.contains("100 KiB per file")
            && reason.contains("--max-artifact-file-bytes"),
        "{detail:#}"
    );
    let console = server
        .get(&format!(
            "/api/v1/jobs/hoard/runs/{run}/tasks/keep/results/console"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(console.contains(reason), "the log says it too:\n{console}");
    let results = server
        .json(&format!("/api/v1/jobs/hoard/runs/{run}/tasks/keep/results"))
        .await;
    assert_eq!(results["artifacts"], serde_json::json!([]), "{results:#}");
    // Nothing of the file is left in the blob store.
    let blobs = files_ending_with(&server.data_dir.path().join("blobs"), "big.bin");
    assert!(blobs.is_empty(), "{blobs:?}");
}

#[tokio::test]
async fn artifacts_show_when_they_expire() {
    let server = Server::start_for_agents_with(&[], &[]);
    let _agent = Agent::start(&server, "keeper", "linux", 1);
    let pipeline = "version: 1\ntasks:\n  short:\n    steps: [{run: echo a > a.txt}]\n    artifacts: { paths: [a.txt], expire-in: 2d }\n  long:\n    steps: [{run: echo b > b.txt}]\n    artifacts: { paths: [b.txt] }\n";
    let before = chrono::Utc::now();
    let run = server.freestyle("expiring", pipeline).await;
    let detail = server.wait_for_run("expiring", run).await;
    let after = chrono::Utc::now();
    assert_eq!(detail["status"], "success", "{detail:#}");
    let short = server
        .json(&format!(
            "/api/v1/jobs/expiring/runs/{run}/tasks/short/results"
        ))
        .await;
    let expires_at: chrono::DateTime<chrono::Utc> = short["artifacts"][0]["expires_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no expires_at: {short:#}"))
        .parse()
        .unwrap();
    let two_days = chrono::Duration::days(2);
    assert!(
        expires_at >= before + two_days - chrono::Duration::seconds(1)
            && expires_at <= after + two_days,
        "{expires_at} is not two days after the upload"
    );
    let long = server
        .json(&format!(
            "/api/v1/jobs/expiring/runs/{run}/tasks/long/results"
        ))
        .await;
    assert_eq!(long["artifacts"][0]["path"], "b.txt", "{long:#}");
    assert!(long["artifacts"][0]["expires_at"].is_null(), "{long:#}");
}

#[tokio::test]
async fn metrics_behind_a_token_still_serve_the_documented_metrics() {
    const TOKEN: &str = "metrics-scraper-token-0123456789";
    let server = Server::start_for_agents_with(&[], &[("KILN_METRICS_TOKEN", TOKEN)]);
    let _agent = Agent::start(&server, "counted", "linux", 1);
    let run = server
        .freestyle(
            "counted",
            "version: 1\ntasks:\n  one:\n    steps: [{run: echo one}]\n",
        )
        .await;
    server.wait_for_run("counted", run).await;

    for token in [None, Some("wrong-token"), Some(crate::server::ADMIN)] {
        let refused = server
            .request(reqwest::Method::GET, "/metrics", token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        let body = refused.text().await.unwrap();
        assert!(body.contains("KILN_METRICS_TOKEN"), "{body}");
    }
    let metrics = server
        .request(reqwest::Method::GET, "/metrics", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    for name in [
        "kiln_runs{status=\"success\"} 1",
        "kiln_tasks{status=\"success\"} 1",
        "kiln_queue_depth 0",
        "kiln_runs_created_total 1",
        "kiln_tasks_requeued_total",
        "kiln_tasks_finished_total{status=\"success\"} 1",
        "kiln_task_limits_hit_total{limit=\"max-log-bytes\"} 0",
        "kiln_task_queue_seconds_bucket",
        "kiln_task_duration_seconds_count 1",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
}

/// A Dockerfile that is a symlink to a file of the agent's machine, or
/// lies under a directory linked out of the repository, is not read: the
/// task ends `error` saying so, and nothing of the file shows.
#[tokio::test]
async fn a_dockerfile_linked_out_of_the_checkout_is_not_read() {
    let server = Server::start_for_agents_with(&[], &[]);
    let _agent = Agent::start_with(&server, "builder", "linux", 2, "docker");
    let pipeline = "version: 1\ntasks:\n  linked:\n    build: { dockerfile: Dockerfile, context: . }\n    steps: [{run: echo built}]\n  under:\n    build: { dockerfile: host/passwd, context: . }\n    steps: [{run: echo built}]\n";
    let repo = crate::support::GitRepo::new(&[(".kiln.yml", pipeline)]);
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("Dockerfile")).unwrap();
    std::os::unix::fs::symlink("/etc", repo.path().join("host")).unwrap();
    repo.commit(&[], "links out");
    crate::server::create_git_job(&server, "linked", &repo).await;
    let (status, run) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs/linked/runs",
            serde_json::json!({"branch": "main"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let number = run["number"].as_i64().unwrap();
    let detail = server.wait_for_run("linked", number).await;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for (task, named) in [
        ("linked", "dockerfile `Dockerfile`"),
        ("under", "dockerfile `host/passwd`"),
    ] {
        let row = detail["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["name"] == task)
            .unwrap();
        assert_eq!(row["status"], "error", "{detail:#}");
        let reason = row["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(named)
                && reason.contains("/etc/passwd")
                && reason.contains("outside the repository's checkout"),
            "{detail:#}"
        );
        let console = server
            .get(&format!(
                "/api/v1/jobs/linked/runs/{number}/tasks/{task}/results/console"
            ))
            .await
            .text()
            .await
            .unwrap();
        for line in passwd.lines().filter(|line| !line.trim().is_empty()) {
            assert!(
                !console.contains(line) && !reason.contains(line),
                "the host's /etc/passwd shows: {line}\n{console}"
            );
        }
    }
}
