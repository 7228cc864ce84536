//! The server under load, over real HTTP on loopback, on SQLite and
//! PostgreSQL: triggers per second (8 concurrent clients, freestyle job,
//! nothing running the tasks), and `GET /jobs/{job}/runs` latency with
//! 100 000 runs stored, read by a viewer of the private job (the access
//! check's dearest path: the token's user, then the caller's role).
//!
//! `cargo bench -p kiln --bench server` (PostgreSQL from
//! `scripts/setup-test-env.sh`; `KILN_BENCH_DATABASE_URL` to use another).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_server::ServerConfig;
use kiln_store::{Database, TokenKind};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "kiln_bench_admin_token";
const READER_TOKEN: &str = "kiln_bench_reader_token";
const TRIGGERS: usize = 2_000;
const CLIENTS: usize = 8;
const STORED_RUNS: i64 = 100_000;
const LIST_REQUESTS: usize = 1_000;
const PIPELINE: &str = "version: 1\ntasks:\n  build:\n    steps: [{run: make}]\n  test:\n    needs: [build]\n    steps: [{run: make test}]\n";

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();

    let dir = tempfile::tempdir().unwrap();
    let sqlite = kiln_store_sqlite::SqliteStore::open(&dir.path().join("kiln.db"))
        .await
        .unwrap();
    let seeded = sqlite.clone();
    bench("SQLite", sqlite, dir.path(), move |job| {
        let store = seeded.clone();
        async move {
            store
                .seed_finished_runs(job, STORED_RUNS, Utc::now())
                .await
                .unwrap()
        }
    })
    .await;

    let admin = std::env::var("KILN_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://kiln:kiln@127.0.0.1:5432/kiln".into());
    let name = format!("kiln_bench_{}", std::process::id());
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let postgres = kiln_store_postgres::PostgresStore::connect(&url)
        .await
        .unwrap();
    let seeded = postgres.clone();
    let pg_dir = tempfile::tempdir().unwrap();
    bench("PostgreSQL", postgres, pg_dir.path(), move |job| {
        let store = seeded.clone();
        async move {
            store
                .seed_finished_runs(job, STORED_RUNS, Utc::now())
                .await
                .unwrap()
        }
    })
    .await;
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

fn psql(url: &str, sql: &str) {
    let status = std::process::Command::new("psql")
        .args([url, "-qc", sql])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "psql failed: is PostgreSQL running? (scripts/setup-test-env.sh)"
    );
}

async fn bench<D, F, Fut>(backend: &str, db: D, data_dir: &std::path::Path, seed: F)
where
    D: Database,
    F: Fn(kiln_store::JobId) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    db.insert_token(
        &kiln_crypto::hash_token(TOKEN),
        TokenKind::User,
        "bench",
        true,
        Utc::now(),
    )
    .await
    .unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        blob_url: None,
        agent_lease: kiln_server::grpc::DEFAULT_LEASE,
        max_report_size: kiln_server::DEFAULT_MAX_REPORT_SIZE,
        limits: kiln_server::Limits::default(),
    };
    let state = kiln_server::app_state(db.clone(), &config).await.unwrap();
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(kiln_server::serve(state, listener, None, shutdown.clone()));
    let base = format!("http://{address}/api/v1");
    let http = reqwest::Client::new();

    let put = |name: &str| {
        http.put(format!("{base}/jobs/{name}"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"kind": "freestyle", "pipeline": PIPELINE}))
            .send()
    };
    assert!(put("triggered").await.unwrap().status().is_success());
    assert!(put("history").await.unwrap().status().is_success());

    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (http, base) = (http.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            for _ in (client..TRIGGERS).step_by(CLIENTS) {
                let response = http
                    .post(format!("{base}/jobs/triggered/runs"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), reqwest::StatusCode::CREATED);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let triggers_per_second = TRIGGERS as f64 / started.elapsed().as_secs_f64();

    let job = db.get_job("history").await.unwrap().unwrap();
    seed(job.id).await;
    let reader = db
        .create_user(
            &kiln_store::NewUser {
                name: "reader".into(),
                role: kiln_store::UserRole::User,
                password_hash: None,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let reader_hash = kiln_crypto::hash_token(READER_TOKEN);
    let reader_token = kiln_store::NewUserToken {
        hash: &reader_hash,
        name: "bench",
        user: reader.id,
        expires_at: None,
    };
    db.insert_user_token(&reader_token, Utc::now())
        .await
        .unwrap();
    db.set_member(
        job.id,
        reader.id,
        kiln_store::MemberRole::Viewer,
        Utc::now(),
    )
    .await
    .unwrap();
    let mut report = Vec::new();
    for (label, query) in [
        ("first page", ""),
        ("status=failure", "?status=failure"),
        ("branch=dev", "?branch=dev"),
        ("cursor=50000", "?cursor=50000"),
    ] {
        let url = format!("{base}/jobs/history/runs{query}");
        let mut latencies = Vec::with_capacity(LIST_REQUESTS);
        for _ in 0..LIST_REQUESTS {
            let started = Instant::now();
            let response = http
                .get(&url)
                .bearer_auth(READER_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            let body = response.bytes().await.unwrap();
            latencies.push(started.elapsed());
            assert!(body.len() > 100);
        }
        latencies.sort();
        report.push((
            label,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
        ));
    }

    println!("{backend}:");
    println!(
        "  triggers/s ({TRIGGERS} triggers, {CLIENTS} clients, 2-task pipeline): {triggers_per_second:.0}"
    );
    for (label, p50, p99) in report {
        println!(
            "  GET /jobs/{{job}}/runs, {STORED_RUNS} runs, {label}: p50 {:.2} ms, p99 {:.2} ms",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
    shutdown.cancel();
    let _ = server.await;
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
