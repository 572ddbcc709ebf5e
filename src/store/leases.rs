//! Service leases: each running service's row, renewed while it runs, saying which master keys it
//! can open and which one it seals with. The vault's rotation reads them to move in step with the
//! running services; this module only stores them (see `vault::lease` for their meaning).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;

/// One process's lease on the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    /// Random per process.
    pub holder: Uuid,
    pub pid: i64,
    pub host: String,
    /// `file` (the data dir's keyring, reloaded at every renewal) or `env` (fixed at start).
    pub key_source: String,
    /// The key id new credentials are sealed with (empty until the keyring is loaded).
    pub writing_key_id: String,
    /// Every key id the holder can open (empty until the keyring is loaded).
    pub readable_key_ids: Vec<String>,
    /// How many reports the holder has written; grows by one per renewal.
    pub renewals: i64,
    pub started_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// Whether the holder still counts as running at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }

    /// `<holder> (pid <pid> on <host>)`, for messages.
    pub fn describe(&self) -> String {
        format!("{} (pid {} on {})", self.holder, self.pid, self.host)
    }
}

/// Adds one to the counter fact `$1` (`$2`: now). Run inside the transaction that changed what it
/// counts, so a reader never sees the change without the count, or the count without the change.
pub(super) const BUMP_COUNTER: &str = "INSERT INTO facts (name, value, updated_at) VALUES ($1, '1', $2) \
     ON CONFLICT (name) DO UPDATE \
     SET value = CAST(CAST(facts.value AS BIGINT) + 1 AS TEXT), updated_at = excluded.updated_at";

/// The PostgreSQL channel on which each counter fact's bump is announced (its name as payload),
/// when its transaction commits: replicas listening catch up at once rather than at their next
/// poll.
pub const CHANGES_CHANNEL: &str = "dynamcp_changes";

/// Announces a bump of counter `$1` on [`CHANGES_CHANNEL`] (PostgreSQL).
pub(super) const ANNOUNCE_CHANGE: &str = "SELECT pg_notify('dynamcp_changes', $1)";

/// Announcements of counter facts bumped by any process on the database (their names), for as
/// long as the receiver is kept.
pub type Changes = tokio::sync::mpsc::Receiver<String>;

/// One slot of capped work taken by a service (see the `slots` migration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Random per slot; [`LeaseStore::release_slot`] gives it back.
    pub id: Uuid,
    /// What is capped: `run`, `plan`.
    pub kind: String,
    /// The lease of the service doing the work.
    pub holder: Uuid,
    /// What the work is for (an agent id), for operators; may be empty.
    pub subject: String,
    /// When the slot stops counting even if never given back (its work's own time limit).
    pub expires_at: DateTime<Utc>,
}

/// The counter fact of agents deleted, one by one or with their session: a service that sees it
/// move stops what it runs for agents that are gone.
pub const AGENT_DELETIONS_FACT: &str = "agents.deletions";

