//! Persistence of the MCP server catalog: server records (`mcp_server_cache`), credential
//! instructions, and the embedding cache. Records are opaque JSON here: the `catalog` module owns
//! their meaning, this one only stores rows.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde_json::Value;

use super::StoreError;

/// One catalog server as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRow {
    pub id: String,
    pub server_name: String,
    pub description: String,
    pub tools: Value,
    pub credential_requirements: Value,
    /// The whole record, as the catalog module serialised it.
    pub record: Value,
    pub content_hash: String,
    pub origin: String,
}

/// How to obtain one credential of one server (keyed by server slug or id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionRow {
    pub server: String,
    pub key: String,
    pub description: String,
    pub steps: Vec<String>,
    pub required: Option<bool>,
    pub secret: Option<bool>,
}

/// One server verification as stored (its meaning belongs to `catalog::verified`).
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationRow {
    pub server: String,
    pub launch: String,
    /// `""` when no version is known.
    pub version: String,
    pub verdict: String,
    pub detail: Value,
}

/// What one import transaction changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub instructions: u64,
}

/// The counter fact of changes to the catalog: bumped in the transaction of every import or
/// removal that changes it, so every service on the database sees the change and loads it (see
/// `Catalog::catch_up`).
pub const CATALOG_VERSION_FACT: &str = "catalog.version";

#[async_trait]
pub trait CatalogStore: Send + Sync {
    async fn catalog_count(&self) -> Result<u64, StoreError>;

    /// How many changes the catalog has had (0: none recorded yet).
    async fn catalog_version(&self) -> Result<u64, StoreError>;

    /// Upserts servers and instructions in one transaction. Servers whose content hash is
    /// unchanged are not rewritten; a change bumps the catalog version in the same transaction.
    async fn upsert_catalog(
        &self,
        servers: &[CatalogRow],
        instructions: &[InstructionRow],
    ) -> Result<UpsertCounts, StoreError>;

    /// Deletes every server whose id is not in `keep`; returns how many went.
    async fn retain_catalog(&self, keep: &HashSet<String>) -> Result<u64, StoreError>;

