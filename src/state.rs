//! Shared application state, built once at start-up: this is where configuration turns into open
//! resources (the store, the master agent).

use std::sync::Arc;

use crate::access::Access;
use crate::access::limit::{Cap, RateLimiter};
use crate::catalog::embed::{LocalEmbedder, RemoteEmbedder};
use crate::catalog::{Catalog, CatalogError, Embedder};
use crate::config::{EmbeddingSource, PlannerChoice, ServeArgs, StoreArgs};
use crate::llm::LlmClient;
use crate::planner::{ChoiceSettings, LlmPlanner, MasterAgent, OfflinePlanner, Planner};
use crate::progress::Progress;
use crate::runtime::Runtime;
use crate::store::{self, Store, StoreError};
use crate::vault::{KeyringSource, ServiceLease, Vault, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not open the store: {0}")]
    Store(#[from] StoreError),
    #[error("could not load the catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("could not open the credential vault: {0}")]
    Vault(#[from] VaultError),
    #[error("invalid language-model configuration: {0}")]
    Llm(String),
}

/// Everything a request handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub vault: Arc<Vault>,
    pub master: Arc<MasterAgent>,
    pub runtime: Arc<Runtime>,
    pub access: Arc<Access>,
    /// Requests per caller (tenant, or IP when open); `None`: unlimited.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// At most this many chat turns plan at once (across replicas on PostgreSQL); more wait
    /// their turn.
    pub planning: Arc<Cap>,
    pub limits: Limits,
    /// Where users reach the service (no trailing slash), for links in MCP tool answers.
    pub public_url: Arc<str>,
    /// Cancelled when the service shuts down: long-lived streams (MCP sessions) end with it.
    pub stopping: tokio_util::sync::CancellationToken,
    /// This process's lease on the store (see `vault::lease`), released once it stops serving.
    pub lease: Option<Arc<ServiceLease>>,
}

/// Request limits the router enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub body_bytes: usize,
    pub request_timeout: std::time::Duration,
    pub cors_origins: Vec<String>,
    /// How long an agent run (or a tools request that starts servers) may take.
    pub run_timeout: std::time::Duration,
    /// Bound to a loopback address: `Host` headers are checked against loopback names.
    pub loopback_only: bool,
    /// Public host names (`name` or `name:port`, lower case) the service also answers to, beside
    /// loopback names; see [`crate::api::guard`].
    pub allowed_hosts: Vec<String>,
}

impl AppState {
    /// Opens the store (applying migrations), loads the catalog and wires the domain services.
    pub async fn build(args: &ServeArgs) -> Result<Self, StartError> {
        let store = store::open(&args.store.settings()).await?;
        let source = keyring_source(&args.store)?;
        // The lease comes before the keyring: a rotation starting meanwhile waits for its reports.
        let heartbeat = std::time::Duration::from_secs(args.lease_heartbeat_secs);
        let lease = ServiceLease::acquire(store.clone(), source.kind(), heartbeat).await?;
        let opened = match Vault::open(store.as_ref(), source).await {
            Ok(vault) => lease.agree_on_key(&vault).await.map(|()| vault),
            Err(e) => Err(e),
        };
        let vault = match opened {
            Ok(vault) => Arc::new(vault),
            Err(e) => {
                lease.release().await;
                return Err(e.into());
            }
        };
        lease.start(vault.clone());
        tracing::info!(key_id = %vault.key_id(), keys = vault.key_ids().len(), "credential vault ready");
        match Self::build_services(store, vault, args, lease.holder().await).await {
            Ok(mut state) => {
                state.lease = Some(lease);
                if args.sync_secs > 0 {
                    tokio::spawn(state.clone().sync(std::time::Duration::from_secs(args.sync_secs)));
                }
                Ok(state)
            }
            Err(e) => {
                lease.release().await;
                Err(e)
            }
        }
    }

