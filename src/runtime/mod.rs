//! The agent runtime: one supervisor owns every MCP server dynamcp starts for an agent.
//!
//! - [`launch`]: catalog record → package or program, arguments and an environment built from
//!   nothing.
//! - [`packages`]: the package store: each npm/PyPI package installed once per version, in a
//!   controlled step, pinned in the agent, run from its entry point.
//! - [`sandbox`]: bubblewrap: every server (and every install) in its own namespaces, seeing
//!   only its package, its home and its credential files.
//! - [`server`]: one running server (rmcp client session, process group, redacted stderr).
//! - [`run`]: an agent run: the LLM sees every server's tools and calls them until it answers,
//!   streaming [`RunEvent`]s.
//! - [`schema`]: tool arguments checked against the tool's input schema.
//!
//! Servers are keyed by (agent, server): each agent's servers get only that agent's credentials.
//! They start concurrently, at most `max_servers` at once (a semaphore; an idle server is stopped
//! to make room), stop after `idle` without use, start again after a crash, and all stop, with
//! their process groups, on [`Runtime::shutdown`]. Only `api/` knows HTTP.

pub mod launch;
pub mod oauth;
pub mod packages;
pub mod remote;
pub mod run;
pub mod sandbox;
pub mod schema;
pub mod server;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rmcp::model::CallToolResult;
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};
use uuid::Uuid;

use crate::access::Tenant;
use crate::access::limit::{Cap, CapSlot};
use crate::catalog::Catalog;
use crate::llm::LlmClient;
use crate::store::{Agent, SecretKind, Store, StoreError};
use crate::vault::{SecretBytes, Vault, VaultError};
pub use launch::{Launcher, Target};
use packages::{Installed, PackageRef, PackageStore};
pub use run::{RunEvent, RunStatus};
pub use sandbox::SandboxStatus;
use server::{CallFailure, Live, Redactor, StartParams};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("agent {0} not found")]
    AgentNotFound(Uuid),
    #[error("agent {agent} has no server {server:?} (its servers: {known})")]
    ServerNotInAgent { agent: Uuid, server: String, known: String },
    #[error("server {server:?} has no tool {tool:?} (its tools: {known})")]
    ToolNotFound { server: String, tool: String, known: String },
    #[error("invalid arguments for {server}/{tool}: {reason}")]
    InvalidArguments { server: String, tool: String, reason: String },
    #[error("server {0:?} is no longer in the catalog, so dynamcp will not launch it")]
    NotInCatalog(String),
    #[error("server {server:?} cannot be launched here: {reason}")]
    NotLaunchable { server: String, reason: String },
    #[error("the stored value of {server}/{key} cannot be sent as a header")]
    BadCredential { server: String, key: String },
    #[error("server {server:?} failed to start: {reason}")]
    StartFailed { server: String, reason: String },
    #[error("server {server:?} may not be reached: {reason}")]
    RemoteRefused { server: String, reason: String },
    #[error(
        "server {server:?} signs its users in through the browser, and this agent is not signed in \
         (or its sign-in ended): POST /api/agents/{agent}/servers/{server}/sign-in gives the link to open"
    )]
    SignInNeeded { agent: Uuid, server: String },
    #[error(transparent)]
    SignIn(#[from] oauth::SignInError),
    #[error("server {server:?} could not be installed: {reason}")]
    InstallFailed { server: String, reason: String },
    #[error(
        "MCP servers run only inside a sandbox, and none can be created here: {reason}. With a \
         single user and no API keys, DYNAMCP_ALLOW_UNSANDBOXED=true runs them without one"
    )]
    NoSandbox { reason: String },
    #[error("server {server:?} did not start within {secs} s")]
    StartTimeout { server: String, secs: u64 },
    #[error("{max} MCP servers are already running and none is idle; try again later")]
    Capacity { max: usize },
    #[error("{max} agent runs are already in progress; try again later")]
    TooManyRuns { max: usize },
    #[error("server {server:?} stopped: {reason}; it starts again on the next call")]
    ServerGone { server: String, reason: String },
    #[error("{server}/{tool} did not answer within {secs} s")]
    CallTimeout { server: String, tool: String, secs: u64 },
    #[error(
        "{server}/{tool} changed its definition since this agent's owner approved its tools; it is not called until they approve it again (POST /api/agents/{{id}}/tools/approve)"
    )]
    ToolNotApproved { server: String, tool: String },
    #[error("{server}/{tool} rejected the call: {reason}")]
    CallRejected { server: String, tool: String, reason: String },
    #[error(
        "no language model is configured, so agents cannot run; set ANTHROPIC_API_KEY or OPENAI_API_KEY (the tools endpoints work without one)"
    )]
    NoLlm,
    #[error("the input is empty: say what the agent should do")]
    EmptyInput,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("could not {what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

impl RuntimeError {
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }

    /// A stable machine-readable code, shared by HTTP errors and `error` events.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AgentNotFound(_) => "agent_not_found",
            Self::ServerNotInAgent { .. } => "server_not_in_agent",
            Self::ToolNotFound { .. } => "tool_not_found",
            Self::InvalidArguments { .. } => "invalid_arguments",
            Self::NotInCatalog(_) => "server_not_in_catalog",
            Self::NotLaunchable { .. } => "server_not_launchable",
            Self::BadCredential { .. } => "bad_credential",
            Self::StartFailed { .. } => "server_start_failed",
            Self::InstallFailed { .. } => "server_install_failed",
            Self::RemoteRefused { .. } => "remote_address_refused",
            Self::SignInNeeded { .. } => "sign_in_needed",
            Self::SignIn(oauth::SignInError::BadLink | oauth::SignInError::Expired) => "invalid_sign_in_link",
            Self::SignIn(_) => "sign_in_failed",
            Self::NoSandbox { .. } => "sandbox_unavailable",
            Self::StartTimeout { .. } => "server_start_timeout",
            Self::Capacity { .. } => "too_many_servers",
            Self::TooManyRuns { .. } => "too_many_runs",
            Self::ServerGone { .. } => "server_crashed",
            Self::CallTimeout { .. } => "tool_call_timeout",
            Self::CallRejected { .. } => "tool_call_rejected",
            Self::ToolNotApproved { .. } => "tool_not_approved",
            Self::NoLlm => "llm_not_configured",
            Self::EmptyInput => "empty_input",
            Self::ShuttingDown => "shutting_down",
            Self::Store(_) | Self::Vault(_) | Self::Io { .. } => "internal",
        }
    }
}

