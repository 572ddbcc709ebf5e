//! `/api/servers`: search the catalog by meaning, read one server's full record, browse.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use super::pagination::Pagination;
use crate::catalog::SearchResult;
use crate::ops;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search)).routes(routes!(browse)).routes(routes!(get_server))
}

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
    let results = ops::search(&state, &request.query, request.limit).await?;
    Ok(axum::Json(SearchResponse { results }))
}

#[utoipa::path(get, path = "/api/servers/{id}", tag = "servers",
    params(("id" = String, Path, description = "Catalog id")),
    responses(
        (status = 200, body = ops::ServerDetail),
        (status = 404, description = "No such server", body = ErrorBody),
    ))]
async fn get_server(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ops::ServerDetail>, ApiError> {
    Ok(axum::Json(ops::server(&state, &id)?))
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
pub struct ServerList {
    pub servers: Vec<ops::ServerSummary>,
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
    let (servers, total) = ops::browse(&state, params.q.as_deref(), page);
    Ok(axum::Json(ServerList { servers, total, limit: page.limit, offset: page.offset }))
}
