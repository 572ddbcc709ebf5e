//! `/api/sessions`: create, read (history and credential names, never values), delete.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Path;
use crate::ops;
use crate::state::AppState;
use crate::store::{Message, Role, Session};
use crate::vault::SecretBytes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(upload_files))
}

/// The multipart form of `POST /api/sessions/{id}/files` (for the OpenAPI document).
#[derive(ToSchema)]
#[allow(dead_code, reason = "documents the form; the handler reads it part by part")]
pub struct FileUpload {
    /// One part per file, named by its `file_key` (or `<mcp_server>/<file_key>`).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// Uploads files the session's plan asks for in `required_files` (e.g. a Google service-account
/// JSON). Each part is named by its `file_key`, or `<mcp_server>/<file_key>`. All parts are
/// stored encrypted, or none; the answer is the chat's, with what is still missing.
#[utoipa::path(post, path = "/api/sessions/{id}/files", tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id")),
    request_body(content = FileUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = super::chat::ChatResponse),
        (status = 400, description = "Not a multipart form, or a malformed one", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 422, description = "A part the plan does not ask for, or an empty one", body = ErrorBody),
    ))]
async fn upload_files(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
    form: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<axum::Json<super::chat::ChatResponse>, ApiError> {
    let mut form = form.map_err(|e| {
        ApiError::InvalidForm(format!("expected a multipart/form-data body: {}", e.body_text()))
    })?;
    let mut files = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(ApiError::PayloadTooLarge),
            Err(e) => {
                return Err(ApiError::InvalidForm(format!("malformed multipart body: {}", e.body_text())));
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name.is_empty() {
            return Err(ApiError::invalid("every part needs a name: the file_key it holds".to_owned()));
        }
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(ApiError::PayloadTooLarge),
            Err(e) => {
                return Err(ApiError::InvalidForm(format!("malformed multipart body: {}", e.body_text())));
            }
        };
        files.push((name, SecretBytes::new(bytes.to_vec())));
    }
    let outcome = ops::add_files(&state, &tenant, id, files).await?;
    Ok(axum::Json(outcome.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    pub id: Uuid,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// A session as clients see it. Credentials appear by name only.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The planner's working state (needs, chosen servers, workflow).
    #[schema(value_type = Object)]
    pub context: Value,
    /// What the session is still waiting for.
    #[schema(value_type = Vec<Object>)]
    pub required_credentials: Value,
    /// Names of the credentials collected so far, per server. Never their values.
    pub collected_credentials: BTreeMap<String, Vec<String>>,
    /// The conversation, oldest first.
    pub messages: Vec<MessageView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    pub role: Role,
    pub message: String,
    pub timestamp: DateTime<Utc>,
    pub agent_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            id: m.id,
            role: m.role,
            message: m.message,
            timestamp: m.timestamp,
            agent_id: m.agent_id,
            metadata: m.metadata,
        }
    }
}

impl SessionView {
    fn new(s: Session, messages: Vec<Message>) -> Self {
        Self {
            id: s.id,
            status: s.status,
            created_at: s.created_at,
            updated_at: s.updated_at,
            context: s.context,
            required_credentials: s.required_credentials,
            collected_credentials: s.collected_credentials,
            messages: messages.into_iter().map(Into::into).collect(),
        }
    }
}

/// Opens a new session with the master agent. 200, as the design answers (its clients and tests
/// check for 200, not 201).
#[utoipa::path(post, path = "/api/sessions/create", tag = "sessions",
    responses((status = 200, description = "Session created", body = SessionCreated)))]
async fn create_session(
    State(state): State<AppState>,
    Caller(tenant): Caller,
) -> Result<axum::Json<SessionCreated>, ApiError> {
    let s = ops::create_session(&state, &tenant).await?;
    Ok(axum::Json(SessionCreated { id: s.id, status: s.status, created_at: s.created_at }))
}

/// A session's status, conversation and the names of its collected credentials.
#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 200, body = SessionView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ))]
async fn get_session(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let (session, messages) = ops::session(&state, &tenant, id).await?;
    Ok(axum::Json(SessionView::new(session, messages)))
}

/// Deletes a session with its conversation, agents and credentials.
#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ))]
async fn delete_session(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    ops::delete_session(&state, &tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
