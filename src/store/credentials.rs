//! Persistence of sealed credentials: ciphertext, nonces and wrapped data keys only. The vault
//! seals and opens them; this module never sees a value in clear.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;

/// Whether a credential is an environment value or a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretKind {
    Env,
    File,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Env => "env",
            SecretKind::File => "file",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "env" => Ok(SecretKind::Env),
            "file" => Ok(SecretKind::File),
            other => Err(StoreError::Corrupt(format!("unknown credential kind {other:?}"))),
        }
    }
}

/// One sealed credential as stored. `(session_id, server, key)` is unique.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCredential {
    pub id: Uuid,
    pub session_id: Uuid,
    pub server: String,
    pub key: String,
    pub kind: SecretKind,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub key_nonce: Vec<u8>,
    pub master_key_id: String,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredential")
            .field("session_id", &self.session_id)
            .field("server", &self.server)
            .field("key", &self.key)
            .field("kind", &self.kind)
            .field("master_key_id", &self.master_key_id)
            .finish_non_exhaustive()
    }
}

/// A data key re-wrapped under another master key (`vault rotate`).
#[derive(Clone)]
pub struct Rewrapped {
    pub id: Uuid,
    /// The wrap this replaces: the row is updated only if it still has it, so a value the
    /// service re-sealed meanwhile (a new data key) never gets the old data key's wrap.
    pub previous_key_nonce: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub key_nonce: Vec<u8>,
    pub master_key_id: String,
}

#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Inserts or replaces each `(session, server, key)`, all or none, and refreshes the session's
    /// list of collected credential names.
    async fn put_credentials(&self, session_id: Uuid, items: &[SealedCredential]) -> Result<(), StoreError>;
    /// Every sealed credential of a session, by server then key.
    async fn credentials(&self, session_id: Uuid) -> Result<Vec<SealedCredential>, StoreError>;
    /// Every sealed credential (for key rotation).
    async fn all_credentials(&self) -> Result<Vec<SealedCredential>, StoreError>;
    /// Any one sealed credential (to prove the master key at start), or none.
    async fn any_credential(&self) -> Result<Option<SealedCredential>, StoreError>;
    /// Any one credential whose data key `master_key_id` wraps (to prove that key), or none.
    async fn credential_sealed_by(&self, master_key_id: &str)
    -> Result<Option<SealedCredential>, StoreError>;
    /// Up to `limit` credentials whose data key another master key than `master_key_id` wraps.
    async fn credentials_not_sealed_by(
        &self,
        master_key_id: &str,
        limit: u32,
    ) -> Result<Vec<SealedCredential>, StoreError>;
    /// Replaces wrapped data keys in one transaction, each only where the row still has the wrap
    /// it replaces ([`Rewrapped::previous_key_nonce`]); returns how many rows changed.
    async fn rewrap_credentials(&self, items: &[Rewrapped]) -> Result<u64, StoreError>;
    /// The master key ids in use, with how many credentials each sealed.
    async fn master_key_ids(&self) -> Result<Vec<(String, i64)>, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct CredentialRow {
    id: Uuid,
    session_id: Uuid,
    server: String,
    key: String,
    kind: String,
    ciphertext: Vec<u8>,
    nonce: Vec<u8>,
    wrapped_key: Vec<u8>,
    key_nonce: Vec<u8>,
    master_key_id: String,
    updated_at: DateTime<Utc>,
}

impl TryFrom<CredentialRow> for SealedCredential {
    type Error = StoreError;

    fn try_from(r: CredentialRow) -> Result<Self, StoreError> {
        Ok(SealedCredential {
            id: r.id,
            session_id: r.session_id,
            server: r.server,
            key: r.key,
            kind: SecretKind::parse(&r.kind)?,
            ciphertext: r.ciphertext,
            nonce: r.nonce,
            wrapped_key: r.wrapped_key,
            key_nonce: r.key_nonce,
            master_key_id: r.master_key_id,
            updated_at: r.updated_at,
        })
    }
}

macro_rules! credential_columns {
    () => {
        "id, session_id, server, key, kind, ciphertext, nonce, wrapped_key, key_nonce, master_key_id, updated_at"
    };
}
pub(super) use credential_columns;

