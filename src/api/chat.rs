//! `POST /api/chat`: one turn with the master agent, in the design's exact request and response
//! shapes. With `Accept: text/event-stream` the same turn streams its progress as Server-Sent
//! Events (`progress`), then the design's answer (`result`) or the error body (`error`).

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use crate::ops;
use crate::planner::progress::{self, PlanEvent};
use crate::planner::{
    ChatOutcome, ChatStatus, ChatTurn, FilledSetting, InlineFile, OptionalSetting, RequiredCredential,
    RequiredFile, SignInLink,
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
    /// Not in the design: the created agent's hosted servers that sign their users in through
    /// the browser, each with the link to open. Left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sign_in: Vec<SignInLink>,
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
            sign_in: o.sign_in,
        }
    }
}

/// One turn with the master agent. With `Accept: text/event-stream`, the turn streams `progress`
/// events (planning began, each model round and planner tool call, the offline fallback, the
/// checks of the chosen servers), then one `result` event whose data is this route's JSON answer,
/// or one `error` event whose data is the error body with its `status`. A streamed turn finishes
/// and is saved even if the client goes away.
#[utoipa::path(post, path = "/api/chat", tag = "chat", request_body = ChatRequest, responses(
    (status = 200, description = "The answer, or with `Accept: text/event-stream` its progress then the answer", body = ChatResponse),
    (status = 400, description = "Malformed JSON", body = ErrorBody),
    (status = 404, description = "Unknown session_id", body = ErrorBody),
    (status = 413, description = "Body over the limit", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "Wrong types, empty message, or unexpected credentials", body = ErrorBody),
))]
async fn chat(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    headers: HeaderMap,
    Json(request): Json<ChatRequest>,
) -> Result<Response, ApiError> {
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
    if !wants_events(&headers) {
        let outcome = ops::chat(&state, turn).await?;
        return Ok(axum::Json(ChatResponse::from(outcome)).into_response());
    }
    let (sink, events) = tokio::sync::mpsc::unbounded_channel::<PlanEvent>();
    let (done_tx, done) = tokio::sync::oneshot::channel::<Event>();
    tokio::spawn(async move {
        let outcome = progress::reporting_to(sink, ops::chat(&state, turn)).await;
        let _ = done_tx.send(final_event(outcome).await);
    });
    let progress = futures::stream::unfold(events, |mut events| async move {
        let event = events.recv().await?;
        let sse = Event::default().event("progress").json_data(&event).unwrap_or_else(|_| Event::default());
        Some((Ok::<_, Infallible>(sse), events))
    });
    // The channel closes when the turn ends; then its one final event.
    let last = futures::stream::once(async move {
        Ok::<_, Infallible>(done.await.unwrap_or_else(|_| Event::default().event("error").data("{}")))
    });
    use futures::StreamExt;
    Ok(Sse::new(progress.chain(last)).keep_alive(KeepAlive::default()).into_response())
}

fn wants_events(headers: &HeaderMap) -> bool {
    super::extract::accept(headers).contains("text/event-stream")
}

/// The turn's end as one event: the design's answer, or the error body as the JSON route sends
/// it, with its HTTP status.
async fn final_event(outcome: Result<ChatOutcome, ops::OpError>) -> Event {
    match outcome {
        Ok(outcome) => Event::default()
            .event("result")
            .json_data(ChatResponse::from(outcome))
            .unwrap_or_else(|_| Event::default().event("error")),
        Err(e) => {
            let response = ApiError::from(e).into_response();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
            let mut data: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(o) = data.as_object_mut() {
                o.insert("status".to_owned(), status.into());
            }
            Event::default()
                .event("error")
                .json_data(data)
                .unwrap_or_else(|_| Event::default().event("error"))
        }
    }
}
