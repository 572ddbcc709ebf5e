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

use crate::store::{
    CatalogRow, CatalogStore, InstructionRow, Scan, StoreError, Synced, UpsertCounts, VectorSet,
};
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
    /// Held while a reload builds the next index.
    reloading: tokio::sync::Mutex<()>,
}

/// How long an index replaced by a reload is kept for the searches begun on it.
const RETIRE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

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
        let (embedder, vectors, index) = tokio::join!(embedder, vectors, lexical_index(store.as_ref(), None));
        let mut index = index?;
        // Vectors read for another id than the loaded model's are dropped; `dense_index` then
        // reads the right ones.
        let cached = match (&embedder, vectors) {
            (Some(e), Some((id, vectors))) if id == e.id() => Some(vectors?),
            _ => None,
        };
        let pgvector = pgvector_scan(store.as_ref(), embedder.as_deref(), backend)?;
        if let Some(embedder) = embedder.as_deref() {
            index = with_dense(store.as_ref(), embedder, cached, index, None, pgvector.is_some(), &|_, _| {})
                .await?;
        }
        Ok(Self::with_index(store, embedder, index, pgvector, version))
    }

    /// A catalog searching nothing until [`Catalog::reload`]: for a command that changes the
    /// stored catalog before it searches (`catalog import`), which would otherwise build a whole
    /// index only to replace it.
    pub fn open_unloaded(
        store: Arc<dyn CatalogStore>,
        embedder: Option<Arc<dyn Embedder>>,
        backend: DenseBackend,
    ) -> Result<Self, CatalogError> {
        let pgvector = pgvector_scan(store.as_ref(), embedder.as_deref(), backend)?;
        Ok(Self::with_index(store, embedder, SearchIndex::build(Vec::new()), pgvector, 0))
    }

    fn with_index(
        store: Arc<dyn CatalogStore>,
        embedder: Option<Arc<dyn Embedder>>,
        index: SearchIndex,
        pgvector: Option<Scan>,
        version: u64,
    ) -> Self {
        Self {
            store,
            embedder,
            index: RwLock::new(Arc::new(index)),
            queries: QueryCache::new(QUERY_CACHE),
            results: Bounded::new(RESULT_CACHE),
            pgvector,
            version: std::sync::atomic::AtomicU64::new(version),
            reloading: tokio::sync::Mutex::new(()),
        }
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

    /// Embeds and caches the texts of the servers `ids` that have no cached vector yet (`catalog
    /// import`), so that services on this store load them without embedding. No index is built:
    /// each service builds its own, and brings pgvector up to date as it loads. Returns how many
    /// texts had no cached vector.
    pub async fn embed_new(
        &self,
        ids: &[String],
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<usize, CatalogError> {
        let Some(embedder) = self.embedder.as_deref() else { return Ok(0) };
        let rows = self.store.catalog_record_texts_of(ids).await?;
        let servers = rows.iter().map(|(_, text)| parse_record(text)).collect::<Result<Vec<_>, _>>()?;
        let texts: Vec<String> = servers
            .iter()
            .flat_map(|s| {
                std::iter::once(search::server_text(s)).chain(s.tools.iter().map(|t| search::tool_text(s, t)))
            })
            .collect();
        let hashes: Vec<String> = texts.iter().map(|t| text_hash(embedder.id(), t)).collect();
        let cached = self.store.embeddings_of(embedder.id(), &hashes).await?;
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (_, missing) =
            complete_vectors(self.store.as_ref(), embedder, &hashes, &texts, cached, true, progress).await?;
        Ok(missing)
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
        // One reload at a time: a second one waits, then builds on the first one's index.
        let _reloading = self.reloading.lock().await;
        let version = self.store.catalog_version().await?;
        let previous = self.index();
        let index = Arc::new(
            build_index(
                self.store.as_ref(),
                self.embedder.as_deref(),
                Some(previous.clone()),
                self.pgvector.is_some(),
                progress,
            )
            .await?,
        );
        let old = match self.index.write() {
            Ok(mut guard) => std::mem::replace(&mut *guard, index),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), index),
        };
        self.version.store(version, std::sync::atomic::Ordering::Relaxed);
        // Entries of the old index can no longer match; free them.
        self.results.clear();
        // Freeing a whole index takes tens of milliseconds, which a search still holding it
        // would pay as it ends: the old index is kept until searches begun on it are over, then
        // freed on a building thread.
        drop(previous);
        tokio::spawn(async move {
            tokio::time::sleep(RETIRE_AFTER).await;
            tokio::task::spawn_blocking(move || building(move || drop(old)));
        });
        Ok(())
    }
}

