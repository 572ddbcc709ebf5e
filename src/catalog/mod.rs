//! The catalog of MCP servers: records, import from every common format, and search by meaning.
//!
//! Owns the in-memory [`SearchIndex`] (rebuilt after each import) and the rules that turn stored
//! rows and credential instructions into the records the planner and the API see. Persists
//! through [`CatalogStore`]; knows nothing of HTTP.

pub mod bm25;
pub mod dense;
pub mod embed;
pub mod eval;
pub mod import;
pub mod intents;
pub mod needs;
pub mod pack;
pub mod record;
pub mod requirements;
pub mod search;
pub mod text;
pub mod verified;

mod query_cache;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock, Weak};

use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{CatalogRow, CatalogStore, InstructionRow, Scan, StoreError, UpsertCounts, VectorSet};
use dense::{DenseHits, DenseIndex, Quantized};
pub use embed::{EmbedError, Embedder, TextKind};
pub use import::{EntryIssue, Format, ImportError};
use query_cache::{Bounded, QueryCache};
pub use record::{
    CredentialKind, CredentialSpec, LaunchKind, LaunchOption, Launchability, RegistryFacts, ServerRecord,
    Tool,
};
pub use search::{Found, Hit, QueryText, SearchConfig, SearchIndex};

/// The default catalog, compiled in (see `catalog/README.md` for its sources and licences).
pub static DEFAULT_CATALOG: &[u8] = include_bytes!("../../catalog/mcp_catalog.json.gz");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("{path}: no valid entry ({} issue(s)); nothing was imported", issues.len())]
    NothingValid { path: String, issues: Vec<EntryIssue> },
    #[error("stored catalog record {id} is unreadable: {reason}")]
    CorruptRecord { id: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the index build was interrupted")]
    Interrupted,
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(
        "dense search through pgvector needs the PostgreSQL store and a 384-dimension embedding model; \
         use --dense-backend in-process"
    )]
    PgvectorUnavailable,
}

/// One search result as clients see it, over HTTP and MCP.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
pub struct SearchResult {
    /// Catalog id.
    pub id: String,
    pub name: String,
    pub description: String,
    /// Fused relevance; higher is better. Comparable within one response only.
    pub score: f32,
    /// The server's tools that match the request, best first.
    pub matched_tools: Vec<String>,
    /// The credentials it reads, by name (never values).
    pub credentials: Vec<CredentialSummary>,
    /// Has a launch option dynamcp can run (npm, PyPI, docker, remote URL).
    pub runnable: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
pub struct CredentialSummary {
    pub key: String,
    pub required: bool,
    pub secret: bool,
}

/// Where dense (vector) retrieval runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DenseBackend {
    /// pgvector on PostgreSQL, the in-process index on SQLite.
    #[default]
    Auto,
    /// The in-process int8 index (fastest; both backends).
    InProcess,
    /// pgvector's HNSW index (`match_mcp_servers`, `match_mcp_tools`); PostgreSQL only.
    Pgvector,
}

/// What importing one file did.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub format: Format,
    pub servers: usize,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub instructions: u64,
    pub issues: Vec<EntryIssue>,
    /// Ids of the servers the file holds (for `--replace`).
    #[serde(skip)]
    pub ids: Vec<String>,
}

/// The catalog service: the store, the embedder, and the search index over the current contents.
pub struct Catalog {
    store: Arc<dyn CatalogStore>,
    embedder: Option<Arc<dyn Embedder>>,
    index: RwLock<Arc<SearchIndex>>,
    queries: QueryCache,
    /// Whole results of recent searches, each with the index it was computed on: an entry from
    /// an index that has since been replaced never matches.
    results: Bounded<(Weak<SearchIndex>, Arc<Found>)>,
    /// Dense retrieval through pgvector (with this scan) instead of the in-process index.
    pgvector: Option<Scan>,
    /// The store's catalog version the current index was built from.
    version: std::sync::atomic::AtomicU64,
}

