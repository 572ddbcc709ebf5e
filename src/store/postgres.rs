//! The PostgreSQL 15 + pgvector backend, for deployments that outgrow one file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::{Backend, StoreError};

pub struct PgStore {
    pub(super) pool: PgPool,
    /// The same pool: PostgreSQL takes concurrent writers itself.
    pub(super) writer: PgPool,
}

impl PgStore {
    /// How a writing transaction begins (row locks are taken as it goes).
    pub(super) const BEGIN_WRITE: &'static str = "BEGIN";

    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let connect_err = |source| StoreError::Connect { backend: Backend::Postgres, source };
        let options = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(connect_err)?
            .log_slow_statements(log::LevelFilter::Warn, super::sql::SLOW_STATEMENT);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { backend: Backend::Postgres, source })?;
        Ok(Self { writer: pool.clone(), pool })
    }
}

super::sql::impl_store!(PgStore, sqlx::Postgres, Backend::Postgres);
super::catalog::impl_catalog_store!(
    PgStore,
    fn vectors(&self) -> Option<&dyn super::VectorSearch> {
        Some(self)
    }
);
super::credentials::impl_credential_store!(PgStore);
// Takers of one kind of slot queue on an advisory lock held until their transaction ends.
super::leases::impl_lease_store!(
    PgStore,
    Some("SELECT pg_advisory_xact_lock(hashtext('dynamcp.slots'), hashtext($1))"),
    async fn changes(&self) -> Result<Option<super::Changes>, StoreError> {
        listen(&self.pool).await.map(Some)
    }
);

/// Listens on [`super::leases::CHANGES_CHANNEL`] on a connection of its own until the receiver is
/// dropped. sqlx reconnects a dropped listener at its next receive; what was announced meanwhile
/// is lost, which the listener's polling covers.
async fn listen(pool: &PgPool) -> Result<super::Changes, StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(super::leases::CHANGES_CHANNEL).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                received = listener.recv() => match received {
                    // A full channel already holds a wake-up: this one adds nothing.
                    Ok(change) => { let _ = tx.try_send(change.payload().to_owned()); }
                    // The store is closing: give the connection back, or closing waits for it.
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "lost the database's change announcements; reconnecting");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                },
            }
        }
    });
    Ok(rx)
}