    /// Keeps this process in step with the others on the database until it stops: loads a
    /// changed catalog and stops the servers of agents deleted elsewhere, as soon as PostgreSQL
    /// announces such a change and every `every` regardless (announcements can be missed).
    async fn sync(self, every: std::time::Duration) {
        let mut changes = match self.store.changes().await {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for the database's changes: polling only");
                None
            }
        };
        if let Some(lease) = &self.lease {
            let replica = lease.holder().await.to_string();
            metrics::gauge!("dynamcp_build_info", "version" => env!("CARGO_PKG_VERSION"), "replica" => replica)
                .set(1.0);
        }
        loop {
            tokio::select! {
                () = self.stopping.cancelled() => return,
                () = tokio::time::sleep(every) => {}
                announced = next_change(&mut changes) => {
                    tracing::debug!(change = %announced, "the database announced a change");
                    // One look covers every change announced meanwhile.
                    while changes.as_mut().is_some_and(|c| c.try_recv().is_ok()) {}
                }
            }
            if let Err(e) = self.catalog.catch_up().await {
                tracing::warn!(error = %e, "could not load the changed catalog; trying again");
            }
            if let Err(e) = self.runtime.forget_deleted().await {
                tracing::debug!(error = %e, "could not check for agents deleted elsewhere");
            }
            if let Some(limiter) = &self.rate_limiter {
                limiter.prune().await;
            }
        }
    }

    /// The rest of [`Self::build`], once the vault is open.
    async fn build_services(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        args: &ServeArgs,
        holder: uuid::Uuid,
    ) -> Result<Self, StartError> {
        let llm = crate::llm::from_settings(&args.llm.settings()).map_err(StartError::Llm)?;
        match (&llm, args.llm.planner) {
            (None, PlannerChoice::Llm) => {
                return Err(StartError::Llm(
                    "DYNAMCP_PLANNER=llm needs a language model: set ANTHROPIC_API_KEY or OPENAI_API_KEY"
                        .to_owned(),
                ));
            }
            (Some(llm), PlannerChoice::Offline) => {
                tracing::info!(model = %llm.describe(), "the offline planner plans; agents run with a language model")
            }
            (Some(llm), _) => tracing::info!(model = %llm.describe(), "planning with a language model"),
            (None, _) => tracing::info!("no language model configured: the offline planner plans"),
        }
        let catalog = open_catalog_as(store.clone(), &args.store, Some(holder)).await?;
        Ok(Self::from_parts(store, Arc::new(catalog), vault, llm, args, Some(holder)))
    }

    /// Wires the services around an already-open store, catalog and vault. `holder`: this
    /// service's lease; on PostgreSQL the run and planning caps are counted under it across
    /// every replica on the database.
    pub fn from_parts(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        vault: Arc<Vault>,
        llm: Option<Arc<dyn LlmClient>>,
        args: &ServeArgs,
        holder: Option<uuid::Uuid>,
    ) -> Self {
        // On PostgreSQL, where replicas run, the budgets and caps are the database's.
        let shared_as = holder.filter(|_| store.backend() == crate::store::Backend::Postgres);
        let mut runtime_settings = args.runtime.settings(&args.store.data_dir);
        runtime_settings.share_runs_as = shared_as;
        let runtime =
            Runtime::new(catalog.clone(), store.clone(), vault.clone(), llm.clone(), runtime_settings);
        // Plans choose only servers this machine can start.
        let choice = ChoiceSettings { runnable: runtime.launch_kinds(), ..ChoiceSettings::default() };
        let planner: Arc<dyn Planner> = match (&llm, args.llm.planner) {
            (Some(llm), PlannerChoice::Auto | PlannerChoice::Llm) => {
                let planner = LlmPlanner::new(
                    llm.clone(),
                    catalog.clone(),
                    args.llm.planner_max_rounds,
                    args.planner_deadline(),
                    choice,
                );
                Arc::new(planner.with_verifier(Arc::new(runtime.clone())))
            }
            _ => Arc::new(OfflinePlanner::new(catalog.clone(), choice)),
        };
        let agent_model = llm.as_ref().map(|l| l.describe());
        let mut master =
            MasterAgent::new(store.clone(), catalog.clone(), vault.clone(), planner, agent_model);
        let verify = args.verify();
        if verify.enabled {
            master = master.with_verifier(Arc::new(runtime.clone()), verify.budget);
        }
        master = master.with_turn_limit(args.request_timeout());
        Self {
            // Without any key, only a loopback service (or one explicitly allowed) runs open.
            access: Arc::new(Access::new(
                store.clone(),
                args.addr.ip().is_loopback() || args.insecure_no_auth,
            )),
            rate_limiter: RateLimiter::new(args.rate_limit_per_sec, args.rate_limit_burst)
                .map(|limiter| match shared_as {
                    Some(_) => limiter.shared(store.clone()),
                    None => limiter,
                })
                .map(Arc::new),
            planning: Arc::new(Cap::for_service(
                "plan",
                args.max_concurrent_plans,
                shared_as.map(|holder| (store.clone(), holder)),
                args.request_timeout(),
            )),
            runtime,
            master: Arc::new(master),
            store,
            catalog,
            vault,
            public_url: args.public_url().into(),
            stopping: tokio_util::sync::CancellationToken::new(),
            lease: None,
            limits: Limits {
                body_bytes: args.body_limit_bytes,
                request_timeout: args.request_timeout(),
                cors_origins: args.cors_origins.iter().filter(|o| !o.trim().is_empty()).cloned().collect(),
                run_timeout: std::time::Duration::from_secs(args.runtime.run_timeout_secs),
                loopback_only: args.addr.ip().is_loopback(),
                allowed_hosts: args.allowed_hosts.iter().filter(|h| !h.is_empty()).cloned().collect(),
            },
        }
    }
}

/// The next announced change; never, without announcements (or once they end).
async fn next_change(changes: &mut Option<crate::store::Changes>) -> String {
    if let Some(rx) = changes {
        if let Some(change) = rx.recv().await {
            return change;
        }
        tracing::warn!("the database's change announcements ended: polling only");
        *changes = None;
    }
    std::future::pending().await
}

