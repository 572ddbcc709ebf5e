//! Command-line and environment configuration.
//!
//! Parsing only validates; nothing here opens files, sockets or databases. `AppState::build` does
//! the I/O. Every field can come from a flag or an environment variable (and so from `.env`);
//! secrets are read only from the environment, never from flags that would show in `ps`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::catalog::DenseBackend;
use crate::llm::{LlmSettings, Provider};
use crate::store::{SqliteSync, StoreSettings};
use crate::vault::Secret;

/// dynamcp: turn a plain-language request into a working MCP agent.
#[derive(Debug, Parser)]
#[command(name = "dynamcp", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (with the web playground at `/` and MCP at `/mcp`).
    Serve(Box<ServeArgs>),
    /// Serve dynamcp's own tools over MCP on stdin/stdout, for MCP clients (Claude Desktop,
    /// Cursor, …). Takes the same options as `serve`; `DYNAMCP_API_KEY` picks the tenant.
    Mcp(Box<McpArgs>),
    /// Manage the MCP server catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Search the catalog from the command line.
    Search(SearchArgs),
    /// Check this machine's setup (data dir, database, model, runtimes, sandbox, port, model key)
    /// and print what to fix; exits non-zero when something must be fixed.
    Doctor(DoctorArgs),
    /// Measure selection quality on a labelled set (Recall@1/5/10, MRR, misses).
    Eval(EvalArgs),
    /// Measure search and embedding speed (prints numbers; compares side by side in one run).
    Bench(BenchArgs),
    /// Load-test a running service: N connections for a fixed time, on search and/or offline chat.
    BenchLoad(LoadArgs),
    /// Measure how long the runtime takes from a request to all of an agent's servers ready,
    /// against starting the same servers with their plain commands one after another.
    BenchRuntime(RuntimeBenchArgs),
    /// Manage the credential vault.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Manage API keys. With none, the service runs open (loopback only).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant; it is printed once and only its hash is stored.
    Create(KeyCreateArgs),
    /// List keys (id, tenant, label, dates; never the keys).
    List(KeyStoreArgs),
    /// Revoke a key by id: requests with it answer 401 from then on. Revoking the last key locks
    /// the service (every request answers 401 until a new key is created); it never opens it.
    Revoke(KeyRevokeArgs),
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The tenant the key acts for: 1-64 letters, digits, '.', '_' or '-'.
    #[arg(long)]
    pub tenant: String,
    /// A note to tell keys apart (e.g. who holds it).
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Debug, Args)]
pub struct KeyStoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct KeyRevokeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The key's id, from `dynamcp keys list`.
    pub id: uuid::Uuid,
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Rotate the master key, safely while services run. With the data dir's key files: a new
    /// key (generated, or `NEW_ENCRYPTION_KEY`) becomes readable in every running service, then
    /// writes, then every credential is re-wrapped under it; the previous key stays in
    /// `vault.keys/` until `vault prune`. With `ENCRYPTION_KEY`: re-wraps everything under
    /// `NEW_ENCRYPTION_KEY`, once every running service can open it (list it in their
    /// `ENCRYPTION_KEY_PREVIOUS`), or else refuses.
    Rotate(RotateArgs),
    /// Re-wrap every credential still under an older key under the writing key (after a restart
    /// with a new `ENCRYPTION_KEY`, or to finish an interrupted rotation).
    Rewrap(RotateArgs),
    /// Show the keyring (which key writes), how many credentials each key wraps, and the running
    /// services holding the store.
    Status(VaultStatusArgs),
    /// Remove kept keys that no credential uses and no running service seals with (backups made
    /// before a rotation need the previous key: keep a copy).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Longest wait, in seconds, for running services to follow a step before giving up.
    #[arg(long, default_value_t = 120)]
    pub wait_secs: u64,
}

#[derive(Debug, Args)]
pub struct VaultStatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this key id (default: every kept key that nothing uses).
    #[arg(long)]
    pub key_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Timed repetitions per measurement.
    #[arg(long, default_value_t = 1000)]
    pub rounds: usize,
    /// Size of the synthetic catalog.
    #[arg(long, default_value_t = 100_000)]
    pub synthetic: usize,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// Seconds per scenario (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Scenarios to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "search,chat")]
    pub scenarios: Vec<LoadScenario>,
    /// Make every request's text unique (a number is appended), so no cache answers it: the cost
    /// of requests never seen before (query embedding included).
    #[arg(long, default_value_t = false)]
    pub unique_queries: bool,
    /// An API key to send, if the service has keys: from `DYNAMCP_BENCH_KEY` only, never a flag.
    #[arg(skip = std::env::var("DYNAMCP_BENCH_KEY").ok().filter(|k| !k.is_empty()))]
    pub key: Option<String>,
}

