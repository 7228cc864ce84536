//! A real `kiln server` (SQLite, no worker) with real `kiln agent`
//! processes (process executor) over gRPC on loopback: dispatch latency,
//! task throughput, idle RSS, and log ingest rate.
//!
//! `cargo bench -p kiln --bench agents` — uses `target/release/kiln`
//! (`scripts/bench.sh` builds it first; built here if missing).
//! `KILN_BENCH_TLS=1` runs the same over TLS (`--tls-cert`, the agents on
//! `https://` with `--ca-cert`), with certificates made at start.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

const ADMIN: &str = "kiln_bench_admin_token_0123456789";
const AGENT_TOKEN: &str = "kiln_bench_agent_token_0123456789";
const DISPATCHES: usize = 200;
const THROUGHPUT_TASKS: usize = 2_000;
const AGENTS: usize = 4;
const CAPACITY: u32 = 4;
const LOG_BYTES: u64 = 500_000_000;

/// A child process killed (SIGKILL) and reaped when dropped, panics included.
struct Guard {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Guard {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kiln_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("release/kiln");
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "kiln"])
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --release -p kiln failed");
    }
    binary
}

struct Server {
    guard: Guard,
    url: String,
    grpc: String,
    http: reqwest::Client,
    /// The CA of the server's certificate, when it serves TLS.
    ca: Option<PathBuf>,
}

/// Under `KILN_BENCH_TLS=1`: a CA and a server certificate for 127.0.0.1
/// signed by it, written to `dir` as `ca.pem`, `server.pem`, `server.key`.
fn tls_files(dir: &std::path::Path) -> Option<PathBuf> {
    std::env::var_os("KILN_BENCH_TLS")?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    Some(dir.join("ca.pem"))
}

impl Server {
    fn start(binary: &PathBuf) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ca = tls_files(dir.path());
        let mut command = Command::new(binary);
        if ca.is_some() {
            command
                .arg("server")
                .arg("--tls-cert")
                .arg(dir.path().join("server.pem"))
                .arg("--tls-key")
                .arg(dir.path().join("server.key"));
        } else {
            command.arg("server");
        }
        let mut child = command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                // The ingest section prints 500 MB, past the default limit.
                "--max-log-bytes",
                "1GiB",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env("KILN_ADMIN_TOKEN", ADMIN)
            .env("KILN_AGENT_TOKEN", AGENT_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let guard = Guard { child, _dir: dir };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    tx.send(("http", url.trim().to_string())).ok();
                }
                if let Some(address) = line.split("agents connect to ").nth(1) {
                    let address = address.trim().trim_end_matches(" (gRPC)");
                    tx.send(("grpc", address.to_string())).ok();
                }
            }
        });
        let (mut url, mut grpc) = (String::new(), String::new());
        while url.is_empty() || grpc.is_empty() {
            match rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the server did not start listening")
            {
                ("http", value) => url = value,
                (_, value) => grpc = value,
            }
        }
        let http = match &ca {
            Some(ca) => {
                let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
                reqwest::Client::builder()
                    .tls_certs_only([ca])
                    .build()
                    .unwrap()
            }
            None => reqwest::Client::new(),
        };
        Server {
            guard,
            url,
            grpc,
            http,
            ca,
        }
    }

    fn agent(&self, binary: &PathBuf, name: &str) -> Guard {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(binary);
        command.arg("agent");
        if let Some(ca) = &self.ca {
            command.arg("--ca-cert").arg(ca);
        }
        let mut child = command
            .args([
                "--server",
                &self.grpc,
                "--token",
                AGENT_TOKEN,
                "--executor",
                "process",
                "--name",
                name,
                "--labels",
                "linux",
                "--capacity",
                &CAPACITY.to_string(),
                "--work-dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("connected") {
                        tx.send(()).ok();
                    }
                }
            });
        }
        let guard = Guard { child, _dir: dir };
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("agent {name} did not connect"));
        guard
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn json(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "GET {path}");
        response.json().await.unwrap()
    }

    async fn put_job(&self, job: &str, pipeline: &str) {
        self.send(
            reqwest::Method::PUT,
            &format!("/api/v1/jobs/{job}"),
            json!({"kind": "freestyle", "pipeline": pipeline}),
        )
        .await;
    }

    async fn trigger(&self, job: &str) -> i64 {
        let run = self
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{job}/runs"),
                json!({}),
            )
            .await;
        run["number"].as_i64().unwrap()
    }

    /// Polls every `every` until the run ends; returns it.
    async fn wait_for_run(
        &self,
        job: &str,
        number: i64,
        every: Duration,
        limit: Duration,
    ) -> Value {
        let started = Instant::now();
        loop {
            // The runs list is polled, not the run: a wide run's detail
            // (every task and step) would cost the server more to render
            // than the work being measured.
            let runs = self.json(&format!("/api/v1/jobs/{job}/runs?limit=5")).await;
            let status = runs["runs"]
                .as_array()
                .and_then(|runs| runs.iter().find(|r| r["number"] == number))
                .and_then(|r| r["status"].as_str())
                .unwrap_or("")
                .to_string();
            if !["", "pending", "queued", "running"].contains(&status.as_str()) {
                return self
                    .json(&format!("/api/v1/jobs/{job}/runs/{number}"))
                    .await;
            }
            assert!(started.elapsed() < limit, "run {job}/{number} never ended");
            tokio::time::sleep(every).await;
        }
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
        .parse()
        .unwrap()
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let per_second: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0);
    ticks / per_second
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Whether a section runs: all of them, unless names are given after `--`
/// (`cargo bench -p kiln --bench agents -- throughput ingest`).
fn selected(section: &str) -> bool {
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    names.is_empty() || names.iter().any(|n| n == section)
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let binary = kiln_binary();
    if std::env::var_os("KILN_BENCH_TLS").is_some() {
        println!("over TLS (KILN_BENCH_TLS)");
    }
    if selected("rss") || selected("dispatch") || selected("ingest") {
        single_agent_sections(&binary).await;
    }
    if selected("throughput") {
        throughput(&binary).await;
    }
}