/// Query vectors kept for repeated searches.
const QUERY_CACHE: usize = 4096;
/// Search results kept for repeated searches.
const RESULT_CACHE: usize = 4096;
/// The result cache's key: everything a search's outcome depends on, besides the index.
fn result_key(request: &str, limit: usize, config: SearchConfig) -> String {
    format!("{limit}\u{0}{config:?}\u{0}{request}")
}

/// A query with everyday phrasings expanded into catalog words, when the configuration asks.
fn expand(text: &str, config: SearchConfig) -> String {
    if config.intents { intents::expand(text).unwrap_or_else(|| text.to_owned()) } else { text.to_owned() }
}

/// Texts embedded per call while building the index (progress is reported between calls).
const EMBED_CHUNK: usize = 512;
/// Tools fetched from pgvector per server hit wanted (several tools of one server may lead).
const PG_TOOL_SHORTLIST: usize = 3;

impl Catalog {
    /// Loads the stored catalog and builds its index. Without an embedder, search is lexical only.
    pub async fn open(
        store: Arc<dyn CatalogStore>,
        embedder: Option<Arc<dyn Embedder>>,
        backend: DenseBackend,
    ) -> Result<Self, CatalogError> {
        Self::open_while_loading(store, async { embedder }, None, backend).await
    }

    /// [`Catalog::open`] with an embedder that is still loading. Start-up's critical path, so
    /// three things overlap: the model loads; the records are read and the lexical index is
    /// built; and the stored vectors of `model`, the id the loading model is expected to have
    /// (a local model's id comes from its files, see [`embed::LocalEmbedder::id_of`]), are read.
    /// Each phase logs its time at debug level.
    pub async fn open_while_loading(
        store: Arc<dyn CatalogStore>,
        embedder: impl Future<Output = Option<Arc<dyn Embedder>>>,
        model: Option<String>,
        backend: DenseBackend,
    ) -> Result<Self, CatalogError> {
        let vectors = async {
            let id = model?;
            let started = std::time::Instant::now();
            let vectors = store.embeddings(&id).await;
            tracing::debug!(secs = started.elapsed().as_secs_f64(), "stored vectors read");
            Some((id, vectors))
        };
        // Read before the records: an import committed meanwhile is loaded by the next `catch_up`.
        let version = store.catalog_version().await?;
        let (embedder, vectors, index) = tokio::join!(embedder, vectors, lexical_index(store.as_ref()));
        let mut index = index?;
        // Vectors read for another id than the loaded model's are dropped; `dense_index` then
        // reads the right ones.
        let cached = match (&embedder, vectors) {
            (Some(e), Some((id, vectors))) if id == e.id() => Some(vectors?),
            _ => None,
        };
        let usable = store.vectors().is_some()
            && embedder.as_ref().is_some_and(|e| e.dims() == crate::store::vectors::DIMS);
        let pgvector = match backend {
            DenseBackend::InProcess => None,
            DenseBackend::Auto => usable.then_some(Scan::Hnsw),
            DenseBackend::Pgvector if usable => Some(Scan::Hnsw),
            DenseBackend::Pgvector => return Err(CatalogError::PgvectorUnavailable),
        };
        if let Some(embedder) = embedder.as_deref() {
            let dense =
                dense_index(store.as_ref(), embedder, cached, &index, pgvector.is_some(), &|_, _| {}).await?;
            index.attach_dense(dense);
        }
        Ok(Self {
            store,
            embedder,
            index: RwLock::new(Arc::new(index)),
            queries: QueryCache::new(QUERY_CACHE),
            results: Bounded::new(RESULT_CACHE),
            pgvector,
            version: std::sync::atomic::AtomicU64::new(version),
        })
    }

