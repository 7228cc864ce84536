//! TLS (DESIGN.md §5): `kiln server --tls-cert/--tls-key [--client-ca]` with
//! real `kiln agent` processes and the CLI client, on certificates made here
//! by rcgen (a CA, a server certificate for 127.0.0.1, a client one); and
//! PostgreSQL with `sslmode=require`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use serde_json::{Value, json};

use crate::server::{ADMIN, ADMIN_PASSWORD, PgDatabase, Server};

const AGENT_TOKEN: &str = "kiln_agent_shared_test_token";
const PIPELINE: &str = "version: 1\ntasks:\n  hello:\n    steps: [{run: echo over-tls}]\n";

/// PEM files in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Kiln test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, stem);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{stem}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{stem}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "agent");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `kiln server` over TLS, with no worker of its own.
struct TlsServer {
    child: Child,
    url: String,
    grpc: String,
    http: reqwest::Client,
    _data_dir: tempfile::TempDir,
}

impl TlsServer {
    /// `client_ca`: agents must present a certificate; `worker`: with its
    /// own (embedded) agent.
    fn start(certs: &Certs, client_ca: bool, worker: bool) -> TlsServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args(["server", "--listen", "127.0.0.1:0", "--grpc-listen"])
            .args(["127.0.0.1:0", "--agent-lease", "3s", "--data-dir"])
            .arg(data_dir.path())
            .arg("--tls-cert")
            .arg(certs.path("server.pem"))
            .arg("--tls-key")
            .arg(certs.path("server.key"));
        if client_ca {
            command.arg("--client-ca").arg(certs.path("ca.pem"));
        }
        if worker {
            command.args(["--worker", "--worker-executor", "process"]);
        }
        let mut child = command
            .env("KILN_ADMIN_TOKEN", ADMIN)
            .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("KILN_AGENT_TOKEN", AGENT_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut url, mut grpc) = (String::new(), String::new());
        while url.is_empty() || grpc.is_empty() {
            let line = lines.next().expect("the server did not start").unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                url = rest.trim().to_string();
            }
            if let Some(rest) = line.split("agents connect to ").nth(1) {
                grpc = rest.trim().trim_end_matches(" (gRPC)").to_string();
            }
        }
        // The rest of its output, so that the pipe never fills.
        std::thread::spawn(move || lines.for_each(drop));
        assert!(url.starts_with("https://"), "{url}");
        assert!(grpc.starts_with("https://"), "{grpc}");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(certs.path("ca.pem")).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .build()
            .unwrap();
        TlsServer {
            child,
            url,
            grpc,
            http,
            _data_dir: data_dir,
        }
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
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// Runs a one-step job to its end; returns the run.
    async fn run_job(&self, job: &str) -> Value {
        let jobs = format!("/api/v1/jobs/{job}");
        let pipeline = json!({"kind": "freestyle", "pipeline": PIPELINE});
        self.send(reqwest::Method::PUT, &jobs, pipeline).await;
        let run = self
            .send(reqwest::Method::POST, &format!("{jobs}/runs"), json!({}))
            .await;
        let path = format!("{jobs}/runs/{}", run["number"]);
        let started = Instant::now();
        loop {
            let response = self.http.get(format!("{}{path}", self.url));
            let run: Value = response
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if !["pending", "queued", "running"].contains(&run["status"].as_str().unwrap_or("")) {
                return run;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{run:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kiln agent` process and everything it printed.
struct Agent {
    child: Child,
    output: Arc<Mutex<String>>,
    _work_dir: tempfile::TempDir,
}

impl Agent {
    fn start(server: &str, args: &[&std::ffi::OsStr]) -> Agent {
        let work_dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["agent", "--server", server, "--token", AGENT_TOKEN])
            .args(["--executor", "process", "--work-dir"])
            .arg(work_dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        Agent {
            child,
            output,
            _work_dir: work_dir,
        }
    }

    /// Waits until the agent has printed `text`; panics with its output
    /// after `limit`.
    fn wait_for(&mut self, text: &str, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            let output = self.output.lock().unwrap().clone();
            if output.contains(text) {
                return output;
            }
            assert!(
                started.elapsed() < limit,
                "the agent never said `{text}`:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn os(path: &Path) -> &std::ffi::OsStr {
    path.as_os_str()
}

#[tokio::test]
async fn agent_over_tls_runs_a_task_and_the_cli_talks_https() {
    let certs = Certs::new();
    let server = TlsServer::start(&certs, false, false);
    let ca = certs.path("ca.pem");
    let mut agent = Agent::start(&server.grpc, &[os("--ca-cert".as_ref()), os(&ca)]);
    agent.wait_for("connected to", Duration::from_secs(30));
    let run = server.run_job("over-tls").await;
    assert_eq!(run["status"], "success", "{run:#}");

    // The CLI client: with the private CA it works, without it the
    // certificate is unknown.
    let kiln = |ca: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args(["job", "list", "--server", &server.url])
            .env("KILN_TOKEN", ADMIN)
            .env_remove("KILN_CA_CERT");
        if let Some(ca) = ca {
            command.arg("--ca-cert").arg(ca);
        }
        command.output().unwrap()
    };
    let output = kiln(Some(&ca));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("over-tls"), "{stdout}");
    assert!(!kiln(None).status.success());

    // The server's own TLS makes the session cookie `Secure`.
    let response = server
        .http
        .post(format!("{}/login", server.url))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn plain_text_cannot_talk_to_the_tls_ports() {
    let certs = Certs::new();
    let server = TlsServer::start(&certs, false, false);
    let plain = |url: &str| url.replacen("https://", "http://", 1);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer = reqwest::Client::new()
        .get(format!("{}/api/v1/jobs", plain(&server.url)))
        .send()
        .await;
    assert!(
        answer.is_err(),
        "plain HTTP got an answer from the TLS port: {answer:?}"
    );
    // gRPC in clear text to a loopback address is allowed by the agent, and
    // the TLS port does not speak it.
    let mut agent = Agent::start(&plain(&server.grpc), &[]);
    let output = agent.wait_for("cannot reach", Duration::from_secs(30));
    assert!(!output.contains("connected to"), "{output}");
}

#[tokio::test]
async fn client_ca_refuses_agents_without_a_certificate() {
    let certs = Certs::new();
    let server = TlsServer::start(&certs, true, false);
    let ca = certs.path("ca.pem");
    let mut anonymous = Agent::start(&server.grpc, &[os("--ca-cert".as_ref()), os(&ca)]);
    let output = anonymous.wait_for("cannot reach", Duration::from_secs(30));
    assert!(!output.contains("connected to"), "{output}");
    drop(anonymous);

    let (cert, key) = (certs.path("agent.pem"), certs.path("agent.key"));
    let mut agent = Agent::start(
        &server.grpc,
        &[
            os("--ca-cert".as_ref()),
            os(&ca),
            os("--client-cert".as_ref()),
            os(&cert),
            os("--client-key".as_ref()),
            os(&key),
        ],
    );
    agent.wait_for("connected to", Duration::from_secs(30));
    let run = server.run_job("mtls").await;
    assert_eq!(run["status"], "success", "{run:#}");
}

/// The agent inside the server reaches it through memory: it needs no
/// client certificate under `--client-ca`, and the server opens no port
/// besides its two (one the certificate check would not guard).
#[tokio::test]
async fn the_embedded_agent_needs_no_port_of_its_own() {
    let certs = Certs::new();
    let server = TlsServer::start(&certs, true, true);
    let run = server.run_job("embedded").await;
    assert_eq!(run["status"], "success", "{run:#}");
    assert_eq!(listening_ports(server.child.id()).len(), 2);
}

/// The TCP ports process `pid` listens on.
fn listening_ports(pid: u32) -> Vec<u16> {
    let sockets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.strip_prefix("socket:[")?;
            Some(target.trim_end_matches(']').to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            const LISTEN: &str = "0A";
            if fields.len() > 9 && fields[3] == LISTEN && sockets.iter().any(|s| s == fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[test]
fn agent_refuses_clear_text_to_a_remote_address_unless_insecure() {
    let remote = "http://10.255.255.1:9";
    let mut refused = Agent::start(remote, &[]);
    let status = refused.child.wait().unwrap();
    let output = refused.wait_for("refusing", Duration::from_secs(5));
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("refusing to send the agent token in clear text to `10.255.255.1`")
            && output.contains("--insecure"),
        "{output}"
    );

    // Allowed, it tries: that address cannot be reached (or, behind some
    // networks' proxies, answers as something else), which is fine.
    let mut insecure = Agent::start(remote, &[os("--insecure".as_ref())]);
    let started = Instant::now();
    let output = loop {
        let output = insecure.output.lock().unwrap().clone();
        if output.contains("cannot reach") || insecure.child.try_wait().unwrap().is_some() {
            break output;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{output}");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(200));
    let output = output + &insecure.output.lock().unwrap();
    assert!(!output.contains("refusing"), "{output}");
}

#[tokio::test]
async fn postgres_with_sslmode_require() {
    let database = PgDatabase::new();
    let server = Server::start(Some(&format!("{}?sslmode=require", database.url)));
    let jobs = server.json("/api/v1/jobs").await;
    assert!(jobs.is_object() || jobs.is_array(), "{jobs}");
    // Its connections are encrypted, as PostgreSQL sees them.
    let name = database.url.rsplit('/').next().unwrap();
    let output = Command::new("psql")
        .args(["postgres://kiln:kiln@127.0.0.1:5432/kiln", "-tAc"])
        .arg(format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND datname = '{name}'"
        ))
        .output()
        .unwrap();
    let count = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(count.parse::<u32>().unwrap_or(0) > 0, "{count} {output:?}");
}
