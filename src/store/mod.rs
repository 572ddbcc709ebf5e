//! Persistence: sessions, conversations, agents, the catalog cache, encrypted credentials and the
//! running services' leases.
//!
//! One [`Store`] trait with two real backends through sqlx: SQLite (the embedded default) and
//! PostgreSQL 15 with pgvector. Both share their SQL (see `sql.rs`); each owns its migrations in
//! `migrations/<backend>/`, applied when the store opens. This module knows nothing of HTTP and
//! never sees a credential in clear: the vault hands it ciphertext only.

mod catalog;
pub(crate) mod credentials;
mod leases;
mod postgres;
mod sql;
mod sqlite;
pub mod vectors;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use catalog::{
    CATALOG_VERSION_FACT, CatalogRow, CatalogStore, InstructionRow, UpsertCounts, VerificationRow,
};
pub use credentials::{CredentialStore, Rewrapped, SealedCredential, SecretKind};
pub use leases::{AGENT_DELETIONS_FACT, CHANGES_CHANNEL, Changes, Lease, LeaseStore, Slot};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use vectors::{Scan, Synced, VectorSearch, VectorSet};

/// SQLite's `synchronous` level: `Full` also survives power loss, `Normal` survives a process
/// crash and is faster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    Full,
    Normal,
}

