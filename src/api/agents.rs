//! `/api/agents`: list (paginated), read, delete (which stops its running servers), export.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{Path, Query};
use super::pagination::Pagination;
use crate::ops;
use crate::planner::Exported;
use crate::planner::agent_config::ExportFormat;
use crate::state::AppState;
use crate::store::Agent;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents))
        .routes(routes!(get_agent, delete_agent))
        .routes(routes!(export_config))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `claude` (Claude Desktop), `cursor`, or `fast-agent` (YAML).
    pub format: Option<ExportFormat>,
    /// Put the decrypted credential values in the config. Off by default: the config then holds
    /// `REPLACE_WITH_<KEY>` placeholders.
    #[serde(default)]
    pub include_secrets: bool,
}

/// The agent's config in a client's format: `claude` (`claude_desktop_config.json`), `cursor`
/// (`.cursor/mcp.json`) or `fast-agent` (`fastagent.config.yaml`). Secrets only with
/// `include_secrets=true`.
#[utoipa::path(get, path = "/api/agents/{id}/config", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id"), ExportQuery),
    responses(
        (status = 200, description = "JSON for claude and cursor, YAML for fast-agent", body = Object),
        (status = 400, description = "Bad id or query", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ))]
async fn export_config(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
    Query(query): Query<ExportQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let format = query.format.unwrap_or(ExportFormat::Claude);
    let exported = ops::export(&state, &tenant, id, format, query.include_secrets).await?;
    let mut response = match exported {
        Exported::Json(value) => axum::Json(value).into_response(),
        Exported::Yaml(text) => {
            ([(axum::http::header::CONTENT_TYPE, "application/yaml")], text).into_response()
        }
    };
    if query.include_secrets {
        response
            .headers_mut()
            .insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// A created agent: its standard `mcpServers` config, workflow and model.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    pub session_id: Uuid,
    pub name: String,
    /// `{"mcpServers": {...}}`; env values reference vault entries, never plaintext.
    #[schema(value_type = Object)]
    pub mcp_config: Value,
    pub workflow: String,
    pub model: Option<String>,
    pub status: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Agent> for AgentView {
    fn from(a: Agent) -> Self {
        Self {
            id: a.id,
            session_id: a.session_id,
            name: a.name,
            mcp_config: a.mcp_config,
            workflow: a.workflow,
            model: a.model,
            status: a.status,
            metadata: a.metadata,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
    /// All agents, across pages.
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

/// Agents, newest first.
#[utoipa::path(get, path = "/api/agents", tag = "agents", params(Pagination), responses(
    (status = 200, body = AgentList),
    (status = 400, description = "Bad limit or offset", body = ErrorBody),
))]
async fn list_agents(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Query(pagination): Query<Pagination>,
) -> Result<axum::Json<AgentList>, ApiError> {
    let page = pagination.page()?;
    let (agents, total) = ops::agents(&state, &tenant, page).await?;
    Ok(axum::Json(AgentList {
        agents: agents.into_iter().map(Into::into).collect(),
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id")),
    responses(
        (status = 200, body = AgentView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ))]
async fn get_agent(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<AgentView>, ApiError> {
    let agent = ops::agent(&state, &tenant, id).await?;
    Ok(axum::Json(agent.into()))
}

#[utoipa::path(delete, path = "/api/agents/{id}", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
    ))]
async fn delete_agent(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    ops::delete_agent(&state, &tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