/// Supervision settings (from `RuntimeArgs`).
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub runtimes: Vec<String>,
    pub pass_env: Vec<String>,
    pub first_start_timeout: Duration,
    pub start_timeout: Duration,
    pub call_timeout: Duration,
    pub idle: Duration,
    pub max_servers: usize,
    pub max_rounds: usize,
    /// Tool definitions offered to the model per round of a run.
    pub max_tools: usize,
    /// Longest tool result the model gets, in tokens (estimated at 3 bytes each).
    pub result_max_tokens: usize,
    /// Longest a whole run may take.
    pub run_timeout: Duration,
    /// Agent runs at once.
    pub max_runs: usize,
    /// The service lease under which runs count against `max_runs` across every service on the
    /// database (PostgreSQL replicas); `None`: in this process only.
    pub share_runs_as: Option<Uuid>,
    /// Agents' servers live under `root/agents/<agent>/<server>`.
    pub root: PathBuf,
    /// The package store: installed npm and PyPI packages, one folder per package and version.
    pub packages: PathBuf,
    /// Where no sandbox can be created, run the open (keyless, single-user) tenant's servers
    /// without one instead of refusing. Never applies to tenants with API keys.
    pub allow_unsandboxed: bool,
    /// Never sandbox, even where bubblewrap works: for `bench-runtime`'s side-by-side figures
    /// only. Honoured, like `allow_unsandboxed`, for the open tenant alone.
    pub force_unsandboxed: bool,
    /// Remote servers' hosts that may be loopback or private addresses (tests, private
    /// deployments); every other internal address is refused.
    pub remote_allow_hosts: Vec<String>,
    /// bubblewrap: a program name looked up on PATH, or an absolute path.
    pub sandbox_program: String,
}

/// The live tools of one of an agent's servers, or why it is not running.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ServerTools {
    pub server: String,
    /// `ready` or `error`.
    pub status: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Tools whose definitions changed since they were approved (not called until approved).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

/// A running server, as the supervisor reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Running {
    pub agent: Uuid,
    pub server: String,
    pub pid: Option<u32>,
    pub tools: usize,
}

type Slot = Arc<Mutex<Option<Arc<Live>>>>;

pub struct Runtime {
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    llm: Option<Arc<dyn LlmClient>>,
    launcher: Launcher,
    sandbox: SandboxStatus,
    packages: PackageStore,
    /// Serialises the read-merge-write of agents' pinned versions.
    pinning: Mutex<()>,
    settings: RuntimeSettings,
    slots: std::sync::Mutex<HashMap<(Uuid, String), Slot>>,
    /// The session of every agent whose servers were started: deleting a session stops them.
    sessions: std::sync::Mutex<HashMap<Uuid, Uuid>>,
    /// The store's count of agent deletions when [`Runtime::forget_deleted`] last looked.
    deletions_seen: std::sync::atomic::AtomicU64,
    permits: Arc<Semaphore>,
    runs: Cap,
    /// Verifications in progress (see `verify`).
    verifying: verify::InFlight,
    stopping: AtomicBool,
}

impl Runtime {
    /// The launch kinds this machine can run, for planners that choose servers.
    pub fn launch_kinds(&self) -> Vec<crate::catalog::LaunchKind> {
        self.launcher.kinds()
    }