impl LoadArgs {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds.max(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadScenario {
    /// `POST /api/servers/search` with queries in users' words.
    Search,
    /// `POST /api/chat` (a new session per request; the offline planner).
    Chat,
}

#[derive(Debug, Args)]
pub struct RuntimeBenchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Catalog ids of the servers to start (each must run without credentials).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "everything-mcp-server,memory-mcp-server,time-mcp-server"
    )]
    pub servers: Vec<String>,
    /// Warm rounds (package caches filled).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Also measure one cold start of each kind, each with its own empty package cache (downloads).
    #[arg(long)]
    pub cold: bool,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Import catalog files; the format of each is detected (design servers.json or credinfo.json,
    /// dynamcp's merged catalog, MCP registry server.json).
    Import(ImportArgs),
    /// Embed every text of the compiled-in default catalog with the local model and write the
    /// int8 pack that ships as `catalog/default-embeddings.bin.gz`.
    PackEmbeddings(PackArgs),
    /// Install and start servers once here (sandboxed, no credentials), list their live tools,
    /// and keep the result: what chat turns otherwise check as they plan.
    Verify(Box<VerifyArgs>),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Catalog ids to verify, comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "top")]
    pub ids: Vec<String>,
    /// Verify the N most used launchable servers (by their registries' downloads).
    #[arg(long, conflicts_with = "ids")]
    pub top: Option<usize>,
    /// Check again even where a stored result still holds.
    #[arg(long)]
    pub again: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where to write the pack.
    #[arg(long, default_value = "catalog/default-embeddings.bin.gz")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// After importing, remove every server that is in none of the given files (only when every
    /// file imported).
    #[arg(long)]
    pub replace: bool,
    /// Files to import (JSON, optionally gzip-compressed).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// What the workflow needs, in plain language.
    pub query: String,
    /// How many servers to show.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub limit: u16,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The address `serve` would listen on: checked to be free.
    #[arg(long, env = "DYNAMCP_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,
    /// The runtimes and sandbox `serve` would use.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A JSONL file of labelled queries (see eval/README.md).
    pub file: PathBuf,
    /// Also run each retriever and stage alone and in combination.
    #[arg(long)]
    pub ablation: bool,
    /// Fusion weights to try instead of the defaults: `lexical,dense,tools,whole,named`.
    #[arg(long)]
    pub weights: Option<String>,
    /// Score the offline planner's plans (the server chosen per step) instead of search. Reads
    /// plan sets (`steps` with `acceptable` and `expert`) and search sets alike.
    #[arg(long, conflicts_with_all = ["ablation", "weights"])]
    pub plans: bool,
    /// With --plans: print every wrong choice and every step left uncovered.
    #[arg(long, requires = "plans")]
    pub misses: bool,
    /// With --plans: also score the rule before the choice step (the most relevant server that
    /// can be launched), side by side.
    #[arg(long, requires = "plans")]
    pub baseline: bool,
    /// With --plans: verify each plan as a chat turn does (install and start every chosen
    /// server here, replacing those that do not start) and report how many start.
    #[arg(long, requires = "plans")]
    pub verify: bool,
    /// With --plans: also write every plan, one JSON line per request (`{"id", "plan"}`), to
    /// this file, to read choices next to their alternatives.
    #[arg(long, requires = "plans")]
    pub plans_out: Option<std::path::PathBuf>,
    /// With --plans: also write what dynamcp asks of each labelled expert's server, one JSON
    /// line per value (`{"case", "server", "key", "kind", "description", "instructions"}`), for a
    /// blind judge of the instructions.
    #[arg(long, requires = "plans")]
    pub requirements_out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The model dynamcp embeds with, as a directory name.
const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// `$XDG_DATA_HOME/dynamcp`, else `$HOME/.local/share/dynamcp` (`None` with neither).
pub fn user_data_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|h| h.join(".local/share"))
    })?;
    Some(base.join("dynamcp"))
}

/// The data directory when none is set: `./data` if an earlier default left a database there
/// (nothing is lost on upgrade), else the user's data directory, else `./data`.
pub fn default_data_dir() -> PathBuf {
    let legacy = PathBuf::from("./data");
    if legacy.join("dynamcp.db").exists() {
        return legacy;
    }
    user_data_dir().unwrap_or(legacy)
}

