//! Operations: what the faces ask of dynamcp (search, plan, create, run, call a tool, and the
//! sessions and agents around them), knowing neither HTTP nor MCP. The HTTP face ([`crate::api`])
//! and the MCP face ([`crate::mcp`]) both call these and only translate: arguments in, answers
//! and [`OpError`]s out. Each checks the caller's ownership and the request's bounds once, here.

pub mod error;

use rmcp::model::CallToolResult;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

pub use error::{Fault, OpError};

use crate::access::Tenant;
use crate::catalog::{SearchResult, ServerRecord};
use crate::planner::agent_config::ExportFormat;
use crate::planner::{ChatOutcome, ChatTurn, Exported, Preview};
use crate::runtime::ServerTools;
pub use crate::runtime::oauth::{SignInOffer, SignedIn};
use crate::runtime::run::StartedRun;
use crate::state::AppState;
use crate::store::{Agent, Message, Page, Session};
use crate::vault::SecretBytes;

/// Most servers one search returns.
pub const MAX_SEARCH_LIMIT: usize = 50;
/// Servers a search returns when the caller does not say.
pub const DEFAULT_SEARCH_LIMIT: usize = 5;
/// Items a list returns when the caller does not say, and at most.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// A page of a list: `limit` 1 to 100 (default 20), `offset` default 0.
pub fn page(limit: Option<u32>, offset: Option<u64>) -> Result<Page, OpError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(OpError::InvalidQuery(format!("limit must be between 1 and {MAX_PAGE_SIZE}")));
    }
    Ok(Page { limit, offset: offset.unwrap_or(0) })
}

// ---- the catalog ----

/// Finds the servers a workflow needs: `limit` 1 to 50 (default 5), a query that is not blank.
pub async fn search(
    state: &AppState,
    query: &str,
    limit: Option<usize>,
) -> Result<Vec<SearchResult>, OpError> {
    let limit = limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
    if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
        return Err(OpError::InvalidRequest(format!("limit must be between 1 and {MAX_SEARCH_LIMIT}")));
    }
    if query.trim().is_empty() {
        return Err(OpError::InvalidRequest("query must not be empty".to_owned()));
    }
    state.catalog.search_results(query, limit).await.map_err(|e| OpError::Internal(e.into()))
}

/// A server's full record: launch options, tools with their schemas, credential requirements
/// with instructions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerDetail {
    #[serde(flatten)]
    pub record: ServerRecord,
    pub runnable: bool,
}

pub fn server(state: &AppState, id: &str) -> Result<ServerDetail, OpError> {
    let index = state.catalog.index();
    let record = index.get(id.trim()).ok_or_else(|| OpError::ServerNotFound(id.to_owned()))?;
    Ok(ServerDetail { runnable: record.runnable(), record: record.clone() })
}

/// One line of the catalog, for browsing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerSummary {
    pub id: String,
    pub name: String,
    pub description: String,
    pub runnable: bool,
    pub tools: usize,
}

/// A page of the catalog, by id or filtered by words (lexically); with the number that match.
pub fn browse(state: &AppState, words: Option<&str>, page: Page) -> (Vec<ServerSummary>, usize) {
    let index = state.catalog.index();
    let docs: Vec<u32> = match words.map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => index.lexical(q, usize::MAX),
        None => (0..index.len() as u32).collect(),
    };
    let servers = docs
        .iter()
        .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
        .take(page.limit as usize)
        .map(|&d| {
            let r = index.record(d);
            ServerSummary {
                id: r.id.clone(),
                name: r.name.clone(),
                description: r.description.clone(),
                runnable: r.runnable(),
                tools: r.tools.len(),
            }
        })
        .collect();
    (servers, docs.len())
}

// ---- the master agent ----

/// One chat turn. Planning is bounded: a burst of turns waits here for a slot instead of piling
/// onto the model and the store.
pub async fn chat(state: &AppState, turn: ChatTurn) -> Result<ChatOutcome, OpError> {
    let tenant = turn.tenant.clone();
    let outcome = {
        let _slot = state.planning.take("").await.map_err(|e| OpError::Internal(e.into()))?;
        state.master.chat(turn).await?
    };
    Ok(with_sign_ins(state, &tenant, outcome).await)
}