/// Where the store lives and how it connects; built from the command line by `config`.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// A `sqlite://` or `postgres://` URL.
    pub url: String,
    /// Created (private to dynamcp's user) for a SQLite database.
    pub data_dir: std::path::PathBuf,
    pub sqlite_sync: SqliteSync,
    pub max_connections: u32,
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL scheme (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("could not prepare the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not connect to the {backend} database: {source}")]
    Connect {
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not apply {backend} migrations: {source}")]
    Migrate {
        backend: Backend,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A row that this write refers to (a session, an agent) no longer exists.
    #[error("a referenced {0} does not exist")]
    MissingParent(&'static str),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Who said a conversation turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

impl FromStr for Role {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            "system" => Ok(Role::System),
            other => Err(StoreError::Corrupt(format!("unknown role {other:?}"))),
        }
    }
}

/// Names of collected credentials, per server: `{"<server>": ["KEY", ...]}`. Never values.
pub type CredentialNames = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: Uuid,
    /// The tenant it belongs to (`""` when the service runs open, without API keys).
    pub tenant: String,
    pub status: String,
    pub context: Value,
    pub required_credentials: Value,
    pub collected_credentials: CredentialNames,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Session {
    /// A new, empty session of `tenant` (not yet stored).
    pub fn new(tenant: &str) -> Self {
        let now = sql::now();
        Session {
            id: Uuid::new_v4(),
            tenant: tenant.to_owned(),
            status: "active".to_owned(),
            context: Value::Object(Default::default()),
            required_credentials: Value::Array(Vec::new()),
            collected_credentials: Default::default(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// The planner-owned state of a session, written as one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    pub status: String,
    pub context: Value,
    pub required_credentials: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub session_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub role: Role,
    pub message: String,
    pub timestamp: DateTime<Utc>,
    pub metadata: Value,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub agent_id: Option<Uuid>,
    pub role: Role,
    pub message: String,
    pub metadata: Value,
}

impl NewMessage {
    pub fn new(role: Role, message: impl Into<String>) -> Self {
        Self { agent_id: None, role, message: message.into(), metadata: Value::Object(Default::default()) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: Uuid,
    /// Its session's tenant.
    pub tenant: String,
    pub session_id: Uuid,
    pub name: String,
    pub mcp_config: Value,
    pub workflow: String,
    pub model: Option<String>,
    pub status: String,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewAgent {
    /// Must be the session's tenant.
    pub tenant: String,
    pub session_id: Uuid,
    pub name: String,
    pub mcp_config: Value,
    pub workflow: String,
    pub model: Option<String>,
    pub metadata: Value,
}

impl Agent {
    /// The agent `new` describes, with a fresh id (not yet stored).
    pub fn new(new: &NewAgent) -> Self {
        let now = sql::now();
        Agent {
            id: Uuid::new_v4(),
            tenant: new.tenant.clone(),
            session_id: new.session_id,
            name: new.name.clone(),
            mcp_config: new.mcp_config.clone(),
            workflow: new.workflow.clone(),
            model: new.model.clone(),
            status: "created".to_owned(),
            metadata: new.metadata.clone(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// Everything one chat turn writes, committed in one transaction by [`Store::save_turn`].
#[derive(Debug)]
pub struct TurnWrite<'a> {
    /// A session the turn opened: inserted first. `None`: `session_id` must exist already.
    pub new_session: Option<&'a Session>,
    pub session_id: Uuid,
    /// An agent the turn created (see [`Agent::new`]), inserted as given.
    pub agent: Option<&'a Agent>,
    pub state: &'a SessionState,
    pub messages: &'a [NewMessage],
}

/// An API key's record. The key itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A window into a list, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u64,
}

/// The persistence interface. Every method is one transaction: it either happens whole or not at
/// all, and once it returns `Ok` the write is durable.
#[async_trait]
pub trait Store: CatalogStore + CredentialStore + LeaseStore + Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// A cheap round trip that proves the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn create_session(&self, tenant: &str) -> Result<Session, StoreError>;
    async fn get_session(&self, id: Uuid) -> Result<Option<Session>, StoreError>;
    /// Deletes the session with its conversation, agents and credentials; `false` if absent.
    async fn delete_session(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Appends turns to a session's conversation, all or none, in order.
    async fn append_messages(
        &self,
        session_id: Uuid,
        messages: &[NewMessage],
    ) -> Result<Vec<Message>, StoreError>;
    /// The whole conversation of a session, oldest first.
    async fn messages(&self, session_id: Uuid) -> Result<Vec<Message>, StoreError>;

    async fn create_agent(&self, agent: &NewAgent) -> Result<Agent, StoreError>;
    /// A chat turn's writes in one transaction (one durable commit): the new session, the new
    /// agent, the session's state, then the messages. `false` (nothing written) when an existing
    /// session is gone.
    async fn save_turn(&self, turn: &TurnWrite<'_>) -> Result<bool, StoreError>;
    async fn get_agent(&self, id: Uuid) -> Result<Option<Agent>, StoreError>;
    /// A page of agents, newest first, and the total count.
    /// A tenant's agents, newest first, and how many it has.
    async fn list_agents(&self, tenant: &str, page: Page) -> Result<(Vec<Agent>, u64), StoreError>;
    async fn delete_agent(&self, id: Uuid) -> Result<bool, StoreError>;
    /// Replaces an agent's metadata (the runtime records the package versions it pinned there);
    /// `false` when the agent is gone.
    async fn set_agent_metadata(&self, id: Uuid, metadata: &Value) -> Result<bool, StoreError>;

    /// Closes every connection; later calls fail.
    /// Stores an API key's hash for `tenant`.
    async fn create_api_key(&self, tenant: &str, key_hash: &str, label: &str) -> Result<ApiKey, StoreError>;
    /// The tenant of an active (unrevoked) key, by its hash.
    async fn api_key_tenant(&self, key_hash: &str) -> Result<Option<String>, StoreError>;
    /// How many keys are active: none means the service runs open.
    async fn active_api_keys(&self) -> Result<u64, StoreError>;
    /// How many keys were ever created, revoked ones included (revoking keeps the row): once this
    /// is not zero, having no active key locks the service instead of opening it.
    async fn created_api_keys(&self) -> Result<u64, StoreError>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// Revokes a key; `false` if there is no such active key.
    async fn revoke_api_key(&self, id: Uuid) -> Result<bool, StoreError>;

    async fn close(&self);
}

/// Sets `path`'s mode when it exists; a folder or file someone else owns is only warned about.
fn restrict(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if !path.exists() {
        return;
    }
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        tracing::warn!(path = %path.display(), error = %e, "could not make it private to dynamcp's user");
    }
}

/// Opens the store the configuration names, creating the data dir and applying migrations.
pub async fn open(args: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    let url = &args.url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url, args.max_connections).await?))
    } else if url.starts_with("sqlite:") {
        let dir_err = |source| StoreError::DataDir { path: args.data_dir.display().to_string(), source };
        std::fs::create_dir_all(&args.data_dir).map_err(dir_err)?;
        let store = SqliteStore::connect(url, args.sqlite_sync, args.max_connections).await?;
        // Credentials, sessions and the vault key live here: only dynamcp's own user may look.
        restrict(&args.data_dir, 0o700);
        for name in ["dynamcp.db", "dynamcp.db-wal", "dynamcp.db-shm"] {
            restrict(&args.data_dir.join(name), 0o600);
        }
        Ok(Arc::new(store))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}
