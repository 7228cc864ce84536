//! `cargo bench -p kiln-store-postgres`: claims per second with 8
//! concurrent claimers over 5 000 queued tasks, and `list_runs` latency
//! with 100 000 runs of one job (`kiln_store::testsuite::benchmark`), in a
//! database of its own (created on the server of `KILN_TEST_DATABASE_URL`,
//! dropped after). Does nothing unless run by `cargo bench` (`--bench`), so
//! `cargo test --all-targets` stays fast.

use std::str::FromStr;

use kiln_store::testsuite::{at, benchmark};
use kiln_store_postgres::PostgresStore;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

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
    let seeded = store.clone();
    benchmark(store.clone(), "postgres", |job, runs| async move {
        seeded
            .seed_finished_runs(job, runs, at(0))
            .await
            .expect("seed runs")
    })
    .await;
}
