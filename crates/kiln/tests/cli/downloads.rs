//! Artifacts downloaded as a user would: by the `url` the results list,
//! with curl, whatever the file is called, resumed with `Range`. On a real
//! server whose worker runs the task on the process executor and uploads
//! what it made.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::server::{ADMIN, Server};

/// A matrix task (its name holds `[`, `=` and `]`, which curl would read as
/// a glob) making files whose names need encoding in a URL.
const PIPELINE: &str = r#"version: 1
tasks:
  build:
    matrix: { flavour: [plain] }
    steps:
      - run: |
          mkdir -p o
          echo "résumé of run $KILN_RUN" > 'o/résumé final #1.txt'
          echo question > 'o/what?.txt'
          echo percent > 'o/100% done.txt'
          seq 1 100000 > o/numbers.txt
    artifacts: { paths: [o/] }
"#;

const TASK: &str = "/api/v1/jobs/dl/runs/1/tasks/build%5Bflavour%3Dplain%5D";

/// `curl` as a user runs it on `$SERVER$url`, with `extra` arguments;
/// returns what it printed and the response's headers.
fn curl(server: &Server, url: &str, extra: &[&str], dir: &Path) -> (Vec<u8>, String) {
    let headers = dir.join("headers");
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail"])
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
        .arg("--dump-header")
        .arg(&headers)
        .args(extra)
        .arg(format!("{}{url}", server.url))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.stdout, std::fs::read_to_string(headers).unwrap())
}

/// The value of header `name` in curl's dump of the last response.
fn header<'a>(dump: &'a str, name: &str) -> Option<&'a str> {
    dump.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
        .next_back()
}

async fn listed_urls(server: &Server) -> Vec<(String, String)> {
    let run = server.wait_for_run("dl", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    let results = server.json(&format!("{TASK}/results")).await;
    results["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a: &Value| {
            let (path, url) = (a["path"].as_str(), a["url"].as_str());
            (path.unwrap().to_string(), url.unwrap().to_string())
        })
        .collect()
}

#[tokio::test]
async fn artifacts_with_any_name_download_by_their_listed_url() {
    let server = Server::start(None);
    server.freestyle("dl", PIPELINE).await;
    let urls = listed_urls(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = [
        ("o/100% done.txt", "percent\n"),
        ("o/résumé final #1.txt", "résumé of run 1\n"),
        ("o/what?.txt", "question\n"),
    ];
    for (path, content) in expected {
        let (_, url) = urls
            .iter()
            .find(|(listed, _)| listed == path)
            .unwrap_or_else(|| panic!("{path} is not listed: {urls:?}"));
        let (body, headers) = curl(&server, url, &[], dir.path());
        assert_eq!(String::from_utf8(body).unwrap(), content, "{url}");
        assert_eq!(header(&headers, "accept-ranges"), Some("bytes"), "{url}");
        assert_eq!(
            header(&headers, "content-length"),
            Some(content.len().to_string().as_str())
        );
    }
    let (_, url) = urls.iter().find(|(p, _)| p.contains("sum")).unwrap();
    assert_eq!(
        url,
        &format!("{TASK}/results/artifacts/o/r%C3%A9sum%C3%A9%20final%20%231.txt")
    );
    let (_, headers) = curl(&server, url, &[], dir.path());
    assert_eq!(
        header(&headers, "content-disposition"),
        Some(
            "attachment; filename=\"r_sum_ final #1.txt\"; \
             filename*=UTF-8''r%C3%A9sum%C3%A9%20final%20#1.txt"
        )
    );
}

#[tokio::test]
async fn a_download_resumes_with_range() {
    let server = Server::start(None);
    server.freestyle("dl", PIPELINE).await;
    let urls = listed_urls(&server).await;
    let (_, url) = urls.iter().find(|(p, _)| p == "o/numbers.txt").unwrap();
    let whole: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
    let length = whole.len();

    // The first 100 000 bytes arrive, then the connection drops; curl
    // resumes where the file on disk ends (`-C -` sends `bytes=100000-`).
    let response = server.get_range(url, "bytes=0-99999").await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    let headers = response.headers().clone();
    assert_eq!(
        headers["content-range"],
        format!("bytes 0-99999/{length}").as_str()
    );
    assert_eq!(headers["content-length"], "100000");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("numbers.txt");
    std::fs::write(&file, response.bytes().await.unwrap()).unwrap();
    let (_, dump) = curl(
        &server,
        url,
        &["-C", "-", "-o", file.to_str().unwrap()],
        dir.path(),
    );
    assert!(dump.starts_with("HTTP/1.1 206"), "{dump}");
    assert_eq!(
        header(&dump, "content-range"),
        Some(format!("bytes 100000-{}/{length}", length - 1).as_str())
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), whole);

    // Past the end: 416, saying how long the file is.
    let past = server.get_range(url, &format!("bytes={length}-")).await;
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{length}").as_str()
    );
    assert_eq!(past.headers()["content-type"], "application/problem+json");

    // A range in a unit other than bytes is ignored: the whole file.
    let other = server.get_range(url, "items=0-1").await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(other.headers()["accept-ranges"], "bytes");
    assert_eq!(other.text().await.unwrap(), whole);
}
