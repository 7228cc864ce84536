//! The backend-independent contract (`kiln_store::testsuite`) on SQLite,
//! each case on a fresh database (a file, and in memory), plus what only
//! SQLite has: a database that survives reopening.

use std::future::Future;

use kiln_store::JobStore;
use kiln_store::testsuite;
use kiln_store_sqlite::SqliteStore;

/// Runs `test` on a store in a new file, removed after.
async fn on_file<F, Fut>(test: F)
where
    F: FnOnce(SqliteStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("kiln.db"))
        .await
        .expect("open sqlite");
    test(store).await;
}

/// Runs `test` on a store in memory.
async fn in_memory<F, Fut>(test: F)
where
    F: FnOnce(SqliteStore) -> Fut,
    Fut: Future<Output = ()>,
{
    test(SqliteStore::open_in_memory().await.expect("open")).await;
}

mod file {
    kiln_store::testsuite!(super::on_file);
}

mod memory {
    kiln_store::testsuite!(super::in_memory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_and_migrations_run_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kiln.db");
    let store = SqliteStore::open(&path).await.expect("open");
    store
        .create_job(&testsuite::freestyle("kept"), None, testsuite::at(0))
        .await
        .expect("create job");
    store.close().await;
    let again = SqliteStore::open(&path).await.expect("reopen");
    assert!(again.get_job("kept").await.expect("get").is_some());
}