    /// The store's catalog version the index in use was built from.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Catches up with the store: when an import (by the CLI, or another service on the same
    /// database) changed the catalog since the index in use was built, builds the new index and
    /// swaps it in; searches go on on the old one meanwhile. Returns whether it loaded a change.
    /// The versions (the database's, the one searched here) and size are kept as metrics, as
    /// `/health` reports them: a replica whose two versions differ for long is lagging.
    pub async fn catch_up(&self) -> Result<bool, CatalogError> {
        let database = self.store.catalog_version().await?;
        metrics::gauge!("dynamcp_catalog_version", "of" => "database").set(database as f64);
        let changed = database != self.version();
        if changed {
            let started = std::time::Instant::now();
            self.reload().await?;
            tracing::info!(
                version = self.version(),
                servers = self.index().len(),
                secs = started.elapsed().as_secs_f64(),
                "loaded the changed catalog"
            );
        }
        metrics::gauge!("dynamcp_catalog_version", "of" => "loaded").set(self.version() as f64);
        metrics::gauge!("dynamcp_catalog_servers").set(self.index().len() as f64);
        Ok(changed)
    }

    /// Where dense retrieval runs now.
    pub fn dense_backend(&self) -> DenseBackend {
        if self.pgvector.is_some() { DenseBackend::Pgvector } else { DenseBackend::InProcess }
    }

    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// Searches for a plain-language request: splits it into needs (unless `config` says not to),
    /// embeds the request and each need, and runs the hybrid search.
    pub async fn search(
        &self,
        request: &str,
        limit: usize,
        config: SearchConfig,
    ) -> Result<Found, CatalogError> {
        let started = std::time::Instant::now();
        // Search is deterministic for an index, a request and a configuration: a repeated one is
        // answered from the cache, as long as the index it was computed on is still the current.
        let index = self.index();
        let key = result_key(request, limit, config);
        let found = match self.cached_result(&key, &index) {
            Some(found) => Ok(found),
            None => {
                let found = self.search_inner(&index, request, limit, config).await;
                if let Ok(found) = &found {
                    self.remember_result(key, &index, found);
                }
                found
            }
        };
        metrics::histogram!("dynamcp_search_duration_seconds").record(started.elapsed().as_secs_f64());
        found
    }

    /// [`Catalog::search`] with the default configuration, as client-facing results.
    pub async fn search_results(
        &self,
        request: &str,
        limit: usize,
    ) -> Result<Vec<SearchResult>, CatalogError> {
        let found = self.search(request, limit, SearchConfig::default()).await?;
        let index = self.index();
        Ok(found
            .hits
            .into_iter()
            .map(|hit| {
                let r = index.record(hit.doc);
                SearchResult {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    description: r.description.clone(),
                    score: hit.score,
                    matched_tools: hit.matched_tools,
                    credentials: r
                        .credentials
                        .iter()
                        .map(|c| CredentialSummary {
                            key: c.name.clone(),
                            required: c.required,
                            secret: c.secret,
                        })
                        .collect(),
                    runnable: r.runnable(),
                }
            })
            .collect())
    }

    /// A cached result computed on `index` (the current one), if any.
    fn cached_result(&self, key: &str, index: &Arc<SearchIndex>) -> Option<Found> {
        let (on, found) = self.results.get(key)?;
        if !Weak::ptr_eq(&on, &Arc::downgrade(index)) {
            return None;
        }
        metrics::counter!("dynamcp_search_cache_hits_total").increment(1);
        Some(found.as_ref().clone())
    }

    fn remember_result(&self, key: String, index: &Arc<SearchIndex>, found: &Found) {
        self.results.insert(key, (Arc::downgrade(index), Arc::new(found.clone())));
    }