/// Where the embedding model is looked for when no directory is set, in order: the user's data
/// directory, `./models`, and the checkout this binary was built in (`<checkout>/target/<profile>/
/// dynamcp` → `<checkout>/models`), so `dynamcp search` finds it from any directory.
pub fn model_dir_candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        user_data_dir().map(|d| d.join("models").join(MODEL_NAME)).into_iter().collect();
    out.push(PathBuf::from("./models").join(MODEL_NAME));
    if let Ok(exe) = std::env::current_exe()
        && let Some(checkout) = exe.parent().and_then(Path::parent).and_then(Path::parent)
        && exe.parent().and_then(Path::parent).is_some_and(|t| t.ends_with("target"))
    {
        out.push(checkout.join("models").join(MODEL_NAME));
    }
    out
}

/// The first of [`model_dir_candidates`] that holds a model, else the first of them.
pub fn default_model_dir() -> PathBuf {
    let candidates = model_dir_candidates();
    candidates
        .iter()
        .find(|d| d.join("config.json").is_file())
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("./models").join(MODEL_NAME))
}

/// Settings shared by every subcommand that touches the store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the embedded database, keys and caches. Default: the user's data directory
    /// (`$XDG_DATA_HOME/dynamcp`, else `~/.local/share/dynamcp`), or `./data` where an earlier
    /// default left a database.
    #[arg(long, env = "DYNAMCP_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,

    /// Database URL. Unset: a SQLite file `dynamcp.db` in the data dir. A `postgres://` URL selects
    /// PostgreSQL (15+, with the pgvector extension available).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// SQLite `synchronous` level: `full` also survives power loss, `normal` survives a process
    /// crash (kill -9) and is faster.
    #[arg(long, env = "DYNAMCP_SQLITE_SYNCHRONOUS", value_enum, default_value_t = SqliteSync::Full)]
    pub sqlite_synchronous: SqliteSync,

    /// Most connections the store keeps open.
    #[arg(long, env = "DYNAMCP_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Import the compiled-in default catalog (9,465 servers) when the catalog is empty.
    #[arg(long, env = "DYNAMCP_DEFAULT_CATALOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub default_catalog: bool,

    /// Directory of the local embedding model (sentence-transformers layout: config.json,
    /// tokenizer.json, model.safetensors). `scripts/setup.sh --service` fetches all-MiniLM-L6-v2
    /// there. Missing: search falls back to lexical only, with a warning. Default: the first that
    /// holds the model of `<data home>/dynamcp/models/all-MiniLM-L6-v2`, `./models/…`, and the
    /// checkout's `models/…` when this binary was built in one; else the first.
    #[arg(long, env = "DYNAMCP_MODEL_DIR", default_value_os_t = default_model_dir())]
    pub model_dir: PathBuf,

    /// Run without the embedding model even if it is present (lexical search only).
    #[arg(long, env = "DYNAMCP_NO_MODEL", default_value_t = false, action = clap::ArgAction::Set)]
    pub no_model: bool,

    /// Where vector search runs: `auto` uses pgvector's HNSW index on PostgreSQL and the
    /// in-process index on SQLite; `in-process` is the fastest on either.
    #[arg(long, env = "DYNAMCP_DENSE_BACKEND", value_enum, default_value_t = DenseBackend::Auto)]
    pub dense_backend: DenseBackend,

    /// Where embeddings come from: `local` (the model in `--model-dir`, no network) or `openai` (an
    /// OpenAI-compatible `/embeddings` endpoint; the design used text-embedding-3-small).
    #[arg(long, env = "DYNAMCP_EMBEDDINGS", value_enum, default_value_t = EmbeddingSource::Local)]
    pub embeddings: EmbeddingSource,

    /// The remote embedding model (with `--embeddings openai`).
    #[arg(long, env = "DYNAMCP_EMBEDDING_MODEL", default_value = "text-embedding-3-small")]
    pub embedding_model: String,

    /// The remote embeddings API, up to `/v1` (with `--embeddings openai`).
    #[arg(long, env = "DYNAMCP_EMBEDDING_BASE_URL", default_value = "https://api.openai.com/v1")]
    pub embedding_base_url: String,

    /// Key for the remote embeddings API: `DYNAMCP_EMBEDDING_API_KEY`, else `OPENAI_API_KEY`.
    #[arg(skip = secret_from_env("DYNAMCP_EMBEDDING_API_KEY").or_else(|| secret_from_env("OPENAI_API_KEY")))]
    pub embedding_api_key: Option<Secret>,

    /// The vault's master key, from `ENCRYPTION_KEY` only (32 bytes as base64 or hex); never a
    /// flag, which would show in process listings. Unset: a key file in the data dir.
    #[arg(skip = secret_from_env("ENCRYPTION_KEY"))]
    pub encryption_key: Option<Secret>,

    /// Older master keys that still open what they sealed (comma-separated), from
    /// `ENCRYPTION_KEY_PREVIOUS` only; with `ENCRYPTION_KEY`, for rotation.
    #[arg(skip = secret_from_env("ENCRYPTION_KEY_PREVIOUS"))]
    pub encryption_key_previous: Option<Secret>,
}

