//! The embedded SQLite backend: WAL journal, foreign keys on, and `synchronous` from config, so an
//! acknowledged write survives a crash of the process (and, at `full`, of the machine).

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::SqliteSync;
use super::{Backend, StoreError};

pub struct SqliteStore {
    /// Readers: WAL lets them run beside the writer.
    pub(super) pool: SqlitePool,
    /// The one writing connection. SQLite has a single writer; with several connections trying,
    /// the losers sleep in SQLite's busy handler (1, 2, 5, … 100 ms), which under load costs far
    /// more than waiting in line here.
    pub(super) writer: SqlitePool,
}

impl SqliteStore {
    /// How a writing transaction begins: holding the database's write lock from its first
    /// statement. A deferred one that reads first and writes later fails at once (SQLITE_BUSY_SNAPSHOT,
    /// which no busy timeout waits out) when another process (a service, `catalog import`) wrote
    /// the same file in between.
    pub(super) const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    pub async fn connect(url: &str, sync: SqliteSync, max_connections: u32) -> Result<Self, StoreError> {
        let connect_err = |source| StoreError::Connect { backend: Backend::Sqlite, source };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(connect_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                SqliteSync::Full => SqliteSynchronous::Full,
                SqliteSync::Normal => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .log_slow_statements(log::LevelFilter::Warn, super::sql::SLOW_STATEMENT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(connect_err)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|source| StoreError::Migrate { backend: Backend::Sqlite, source })?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        Ok(Self { pool, writer })
    }
}

super::sql::impl_store!(SqliteStore, sqlx::Sqlite, Backend::Sqlite);
super::catalog::impl_catalog_store!(SqliteStore);
super::credentials::impl_credential_store!(SqliteStore);
// A slot's transaction starts with a DELETE: SQLite's write lock then serialises its takers.
super::leases::impl_lease_store!(SqliteStore, None);
