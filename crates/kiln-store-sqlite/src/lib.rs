//! The [`Database`](kiln_store::Database) trait on SQLite: the default
//! store of `kiln up` and of a single server.
//!
//! SQLite has one writer at a time, so every method that writes runs in a
//! `BEGIN IMMEDIATE` transaction: the write lock is taken up front, and a
//! transaction never has to upgrade a read lock, which is where SQLite
//! returns `SQLITE_BUSY` without waiting. Writes go through a pool of one
//! connection, so writers of this process queue fairly in the pool instead
//! of polling the busy handler; other processes still wait on the busy
//! timeout. Reads use their own pool and, in WAL mode, never block writes.
//!
//! One module per concern, each implementing its part of the trait; the
//! PostgreSQL backend has the same files, to be read side by side. The
//! queue's decisions are `kiln_store::queue`'s, and rows are read with
//! `kiln_store::sql`: the modules hold the SQL.

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

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use kiln_store::Result;
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How long a writer of another process waits for the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kiln store in one SQLite file. Cheap to clone (pools are shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, in WAL mode with
    /// foreign keys on, and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last commits
            // before a power loss; a CI server can live with that.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // A connection to a local file does not go stale: no ping (a round
        // trip to the connection's thread) before each use.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self { reader, writer })
    }

    /// A private database in memory, gone when the store is dropped.
    pub async fn open_in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // An in-memory database lives as long as its one connection: never
        // let the pool close it, and share it between readers and writers.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            reader: pool.clone(),
            writer: pool,
        })
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        kiln_store::sql::begin(&self.writer, Some("BEGIN IMMEDIATE")).await
    }

    /// A read transaction: one consistent snapshot for multi-query reads.
    async fn read(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        kiln_store::sql::begin(&self.reader, None).await
    }
}
