//! The backend-independent contract (`kiln_store::testsuite`) on a real
//! PostgreSQL, one test per case, each in a database of its own that is
//! dropped after.
//!
//! `KILN_TEST_DATABASE_URL` names a server and a role that may create
//! databases (default `postgres://kiln:kiln@127.0.0.1:5432/kiln`, which
//! `scripts/setup-test-env.sh` sets up). No server is a failure, not a skip.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_store::JobStore;
use kiln_store::testsuite;
use kiln_store_postgres::PostgresStore;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

const DEFAULT_URL: &str = "postgres://kiln:kiln@127.0.0.1:5432/kiln";

fn admin_url() -> String {
    std::env::var("KILN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A name no other test (of this or another process) uses.
fn fresh_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "kiln_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn admin() -> PgConnection {
    let url = admin_url();
    PgConnection::connect(&url).await.unwrap_or_else(|e| {
        // Host and port only: the URL may hold a password.
        let server = PgConnectOptions::from_str(&url)
            .map(|o| format!("{}:{}", o.get_host(), o.get_port()))
            .unwrap_or_else(|_| "KILN_TEST_DATABASE_URL".into());
        panic!(
            "PostgreSQL does not answer at {server}: {e}\n\
             Run scripts/setup-test-env.sh to start it, or set KILN_TEST_DATABASE_URL."
        )
    })
}

/// Runs `test` on a store in a new database, then drops the database,
/// whether the test passed or panicked.
async fn with_fresh_database<F, Fut>(test: F)
where
    F: FnOnce(PostgresStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = fresh_name();
    let mut admin = admin().await;
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let options = PgConnectOptions::from_str(&admin_url())
        .expect("database url")
        .database(&name)
        .disable_statement_logging();
    let outcome = match PostgresStore::connect_with(options).await {
        Ok(store) => {
            // A task of its own, so a panic comes back as an error here.
            let outcome = tokio::spawn(test(store.clone())).await;
            store.close().await;
            outcome.map_err(|e| e.into_panic())
        }
        Err(e) => Err(Box::new(format!("connect to {name}: {e}")) as Box<_>),
    };
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop test database");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

kiln_store::testsuite!(with_fresh_database);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_and_connect_by_url() {
    with_fresh_database(|store| async move {
        store
            .create_job(&testsuite::freestyle("kept"), None, testsuite::at(0))
            .await
            .expect("create job");
        // What a second server does on start: migrate (a no-op) and share the data.
        let options = store.pool().connect_options();
        let url = options.to_url_lossy().to_string();
        let second = PostgresStore::connect(&url).await.expect("second server");
        assert!(second.get_job("kept").await.expect("get").is_some());
        second.close().await;
    })
    .await;
}
