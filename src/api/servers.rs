//! `/api/servers`: search the catalog by meaning, read one server's full record, browse.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use super::pagination::Pagination;
use crate::catalog::{SearchResult, ServerRecord};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search)).routes(routes!(browse)).routes(routes!(get_server))
}

pub const MAX_SEARCH_LIMIT: usize = 50;

#[derive(Debug, Deserialize, ToSchema)]
pub struct SearchRequest {
    /// What the workflow needs, in plain language. Several needs ("… and …") are searched apart.
    #[schema(example = "find invoices in my Gmail and add them to a Google Sheet")]
    pub query: String,
    /// 1 to 50 (default 5).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub results: Vec<SearchResult>,
}

/// Finds the servers a workflow needs.
#[utoipa::path(post, path = "/api/servers/search", tag = "servers", request_body = SearchRequest, responses(
    (status = 200, body = SearchResponse),
    (status = 400, description = "Malformed JSON", body = ErrorBody),
    (status = 415, description = "Not JSON", body = ErrorBody),
    (status = 422, description = "Empty query or limit out of range", body = ErrorBody),
))]
async fn search(
    State(state): State<AppState>,
    Json(request): Json<SearchRequest>,
) -> Result<axum::Json<SearchResponse>, ApiError> {
    let results = find(&state, &request.query, request.limit).await?;
    Ok(axum::Json(SearchResponse { results }))
}

/// A catalog search as clients ask for it (here and over MCP): `limit` 1 to 50, default 5, and a
/// query that is not blank.
pub async fn find(
    state: &AppState,
    query: &str,
    limit: Option<usize>,
) -> Result<Vec<SearchResult>, ApiError> {
    let limit = limit.unwrap_or(5);
    if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!("limit must be between 1 and {MAX_SEARCH_LIMIT}")));
    }
    if query.trim().is_empty() {
        return Err(ApiError::InvalidRequest("query must not be empty".to_owned()));
    }
    state.catalog.search_results(query, limit).await.map_err(|e| ApiError::Internal(e.into()))
}

/// A server's full record: launch options, tools with their schemas, credential requirements
/// with instructions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerDetail {
    #[serde(flatten)]
    pub record: ServerRecord,
    pub runnable: bool,
}

#[utoipa::path(get, path = "/api/servers/{id}", tag = "servers",
    params(("id" = String, Path, description = "Catalog id")),
    responses(
        (status = 200, body = ServerDetail),
        (status = 404, description = "No such server", body = ErrorBody),
    ))]
async fn get_server(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ServerDetail>, ApiError> {
    let index = state.catalog.index();
    let record = index.get(&id).ok_or_else(|| ApiError::ServerNotFound(id.clone()))?;
    Ok(axum::Json(ServerDetail { runnable: record.runnable(), record: record.clone() }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BrowseParams {
    /// Words to match (lexically); empty lists every server by id.
    pub q: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerSummary {
    pub id: String,
    pub name: String,
    pub description: String,
    pub runnable: bool,
    pub tools: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerList {
    pub servers: Vec<ServerSummary>,
    pub total: usize,
    pub limit: u32,
    pub offset: u64,
}

/// Browses the catalog, optionally filtered by words.
#[utoipa::path(get, path = "/api/servers", tag = "servers", params(BrowseParams), responses(
    (status = 200, body = ServerList),
    (status = 400, description = "Bad limit or offset", body = ErrorBody),
))]
async fn browse(
    State(state): State<AppState>,
    Query(params): Query<BrowseParams>,
) -> Result<axum::Json<ServerList>, ApiError> {
    let page = Pagination { limit: params.limit, offset: params.offset }.page()?;
    let index = state.catalog.index();
    let docs: Vec<u32> = match params.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => index.lexical(q),
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
    Ok(axum::Json(ServerList { servers, total: docs.len(), limit: page.limit, offset: page.offset }))
}
