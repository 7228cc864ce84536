//! The [`Database`](kiln_store::Database) trait on PostgreSQL: the store of
//! a scaled-out Kiln, where several stateless servers share one database
//! and its queue.
//!
//! Concurrency rules, which keep every method one short transaction with no
//! deadlock between servers:
//!
//! - `claim_task` takes a matching queued task of the job with the fewest
//!   running tasks (then the oldest) with `FOR NO KEY UPDATE SKIP LOCKED`,
//!   so claimers never wait for each other and never get the same task; it
//!   then touches the task's run row.
//! - Everything else that changes a run's tasks (finish, expire, cancel,
//!   delete) first locks *all* the run's task rows in id order, then the run
//!   row. Tasks before runs, ids ascending: the same order as a claim, so
//!   lock waits cannot form a cycle, and the settle step always sees the
//!   latest state of every sibling (READ COMMITTED re-reads locked rows).
//!
//! One module per concern, each implementing its part of the trait; the
//! SQLite backend has the same files, to be read side by side. The queue's
//! decisions are `kiln_store::queue`'s, and rows are read with
//! `kiln_store::sql`: the modules hold the SQL and the locking.

mod audit;
#[cfg(feature = "bench")]
mod bench;
mod forges;
mod jobs;
mod logs;
mod members;
mod polls;
mod queue;
mod results;
mod runs;
mod secrets;
mod sessions;
mod sign_ins;
mod statuses;
mod tokens;
mod users;

use std::str::FromStr;
use std::time::Duration;

use kiln_store::{Result, RunId};
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Connections per server; a few more than busy handlers run at once.
const MAX_CONNECTIONS: u32 = 10;

/// A Kiln store in a PostgreSQL database. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`)
    /// and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PgConnectOptions::from_str(url)?).await
    }

    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        // sqlx holds an advisory lock while migrating, so servers starting
        // together do not race.
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool, for tools that need a connection of their own (tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction. Early returns roll it back explicitly: a
    /// dropped transaction is rolled back only when the pool gets to it,
    /// and until then its row locks make claimers skip those rows.
    async fn write(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        kiln_store::sql::begin(&self.pool, None).await
    }

    /// A read transaction: one consistent snapshot for multi-query reads.
    async fn read(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        kiln_store::sql::begin(
            &self.pool,
            Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        )
        .await
    }
}

/// Locks the task rows of `runs`, in id order, then the run rows: the lock
/// order every writer of a run's state follows (see the crate docs).
async fn lock_runs(conn: &mut PgConnection, runs: &[RunId]) -> Result<()> {
    sqlx::query("SELECT id FROM tasks WHERE run_id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(runs)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("SELECT id FROM runs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(runs)
        .fetch_all(&mut *conn)
        .await?;
    Ok(())
}