#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Inserts or replaces the holder's row.
    async fn put_lease(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Removes the holder's row; `false` if it was not there.
    async fn delete_lease(&self, holder: Uuid) -> Result<bool, StoreError>;
    /// Every lease row, live or expired, oldest first.
    async fn leases(&self) -> Result<Vec<Lease>, StoreError>;
    /// The database-wide fact `name` (see the `facts` migration), if recorded.
    async fn fact(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// The counter fact `name` ([`BUMP_COUNTER`]); 0 before its first bump.
    async fn counter(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.fact(name).await?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }
    /// Records `value` as `name` unless a value is already there; returns the value recorded now
    /// (whichever process was first).
    async fn claim_fact(&self, name: &str, value: &str) -> Result<String, StoreError>;
    /// Replaces `name`'s value by `value` only while it is still `expected`; `false` if another
    /// process changed it first.
    async fn replace_fact(&self, name: &str, expected: &str, value: &str) -> Result<bool, StoreError>;
    /// Counts one request against `key`'s shared budget (a generic cell-rate algorithm, all
    /// times in microseconds since the Unix epoch): `None` when it is within the budget, else how
    /// long to wait. One statement, so concurrent services never both spend the last of it.
    async fn take_budget(
        &self,
        key: &str,
        now_us: i64,
        interval_us: i64,
        tolerance_us: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// Removes the budgets that are full again (their next arrival time has passed).
    async fn prune_budgets(&self, now_us: i64) -> Result<u64, StoreError>;
    /// Takes `slot` if fewer than `cap` slots of its kind are taken: `false` when all are.
    /// Only slots that have not expired and whose holder's lease is live count (the others are
    /// removed on the way). Serialised per kind, so concurrent services never both take the last.
    async fn take_slot(&self, slot: &Slot, cap: u32) -> Result<bool, StoreError>;
    /// Gives a slot back; `false` if it was not there (expired and removed).
    async fn release_slot(&self, id: Uuid) -> Result<bool, StoreError>;
    /// Announcements of counter bumps by any process on the database, as they commit; `None`
    /// where the backend has none (SQLite: poll [`LeaseStore::counter`]). Announcements can be
    /// missed (a reconnect), so a listener polls too.
    async fn changes(&self) -> Result<Option<Changes>, StoreError> {
        Ok(None)
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct LeaseRow {
    holder: Uuid,
    pid: i64,
    host: String,
    key_source: String,
    writing_key_id: String,
    readable_key_ids: String,
    renewals: i64,
    started_at: DateTime<Utc>,
    renewed_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<LeaseRow> for Lease {
    fn from(r: LeaseRow) -> Self {
        Lease {
            holder: r.holder,
            pid: r.pid,
            host: r.host,
            key_source: r.key_source,
            writing_key_id: r.writing_key_id,
            readable_key_ids: r.readable_key_ids.split_whitespace().map(str::to_owned).collect(),
            renewals: r.renewals,
            started_at: r.started_at,
            renewed_at: r.renewed_at,
            expires_at: r.expires_at,
        }
    }
}

/// Implements [`LeaseStore`] for a backend struct with `pool` and `writer` fields. `$slot_lock`:
/// a statement run first in a slot's transaction, given the kind as `$1`, that serialises takers
/// of that kind until the transaction ends (`None` where the transaction's first write does).
/// `$extra`: the backend's own methods (overriding defaults).
macro_rules! impl_lease_store {
    ($store:ty, $slot_lock:expr $(, $extra:item)*) => {
        #[async_trait::async_trait]
        impl $crate::store::LeaseStore for $store {
            async fn put_lease(&self, l: &$crate::store::Lease) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO service_leases (holder, pid, host, key_source, writing_key_id, \
                     readable_key_ids, renewals, started_at, renewed_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (holder) DO UPDATE SET pid = excluded.pid, host = excluded.host, \
                     key_source = excluded.key_source, writing_key_id = excluded.writing_key_id, \
                     readable_key_ids = excluded.readable_key_ids, renewals = excluded.renewals, \
                     renewed_at = excluded.renewed_at, expires_at = excluded.expires_at",
                )
                .bind(l.holder)
                .bind(l.pid)
                .bind(&l.host)
                .bind(&l.key_source)
                .bind(&l.writing_key_id)
                .bind(l.readable_key_ids.join(" "))
                .bind(l.renewals)
                .bind(l.started_at)
                .bind(l.renewed_at)
                .bind(l.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn delete_lease(&self, holder: uuid::Uuid) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM service_leases WHERE holder = $1")
                    .bind(holder)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn leases(&self) -> Result<Vec<$crate::store::Lease>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::leases::LeaseRow> = sqlx::query_as(
                    "SELECT holder, pid, host, key_source, writing_key_id, readable_key_ids, renewals, \
                     started_at, renewed_at, expires_at FROM service_leases ORDER BY started_at, holder",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn fact(&self, name: &str) -> Result<Option<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar("SELECT value FROM facts WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn claim_fact(&self, name: &str, value: &str) -> Result<String, $crate::store::StoreError> {
                // On a conflict the row is left as it is and its value returned: one statement.
                Ok(sqlx::query_scalar(
                    "INSERT INTO facts (name, value, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET name = facts.name RETURNING value",
                )
                .bind(name)
                .bind(value)
                .bind(chrono::Utc::now())
                .fetch_one(&self.writer)
                .await?)
            }

            async fn replace_fact(
                &self,
                name: &str,
                expected: &str,
                value: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(
                    "UPDATE facts SET value = $1, updated_at = $2 WHERE name = $3 AND value = $4",
                )
                .bind(value)
                .bind(chrono::Utc::now())
                .bind(name)
                .bind(expected)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn take_budget(
                &self,
                key: &str,
                now_us: i64,
                interval_us: i64,
                tolerance_us: i64,
            ) -> Result<Option<i64>, $crate::store::StoreError> {
                // The arrival time moves on only when the request fits: ahead of now by at most
                // the tolerance (the burst).
                let taken: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO rate_budgets (key, tat_us) VALUES ($1, $2 + $3) \
                     ON CONFLICT (key) DO UPDATE SET tat_us = \
                     (CASE WHEN rate_budgets.tat_us > $2 THEN rate_budgets.tat_us ELSE $2 END) + $3 \
                     WHERE (CASE WHEN rate_budgets.tat_us > $2 THEN rate_budgets.tat_us ELSE $2 END) - $2 <= $4 \
                     RETURNING tat_us",
                )
                .bind(key)
                .bind(now_us)
                .bind(interval_us)
                .bind(tolerance_us)
                .fetch_optional(&self.writer)
                .await?;
                if taken.is_some() {
                    return Ok(None);
                }
                let at: Option<i64> = sqlx::query_scalar("SELECT tat_us FROM rate_budgets WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.writer)
                    .await?;
                Ok(Some(at.map_or(0, |at| (at.max(now_us) - now_us - tolerance_us).max(1))))
            }

            async fn prune_budgets(&self, now_us: i64) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM rate_budgets WHERE tat_us < $1")
                    .bind(now_us)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn take_slot(
                &self,
                slot: &$crate::store::Slot,
                cap: u32,
            ) -> Result<bool, $crate::store::StoreError> {
                let now = chrono::Utc::now();
                let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
                let lock: Option<&str> = $slot_lock;
                if let Some(lock) = lock {
                    sqlx::query(lock).bind(&slot.kind).execute(&mut *tx).await?;
                }
                sqlx::query(
                    "DELETE FROM slots WHERE kind = $1 AND (expires_at <= $2 OR holder NOT IN \
                     (SELECT holder FROM service_leases WHERE expires_at > $2))",
                )
                .bind(&slot.kind)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM slots WHERE kind = $1")
                    .bind(&slot.kind)
                    .fetch_one(&mut *tx)
                    .await?;
                let free = taken < i64::from(cap);
                if free {
                    sqlx::query(
                        "INSERT INTO slots (id, kind, holder, subject, taken_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(slot.id)
                    .bind(&slot.kind)
                    .bind(slot.holder)
                    .bind(&slot.subject)
                    .bind(now)
                    .bind(slot.expires_at)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(free)
            }

            async fn release_slot(&self, id: uuid::Uuid) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM slots WHERE id = $1")
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            $($extra)*
        }
    };
}

pub(super) use impl_lease_store;
