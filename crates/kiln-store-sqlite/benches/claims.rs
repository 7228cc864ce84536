//! `cargo bench -p kiln-store-sqlite`: claims per second with 8 concurrent
//! claimers over 5 000 queued tasks, and `list_runs` latency with 100 000
//! runs of one job (`kiln_store::testsuite::benchmark`). Does nothing
//! unless run by `cargo bench` (`--bench`), so `cargo test --all-targets`
//! stays fast.

use kiln_store::testsuite::{at, benchmark};
use kiln_store_sqlite::SqliteStore;

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
    let seeded = store.clone();
    benchmark(store.clone(), "sqlite", |job, runs| async move {
        seeded
            .seed_finished_runs(job, runs, at(0))
            .await
            .expect("seed runs")
    })
    .await;
    store.close().await;
}