    async fn search_inner(
        &self,
        index: &Arc<SearchIndex>,
        request: &str,
        limit: usize,
        config: SearchConfig,
    ) -> Result<Found, CatalogError> {
        let needs: Vec<String> = if config.decompose {
            index.needs(request).iter().map(|n| expand(n, config)).collect()
        } else {
            vec![expand(request.trim(), config)]
        };
        let request = expand(request.trim(), config);
        let mut texts = vec![request.clone()];
        if needs.len() > 1 {
            texts.extend(needs.iter().cloned());
        }
        let (vectors, hits) = self.dense_inputs(index, texts, config).await?;
        let query = |i: usize, text| QueryText {
            text,
            vector: vectors.as_ref().map(|v| v[i].as_slice()),
            hits: hits.as_ref().map(|h| &h[i]),
        };
        let whole = query(0, &request);
        let need_queries: Vec<QueryText> = if needs.len() > 1 {
            needs.iter().enumerate().map(|(i, n)| query(i + 1, n)).collect()
        } else {
            vec![whole]
        };
        Ok(index.search(whole, &need_queries, limit, config))
    }

    /// Searches each text on its own (no splitting): one ranking per text, the texts embedded in
    /// one batch. For a planner that has already split a request into needs.
    pub async fn search_each(
        &self,
        texts: &[String],
        limit: usize,
        config: SearchConfig,
    ) -> Result<Vec<Found>, CatalogError> {
        // Each text's ranking is the one `search` gives it without splitting, so the two share
        // the result cache; only the texts not cached are embedded (together) and searched.
        let config = SearchConfig { decompose: false, ..config };
        let index = self.index();
        let keys: Vec<String> = texts.iter().map(|t| result_key(t, limit, config)).collect();
        let mut out: Vec<Option<Found>> = keys.iter().map(|k| self.cached_result(k, &index)).collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let expanded: Vec<String> = missing.iter().map(|&i| expand(texts[i].trim(), config)).collect();
            let (vectors, hits) = self.dense_inputs(&index, expanded.clone(), config).await?;
            for (j, &i) in missing.iter().enumerate() {
                let query = QueryText {
                    text: &expanded[j],
                    vector: vectors.as_ref().map(|v| v[j].as_slice()),
                    hits: hits.as_ref().map(|h| &h[j]),
                };
                let found = index.search(query, &[query], limit, config);
                self.remember_result(keys[i].clone(), &index, &found);
                out[i] = Some(found);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// The query vectors of `texts` (when dense retrieval is on), and their dense hits from
    /// pgvector (when it serves dense retrieval).
    async fn dense_inputs(
        &self,
        index: &SearchIndex,
        texts: Vec<String>,
        config: SearchConfig,
    ) -> Result<(Option<Vec<Vec<f32>>>, Option<Vec<DenseHits>>), CatalogError> {
        let vectors = match (&self.embedder, index.dense()) {
            (Some(embedder), Some(_)) if config.dense || config.tools => {
                Some(self.queries.embed(embedder.as_ref(), texts).await?)
            }
            _ => None,
        };
        let hits = match (&vectors, self.pgvector) {
            (Some(vectors), Some(scan)) => Some(self.pgvector_hits(index, vectors, scan).await?),
            _ => None,
        };
        Ok((vectors, hits))
    }

    /// Dense hits for each query vector from pgvector, as index documents.
    async fn pgvector_hits(
        &self,
        index: &SearchIndex,
        vectors: &[Vec<f32>],
        scan: Scan,
    ) -> Result<Vec<DenseHits>, CatalogError> {
        let Some(db) = self.store.vectors() else { return Ok(Vec::new()) };
        let k = search::CANDIDATES;
        let mut out = Vec::with_capacity(vectors.len());
        for v in vectors {
            let (servers, tools) = tokio::try_join!(
                db.nearest_servers(v, k, scan),
                db.nearest_tools(v, k * PG_TOOL_SHORTLIST, scan)
            )?;
            out.push(DenseHits {
                servers: servers.into_iter().filter_map(|(id, s)| Some((index.doc(&id)?, s))).collect(),
                tools: dense::best_per_server(
                    tools.into_iter().filter_map(|(id, t, s)| Some((index.doc(&id)?, s, t))),
                    k,
                ),
            });
        }
        Ok(out)
    }

    /// The current index. Cheap: an `Arc` clone; searches never wait for an import.
    pub fn index(&self) -> Arc<SearchIndex> {
        match self.index.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Imports the compiled-in default catalog when the store holds no server yet. Call
    /// [`Catalog::reload`] afterwards.
    pub async fn import_default_if_empty(
        &self,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Option<FileReport>, CatalogError> {
        if self.store.catalog_count().await? > 0 {
            return Ok(None);
        }
        let (format, parsed) = import::read_bytes("default catalog", DEFAULT_CATALOG)?;
        let report = self.write("default catalog", format, parsed, progress).await?;
        Ok(Some(report))
    }

    /// Imports one file in one transaction: its valid entries are upserted, its invalid ones
    /// reported; a file with nothing valid changes nothing and is an error. Call
    /// [`Catalog::reload`] after a batch of imports.
    pub async fn import_file(
        &self,
        path: &Path,
        progress: &dyn Fn(u64, u64),
    ) -> Result<FileReport, CatalogError> {
        let (format, parsed) = import::read_file(path)?;
        self.write(&path.display().to_string(), format, parsed, progress).await
    }

    async fn write(
        &self,
        path: &str,
        format: Format,
        parsed: import::Parsed,
        progress: &dyn Fn(u64, u64),
    ) -> Result<FileReport, CatalogError> {
        if parsed.is_empty() {
            return Err(CatalogError::NothingValid { path: path.to_owned(), issues: parsed.issues });
        }
        let rows: Vec<CatalogRow> = parsed.servers.iter().map(to_row).collect();
        progress(0, rows.len() as u64);
        let UpsertCounts { inserted, updated, unchanged, instructions: n_instructions } =
            self.store.upsert_catalog(&rows, &parsed.instructions).await?;
        progress(rows.len() as u64, rows.len() as u64);
        Ok(FileReport {
            path: path.to_owned(),
            format,
            servers: rows.len(),
            inserted,
            updated,
            unchanged,
            instructions: n_instructions,
            issues: parsed.issues,
            ids: rows.into_iter().map(|r| r.id).collect(),
        })
    }

    /// Removes every server whose id is not in `keep` (`catalog import --replace`).
    pub async fn retain(&self, keep: &HashSet<String>) -> Result<u64, CatalogError> {
        Ok(self.store.retain_catalog(keep).await?)
    }

    /// Rebuilds the index from the store (embedding what is not cached yet) and swaps it in.
    pub async fn reload(&self) -> Result<(), CatalogError> {
        self.reload_with_progress(&|_, _| {}).await
    }

    pub async fn reload_with_progress(
        &self,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(), CatalogError> {
        let version = self.store.catalog_version().await?;
        let index = Arc::new(
            build_index(self.store.as_ref(), self.embedder.as_deref(), self.pgvector.is_some(), progress)
                .await?,
        );
        match self.index.write() {
            Ok(mut guard) => *guard = index,
            Err(poisoned) => *poisoned.into_inner() = index,
        }
        self.version.store(version, std::sync::atomic::Ordering::Relaxed);
        // Entries of the old index can no longer match; free them.
        self.results.clear();
        Ok(())
    }
}

fn to_row(s: &ServerRecord) -> CatalogRow {
    CatalogRow {
        id: s.id.clone(),
        server_name: s.name.clone(),
        description: s.description.clone(),
        tools: serde_json::to_value(&s.tools).unwrap_or_default(),
        credential_requirements: serde_json::to_value(&s.credentials).unwrap_or_default(),
        record: serde_json::to_value(s).unwrap_or_default(),
        content_hash: s.content_hash(),
        origin: s.origin.clone(),
    }
}

/// Reads every record and instruction and builds the search index; with an embedder, attaches
/// dense vectors, embedding (and caching) only texts not seen before.
async fn build_index(
    store: &dyn CatalogStore,
    embedder: Option<&dyn Embedder>,
    pgvector: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<SearchIndex, CatalogError> {
    let mut index = lexical_index(store).await?;
    if let Some(embedder) = embedder {
        let dense = dense_index(store, embedder, None, &index, pgvector, progress).await?;
        index.attach_dense(dense);
    }
    Ok(index)
}

/// The threads that build indexes (parse records, quantise vectors). Apart from rayon's global
/// pool, where a search's query embedding runs: a catalog loaded in the background (after an
/// import) shares the cores with searches but never queues ahead of them.
fn building<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("catalog-build-{i}"))
            .build()
            .inspect_err(
                |e| tracing::warn!(error = %e, "no index-building threads: building on the shared ones"),
            )
            .ok()
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Reads every record and instruction and builds the lexical index, off the async runtime.
async fn lexical_index(store: &dyn CatalogStore) -> Result<SearchIndex, CatalogError> {
    let started = std::time::Instant::now();
    let (rows, instructions) =
        tokio::try_join!(store.catalog_record_texts(), store.credential_instructions())?;
    let read = started.elapsed();
    let (index, parse) = tokio::task::spawn_blocking(move || {
        building(|| {
            let parsing = std::time::Instant::now();
            let mut servers = rows
                .par_iter()
                .map(|row| {
                    serde_json::from_str::<ServerRecord>(row).map_err(|e| {
                        let id = serde_json::from_str::<serde_json::Value>(row)
                            .ok()
                            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
                            .unwrap_or_else(|| "?".to_owned());
                        CatalogError::CorruptRecord { id, reason: e.to_string() }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            drop(rows);
            apply_instructions(&mut servers, &instructions);
            let parse = parsing.elapsed();
            Ok::<_, CatalogError>((SearchIndex::build(servers), parse))
        })
    })
    .await
    .map_err(|_| CatalogError::Interrupted)??;
    tracing::debug!(
        servers = index.len(),
        read_secs = read.as_secs_f64(),
        parse_secs = parse.as_secs_f64(),
        secs = started.elapsed().as_secs_f64(),
        "lexical index built"
    );
    Ok(index)
}

/// The cache key of an embedded text: the model and the text.
pub(crate) fn text_hash(model: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    record::hex(&h.finalize()[..16])
}

/// How many texts must be missing before the shipped pack is consulted.
const PACK_WORTH_FROM: usize = 256;

/// Takes the vectors of `missing` texts from the shipped pack, when the pack was made by this
/// very model, and caches them in the store.
async fn fill_from_pack(
    store: &dyn CatalogStore,
    embedder: &dyn Embedder,
    missing: &mut Vec<(String, String)>,
    cached: &mut HashMap<String, Vec<u8>>,
) -> Result<(), CatalogError> {
    let pack = match tokio::task::spawn_blocking(|| pack::Pack::decode(pack::DEFAULT_PACK)).await {
        Ok(Ok(pack)) if !pack.is_empty() => pack,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ignoring the shipped embedding pack");
            return Ok(());
        }
        _ => return Ok(()),
    };
    if !pack.matches(embedder).await? {
        tracing::info!(pack_model = %pack.model, model = embedder.id(), "the shipped embedding pack is not this model's; embedding instead");
        return Ok(());
    }
    let mut rows = Vec::new();
    missing.retain(|(hash, _)| match pack.get(hash) {
        Some(v) => {
            rows.push((hash.clone(), to_bytes(v)));
            false
        }
        None => true,
    });
    tracing::info!(vectors = rows.len(), "took catalog vectors from the shipped embedding pack");
    for chunk in rows.chunks(4096) {
        store.put_embeddings(embedder.id(), chunk).await?;
    }
    cached.extend(rows);
    Ok(())
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The dense index over `index`'s texts; `cached` is the model's stored vectors when already read.
async fn dense_index(
    store: &dyn CatalogStore,
    embedder: &dyn Embedder,
    cached: Option<HashMap<String, Vec<u8>>>,
    index: &SearchIndex,
    pgvector: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<DenseIndex, CatalogError> {
    let started = std::time::Instant::now();
    let (server_texts, tool_texts) = index.embedding_texts();
    let all: Vec<&str> =
        server_texts.iter().chain(tool_texts.iter().map(|(_, t)| t)).map(String::as_str).collect();
    let cached = match cached {
        Some(cached) => cached,
        None => store.embeddings(embedder.id()).await?,
    };
    let (hashes, cached) = complete_vectors(store, embedder, &all, cached, true, progress).await?;
    let dims = embedder.dims();
    let n_servers = server_texts.len();
    let tool_owner: Vec<(u32, u32)> = tool_texts.iter().map(|(owner, _)| *owner).collect();
    let (dense, hashes, cached) = tokio::task::spawn_blocking(move || {
        let rows = |hashes: &[String]| -> Vec<&[u8]> {
            hashes.iter().map(|h| cached.get(h).map_or(&[][..], Vec::as_slice)).collect()
        };
        let (servers, tools) = building(|| {
            (
                Quantized::from_le_bytes(dims, &rows(&hashes[..n_servers])),
                Quantized::from_le_bytes(dims, &rows(&hashes[n_servers..])),
            )
        });
        (DenseIndex { servers, tools, tool_owner }, hashes, cached)
    })
    .await
    .map_err(|_| CatalogError::Interrupted)?;
    tracing::debug!(
        vectors = hashes.len(),
        secs = started.elapsed().as_secs_f64(),
        "dense index built from cached vectors"
    );
    if pgvector && let Some(db) = store.vectors() {
        sync_pgvector(db, embedder.id(), index, &hashes, &cached, &dense.tool_owner).await?;
    }
    Ok(dense)
}

/// Copies the catalog's vectors into pgvector, unless the stored ones already came from the same
/// model and texts (a digest of every text hash decides). `tool_owner` is aligned with the tool
/// hashes, which follow the server hashes.
async fn sync_pgvector(
    db: &dyn crate::store::VectorSearch,
    model: &str,
    index: &SearchIndex,
    hashes: &[String],
    cached: &HashMap<String, Vec<u8>>,
    tool_owner: &[(u32, u32)],
) -> Result<(), CatalogError> {
    let n_servers = hashes.len() - tool_owner.len();
    let mut digest = Sha256::new();
    digest.update(model.as_bytes());
    for (doc, hash) in hashes[..n_servers].iter().enumerate() {
        digest.update(index.record(doc as u32).id.as_bytes());
        digest.update(hash.as_bytes());
    }
    for ((doc, tool), hash) in tool_owner.iter().zip(&hashes[n_servers..]) {
        digest.update(index.record(*doc).id.as_bytes());
        digest.update(tool.to_le_bytes());
        digest.update(hash.as_bytes());
    }
    let digest = record::hex(&digest.finalize()[..16]);
    // The usual start: nothing changed, so no vector is decoded or sent.
    if db.is_synced(model, &digest).await? {
        return Ok(());
    }
    let vectors: Vec<Vec<f32>> =
        hashes.iter().map(|h| cached.get(h).map(|b| from_bytes(b)).unwrap_or_default()).collect();
    let set = VectorSet {
        model,
        digest: &digest,
        servers: (0..n_servers)
            .map(|doc| (index.record(doc as u32).id.as_str(), hashes[doc].as_str(), vectors[doc].as_slice()))
            .collect(),
        tools: tool_owner
            .iter()
            .zip(hashes[n_servers..].iter().zip(&vectors[n_servers..]))
            .map(|((doc, tool), (hash, v))| {
                (index.record(*doc).id.as_str(), *tool, hash.as_str(), v.as_slice())
            })
            .collect(),
    };
    let started = std::time::Instant::now();
    if db.sync_vectors(&set).await? {
        tracing::info!(
            servers = set.servers.len(),
            tools = set.tools.len(),
            secs = started.elapsed().as_secs_f64(),
            "copied the catalog's vectors into pgvector"
        );
    }
    Ok(())
}

/// The cache hash of every text, and the cached vectors (little-endian f32 bytes) by hash, after
/// embedding and caching whatever was missing (from the shipped pack first, when allowed).
pub(crate) async fn cached_vectors(
    store: &dyn CatalogStore,
    embedder: &dyn Embedder,
    texts: &[&str],
    use_pack: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(Vec<String>, HashMap<String, Vec<u8>>), CatalogError> {
    let cached = store.embeddings(embedder.id()).await?;
    complete_vectors(store, embedder, texts, cached, use_pack, progress).await
}

/// [`cached_vectors`] with the model's stored vectors already read.
async fn complete_vectors(
    store: &dyn CatalogStore,
    embedder: &dyn Embedder,
    texts: &[&str],
    mut cached: HashMap<String, Vec<u8>>,
    use_pack: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(Vec<String>, HashMap<String, Vec<u8>>), CatalogError> {
    let model = embedder.id().to_owned();
    let hashes: Vec<String> = texts.iter().map(|t| text_hash(&model, t)).collect();
    let mut missing: Vec<(String, String)> = Vec::new();
    let mut queued = HashSet::new();
    for (hash, text) in hashes.iter().zip(texts) {
        if !cached.contains_key(hash) && queued.insert(hash.clone()) {
            missing.push((hash.clone(), (*text).to_owned()));
        }
    }
    // Decoding the pack costs about half a second of CPU: worth it for a catalog's worth of
    // texts (a first start), not for the few an import adds, which the model embeds faster.
    if missing.len() >= PACK_WORTH_FROM && use_pack {
        fill_from_pack(store, embedder, &mut missing, &mut cached).await?;
    }
    if !missing.is_empty() {
        tracing::info!(texts = missing.len(), model = %model, "embedding catalog texts not cached yet");
    }
    let total = missing.len() as u64;
    let mut done = 0u64;
    for chunk in missing.chunks(EMBED_CHUNK) {
        progress(done, total);
        let texts: Vec<String> = chunk.iter().map(|(_, t)| t.clone()).collect();
        let vectors = embedder.embed(texts, TextKind::Document).await?;
        let rows: Vec<(String, Vec<u8>)> =
            chunk.iter().zip(&vectors).map(|((h, _), v)| (h.clone(), to_bytes(v))).collect();
        store.put_embeddings(&model, &rows).await?;
        cached.extend(rows);
        done += chunk.len() as u64;
    }
    progress(total, total);
    Ok((hashes, cached))
}

/// Merges credential instructions (keyed by the design's name slug, or by id) into the records:
/// they fill descriptions and steps, may set `required`/`secret`, and add keys a record lacks.
fn apply_instructions(servers: &mut [ServerRecord], instructions: &[InstructionRow]) {
    if instructions.is_empty() {
        return;
    }
    let mut by_server: HashMap<&str, Vec<&InstructionRow>> = HashMap::new();
    for i in instructions {
        by_server.entry(i.server.as_str()).or_default().push(i);
    }
    for s in servers {
        let slug = import::credential_instructions_slug(&s.name);
        let found: Vec<&InstructionRow> = [s.id.as_str(), slug.as_str()]
            .iter()
            .filter_map(|k| by_server.get(k))
            .flatten()
            .copied()
            .collect();
        for i in found {
            let spec = match s.credentials.iter_mut().position(|c| c.name == i.key) {
                Some(pos) => &mut s.credentials[pos],
                None => {
                    s.credentials.push(CredentialSpec {
                        name: i.key.clone(),
                        description: String::new(),
                        required: i.required.unwrap_or(true),
                        secret: i.secret.unwrap_or(true),
                        kind: import::credential_kind(&i.key, &i.description),
                        instructions: Vec::new(),
                    });
                    let last = s.credentials.len() - 1;
                    &mut s.credentials[last]
                }
            };
            if !i.description.is_empty() {
                spec.description = i.description.clone();
            }
            if !i.steps.is_empty() {
                spec.instructions = i.steps.clone();
            }
            if let Some(required) = i.required {
                spec.required = required;
            }
            if let Some(secret) = i.secret {
                spec.secret = secret;
            }
        }
    }
}
