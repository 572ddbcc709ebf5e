//! `GET /` (the design's identity answer, byte for byte; the web playground for browsers) and
//! `GET /health`.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

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

/// The playground: one page, embedded in the binary, that talks to this API from the browser.
const PLAYGROUND: &str = include_str!("playground.html");

/// The playground's Content-Security-Policy: nothing but this origin, and only the page's own
/// inline script and style, allowed by hash.
static PLAYGROUND_CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = |open: &str, close: &str| {
        let start = PLAYGROUND.find(open).map(|i| i + open.len()).unwrap_or(0);
        let end = PLAYGROUND[start..].find(close).map(|i| start + i).unwrap_or(start);
        let digest = Sha256::digest(&PLAYGROUND.as_bytes()[start..end]);
        format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash("<script>", "</script>"),
        hash("<style>", "</style>")
    )
});

/// The service's identity; a browser (`Accept: text/html`) gets the web playground instead.
/// Existing clients compare the JSON body byte for byte.
#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, description = "Service identity (JSON), or the playground page for `Accept: text/html`",
        content((RootInfo = "application/json"), (String = "text/html")))))]
async fn root(headers: HeaderMap) -> Response {
    if wants_html(&headers) {
        let mut page = Html(PLAYGROUND).into_response();
        let out = page.headers_mut();
        if let Ok(csp) = HeaderValue::from_str(&PLAYGROUND_CSP) {
            out.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        out.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        out.insert(header::VARY, HeaderValue::from_static("accept"));
        return page;
    }
    let mut json = axum::Json(ROOT_INFO).into_response();
    json.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
    json
}

/// A browser asks for HTML before JSON; API clients send `application/json`, `*/*` or nothing.
fn wants_html(headers: &HeaderMap) -> bool {
    let accept = super::extract::accept(headers);
    let position = |kind: &str| accept.find(kind);
    match (position("text/html"), position("application/json")) {
        (Some(html), Some(json)) => html < json,
        (Some(_), None) => true,
        _ => false,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when this replica is out of step with the database (see `problems`).
    #[schema(example = "ok")]
    pub status: &'static str,
    /// What is out of step, for the operator; absent when nothing is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// This process's id among the replicas on the database (its lease on the store).
    pub replica: Option<Uuid>,
    /// dynamcp's version.
    #[schema(example = "0.1.0")]
    pub build: &'static str,
    pub catalog: CatalogHealth,
    /// The id (a fingerprint, not the key) of the master key new credentials are sealed with;
    /// the same on every replica of one database.
    pub vault_key: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// `ready` when MCP servers run in the bubblewrap sandbox; `unavailable` when none can be
    /// created here (servers are then refused, or run unsandboxed for the single keyless user if
    /// the operator allowed it; the start-up log says why).
    #[schema(example = "ready")]
    pub sandbox: &'static str,
    /// `configured` when agents can run (a language model is set up), `none` otherwise (plans
    /// come from the offline planner; tools can still be listed and called).
    #[schema(example = "configured")]
    pub llm: &'static str,
}

/// The catalog as a replica has it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogHealth {
    /// The catalog's version in the database (each import that changes it adds one).
    pub version: u64,
    /// The version this replica searches; behind `version` for at most a poll and a reload.
    pub loaded: u64,
    /// Servers in the index this replica searches.
    pub servers: usize,
}

/// Liveness and readiness: answers 200 only when the store answers.
#[utoipa::path(get, path = "/health", tag = "service", responses(
    (status = 200, description = "The service and its store are up", body = Health),
    (status = 503, description = "The store does not answer", body = ErrorBody),
))]
async fn health(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    let health = crate::ops::health(&state).await?;
    let sandbox = if health.sandbox_ready { "ready" } else { "unavailable" };
    let llm = if health.llm_configured { "configured" } else { "none" };
    Ok(axum::Json(Health {
        status: if health.problems.is_empty() { "ok" } else { "degraded" },
        problems: health.problems,
        replica: health.replica,
        build: health.build,
        catalog: CatalogHealth {
            version: health.catalog_version,
            loaded: health.catalog_loaded,
            servers: health.catalog_servers,
        },
        vault_key: health.vault_key,
        database: health.database,
        sandbox,
        llm,
    }))
}
