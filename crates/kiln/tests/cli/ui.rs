//! The web UI in a real browser: Debian's `chromium`, driven over
//! WebDriver by Debian's `chromedriver` (scripts/setup-test-env.sh
//! installs both), against a real `kiln server` whose worker runs the
//! tasks. Each test saves a screenshot of every page it visits under
//! `$CARGO_TARGET_TMPDIR/ui-screenshots/<test>/`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{ADMIN_PASSWORD, Server};

/// A headless chromium behind its own chromedriver.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
    shots: PathBuf,
    pub(crate) base: String,
}

impl Drop for Browser {
    /// Ends chromedriver and the chromium it started: they share the
    /// process group chromedriver was started in.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium in it,
    /// pointed at `server`; screenshots go to a directory named `test`.
    pub(crate) async fn start(server: &Server, test: &str) -> Browser {
        Browser::start_with(server, test, &[]).await
    }

    /// The same, with more command-line arguments for chromium.
    pub(crate) async fn start_with(server: &Server, test: &str, extra: &[&str]) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (scripts/setup-test-env.sh installs chromium-driver)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Root in CI: chromium's sandbox needs a user namespace.
        let args: Vec<&str> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": args}),
        );
        // chromedriver is on loopback: plain HTTP, no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromium must start under chromedriver");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("ui-screenshots")
            .join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            shots,
            base: server.url.clone(),
        }
    }

    pub(crate) async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    /// The path (and query and fragment) the browser shows.
    pub(crate) async fn here(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        let mut path = url.path().to_string();
        if let Some(query) = url.query() {
            path = format!("{path}?{query}");
        }
        if let Some(fragment) = url.fragment() {
            path = format!("{path}#{fragment}");
        }
        path
    }

    /// Waits until the browser shows `want` (a click that submits a form
    /// returns before the next page is there); returns what it shows.
    pub(crate) async fn arrive(&self, want: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let here = self.here().await;
            if want(&here) {
                // The new page's document, not the old one's, is loaded.
                let ready = self
                    .client
                    .execute("return document.readyState", vec![])
                    .await
                    .unwrap();
                if ready == Value::String("complete".into()) {
                    return here;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the browser stayed at {here}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub(crate) async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    pub(crate) async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` to click: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks `css` and waits until another document replaced this one: for
    /// a form that leads back to the address it was posted from.
    pub(crate) async fn click_to_new_page(&self, css: &str) {
        self.client
            .execute("window.kilnOldPage = true", vec![])
            .await
            .unwrap();
        self.click(css).await;
        let started = Instant::now();
        loop {
            let old = self
                .client
                .execute("return window.kilnOldPage === true", vec![])
                .await
                // A document in the middle of loading has no answer yet.
                .unwrap_or(Value::Bool(true));
            if old == Value::Bool(false) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "clicking `{css}` loaded no new page"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn title(&self) -> String {
        self.client.title().await.unwrap()
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    pub(crate) async fn sign_in(&self, user: &str, password: &str) {
        self.client
            .find(Locator::Css("#username"))
            .await
            .unwrap()
            .send_keys(user)
            .await
            .unwrap();
        self.client
            .find(Locator::Css("#password"))
            .await
            .unwrap()
            .send_keys(password)
            .await
            .unwrap();
        self.click("form button[type=submit]").await;
    }

    /// Reloads the page until `css`'s text is `want` (live updates come
    /// later; for now a person reloads).
    pub(crate) async fn reload_until(&self, css: &str, want: &str) {
        let started = Instant::now();
        loop {
            // One script reads the element, so a page that is replaced
            // between finding and reading it cannot fail the test.
            let now = self
                .client
                .execute(
                    "const e = document.querySelector(arguments[0]); return e ? e.innerText : null",
                    vec![Value::String(css.into())],
                )
                .await
                // A page in the middle of navigating has nothing to read yet.
                .unwrap_or(Value::Null);
            if now == Value::String(want.into()) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "`{css}` never read `{want}` on {}",
                self.here().await
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.client.refresh().await.unwrap();
        }
    }
}

pub(crate) const PASSWORD: &str = "a-long-test-password";

/// A user with a password and a role on `job`, made by the admin.
pub(crate) async fn member(server: &Server, user: &str, job: &str, role: &str) {
    let (status, body) = server
        .send(
            Method::POST,
            "/api/v1/users",
            json!({"name": user, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server
        .send(
            Method::PUT,
            &format!("/api/v1/jobs/{job}/members/{user}"),
            json!({"role": role}),
        )
        .await;
    assert!(status.is_success(), "{body}");
}

pub(crate) async fn job(server: &Server, name: &str, pipeline: &str, visibility: &str) {
    let (status, body) = server
        .send(
            Method::PUT,
            &format!("/api/v1/jobs/{name}"),
            json!({"kind": "freestyle", "pipeline": pipeline, "visibility": visibility}),
        )
        .await;
    assert!(status.is_success(), "{body}");
}

const COLOURED: &str = r#"
version: 1
tasks:
  build:
    steps:
      - name: colours
        run: |
          echo plain line
          printf '\033[31mred\033[0m\n'
          seq 1 30
  test:
    needs: [build]
    steps:
      - run: echo tested
"#;

/// About 600 KB of output: more than the database keeps of a finished log.
const BIG: &str = r#"
version: 1
tasks:
  count:
    steps:
      - run: seq 1 100000
"#;

/// A run that waits long enough to be cancelled.
const SLOW: &str = r#"
version: 1
tasks:
  wait:
    steps:
      - run: sleep 60
"#;

#[tokio::test]
async fn a_developer_signs_in_triggers_a_run_and_reads_its_coloured_log() {
    let server = Server::start(None);
    job(&server, "app", COLOURED, "private").await;
    member(&server, "dev", "app", "developer").await;
    let browser = Browser::start(&server, "developer").await;

    // A private page sends an anonymous visitor to sign in, and back.
    browser.goto("/jobs/app").await;
    assert_eq!(browser.here().await, "/login?next=%2Fjobs%2Fapp");
    assert_eq!(browser.title().await, "Sign in · Kiln");
    browser.screenshot("login").await;
    browser.sign_in("dev", "not-the-password").await;
    browser
        .arrive(|here| here == "/login?next=%2Fjobs%2Fapp")
        .await;
    browser
        .client
        .wait()
        .for_element(Locator::Css("#login-error"))
        .await
        .unwrap();
    assert!(
        browser
            .text("#login-error")
            .await
            .contains("wrong user name or password"),
        "a failed sign-in says so in the form"
    );
    browser.screenshot("login-failed").await;
    browser
        .client
        .find(Locator::Css("#password"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    browser.click("form button[type=submit]").await;
    browser.arrive(|here| here == "/jobs/app").await;
    assert_eq!(browser.title().await, "Job app · Kiln");
    assert!(browser.text("header.top .who").await.contains("dev"));
    browser.screenshot("job").await;

    // The trigger button makes a run and opens it.
    browser.click("#trigger").await;
    browser.arrive(|here| here == "/jobs/app/runs/1").await;
    browser.reload_until("#run-status", "success").await;
    assert_eq!(browser.title().await, "Run #1 of app · Kiln");
    let boxes = browser
        .client
        .find_all(Locator::Css("svg.graph a"))
        .await
        .unwrap();
    assert_eq!(boxes.len(), 2, "one box per task in the graph");
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("svg.graph path.edge"))
            .await
            .unwrap()
            .len(),
        1,
        "test needs build: one edge"
    );
    browser.screenshot("run").await;

    // The task page shows the log, coloured on the server.
    browser.click("table.tasks a[href$='/tasks/build']").await;
    browser
        .arrive(|here| here == "/jobs/app/runs/1/tasks/build")
        .await;
    assert_eq!(browser.title().await, "build · run #1 of app · Kiln");
    assert_eq!(browser.text(".log span.f1").await, "red");
    let red = browser
        .client
        .execute(
            "return document.querySelector('.log span.f1').closest('.l').id",
            vec![],
        )
        .await
        .unwrap();
    let red: u64 = red
        .as_str()
        .unwrap()
        .trim_start_matches('L')
        .parse()
        .unwrap();
    assert_eq!(
        browser.text(&format!(".log #L{} .t", red - 1)).await,
        "plain line",
        "lines keep their order and numbers"
    );
    let raw = browser
        .client
        .find(Locator::Css("#raw-log"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(raw.contains("/results/console"), "{raw}");
    browser.screenshot("task").await;

    // A line number links to its line: `seq`'s 18 is 18 lines below red.
    let line = red + 18;
    assert_eq!(browser.text(&format!(".log #L{line} .t")).await, "18");
    browser.click(&format!(".log #L{line} > a")).await;
    assert_eq!(
        browser.here().await,
        format!("/jobs/app/runs/1/tasks/build#L{line}")
    );
    let target = browser
        .client
        .execute("return document.querySelector(':target').id", vec![])
        .await
        .unwrap();
    assert_eq!(target, Value::String(format!("L{line}")));

    // The dashboard lists the run; at phone width it still fits.
    browser.goto("/").await;
    assert_eq!(browser.title().await, "Recent runs · Kiln");
    assert!(browser.has("a[href='/jobs/app/runs/1']").await);
    browser.client.set_window_size(360, 800).await.unwrap();
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        Value::Bool(false),
        "the page scrolls sideways at 360 px"
    );
    browser.screenshot("dashboard-phone").await;
    browser.client.set_window_size(1280, 1000).await.unwrap();

    // Signing out ends the session.
    browser.click("header.top .who button").await;
    browser.arrive(|here| here == "/login").await;
    browser.goto("/jobs/app").await;
    assert!(browser.here().await.starts_with("/login?next="));
}

#[tokio::test]
async fn a_viewer_cannot_trigger_and_anonymous_visitors_read_only_public_jobs() {
    let server = Server::start(None);
    job(&server, "open", COLOURED, "public").await;
    job(&server, "secret", COLOURED, "private").await;
    member(&server, "vic", "secret", "viewer").await;
    let (status, run) = server
        .send(Method::POST, "/api/v1/jobs/open/runs", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run = server.wait_for_run("open", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");

    let browser = Browser::start(&server, "viewer").await;
    // Anyone reads a public job's run and its log.
    browser.goto("/jobs/open/runs/1").await;
    assert_eq!(browser.here().await, "/jobs/open/runs/1");
    assert_eq!(browser.text("#run-status").await, "success");
    assert!(
        !browser.has("#rerun").await,
        "anonymous visitors act on nothing"
    );
    browser.screenshot("public-run").await;
    browser.goto("/jobs/open/runs/1/tasks/build").await;
    assert_eq!(browser.text(".log span.f1").await, "red");
    // …and its badge; a private job has none.
    browser.goto("/jobs/open").await;
    assert!(browser.has("img[src^='/jobs/open/badge.svg']").await);
    let badge = server
        .request(Method::GET, "/jobs/open/badge.svg", None)
        .send()
        .await
        .unwrap();
    assert_eq!(badge.status(), StatusCode::OK);
    assert_eq!(
        badge.headers()["content-type"],
        "image/svg+xml; charset=utf-8"
    );
    assert!(badge.text().await.unwrap().contains(">success</text>"));
    let hidden = server
        .request(Method::GET, "/jobs/secret/badge.svg", None)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);

    // Pages link their stylesheet by a hashed name, cached for good, gzipped.
    let page = server.request(Method::GET, "/", None).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    let css = html
        .split("href=\"")
        .filter_map(|rest| rest.split('"').next())
        .find(|href| href.starts_with("/assets/kiln.") && href.ends_with(".css"))
        .expect("the page links its stylesheet")
        .to_string();
    let asset = server
        .request(Method::GET, &css, None)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
    assert_eq!(
        asset.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(asset.headers()["content-encoding"], "gzip");

    // A private job sends the anonymous visitor to sign in.
    browser.goto("/jobs/secret").await;
    assert_eq!(browser.here().await, "/login?next=%2Fjobs%2Fsecret");
    browser.sign_in("vic", PASSWORD).await;
    browser.arrive(|here| here == "/jobs/secret").await;
    assert!(
        !browser.has("#trigger").await,
        "a viewer has no trigger button"
    );
    browser.screenshot("viewer-job").await;

    // Posting the trigger form anyway (with the session's own form
    // token, from the sign-out form) is refused, and makes no run.
    browser
        .client
        .execute(
            "const form = document.createElement('form');
             form.method = 'post';
             form.action = '/jobs/secret/trigger';
             const token = document.createElement('input');
             token.name = 'csrf';
             token.value = document.querySelector('input[name=csrf]').value;
             form.append(token);
             document.body.append(form);
             form.submit();",
            vec![],
        )
        .await
        .unwrap();
    browser.arrive(|here| here == "/jobs/secret/trigger").await;
    assert_eq!(browser.text("h1").await, "Not allowed");
    assert!(browser.text("p.error").await.contains("developer"));
    browser.screenshot("viewer-refused").await;
    let runs = server.json("/api/v1/jobs/secret/runs").await;
    assert_eq!(runs["runs"], json!([]), "the refused post made no run");

    // A form without the session's token is refused too, even same-origin.
    browser.goto("/jobs/open").await;
    browser
        .client
        .execute(
            "const form = document.createElement('form');
             form.method = 'post';
             form.action = '/jobs/open/runs/1/rerun';
             document.body.append(form);
             form.submit();",
            vec![],
        )
        .await
        .unwrap();
    browser
        .arrive(|here| here == "/jobs/open/runs/1/rerun")
        .await;
    assert!(browser.text("p.error").await.contains("out of date"));
    let runs = server.json("/api/v1/jobs/open/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);

    // A log too big to stay in the database opens on its tail: the last
    // 1 000 lines, read from the end of the stored file.
    job(&server, "big", BIG, "public").await;
    let (status, run) = server
        .send(Method::POST, "/api/v1/jobs/big/runs", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run = server.wait_for_run("big", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    browser.goto("/jobs/big/runs/1/tasks/count").await;
    let lines = browser
        .client
        .find_all(Locator::Css(".log .l"))
        .await
        .unwrap();
    assert_eq!(lines.len(), 1000);
    assert_eq!(browser.text(".log .l:last-child .t").await, "100000");
    assert_eq!(browser.text(".log .l:first-child .t").await, "99001");
    // Numbered as lines of the whole log (the first is the step's header).
    let range = browser.text("#log-range").await;
    assert!(range.contains("Lines 99002–100001 of 100001"), "{range}");
    browser.screenshot("big-log").await;

    // Admin pages are for admins.
    browser.goto("/agents").await;
    assert_eq!(browser.text("h1").await, "Not allowed");
}

#[tokio::test]
async fn an_admin_sees_the_agents_and_cancels_a_run_with_the_button() {
    let server = Server::start(None);
    let browser = Browser::start(&server, "admin").await;
    browser.goto("/agents").await;
    browser.arrive(|here| here == "/login?next=%2Fagents").await;
    browser.sign_in("admin", ADMIN_PASSWORD).await;
    browser.arrive(|here| here == "/agents").await;
    assert_eq!(browser.title().await, "Agents · Kiln");
    browser.text("#queued").await.parse::<i64>().unwrap();
    browser.screenshot("agents").await;

    // The cancel button stops a running run.
    job(&server, "slow", SLOW, "private").await;
    browser.goto("/jobs/slow").await;
    browser.click("#trigger").await;
    browser.arrive(|here| here == "/jobs/slow/runs/1").await;
    browser.click("#cancel").await;
    browser.reload_until("#run-status", "cancelled").await;
    assert!(
        !browser.has("#cancel").await,
        "an ended run has no cancel button"
    );
    browser.screenshot("cancelled").await;
}

/// A system that asks for the dark scheme gets it: the page's colours
/// switch, and a run's statuses and log stay readable (screenshots).
#[tokio::test]
async fn the_pages_follow_the_systems_dark_scheme() {
    let server = Server::start(None);
    job(&server, "app", COLOURED, "public").await;
    let (status, run) = server
        .send(Method::POST, "/api/v1/jobs/app/runs", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run = server.wait_for_run("app", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    // As a system set to dark does: `prefers-color-scheme: dark`.
    let browser = Browser::start_with(
        &server,
        "dark",
        &[
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ],
    )
    .await;
    browser.goto("/jobs/app/runs/1").await;
    let asks_dark = browser
        .client
        .execute(
            "return matchMedia('(prefers-color-scheme: dark)').matches",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(asks_dark, Value::Bool(true), "the browser asks for dark");
    let background = |css: &'static str| {
        let client = browser.client.clone();
        async move {
            client
                .execute(
                    "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor",
                    vec![Value::String(css.into())],
                )
                .await
                .unwrap()
        }
    };
    // kiln.css's dark `--bg`, #0d1117.
    assert_eq!(background("body").await, json!("rgb(13, 17, 23)"));
    browser.screenshot("run").await;
    browser.goto("/jobs/app/runs/1/tasks/build").await;
    assert_eq!(background("body").await, json!("rgb(13, 17, 23)"));
    // The log's red is the dark scheme's red (#ff7b72), not the light one's.
    let red = browser
        .client
        .execute(
            "return getComputedStyle(document.querySelector('.log .f1')).color",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(red, json!("rgb(255, 123, 114)"));
    browser.screenshot("task").await;
}