/// Where dense retrieval runs for `backend`: in pgvector (with this scan) when the store has it
/// and the model's vectors fit its columns, else in process (`None`).
fn pgvector_scan(
    store: &dyn CatalogStore,
    embedder: Option<&dyn Embedder>,
    backend: DenseBackend,
) -> Result<Option<Scan>, CatalogError> {
    let usable =
        store.vectors().is_some() && embedder.is_some_and(|e| e.dims() == crate::store::vectors::DIMS);
    match backend {
        DenseBackend::InProcess => Ok(None),
        DenseBackend::Auto => Ok(usable.then_some(Scan::Hnsw)),
        DenseBackend::Pgvector if usable => Ok(Some(Scan::Hnsw)),
        DenseBackend::Pgvector => Err(CatalogError::PgvectorUnavailable),
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

/// Builds the search index from the store, reusing what `previous` (the index in use) already
/// has of it; with an embedder, attaches dense vectors, embedding (and caching) only texts not
/// seen before.
async fn build_index(
    store: &dyn CatalogStore,
    embedder: Option<&dyn Embedder>,
    previous: Option<Arc<SearchIndex>>,
    pgvector: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<SearchIndex, CatalogError> {
    let index = lexical_index(store, previous.clone()).await?;
    match embedder {
        Some(embedder) => with_dense(store, embedder, None, index, previous, pgvector, progress).await,
        None => Ok(index),
    }
}

/// The threads that build indexes (parse records, quantise vectors). Apart from rayon's global
/// pool, where a search's query embedding runs: a catalog loaded in the background (after an
/// import) shares the cores with searches but never queues ahead of them.
fn building<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("catalog-build-{i}"))
            .start_handler(|_| lower_priority())
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

/// How much nicer than the service the index-building threads are: the kernel gives a search
/// the core first, and building the next index takes whatever is left.
const BUILDING_NICE: i32 = 19;

/// Lowers the calling thread's priority (on Linux, nice is per thread) by [`BUILDING_NICE`].
fn lower_priority() {
    let thread = rustix::thread::gettid();
    let now = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(Some(thread), now + BUILDING_NICE) {
        tracing::debug!(error = %e, "index-building thread keeps the service's priority");
    }
}

/// Up to this many changed records, a reload reads just those and reuses the rest of the index
/// in use; beyond it (a first import, a replaced catalog), it reads the whole catalog again.
const REUSE_UP_TO: usize = 2000;

/// Builds the lexical index off the async runtime, from every record and instruction; or, given
/// the index in use and the same instructions apply, from its records and those whose stored
/// content changed since, the only ones read and parsed.
async fn lexical_index(
    store: &dyn CatalogStore,
    previous: Option<Arc<SearchIndex>>,
) -> Result<SearchIndex, CatalogError> {
    let started = std::time::Instant::now();
    let hashes = async {
        match &previous {
            Some(_) => store.catalog_hashes().await.map(Some),
            None => Ok(None),
        }
    };
    let (instructions, hashes) = tokio::try_join!(store.credential_instructions(), hashes)?;
    let listed = started.elapsed();
    let digest = instructions_digest(&instructions);
    let reuse = match (previous, hashes) {
        (Some(previous), Some(hashes)) if previous.source.instructions == digest => {
            let changed: Vec<String> = hashes
                .iter()
                .filter(|(id, hash)| hash.is_empty() || previous.source.content.get(id) != Some(hash))
                .map(|(id, _)| id.clone())
                .collect();
            (changed.len() <= REUSE_UP_TO).then_some((previous, hashes, changed))
        }
        _ => None,
    };
    let (rows, kept) = match reuse {
        Some((previous, hashes, changed)) => {
            let rows = store.catalog_record_texts_of(&changed).await?;
            let changed: HashSet<String> = changed.into_iter().collect();
            let kept: Vec<(String, String)> =
                hashes.into_iter().filter(|(id, _)| !changed.contains(id)).collect();
            (rows, Some((previous, kept)))
        }
        None => (store.catalog_record_texts().await?, None),
    };
    let read = started.elapsed();
    let (read_rows, reused) = (rows.len(), kept.as_ref().map_or(0, |(_, kept)| kept.len()));
    let (index, parse) = tokio::task::spawn_blocking(move || {
        building(|| {
            let parsing = std::time::Instant::now();
            let parsed = rows
                .par_iter()
                .map(|(hash, text)| parse_record(text).map(|record| (record, hash.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            drop(rows);
            let (mut servers, hashes): (Vec<ServerRecord>, Vec<String>) = parsed.into_iter().unzip();
            apply_instructions(&mut servers, &instructions);
            let parse = parsing.elapsed();
            let mut content: HashMap<String, String> =
                servers.iter().map(|s| s.id.clone()).zip(hashes).collect();
            // Copied here, on the building threads, rather than while the service's tasks wait.
            if let Some((previous, kept)) = kept {
                for (id, hash) in kept {
                    if let Some(record) = previous.get(&id) {
                        servers.push(record.clone());
                        content.insert(id, hash);
                    }
                }
            }
            let mut index = SearchIndex::build(servers);
            index.source = search::Source { content, instructions: digest };
            Ok::<_, CatalogError>((index, parse))
        })
    })
    .await
    .map_err(|_| CatalogError::Interrupted)??;
    tracing::debug!(
        servers = index.len(),
        read = read_rows,
        reused,
        list_secs = listed.as_secs_f64(),
        read_secs = read.as_secs_f64(),
        parse_secs = parse.as_secs_f64(),
        secs = started.elapsed().as_secs_f64(),
        "lexical index built"
    );
    Ok(index)
}

/// One stored record's JSON text as a record; the error names its id when the text has one.
fn parse_record(text: &str) -> Result<ServerRecord, CatalogError> {
    serde_json::from_str::<ServerRecord>(text).map_err(|e| {
        let id = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned());
        CatalogError::CorruptRecord { id, reason: e.to_string() }
    })
}

/// A digest of every credential instruction, in the store's order.
fn instructions_digest(instructions: &[InstructionRow]) -> String {
    let mut h = Sha256::new();
    for i in instructions {
        for part in [&i.server, &i.key, &i.description] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for step in &i.steps {
            h.update(step.as_bytes());
            h.update([0]);
        }
        h.update([u8::from(i.required.unwrap_or(false)), u8::from(i.required.is_some())]);
        h.update([u8::from(i.secret.unwrap_or(false)), u8::from(i.secret.is_some()), 1]);
    }
    record::hex(&h.finalize()[..16])
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

/// `index` with its dense vectors attached; `cached` is the model's stored vectors when already
/// read. Given the index in use (`previous`, with vectors of the same model), the vectors of texts
/// it already has are copied from it, and only the others are read from the store (or embedded).
/// The texts, their hashes and the vectors are worked out on the building threads.
async fn with_dense(
    store: &dyn CatalogStore,
    embedder: &dyn Embedder,
    cached: Option<HashMap<String, Vec<u8>>>,
    mut index: SearchIndex,
    previous: Option<Arc<SearchIndex>>,
    pgvector: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<SearchIndex, CatalogError> {
    let started = std::time::Instant::now();
    let model = embedder.id().to_owned();
    let (dims, full) = (embedder.dims(), cached.is_some());
    let previous = previous.filter(|p| p.dense().is_some_and(|d| d.model == model && d.dims() == dims));
    let texts = {
        let model = model.clone();
        let previous = previous.clone();
        tokio::task::spawn_blocking(move || {
            building(|| {
                let (server_texts, tool_texts) = index.embedding_texts();
                let n_servers = server_texts.len();
                let tool_owner: Vec<(u32, u32)> = tool_texts.iter().map(|(owner, _)| *owner).collect();
                let all: Vec<String> =
                    server_texts.into_iter().chain(tool_texts.into_iter().map(|(_, t)| t)).collect();
                let hashes: Vec<String> = all.par_iter().map(|t| text_hash(&model, t)).collect();
                // Where the index in use has each text's vector, if it does.
                let copied: Vec<Option<usize>> =
                    match previous.as_deref().and_then(SearchIndex::dense).filter(|_| !full) {
                        Some(dense) => {
                            let have = dense.positions_by_hash();
                            hashes.iter().map(|h| have.get(h.as_str()).copied()).collect()
                        }
                        None => vec![None; hashes.len()],
                    };
                // The texts it has no vector for.
                let fresh: Vec<(String, String)> = all
                    .into_iter()
                    .zip(&hashes)
                    .zip(&copied)
                    .filter(|(_, from)| from.is_none())
                    .map(|((t, h), _)| (h.clone(), t))
                    .collect();
                (index, n_servers, tool_owner, hashes, copied, fresh)
            })
        })
    };
    let (returned, n_servers, tool_owner, hashes, copied, fresh) =
        texts.await.map_err(|_| CatalogError::Interrupted)?;
    index = returned;
    let cached = match (&previous, cached) {
        (_, Some(cached)) => cached,
        (None, None) => store.embeddings(&model).await?,
        (Some(_), None) => {
            let wanted: Vec<String> = fresh.iter().map(|(h, _)| h.clone()).collect();
            store.embeddings_of(&model, &wanted).await?
        }
    };
    let reused = hashes.len() - fresh.len();
    let (fresh_hashes, fresh_texts): (Vec<String>, Vec<String>) = fresh.into_iter().unzip();
    let fresh_texts: Vec<&str> = fresh_texts.iter().map(String::as_str).collect();
    let (cached, _) =
        complete_vectors(store, embedder, &fresh_hashes, &fresh_texts, cached, true, progress).await?;
    let owned_model = model.clone();
    let (index, cached) = tokio::task::spawn_blocking(move || {
        let from = previous.as_deref().and_then(SearchIndex::dense);
        let rows = |range: std::ops::Range<usize>| -> Vec<dense::Row<'_>> {
            range
                .map(|i| match (from, copied[i]) {
                    (Some(from), Some(position)) => {
                        let (set, row) = from.row(position);
                        dense::Row::Copied(set, row)
                    }
                    _ => dense::Row::Bytes(cached.get(&hashes[i]).map_or(&[][..], Vec::as_slice)),
                })
                .collect()
        };
        let (servers, tools) = building(|| {
            (
                Quantized::assemble(dims, &rows(0..n_servers)),
                Quantized::assemble(dims, &rows(n_servers..hashes.len())),
            )
        });
        index.attach_dense(DenseIndex { servers, tools, tool_owner, hashes, model: owned_model });
        (index, cached)
    })
    .await
    .map_err(|_| CatalogError::Interrupted)?;
    tracing::debug!(
        vectors = index.dense().map_or(0, |d| d.hashes.len()),
        reused,
        secs = started.elapsed().as_secs_f64(),
        "dense index built from cached vectors"
    );
    if pgvector
        && let Some(db) = store.vectors()
        && let Some(dense) = index.dense()
    {
        sync_pgvector(db, store, &model, &index, dense, cached).await?;
    }
    Ok(index)
}

/// Copies the catalog's vectors into pgvector, unless the stored ones already came from the same
/// model and texts (a digest of every text hash decides). `cached` holds at least the vectors
/// `dense` did not copy from an earlier index; the others are read from the store when needed.
async fn sync_pgvector(
    db: &dyn crate::store::VectorSearch,
    store: &dyn CatalogStore,
    model: &str,
    index: &SearchIndex,
    dense: &DenseIndex,
    mut cached: HashMap<String, Vec<u8>>,
) -> Result<(), CatalogError> {
    let (hashes, tool_owner) = (&dense.hashes, &dense.tool_owner);
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
    // First with the vectors at hand (those a reload did not copy from the index in use), which
    // are all it takes when the stored ones were the index in use's; else with every vector.
    let mut complete = false;
    loop {
        let vectors: Vec<Vec<f32>> =
            hashes.iter().map(|h| cached.get(h).map(|b| from_bytes(b)).unwrap_or_default()).collect();
        let set = VectorSet {
            model,
            digest: &digest,
            servers: (0..n_servers)
                .map(|doc| {
                    (index.record(doc as u32).id.as_str(), hashes[doc].as_str(), vectors[doc].as_slice())
                })
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
        match db.sync_vectors(&set).await? {
            Synced::Already => return Ok(()),
            Synced::Written => {
                tracing::info!(
                    servers = set.servers.len(),
                    tools = set.tools.len(),
                    secs = started.elapsed().as_secs_f64(),
                    "copied the catalog's vectors into pgvector"
                );
                return Ok(());
            }
            Synced::Incomplete if !complete => {
                complete = true;
                cached.extend(store.embeddings(model).await?);
            }
            Synced::Incomplete => {
                // Every cached vector was sent; a text without one matches nothing in pgvector.
                tracing::warn!("some catalog texts have no cached vector: pgvector left as it was");
                return Ok(());
            }
        }
    }
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
    let hashes: Vec<String> = texts.iter().map(|t| text_hash(embedder.id(), t)).collect();
    let (cached, _) = complete_vectors(store, embedder, &hashes, texts, cached, use_pack, progress).await?;
    Ok((hashes, cached))
}

/// [`cached_vectors`] with the model's stored vectors already read and the texts' cache hashes
/// (aligned with `texts`) worked out. Returns the cached vectors and how many distinct texts had
/// none.
async fn complete_vectors(
    store: &dyn CatalogStore,
    embedder: &dyn Embedder,
    hashes: &[String],
    texts: &[&str],
    mut cached: HashMap<String, Vec<u8>>,
    use_pack: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(HashMap<String, Vec<u8>>, usize), CatalogError> {
    let model = embedder.id().to_owned();
    let mut missing: Vec<(String, String)> = Vec::new();
    let mut queued = HashSet::new();
    for (hash, text) in hashes.iter().zip(texts) {
        if !cached.contains_key(hash) && queued.insert(hash.clone()) {
            missing.push((hash.clone(), (*text).to_owned()));
        }
    }
    let unseen = missing.len();
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
    Ok((cached, unseen))
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