/// Adds to a turn that created an agent the links to sign in to its hosted servers that sign
/// their users in through the browser and are not signed in yet. Sign-ins that cannot be opened
/// are left out (the agent's runs then say what is missing).
async fn with_sign_ins(state: &AppState, tenant: &Tenant, mut outcome: ChatOutcome) -> ChatOutcome {
    let Some(agent) = outcome.agent_id else { return outcome };
    match state.runtime.offer_sign_ins(tenant, agent).await {
        Ok(offers) => outcome.sign_in.extend(offers.into_iter().map(|offer| crate::planner::SignInLink {
            url: format!("{}/api/sign-in?state={}", state.public_url, offer.state),
            mcp_server: offer.server,
        })),
        Err(e) => tracing::warn!(%agent, error = %e, "could not open the agent's sign-ins"),
    }
    if !outcome.sign_in.is_empty() {
        let lines: Vec<String> =
            outcome.sign_in.iter().map(|s| format!("- {}: {}", s.mcp_server, s.url)).collect();
        outcome.reply.push_str(&format!(
            "\n\nSign in through your browser (these hosted servers take no key): open each link within \
             {} minutes; POST /api/agents/{agent}/servers/<server>/sign-in gives a new one.\n{}",
            crate::runtime::oauth::LINK_LIFETIME_SECS / 60,
            lines.join("\n")
        ));
    }
    outcome
}

/// A plan for `request` without a session or an agent; bounded like [`chat`].
pub async fn preview(state: &AppState, request: &str) -> Result<Preview, OpError> {
    let _slot = state.planning.take("").await.map_err(|e| OpError::Internal(e.into()))?;
    Ok(state.master.preview(request).await?)
}

/// Picks a session up again where it waits (after the user sent credentials elsewhere).
pub async fn resume(state: &AppState, tenant: &Tenant, session: Uuid) -> Result<ChatOutcome, OpError> {
    let outcome = state.master.resume(tenant, session).await?;
    Ok(with_sign_ins(state, tenant, outcome).await)
}

/// The files a session's plan asks for, as uploaded (`file_key`, bytes).
pub async fn add_files(
    state: &AppState,
    tenant: &Tenant,
    session: Uuid,
    files: Vec<(String, SecretBytes)>,
) -> Result<ChatOutcome, OpError> {
    if files.is_empty() {
        return Err(OpError::InvalidRequest("the form has no file part".to_owned()));
    }
    let outcome = state.master.add_files(tenant, session, files).await?;
    Ok(with_sign_ins(state, tenant, outcome).await)
}

// ---- sessions ----

pub async fn create_session(state: &AppState, tenant: &Tenant) -> Result<Session, OpError> {
    Ok(state.store.create_session(tenant.as_str()).await?)
}

/// A session of `tenant`'s with its conversation; another tenant's is "not found", like a missing
/// one.
pub async fn session(
    state: &AppState,
    tenant: &Tenant,
    id: Uuid,
) -> Result<(Session, Vec<Message>), OpError> {
    let session = owned_session(state, tenant, id).await?;
    let messages = state.store.messages(id).await?;
    Ok((session, messages))
}

