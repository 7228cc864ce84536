//! `cargo bench -p kiln-store-sqlite`: claims per second with 8 concurrent
//! claimers over 5 000 queued tasks, and `list_runs` latency with 100 000
//! runs of one job. Does nothing unless run by `cargo bench` (`--bench`),
//! so `cargo test --all-targets` stays fast.

use std::time::Instant;

use kiln_store::testsuite::{at, freestyle, measure_claims, measure_list_runs, percentile_ms};
use kiln_store::{Database, RunFilter, Status};
use kiln_store_sqlite::SqliteStore;

const TASKS: usize = 5_000;
const CLAIMERS: usize = 8;
const RUNS: i64 = 100_000;
const ITERATIONS: usize = 500;

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
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("bench.db"))
        .await
        .expect("open");

    let (created, claimed) = measure_claims(store.clone(), TASKS, CLAIMERS).await;
    println!(
        "sqlite: created {TASKS} tasks in {created:.2}s; {CLAIMERS} claimers took them in \
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
        "sqlite: inserted {RUNS} runs in {:.2}s",
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
        let times = measure_list_runs(&store, job.id, &filter, ITERATIONS).await;
        println!(
            "sqlite: list_runs {name} (limit 50, {RUNS} runs): p50 {:.3} ms, p99 {:.3} ms",
            percentile_ms(&times, 50),
            percentile_ms(&times, 99)
        );
    }
    // Keeps the suite's helpers honest about what they read.
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
    store.close().await;
}
