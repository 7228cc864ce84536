//! The task page's log view in a real browser (the harness of `ui.rs`)
//! and its window and search routes over HTTP: a long log opens on its
//! tail numbered as in the whole log, `#L{n}` opens any window, paging
//! keeps the page's lines bounded, search jumps to a match, and a running
//! task's log grows on the page without reloading.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::Server;
use crate::ui::{Browser, job};

/// The most lines the page may hold, whatever the log's size.
const BOUND: u64 = 3000;

/// 200 000 numbers: line 1 is the step's `--- step 1: count` line, so
/// number `k` is on line `k + 1`.
const LONG: &str = r#"
version: 1
tasks:
  count:
    steps:
      - name: count
        run: seq 1 200000
"#;

/// A task that prints a line every 0.2 s for 14 s.
const DRIP: &str = r#"
version: 1
tasks:
  drip:
    steps:
      - name: warm up
        run: echo warming
      - name: drip
        run: for i in $(seq 1 70); do echo "tick $i"; sleep 0.2; done
"#;

async fn run_to_end(server: &Server, name: &str, pipeline: &str) {
    job(server, name, pipeline, "public").await;
    let (status, run) = server
        .send(
            Method::POST,
            &format!("/api/v1/jobs/{name}/runs"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run = server.wait_for_run(name, 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
}

/// Runs `script` in the page and returns its value.
async fn eval(browser: &Browser, script: &str) -> Value {
    browser.client.execute(script, vec![]).await.unwrap()
}

/// How many lines the page holds, and the first and last one's numbers.
async fn held(browser: &Browser) -> (u64, u64, u64) {
    let value = eval(
        browser,
        "const l = document.querySelectorAll('.log > .l'); \
         return l.length ? [l.length, +l[0].id.slice(1), +l[l.length - 1].id.slice(1)] : [0, 0, 0]",
    )
    .await;
    let n = |k: usize| value[k].as_u64().unwrap();
    (n(0), n(1), n(2))
}

/// Waits until `check` holds of what the page holds.
async fn until(
    browser: &Browser,
    what: &str,
    check: impl Fn((u64, u64, u64)) -> bool,
) -> (u64, u64, u64) {
    let started = Instant::now();
    loop {
        let now = held(browser).await;
        if check(now) {
            return now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: the page holds {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn line_text(browser: &Browser, line: u64) -> Value {
    browser
        .client
        .execute(
            "const e = document.querySelector(`#L${arguments[0]} .t`); return e ? e.textContent : null",
            vec![json!(line)],
        )
        .await
        .unwrap()
}

fn files_named(dir: &Path, suffix: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_named(&path, suffix, found);
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
}

#[tokio::test]
async fn a_long_log_opens_on_its_tail_and_any_line_pages_and_searches_within_bounds() {
    let server = Server::start(None);
    run_to_end(&server, "long", LONG).await;
    let page = "/jobs/long/runs/1/tasks/count";

    // Before any script: the server's page holds the tail, numbered as in
    // the whole log.
    let html = server.get(page).await.text().await.unwrap();
    assert!(
        html.contains("id=\"L200001\""),
        "the last line is in the page"
    );
    assert!(html.contains("Lines 199002–200001 of 200001"));

    let browser = Browser::start(&server, "long-log").await;
    browser.goto(page).await;
    let (count, first, last) = held(&browser).await;
    assert_eq!((count, first, last), (1000, 199_002, 200_001));
    assert_eq!(line_text(&browser, 200_001).await, "200000");
    assert!(
        browser
            .text("#log-range")
            .await
            .contains("Lines 199002–200001 of 200001")
    );
    assert!(
        browser
            .client
            .find(Locator::Css("#raw-log"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .unwrap()
            .contains("/results/console")
    );
    browser.screenshot("tail").await;

    // A link to a line far from the tail opens the window around it.
    browser.goto(&format!("{page}#L150000")).await;
    until(&browser, "#L150000 opens its window", |(_, first, last)| {
        first <= 150_000 && 150_000 <= last
    })
    .await;
    assert_eq!(line_text(&browser, 150_000).await, "149999");
    let marked = eval(
        &browser,
        "return document.getElementById('L150000').classList.contains('target')",
    )
    .await;
    assert_eq!(marked, Value::Bool(true), "the linked line is marked");
    browser.screenshot("line-150000").await;

    // Paging back adds earlier lines above, and never holds more than the bound.
    let (_, mut first, _) = held(&browser).await;
    for _ in 0..4 {
        browser.click("#log-older").await;
        let before = first;
        let now = until(&browser, "earlier lines come", |(_, f, _)| f < before).await;
        assert!(now.0 <= BOUND, "the page holds {} lines", now.0);
        assert_eq!(now.2 - now.1 + 1, now.0, "the lines held run without a gap");
        assert_eq!(line_text(&browser, now.1).await, (now.1 - 1).to_string());
        first = now.1;
    }
    let (count, first, _) = held(&browser).await;
    assert_eq!(count, BOUND, "four pages back the page is full, not fuller");
    assert_eq!(first, 149_500 - 4000, "each page is 1 000 lines");
    browser.screenshot("paged-back").await;

    // Search on the server: the next match, then the previous one, each
    // opened and marked.
    browser
        .client
        .find(Locator::Css("#log-q"))
        .await
        .unwrap()
        .send_keys("199999")
        .await
        .unwrap();
    browser.click("#log-next").await;
    until(&browser, "search jumps forward", |(_, f, l)| {
        f <= 200_000 && 200_000 <= l
    })
    .await;
    let started = Instant::now();
    while eval(&browser, "return !!document.querySelector('#L200000.hit')").await
        != Value::Bool(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the match is not marked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(browser.text("#log-found").await, "Line 200000");
    let query = browser.client.find(Locator::Css("#log-q")).await.unwrap();
    query.clear().await.unwrap();
    query.send_keys("123456").await.unwrap();
    browser.click("#log-prev").await;
    until(&browser, "search jumps back", |(_, f, l)| {
        f <= 123_457 && 123_457 <= l
    })
    .await;
    assert_eq!(line_text(&browser, 123_457).await, "123456");
    assert!(held(&browser).await.0 <= BOUND);
    browser.screenshot("search").await;

    // The step heads its section, with its status and a fold button.
    browser.goto(&format!("{page}#L1")).await;
    until(&browser, "#L1 opens the start", |(_, f, _)| f == 1).await;
    assert!(browser.text("#L1.sh .sm").await.contains("success"));
    browser.click("#L1 button.fold").await;
    let shown = eval(
        &browser,
        "return [getComputedStyle(document.getElementById('L2')).display, \
                 getComputedStyle(document.getElementById('L1')).display]",
    )
    .await;
    assert_eq!(
        shown,
        json!(["none", "flex"]),
        "folding the step hides its lines, not its head"
    );
    browser.screenshot("folded").await;
    browser.click("#L1 button.fold").await;
    let shown = eval(
        &browser,
        "return getComputedStyle(document.getElementById('L2')).display",
    )
    .await;
    assert_eq!(shown, "flex", "unfolding shows them again");
}

#[tokio::test]
async fn the_window_and_search_routes_answer_lines_of_the_whole_log_and_refuse_bad_input() {
    let server = Server::start(None);
    run_to_end(&server, "long", LONG).await;
    let log = "/jobs/long/runs/1/tasks/count/log";

    let window: Value = server
        .get(&format!("{log}?from=150000&to=150002"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(window["first"], 150_000, "{}", window["total"]);
    assert_eq!(window["last"], 150_002);
    assert_eq!(window["total"], 200_001);
    assert_eq!(window["live"], false);
    let html = window["html"].as_str().unwrap();
    assert!(html.contains("id=\"L150001\""), "{html}");
    assert!(html.contains(">150000</span>"), "{html}");

    // The log moves to the blob store with its line index next to it (the
    // run may say `success` a moment before).
    let started = Instant::now();
    let index = loop {
        let mut indexes = Vec::new();
        files_named(server.data_dir.path(), ".log.index", &mut indexes);
        if let [index] = &indexes[..] {
            break index.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{indexes:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A log kept before indexes existed opens too, on a server that never
    // saw it: its index is made again, and kept.
    let dir = server.stop();
    std::fs::remove_file(&index).unwrap();
    let server = Server::start_in(dir, None);
    let window: Value = server
        .get(&format!("{log}?line=100000"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(window["first"], 99_500);
    assert_eq!(window["last"], 100_499);
    assert!(index.exists(), "the index is kept again");

    let found: Value = server
        .get(&format!("{log}/search?q=77777&line=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["line"], 77_778);
    let found: Value = server
        .get(&format!("{log}/search?q=77777&line=77778"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["line"], 177_778, "the next match after the first");
    let found: Value = server
        .get(&format!("{log}/search?q=77777&back=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["line"], 177_778, "backwards from the end");
    let found: Value = server
        .get(&format!("{log}/search?q=STEP%201"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["line"], 1, "case does not matter");
    let found: Value = server
        .get(&format!("{log}/search?q=nowhere"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["line"], Value::Null);

    for bad in ["?from=0", "?from=x", "?line=-3", "?from=10&to=5"] {
        let response = server.get(&format!("{log}{bad}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body = response.text().await.unwrap();
        assert!(
            body.contains("line number") || body.contains("before"),
            "{bad}: {body}"
        );
    }
    let response = server.get(&format!("{log}/search?q=")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // The same visitors as the page: nobody reads a private job's log
    // without being let in.
    job(&server, "secret", LONG, "private").await;
    let anonymous = reqwest::get(format!("{}/jobs/secret/runs/1/tasks/count/log", server.url))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_running_tasks_log_grows_on_the_page_and_its_steps_are_sections() {
    let server = Server::start(None);
    job(&server, "drip", DRIP, "public").await;
    let (status, run) = server
        .send(Method::POST, "/api/v1/jobs/drip/runs", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    // Open the page once the task printed its first ticks.
    let started = Instant::now();
    loop {
        let window: Value = server
            .get("/jobs/drip/runs/1/tasks/drip/log")
            .await
            .json()
            .await
            .unwrap_or(Value::Null);
        if window["html"]
            .as_str()
            .is_some_and(|h| h.contains("tick 2<"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the task never ticked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let browser = Browser::start(&server, "live-log").await;
    browser.goto("/jobs/drip/runs/1/tasks/drip").await;
    assert!(browser.text("#log-follow").await.contains("Following"));
    let (_, _, at_open) = held(&browser).await;
    // Without reloading, later ticks arrive, numbered on.
    let (_, first, last) = until(&browser, "new lines arrive", |(_, _, last)| {
        last >= at_open + 10
    })
    .await;
    assert_eq!(first, 1);
    let ticks = eval(
        &browser,
        "return [...document.querySelectorAll('.log > .l .t')].map(e => e.textContent).filter(t => t.startsWith('tick ')).length",
    )
    .await;
    assert!(ticks.as_u64().unwrap() >= 12, "{ticks}");
    assert!(last > at_open);
    browser.screenshot("following").await;

    // Scrolled up, the viewer stays where they are as lines come; at the
    // bottom, the page scrolls with them.
    until(
        &browser,
        "the page grows taller than the window",
        |(_, _, last)| last >= 35,
    )
    .await;
    eval(&browser, "window.scrollTo(0, 0)").await;
    let (_, _, before) = held(&browser).await;
    until(&browser, "lines come while scrolled up", |(_, _, last)| {
        last >= before + 3
    })
    .await;
    assert_eq!(eval(&browser, "return window.scrollY").await, json!(0));
    eval(
        &browser,
        "window.scrollTo(0, document.documentElement.scrollHeight)",
    )
    .await;
    let (_, _, before) = held(&browser).await;
    until(
        &browser,
        "lines come while at the bottom",
        |(_, _, last)| last >= before + 3,
    )
    .await;
    let at_bottom = eval(
        &browser,
        "return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40",
    )
    .await;
    assert_eq!(
        at_bottom,
        Value::Bool(true),
        "the page follows the new lines"
    );
    // The run ends on the page too, with every tick once.
    let started = Instant::now();
    while !browser.text("#log-follow").await.contains("ended") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the page never saw the end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ticks = eval(
        &browser,
        "return [...document.querySelectorAll('.log > .l .t')].map(e => e.textContent).filter(t => t.startsWith('tick '))",
    )
    .await;
    let ticks: Vec<String> = serde_json::from_value(ticks).unwrap();
    let want: Vec<String> = (1..=70).map(|i| format!("tick {i}")).collect();
    assert_eq!(ticks, want);
    // The step's head and the task's status caught up without a reload.
    assert_eq!(browser.text("#L3.sh .sm .status").await, "success");
    assert_eq!(browser.text("#task-status").await, "success");
    // Each step heads its section, in the order of the steps.
    let heads = eval(
        &browser,
        "return [...document.querySelectorAll('.log > .l.sh .t')].map(e => e.textContent)",
    )
    .await;
    assert_eq!(heads, json!(["--- step 1: warm up", "--- step 2: drip"]));
    assert!(browser.has(".log-steps a[href='#L1']").await);
    browser.screenshot("ended").await;
}