    /// Resolves the allowed runtimes on dynamcp's PATH and starts the idle reaper.
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        llm: Option<Arc<dyn LlmClient>>,
        settings: RuntimeSettings,
    ) -> Arc<Self> {
        let search_path = std::env::var_os("PATH");
        let launcher = Launcher::new(
            &settings.runtimes,
            search_path.clone(),
            &settings.pass_env,
            |name: &str| std::env::var_os(name),
            settings.root.clone(),
        );
        let sandbox = sandbox::Sandbox::detect(&settings.sandbox_program, search_path.as_ref());
        match &sandbox {
            SandboxStatus::Ready(_) => {
                tracing::info!("{}: every MCP server runs inside it", sandbox.describe())
            }
            SandboxStatus::Unavailable(_) if settings.allow_unsandboxed => tracing::warn!(
                "{}. DYNAMCP_ALLOW_UNSANDBOXED is set: the open tenant's MCP servers run UNSANDBOXED, \
                 as dynamcp's own user, able to read its data dir and vault key; tenants with API keys \
                 get none started",
                sandbox.describe()
            ),
            SandboxStatus::Unavailable(_) => tracing::warn!(
                "{}: no MCP server will start (install bubblewrap; see README, Security model)",
                sandbox.describe()
            ),
        }
        let packages = PackageStore::new(
            settings.packages.clone(),
            launcher.installers().clone(),
            launcher.install_env(),
            launcher.runtime_roots(true),
        );
        let runs = Cap::for_service(
            "run",
            settings.max_runs,
            settings.share_runs_as.map(|holder| (store.clone(), holder)),
            settings.run_timeout,
        );
        let runtime = Arc::new(Self {
            catalog,
            store,
            vault,
            llm,
            launcher,
            sandbox,
            packages,
            pinning: Mutex::new(()),
            permits: Arc::new(Semaphore::new(settings.max_servers.max(1))),
            runs,
            settings,
            slots: std::sync::Mutex::new(HashMap::new()),
            sessions: std::sync::Mutex::new(HashMap::new()),
            deletions_seen: std::sync::atomic::AtomicU64::new(0),
            verifying: Default::default(),
            stopping: AtomicBool::new(false),
        });
        tokio::spawn(reap_idle(Arc::downgrade(&runtime)));
        runtime
    }

    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    /// Whether servers run sandboxed here, and if not, why.
    pub fn sandbox_status(&self) -> &SandboxStatus {
        &self.sandbox
    }

    /// The sandbox `agent`'s servers run in; `None` (unsandboxed) only for the open tenant when
    /// the operator allowed it; otherwise an error.
    fn isolation(&self, agent: &Agent) -> Result<Option<&sandbox::Sandbox>, RuntimeError> {
        let open = agent.tenant == Tenant::open().as_str();
        match self.sandbox.sandbox() {
            Some(_) if self.settings.force_unsandboxed && open => Ok(None),
            Some(sandbox) => Ok(Some(sandbox)),
            None if self.settings.allow_unsandboxed && open => Ok(None),
            None => Err(RuntimeError::NoSandbox {
                reason: match &self.sandbox {
                    SandboxStatus::Unavailable(why) => why.clone(),
                    SandboxStatus::Ready(_) => String::new(),
                },
            }),
        }
    }

    pub fn llm(&self) -> Option<&Arc<dyn LlmClient>> {
        self.llm.as_ref()
    }

    /// A slot for one more run of `agent`, or `TooManyRuns`.
    pub(crate) async fn run_permit(&self, agent: Uuid) -> Result<CapSlot, RuntimeError> {
        self.runs.try_take(&agent.to_string()).await.ok_or(RuntimeError::TooManyRuns { max: self.runs.max() })
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Agent `id`, if it is `tenant`'s: another tenant's agent is "not found" as well.
    pub async fn agent(&self, tenant: &Tenant, id: Uuid) -> Result<Agent, RuntimeError> {
        crate::access::owned_agent(self.store.as_ref(), tenant, id)
            .await?
            .ok_or(RuntimeError::AgentNotFound(id))
    }

    /// The server ids of an agent, from its stored config. Only the ids are taken from it: what
    /// runs is always the catalog's launch spec for that id.
    pub fn servers_of(agent: &Agent) -> Vec<String> {
        agent
            .mcp_config
            .get("mcpServers")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Agent `id` of `tenant`, if `server` is one of its servers.
    async fn agent_with_server(
        &self,
        tenant: &Tenant,
        id: Uuid,
        server: &str,
    ) -> Result<Agent, RuntimeError> {
        let agent = self.agent(tenant, id).await?;
        let servers = Self::servers_of(&agent);
        if !servers.iter().any(|s| s == server) {
            return Err(RuntimeError::ServerNotInAgent {
                agent: id,
                server: server.to_owned(),
                known: servers.join(", "),
            });
        }
        Ok(agent)
    }

    /// Starts (or reuses) every server of `agent` concurrently; each outcome in config order.
    pub(crate) async fn start_all(
        &self,
        agent: &Agent,
        events: &run::Emitter,
    ) -> Vec<(String, Result<Arc<Live>, RuntimeError>)> {
        let servers = Self::servers_of(agent);
        let starts = servers.iter().map(|server| self.ensure(agent, server, events));
        let outcomes = futures::future::join_all(starts).await;
        servers.into_iter().zip(outcomes).collect()
    }

    /// The live server `server` of `agent`, started if it is not running (or crashed).
    pub(crate) async fn ensure(
        &self,
        agent: &Agent,
        server: &str,
        events: &run::Emitter,
    ) -> Result<Arc<Live>, RuntimeError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(RuntimeError::ShuttingDown);
        }
        let slot = {
            let mut slots = self.slots.lock().map_err(|_| RuntimeError::ShuttingDown)?;
            slots.entry((agent.id, server.to_owned())).or_default().clone()
        };
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(agent.id, agent.session_id);
        }
        let mut guard = slot.lock().await;
        if let Some(live) = guard.as_ref() {
            if live.is_alive() {
                live.touch();
                if live.tools_changed() {
                    self.refresh_tools(agent, live, events).await?;
                }
                return Ok(live.clone());
            }
            tracing::warn!(agent = %agent.id, server, "server had stopped since its last use; starting it again");
            events.emit(RunEvent::Error {
                server: Some(server.to_owned()),
                code: "server_crashed".to_owned(),
                message: format!("server {server:?} had stopped since its last use; starting it again"),
            });
            if let Some(dead) = guard.take() {
                tokio::spawn(async move { dead.stop().await });
            }
        }
        if self.stopping.load(Ordering::Acquire) {
            return Err(RuntimeError::ShuttingDown);
        }
        let live = Arc::new(self.start(agent, server, events).await?);
        if let Err(e) = self.hold_changed(agent, &live, &live.tools(), events).await {
            live.stop().await;
            return Err(e);
        }
        live.touch();
        events.emit(RunEvent::ServerReady {
            server: server.to_owned(),
            tools: live.tools().len(),
            ms: u64::try_from(live.started_in.as_millis()).unwrap_or(u64::MAX),
        });
        *guard = Some(live.clone());
        Ok(live)
    }

    /// Holds the tools of `live` whose definitions differ from those approved for `agent` (and
    /// says so in the run's events); pins them on a first start.
    async fn hold_changed(
        &self,
        agent: &Agent,
        live: &Live,
        tools: &[rmcp::model::Tool],
        events: &run::Emitter,
    ) -> Result<(), RuntimeError> {
        let server = live.server.as_str();
        let held = self.check_tool_pins(agent.id, server, tools).await?;
        if !held.is_empty() {
            tracing::warn!(agent = %agent.id, server, tools = ?held, "tool definitions changed since they were approved: held");
            events.emit(RunEvent::ToolsChanged {
                server: server.to_owned(),
                tools: held.iter().cloned().collect(),
            });
        }
        live.set_held(held);
        Ok(())
    }

    /// A running server announced that its tools changed: lists them again, and holds the new
    /// or changed ones until the owner approves them.
    pub(crate) async fn refresh_tools(
        &self,
        agent: &Agent,
        live: &Live,
        events: &run::Emitter,
    ) -> Result<(), RuntimeError> {
        let tools = live
            .relist()
            .await
            .map_err(|reason| RuntimeError::ServerGone { server: live.server.clone(), reason })?;
        tracing::info!(agent = %agent.id, server = %live.server, tools = tools.len(), "the server's tools changed; listed again");
        self.hold_changed(agent, live, &tools, events).await
    }

    /// The catalog's record of `server`: what is launched is always the catalog's.
    fn catalog_record(&self, server: &str) -> Result<crate::catalog::ServerRecord, RuntimeError> {
        self.catalog.index().get(server).cloned().ok_or_else(|| RuntimeError::NotInCatalog(server.to_owned()))
    }

    async fn start(&self, agent: &Agent, server: &str, events: &run::Emitter) -> Result<Live, RuntimeError> {
        let record = self.catalog_record(server)?;
        let target = self.launcher.target(&record)?;
        let mut values = self.credentials(agent.session_id, server).await?;
        // A sign-in's grant is sent as a bearer token, never as a variable.
        let grant = values.remove(oauth::GRANT_KEY);
        values.remove(oauth::PENDING_KEY);
        let bearer = match (&target, &grant) {
            (Target::Remote { .. }, Some(grant)) => Some(self.bearer(agent, server, grant).await?),
            _ => None,
        };
        let redactor = Redactor::new(
            values.values().map(|v| String::from_utf8_lossy(v.expose()).into_owned()).chain(bearer.clone()),
        );
        let jail = match &target {
            // A remote server has no process here; `docker run` talks to the daemon, which no
            // sandbox can reach: the container is the isolation (its options were checked).
            Target::Remote { .. } | Target::Command { kind: crate::catalog::LaunchKind::Docker, .. } => None,
            _ => self.isolation(agent)?,
        };
        let work = self.launcher.work_dir(agent.id, server);
        let (program, args, installed) = match &target {
            Target::Package { package, args } => {
                let pin = pinned(agent, server, package);
                let version = pin.clone().or_else(|| package.version.clone());
                let found = self.packages.installed(package, version.as_deref());
                let cached = found.is_some();
                let timeout = self.settings.first_start_timeout;
                events.emit(RunEvent::ServerStarting {
                    server: server.to_owned(),
                    launch: package
                        .describe(found.as_ref().map(|i| i.version.as_str()).or(version.as_deref())),
                    cached,
                    timeout_secs: if cached { self.settings.start_timeout } else { timeout }.as_secs(),
                });
                let installed = match found {
                    Some(installed) => installed,
                    None => {
                        tracing::info!(agent = %agent.id, server, package = %package.describe(version.as_deref()), "installing");
                        self.packages.install(package, version.as_deref(), jail, timeout).await.map_err(
                            |e| RuntimeError::InstallFailed {
                                server: server.to_owned(),
                                reason: redactor.redact(&e.to_string()),
                            },
                        )?
                    }
                };
                if pin.is_none() {
                    self.pin(agent.id, server, &installed).await?;
                }
                let program = match jail {
                    Some(_) => PathBuf::from(sandbox::PACKAGE).join(&installed.entry),
                    None => installed.dir.join(&installed.entry),
                };
                (program, args.clone(), Some(installed))
            }
            Target::Command { program, args, .. } => {
                events.emit(RunEvent::ServerStarting {
                    server: server.to_owned(),
                    launch: target.describe(),
                    cached: true,
                    timeout_secs: self.settings.start_timeout.as_secs(),
                });
                (program.clone(), args.clone(), None)
            }
            Target::Remote { url } => {
                let timeout = self.settings.start_timeout;
                events.emit(RunEvent::ServerStarting {
                    server: server.to_owned(),
                    launch: target.describe(),
                    cached: true,
                    timeout_secs: timeout.as_secs(),
                });
                tracing::info!(agent = %agent.id, server, launch = %target.describe(), "connecting to a remote server");
                let permit = self.permit(timeout).await?;
                let params = StartParams { server: server.to_owned(), redactor, permit, timeout };
                let mut headers = self.launcher.headers(&record, &values)?;
                if let Some(token) = &bearer {
                    let mut value =
                        http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                            RuntimeError::BadCredential {
                                server: server.to_owned(),
                                key: oauth::GRANT_KEY.to_owned(),
                            }
                        })?;
                    value.set_sensitive(true);
                    headers.push((http::header::AUTHORIZATION, value));
                }
                let policy = remote::RemotePolicy::new(&self.settings.remote_allow_hosts);
                return match Live::start_remote(params, url, headers, &policy).await {
                    Err(RuntimeError::StartFailed { reason, .. }) if reason == server::SIGN_IN_ASKED => {
                        Err(RuntimeError::SignInNeeded { agent: agent.id, server: server.to_owned() })
                    }
                    other => other,
                };
            }
        };
        // The package is installed by now (within the first start's own timeout): what is left
        // is the handshake, which a server that answers at all finishes well within this.
        let timeout = self.settings.start_timeout;
        tracing::info!(agent = %agent.id, server, launch = %target.describe(), sandboxed = jail.is_some(), "starting server");
        let permit = self.permit(timeout).await?;
        let env = self.launcher.environment(&record, &work, &values, jail.is_some())?;
        let mut command = match jail {
            Some(sandbox) => {
                let mut read_only: Vec<(PathBuf, PathBuf)> =
                    self.launcher.run_roots().iter().map(|p| (p.clone(), p.clone())).collect();
                if let Some(installed) = &installed {
                    read_only.push((installed.dir.clone(), PathBuf::from(sandbox::PACKAGE)));
                    if let Some(home) = python_home(installed) {
                        read_only.push((home.clone(), home));
                    }
                }
                if let Some(secrets) = &env.secrets_dir {
                    read_only.push((secrets.clone(), PathBuf::from(sandbox::SECRETS)));
                }
                if let Target::Command { kind, .. } = &target {
                    read_only.extend(command_paths(&program, &args, *kind, &self.settings.root));
                }
                let uid = sandbox::tenant_uid(&agent.tenant);
                let identity = sandbox::write_identity(&work.join("identity"), uid)
                    .map_err(|e| RuntimeError::io("prepare the sandbox's identity files", e))?;
                let jail = sandbox::Jail {
                    uid,
                    home: work.join("home"),
                    read_only,
                    writable: Vec::new(),
                    identity: Some(identity),
                };
                sandbox.command(&jail, &program, &args)
            }
            None => {
                let mut command = tokio::process::Command::new(&program);
                command.args(&args).current_dir(work.join("home"));
                command
            }
        };
        command.env_clear().envs(env.vars.iter().map(|(k, v)| (k, v)));
        let params = StartParams { server: server.to_owned(), redactor, permit, timeout };
        let live = Live::start_stdio(params, command, env.files).await?;
        tracing::info!(agent = %agent.id, server, pid = live.pid, tools = live.tools().len(), ms = live.started_in.as_millis() as u64, "server ready");
        Ok(live)
    }

    /// The tools of `server` whose definitions differ from those pinned for `agent` (changed or
    /// new). The first live list of a server is pinned as it is: nothing is held then.
    async fn check_tool_pins(
        &self,
        agent: Uuid,
        server: &str,
        tools: &[rmcp::model::Tool],
    ) -> Result<std::collections::BTreeSet<String>, RuntimeError> {
        let current = tool_hashes(tools);
        let _one_at_a_time = self.pinning.lock().await;
        let Some(mut stored) = self.store.get_agent(agent).await? else { return Ok(Default::default()) };
        let pinned = stored.metadata.get("tool_pins").and_then(|p| p.get(server)).and_then(Value::as_object);
        let Some(pinned) = pinned else {
            if !stored.metadata.is_object() {
                stored.metadata = Value::Object(Default::default());
            }
            stored.metadata["tool_pins"][server] =
                Value::Object(current.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
            self.store.set_agent_metadata(agent, &stored.metadata).await?;
            return Ok(Default::default());
        };
        Ok(current
            .into_iter()
            .filter(|(name, hash)| pinned.get(name).and_then(Value::as_str) != Some(hash.as_str()))
            .map(|(name, _)| name)
            .collect())
    }

    /// The owner approves the tool definitions `agent`'s servers show now: they are pinned as
    /// they are, and nothing is held any more. Returns the servers with their tools.
    pub async fn approve_tools(&self, tenant: &Tenant, id: Uuid) -> Result<Vec<ServerTools>, RuntimeError> {
        let agent = self.agent(tenant, id).await?;
        let events = run::Emitter::discard();
        let outcomes = self.start_all(&agent, &events).await;
        self.change_metadata(id, |metadata| {
            for (server, outcome) in &outcomes {
                if let Ok(live) = outcome {
                    let hashes = tool_hashes(&live.tools());
                    metadata["tool_pins"][server.as_str()] =
                        Value::Object(hashes.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
                    live.set_held(Default::default());
                }
            }
        })
        .await?
        .ok_or(RuntimeError::AgentNotFound(id))?;
        tracing::info!(agent = %id, "tool definitions approved");
        self.tools(tenant, id).await
    }

    /// The owner allows `server`'s `tool`, which its server marks destructive, in this agent's
    /// runs from now on. Returns every tool allowed on that server.
    pub async fn allow_tool(
        &self,
        tenant: &Tenant,
        id: Uuid,
        server: &str,
        tool: &str,
    ) -> Result<Vec<String>, RuntimeError> {
        self.agent_with_server(tenant, id, server).await?;
        let tool = tool.trim();
        if tool.is_empty() || tool.len() > 200 {
            return Err(RuntimeError::ToolNotFound {
                server: server.to_owned(),
                tool: tool.to_owned(),
                known: "a tool name of 1 to 200 characters".to_owned(),
            });
        }
        let allowed = self
            .change_metadata(id, |metadata| {
                let list = &mut metadata["allowed_tools"][server];
                let mut allowed: Vec<String> = list
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default();
                if !allowed.iter().any(|t| t == tool) {
                    allowed.push(tool.to_owned());
                }
                *list = serde_json::json!(allowed);
                allowed
            })
            .await?
            .ok_or(RuntimeError::AgentNotFound(id))?;
        tracing::info!(agent = %id, server, tool, "destructive tool allowed");
        Ok(allowed)
    }

    /// Changes agent `id`'s stored metadata (an object, made one if it is not) with `change` and
    /// stores it, one writer at a time. `None` when the agent is gone.
    async fn change_metadata<T>(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Value) -> T,
    ) -> Result<Option<T>, RuntimeError> {
        let _one_at_a_time = self.pinning.lock().await;
        let Some(mut stored) = self.store.get_agent(id).await? else { return Ok(None) };
        if !stored.metadata.is_object() {
            stored.metadata = Value::Object(Default::default());
        }
        let out = change(&mut stored.metadata);
        self.store.set_agent_metadata(id, &stored.metadata).await?;
        Ok(Some(out))
    }

    /// Records in `agent`'s metadata the version of `server`'s package it now runs, so later
    /// starts run exactly that one.
    async fn pin(&self, agent: Uuid, server: &str, installed: &Installed) -> Result<(), RuntimeError> {
        let pin = serde_json::json!({
            "ecosystem": installed.ecosystem,
            "name": installed.name,
            "version": installed.version,
        });
        if self.change_metadata(agent, |metadata| metadata["pins"][server] = pin).await?.is_none() {
            return Ok(());
        }
        tracing::info!(%agent, server, package = %installed.name, version = %installed.version, "pinned");
        Ok(())
    }

    /// A process slot: free, or made free by stopping the longest-idle server, or waited for.
    async fn permit(&self, wait: Duration) -> Result<tokio::sync::OwnedSemaphorePermit, RuntimeError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if let Some(idle) = self.idlest() {
            idle.stop().await;
        }
        tokio::time::timeout(wait.min(Duration::from_secs(30)), self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(RuntimeError::Capacity { max: self.settings.max_servers })
    }

    /// Takes the live server nobody is using and that has been idle longest out of its slot.
    fn idlest(&self) -> Option<Arc<Live>> {
        let slots: Vec<Slot> = self.slots.lock().ok()?.values().cloned().collect();
        let mut best: Option<(Duration, tokio::sync::OwnedMutexGuard<Option<Arc<Live>>>)> = None;
        for slot in slots {
            let Ok(guard) = slot.try_lock_owned() else { continue };
            let Some(idle) = guard.as_ref().map(|l| l.idle_for()) else { continue };
            if idle > Duration::ZERO && best.as_ref().is_none_or(|(b, _)| idle > *b) {
                best = Some((idle, guard));
            }
        }
        best.and_then(|(_, mut guard)| guard.take())
    }

    /// The decrypted credentials `session` stored for `server`, by key.
    async fn credentials(
        &self,
        session: Uuid,
        server: &str,
    ) -> Result<BTreeMap<String, SecretBytes>, RuntimeError> {
        let mut values = BTreeMap::new();
        for sealed in self.store.credentials(session).await? {
            if sealed.server == server && matches!(sealed.kind, SecretKind::Env | SecretKind::File) {
                values.insert(sealed.key.clone(), self.vault.open_sealed(&sealed)?);
            }
        }
        Ok(values)
    }

    /// Forgets a server that crashed, so the next use starts it again.
    pub(crate) async fn forget(&self, agent: Uuid, server: &str) {
        let slot = self.slots.lock().ok().and_then(|s| s.get(&(agent, server.to_owned())).cloned());
        if let Some(slot) = slot {
            let dead = slot.lock().await.take();
            if let Some(dead) = dead {
                dead.stop().await;
            }
        }
    }

    /// Every server of agent `id` with its live tools, starting them as needed. A server that
    /// cannot start is reported with its error; the others still answer.
    pub async fn tools(&self, tenant: &Tenant, id: Uuid) -> Result<Vec<ServerTools>, RuntimeError> {
        let agent = self.agent(tenant, id).await?;
        let events = run::Emitter::discard();
        let mut out = Vec::new();
        for (server, outcome) in self.start_all(&agent, &events).await {
            out.push(match outcome {
                Ok(live) => ServerTools {
                    server,
                    status: "ready",
                    tools: live.tools().iter().filter_map(|t| serde_json::to_value(t).ok()).collect(),
                    error: None,
                    code: None,
                    held: live.held(),
                },
                Err(e) => ServerTools {
                    server,
                    status: "error",
                    tools: Vec::new(),
                    error: Some(e.to_string()),
                    code: Some(e.code()),
                    held: Vec::new(),
                },
            });
        }
        Ok(out)
    }

    /// Calls one tool of one of the agent's servers directly, after checking the arguments
    /// against its input schema. No language model is involved.
    pub async fn call(
        &self,
        tenant: &Tenant,
        id: Uuid,
        server: &str,
        tool: &str,
        arguments: Value,
    ) -> Result<CallToolResult, RuntimeError> {
        let agent = self.agent_with_server(tenant, id, server).await?;
        let live = self.ensure(&agent, server, &run::Emitter::discard()).await?;
        self.call_live(&agent, &live, tool, arguments).await
    }

    pub(crate) async fn call_live(
        &self,
        agent: &Agent,
        live: &Live,
        tool: &str,
        arguments: Value,
    ) -> Result<CallToolResult, RuntimeError> {
        let server = live.server.clone();
        if live.is_held(tool) && live.tool(tool).is_some() {
            return Err(RuntimeError::ToolNotApproved { server, tool: tool.to_owned() });
        }
        let Some(spec) = live.tool(tool) else {
            let tools = live.tools();
            let known: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
            return Err(RuntimeError::ToolNotFound {
                server,
                tool: tool.to_owned(),
                known: known.join(", "),
            });
        };
        let arguments = match arguments {
            Value::Null => Value::Object(Default::default()),
            other => other,
        };
        let schema = Value::Object((*spec.input_schema).clone());
        schema::validate(&schema, &arguments).map_err(|reason| RuntimeError::InvalidArguments {
            server: server.clone(),
            tool: tool.to_owned(),
            reason,
        })?;
        let Value::Object(arguments) = arguments else {
            return Err(RuntimeError::InvalidArguments {
                server,
                tool: tool.to_owned(),
                reason: "arguments must be an object".to_owned(),
            });
        };
        tracing::info!(agent = %agent.id, server = %server, tool, "tool call");
        match live.call(tool, arguments, self.settings.call_timeout).await {
            Ok(result) => Ok(redact_result(result, &live.redactor)),
            Err(CallFailure::Gone(reason)) => {
                self.forget(agent.id, &server).await;
                Err(RuntimeError::ServerGone { server, reason })
            }
            Err(CallFailure::Timeout(t)) => {
                Err(RuntimeError::CallTimeout { server, tool: tool.to_owned(), secs: t.as_secs() })
            }
            Err(CallFailure::Refused(reason)) => {
                Err(RuntimeError::CallRejected { server, tool: tool.to_owned(), reason })
            }
        }
    }

    /// The servers running now.
    pub async fn running(&self) -> Vec<Running> {
        let slots: Vec<((Uuid, String), Slot)> = self
            .slots
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for ((agent, server), slot) in slots {
            if let Some(live) = slot.lock().await.as_ref().filter(|l| l.is_alive()) {
                out.push(Running { agent, server, pid: live.pid, tools: live.tools().len() });
            }
        }
        out
    }

    /// Stops every server of every agent of `session` and deletes their folders (homes, and
    /// whatever tokens servers cached there): the session is being deleted.
    pub async fn stop_session(&self, session: Uuid) {
        let agents: Vec<Uuid> = self
            .sessions
            .lock()
            .map(|s| s.iter().filter(|(_, owner)| **owner == session).map(|(agent, _)| *agent).collect())
            .unwrap_or_default();
        for agent in agents {
            self.forget_agent(agent).await;
        }
    }

    /// Stops what runs here for agents that another process on the database deleted (another
    /// replica, or a session deleted there): their servers hold decrypted credentials. Looks at
    /// the agents only when the store's count of deletions moved. Returns how many it stopped.
    pub async fn forget_deleted(&self) -> Result<usize, RuntimeError> {
        use std::sync::atomic::Ordering;
        let deletions = self.store.counter(crate::store::AGENT_DELETIONS_FACT).await?;
        if deletions == self.deletions_seen.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let agents: Vec<Uuid> = self.sessions.lock().map(|s| s.keys().copied().collect()).unwrap_or_default();
        let mut gone = 0;
        for agent in agents {
            if self.store.get_agent(agent).await?.is_none() {
                tracing::info!(%agent, "the agent was deleted elsewhere: stopping its servers here");
                self.forget_agent(agent).await;
                gone += 1;
            }
        }
        // Only once every agent was looked at: a failure above looks again next time.
        self.deletions_seen.store(deletions, Ordering::Relaxed);
        Ok(gone)
    }

    /// Stops `agent`'s servers and deletes its folders: the agent is being deleted.
    pub async fn forget_agent(&self, agent: Uuid) {
        self.stop_agent(agent).await;
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(&agent);
        }
        let dir = self.settings.root.join("agents").join(agent.to_string());
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%agent, error = %e, "could not delete a deleted agent's folders");
        }
    }

    /// Stops every server the runtime runs for `agent`.
    pub async fn stop_agent(&self, agent: Uuid) {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .map(|mut s| {
                let keys: Vec<_> = s.keys().filter(|(a, _)| *a == agent).cloned().collect();
                keys.into_iter().filter_map(|k| s.remove(&k)).collect()
            })
            .unwrap_or_default();
        stop_slots(slots).await;
    }

    /// Refuses new starts and stops every server, each with its whole process group.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let slots: Vec<Slot> =
            self.slots.lock().map(|mut s| s.drain().map(|(_, v)| v).collect()).unwrap_or_default();
        let count = slots.len();
        stop_slots(slots).await;
        if count > 0 {
            tracing::info!(servers = count, "runtime stopped every server");
        }
    }
}