/// Sections 1, 3 and 4 share one server with one agent.
async fn single_agent_sections(binary: &PathBuf) {
    // 3. RSS, idle (measured first, printed with its section number).
    let server = Server::start(binary);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_rss = rss_mb(server.guard.pid());
    let agent = server.agent(binary, "bench-1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let agent_rss = rss_mb(agent.pid());
    println!(
        "3. RSS idle (SQLite): server {server_rss:.1} MB (target <= 40), agent {agent_rss:.1} MB (target <= 15)"
    );

    // 1. Dispatch latency: one idle agent, one trivial task at a time.
    server
        .put_job(
            "dispatch",
            "version: 1\ntasks:\n  one:\n    steps: [{run: 'true'}]\n",
        )
        .await;
    let mut latencies = Vec::with_capacity(DISPATCHES);
    for _ in 0..DISPATCHES {
        let number = server.trigger("dispatch").await;
        let run = server
            .wait_for_run(
                "dispatch",
                number,
                Duration::from_millis(1),
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(run["status"], "success", "{run:#}");
        let started = time(&run["tasks"][0]["steps"][0]["started_at"]);
        let created = time(&run["created_at"]);
        latencies.push((started - created).num_microseconds().unwrap() as f64 / 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "1. dispatch latency ({DISPATCHES} runs, 1 idle agent): p50 {:.1} ms (target <= 5), p99 {:.1} ms (target <= 25)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );

    if !selected("ingest") {
        return;
    }
    // 4. Log ingest: one task printing LOG_BYTES; RSS sampled meanwhile.
    server
        .put_job(
            "ingest",
            &format!(
                "version: 1\ntasks:\n  flood:\n    steps: [{{run: 'yes \"kiln log ingest benchmark line of about sixty bytes......\" | head -c {LOG_BYTES}'}}]\n"
            ),
        )
        .await;
    let (server_pid, agent_pid) = (server.guard.pid(), agent.pid());
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let (mut server_peak, mut agent_peak) = (0f64, 0f64);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                server_peak = server_peak.max(rss_mb(server_pid));
                agent_peak = agent_peak.max(rss_mb(agent_pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            (server_peak, agent_peak)
        })
    };
    let number = server.trigger("ingest").await;
    let run = server
        .wait_for_run(
            "ingest",
            number,
            Duration::from_millis(100),
            Duration::from_secs(300),
        )
        .await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (server_peak, agent_peak) = sampler.join().unwrap();
    assert_eq!(run["status"], "success", "{run:#}");
    let task = &run["tasks"][0];
    let seconds = (time(&task["finished_at"]) - time(&task["started_at"]))
        .num_microseconds()
        .unwrap() as f64
        / 1e6;
    let response = server
        .http
        .get(format!(
            "{}/api/v1/jobs/ingest/runs/{number}/tasks/flood/results/console",
            server.url
        ))
        .bearer_auth(ADMIN)
        .header("Range", "bytes=-100")
        .send()
        .await
        .unwrap();
    let content_range = response
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let stored: u64 = content_range
        .rsplit('/')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    // The console starts with the runner's `--- step 1: …` header line;
    // the step's own output is what follows it.
    let head = server
        .http
        .get(format!(
            "{}/api/v1/jobs/ingest/runs/{number}/tasks/flood/results/console",
            server.url
        ))
        .bearer_auth(ADMIN)
        .header("Range", "bytes=0-299")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header = if head.starts_with("--- step") {
        head.find('\n').map_or(0, |i| i as u64 + 1)
    } else {
        0
    };
    let output = stored.saturating_sub(header);
    println!(
        "4. log ingest ({} MB, 1 task): {:.0} MB/s (target >= 100); stored console {stored} bytes = {header}-byte step header + {output} bytes of output ({}; expected {LOG_BYTES}); peak RSS during ingest: server {server_peak:.1} MB, agent {agent_peak:.1} MB",
        LOG_BYTES / 1_000_000,
        LOG_BYTES as f64 / 1e6 / seconds,
        if output == LOG_BYTES {
            "ok"
        } else {
            "MISMATCH"
        },
    );
}

/// 2. Throughput: AGENTS agents of CAPACITY, one run of independent tasks.
async fn throughput(binary: &PathBuf) {
    let server = Server::start(binary);
    let agents: Vec<Guard> = (1..=AGENTS)
        .map(|i| server.agent(binary, &format!("bench-{i}")))
        .collect();
    let mut pipeline = String::from("version: 1\ntasks:\n");
    for i in 0..THROUGHPUT_TASKS {
        pipeline.push_str(&format!("  t{i}:\n    steps: [{{run: 'true'}}]\n"));
    }
    server.put_job("wide", &pipeline).await;
    let agents_cpu = |agents: &[Guard]| agents.iter().map(|a| cpu_seconds(a.pid())).sum::<f64>();
    let cpu_before = (cpu_seconds(server.guard.pid()), agents_cpu(&agents));
    let started = Instant::now();
    let number = server.trigger("wide").await;
    let run = server
        .wait_for_run(
            "wide",
            number,
            Duration::from_millis(20),
            Duration::from_secs(300),
        )
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(run["status"], "success", "{}", run["status"]);
    let per_task = |seconds: f64| seconds * 1000.0 / THROUGHPUT_TASKS as f64;
    println!(
        "   CPU per task: server {:.2} ms, agents {:.2} ms (the tasks' own shells not counted)",
        per_task(cpu_seconds(server.guard.pid()) - cpu_before.0),
        per_task(agents_cpu(&agents) - cpu_before.1),
    );
    println!(
        "2. throughput ({THROUGHPUT_TASKS} independent tasks, {AGENTS} agents x capacity {CAPACITY}): {:.0} tasks/s (target >= 300) in {elapsed:.1} s",
        THROUGHPUT_TASKS as f64 / elapsed
    );
}
