//! The master agent: turns a chat turn into a reply, the credentials still missing, and, when
//! nothing is missing, a created agent.
//!
//! Owns the conversation flow (which session, which turn, what status); it asks `store` to
//! persist and never knows HTTP. Planning itself (catalog search, credential requirements, agent
//! creation) is not built yet: until it is, a turn is recorded and answered honestly, and no plan,
//! credential or file is accepted.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::store::{NewMessage, Role, Store, StoreError};
use crate::vault::Secret;

/// What the user sent in one turn.
#[derive(Debug, Default)]
pub struct ChatTurn {
    pub message: String,
    pub session_id: Option<Uuid>,
    /// `{"<mcp_server>": {"KEY": value}}`.
    pub credentials: BTreeMap<String, BTreeMap<String, Secret>>,
    pub files: Vec<InlineFile>,
}

/// A file sent inline with a turn (e.g. a service-account JSON), base64-encoded.
#[derive(Debug)]
pub struct InlineFile {
    pub name: String,
    pub content_base64: Secret,
}

/// Where the session stands after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    /// Something is still needed from the user before an agent can be created.
    PendingCredentials,
    /// Every required credential is present.
    Success,
}

impl ChatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatStatus::PendingCredentials => "pending_credentials",
            ChatStatus::Success => "success",
        }
    }
}

/// One credential the user still has to provide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RequiredCredential {
    /// The server it is for; send the value back keyed by this exact string.
    pub mcp_server: String,
    /// The environment variable the server reads.
    pub credential_key: String,
    pub description: String,
    /// Steps to obtain it: where to create it, which scopes, what format.
    pub instructions: String,
}

/// One file the user still has to provide (e.g. a Google service-account JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RequiredFile {
    pub mcp_server: String,
    /// The environment variable that will hold the file's path.
    pub file_key: String,
    pub description: String,
    pub instructions: String,
}

/// The master agent's answer to a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatOutcome {
    pub reply: String,
    pub session_id: Uuid,
    pub required_credentials: Vec<RequiredCredential>,
    pub required_files: Vec<RequiredFile>,
    pub status: ChatStatus,
    pub agent_id: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error("`message` must not be empty")]
    EmptyMessage,
    #[error("session {0} not found")]
    SessionNotFound(Uuid),
    #[error("this session expects no credentials yet, but some were sent for `{server}`; nothing was stored")]
    UnexpectedCredentials { server: String },
    #[error("this session expects no files yet; nothing was stored")]
    UnexpectedFiles,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PlannerError {
    /// Stable machine-readable code for the client-facing variants.
    pub fn code(&self) -> &'static str {
        match self {
            PlannerError::EmptyMessage => "empty_message",
            PlannerError::SessionNotFound(_) => "session_not_found",
            PlannerError::UnexpectedCredentials { .. } => "unexpected_credentials",
            PlannerError::UnexpectedFiles => "unexpected_files",
            PlannerError::Store(_) => "internal_error",
        }
    }
}

/// The reply while planning is not available. Honest: no plan is invented.
pub const PLANNING_UNAVAILABLE: &str = "I have recorded your request. Planning — choosing MCP \
servers from the catalog and working out the credentials they need — is not available in this \
version of dynamcp yet, so no agent was created.";

/// The master agent.
pub struct MasterAgent {
    store: Arc<dyn Store>,
}

impl MasterAgent {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Handles one turn: validates it, resolves or opens the session, and records the turn and
    /// the reply together.
    #[tracing::instrument(skip_all, fields(session_id = ?turn.session_id))]
    pub async fn chat(&self, turn: ChatTurn) -> Result<ChatOutcome, PlannerError> {
        if turn.message.trim().is_empty() {
            return Err(PlannerError::EmptyMessage);
        }
        // Validate everything before any write, so a rejected turn leaves no trace.
        if let Some(server) = turn.credentials.keys().next() {
            return Err(PlannerError::UnexpectedCredentials { server: server.clone() });
        }
        if !turn.files.is_empty() {
            return Err(PlannerError::UnexpectedFiles);
        }
        let session = match turn.session_id {
            Some(id) => self.store.get_session(id).await?.ok_or(PlannerError::SessionNotFound(id))?,
            None => self.store.create_session().await?,
        };
        let outcome = ChatOutcome {
            reply: PLANNING_UNAVAILABLE.to_owned(),
            session_id: session.id,
            required_credentials: Vec::new(),
            required_files: Vec::new(),
            status: ChatStatus::PendingCredentials,
            agent_id: None,
        };
        let mut reply = NewMessage::new(Role::Assistant, &outcome.reply);
        reply.metadata = serde_json::json!({ "status": outcome.status.as_str() });
        self.store
            .append_messages(session.id, &[NewMessage::new(Role::User, turn.message), reply])
            .await
            .map_err(|e| match e {
                // Deleted between the lookup and the write.
                StoreError::MissingParent(_) => PlannerError::SessionNotFound(session.id),
                other => other.into(),
            })?;
        Ok(outcome)
    }
}
