//! `POST /api/chat`: one turn with the master agent, in the design's exact request and response
//! shapes.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use crate::planner::{
    ChatOutcome, ChatStatus, ChatTurn, FilledSetting, InlineFile, OptionalSetting, RequiredCredential,
    RequiredFile,
};
use crate::state::AppState;
use crate::vault::Secret;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat))
}

/// The design's ChatRequest. Unknown fields are refused: nothing else (a command, a config) can
/// ride along.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// What the user wants, in plain language.
    #[schema(example = "Check my Gmail for invoices and put them in a Google Sheet")]
    pub message: String,
    /// Continue this session; omitted, a new one is opened.
    pub session_id: Option<Uuid>,
    /// Credential values, keyed by the `mcp_server` string from `required_credentials`, then by key.
    #[schema(value_type = Option<std::collections::HashMap<String, std::collections::HashMap<String, String>>>)]
    pub credentials: Option<BTreeMap<String, BTreeMap<String, Secret>>>,
    /// Files sent inline, base64-encoded.
    pub files: Option<Vec<ChatFile>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatFile {
    pub name: String,
    #[schema(value_type = String)]
    pub content_base64: Secret,
}

/// The design's ChatResponse.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    pub reply: String,
    pub session_id: Uuid,
    pub required_credentials: Vec<RequiredCredential>,
    pub required_files: Vec<RequiredFile>,
    pub status: ChatStatus,
    pub agent_created: bool,
    pub agent_id: Option<Uuid>,
    /// Not in the design: settings the chosen servers declare that are filled in with their
    /// defaults (never asked). Left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub defaults: Vec<FilledSetting>,
    /// Not in the design: settings the workflow does not need; send them to override. Left
    /// out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<OptionalSetting>,
}

impl From<ChatOutcome> for ChatResponse {
    fn from(o: ChatOutcome) -> Self {
        Self {
            reply: o.reply,
            session_id: o.session_id,
            required_credentials: o.required_credentials,
            required_files: o.required_files,
            status: o.status,
            agent_created: o.agent_id.is_some(),
            agent_id: o.agent_id,
            defaults: o.defaults,
            optional: o.optional,
        }
    }
}

/// One turn with the master agent.
#[utoipa::path(post, path = "/api/chat", tag = "chat", request_body = ChatRequest, responses(
    (status = 200, body = ChatResponse),
    (status = 400, description = "Malformed JSON", body = ErrorBody),
    (status = 404, description = "Unknown session_id", body = ErrorBody),
    (status = 413, description = "Body over the limit", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "Wrong types, empty message, or unexpected credentials", body = ErrorBody),
))]
async fn chat(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Json(request): Json<ChatRequest>,
) -> Result<axum::Json<ChatResponse>, ApiError> {
    // Bounded planning: a burst of turns queues here instead of piling onto the model and store.
    let _planning = state.planning.acquire().await.map_err(|e| ApiError::Internal(e.into()))?;
    let turn = ChatTurn {
        tenant,
        message: request.message,
        session_id: request.session_id,
        credentials: request.credentials.unwrap_or_default(),
        files: request
            .files
            .unwrap_or_default()
            .into_iter()
            .map(|f| InlineFile { name: f.name, content_base64: f.content_base64 })
            .collect(),
    };
    let outcome = state.master.chat(turn).await?;
    Ok(axum::Json(outcome.into()))
}