/// Each tool's name and the SHA-256 of its whole definition (name, description, schemas,
/// annotations), as canonical JSON (sorted keys).
fn tool_hashes(tools: &[rmcp::model::Tool]) -> BTreeMap<String, String> {
    use sha2::Digest;
    tools
        .iter()
        .map(|tool| {
            let text = serde_json::to_value(tool).map(|v| v.to_string()).unwrap_or_default();
            (tool.name.to_string(), crate::catalog::record::hex(&sha2::Sha256::digest(text.as_bytes())))
        })
        .collect()
}

/// The version of `package` pinned for `server` in `agent`'s metadata, if it is that package.
fn pinned(agent: &Agent, server: &str, package: &PackageRef) -> Option<String> {
    let pin = agent.metadata.get("pins")?.get(server)?;
    let same = pin.get("name").and_then(Value::as_str) == Some(package.name.as_str())
        && pin.get("ecosystem").and_then(Value::as_str) == Some(package.ecosystem.as_str());
    pin.get("version")
        .and_then(Value::as_str)
        .filter(|v| same && packages::valid_version(v))
        .map(str::to_owned)
}

/// The prefix of the Python a venv was made with, when it is outside `/usr` (from `pyvenv.cfg`'s
/// `home`, its `bin` folder).
fn python_home(installed: &Installed) -> Option<PathBuf> {
    let cfg = std::fs::read_to_string(installed.dir.join("venv/pyvenv.cfg")).ok()?;
    let home =
        cfg.lines().find_map(|l| l.strip_prefix("home").map(|r| r.trim_start_matches([' ', '=']).trim()))?;
    let prefix = std::path::Path::new(home).parent()?;
    (!prefix.starts_with("/usr") && prefix.is_absolute() && prefix != std::path::Path::new("/"))
        .then(|| prefix.to_path_buf())
}

