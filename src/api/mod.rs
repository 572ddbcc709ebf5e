//! HTTP: the only module that knows axum. One file per resource, each with its `router()`; this
//! file assembles them, adds the cross-cutting layers (the Host and Origin guard, limits,
//! timeout, CORS, tracing, error shape) and serves the OpenAPI document and Swagger UI.

mod agents;
pub mod auth;
mod chat;
pub mod error;
mod extract;
pub mod guard;
mod mcp_sessions;
pub mod observe;
pub mod pagination;
pub mod rate_limit;
mod root;
mod runs;
pub mod servers;
mod sessions;
mod sign_in;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::timeout::TimeoutLayer;
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
    components(schemas(error::ErrorBody, error::ErrorDetail, crate::planner::agent_config::ExportFormat)),
    tags(
        (name = "service", description = "Identity and health"),
        (name = "chat", description = "The master agent"),
        (name = "sessions", description = "Conversations with the master agent"),
        (name = "agents", description = "Created agents"),
        (name = "servers", description = "The MCP server catalog"),
    )
)]
struct ApiDoc;

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().split_for_parts().1;
    doc.merge(runs::router().split_for_parts().1);
    document_access(&mut doc);
    doc
}

/// Every `/api/` operation may answer 401 (when API keys are configured) and 429 (over the
/// caller's rate limit), and every operation 403 (see [`guard`]): say so once, here.
fn document_access(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build()
    };
    let common = [
        ("401", error("An API key is needed (`Authorization: Bearer <key>`), or the one sent is not valid")),
        ("429", error("Over the caller's rate limit; `Retry-After` says when to try again")),
    ];
    let refused = error(
        "Refused before authentication: the `Host` is not one of this service's names, or a browser \
         page of another origin sent a request that changes state",
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = path.starts_with("/api/");
        for operation in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch]
            .into_iter()
            .flatten()
        {
            operation.responses.responses.entry("403".to_owned()).or_insert_with(|| refused.clone().into());
            if !api {
                continue;
            }
            for (status, response) in &common {
                operation
                    .responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| response.clone().into());
            }
        }
    }
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(root::router())
        .merge(sessions::router())
        .merge(agents::router())
        .merge(chat::router())
        .merge(servers::router())
        .merge(sign_in::router())
}

/// The whole application: routes, docs and layers. `mcp_tools` makes the MCP server that `/mcp`
/// serves, one per MCP session (the MCP face's, which this face does not otherwise know).
pub fn router<M>(state: AppState, mcp_tools: fn(AppState) -> M) -> Router
where
    M: rmcp::ServerHandler,
{
    observe::prometheus();
    let (api, mut doc) = routes().split_for_parts();
    let (runs, runs_doc) = runs::router().split_for_parts();
    doc.merge(runs_doc);
    document_access(&mut doc);
    let limits = state.limits.clone();
    let guard = guard::Guard::new(&limits, &state.public_url, Some(state.access.clone()));
    // Runs and tool calls may start servers (a first start downloads a package): they get the
    // run timeout; every other route the request timeout.
    let api = api.layer(timeout(limits.request_timeout));
    let runs = runs.layer(timeout(limits.run_timeout));
    let app = api
        .merge(runs)
        .merge(mcp_endpoint(&state, mcp_tools).layer(timeout(limits.run_timeout)))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        // Outermost last: the caller is named first, then held to its rate limit.
        .layer(axum::middleware::from_fn_with_state(state.clone(), rate_limit::limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .with_state(state);
    with_layers(app, &limits, guard)
}

/// dynamcp's own MCP tools over streamable HTTP at `/mcp`, behind the same guard, keys and rate
/// limits as `/api/`; each session is bound to the tenant that opened it. Sessions end when the
/// service shuts down.
fn mcp_endpoint<M>(state: &AppState, mcp_tools: fn(AppState) -> M) -> Router<AppState>
where
    M: rmcp::ServerHandler,
{
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    // Host and Origin are checked for every route by [`guard`], with the configured public names;
    // rmcp's own check knows only three loopback names and would refuse those.
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(state.stopping.child_token())
        .with_max_request_body_bytes(state.limits.body_bytes)
        .disable_allowed_hosts();
    let manager = Arc::new(LocalSessionManager::default());
    let sessions = Arc::new(mcp_sessions::McpSessions::new(manager.clone()));
    let tools = state.clone();
    let service = StreamableHttpService::new(move || Ok(mcp_tools(tools.clone())), manager, config);
    Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(sessions, mcp_sessions::bind))
}

/// The cross-cutting layers every route gets, outermost last: body limit, CORS, the Host and
/// Origin guard (before CORS, so preflights are checked too), panic catching, the uniform error
/// shape, metrics, then the request id and the request's tracing span. (Timeouts are per route
/// group, see [`router`].)
fn with_layers(app: Router, limits: &Limits, guard: guard::Guard) -> Router {
    let app = app
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(cors(limits))
        .layer(axum::middleware::from_fn_with_state(Arc::new(guard), guard::guard))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }))
        .layer(axum::middleware::from_fn(error::normalize_errors))
        .layer(axum::middleware::from_fn(observe::track_metrics));
    observe::with_request_ids(app).layer(axum::middleware::from_fn(observe::sanitize_request_id))
}

