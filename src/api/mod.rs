//! HTTP: the only module that knows axum. One file per resource, each with its `router()`; this
//! file assembles them, adds the cross-cutting layers (limits, timeout, CORS, tracing, error
//! shape) and serves the OpenAPI document and Swagger UI.

mod agents;
mod chat;
pub mod error;
mod extract;
mod root;
mod sessions;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::state::{AppState, Limits};
use error::ApiError;

pub use root::ROOT_INFO;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dynamcp",
        description = "Dynamic MCP Agent API: turn a plain-language request into a working MCP agent.",
        version = "1.0.0"
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    tags(
        (name = "service", description = "Identity and health"),
        (name = "chat", description = "The master agent"),
        (name = "sessions", description = "Conversations with the master agent"),
        (name = "agents", description = "Created agents"),
    )
)]
struct ApiDoc;

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(root::router())
        .merge(sessions::router())
        .merge(agents::router())
        .merge(chat::router())
}

/// The whole application: routes, docs and layers.
pub fn router(state: AppState) -> Router {
    let (api, doc) = routes().split_for_parts();
    let limits = state.limits.clone();
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(cors(&limits))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }))
        .layer(axum::middleware::from_fn(error::normalize_errors))
        .layer(TraceLayer::new_for_http())
}

async fn not_found(request: Request) -> ApiError {
    ApiError::RouteNotFound { method: request.method().to_string(), path: request.uri().path().to_owned() }
}

fn cors(limits: &Limits) -> CorsLayer {
    if limits.cors_origins.is_empty() {
        return CorsLayer::new();
    }
    let origin = if limits.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(limits.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(Any)
        .max_age(Duration::from_secs(600))
}
