//! Dense search inside PostgreSQL with pgvector: the catalog's server and tool vectors are copied
//! into `vector(384)` columns with HNSW indexes, and queried through `match_mcp_servers` /
//! `match_mcp_tools` (approximate, HNSW) or by an exact scan. SQLite has no counterpart: there the
//! in-process index is the only dense path.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::StoreError;
use super::postgres::PgStore;

/// The dimension of the pgvector columns (all-MiniLM-L6-v2 and bge-small both have 384).
pub const DIMS: usize = 384;

/// How to search: through the HNSW index, or by scanning every vector (the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    Hnsw,
    Exact,
}

/// One set of vectors to store: per server `(id, text hash, vector)`, per tool `(server id, tool
/// position, text hash, vector)`, and a digest of the whole (model and every text). A vector may
/// be left empty where the caller expects the stored one to have its hash already.
pub struct VectorSet<'a> {
    pub model: &'a str,
    pub digest: &'a str,
    pub servers: Vec<(&'a str, &'a str, &'a [f32])>,
    pub tools: Vec<(&'a str, u32, &'a str, &'a [f32])>,
}

#[async_trait]
pub trait VectorSearch: Send + Sync {
    /// Makes the stored vectors `set`'s, unless they already are its model's and digest's:
    /// in place, rewriting only the vectors whose text changed, while searches go on; rebuilt
    /// whole (indexes dropped and built again, searches waiting) only when most of them changed
    /// (the first load, another model).
    async fn sync_vectors(&self, set: &VectorSet<'_>) -> Result<Synced, StoreError>;
    /// Whether the stored vectors already are `model`'s for the texts `digest` names (a cheap
    /// check before building a [`VectorSet`]; `sync_vectors` checks again under its lock).
    async fn is_synced(&self, model: &str, digest: &str) -> Result<bool, StoreError>;
    /// The `k` servers whose own vector is nearest: `(id, cosine similarity)`, best first.
    async fn nearest_servers(
        &self,
        v: &[f32],
        k: usize,
        scan: Scan,
    ) -> Result<Vec<(String, f32)>, StoreError>;
    /// The `k` nearest tools: `(server id, tool position, cosine similarity)`, best first.
    async fn nearest_tools(
        &self,
        v: &[f32],
        k: usize,
        scan: Scan,
    ) -> Result<Vec<(String, u32, f32)>, StoreError>;
}

/// What [`VectorSearch::sync_vectors`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The stored vectors already were the set's.
    Already,
    /// The set's vectors are stored now.
    Written,
    /// Nothing was written: a vector to write was left empty in the set. Send it again with
    /// every vector.
    Incomplete,
}

/// pgvector's text form of a vector, `[x,y,...]`.
fn literal(v: &[f32]) -> String {
    let mut out = String::with_capacity(v.len() * 11 + 2);
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&x.to_string());
    }
    out.push(']');
    out
}

/// A tool's position as stored.
fn position(tool: u32) -> i32 {
    i32::try_from(tool).unwrap_or(i32::MAX)
}

/// Rows per statement when copying vectors in.
const BATCH: usize = 2000;
const SYNC_NAME: &str = "catalog";