/// Answers 408 (in the standard error shape, see [`error::normalize_errors`]) after `limit`.
fn timeout(limit: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit)
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
        .expose_headers([observe::REQUEST_ID])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn limits() -> Limits {
        Limits {
            body_bytes: 1024,
            request_timeout: Duration::from_millis(50),
            cors_origins: Vec::new(),
            run_timeout: Duration::from_secs(1),
            loopback_only: true,
            allowed_hosts: Vec::new(),
        }
    }

    fn layered(app: Router) -> Router {
        with_layers(app, &limits(), guard::Guard::new(&limits(), "", None))
    }

    async fn call(app: Router, uri: &str) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let response =
            app.oneshot(Request::get(uri).header("host", "127.0.0.1:8000").body(Body::empty())?).await?;
        let status = response.status();
        assert_eq!(response.headers()["content-type"], "application/json");
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&bytes)?))
    }

    #[tokio::test]
    async fn a_slow_handler_times_out_with_the_error_shape() -> anyhow::Result<()> {
        let app = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let app = app.layer(timeout(limits().request_timeout));
        let (status, body) = call(layered(app), "/slow").await?;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "request_timeout", "message": "the request took too long and was cancelled"}, "detail": "the request took too long and was cancelled"})
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_generic_500() -> anyhow::Result<()> {
        #[allow(clippy::panic)]
        async fn boom() -> &'static str {
            panic!("secret detail that must not reach the client")
        }
        let app = Router::new().route("/boom", get(boom));
        let (status, body) = call(layered(app), "/boom").await?;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "internal_error", "message": "internal server error"}, "detail": "internal server error"})
        );
        Ok(())
    }

    /// The design's own three tests, as handler tests on the real router over a real SQLite file.
    mod design {
        use super::*;
        use crate::config::ServeArgs;

        async fn app() -> anyhow::Result<(Router, tempfile::TempDir)> {
            let dir = tempfile::tempdir()?;
            let state = AppState::build(&ServeArgs::for_data_dir(dir.path())).await?;
            Ok((router(state, crate::mcp::DynamcpMcp::over_http), dir))
        }

        /// Sends `request` as a client on this machine would (to a loopback `Host`).
        async fn send(
            app: Router,
            mut request: Request<Body>,
        ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
            request.headers_mut().insert("host", HeaderValue::from_static("127.0.0.1:8000"));
            let response = app.oneshot(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok((status, serde_json::from_slice(&bytes)?))
        }

        fn post_json(uri: &str, body: serde_json::Value) -> anyhow::Result<Request<Body>> {
            Ok(Request::post(uri)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))?)
        }

        #[tokio::test]
        async fn test_root() -> anyhow::Result<()> {
            let (app, _dir) = app().await?;
            let response =
                app.oneshot(Request::get("/").header("host", "localhost:8000").body(Body::empty())?).await?;
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = response.into_body().collect().await?.to_bytes();
            assert_eq!(&bytes[..], br#"{"message":"Dynamic MCP Agent API","version":"1.0.0"}"#);
            Ok(())
        }

        #[tokio::test]
        async fn test_chat_returns_session_id() -> anyhow::Result<()> {
            let (app, _dir) = app().await?;
            let (status, body) =
                send(app, post_json("/api/chat", serde_json::json!({"message": "hello"}))?).await?;
            assert_eq!(status, StatusCode::OK);
            let session_id = body["session_id"].as_str().unwrap_or_default();
            assert!(uuid::Uuid::parse_str(session_id).is_ok(), "{body}");
            assert_eq!(body["status"], "pending_credentials");
            assert_eq!(body["agent_created"], false);
            Ok(())
        }

        #[tokio::test]
        async fn test_create_session() -> anyhow::Result<()> {
            let (app, _dir) = app().await?;
            let (status, body) =
                send(app.clone(), Request::post("/api/sessions/create").body(Body::empty())?).await?;
            assert_eq!(status, StatusCode::OK);
            let id = body["id"].as_str().unwrap_or_default().to_owned();
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{body}");
            let (status, session) =
                send(app, Request::get(format!("/api/sessions/{id}")).body(Body::empty())?).await?;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(session["id"], id.as_str());
            Ok(())
        }
    }
}
