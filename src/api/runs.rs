//! Running agents: `POST /api/agents/{id}/run` (Server-Sent Events, or one JSON answer),
//! `GET /api/agents/{id}/tools` and `POST /api/agents/{id}/tools/call`. These routes may start
//! MCP servers, so they get the run timeout instead of the request timeout.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path};
use crate::ops;
use crate::runtime::run::FinishedRun;
use crate::runtime::{RunEvent, ServerTools};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_agent))
        .routes(routes!(agent_tools))
        .routes(routes!(approve_tools))
        .routes(routes!(allow_tool))
        .routes(routes!(call_tool))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// What the agent should do now.
    #[schema(example = "What time is it in Tokyo?")]
    pub input: String,
}

/// Runs the agent on `input`: starts its servers, lets the model call their tools, and streams
/// `server_starting`, `server_ready`, `llm_message`, `tool_call`, `tool_result`, `error` and
/// finally `done` as Server-Sent Events. With `Accept: application/json` it answers once, at the
/// end. Closing the connection cancels the run. The run is stored in the agent's session.
#[utoipa::path(post, path = "/api/agents/{id}/run", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id")),
    request_body = RunRequest,
    responses(
        (status = 200, description = "`text/event-stream` of run events, or the finished run as JSON", body = FinishedRun),
        (status = 400, description = "Bad id or body", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 401, description = "An API key is needed", body = ErrorBody),
        (status = 409, description = "No language model is configured", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Empty input", body = ErrorBody),
    ))]
async fn run_agent(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<RunRequest>,
) -> Result<Response, ApiError> {
    let run = ops::start_run(&state, &tenant, id, &body.input).await?;
    if wants_json(&headers) {
        let run_id = run.run_id;
        let finished = run
            .finish(|_| {})
            .await
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("run {run_id} ended without a done event")))?;
        return Ok(axum::Json(finished).into_response());
    }
    let stream = futures::stream::unfold(Some(run.events), |receiver| async move {
        let mut receiver = receiver?;
        let event = receiver.recv().await?;
        let sse = Event::default().event(event.name()).json_data(&event).unwrap_or_else(|_| Event::default());
        // After `done` the stream ends, so the client sees the response complete.
        let next = (!matches!(event, RunEvent::Done { .. })).then_some(receiver);
        Some((Ok::<_, Infallible>(sse), next))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

fn wants_json(headers: &HeaderMap) -> bool {
    let accept = super::extract::accept(headers);
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolsView {
    pub agent_id: Uuid,
    pub servers: Vec<ServerTools>,
}

/// The live tools of each of the agent's servers (as the servers list them, with input schemas),
/// starting the servers as needed. A server that cannot start is listed with its error.
#[utoipa::path(get, path = "/api/agents/{id}/tools", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id")),
    responses(
        (status = 200, body = ToolsView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ))]
async fn agent_tools(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<ToolsView>, ApiError> {
    let servers = ops::tools(&state, &tenant, id).await?;
    Ok(axum::Json(ToolsView { agent_id: id, servers }))
}

/// Approves the tool definitions the agent's servers show now. A server's first tool list is
/// pinned for the agent as it is; when a later start shows changed or new definitions (a server
/// can change what its tools say or do after it was chosen), those tools are held: listed under
/// `held`, not offered to the model, refused when called (409), until the owner approves them
/// here.
#[utoipa::path(post, path = "/api/agents/{id}/tools/approve", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The servers with their tools, nothing held", body = ToolsView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ))]
async fn approve_tools(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<ToolsView>, ApiError> {
    let servers = ops::approve_tools(&state, &tenant, id).await?;
    Ok(axum::Json(ToolsView { agent_id: id, servers }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowToolRequest {
    /// One of the agent's server ids (the keys of its `mcpServers`).
    #[schema(example = "filesystem-mcp-server")]
    pub server: String,
    #[schema(example = "delete_file")]
    pub tool: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AllowedTools {
    pub agent_id: Uuid,
    pub server: String,
    /// Every destructive tool of the server this agent's runs may call.
    pub allowed: Vec<String>,
}

/// Allows one tool its server marks destructive (`destructiveHint: true`) in this agent's runs.
/// Until then a run never calls it: the model is told it needs the owner's approval, and the run
/// streams an `approval_required` event. Direct calls (`tools/call`) are the owner's own and
/// need no approval.
#[utoipa::path(post, path = "/api/agents/{id}/tools/allow", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id")),
    request_body = AllowToolRequest,
    responses(
        (status = 200, body = AllowedTools),
        (status = 400, description = "Bad id or body", body = ErrorBody),
        (status = 401, description = "An API key is needed", body = ErrorBody),
        (status = 404, description = "No such agent, server or tool name", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Missing or unknown fields", body = ErrorBody),
    ))]
async fn allow_tool(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<AllowToolRequest>,
) -> Result<axum::Json<AllowedTools>, ApiError> {
    let allowed = ops::allow_tool(&state, &tenant, id, &body.server, &body.tool).await?;
    Ok(axum::Json(AllowedTools { agent_id: id, server: body.server, allowed }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCallRequest {
    /// One of the agent's server ids (the keys of its `mcpServers`).
    #[schema(example = "time-mcp-server")]
    pub server: String,
    #[schema(example = "get_current_time")]
    pub tool: String,
    /// Checked against the tool's input schema before the call.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"timezone": "Asia/Tokyo"}))]
    pub arguments: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolCallView {
    pub server: String,
    pub tool: String,
    /// True when the tool reported a failure in its result.
    pub is_error: bool,
    /// The MCP `CallToolResult` as the server sent it (`content`, `structuredContent`, …).
    #[schema(value_type = Object)]
    pub result: Value,
}

/// Calls one tool of one of the agent's servers directly, without a language model.
#[utoipa::path(post, path = "/api/agents/{id}/tools/call", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id")),
    request_body = ToolCallRequest,
    responses(
        (status = 200, body = ToolCallView),
        (status = 400, description = "Bad id or body", body = ErrorBody),
        (status = 401, description = "An API key is needed", body = ErrorBody),
        (status = 404, description = "No such agent, server or tool", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Arguments do not match the tool's input schema", body = ErrorBody),
        (status = 429, description = "Too many servers running", body = ErrorBody),
        (status = 502, description = "The server failed to start or crashed", body = ErrorBody),
        (status = 504, description = "The server or the tool timed out", body = ErrorBody),
    ))]
async fn call_tool(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<ToolCallRequest>,
) -> Result<axum::Json<ToolCallView>, ApiError> {
    let result = ops::call_tool(&state, &tenant, id, &body.server, &body.tool, body.arguments).await?;
    let is_error = result.is_error.unwrap_or(false);
    let result = serde_json::to_value(&result).map_err(ApiError::internal)?;
    Ok(axum::Json(ToolCallView { server: body.server, tool: body.tool, is_error, result }))
}