/// Which planner the master agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlannerChoice {
    Auto,
    Offline,
    Llm,
}

/// The language model the planner and agents use. Keys come from the environment only.
#[derive(Debug, Clone, Args)]
pub struct LlmArgs {
    /// `auto` picks Anthropic when `ANTHROPIC_API_KEY` is set, else OpenAI when `OPENAI_API_KEY` is,
    /// else none (the offline planner).
    #[arg(long, env = "DYNAMCP_LLM_PROVIDER", value_enum, default_value_t = Provider::Auto)]
    pub llm_provider: Provider,
    /// Model name (default: claude-sonnet-4-5 for Anthropic, gpt-4o-mini for OpenAI).
    #[arg(long, env = "DYNAMCP_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// API base URL: for OpenAI-compatible servers, up to `/v1` (e.g. a local Ollama's
    /// `http://127.0.0.1:11434/v1`).
    #[arg(long, env = "DYNAMCP_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// Seconds to wait for one model answer.
    #[arg(long, env = "DYNAMCP_LLM_TIMEOUT_SECS", default_value_t = 60)]
    pub llm_timeout_secs: u64,
    /// Retries after a 429, a 5xx, a timeout or a connection failure (with exponential backoff).
    #[arg(long, env = "DYNAMCP_LLM_MAX_RETRIES", default_value_t = 3)]
    pub llm_max_retries: u32,
    /// Most tool rounds the planner's model gets before the offline planner answers instead.
    #[arg(long, env = "DYNAMCP_PLANNER_MAX_ROUNDS", default_value_t = 8)]
    pub planner_max_rounds: usize,
    /// Seconds a planning turn may spend with the model before the offline planner answers
    /// instead (the reply says so). Kept to at most two thirds of the request timeout, so that the
    /// checks of the chosen servers and the answer fit in the same request.
    #[arg(long, env = "DYNAMCP_PLANNER_DEADLINE_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub planner_deadline_secs: u64,
    /// Who plans: `auto` (the model when one is configured, else offline), `offline` (the
    /// deterministic planner even with a model, which then only runs agents), or `llm`.
    #[arg(long, env = "DYNAMCP_PLANNER", value_enum, default_value_t = PlannerChoice::Auto)]
    pub planner: PlannerChoice,
    #[arg(skip = secret_from_env("ANTHROPIC_API_KEY"))]
    pub anthropic_api_key: Option<Secret>,
    #[arg(skip = secret_from_env("OPENAI_API_KEY"))]
    pub openai_api_key: Option<Secret>,
}

impl LlmArgs {
    pub fn settings(&self) -> LlmSettings {
        LlmSettings {
            provider: self.llm_provider,
            model: self.llm_model.clone().filter(|m| !m.trim().is_empty()),
            base_url: self.llm_base_url.clone().filter(|u| !u.trim().is_empty()),
            anthropic_key: self.anthropic_api_key.clone(),
            openai_key: self.openai_api_key.clone(),
            timeout: Duration::from_secs(self.llm_timeout_secs.max(1)),
            max_retries: self.llm_max_retries,
        }
    }

    /// No model at all (tests, and the offline default when no key is set).
    pub fn none() -> Self {
        Self {
            llm_provider: Provider::None,
            llm_model: None,
            llm_base_url: None,
            llm_timeout_secs: 60,
            llm_max_retries: 3,
            planner_max_rounds: 8,
            planner_deadline_secs: 20,
            planner: PlannerChoice::Auto,
            anthropic_api_key: None,
            openai_api_key: None,
        }
    }
}