/// Implements [`CredentialStore`] for a backend struct with a `pool` field.
macro_rules! impl_credential_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::CredentialStore for $store {
            async fn put_credentials(
                &self,
                session_id: uuid::Uuid,
                items: &[$crate::store::SealedCredential],
            ) -> Result<(), $crate::store::StoreError> {
                let now = $crate::store::sql::now();
                let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
                for c in items {
                    sqlx::query(concat!(
                        "INSERT INTO credentials (",
                        $crate::store::credentials::credential_columns!(),
                        ", created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
                         ON CONFLICT (session_id, server, key) DO UPDATE SET kind = excluded.kind, \
                         ciphertext = excluded.ciphertext, nonce = excluded.nonce, \
                         wrapped_key = excluded.wrapped_key, key_nonce = excluded.key_nonce, \
                         master_key_id = excluded.master_key_id, updated_at = excluded.updated_at"
                    ))
                    .bind(c.id)
                    .bind(session_id)
                    .bind(&c.server)
                    .bind(&c.key)
                    .bind(c.kind.as_str())
                    .bind(&c.ciphertext)
                    .bind(&c.nonce)
                    .bind(&c.wrapped_key)
                    .bind(&c.key_nonce)
                    .bind(&c.master_key_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::store::sql::parent_missing(e, "session"))?;
                }
                let names: Vec<(String, String)> =
                    sqlx::query_as("SELECT server, key FROM credentials WHERE session_id = $1 ORDER BY server, key")
                        .bind(session_id)
                        .fetch_all(&mut *tx)
                        .await?;
                let mut collected = $crate::store::CredentialNames::new();
                for (server, key) in names {
                    collected.entry(server).or_default().push(key);
                }
                sqlx::query("UPDATE sessions SET collected_credentials = $2, updated_at = $3 WHERE id = $1")
                    .bind(session_id)
                    .bind(sqlx::types::Json(&collected))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn credentials(
                &self,
                session_id: uuid::Uuid,
            ) -> Result<Vec<$crate::store::SealedCredential>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::credentials::CredentialRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::credentials::credential_columns!(),
                    " FROM credentials WHERE session_id = $1 ORDER BY server, key"
                ))
                .bind(session_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn all_credentials(
                &self,
            ) -> Result<Vec<$crate::store::SealedCredential>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::credentials::CredentialRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::credentials::credential_columns!(),
                    " FROM credentials ORDER BY session_id, server, key"
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn any_credential(
                &self,
            ) -> Result<Option<$crate::store::SealedCredential>, $crate::store::StoreError> {
                let row: Option<$crate::store::credentials::CredentialRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::credentials::credential_columns!(),
                    " FROM credentials LIMIT 1"
                ))
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn credential_sealed_by(
                &self,
                master_key_id: &str,
            ) -> Result<Option<$crate::store::SealedCredential>, $crate::store::StoreError> {
                let row: Option<$crate::store::credentials::CredentialRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::credentials::credential_columns!(),
                    " FROM credentials WHERE master_key_id = $1 LIMIT 1"
                ))
                .bind(master_key_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn credentials_not_sealed_by(
                &self,
                master_key_id: &str,
                limit: u32,
            ) -> Result<Vec<$crate::store::SealedCredential>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::credentials::CredentialRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::credentials::credential_columns!(),
                    " FROM credentials WHERE master_key_id <> $1 ORDER BY id LIMIT $2"
                ))
                .bind(master_key_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn rewrap_credentials(
                &self,
                items: &[$crate::store::Rewrapped],
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
                let mut changed = 0;
                for r in items {
                    changed += sqlx::query(
                        "UPDATE credentials SET wrapped_key = $2, key_nonce = $3, master_key_id = $4 \
                         WHERE id = $1 AND key_nonce = $5",
                    )
                    .bind(r.id)
                    .bind(&r.wrapped_key)
                    .bind(&r.key_nonce)
                    .bind(&r.master_key_id)
                    .bind(&r.previous_key_nonce)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(changed)
            }

            async fn master_key_ids(&self) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT master_key_id, COUNT(*) FROM credentials GROUP BY master_key_id ORDER BY master_key_id",
                )
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

pub(super) use impl_credential_store;