    /// Every stored record as `(content hash, JSON text)`, in id order: start-up parses them all
    /// straight into records, with no value tree in between.
    async fn catalog_record_texts(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Every stored server as `(id, content hash)`, in no order: what a reload compares with the
    /// records it already has, to read only the changed ones.
    async fn catalog_hashes(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// The records of `ids` (those still stored) as `(content hash, JSON text)`.
    async fn catalog_record_texts_of(&self, ids: &[String]) -> Result<Vec<(String, String)>, StoreError>;
    async fn catalog_record(&self, id: &str) -> Result<Option<Value>, StoreError>;
    async fn credential_instructions(&self) -> Result<Vec<InstructionRow>, StoreError>;

    /// Every cached embedding of `model`, by text hash (little-endian f32 bytes).
    async fn embeddings(&self, model: &str) -> Result<HashMap<String, Vec<u8>>, StoreError>;
    /// The cached embeddings of `model` for the text hashes `hashes` (those cached).
    async fn embeddings_of(
        &self,
        model: &str,
        hashes: &[String],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError>;
    async fn put_embeddings(&self, model: &str, items: &[(String, Vec<u8>)]) -> Result<(), StoreError>;

    /// Records one server verification (see `catalog::verified`), replacing an earlier one of the
    /// same server, launch and version. `detail` is the whole verification as JSON.
    async fn put_verification(&self, row: &VerificationRow) -> Result<(), StoreError>;

    /// Every stored verification of `server`, newest first, as the JSON written.
    async fn verifications(&self, server: &str) -> Result<Vec<Value>, StoreError>;

    /// Dense search inside the database (PostgreSQL with pgvector); `None` where the backend has
    /// none and the in-process index serves alone.
    fn vectors(&self) -> Option<&dyn super::VectorSearch> {
        None
    }
}

/// Keys bound per `IN (...)` query (SQLite allows 32,766 parameters, PostgreSQL 65,535).
pub(crate) const KEYS_PER_QUERY: usize = 500;

/// `$1, $2, ..., $n`.
pub(crate) fn placeholders(n: usize) -> String {
    placeholders_from(1, n)
}

/// `$first, ..., $(first + n - 1)`.
pub(crate) fn placeholders_from(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Implements [`CatalogStore`] for a backend struct with a `pool` field; extra items (such as
/// `vectors`) go into the impl as given.
macro_rules! impl_catalog_store {
    ($store:ty $(, $extra:item)*) => {
        #[async_trait::async_trait]
        impl $crate::store::CatalogStore for $store {
            async fn catalog_count(&self) -> Result<u64, $crate::store::StoreError> {
                let (n,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM mcp_server_cache").fetch_one(&self.pool).await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn catalog_version(&self) -> Result<u64, $crate::store::StoreError> {
                $crate::store::LeaseStore::counter(self, $crate::store::catalog::CATALOG_VERSION_FACT).await
            }

            async fn upsert_catalog(
                &self,
                servers: &[$crate::store::CatalogRow],
                instructions: &[$crate::store::InstructionRow],
            ) -> Result<$crate::store::UpsertCounts, $crate::store::StoreError> {
                let now = $crate::store::sql::now();
                let mut counts = $crate::store::UpsertCounts::default();
                let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
                let existing: Vec<(String, String)> =
                    sqlx::query_as("SELECT id, content_hash FROM mcp_server_cache").fetch_all(&mut *tx).await?;
                let existing: std::collections::HashMap<String, String> = existing.into_iter().collect();
                for row in servers {
                    match existing.get(&row.id) {
                        Some(hash) if *hash == row.content_hash => {
                            counts.unchanged += 1;
                            continue;
                        }
                        Some(_) => counts.updated += 1,
                        None => counts.inserted += 1,
                    }
                    sqlx::query(
                        "INSERT INTO mcp_server_cache (id, server_name, description, tools, \
                         credential_requirements, record, content_hash, origin, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                         ON CONFLICT (id) DO UPDATE SET server_name = excluded.server_name, \
                         description = excluded.description, tools = excluded.tools, \
                         credential_requirements = excluded.credential_requirements, \
                         record = excluded.record, content_hash = excluded.content_hash, \
                         origin = excluded.origin, updated_at = excluded.updated_at",
                    )
                    .bind(&row.id)
                    .bind(&row.server_name)
                    .bind(&row.description)
                    .bind(sqlx::types::Json(&row.tools))
                    .bind(sqlx::types::Json(&row.credential_requirements))
                    .bind(sqlx::types::Json(&row.record))
                    .bind(&row.content_hash)
                    .bind(&row.origin)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                for i in instructions {
                    sqlx::query(
                        "INSERT INTO credential_instructions (server, key, description, steps, required, \
                         secret, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (server, key) DO UPDATE SET description = excluded.description, \
                         steps = excluded.steps, required = excluded.required, secret = excluded.secret, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(&i.server)
                    .bind(&i.key)
                    .bind(&i.description)
                    .bind(sqlx::types::Json(&i.steps))
                    .bind(i.required)
                    .bind(i.secret)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    counts.instructions += 1;
                }
                if counts.inserted + counts.updated + counts.instructions > 0 {
                    Self::bump_counter(&mut tx, $crate::store::catalog::CATALOG_VERSION_FACT).await?;
                }
                tx.commit().await?;
                Ok(counts)
            }

            async fn retain_catalog(
                &self,
                keep: &std::collections::HashSet<String>,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
                let ids: Vec<(String,)> = sqlx::query_as("SELECT id FROM mcp_server_cache").fetch_all(&mut *tx).await?;
                let mut removed = 0;
                for (id,) in ids.into_iter().filter(|(id,)| !keep.contains(id)) {
                    removed += sqlx::query("DELETE FROM mcp_server_cache WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                if removed > 0 {
                    Self::bump_counter(&mut tx, $crate::store::catalog::CATALOG_VERSION_FACT).await?;
                }
                tx.commit().await?;
                Ok(removed)
            }

            async fn catalog_record_texts(&self) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT content_hash, CAST(record AS TEXT) FROM mcp_server_cache ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn catalog_hashes(&self) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT id, content_hash FROM mcp_server_cache")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn catalog_record_texts_of(
                &self,
                ids: &[String],
            ) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks($crate::store::catalog::KEYS_PER_QUERY) {
                    let sql = format!(
                        "SELECT content_hash, CAST(record AS TEXT) FROM mcp_server_cache WHERE id IN ({})",
                        $crate::store::catalog::placeholders(chunk.len())
                    );
                    // Only numbered placeholders are formatted in; the ids are bound.
                    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                    for id in chunk {
                        query = query.bind(id);
                    }
                    out.extend(query.fetch_all(&self.pool).await?);
                }
                Ok(out)
            }

            async fn catalog_record(
                &self,
                id: &str,
            ) -> Result<Option<serde_json::Value>, $crate::store::StoreError> {
                let row: Option<(sqlx::types::Json<serde_json::Value>,)> =
                    sqlx::query_as("SELECT record FROM mcp_server_cache WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(r,)| r.0))
            }

            async fn credential_instructions(
                &self,
            ) -> Result<Vec<$crate::store::InstructionRow>, $crate::store::StoreError> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(String, String, String, sqlx::types::Json<Vec<String>>, Option<bool>, Option<bool>)> =
                    sqlx::query_as(
                        "SELECT server, key, description, steps, required, secret \
                         FROM credential_instructions ORDER BY server, key",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(server, key, description, steps, required, secret)| $crate::store::InstructionRow {
                        server,
                        key,
                        description,
                        steps: steps.0,
                        required,
                        secret,
                    })
                    .collect())
            }

            async fn embeddings(
                &self,
                model: &str,
            ) -> Result<std::collections::HashMap<String, Vec<u8>>, $crate::store::StoreError> {
                let rows: Vec<(String, Vec<u8>)> =
                    sqlx::query_as("SELECT text_hash, vector FROM embedding_cache WHERE model = $1")
                        .bind(model)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().collect())
            }

            async fn embeddings_of(
                &self,
                model: &str,
                hashes: &[String],
            ) -> Result<std::collections::HashMap<String, Vec<u8>>, $crate::store::StoreError> {
                let mut out = std::collections::HashMap::with_capacity(hashes.len());
                for chunk in hashes.chunks($crate::store::catalog::KEYS_PER_QUERY) {
                    let sql = format!(
                        "SELECT text_hash, vector FROM embedding_cache WHERE model = $1 AND text_hash IN ({})",
                        $crate::store::catalog::placeholders_from(2, chunk.len())
                    );
                    let mut query = sqlx::query_as::<_, (String, Vec<u8>)>(sqlx::AssertSqlSafe(sql)).bind(model);
                    for hash in chunk {
                        query = query.bind(hash);
                    }
                    out.extend(query.fetch_all(&self.pool).await?);
                }
                Ok(out)
            }

            async fn put_embeddings(
                &self,
                model: &str,
                items: &[(String, Vec<u8>)],
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
                for (hash, vector) in items {
                    sqlx::query(
                        "INSERT INTO embedding_cache (model, text_hash, vector) VALUES ($1, $2, $3) \
                         ON CONFLICT (model, text_hash) DO NOTHING",
                    )
                    .bind(model)
                    .bind(hash)
                    .bind(vector)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn put_verification(
                &self,
                row: &$crate::store::VerificationRow,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO server_verifications (server_id, launch, version, verdict, detail, checked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (server_id, launch, version) DO UPDATE \
                     SET verdict = excluded.verdict, detail = excluded.detail, checked_at = excluded.checked_at",
                )
                .bind(&row.server)
                .bind(&row.launch)
                .bind(&row.version)
                .bind(&row.verdict)
                .bind(sqlx::types::Json(&row.detail))
                .bind($crate::store::sql::now())
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn verifications(
                &self,
                server: &str,
            ) -> Result<Vec<serde_json::Value>, $crate::store::StoreError> {
                let rows: Vec<(sqlx::types::Json<serde_json::Value>,)> = sqlx::query_as(
                    "SELECT detail FROM server_verifications WHERE server_id = $1 ORDER BY checked_at DESC",
                )
                .bind(server)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(d,)| d.0).collect())
            }

            $($extra)*
        }
    };
}

pub(super) use impl_catalog_store;