/// How agents' MCP servers are launched and supervised.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Programs a catalog launch spec may run, comma-separated; `remote` allows remote
    /// (streamable HTTP) servers. Each is looked up once on dynamcp's PATH. No shell, ever.
    #[arg(long, env = "DYNAMCP_RUNTIMES", value_delimiter = ',', default_value = "npx,uvx,docker,remote")]
    pub runtimes: Vec<String>,
    /// Names of dynamcp's own environment variables every server also gets (TLS trust and proxy
    /// settings; never put credentials here). All else is built from nothing.
    #[arg(
        long,
        env = "DYNAMCP_SERVER_PASS_ENV",
        value_delimiter = ',',
        default_value = "SSL_CERT_FILE,SSL_CERT_DIR,NODE_EXTRA_CA_CERTS,REQUESTS_CA_BUNDLE,HTTP_PROXY,HTTPS_PROXY,NO_PROXY,http_proxy,https_proxy,no_proxy,TZ"
    )]
    pub server_pass_env: Vec<String>,
    /// Seconds a server may take to start the first time (its package is downloaded then).
    #[arg(long, env = "DYNAMCP_SERVER_FIRST_START_SECS", default_value_t = 300)]
    pub server_first_start_secs: u64,
    /// Seconds a server may take to start once its package is cached.
    #[arg(long, env = "DYNAMCP_SERVER_START_SECS", default_value_t = 30)]
    pub server_start_secs: u64,
    /// Seconds one tool call may take.
    #[arg(long, env = "DYNAMCP_TOOL_CALL_SECS", default_value_t = 60)]
    pub tool_call_secs: u64,
    /// Seconds an unused server keeps running before it is stopped.
    #[arg(long, env = "DYNAMCP_SERVER_IDLE_SECS", default_value_t = 300)]
    pub server_idle_secs: u64,
    /// Most MCP server processes running at once, across all agents.
    #[arg(long, env = "DYNAMCP_MAX_SERVERS", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_servers: u64,
    /// Most model rounds (answer, tool calls) in one agent run.
    #[arg(long, env = "DYNAMCP_RUN_MAX_ROUNDS", default_value_t = 10)]
    pub run_max_rounds: usize,
    /// Most tool definitions the model is offered per round of a run: the plan's tools first;
    /// an agent with more gets a tool search that offers the others on demand.
    #[arg(long, env = "DYNAMCP_RUN_MAX_TOOLS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=500))]
    pub run_max_tools: u64,
    /// Longest tool result the model gets, in tokens (about 3 bytes each); longer ones are cut
    /// with a notice.
    #[arg(long, env = "DYNAMCP_RUN_RESULT_MAX_TOKENS", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(500..=1_000_000))]
    pub run_result_max_tokens: u64,
    /// The package store: where npm and PyPI servers are installed, one folder per package and
    /// version, mounted read-only into each server's sandbox. Default: `<data dir>/runtime/packages`.
    #[arg(long, env = "DYNAMCP_PACKAGE_DIR")]
    pub package_dir: Option<PathBuf>,
    /// Where no sandbox can be created (no bubblewrap, or user namespaces disabled), run MCP
    /// servers without one for the single keyless user instead of refusing. Tenants with API
    /// keys never get unsandboxed servers. A warning is logged at every start.
    #[arg(long, env = "DYNAMCP_ALLOW_UNSANDBOXED", default_value_t = false)]
    pub allow_unsandboxed: bool,
    /// Remote MCP servers' hosts (as written in their URLs) that may be loopback or private
    /// addresses, comma-separated. Every other loopback, private, link-local or metadata
    /// address is refused, after DNS resolution too. Empty: none.
    #[arg(long, env = "DYNAMCP_REMOTE_ALLOW_HOSTS", value_delimiter = ',')]
    pub remote_allow_hosts: Vec<String>,
    /// The bubblewrap program every MCP server runs in: a name looked up on PATH, or an absolute
    /// path. Checked at start; the log says whether the sandbox works.
    #[arg(long, env = "DYNAMCP_SANDBOX_PROGRAM", default_value = "bwrap")]
    pub sandbox_program: String,
    /// Agent runs at once, across all tenants (and on PostgreSQL across every replica on the
    /// database); more answer 429.
    #[arg(long, env = "DYNAMCP_MAX_CONCURRENT_RUNS", default_value_t = 16)]
    pub max_concurrent_runs: usize,
    /// Seconds a whole agent run (or a tools request that starts servers) may take.
    #[arg(long, env = "DYNAMCP_RUN_TIMEOUT_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub run_timeout_secs: u64,
}

