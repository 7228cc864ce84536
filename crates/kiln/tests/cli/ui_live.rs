//! Live pages in a real browser (chromium over WebDriver, see `ui.rs`):
//! the run page, the dashboard and a job's page follow the change feed
//! and change in place — no reload (a marker left on `window` survives),
//! focus and what the reader typed kept.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{ADMIN_PASSWORD, Server};
use crate::ui::{Browser, PASSWORD, job, member};

/// Two tasks that hold both of the worker's slots for a while.
const BUSY: &str = r#"
version: 1
tasks:
  one:
    steps:
      - run: sleep 4
  two:
    steps:
      - run: sleep 4
"#;

/// A task long enough to be seen running, and one that needs it.
const APP: &str = r#"
version: 1
tasks:
  build:
    steps:
      - run: sleep 2
  test:
    needs: [build]
    steps:
      - run: echo tested
"#;

const QUICK: &str = r#"
version: 1
tasks:
  check:
    steps:
      - run: echo ok
"#;

/// Runs `script` (an expression's body, `return …`) in the page.
async fn eval(browser: &Browser, script: &str) -> Value {
    browser
        .client
        .execute(script, vec![])
        .await
        // A page in the middle of navigating has nothing to read yet.
        .unwrap_or(Value::Null)
}

/// Waits (without reloading) until `script` returns `true`.
async fn wait_until(browser: &Browser, script: &str, what: &str) {
    let started = Instant::now();
    while eval(browser, script).await != Value::Bool(true) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} never happened on {}",
            browser.here().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Marks the page, so a test can tell it was not loaded again.
async fn mark(browser: &Browser) {
    eval(browser, "window.kilnLiveMarker = 'kept'; return true").await;
}

async fn still_marked(browser: &Browser) -> bool {
    eval(browser, "return window.kilnLiveMarker === 'kept'").await == Value::Bool(true)
}