#[async_trait]
impl VectorSearch for PgStore {
    async fn sync_vectors(&self, set: &VectorSet<'_>) -> Result<Synced, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One sync at a time: a second process starting against the same database waits here.
        sqlx::query("SELECT pg_advisory_xact_lock(7177260001)").execute(&mut *tx).await?;
        let current: Option<(String, String)> =
            sqlx::query_as("SELECT model, digest FROM vector_sync WHERE name = $1")
                .bind(SYNC_NAME)
                .fetch_optional(&mut *tx)
                .await?;
        if current.as_ref().is_some_and(|(m, d)| m == set.model && d == set.digest) {
            return Ok(Synced::Already);
        }
        let same_model = current.as_ref().is_some_and(|(m, _)| m == set.model);
        let stored_servers: HashMap<String, String> = if same_model {
            sqlx::query_as(
                "SELECT id, embedding_hash FROM mcp_server_cache \
                 WHERE embedding IS NOT NULL AND embedding_hash IS NOT NULL",
            )
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect()
        } else {
            HashMap::new()
        };
        let stored_tools: HashMap<(String, i32), String> = if same_model {
            sqlx::query_as::<_, (String, i32, String)>(
                "SELECT server_id, tool, embedding_hash FROM mcp_tool_embeddings WHERE embedding_hash IS NOT NULL",
            )
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id, tool, hash)| ((id, tool), hash))
            .collect()
        } else {
            HashMap::new()
        };
        let servers: Vec<_> = set
            .servers
            .iter()
            .filter(|(id, hash, _)| stored_servers.get(*id).is_none_or(|h| h != hash))
            .collect();
        let tools: Vec<_> = set
            .tools
            .iter()
            .filter(|(id, tool, hash, _)| {
                stored_tools.get(&((*id).to_owned(), position(*tool))).is_none_or(|h| h != hash)
            })
            .collect();
        let kept: HashSet<(&str, i32)> =
            set.tools.iter().map(|(id, tool, ..)| (*id, position(*tool))).collect();
        let gone: Vec<&(String, i32)> =
            stored_tools.keys().filter(|(id, tool)| !kept.contains(&(id.as_str(), *tool))).collect();
        let rewritten = servers.len() + tools.len() + gone.len();
        let whole = 2 * rewritten > set.servers.len() + set.tools.len();
        let lacking = if whole {
            set.servers.iter().any(|(.., v)| v.is_empty()) || set.tools.iter().any(|(.., v)| v.is_empty())
        } else {
            servers.iter().any(|(.., v)| v.is_empty()) || tools.iter().any(|(.., v)| v.is_empty())
        };
        if lacking {
            return Ok(Synced::Incomplete);
        }
        if whole {
            // Building an HNSW index once over all rows is many times faster than growing it row
            // by row: drop both indexes, load, rebuild (inside the transaction; searches wait).
            for statement in [
                "SELECT set_config('maintenance_work_mem', '256MB', true)",
                "DROP INDEX IF EXISTS mcp_server_cache_embedding_idx",
                "DROP INDEX IF EXISTS mcp_tool_embeddings_embedding_idx",
                "UPDATE mcp_server_cache SET embedding = NULL, embedding_hash = NULL WHERE embedding IS NOT NULL",
                "DELETE FROM mcp_tool_embeddings",
            ] {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
        } else {
            // In place: row locks only, so searches (and their index scans) go on.
            for chunk in gone.chunks(BATCH) {
                let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
                let tools: Vec<i32> = chunk.iter().map(|(_, tool)| *tool).collect();
                sqlx::query(
                    "DELETE FROM mcp_tool_embeddings t USING UNNEST($1::text[], $2::int4[]) AS v(id, tool) \
                     WHERE t.server_id = v.id AND t.tool = v.tool",
                )
                .bind(ids)
                .bind(tools)
                .execute(&mut *tx)
                .await?;
            }
        }
        let servers: Vec<_> = if whole { set.servers.iter().collect() } else { servers };
        let tools: Vec<_> = if whole { set.tools.iter().collect() } else { tools };
        for chunk in servers.chunks(BATCH) {
            let ids: Vec<&str> = chunk.iter().map(|(id, ..)| *id).collect();
            let hashes: Vec<&str> = chunk.iter().map(|(_, hash, _)| *hash).collect();
            let vectors: Vec<String> = chunk.iter().map(|(.., v)| literal(v)).collect();
            sqlx::query(
                "UPDATE mcp_server_cache c SET embedding = v.e::vector, embedding_hash = v.h \
                 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS v(id, h, e) WHERE c.id = v.id",
            )
            .bind(ids)
            .bind(hashes)
            .bind(vectors)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in tools.chunks(BATCH) {
            let ids: Vec<&str> = chunk.iter().map(|(id, ..)| *id).collect();
            let positions: Vec<i32> = chunk.iter().map(|(_, tool, ..)| position(*tool)).collect();
            let hashes: Vec<&str> = chunk.iter().map(|(_, _, hash, _)| *hash).collect();
            let vectors: Vec<String> = chunk.iter().map(|(.., v)| literal(v)).collect();
            sqlx::query(
                "INSERT INTO mcp_tool_embeddings (server_id, tool, embedding, embedding_hash) \
                 SELECT v.id, v.t, v.e::vector, v.h \
                 FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[]) AS v(id, t, h, e) \
                 WHERE EXISTS (SELECT 1 FROM mcp_server_cache c WHERE c.id = v.id) \
                 ON CONFLICT (server_id, tool) DO UPDATE \
                 SET embedding = excluded.embedding, embedding_hash = excluded.embedding_hash",
            )
            .bind(ids)
            .bind(positions)
            .bind(hashes)
            .bind(vectors)
            .execute(&mut *tx)
            .await?;
        }
        if whole {
            for statement in [
                "CREATE INDEX mcp_server_cache_embedding_idx ON mcp_server_cache \
                 USING hnsw (embedding vector_cosine_ops)",
                "CREATE INDEX mcp_tool_embeddings_embedding_idx ON mcp_tool_embeddings \
                 USING hnsw (embedding vector_cosine_ops)",
            ] {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
        }
        tracing::debug!(
            whole,
            servers = servers.len(),
            tools = tools.len(),
            removed = gone.len(),
            "vectors written"
        );
        sqlx::query(
            "INSERT INTO vector_sync (name, model, digest, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET model = excluded.model, digest = excluded.digest, \
             updated_at = excluded.updated_at",
        )
        .bind(SYNC_NAME)
        .bind(set.model)
        .bind(set.digest)
        .bind(super::sql::now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Synced::Written)
    }

    async fn is_synced(&self, model: &str, digest: &str) -> Result<bool, StoreError> {
        let found: Option<(i32,)> =
            sqlx::query_as("SELECT 1 FROM vector_sync WHERE name = $1 AND model = $2 AND digest = $3")
                .bind(SYNC_NAME)
                .bind(model)
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn nearest_servers(
        &self,
        v: &[f32],
        k: usize,
        scan: Scan,
    ) -> Result<Vec<(String, f32)>, StoreError> {
        let rows: Vec<(String, f64)> = self
            .nearest(
                v,
                k,
                scan,
                "SELECT id, similarity FROM match_mcp_servers($1::vector, -2, $2)",
                // `+ 0` keeps the planner off the HNSW index: an exact scan.
                "SELECT id, 1 - (embedding <=> $1::vector) FROM mcp_server_cache \
                 WHERE embedding IS NOT NULL ORDER BY (embedding <=> $1::vector) + 0, id LIMIT $2",
            )
            .await?;
        Ok(rows.into_iter().map(|(id, s)| (id, s as f32)).collect())
    }

    async fn nearest_tools(
        &self,
        v: &[f32],
        k: usize,
        scan: Scan,
    ) -> Result<Vec<(String, u32, f32)>, StoreError> {
        let rows: Vec<(String, i32, f64)> = self
            .nearest(
                v,
                k,
                scan,
                "SELECT server_id, tool, similarity FROM match_mcp_tools($1::vector, $2)",
                "SELECT server_id, tool, 1 - (embedding <=> $1::vector) FROM mcp_tool_embeddings \
                 ORDER BY (embedding <=> $1::vector) + 0, server_id, tool LIMIT $2",
            )
            .await?;
        Ok(rows.into_iter().map(|(id, t, s)| (id, u32::try_from(t).unwrap_or(0), s as f32)).collect())
    }
}

impl PgStore {
    /// Runs a nearest-neighbour query (`$1` the vector, `$2` the count): through HNSW with
    /// `ef_search` widened to `k`, or the exact scan.
    async fn nearest<R>(
        &self,
        v: &[f32],
        k: usize,
        scan: Scan,
        hnsw: &'static str,
        exact: &'static str,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let k = i32::try_from(k).unwrap_or(i32::MAX);
        let mut tx = self.pool.begin().await?;
        let sql = match scan {
            Scan::Hnsw => {
                ef_search(&mut tx, k).await?;
                hnsw
            }
            Scan::Exact => exact,
        };
        let rows = sqlx::query_as(sql).bind(literal(v)).bind(k).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
    }
}

/// HNSW returns at most `ef_search` rows (default 40): widen it to the number asked for.
async fn ef_search(tx: &mut sqlx::PgConnection, k: i32) -> Result<(), StoreError> {
    sqlx::query("SELECT set_config('hnsw.ef_search', $1, true)")
        .bind(k.clamp(40, 1000).to_string())
        .execute(tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn vectors_are_written_in_pgvector_text_form() {
        assert_eq!(super::literal(&[0.5, -1.0, 0.125]), "[0.5,-1,0.125]");
    }
}
