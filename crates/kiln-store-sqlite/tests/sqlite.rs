//! The backend-independent contract (`kiln_store::testsuite`) on SQLite
//! files, plus what only SQLite has: a database that survives reopening.

use kiln_store::Database;
use kiln_store::testsuite;
use kiln_store_sqlite::SqliteStore;

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("kiln.db"))
        .await
        .expect("open sqlite");
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract() {
    let (_dir, store) = fresh().await;
    testsuite::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_in_memory() {
    testsuite::run_all(SqliteStore::open_in_memory().await.expect("open")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_are_exclusive() {
    let (_dir, store) = fresh().await;
    testsuite::claims_are_exclusive(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers() {
    let (_dir, store) = fresh().await;
    testsuite::concurrent_workers(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_and_migrations_run_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kiln.db");
    let store = SqliteStore::open(&path).await.expect("open");
    store
        .create_job(&testsuite::freestyle("kept"), testsuite::at(0))
        .await
        .expect("create job");
    store.close().await;
    let again = SqliteStore::open(&path).await.expect("reopen");
    assert!(again.get_job("kept").await.expect("get").is_some());
}