impl Default for RuntimeArgs {
    fn default() -> Self {
        Self {
            runtimes: ["npx", "uvx", "docker", "remote"].map(str::to_owned).to_vec(),
            server_pass_env: [
                "SSL_CERT_FILE",
                "SSL_CERT_DIR",
                "NODE_EXTRA_CA_CERTS",
                "REQUESTS_CA_BUNDLE",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "NO_PROXY",
                "http_proxy",
                "https_proxy",
                "no_proxy",
                "TZ",
            ]
            .map(str::to_owned)
            .to_vec(),
            server_first_start_secs: 300,
            server_start_secs: 30,
            tool_call_secs: 60,
            server_idle_secs: 300,
            max_servers: 16,
            run_max_rounds: 10,
            run_max_tools: 20,
            run_result_max_tokens: 25_000,
            package_dir: None,
            allow_unsandboxed: false,
            remote_allow_hosts: Vec::new(),
            sandbox_program: "bwrap".to_owned(),
            max_concurrent_runs: 16,
            run_timeout_secs: 900,
        }
    }
}

impl RuntimeArgs {
    /// The supervisor's settings; servers live under `<data dir>/runtime`.
    pub fn settings(&self, data_dir: &std::path::Path) -> crate::runtime::RuntimeSettings {
        crate::runtime::RuntimeSettings {
            runtimes: self.runtimes.clone(),
            pass_env: self.server_pass_env.clone(),
            first_start_timeout: Duration::from_secs(self.server_first_start_secs.max(1)),
            start_timeout: Duration::from_secs(self.server_start_secs.max(1)),
            call_timeout: Duration::from_secs(self.tool_call_secs.max(1)),
            idle: Duration::from_secs(self.server_idle_secs.max(1)),
            max_servers: usize::try_from(self.max_servers).unwrap_or(16),
            max_rounds: self.run_max_rounds.max(1),
            max_tools: usize::try_from(self.run_max_tools).unwrap_or(20),
            result_max_tokens: usize::try_from(self.run_result_max_tokens).unwrap_or(25_000),
            run_timeout: Duration::from_secs(self.run_timeout_secs.max(1)),
            max_runs: self.max_concurrent_runs.max(1),
            share_runs_as: None,
            root: absolute(&data_dir.join("runtime")),
            packages: absolute(
                &self.package_dir.clone().unwrap_or_else(|| data_dir.join("runtime/packages")),
            ),
            allow_unsandboxed: self.allow_unsandboxed,
            force_unsandboxed: false,
            remote_allow_hosts: self.remote_allow_hosts.clone(),
            sandbox_program: self.sandbox_program.clone(),
        }
    }
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A secret read from the environment (or `.env`), never from the command line.
pub fn secret_from_env(name: &str) -> Option<Secret> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).map(Secret::new)
}

impl StoreArgs {
    /// The database URL in effect: the configured one, or the default SQLite file.
    /// The store's own settings.
    pub fn settings(&self) -> StoreSettings {
        StoreSettings {
            url: self.effective_database_url(),
            data_dir: self.data_dir.clone(),
            sqlite_sync: self.sqlite_synchronous,
            max_connections: self.db_max_connections,
        }
    }

    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("dynamcp.db").display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbeddingSource {
    Local,
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `dynamcp mcp`.
#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Act as this key's tenant (when the service has keys): from `DYNAMCP_API_KEY` only, never a
    /// flag, so it stays out of process listings. Unset: the open tenant.
    #[arg(skip = secret_from_env("DYNAMCP_API_KEY"))]
    pub api_key: Option<Secret>,
}

/// `serve`'s settings that only its HTTP listener reads: `dynamcp mcp` (stdio) takes them too,
/// since it shares `serve`'s settings, but its `--help` does not list them.
const HTTP_ONLY: [&str; 11] = [
    "addr",
    "cors_origins",
    "allowed_hosts",
    "request_timeout_secs",
    "body_limit_bytes",
    "shutdown_grace_secs",
    "rate_limit_per_sec",
    "rate_limit_burst",
    "metrics_addr",
    "insecure_no_auth",
    "lease_heartbeat_secs",
];

impl Cli {
    /// The command line, with `mcp --help` listing only what `mcp` reads.
    pub fn command_line() -> clap::Command {
        <Self as clap::CommandFactory>::command().mut_subcommand("mcp", |mut mcp| {
            for id in HTTP_ONLY {
                mcp = mcp.mut_arg(id, |a| a.hide(true));
            }
            mcp
        })
    }

