//! `GET /` (the design's identity answer, byte for byte) and `GET /health`.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(root)).routes(routes!(health))
}

/// The service's identity. Existing clients compare this body byte for byte.
#[derive(Debug, Serialize, ToSchema)]
pub struct RootInfo {
    #[schema(example = "Dynamic MCP Agent API")]
    pub message: &'static str,
    #[schema(example = "1.0.0")]
    pub version: &'static str,
}

pub const ROOT_INFO: RootInfo = RootInfo { message: "Dynamic MCP Agent API", version: "1.0.0" };

#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, description = "Service identity", body = RootInfo)))]
async fn root() -> axum::Json<RootInfo> {
    axum::Json(ROOT_INFO)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub database: String,
}

/// Liveness and readiness: answers 200 only when the store answers.
#[utoipa::path(get, path = "/health", tag = "service", responses(
    (status = 200, description = "The service and its store are up", body = Health),
    (status = 503, description = "The store does not answer", body = ErrorBody),
))]
async fn health(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    state.store.ping().await.map_err(ApiError::Unavailable)?;
    Ok(axum::Json(Health { status: "ok", database: state.store.backend().to_string() }))
}
