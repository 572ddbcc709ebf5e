//! A running service's lease on the store: one row per process, taken before the keyring is
//! loaded and renewed every heartbeat until the service stops. Each renewal first reloads a file
//! keyring, then reports what the process can open and what it seals with, so `dynamcp vault
//! rotate` can wait until every running service has a key before any credential needs it. A row
//! not renewed within three heartbeats belongs to a process that is gone.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Vault;
use crate::store::{Lease, Store, StoreError};

/// The database-wide fact that names the key new credentials are sealed with.
pub const WRITING_KEY_FACT: &str = "vault.writing_key";

/// Records `id` as the database's writing key (a rotation or a re-wrap moved to it).
pub async fn record_writing_key(store: &dyn Store, id: &str) -> Result<(), StoreError> {
    let recorded = store.claim_fact(WRITING_KEY_FACT, id).await?;
    if recorded != id {
        store.replace_fact(WRITING_KEY_FACT, &recorded, id).await?;
    }
    Ok(())
}

/// How many heartbeats a lease outlives its last renewal by.
const HEARTBEATS_PER_LEASE: u32 = 3;

/// This process's lease. [`ServiceLease::release`] ends it.
pub struct ServiceLease {
    store: Arc<dyn Store>,
    row: tokio::sync::Mutex<Lease>,
    heartbeat: Duration,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ServiceLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLease").field("heartbeat", &self.heartbeat).finish_non_exhaustive()
    }
}

impl ServiceLease {
    /// Takes a lease for a process whose keys come from `key_source` (`file` or `env`), before
    /// its keyring is loaded: a rotation that starts meanwhile then waits for this process's first
    /// reports. Rows of processes that are gone are removed on the way.
    pub async fn acquire(
        store: Arc<dyn Store>,
        key_source: &str,
        heartbeat: Duration,
    ) -> Result<Arc<Self>, StoreError> {
        let now = Utc::now();
        for old in store.leases().await? {
            if !old.is_live(now) {
                store.delete_lease(old.holder).await?;
            }
        }
        let row = Lease {
            holder: Uuid::new_v4(),
            pid: i64::from(std::process::id()),
            host: hostname(),
            key_source: key_source.to_owned(),
            writing_key_id: String::new(),
            readable_key_ids: Vec::new(),
            renewals: 0,
            started_at: now,
            renewed_at: now,
            expires_at: now + lifetime(heartbeat),
        };
        store.put_lease(&row).await?;
        Ok(Arc::new(Self {
            store,
            row: tokio::sync::Mutex::new(row),
            heartbeat,
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        }))
    }

    pub async fn holder(&self) -> Uuid {
        self.row.lock().await.holder
    }

    /// Reports `vault`'s keys and moves the expiry forward.
    pub async fn renew(&self, vault: &Vault) -> Result<(), StoreError> {
        let mut row = self.row.lock().await;
        let now = Utc::now();
        let next = Lease {
            writing_key_id: vault.key_id(),
            readable_key_ids: vault.key_ids(),
            renewals: row.renewals + 1,
            renewed_at: now,
            expires_at: now + lifetime(self.heartbeat),
            ..row.clone()
        };
        self.store.put_lease(&next).await?;
        *row = next;
        Ok(())
    }

    /// Checks, before this service stores anything, that it and every other service on the
    /// database can open what each other seals: its keyring holds the key the database records
    /// (the first service to start records its key) and every live service's writing key, and
    /// every live service can open its writing key. A new key that every running service already
    /// reads (a rotation's) becomes the database's key. (Services that have not reported their
    /// keys yet check after reporting, and so see this one's.)
    pub async fn agree_on_key(&self, vault: &Vault) -> Result<(), super::VaultError> {
        use super::VaultError::NotTheDatabasesKey;
        // Report this service's keys first: of two services starting at once, each then sees the
        // other's report, or the other sees its own.
        self.renew(vault).await?;
        let mine = vault.key_id();
        let me = self.holder().await;
        let recorded = self.store.claim_fact(WRITING_KEY_FACT, &mine).await?;
        let now = Utc::now();
        let others: Vec<Lease> = self
            .store
            .leases()
            .await?
            .into_iter()
            .filter(|l| l.holder != me && l.is_live(now) && !l.writing_key_id.is_empty())
            .collect();
        let refuse = |why: String| NotTheDatabasesKey { mine: mine.clone(), why };
        if let Some(other) = others.iter().find(|l| !vault.has_key(&l.writing_key_id)) {
            return Err(refuse(format!(
                "{} seals with key {}, which this keyring cannot open",
                other.describe(),
                other.writing_key_id
            )));
        }
        if recorded == mine {
            return Ok(());
        }
        if !vault.has_key(&recorded) {
            return Err(refuse(format!(
                "the database's key is {recorded}, recorded by the first service to start or by a rotation, \
                 and this keyring cannot open it"
            )));
        }
        if let Some(other) = others.iter().find(|l| !l.readable_key_ids.contains(&mine)) {
            return Err(refuse(format!("{} cannot open this key yet", other.describe())));
        }
        if self.store.replace_fact(WRITING_KEY_FACT, &recorded, &mine).await? {
            tracing::info!(previous = %recorded, writing = %mine, "this database's vault key is now this service's");
        }
        Ok(())
    }

    /// Renews now and then every heartbeat, reloading `vault`'s keyring first, until
    /// [`Self::release`].
    pub fn start(self: &Arc<Self>, vault: Arc<Vault>) {
        let lease = self.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = vault.reload() {
                    tracing::warn!(error = %e, "could not reload the vault keyring; keeping the keys in memory");
                }
                if let Err(e) = lease.renew(&vault).await {
                    tracing::warn!(error = %e, "could not renew the service lease");
                }
                tokio::select! {
                    () = lease.stop.cancelled() => break,
                    () = tokio::time::sleep(lease.heartbeat) => {}
                }
            }
        });
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// Stops renewing and removes the row. Call once nothing will seal or open any more.
    pub async fn release(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let holder = self.holder().await;
        if let Err(e) = self.store.delete_lease(holder).await {
            tracing::warn!(error = %e, "could not release the service lease; it expires by itself");
        }
    }
}

/// How long a lease lives past its last renewal.
pub fn lifetime(heartbeat: Duration) -> chrono::Duration {
    chrono::Duration::from_std(heartbeat.saturating_mul(HEARTBEATS_PER_LEASE))
        .unwrap_or_else(|_| chrono::Duration::hours(1))
}

/// This machine's name, for messages naming a lease's holder.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".to_owned())
}