    /// Parses the process's arguments (exits with clap's message on an error or `--help`).
    pub fn parse_args() -> Self {
        let matches = Self::command_line().get_matches();
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// `dynamcp serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "DYNAMCP_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub llm: LlmArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Origins allowed by CORS, comma-separated; `*` allows any origin. Empty: no CORS headers.
    #[arg(long, env = "DYNAMCP_CORS_ORIGINS", value_delimiter = ',', default_value = "")]
    pub cors_origins: Vec<String>,

    /// Public host names the service answers to, comma-separated: `name` (any port) or
    /// `name:port`, e.g. `dynamcp.example.com`. Loopback names (`localhost`, `127.x.x.x`, `[::1]`)
    /// are always accepted. Any other `Host` header is refused (403), which stops DNS rebinding.
    /// Empty: on a loopback address, loopback names only; on another address with API keys, any
    /// host; open on another address (`--insecure-no-auth`), IP addresses only.
    #[arg(long, env = "DYNAMCP_ALLOWED_HOSTS", value_delimiter = ',', default_value = "",
        value_parser = crate::access::host::parse_allowed_host)]
    pub allowed_hosts: Vec<String>,

    /// Seconds a request may take before it is answered 408.
    #[arg(long, env = "DYNAMCP_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Largest request body in bytes; larger ones are answered 413.
    #[arg(long, env = "DYNAMCP_BODY_LIMIT_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Seconds to let in-flight requests finish after SIGINT/SIGTERM.
    #[arg(long, env = "DYNAMCP_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Log format.
    #[arg(long, env = "DYNAMCP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Requests per second each caller may make to `/api/` (a tenant, or a client IP when the
    /// service runs open); 0: unlimited. Over it: 429 with `Retry-After`.
    #[arg(long, env = "DYNAMCP_RATE_LIMIT_PER_SEC", default_value_t = 50)]
    pub rate_limit_per_sec: u32,
    /// Requests a caller may send at once before the per-second rate applies.
    #[arg(long, env = "DYNAMCP_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,
    /// Before asking for any credential, install and start each chosen server once here
    /// (sandboxed, with no credentials) and replace one that does not start by the step's next
    /// alternative. `false`: plans are not checked (planning then takes milliseconds).
    #[arg(long, env = "DYNAMCP_VERIFY_SERVERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub verify_servers: bool,
    /// Seconds a chat turn waits for those checks (at most half the request timeout); a check
    /// still installing goes on in the background and the next turn sees its result.
    #[arg(long, env = "DYNAMCP_VERIFY_BUDGET_SECS", default_value_t = 15)]
    pub verify_budget_secs: u64,
    /// Chat turns planned at once (on PostgreSQL across every replica on the database); more wait
    /// (within the request timeout).
    #[arg(long, env = "DYNAMCP_MAX_CONCURRENT_PLANS", default_value_t = 64)]
    pub max_concurrent_plans: usize,
    /// Seconds between renewals of the service's lease on the store (which reload the vault's key
    /// files too); the lease lapses after three missed renewals.
    #[arg(long, env = "DYNAMCP_LEASE_HEARTBEAT_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_heartbeat_secs: u64,

    /// Seconds between checks of what other processes on the database changed: a `dynamcp catalog
    /// import` (or another replica's) becomes searchable here, and the servers of agents deleted
    /// through another replica stop here. On PostgreSQL changes are also announced and heard at
    /// once; the checks catch what an announcement missed. 0: never (a restart loads the catalog).
    #[arg(long, env = "DYNAMCP_SYNC_SECS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub sync_secs: u64,

    /// Allow serving on a non-loopback address without any API key. Without keys every caller is
    /// the same open tenant: only for a trusted network.
    #[arg(long, env = "DYNAMCP_INSECURE_NO_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub insecure_no_auth: bool,

    /// Serve Prometheus metrics at `http://<this address>/metrics`, apart from the API (e.g.
    /// `127.0.0.1:9464`). Unset: no metrics listener.
    #[arg(long, env = "DYNAMCP_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// The address users reach the service at (e.g. `https://dynamcp.example.com`), for the links
    /// MCP tools answer with (the playground, the credential route). Default: `http://<addr>`.
    #[arg(long, env = "DYNAMCP_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl ServeArgs {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The LLM planner's deadline: as configured, at most two thirds of the request timeout.
    pub fn planner_deadline(&self) -> Duration {
        let most = Duration::from_millis(self.request_timeout_secs.saturating_mul(2000) / 3);
        Duration::from_secs(self.llm.planner_deadline_secs.max(1)).min(most)
    }

    /// How plans are verified: the budget stays within half the request timeout.
    pub fn verify(&self) -> crate::planner::VerifySettings {
        crate::planner::VerifySettings {
            enabled: self.verify_servers,
            budget: Duration::from_secs(self.verify_budget_secs.min(self.request_timeout_secs / 2)),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Where users reach the service, without a trailing slash.
    pub fn public_url(&self) -> String {
        match self.public_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.addr),
        }
    }