/// What an operator's own command (not an npm or PyPI package) needs to see read-only: its
/// program's prefix when outside `/usr`, and the existing files its arguments name by absolute
/// path. Never a folder, nothing under dynamcp's data dir, and only what any local user could
/// read anyway (`/etc/shadow` or a key file named in a record is never shown).
fn command_paths(
    program: &std::path::Path,
    args: &[String],
    kind: crate::catalog::LaunchKind,
    root: &std::path::Path,
) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    if let Some(prefix) = launch::prefix_outside_usr(program) {
        out.push((prefix.clone(), prefix));
    }
    if kind == crate::catalog::LaunchKind::Command {
        let data = root.parent().unwrap_or(root);
        for arg in args {
            let path = PathBuf::from(arg);
            if path.is_absolute() && path.is_file() && !path.starts_with(data) && launch::bindable(&path) {
                out.push((path.clone(), path));
            }
        }
    }
    out
}

/// A result with the server's own credential values blanked out, should it echo one: every
/// string of it, decoded, so an escaped or multi-line value is found as well.
fn redact_result(result: CallToolResult, redactor: &Redactor) -> CallToolResult {
    if redactor.is_empty() {
        return result;
    }
    let Ok(mut value) = serde_json::to_value(&result) else { return CallToolResult::error(Vec::new()) };
    redactor.redact_json(&mut value);
    // A result that no longer parses after redaction is dropped rather than passed on whole.
    serde_json::from_value(value).unwrap_or_else(|_| CallToolResult::error(Vec::new()))
}