/// Deletes a session with its conversation, agents and credentials; its agents' servers, which
/// hold its credentials in memory, stop with it.
pub async fn delete_session(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<(), OpError> {
    owned_session(state, tenant, id).await?;
    if !state.store.delete_session(id).await? {
        return Err(OpError::SessionNotFound(id));
    }
    state.runtime.stop_session(id).await;
    Ok(())
}

async fn owned_session(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<Session, OpError> {
    crate::access::owned_session(state.store.as_ref(), tenant, id).await?.ok_or(OpError::SessionNotFound(id))
}

// ---- agents ----

/// A page of `tenant`'s agents, newest first, and how many there are.
pub async fn agents(state: &AppState, tenant: &Tenant, page: Page) -> Result<(Vec<Agent>, u64), OpError> {
    Ok(state.store.list_agents(tenant.as_str(), page).await?)
}

pub async fn agent(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<Agent, OpError> {
    Ok(state.runtime.agent(tenant, id).await?)
}

/// The catalog ids of an agent's servers.
pub fn servers_of(agent: &Agent) -> Vec<String> {
    crate::runtime::Runtime::servers_of(agent)
}

/// Deletes an agent; its servers stop.
pub async fn delete_agent(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<(), OpError> {
    state.runtime.agent(tenant, id).await?;
    if !state.store.delete_agent(id).await? {
        return Err(OpError::AgentNotFound(id));
    }
    state.runtime.forget_agent(id).await;
    Ok(())
}

/// An agent's config for another MCP client.
pub async fn export(
    state: &AppState,
    tenant: &Tenant,
    id: Uuid,
    format: ExportFormat,
    include_secrets: bool,
) -> Result<Exported, OpError> {
    Ok(state.master.export_config(tenant, id, format, include_secrets).await?)
}

// ---- running ----

/// Starts a run of an agent on `input`; its events stream from the handle.
pub async fn start_run(
    state: &AppState,
    tenant: &Tenant,
    id: Uuid,
    input: &str,
) -> Result<StartedRun, OpError> {
    Ok(state.runtime.start_run(tenant, id, input).await?)
}

/// The live tools of each of an agent's servers (starting them).
pub async fn tools(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<Vec<ServerTools>, OpError> {
    Ok(state.runtime.tools(tenant, id).await?)
}

/// Accepts the servers' current tool definitions as the agent's pins.
pub async fn approve_tools(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<Vec<ServerTools>, OpError> {
    Ok(state.runtime.approve_tools(tenant, id).await?)
}

/// Lets runs call a tool its server marks destructive; the tools now allowed on that server.
pub async fn allow_tool(
    state: &AppState,
    tenant: &Tenant,
    id: Uuid,
    server: &str,
    tool: &str,
) -> Result<Vec<String>, OpError> {
    Ok(state.runtime.allow_tool(tenant, id, server, tool).await?)
}

/// Calls one tool of one of an agent's servers, without a model; the arguments are checked
/// against the tool's input schema first.
pub async fn call_tool(
    state: &AppState,
    tenant: &Tenant,
    id: Uuid,
    server: &str,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, OpError> {
    Ok(state.runtime.call(tenant, id, server, tool, arguments).await?)
}

// ---- signing in to hosted servers ----

/// Opens a sign-in (OAuth, in the browser) for one hosted server of an agent of `tenant`'s.
pub async fn offer_sign_in(
    state: &AppState,
    tenant: &Tenant,
    agent: Uuid,
    server: &str,
) -> Result<SignInOffer, OpError> {
    Ok(state.runtime.offer_sign_in(tenant, agent, server).await?)
}

/// The browser opened a sign-in link: where to send it next. Its `state` is the proof, not an
/// API key (a browser's address bar carries none).
pub async fn begin_sign_in(state: &AppState, sign_in: &str, redirect_uri: &str) -> Result<String, OpError> {
    Ok(state.runtime.begin_sign_in(sign_in, redirect_uri).await?)
}

/// The authorization server sent the browser back: the grant is stored for the agent's runs.
pub async fn finish_sign_in(state: &AppState, sign_in: &str, code: &str) -> Result<SignedIn, OpError> {
    Ok(state.runtime.finish_sign_in(sign_in, code).await?)
}

// ---- the service ----

/// What `/health` reports: the store answers (else [`OpError::Unavailable`]), its backend,
/// whether agents can be sandboxed and run, and what an operator of several replicas compares:
/// which replica this is, its build, the catalog it has loaded against the database's, and its
/// vault key. `problems` is empty when the replica is in step with the database.
#[derive(Debug, Clone)]
pub struct Health {
    pub database: String,
    pub sandbox_ready: bool,
    pub llm_configured: bool,
    /// This process's lease id on the store (`None`: no lease, e.g. a test's state).
    pub replica: Option<Uuid>,
    pub build: &'static str,
    /// The catalog version in the database, and the one this replica searches.
    pub catalog_version: u64,
    pub catalog_loaded: u64,
    pub catalog_servers: usize,
    /// The id (fingerprint) of the key this replica seals credentials with.
    pub vault_key: String,
    pub problems: Vec<String>,
}

pub async fn health(state: &AppState) -> Result<Health, OpError> {
    // Reading the catalog's version is the proof that the store answers.
    let catalog_version = state.store.catalog_version().await.map_err(OpError::Unavailable)?;
    let catalog_loaded = state.catalog.version();
    let vault_key = state.vault.key_id();
    let recorded =
        state.store.fact(crate::vault::lease::WRITING_KEY_FACT).await.map_err(OpError::Unavailable)?;
    let mut problems = Vec::new();
    if catalog_loaded != catalog_version {
        problems.push(format!(
            "the catalog in the database is version {catalog_version}; this replica searches version \
             {catalog_loaded} (it loads changes every DYNAMCP_SYNC_SECS)"
        ));
    }
    if let Some(recorded) = recorded.filter(|r| !state.vault.has_key(r)) {
        problems.push(format!(
            "the database's vault key is {recorded}, which this replica cannot open: set the same \
             ENCRYPTION_KEY on every replica"
        ));
    }
    let replica = match &state.lease {
        Some(lease) => Some(lease.holder().await),
        None => None,
    };
    Ok(Health {
        database: state.store.backend().to_string(),
        sandbox_ready: state.runtime.sandbox_status().sandbox().is_some(),
        llm_configured: state.runtime.llm().is_some(),
        replica,
        build: env!("CARGO_PKG_VERSION"),
        catalog_version,
        catalog_loaded,
        catalog_servers: state.catalog.index().len(),
        vault_key,
        problems,
    })
}
