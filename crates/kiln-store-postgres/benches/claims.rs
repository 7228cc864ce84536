//! `cargo bench -p kiln-store-postgres`: claims per second with 8
//! concurrent claimers over 5 000 queued tasks, and `list_runs` latency
//! with 100 000 runs of one job, in a database of its own (created on the
//! server of `KILN_TEST_DATABASE_URL`, dropped after). Does nothing unless
//! run by `cargo bench` (`--bench`), so `cargo test --all-targets` stays fast.

use std::str::FromStr;
use std::time::Instant;

use kiln_store::testsuite::{at, freestyle, measure_claims, measure_list_runs, percentile_ms};
use kiln_store::{Database, RunFilter, Status};
use kiln_store_postgres::PostgresStore;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

const TASKS: usize = 5_000;
const CLAIMERS: usize = 8;
const RUNS: i64 = 100_000;
const ITERATIONS: usize = 500;
const DEFAULT_URL: &str = "postgres://kiln:kiln@127.0.0.1:5432/kiln";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let url = std::env::var("KILN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let mut admin = PgConnection::connect(&url)
        .await
        .expect("PostgreSQL does not answer: run scripts/setup-test-env.sh");
    let name = format!("kiln_bench_{}", std::process::id());
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    let options = PgConnectOptions::from_str(&url)
        .expect("url")
        .database(&name);
    let store = PostgresStore::connect_with(options).await.expect("connect");
    run(&store).await;
    store.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop database");
}

async fn run(store: &PostgresStore) {
    let (created, claimed) = measure_claims(store.clone(), TASKS, CLAIMERS).await;
    println!(
        "postgres: created {TASKS} tasks in {created:.2}s; {CLAIMERS} claimers took them in \
         {claimed:.2}s = {:.0} claims/s",
        TASKS as f64 / claimed
    );

    let job = store
        .create_job(&freestyle("bench-list"), at(0))
        .await
        .expect("job");
    let started = Instant::now();
    store
        .seed_finished_runs(job.id, RUNS, at(0))
        .await
        .expect("seed runs");
    println!(
        "postgres: inserted {RUNS} runs in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let cases = [
        (
            "first page",
            RunFilter {
                limit: 50,
                ..RunFilter::default()
            },
        ),
        (
            "status=failure",
            RunFilter {
                status: Some(Status::Failure),
                limit: 50,
                ..RunFilter::default()
            },
        ),
        (
            "branch=dev",
            RunFilter {
                branch: Some("dev".into()),
                limit: 50,
                ..RunFilter::default()
            },
        ),
        (
            "before=50000",
            RunFilter {
                before: Some(50_000),
                limit: 50,
                ..RunFilter::default()
            },
        ),
    ];
    for (name, filter) in cases {
        let times = measure_list_runs(store, job.id, &filter, ITERATIONS).await;
        println!(
            "postgres: list_runs {name} (limit 50, {RUNS} runs): p50 {:.3} ms, p99 {:.3} ms",
            percentile_ms(&times, 50),
            percentile_ms(&times, 99)
        );
    }
    let newest = store
        .list_runs(
            job.id,
            &RunFilter {
                limit: 1,
                ..RunFilter::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(newest[0].number, RUNS);
}