async fn stop_slots(slots: Vec<Slot>) {
    let stops = slots.into_iter().map(|slot| async move {
        let live = slot.lock().await.take();
        if let Some(live) = live {
            live.stop().await;
        }
    });
    futures::future::join_all(stops).await;
}

/// Stops servers idle longer than the configured time; ends when the runtime is dropped.
async fn reap_idle(runtime: Weak<Runtime>) {
    let every = runtime
        .upgrade()
        .map(|r| (r.settings.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)))
        .unwrap_or(Duration::from_secs(30));
    loop {
        tokio::time::sleep(every).await;
        let Some(runtime) = runtime.upgrade() else { return };
        if runtime.stopping.load(Ordering::Acquire) {
            return;
        }
        let slots: Vec<((Uuid, String), Slot)> = runtime
            .slots
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for ((agent, server), slot) in slots {
            let Ok(mut guard) = slot.try_lock_owned() else { continue };
            // A crashed server stays in its slot until its next use (which reports the crash) or
            // until it has been idle as long as a live one would be.
            let expired = guard.as_ref().is_some_and(|l| l.idle_for() > runtime.settings.idle);
            if expired && let Some(live) = guard.take() {
                drop(guard);
                tracing::info!(agent = %agent, server = %server, "stopping an idle server");
                live.stop().await;
            }
        }
        // Forget empty slots nobody is using, so the map does not grow with every agent ever run.
        if let Ok(mut slots) = runtime.slots.lock() {
            slots.retain(|_, slot| slot.try_lock().map_or(true, |live| live.is_some()));
        }
    }
}