/// Where the vault's keys come from: `ENCRYPTION_KEY` (and `ENCRYPTION_KEY_PREVIOUS`), else the
/// data dir's key files.
pub fn keyring_source(args: &StoreArgs) -> Result<KeyringSource, VaultError> {
    KeyringSource::new(args.encryption_key.as_ref(), args.encryption_key_previous.as_ref(), &args.data_dir)
}

/// Loads the embedding model named by the configuration, or explains loudly why search will be
/// lexical only.
pub async fn load_embedder(args: &StoreArgs) -> Option<Arc<dyn Embedder>> {
    if args.no_model {
        tracing::info!("embedding model disabled by configuration: search is lexical only");
        return None;
    }
    let loaded: Result<Arc<dyn Embedder>, String> = match args.embeddings {
        EmbeddingSource::Local => {
            let dir = args.model_dir.clone();
            let started = std::time::Instant::now();
            let loaded = tokio::task::spawn_blocking(move || LocalEmbedder::load(&dir)).await;
            tracing::debug!(secs = started.elapsed().as_secs_f64(), "local model load finished");
            match loaded {
                Ok(Ok(model)) => Ok(Arc::new(model)),
                Ok(Err(e)) => Err(format!("{e}. Run `scripts/setup.sh --service` to fetch the local model")),
                Err(_) => Err("loading the model was interrupted".to_owned()),
            }
        }
        EmbeddingSource::Openai => {
            async {
                let http = crate::llm::Http::new(std::time::Duration::from_secs(60), 3)?;
                let remote = RemoteEmbedder::connect(
                    http,
                    &args.embedding_base_url,
                    args.embedding_api_key.clone(),
                    &args.embedding_model,
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(Arc::new(remote) as Arc<dyn Embedder>)
            }
            .await
        }
    };
    match loaded {
        Ok(model) => {
            tracing::info!(model = model.id(), dims = model.dims(), "embedding model loaded");
            Some(model)
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "NO EMBEDDING MODEL: search falls back to lexical (BM25) only and will miss requests \
                 phrased differently from server descriptions."
            );
            None
        }
    }
}

/// Opens the catalog over `store`: loads the embedder, imports the default catalog if the store
/// has none (and the configuration allows), and builds the index, embedding what is not cached.
pub async fn open_catalog(store: Arc<dyn Store>, args: &StoreArgs) -> Result<Catalog, CatalogError> {
    open_catalog_as(store, args, None).await
}

/// The fact naming the service that imports the default catalog into an empty database.
const DEFAULT_IMPORT_FACT: &str = "catalog.default_import";

/// [`open_catalog`] for the service holding lease `holder`: of several services started at once
/// on an empty database, one imports the default catalog and the others load it when it is
/// committed (`AppState::sync`); a claim whose holder is gone is taken over.
async fn open_catalog_as(
    store: Arc<dyn Store>,
    args: &StoreArgs,
    holder: Option<uuid::Uuid>,
) -> Result<Catalog, CatalogError> {
    // The model loads while the records are read and the lexical index is built.
    let model = match args.embeddings {
        EmbeddingSource::Local if !args.no_model => LocalEmbedder::id_of(&args.model_dir).ok(),
        _ => None,
    };
    let catalog =
        Catalog::open_while_loading(store.clone(), load_embedder(args), model, args.dense_backend).await?;
    let mut changed = false;
    if args.default_catalog && imports_default(store.as_ref(), holder).await? {
        let progress = Progress::new("importing the default catalog");
        if let Some(report) = catalog.import_default_if_empty(&|d, t| progress.update(d, t)).await? {
            tracing::info!(
                servers = report.servers,
                invalid = report.issues.len(),
                "imported the default catalog"
            );
            changed = true;
        }
    }
    if changed {
        let progress = Progress::new("embedding the catalog");
        catalog.reload_with_progress(&|d, t| progress.update(d, t)).await?;
    }
    tracing::info!(
        servers = catalog.index().len(),
        dense = catalog.index().dense().is_some(),
        dense_backend = ?catalog.dense_backend(),
        "catalog ready"
    );
    Ok(catalog)
}

/// Whether this process imports the default catalog: the store has no server, and no other live
/// service has claimed the import.
async fn imports_default(store: &dyn Store, holder: Option<uuid::Uuid>) -> Result<bool, CatalogError> {
    if store.catalog_count().await? > 0 {
        return Ok(false);
    }
    let Some(me) = holder.map(|h| h.to_string()) else { return Ok(true) };
    let claimed = store.claim_fact(DEFAULT_IMPORT_FACT, &me).await?;
    if claimed == me {
        return Ok(true);
    }
    let now = chrono::Utc::now();
    if store.leases().await?.iter().any(|l| l.holder.to_string() == claimed && l.is_live(now)) {
        tracing::info!("another service is importing the default catalog; it is loaded here once committed");
        return Ok(false);
    }
    Ok(store.replace_fact(DEFAULT_IMPORT_FACT, &claimed, &me).await?)
}