    /// Settings for tests and embedding: defaults everywhere, a given data dir, an ephemeral port,
    /// no automatic import of the default catalog and no embedding model (tests that want them
    /// turn them on).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: StoreArgs {
                data_dir: data_dir.into(),
                database_url: None,
                sqlite_synchronous: SqliteSync::Full,
                db_max_connections: 16,
                default_catalog: false,
                model_dir: PathBuf::from("./models/all-MiniLM-L6-v2"),
                no_model: true,
                dense_backend: DenseBackend::Auto,
                embeddings: EmbeddingSource::Local,
                embedding_model: "text-embedding-3-small".to_owned(),
                embedding_base_url: "https://api.openai.com/v1".to_owned(),
                embedding_api_key: None,
                encryption_key: None,
                encryption_key_previous: None,
            },
            llm: LlmArgs::none(),
            runtime: RuntimeArgs::default(),
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            request_timeout_secs: 30,
            body_limit_bytes: 2 * 1024 * 1024,
            shutdown_grace_secs: 10,
            log_format: LogFormat::Text,
            metrics_addr: None,
            public_url: None,
            insecure_no_auth: false,
            rate_limit_per_sec: 0,
            rate_limit_burst: 100,
            max_concurrent_plans: 64,
            verify_servers: false,
            verify_budget_secs: 15,
            lease_heartbeat_secs: 5,
            sync_secs: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_contract() {
        let cli = Cli::try_parse_from(["dynamcp", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.addr.to_string(), "127.0.0.1:8000");
        assert!(args.store.default_catalog);
        assert_eq!(args.store.data_dir, default_data_dir());
        let db = args.store.data_dir.join("dynamcp.db");
        assert_eq!(args.store.effective_database_url(), format!("sqlite://{}", db.display()));
    }

    #[test]
    fn mcp_help_lists_only_what_mcp_reads() {
        let mut cli = Cli::command_line();
        let mcp = cli.find_subcommand_mut("mcp").unwrap().render_long_help().to_string();
        let serve = cli.find_subcommand_mut("serve").unwrap().render_long_help().to_string();
        for flag in ["--addr", "--cors-origins", "--rate-limit-per-sec", "--metrics-addr"] {
            assert!(serve.contains(flag), "{flag}");
            assert!(!mcp.contains(flag), "{flag} in mcp --help");
        }
        assert!(mcp.contains("--data-dir") && mcp.contains("--planner"), "{mcp}");
    }

    #[test]
    fn postgres_url_is_taken_verbatim() {
        let cli = Cli::try_parse_from(["dynamcp", "serve", "--database-url", "postgres://u@h/db"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.store.effective_database_url(), "postgres://u@h/db");
    }

    #[test]
    fn allowed_hosts_are_checked_at_parse_time() {
        let cli = Cli::try_parse_from([
            "dynamcp",
            "serve",
            "--allowed-hosts",
            "Dynamcp.Example.com,other.example:8443",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.allowed_hosts, ["dynamcp.example.com", "other.example:8443"]);
        let cli = Cli::try_parse_from(["dynamcp", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert!(args.allowed_hosts.iter().all(String::is_empty), "none by default");
        assert!(
            Cli::try_parse_from(["dynamcp", "serve", "--allowed-hosts", "https://dynamcp.example.com"])
                .is_err()
        );
    }

    #[test]
    fn timeout_of_zero_is_rejected_at_parse_time() {
        let err = Cli::try_parse_from(["dynamcp", "serve", "--request-timeout-secs", "0"]);
        assert!(err.is_err());
    }

    #[test]
    fn env_example_lists_every_variable() {
        use clap::CommandFactory;
        let example = include_str!("../.env.example");
        let mut missing = Vec::new();
        let mut stack = vec![Cli::command()];
        while let Some(cmd) = stack.pop() {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env().and_then(|e| e.to_str())
                    && !example.contains(&format!("{env}="))
                {
                    missing.push(env.to_owned());
                }
            }
            stack.extend(cmd.get_subcommands().cloned());
        }
        // Secrets read from the environment only (not clap arguments).
        for env in [
            "ENCRYPTION_KEY",
            "ENCRYPTION_KEY_PREVIOUS",
            "NEW_ENCRYPTION_KEY",
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "DYNAMCP_EMBEDDING_API_KEY",
            "DYNAMCP_API_KEY",
        ] {
            if !example.contains(&format!("{env}=")) {
                missing.push(env.to_owned());
            }
        }
        assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    }
}