async fn trigger(server: &Server, job: &str) -> i64 {
    let (status, run) = server
        .send(Method::POST, &format!("/api/v1/jobs/{job}/runs"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    run["number"].as_i64().unwrap()
}

/// Waits until every task of the run is `running`.
async fn wait_running(server: &Server, job: &str, number: i64) {
    let started = Instant::now();
    loop {
        let run = server
            .json(&format!("/api/v1/jobs/{job}/runs/{number}"))
            .await;
        let tasks = run["tasks"].as_array().cloned().unwrap_or_default();
        if !tasks.is_empty() && tasks.iter().all(|t| t["status"] == "running") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{job} #{number} never ran: {run:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_run_page_follows_its_tasks_from_queued_to_success_without_reloading() {
    let server = Server::start(None);
    job(&server, "busy", BUSY, "private").await;
    job(&server, "app", APP, "private").await;
    let browser = Browser::start(&server, "live-run").await;
    browser.goto("/login").await;
    browser.sign_in("admin", ADMIN_PASSWORD).await;
    browser.arrive(|here| here == "/").await;

    // The worker's two slots are taken, so app's first task waits queued.
    let busy = trigger(&server, "busy").await;
    wait_running(&server, "busy", busy).await;
    let number = trigger(&server, "app").await;
    browser.goto(&format!("/jobs/app/runs/{number}")).await;
    let build = "document.querySelector('[data-key=\"task-build\"] .status').textContent";
    let node =
        "document.querySelector('svg.graph a[href$=\"/tasks/build\"] g').getAttribute('class')";
    assert_eq!(
        eval(&browser, &format!("return {build}")).await,
        "queued",
        "the run page opens with the task waiting"
    );
    browser.screenshot("queued").await;
    mark(&browser).await;
    eval(
        &browser,
        "document.getElementById('rerun').focus(); return true",
    )
    .await;

    // What the page shows, as it changes, until the run ends.
    let mut seen: Vec<(String, String)> = Vec::new();
    let started = Instant::now();
    loop {
        let now = eval(
            &browser,
            &format!("return [{build}, {node}, document.getElementById('run-status').textContent]"),
        )
        .await;
        let (task, graph, run) = (
            now[0].as_str().unwrap_or("").to_string(),
            now[1].as_str().unwrap_or("").to_string(),
            now[2].as_str().unwrap_or("").to_string(),
        );
        if seen.last() != Some(&(task.clone(), graph.clone())) {
            if task == "running" {
                browser.screenshot("running").await;
            }
            seen.push((task, graph));
        }
        if run == "success" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run page never showed success; it showed {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.screenshot("success").await;
    let statuses: Vec<&str> = seen.iter().map(|(task, _)| task.as_str()).collect();
    let order = ["queued", "running", "success"];
    let mut at = 0;
    for status in &statuses {
        if at < order.len() && *status == order[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        order.len(),
        "build went queued → running → success on the page: {seen:?}"
    );
    // The graph's box changed colour with the table.
    for (task, graph) in &seen {
        assert_eq!(graph, &format!("node s-{task}"), "graph and table agree");
    }
    assert!(
        still_marked(&browser).await,
        "the page changed without being loaded again"
    );
    assert_eq!(
        browser.here().await,
        format!("/jobs/app/runs/{number}"),
        "no navigation"
    );
    // The second task ran too, and the graph says how long it took.
    wait_until(
        &browser,
        "return document.querySelector('svg.graph a[href$=\"/tasks/test\"] text.meta').textContent.startsWith('success · ')",
        "the graph showing test's success and duration",
    )
    .await;
    assert!(
        !browser.has("#cancel").await,
        "an ended run has no cancel button"
    );
    assert_eq!(
        eval(&browser, "return document.activeElement.id").await,
        "rerun",
        "the focused button kept its focus"
    );
}

#[tokio::test]
async fn the_dashboard_and_the_job_page_show_new_runs_without_reloading() {
    let server = Server::start(None);
    job(&server, "app", QUICK, "private").await;
    job(&server, "secret", QUICK, "private").await;
    member(&server, "dev", "app", "developer").await;
    let first = trigger(&server, "app").await;
    server.wait_for_run("app", first).await;
    let browser = Browser::start(&server, "live-lists").await;
    browser.goto("/login").await;
    browser.sign_in("dev", PASSWORD).await;
    browser.arrive(|here| here == "/").await;

    // The dashboard: a run triggered through the API appears on top, the
    // focused link keeps its focus, another job's run stays hidden.
    assert!(browser.has("tr[data-key=\"run-app-1\"]").await);
    mark(&browser).await;
    eval(
        &browser,
        "document.querySelector('a[href=\"/jobs/app/runs/1\"]').focus(); return true",
    )
    .await;
    trigger(&server, "secret").await;
    let second = trigger(&server, "app").await;
    wait_until(
        &browser,
        &format!(
            "const rows = document.querySelectorAll('#live-runs tbody tr'); \
             return rows.length === 2 && rows[0].dataset.key === 'run-app-{second}'"
        ),
        "the new run on top of the dashboard",
    )
    .await;
    server.wait_for_run("app", second).await;
    wait_until(
        &browser,
        &format!(
            "return document.querySelector('tr[data-key=\"run-app-{second}\"] .status').textContent === 'success'"
        ),
        "the new run's success on the dashboard",
    )
    .await;
    browser.screenshot("dashboard").await;
    assert!(
        still_marked(&browser).await,
        "the dashboard was not reloaded"
    );
    assert_eq!(
        eval(
            &browser,
            "return document.activeElement.getAttribute('href')"
        )
        .await,
        "/jobs/app/runs/1",
        "the focused link kept its focus"
    );
    assert!(
        !browser.has("tr[data-key^=\"run-secret-\"]").await,
        "a job the viewer may not read stays off the dashboard"
    );

    // The job page: a new run appears while the reader types a filter.
    browser.goto("/jobs/app").await;
    mark(&browser).await;
    let filter = browser
        .client
        .find(fantoccini::Locator::Css("#branch-filter"))
        .await
        .unwrap();
    filter.click().await.unwrap();
    filter.send_keys("feat").await.unwrap();
    let third = trigger(&server, "app").await;
    wait_until(
        &browser,
        &format!(
            "return document.querySelector('#live-runs tbody tr').dataset.key === 'run-app-{third}'"
        ),
        "the new run on the job page",
    )
    .await;
    browser.screenshot("job").await;
    assert!(
        still_marked(&browser).await,
        "the job page was not reloaded"
    );
    assert_eq!(
        eval(
            &browser,
            "return [document.activeElement.id, document.activeElement.value]"
        )
        .await,
        json!(["branch-filter", "feat"]),
        "what the reader was typing stays, with the focus"
    );

    // An older page of runs keeps to its runs: a new run is for page 1.
    server.wait_for_run("app", third).await;
    browser.goto(&format!("/jobs/app?before={third}")).await;
    mark(&browser).await;
    let fourth = trigger(&server, "app").await;
    server.wait_for_run("app", fourth).await;
    // Time for a refresh the feed might have caused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !browser
            .has(&format!("tr[data-key=\"run-app-{fourth}\"]"))
            .await,
        "an older page does not take new runs"
    );
    assert!(browser.has("tr[data-key=\"run-app-1\"]").await);
    assert!(still_marked(&browser).await);
}

/// The `data-live` feed a page names, unescaped.
fn feed_of(html: &str) -> String {
    html.split("data-live=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no data-live on the page: {html}"))
        .replace("&amp;", "&")
}

#[tokio::test]
async fn the_dashboard_pages_back_and_its_feed_starts_where_the_page_was_read() {
    // No worker: the runs stay queued, and nothing else changes meanwhile.
    let server = Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    job(&server, "app", QUICK, "private").await;
    job(&server, "other", QUICK, "private").await;
    for n in 1..=55 {
        trigger(&server, if n % 5 == 0 { "other" } else { "app" }).await;
    }
    let first = server.get("/").await.text().await.unwrap();
    assert_eq!(
        first.matches("data-key=\"run-").count(),
        50,
        "the dashboard shows 50 runs"
    );
    let top = first.find("data-key=\"run-other-11\"").unwrap();
    assert!(
        top < first.find("data-key=\"run-app-44\"").unwrap(),
        "newest first, across jobs"
    );
    let older = first
        .split("href=\"/?before=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an Older runs link");
    let second = server
        .get(&format!("/?before={older}"))
        .await
        .text()
        .await
        .unwrap();
    let keys: Vec<&str> = second
        .split("data-key=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(
        keys,
        [
            "run-other-1",
            "run-app-4",
            "run-app-3",
            "run-app-2",
            "run-app-1"
        ],
        "the second page holds the 5 oldest"
    );
    assert!(second.contains("← Newest"));

    // The feed the page names replays what happened after it was read, and
    // only that: a run made since is not missed between page and feed.
    let feed = feed_of(&first);
    let made = trigger(&server, "app").await;
    let replay = server
        .get(&format!("{feed}&timeout=0"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        replay.contains(&format!("\"number\":{made}")),
        "the run made after the page is in its feed: {replay}"
    );
    assert!(
        !replay.contains("\"number\":44,"),
        "what the page already showed is not sent again: {replay}"
    );
}

/// A `kiln server` on a fixed port, so one that restarts is at the same
/// address for a page left open.
struct FixedServer {
    child: std::process::Child,
}

impl FixedServer {
    fn start(data_dir: &std::path::Path, port: u16) -> FixedServer {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--grpc-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("KILN_ADMIN_TOKEN", crate::server::ADMIN)
            .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("the server ended before listening")
                .unwrap();
            if line.contains("listening on") {
                break;
            }
        }
        // Keep reading, so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        FixedServer { child }
    }

    /// SIGTERM, and waits for the end: open streams are ended, not cut.
    fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for FixedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_live_page_rides_out_a_server_restart() {
    let data = tempfile::tempdir().unwrap();
    let port = crate::ui::free_port();
    let base = format!("http://127.0.0.1:{port}");
    // reqwest is built without a default TLS provider; plain HTTP still needs one chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let api = |method: Method, path: &str| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(crate::server::ADMIN)
    };
    let first = FixedServer::start(data.path(), port);
    let created = api(Method::PUT, "/api/v1/jobs/app")
        .json(&json!({"kind": "freestyle", "pipeline": QUICK, "visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let made = api(Method::POST, "/api/v1/jobs/app/runs")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);

    // The browser needs a server to start against; it reads the other.
    let other = Server::start_for_agents(tempfile::tempdir().unwrap(), "127.0.0.1:0");
    let browser = Browser::start(&other, "live-restart").await;
    browser.client.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.has("tr[data-key=\"run-app-1\"]").await);
    mark(&browser).await;

    // The server goes away and comes back (same data, same address); the
    // page, left open, picks up a run made after.
    first.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _second = FixedServer::start(data.path(), port);
    let made = api(Method::POST, "/api/v1/jobs/app/runs")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    wait_until(
        &browser,
        "return document.querySelector('#live-runs tbody tr').dataset.key === 'run-app-2'",
        "the run made after the restart on the open dashboard",
    )
    .await;
    browser.screenshot("after-restart").await;
    assert!(
        still_marked(&browser).await,
        "the page caught up without being loaded again"
    );
}
